import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { afterCommitQueue, runNow } from './afterCommit.ts';
import type { Db, QueryResult } from './types.ts';

export interface OpenDbOptions {
  /** postgres:// URL; when absent PGlite is used in `dataDir`/pgdata. */
  databaseUrl?: string | undefined;
  dataDir: string;
  poolSize?: number;
  /** Use an in-memory PGlite (tests that need no persistence). */
  inMemory?: boolean;
  /** Start the in-memory PGlite from this cluster tarball (PGlite's dumpDataDir) instead of initdb. */
  loadDataDir?: Blob;
}

export async function openDb(options: OpenDbOptions): Promise<Db> {
  if (!options.databaseUrl) return openPglite(options);
  const { openPostgres } = await import('./postgres.ts');
  return openPostgres(options.databaseUrl, options.poolSize ?? 10);
}

async function openPglite(options: OpenDbOptions): Promise<Db> {
  const { PGlite } = await import('@electric-sql/pglite');
  let dir: string | undefined;
  if (!options.inMemory) {
    dir = path.join(options.dataDir, 'pgdata');
    mkdirSync(dir, { recursive: true });
  }
  const lite = await PGlite.create(dir, options.loadDataDir ? { loadDataDir: options.loadDataDir } : {});
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
