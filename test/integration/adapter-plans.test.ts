/**
 * Query plans of the oidc_payloads statements that run on hot or urgent paths. The table holds every
 * session, grant, code and token, so a statement that reads all of it (or all Grants) on each call
 * gets slower with every customer. Postgres keeps a prepared statement's generic plan for as long as
 * the connection lives, so a plan chosen while a table was small must still be an index plan.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Queryable } from '../../src/db/index.ts';
import { ADAPTER_SQL, revokeCustomerSessions } from '../../src/oidc/adapter.ts';
import { type TestDb, testDb } from '../support/db.ts';

let t: TestDb;
let young: TestDb;
beforeAll(async () => {
  [t, young] = await Promise.all([testDb(), testDb()]);
  // A table in use: many customers' sessions, interactions, tokens and a few grants still alive.
  await t.db.query(
    `INSERT INTO oidc_payloads (model, id, payload, grant_id, expires_at)
     SELECT m, m || '-' || i, jsonb_build_object('accountId', 'cust-' || (i % 500)),
            CASE WHEN m IN ('AccessToken', 'RefreshToken') THEN 'Grant-' || i END, now() + interval '1 day'
     FROM generate_series(1, 1500) i, unnest(ARRAY['Session', 'Interaction', 'AccessToken', 'RefreshToken']) m`,
  );
  await t.db.query(
    `INSERT INTO oidc_payloads (model, id, payload, expires_at)
     SELECT 'Grant', 'Grant-' || i, jsonb_build_object('accountId', 'cust-' || (i % 500)), now() + interval '1 day'
     FROM generate_series(1, 20) i`,
  );
  // A young deployment's table, as when a connection first caches its plans: thirty customers have a
  // grant, a session, an interaction and tokens (payloads of a realistic size).
  await young.db.query(
    `INSERT INTO oidc_payloads (model, id, payload, grant_id, expires_at)
     SELECT m, m || '-' || i, jsonb_build_object('accountId', 'cust-' || i, 'claims', repeat('x', 300)),
            CASE WHEN m <> 'Grant' THEN 'Grant-' || i END, now() + interval '1 day'
     FROM generate_series(1, 30) i, unnest(ARRAY['Grant', 'Session', 'Interaction', 'AccessToken', 'RefreshToken']) m`,
  );
  await Promise.all([t.db.query('ANALYZE oidc_payloads'), young.db.query('ANALYZE oidc_payloads')]);
}, 60_000);
afterAll(() => Promise.all([t.close(), young.close()]));

/** The generic plan Postgres caches for a prepared statement, as text. */
async function genericPlan(tx: Queryable, sql: string, types: string, args: string): Promise<string> {
  await tx.query('SET LOCAL plan_cache_mode = force_generic_plan');
  await tx.query(`PREPARE plan_probe (${types}) AS ${sql}`);
  try {
    const res = await tx.query<{ 'QUERY PLAN': string }>(`EXPLAIN EXECUTE plan_probe (${args})`);
    return res.rows.map((r) => r['QUERY PLAN']).join('\n');
  } finally {
    await tx.query('DEALLOCATE plan_probe');
  }
}

describe('oidc_payloads query plans', () => {
  it('a grant-bound token lookup probes the Grant by its key instead of hashing every Grant', async () => {
    const plan = await young.db.transaction((tx) =>
      genericPlan(tx, ADAPTER_SQL.findGrantBound, 'text, text', "'AccessToken', 'AccessToken-7'"),
    );
    expect(plan).not.toMatch(/hashed SubPlan/);
    expect(plan).not.toMatch(/Seq Scan/);
    expect(plan).toMatch(/Index (Only )?Scan using oidc_payloads_pkey on oidc_payloads g/);
  });

  it("revoking a customer's sessions reads no more than their rows (no scan of the whole table)", async () => {
    const { revoked, seqScans } = await t.db.transaction(async (tx) => {
      const before = await tx.query<{ n: number }>(
        "SELECT seq_scan::int AS n FROM pg_stat_xact_user_tables WHERE relname = 'oidc_payloads'",
      );
      const revoked = await revokeCustomerSessions(tx, 'cust-7');
      const after = await tx.query<{ n: number }>(
        "SELECT seq_scan::int AS n FROM pg_stat_xact_user_tables WHERE relname = 'oidc_payloads'",
      );
      return { revoked, seqScans: after.rows[0]!.n - before.rows[0]!.n };
    });
    // cust-7 has sessions 7, 507, 1007; Grant-7 (the only grant of theirs among the 20) and its two tokens.
    expect(revoked).toEqual({ sessions: 3, grants: 1, tokens: 2 });
    expect(seqScans).toBe(0);
  });
});
