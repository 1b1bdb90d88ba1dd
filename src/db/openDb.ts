import { mkdirSync } from 'node:fs';
import path from 'node:path';
import type pg from 'pg';
import type { Db, Queryable, QueryResult } from './types.ts';

export interface OpenDbOptions {
  /** postgres:// URL; when absent PGlite is used in `dataDir`/pgdata. */
  databaseUrl?: string | undefined;
  dataDir: string;
  poolSize?: number;
  /** Use an in-memory PGlite (tests that need no persistence). */
  inMemory?: boolean;
}

/** A callback after a statement outside a transaction: that statement has committed already. */
function runNow(fn: () => void): void {
  report(fn);
}

/** The callbacks of one transaction, run only after its COMMIT (a rollback simply drops them). */
function afterCommitQueue() {
  const queued: Array<() => void> = [];
  return {
    add: (fn: () => void) => {
      queued.push(fn);
    },
    run: () => {
      for (const fn of queued.splice(0)) report(fn);
    },
  };
}

/** The transaction is settled: a failing callback must not turn its outcome into an error. */
function report(fn: () => void): void {
  try {
    fn();
  } catch (err) {
    process.emitWarning(err as Error);
  }
}

export async function openDb(options: OpenDbOptions): Promise<Db> {
  return options.databaseUrl ? openPg(options.databaseUrl, options.poolSize ?? 10) : openPglite(options);
}

async function openPg(url: string, max: number): Promise<Db> {
  const { default: pgModule } = await import('pg');
  const pool = new pgModule.Pool({ connectionString: url, max, idleTimeoutMillis: 30_000 });
  // An idle client that loses its server must not crash the process.
  pool.on('error', () => {});
  // Named statements: each connection parses and plans a statement once instead of on every call
  // (measured: half of Postgres' CPU per flow went to parsing and planning unnamed statements).
  const names = new Map<string, string>();
  const nameOf = (sql: string) => {
    let name = names.get(sql);
    // Statements are static strings in this code base; the cap guards against one that is not.
    if (!name && names.size >= 2000) return undefined;
    if (!name) {
      name = `k${names.size}`;
      names.set(sql, name);
    }
    return name;
  };
  const run = async <R>(q: pg.Pool | pg.PoolClient, sql: string, params?: unknown[]) => {
    const res = await q.query({ name: nameOf(sql), text: sql, values: params ?? [] });
    return { rows: res.rows as R[], rowCount: res.rowCount ?? 0 } satisfies QueryResult<R>;
  };
  await pool.query('SELECT 1');
  return {
    kind: 'pg',
    query: (sql, params) => run(pool, sql, params),
    exec: async (sql) => {
      await pool.query(sql);
    },
    afterCommit: runNow,
    async transaction(fn) {
      const client = await pool.connect();
      const committed = afterCommitQueue();
      try {
        await client.query('BEGIN');
        const tx: Queryable = {
          query: (sql, params) => run(client, sql, params),
          exec: async (sql) => {
            await client.query(sql);
          },
          afterCommit: committed.add,
        };
        const result = await fn(tx);
        // A statement that failed inside (its error caught) aborts the transaction, and PostgreSQL then
        // answers COMMIT with ROLLBACK, not an error: fail, as PGlite does, instead of reporting writes
        // that never happened.
        const end = await client.query('COMMIT');
        if (end.command === 'ROLLBACK')
          throw new Error('transaction rolled back: a statement in it failed and its error was caught');
        committed.run();
        return result;
      } catch (err) {
        await client.query('ROLLBACK').catch(() => {});
        throw err;
      } finally {
        client.release();
      }
    },
    listen: (channel, onNotify) => listenPg(pgModule, url, channel, onNotify),
    close: () => pool.end(),
  };
}

const RECONNECT_MS = 1000;

async function listenPg(
  pgModule: typeof pg,
  url: string,
  channel: string,
  onNotify: () => void,
): Promise<() => Promise<void>> {
  if (!/^[a-z_][a-z0-9_]{0,62}$/.test(channel)) throw new TypeError(`bad channel name ${channel}`);
  let client: pg.Client | undefined;
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  const retry = () => {
    if (stopped || timer) return;
    timer = setTimeout(() => {
      timer = undefined;
      connect().catch(retry);
    }, RECONNECT_MS);
    timer.unref();
  };
  const connect = async () => {
    const c = new pgModule.Client({ connectionString: url });
    // A lost connection (server restart, network) is retried; pollers cover the gap.
    c.on('error', () => {});
    c.on('end', () => {
      if (client === c) client = undefined;
      retry();
    });
    c.on('notification', (m) => {
      if (m.channel === channel) onNotify();
    });
    try {
      await c.connect();
      await c.query(`LISTEN ${channel}`);
    } catch (err) {
      await c.end().catch(() => {});
      throw err;
    }
    if (stopped) {
      await c.end().catch(() => {});
      return;
    }
    client = c;
    onNotify();
  };
  await connect();
  return async () => {
    stopped = true;
    clearTimeout(timer);
    await client?.end().catch(() => {});
  };
}

async function openPglite(options: OpenDbOptions): Promise<Db> {
  const { PGlite } = await import('@electric-sql/pglite');
  let dir: string | undefined;
  if (!options.inMemory) {
    dir = path.join(options.dataDir, 'pgdata');
    mkdirSync(dir, { recursive: true });
  }
  const lite = await PGlite.create(dir);
  const run = async <R>(
    q: { query: (sql: string, params?: unknown[]) => Promise<{ rows: unknown[]; affectedRows?: number }> },
    sql: string,
    params?: unknown[],
  ): Promise<QueryResult<R>> => {
    const res = await q.query(sql, params);
    return { rows: res.rows as R[], rowCount: res.affectedRows || res.rows.length };
  };
  return {
    kind: 'pglite',
    query: (sql, params) => run(lite, sql, params),
    exec: async (sql) => {
      await lite.exec(sql);
    },
    afterCommit: runNow,
    // PGlite runs one statement at a time and holds other callers out while a transaction runs.
    async transaction(fn) {
      const committed = afterCommitQueue();
      const result = await lite.transaction((tx) =>
        fn({
          query: (sql, params) => run(tx, sql, params),
          exec: async (sql) => {
            await tx.exec(sql);
          },
          afterCommit: committed.add,
        }),
      );
      committed.run();
      return result;
    },
    close: () => lite.close(),
  };
}
