/**
 * Set-up and tear-down around the benchmark: a throwaway PostgreSQL (or a fresh database on
 * BENCH_DATABASE_URL), the hub as a child process, and /proc readings of CPU time and peak RSS.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { cpus, tmpdir } from 'node:os';
import path from 'node:path';

/** Seconds of CPU per clock tick for /proc/<pid>/stat. */
const TICK_S = (() => {
  try {
    return 1 / Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim());
  } catch {
    return 1 / 100;
  }
})();

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

/** Fields of /proc/<pid>/stat after the command name (which may hold spaces and parentheses). */
function statFields(pid: number): string[] | undefined {
  try {
    const raw = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return raw.slice(raw.lastIndexOf(')') + 2).split(' ');
  } catch {
    return undefined;
  }
}

/** utime+stime of a process (all its threads), in seconds; undefined when it is gone. */
export function processCpuSeconds(pid: number): number | undefined {
  const f = statFields(pid);
  // After the name: state(0) ppid(1) … utime(11) stime(12) cutime(13) cstime(14)
  return f ? (Number(f[11]) + Number(f[12])) * TICK_S : undefined;
}

/** utime+stime of one thread (the main thread's tid is the pid), in seconds. */
export function threadCpuSeconds(pid: number, tid: number): number | undefined {
  try {
    const raw = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
    const f = raw.slice(raw.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) * TICK_S;
  } catch {
    return undefined;
  }
}

/** Precise on-CPU time of one thread in ns (/proc/<pid>/task/<tid>/schedstat), or 0 when unreadable. */
export function threadRuntimeNs(pid: number, tid: number): number {
  try {
    return Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ', 1)[0]);
  } catch {
    return 0;
  }
}

/**
 * Live backends of a PostgreSQL postmaster serving `database` (their process title names it), so that
 * background workers (checkpointer, WAL writer, autovacuum) stay out of per-step figures.
 */
export function postgresBackends(postmasterPid: number, database: string): number[] {
  const out: number[] = [];
  for (const entry of readdirSafe('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const f = statFields(Number(entry));
    if (!f || Number(f[1]) !== postmasterPid) continue;
    try {
      const title = readFileSync(`/proc/${entry}/cmdline`, 'utf8');
      if (title.includes(` ${database} `)) out.push(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

/**
 * CPU seconds of a PostgreSQL server: the postmaster, its live children, and (through the
 * postmaster's cutime/cstime) the children that already exited.
 */
export function postgresCpuSeconds(postmasterPid: number): number | undefined {
  const pm = statFields(postmasterPid);
  if (!pm) return undefined;
  let total = (Number(pm[11]) + Number(pm[12]) + Number(pm[13]) + Number(pm[14])) * TICK_S;
  for (const entry of readdirSafe('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const f = statFields(Number(entry));
    if (f && Number(f[1]) === postmasterPid) total += (Number(f[11]) + Number(f[12])) * TICK_S;
  }
  return total;
}

/** Live child processes of `pid`, oldest first. */
export function childrenOf(pid: number): number[] {
  const out: number[] = [];
  for (const entry of readdirSafe('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const f = statFields(Number(entry));
    if (f && Number(f[1]) === pid) out.push(Number(entry));
  }
  return out.sort((a, b) => a - b);
}

function readdirSafe(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

/** Busy and total CPU seconds of the whole machine (all cores), from /proc/stat. */
export function machineCpuSeconds(): { busy: number; total: number } {
  const line = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0]!;
  const v = line.trim().split(/\s+/).slice(1).map(Number);
  const total = v.slice(0, 8).reduce((a, b) => a + b, 0);
  const idle = (v[3] ?? 0) + (v[4] ?? 0);
  return { busy: (total - idle) * TICK_S, total: total * TICK_S };
}

/** VmHWM (peak RSS) and VmRSS of a process in MiB. */
export function memoryMiB(pid: number): { peak: number; rss: number } | undefined {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = (name: string) =>
      Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? Number.NaN);
    return { peak: kb('VmHWM') / 1024, rss: kb('VmRSS') / 1024 };
  } catch {
    return undefined;
  }
}

/** Resets VmHWM to the current RSS (Linux ≥ 4.0), so a phase's peak is its own. */
export function resetPeakRss(pid: number): boolean {
  try {
    writeFileSync(`/proc/${pid}/clear_refs`, '5');
    return true;
  } catch {
    return false;
  }
}

export function machineInfo() {
  const model = cpus()[0]?.model?.trim() ?? 'unknown';
  return {
    nproc: cpus().length,
    cpuModel: model,
    node: process.version,
    platform: `${process.platform} ${process.arch}`,
  };
}

export interface Database {
  /** URL of the bench database (fresh, empty). */
  url: string;
  /** Postmaster pid when the server runs here and we can see it (for its CPU time). */
  postmasterPid: number | undefined;
  source: 'scripts/pg-test-server.sh' | 'own initdb' | 'BENCH_DATABASE_URL';
  fsync: 'off' | 'on' | 'unknown';
  serverVersion: string;
  /** pg_stat_statements is loaded (BENCH_PG_STATS=1). */
  statementStats: boolean;
  stop(): Promise<void>;
}

const PG_BIN = () => {
  const versions = readdirSync('/usr/lib/postgresql')
    .filter((v) => /^\d+$/.test(v))
    .sort((a, b) => Number(a) - Number(b));
  return `/usr/lib/postgresql/${versions.at(-1)}/bin`;
};
const asPostgres = (cmd: string, args: string[]) =>
  process.getuid?.() === 0
    ? (['runuser', ['-u', 'postgres', '--', cmd, ...args]] as const)
    : ([cmd, args] as const);

async function serverUrlWithDatabase(adminUrl: string, name: string): Promise<string> {
  const u = new URL(adminUrl);
  u.pathname = `/${name}`;
  return u.toString();
}

/**
 * Starts (or connects to) PostgreSQL and creates a fresh database for the run. The throwaway
 * server comes from scripts/pg-test-server.sh (fsync=off); BENCH_PG_FSYNC=on runs our own initdb
 * with durable settings instead.
 */
export async function startDatabase(log: (s: string) => void): Promise<Database> {
  const { default: pg } = await import('pg');
  const dbName = `kakehashi_bench_${randomBytes(4).toString('hex')}`;
  let adminUrl: string;
  let stopServer: () => void = () => {};
  let postmasterPid: number | undefined;
  let source: Database['source'];
  let fsync: Database['fsync'];
  let statementStats = false;
  const external = process.env.BENCH_DATABASE_URL;
  if (external) {
    adminUrl = external;
    source = 'BENCH_DATABASE_URL';
    fsync = 'unknown';
  } else {
    const dir = path.join(tmpdir(), `kakehashi-bench-pg-${randomBytes(4).toString('hex')}`);
    const port = await freePort();
    const durable = (process.env.BENCH_PG_FSYNC ?? 'off') === 'on';
    const statements = /^(1|true|on|yes)$/i.test(process.env.BENCH_PG_STATS ?? '');
    if (!durable && !statements) {
      log(`starting PostgreSQL with scripts/pg-test-server.sh on port ${port} (fsync=off)`);
      adminUrl = execFileSync('sh', ['scripts/pg-test-server.sh', 'start', dir], {
        encoding: 'utf8',
        env: { ...process.env, PGTEST_PORT: String(port) },
      }).trim();
      stopServer = () => {
        execFileSync('sh', ['scripts/pg-test-server.sh', 'stop', dir], { stdio: 'ignore' });
      };
      source = 'scripts/pg-test-server.sh';
      fsync = 'off';
    } else {
      // The same server as scripts/pg-test-server.sh starts, with durable commits and/or
      // pg_stat_statements (which must be preloaded) as asked.
      const settings = durable
        ? '-c fsync=on -c synchronous_commit=on -c full_page_writes=on'
        : '-c fsync=off -c full_page_writes=off';
      const preload = statements
        ? ' -c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track_planning=on'
        : '';
      log(
        `starting PostgreSQL (own initdb) on port ${port} with fsync=${durable ? 'on' : 'off'}${statements ? ' and pg_stat_statements' : ''}`,
      );
      const bin = PG_BIN();
      mkdirSync(dir, { recursive: true });
      if (process.getuid?.() === 0) execFileSync('chown', ['postgres', dir]);
      const run = (cmd: string, args: string[]) => {
        const [c, a] = asPostgres(cmd, args);
        execFileSync(c, [...a], { stdio: 'ignore' });
      };
      run(`${bin}/initdb`, ['-D', `${dir}/data`, '-A', 'trust', '-U', 'postgres']);
      run(`${bin}/pg_ctl`, [
        '-D',
        `${dir}/data`,
        '-l',
        `${dir}/server.log`,
        '-w',
        '-o',
        `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c max_connections=300 ${settings}${preload}`,
        'start',
      ]);
      adminUrl = `postgres://postgres@127.0.0.1:${port}/postgres`;
      stopServer = () => {
        try {
          run(`${bin}/pg_ctl`, ['-D', `${dir}/data`, '-m', 'immediate', 'stop']);
        } catch {
          // already stopped
        }
        rmSync(dir, { recursive: true, force: true });
      };
      source = 'own initdb';
      fsync = durable ? 'on' : 'off';
      statementStats = statements;
    }
    const pidFile = path.join(dir, 'data', 'postmaster.pid');
    if (existsSync(pidFile)) postmasterPid = Number(readFileSync(pidFile, 'utf8').split('\n', 1)[0]);
  }

  const admin = new pg.Client({ connectionString: adminUrl });
  let serverVersion = 'unknown';
  try {
    await admin.connect();
    serverVersion =
      (await admin.query<{ v: string }>("SELECT current_setting('server_version') AS v")).rows[0]?.v ??
      'unknown';
    if (fsync === 'unknown')
      fsync =
        (await admin.query<{ f: 'on' | 'off' }>("SELECT current_setting('fsync') AS f")).rows[0]?.f ??
        'unknown';
    if (postmasterPid === undefined) {
      // A local server we may read: its data directory holds the postmaster pid.
      try {
        const dataDir = (await admin.query<{ d: string }>("SELECT current_setting('data_directory') AS d"))
          .rows[0]?.d;
        if (dataDir)
          postmasterPid = Number(
            readFileSync(path.join(dataDir, 'postmaster.pid'), 'utf8').split('\n', 1)[0],
          );
      } catch {
        // not local or not readable: no Postgres CPU figures
      }
    }
    await admin.query(`CREATE DATABASE ${dbName}`);
  } catch (err) {
    await admin.end().catch(() => {});
    stopServer();
    throw err;
  }
  await admin.end();
  return {
    url: await serverUrlWithDatabase(adminUrl, dbName),
    postmasterPid,
    source,
    fsync,
    serverVersion,
    statementStats,
    async stop() {
      if (external) {
        const c = new pg.Client({ connectionString: adminUrl });
        try {
          await c.connect();
          await c.query(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`);
        } finally {
          await c.end().catch(() => {});
        }
      } else stopServer();
    },
  };
}

export interface HubProcess {
  child: ChildProcess;
  pid: number;
  /**
   * The processes doing the hub's work: [pid] for one worker; with KAKEHASHI_WORKERS the primary
   * (which only accepts connections and hands them on) and its workers, read once it listens.
   */
  pids: number[];
  /** The process that serves requests (for perf): the first worker, or pid itself. */
  servingPid: number;
  listenUrl: string;
  stop(): Promise<number | null>;
}

/**
 * Starts `node src/main.ts serve` (or `script`: another server that prints the same "listening on
 * <url>" line, such as lib/flowFloorServer.ts) as a child and waits for its "listening" line.
 */
export async function startHubProcess(o: {
  cwd: string;
  env: Record<string, string>;
  nodeArgs: string[];
  log: (s: string) => void;
  script?: string[];
}): Promise<HubProcess> {
  const env: Record<string, string> = {};
  // Only our settings reach the hub: nothing from a developer's KAKEHASHI_* or DATABASE_URL.
  for (const [k, v] of Object.entries(process.env)) {
    if (
      v === undefined ||
      k.startsWith('KAKEHASHI_') ||
      k === 'DATABASE_URL' ||
      k === 'PORT' ||
      k === 'LOG_LEVEL'
    )
      continue;
    env[k] = v;
  }
  const child = spawn(process.execPath, [...o.nodeArgs, ...(o.script ?? ['src/main.ts', 'serve'])], {
    cwd: o.cwd,
    env: { ...env, ...o.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stderr!.on('data', (d: Buffer) => {
    err += d.toString();
    if (err.length > 20_000) err = err.slice(-10_000);
  });
  const listenUrl = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`hub did not start within 60 s\n${out}\n${err}`)),
      60_000,
    );
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /listening on (\S+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]!);
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`hub exited with ${code} before listening\n${out}\n${err}`));
    });
  });
  // Later warnings and errors from the hub go to our stderr, prefixed.
  child.stderr!.removeAllListeners('data');
  child.stderr!.on('data', (d: Buffer) => {
    for (const line of d.toString().split('\n')) if (line.trim()) o.log(`[hub] ${line.slice(0, 400)}`);
  });
  child.stdout!.resume();
  const workers = childrenOf(child.pid!);
  return {
    child,
    pid: child.pid!,
    pids: [child.pid!, ...workers],
    servingPid: workers[0] ?? child.pid!,
    listenUrl,
    async stop() {
      if (child.exitCode !== null) return child.exitCode;
      const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
      const code = await exited;
      clearTimeout(timer);
      return code;
    },
  };
}
