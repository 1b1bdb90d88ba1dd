/**
 * `serve` with several worker processes (src/workers.ts): one start banner and one demo ticket,
 * both workers answering on the shared port, a dead worker replaced, SIGTERM stopping all of them;
 * and no workers on embedded PGlite. Runs against real PostgreSQL in both test passes (a throwaway
 * server when TEST_DATABASE_URL is not set): workers cannot share PGlite.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { Agent, fetch } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NODE_COMPILE_CACHE, runCli } from '../support/cli.ts';
import { createTestDatabase } from '../support/db.ts';
import { waitFor } from '../support/waitFor.ts';

const freePort = () =>
  new Promise<number>((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });

let pgDir: string | undefined;
let databaseUrl: string;
let dropDatabase: () => Promise<void> = async () => {};

beforeAll(async () => {
  const created = await createTestDatabase();
  if (created.url) {
    databaseUrl = created.url;
    dropDatabase = created.drop;
  } else {
    pgDir = mkdtempSync(path.join(tmpdir(), 'kkh-workers-pg-'));
    databaseUrl = execFileSync('sh', ['scripts/pg-test-server.sh', 'start', pgDir], {
      env: { ...process.env, PGTEST_PORT: String(await freePort()) },
      encoding: 'utf8',
    }).trim();
  }
}, 60_000);
afterAll(async () => {
  await dropDatabase();
  if (pgDir) execFileSync('sh', ['scripts/pg-test-server.sh', 'stop', pgDir]);
});

/** The hub's own environment: nothing of the developer's KAKEHASHI_* settings. */
function hubEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env))
    if (!k.startsWith('KAKEHASHI_') && k !== 'DATABASE_URL' && k !== 'PORT') env[k] = v;
  // One key-encryption key for every hub of this file: they share the database and its sealed keys.
  return { ...env, NODE_COMPILE_CACHE, LOG_LEVEL: 'warn', KAKEHASHI_KEK: KEK, ...extra };
}
const KEK = randomBytes(32).toString('base64url');

const childrenOf = (pid: number): number[] => {
  try {
    return execFileSync('pgrep', ['-P', String(pid)], { encoding: 'utf8' })
      .split('\n')
      .filter(Boolean)
      .map(Number);
  } catch {
    return [];
  }
};

/** `serve` with two workers on this file's database; resolves once the supervisor printed its banner. */
async function startSupervisor(dataDir: string, port: number) {
  const primary = spawn(process.execPath, ['src/main.ts', 'serve'], {
    env: hubEnv({
      KAKEHASHI_DATA: dataDir,
      KAKEHASHI_WORKERS: '2',
      DATABASE_URL: databaseUrl,
      PORT: String(port),
    }),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const output = { out: '', err: '' };
  primary.stdout!.on('data', (d: Buffer) => {
    output.out += d.toString();
  });
  primary.stderr!.on('data', (d: Buffer) => {
    output.err += d.toString();
  });
  await waitFor('the banner', () => output.out.includes('workers:') || primary.exitCode !== null, 60_000);
  expect(primary.exitCode, output.err).toBeNull();
  return { primary, output };
}

describe('serve with workers', () => {
  it('refuses more than one worker on embedded PGlite, naming the setting', async () => {
    const dataDir = mkdtempSync(path.join(tmpdir(), 'kkh-workers-'));
    try {
      const r = await runCli(hubEnv({ KAKEHASHI_DATA: dataDir, KAKEHASHI_WORKERS: '2' }), 'serve');
      expect(r.code).toBe(1);
      expect(r.stderr).toContain('workers: more than one worker needs databaseUrl');
    } finally {
      rmSync(dataDir, { recursive: true, force: true });
    }
  });

  it('runs two hub workers on one port, replaces one that dies, and stops them all on SIGTERM', async () => {
    const dataDir = mkdtempSync(path.join(tmpdir(), 'kkh-workers-'));
    const port = await freePort();
    const dispatcher = new Agent({ connect: { rejectUnauthorized: false } });
    let primary: ChildProcess | undefined;
    try {
      const started = await startSupervisor(dataDir, port);
      primary = started.primary;
      const { output } = started;
      const primaryPid = primary.pid!;
      const out = output.out;
      const m = /workers: +2 processes \(pids (\d+), (\d+)\), supervised by pid (\d+)/.exec(out);
      expect(m, out).not.toBeNull();
      expect(Number(m![3])).toBe(primaryPid);
      const pids = [Number(m![1]), Number(m![2])];
      expect(childrenOf(primaryPid).sort()).toEqual([...pids].sort());
      // One banner, one demo enrollment ticket (only the first worker issues it).
      expect(out.match(/Kakehashi is listening on/g)).toHaveLength(1);
      expect(out.match(/enrollment ticket for the demo customer/g)).toHaveLength(1);
      const db = new pg.Client({ connectionString: databaseUrl });
      await db.connect();
      const tickets = await db.query('SELECT count(*)::int AS n FROM enrollment_tickets');
      await db.end();
      expect(tickets.rows[0].n).toBe(1);

      const health = async () => {
        const r = await fetch(`https://127.0.0.1:${port}/healthz`, { dispatcher });
        return r.status;
      };
      expect(await health()).toBe(200);

      // A worker that dies is replaced; the hub keeps answering.
      process.kill(pids[0]!, 'SIGKILL');
      await waitFor(
        'a replacement worker',
        () => {
          const now = childrenOf(primaryPid);
          return now.length === 2 && !now.includes(pids[0]!);
        },
        60_000,
      );
      await waitFor(
        'an answer after the replacement',
        async () => (await health().catch(() => 0)) === 200,
        30_000,
      );
      expect(output.err).toContain(`worker 1 (pid ${pids[0]}) died (SIGKILL); starting another`);
      const workersNow = childrenOf(primaryPid);

      // SIGTERM: every worker closes its hub, then the primary exits 0.
      const exited = new Promise<number | null>((resolve) => primary!.once('exit', (code) => resolve(code)));
      primary.kill('SIGTERM');
      expect(await exited).toBe(0);
      for (const pid of workersNow) expect(() => process.kill(pid, 0)).toThrow();
    } finally {
      if (primary && primary.exitCode === null) primary.kill('SIGKILL');
      await dispatcher.close();
      rmSync(dataDir, { recursive: true, force: true });
    }
  }, 180_000);

  it('ends its workers when the supervisor itself dies', async () => {
    const dataDir = mkdtempSync(path.join(tmpdir(), 'kkh-workers-'));
    let primary: ChildProcess | undefined;
    try {
      primary = (await startSupervisor(dataDir, await freePort())).primary;
      const workers = childrenOf(primary.pid!);
      expect(workers).toHaveLength(2);
      primary.kill('SIGKILL');
      const gone = (pid: number) => {
        try {
          process.kill(pid, 0);
          return false;
        } catch {
          return true;
        }
      };
      await waitFor('the orphaned workers to end', () => workers.every(gone), 30_000);
    } finally {
      if (primary && primary.exitCode === null) primary.kill('SIGKILL');
      rmSync(dataDir, { recursive: true, force: true });
    }
  }, 120_000);
});
