import postgres from 'postgres';
import { afterCommitQueue, runNow } from './afterCommit.ts';
import { pgCompatibleTypes, toParam } from './pgValues.ts';
import type { Db, QueryResult } from './types.ts';

type Rows = postgres.RowList<postgres.Row[]>;

/** postgres.js' pool or a transaction's connection. */
interface RawRunner {
  unsafe(text: string, params?: unknown[], options?: postgres.UnsafeQueryOptions): Promise<Rows>;
}

/** What statements run on: prepared statements, and scripts over the simple query protocol. */
interface Runner {
  query(text: string, params: unknown[]): Promise<Rows>;
  script(text: string): Promise<Rows>;
}

/** Prepared (named) statements over the extended protocol, even without parameters. */
const PREPARED = { prepare: true, simple: false } as postgres.UnsafeQueryOptions;
const UNNAMED = { prepare: false, simple: false } as postgres.UnsafeQueryOptions;

/** Statements are static strings in this code base; the cap guards against one that is not. */
const MAX_PREPARED = 2000;
const preparedTexts = new Set<string>();
const modeOf = (text: string) => {
  if (preparedTexts.has(text)) return PREPARED;
  if (preparedTexts.size >= MAX_PREPARED) return UNNAMED;
  preparedTexts.add(text);
  return PREPARED;
};

/**
 * The PostgreSQL `Db` on postgres.js: every statement is prepared once per connection (named
 * statements; parsing and planning unnamed ones was half of Postgres' CPU per flow), and
 * concurrent statements on one connection are pipelined. Values convert as they did with `pg`
 * (src/db/pgValues.ts).
 */
export async function openPostgres(url: string, max: number): Promise<Db> {
  /**
   * Every connection a statement ran on, by id, to mark it terminated when it closes: postgres.js
   * 3.4.9 would otherwise write sql.begin's ROLLBACK (or a statement issued in a transaction after
   * the loss) to its missing socket from a timer and crash the process. A terminated connection
   * refuses statements; the pool reopens it on demand.
   */
  const connections = new Map<number, Connection>();
  const remember = (c: Connection) => {
    connections.set(c.id, c);
    return true; // as without the hook: the connection may take more statements (pipelining)
  };
  const prepared = { ...PREPARED, onexecute: remember } as postgres.UnsafeQueryOptions;
  const unnamed = { ...UNNAMED, onexecute: remember } as postgres.UnsafeQueryOptions;
  const simple = { onexecute: remember } as postgres.UnsafeQueryOptions;
  const on = (runner: RawRunner): Runner => ({
    query: (text, params) => runner.unsafe(text, params, modeOf(text) === PREPARED ? prepared : unnamed),
    script: (text) => runner.unsafe(text, [], simple),
  });
  const sql = postgres(url, {
    max,
    idle_timeout: 30,
    // Array types are parsed from pgCompatibleTypes' fixed list, as pg did; no lookup per connection.
    fetch_types: false,
    types: pgCompatibleTypes,
    // pg ignored notices ("relation already exists, skipping" from migrations); postgres.js logs them.
    onnotice: () => {},
    onclose: (id) => connections.get(id)?.terminate(),
  });
  const pool = on(sql);
  await pool.query('SELECT 1', []);
  return {
    kind: 'pg',
    query: (text, params) => againIfStale(() => run(pool, text, params)),
    exec: (script) => againIfStale(() => exec(pool, script)),
    afterCommit: runNow,
    async transaction(fn) {
      // The BEGIN of a connection whose predecessor was terminated can fail with its stale error,
      // and the attempt is run again: each attempt queues its own callbacks, and only those of the
      // attempt that committed run.
      let committed = afterCommitQueue();
      const result = await againIfStale(() => {
        const attempt = afterCommitQueue();
        committed = attempt;
        return sql.begin((conn) => {
          const tx = on(conn);
          return fn({
            query: (text, params) => run(tx, text, params),
            exec: (script) => exec(tx, script),
            afterCommit: attempt.add,
          });
        });
      });
      committed.run();
      return result as Awaited<ReturnType<typeof fn>>;
    },
    listen: (channel, onNotify) => listenPostgres(url, channel, onNotify),
    // Statements still running get 5 s. The bound also ends a connection whose backend was
    // terminated mid-statement and not reopened since: postgres.js 3.4.9 would wait for it forever.
    close: () => sql.end({ timeout: 5 }),
  };
}

async function run<R>(sql: Runner, text: string, params: unknown[] | undefined): Promise<QueryResult<R>> {
  try {
    const result = await sql.query(text, (params ?? []).map(toParam));
    // A plain array (postgres.js returns a subclass) and pg's rowCount: the command tag's count.
    return { rows: result.slice() as R[], rowCount: result.count ?? 0 };
  } catch (err) {
    throw withPgFieldNames(err);
  }
}

/** A script of several statements without parameters: the simple query protocol, as pg. */
async function exec(sql: Runner, script: string): Promise<void> {
  try {
    await sql.script(script);
  } catch (err) {
    throw withPgFieldNames(err);
  }
}

/**
 * A server error (code, detail … as pg) also under pg's names for the fields postgres.js names
 * differently (constraint_name → constraint …), for code and logs written against pg's errors.
 */
function withPgFieldNames(err: unknown): unknown {
  if (err instanceof postgres.PostgresError) {
    const e = err as postgres.PostgresError & Record<string, unknown>;
    e.schema ??= e.schema_name;
    e.table ??= e.table_name;
    e.column ??= e.column_name;
    e.dataType ??= e.data_type_name;
    e.constraint ??= e.constraint_name;
  }
  return err;
}

/** What postgres.js hands the `onexecute` hook: the connection a statement was written to. */
interface Connection {
  id: number;
  terminate(): void;
}

/** Backend terminated by an administrator or by another backend's crash: the statement did not run. */
const TERMINATED = new Set(['57P01', '57P02']);

/**
 * Runs `attempt` once more when it failed with a terminated backend's error. postgres.js 3.4.9 keeps
 * the FATAL error of a connection terminated mid-statement (that statement fails with
 * CONNECTION_CLOSED) and hands it to the first statement — or reservation — on the reopened
 * connection, which never reached the server. pg had no such stale error.
 */
async function againIfStale<T>(attempt: () => Promise<T>): Promise<T> {
  try {
    return await attempt();
  } catch (err) {
    const code = err instanceof postgres.PostgresError ? (err as { code?: string }).code : undefined;
    if (code === undefined || !TERMINATED.has(code)) throw err;
    return attempt();
  }
}

const RECONNECT_MS = 1000;

/**
 * LISTEN over a connection of its own. A lost connection (server restart, network) is retried
 * every RECONNECT_MS; each time it listens again onNotify runs once for what it may have missed
 * (pollers cover the gap). postgres.js' own `listen` gives up after one failed re-listen.
 */
async function listenPostgres(
  url: string,
  channel: string,
  onNotify: () => void,
): Promise<() => Promise<void>> {
  if (!/^[a-z_][a-z0-9_]{0,62}$/.test(channel)) throw new TypeError(`bad channel name ${channel}`);
  let stopped = false;
  let listening = false;
  let timer: NodeJS.Timeout | undefined;
  const retry = () => {
    if (stopped || timer) return;
    timer = setTimeout(() => {
      timer = undefined;
      connect().catch(retry);
    }, RECONNECT_MS);
    timer.unref();
  };
  const sql = postgres(url, {
    // onnotify: the connection-level hook postgres.js' own `listen` is built on (not in its types).
    ...({ onnotify: (c: string) => c === channel && onNotify() } as object),
    max: 1,
    idle_timeout: 0,
    max_lifetime: 0,
    fetch_types: false,
    onnotice: () => {},
    onclose: () => {
      // A failed connect closes too; only a connection that was listening starts a retry here.
      if (!listening) return;
      listening = false;
      retry();
    },
  });
  const connect = async () => {
    await sql.unsafe(`LISTEN ${channel}`);
    if (stopped) return;
    listening = true;
    onNotify();
  };
  try {
    await connect();
  } catch (err) {
    await sql.end({ timeout: 0 });
    throw err;
  }
  return async () => {
    stopped = true;
    clearTimeout(timer);
    await sql.end({ timeout: 0 }).catch(() => {});
  };
}
