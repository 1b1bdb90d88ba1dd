export interface QueryResult<R> {
  rows: R[];
  /** Rows inserted, updated, deleted or returned. */
  rowCount: number;
}

export interface Queryable {
  query<R = Record<string, unknown>>(sql: string, params?: unknown[]): Promise<QueryResult<R>>;
  /** Runs a script of several statements without parameters (migrations). */
  exec(sql: string): Promise<void>;
  /**
   * Runs `fn` once what was written through this handle is committed: at once outside a transaction
   * (each statement commits by itself), after COMMIT inside one, and never when it rolls back. For
   * effects outside the database that must not precede the commit or survive a rollback: metrics,
   * waking in-process workers that read the rows. `fn` must not throw (it would only be reported).
   */
  afterCommit(fn: () => void): void;
}

export interface Db extends Queryable {
  readonly kind: 'pg' | 'pglite';
  /**
   * PostgreSQL LISTEN on `channel` over a connection of its own (reconnecting after a loss, and
   * calling onNotify once each time it is listening again, for what it may have missed). PGlite has
   * none: its callers poll. Resolves to a function that stops listening.
   */
  listen?(channel: string, onNotify: () => void): Promise<() => Promise<void>>;
  /** Runs fn inside BEGIN … COMMIT; any throw rolls back and is rethrown. */
  transaction<T>(fn: (tx: Queryable) => Promise<T>): Promise<T>;
  close(): Promise<void>;
}
