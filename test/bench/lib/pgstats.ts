/**
 * Database-side counters for a phase: transactions (≈ statements, the hub runs most statements
 * outside explicit transactions) from pg_stat_database, and with BENCH_PG_STATS=1 the statements
 * themselves from pg_stat_statements (calls, execution and planning time).
 */
import pg from 'pg';

export interface DbCounters {
  xacts: number;
  inserted: number;
  updated: number;
  deleted: number;
}

export interface StatementRow {
  calls: number;
  meanExecMs: number;
  meanPlanMs: number;
  rows: number;
  query: string;
}

export interface PgMonitor {
  /** The monitor's own backend, to leave out of Postgres CPU figures. */
  backendPid: number;
  counters(): Promise<DbCounters>;
  /** Statements executed so far (pg_stat_statements), or undefined without it. */
  totalCalls(): Promise<number | undefined>;
  /** Starts a statement window (resets pg_stat_statements); no-op without it. */
  resetStatements(): Promise<void>;
  statements(limit: number): Promise<StatementRow[] | undefined>;
  close(): Promise<void>;
}

export async function createPgMonitor(url: string, statementStats: boolean): Promise<PgMonitor> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  if (statementStats) await client.query('CREATE EXTENSION IF NOT EXISTS pg_stat_statements');
  const backendPid = (await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid;
  return {
    backendPid,
    async totalCalls() {
      if (!statementStats) return undefined;
      const r = await client.query<{ n: string | null }>(
        `SELECT sum(calls) AS n FROM pg_stat_statements
         WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) AND query NOT LIKE '%pg_stat%'`,
      );
      return Number(r.rows[0]?.n ?? 0);
    },
    async counters() {
      await client.query('SELECT pg_stat_clear_snapshot()');
      const r = await client.query<{ x: string; i: string; u: string; d: string }>(
        `SELECT xact_commit + xact_rollback AS x, tup_inserted AS i, tup_updated AS u, tup_deleted AS d
         FROM pg_stat_database WHERE datname = current_database()`,
      );
      const row = r.rows[0]!;
      return {
        xacts: Number(row.x),
        inserted: Number(row.i),
        updated: Number(row.u),
        deleted: Number(row.d),
      };
    },
    async resetStatements() {
      if (statementStats) await client.query('SELECT pg_stat_statements_reset()');
    },
    async statements(limit) {
      if (!statementStats) return undefined;
      const r = await client.query<{
        calls: string;
        exec: number;
        plan: number;
        rows: string;
        query: string;
      }>(
        `SELECT calls, total_exec_time / calls AS exec, total_plan_time / calls AS plan, rows, query
         FROM pg_stat_statements
         WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
           AND query NOT LIKE '%pg_stat%'
         ORDER BY calls DESC, total_exec_time DESC LIMIT $1`,
        [limit],
      );
      return r.rows.map((x) => ({
        calls: Number(x.calls),
        meanExecMs: x.exec,
        meanPlanMs: x.plan,
        rows: Number(x.rows),
        query: x.query.replace(/\s+/g, ' ').slice(0, 160),
      }));
    },
    close: () => client.end(),
  };
}
