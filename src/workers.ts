/**
 * `serve` with `workers` > 1 (node:cluster). Node runs a hub's JavaScript on one core; on a machine
 * with N cores the hub uses them as N worker processes, each a whole hub node (the same database,
 * keys and issuer, as several nodes behind a load balancer), sharing the listening ports through
 * the primary, which accepts connections and hands each to a worker. The primary only supervises:
 *
 * - worker 1 starts alone (migrations, keys, demo data happen once) and writes the start banner;
 *   the others start when it listens;
 * - a worker that dies is replaced; more than MAX_RESTARTS deaths within RESTART_WINDOW_MS stop the
 *   whole hub (exit 1) rather than crash-loop;
 * - SIGINT/SIGTERM stop every worker (each closes its hub) and then the primary.
 */
import cluster, { type Worker } from 'node:cluster';
import type { Config } from './config/index.ts';

/** The messages a worker sends its primary. */
export type WorkerMessage = { kind: 'ready'; banner: string[] };

export const WORKER_INDEX_ENV = 'KAKEHASHI_WORKER_INDEX';
const MAX_RESTARTS = 5;
const RESTART_WINDOW_MS = 60_000;
const STOP_TIMEOUT_MS = 20_000;

/** True in a worker that should print the banner (and issue the demo ticket): the first one. */
export const isFirstWorker = (): boolean => !cluster.isWorker || process.env[WORKER_INDEX_ENV] === '1';

/** In a worker: tells the primary it listens, with the banner when it is the first worker. */
export function reportReady(banner: string[]): void {
  process.send?.({ kind: 'ready', banner } satisfies WorkerMessage);
}

/**
 * Runs the primary: forks and supervises `config.workers` workers running this same command.
 * Resolves once every worker listens (the banner is printed then); the process then lives until a
 * signal or a crash loop ends it.
 */
export async function runPrimary(config: Config, log: (line: string) => void = console.error): Promise<void> {
  const workers = new Map<number, Worker>();
  const deaths: number[] = [];
  let stopping = false;
  // Until every first worker listens, a death is a failed start (the hub stops), not a crash to repair.
  let started = false;
  // A replacement gets a new index: only the very first worker writes the banner (and the demo ticket).
  let lastIndex = 0;

  const fork = (index = ++lastIndex) =>
    new Promise<string[]>((resolve, reject) => {
      const worker = cluster.fork({ [WORKER_INDEX_ENV]: String(index) });
      workers.set(index, worker);
      const onMessage = (m: WorkerMessage) => {
        if (m?.kind !== 'ready') return;
        worker.off('exit', onEarlyExit);
        resolve(m.banner);
      };
      const onEarlyExit = (code: number | null, signal: string | null) =>
        reject(new Error(`worker ${index} exited before listening (${signal ?? `code ${code}`})`));
      worker.on('message', onMessage);
      worker.once('exit', onEarlyExit);
      worker.once('exit', (code, signal) => {
        if (workers.get(index) === worker) workers.delete(index);
        if (stopping || !started) return;
        const now = Date.now();
        deaths.push(now);
        while (deaths.length && deaths[0]! < now - RESTART_WINDOW_MS) deaths.shift();
        if (deaths.length > MAX_RESTARTS) {
          log(`kakehashi: ${deaths.length} workers died within a minute; stopping the hub`);
          void stop(1);
          return;
        }
        log(
          `kakehashi: worker ${index} (pid ${worker.process.pid}) died (${signal ?? `code ${code}`}); starting another`,
        );
        fork().catch((err: Error) => log(`kakehashi: ${err.message}`));
      });
    });

  async function stop(code: number): Promise<void> {
    if (stopping) return;
    stopping = true;
    const exits = [...workers.values()].map(
      (w) => new Promise<void>((resolve) => (w.isDead() ? resolve() : w.once('exit', () => resolve()))),
    );
    for (const w of workers.values()) w.process.kill('SIGTERM');
    const timer = setTimeout(() => {
      for (const w of workers.values()) w.process.kill('SIGKILL');
    }, STOP_TIMEOUT_MS);
    await Promise.all(exits);
    clearTimeout(timer);
    process.exit(code);
  }
  process.once('SIGINT', () => void stop(0));
  process.once('SIGTERM', () => void stop(0));

  try {
    // The first worker alone: it migrates, creates keys and demo data; then the others.
    const banner = await fork();
    await Promise.all(Array.from({ length: config.workers - 1 }, () => fork()));
    started = true;
    const pids = [...workers.values()].map((w) => w.process.pid).join(', ');
    console.log(
      [
        ...banner,
        `  workers:       ${config.workers} processes (pids ${pids}), supervised by pid ${process.pid}`,
      ].join('\n'),
    );
  } catch (err) {
    log(`kakehashi: ${(err as Error).message}`);
    await stop(1);
  }
}
