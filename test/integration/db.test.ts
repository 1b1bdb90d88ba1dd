import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { migrate } from '../../src/db/index.ts';
import { type TestDb, testDb } from '../support/db.ts';

let t: TestDb;
beforeAll(async () => {
  t = await testDb();
});
afterAll(() => t.close());

describe('db', () => {
  it('records applied migrations and applies nothing twice', async () => {
    const versions = await t.db.query<{ version: string }>(
      'SELECT version FROM schema_migrations ORDER BY version',
    );
    expect(versions.rows.map((r) => r.version)).toContain('0001');
    expect(await migrate(t.db)).toEqual([]);
  });

  it('rolls a failed transaction back completely', async () => {
    await expect(
      t.db.transaction(async (tx) => {
        await tx.query("INSERT INTO secrets (name, value_enc) VALUES ('rollback-probe', 'x')");
        throw new Error('boom');
      }),
    ).rejects.toThrow('boom');
    const res = await t.db.query("SELECT 1 FROM secrets WHERE name = 'rollback-probe'");
    expect(res.rowCount).toBe(0);
  });

  it('fails a transaction in which a statement failed even if its error was caught', async () => {
    // PostgreSQL answers COMMIT of such a transaction with ROLLBACK, not an error: the caller must not
    // take it for committed (e.g. a decision answered "allow" whose writes were all rolled back).
    await expect(
      t.db.transaction(async (tx) => {
        await tx.query("INSERT INTO secrets (name, value_enc) VALUES ('swallowed-probe', 'x')");
        await tx.query('SELECT no_such_function()').catch(() => {});
        return 'done';
      }),
    ).rejects.toThrow();
    const res = await t.db.query("SELECT 1 FROM secrets WHERE name = 'swallowed-probe'");
    expect(res.rowCount).toBe(0);
  });

  it('reports affected rows for updates', async () => {
    await t.db.query("INSERT INTO secrets (name, value_enc) VALUES ('a', '1'), ('b', '2')");
    const res = await t.db.query("UPDATE secrets SET value_enc = 'z' WHERE name IN ('a', 'b')");
    expect(res.rowCount).toBe(2);
    const none = await t.db.query("UPDATE secrets SET value_enc = 'z' WHERE name = 'missing'");
    expect(none.rowCount).toBe(0);
  });
});

describe('migrate', () => {
  it('refuses two migration files with the same number', async () => {
    const { mkdtempSync, writeFileSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const path = await import('node:path');
    const dir = mkdtempSync(path.join(tmpdir(), 'kkh-migrations-'));
    writeFileSync(path.join(dir, '0001_a.sql'), 'SELECT 1;');
    writeFileSync(path.join(dir, '0001_b.sql'), 'SELECT 1;');
    await expect(migrate(t.db, dir)).rejects.toThrow(/more than one file is numbered 0001/);
  });

  it('applies nothing of a migration that fails', async () => {
    const { mkdtempSync, writeFileSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const path = await import('node:path');
    const dir = mkdtempSync(path.join(tmpdir(), 'kkh-migrations-'));
    writeFileSync(
      path.join(dir, '9001_half.sql'),
      'CREATE TABLE half_done (id int); SELECT no_such_function();',
    );
    await expect(migrate(t.db, dir)).rejects.toThrow(/migration 9001_half.sql failed/);
    const table = await t.db.query("SELECT 1 FROM information_schema.tables WHERE table_name = 'half_done'");
    expect(table.rowCount).toBe(0);
    const recorded = await t.db.query("SELECT 1 FROM schema_migrations WHERE version = '9001'");
    expect(recorded.rowCount).toBe(0);
  });
});
