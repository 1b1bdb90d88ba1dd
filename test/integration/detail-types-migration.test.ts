/**
 * Migration 0038, part 2 (security review): dynamically registered clients stored oidc-provider's old
 * default authorization_details_types ["account_information"] whatever their scope. Where the scope
 * lacks `accounts` the stored default goes; every other registration stays as it was.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Db, migrate } from '../../src/db/index.ts';
import { type TestDb, testDb } from '../support/db.ts';

let t: TestDb;
let db: Db;

beforeAll(async () => {
  // Every migration before 0038.
  t = await testDb({ before: '0038' });
  db = t.db;
});
afterAll(() => t?.close());

describe('migration 0038 (authorization_details_types)', () => {
  it('drops the stored old default only from registered clients whose scope lacks accounts', async () => {
    const client = (id: string, metadata: Record<string, unknown>) =>
      db.query('INSERT INTO clients (client_id, metadata) VALUES ($1, $2)', [
        id,
        JSON.stringify({ client_id: id, ...metadata }),
      ]);
    const old = ['account_information'];
    await client('dcr-narrow', {
      client_id_issued_at: 1,
      scope: 'openid offline_access',
      authorization_details_types: old,
    });
    await client('dcr-accounts', {
      client_id_issued_at: 1,
      scope: 'openid accounts',
      authorization_details_types: old,
    });
    await client('dcr-no-scope', { client_id_issued_at: 1, authorization_details_types: old });
    await client('dcr-withdrawal', {
      client_id_issued_at: 1,
      scope: 'openid',
      authorization_details_types: ['withdrawal'],
    });
    await client('operator-typed', { scope: 'openid', authorization_details_types: old });
    await migrate(db);
    const rows = await db.query<{ client_id: string; types: unknown }>(
      "SELECT client_id, metadata -> 'authorization_details_types' AS types FROM clients ORDER BY client_id",
    );
    expect(Object.fromEntries(rows.rows.map((r) => [r.client_id, r.types]))).toEqual({
      'dcr-accounts': old,
      'dcr-narrow': null,
      'dcr-no-scope': old,
      'dcr-withdrawal': ['withdrawal'],
      'operator-typed': old,
    });
  });
});
