/**
 * The one storage surface: SQL over PostgreSQL, either a real server through a postgres.js pool
 * (DATABASE_URL set) or embedded PGlite in the data directory. Both speak the same SQL; keep
 * queries to what Postgres 15 and PGlite's Postgres accept alike.
 */

export { lockCustomer } from './customerLock.ts';
export { migrate } from './migrate.ts';
export { openDb } from './openDb.ts';
export type { Db, Queryable, QueryResult } from './types.ts';
