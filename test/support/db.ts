/**
 * A fresh, migrated database for one test file: in-memory PGlite by default, or — when
 * TEST_DATABASE_URL names a real PostgreSQL server (CI sets it) — a new database created on
 * that server and dropped afterwards, so test files can run in parallel.
 */
import { randomBytes } from 'node:crypto';
import { copyFileSync, mkdtempSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { type Db, migrate, openDb } from '../../src/db/index.ts';
import { pgliteTemplateTarball } from './pgliteTemplate.ts';

const MIGRATIONS = fileURLToPath(new URL('../../migrations/', import.meta.url));

/** The migrations before version `upTo` (e.g. '0033'), in a directory of their own. */
function migrationsBefore(upTo: string): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'kkh-migrations-'));
  for (const f of readdirSync(MIGRATIONS).filter((f) => /^\d{4}_.*\.sql$/.test(f) && f < upTo))
    copyFileSync(path.join(MIGRATIONS, f), path.join(dir, f));
  return dir;
}

export interface TestDb {
  db: Db;
  /** postgres:// URL of the test database, when running against a real server. */
  url: string | undefined;
  close(): Promise<void>;
}

export const realPostgresUrl = process.env.TEST_DATABASE_URL || undefined;

export async function createTestDatabase(): Promise<{ url: string | undefined; drop(): Promise<void> }> {
  if (!realPostgresUrl) return { url: undefined, drop: async () => {} };
  const { default: pg } = await import('pg');
  const name = `kkh_test_${randomBytes(6).toString('hex')}`;
  const admin = new pg.Client({ connectionString: realPostgresUrl });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${name}`);
  await admin.end();
  const url = new URL(realPostgresUrl);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    async drop() {
      const c = new pg.Client({ connectionString: realPostgresUrl });
      await c.connect();
      await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await c.end();
    },
  };
}

/** `before`: migrate only up to that version (tests of a migration on data it meets). */
export async function testDb(o: { before?: string } = {}): Promise<TestDb> {
  const created = await createTestDatabase();
  // Without a real server: a copy of the run's migrated template cluster (see pgliteTemplate.ts).
  const template = created.url || o.before ? undefined : pgliteTemplateTarball();
  const db = await openDb({
    databaseUrl: created.url,
    dataDir: '',
    inMemory: true,
    poolSize: 5,
    ...(template ? { loadDataDir: template } : {}),
  });
  await migrate(db, o.before ? migrationsBefore(o.before) : undefined);
  return {
    db,
    url: created.url,
    async close() {
      await db.close();
      await created.drop();
    },
  };
}

/**
 * Adds a customer of institution `inst` (created when missing) straight into the tables, for tests
 * of one module that need no enrolled passkey. Resolves with the customer id.
 */
export async function insertCustomer(
  db: Db,
  o: { id?: string; nameKanji?: string; nameKana?: string } = {},
): Promise<string> {
  const id = o.id ?? `cus_${randomBytes(6).toString('hex')}`;
  await db.query(
    "INSERT INTO institutions (id, kind, name_ja, name_en) VALUES ('inst', 'bank', '銀行', 'Bank') ON CONFLICT DO NOTHING",
  );
  await db.query(
    "INSERT INTO customers (id, institution_id, customer_number, name_kanji, name_kana) VALUES ($1, 'inst', $1, $2, $3)",
    [id, o.nameKanji ?? '山田', o.nameKana ?? 'ヤマダ'],
  );
  return id;
}
