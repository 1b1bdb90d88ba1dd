/**
 * Migration 0033 on a database that already holds what it forbids: live links of one bank with no
 * asserted account (which the old unique index let through, one cap each) and links a peer suspended
 * under the old rule. The oldest live link stays, the others are removed and told to both
 * institutions; the peer's suspension becomes a standing stop; afterwards a second such link is refused.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Db, migrate } from '../../src/db/index.ts';
import { insertCustomer, type TestDb, testDb } from '../support/db.ts';

let t: TestDb;
let db: Db;

beforeAll(async () => {
  // Every migration before 0033.
  t = await testDb({ before: '0033' });
  db = t.db;
});
afterAll(() => t?.close());

const link = (
  id: string,
  customerId: string,
  o: { mask?: string; status?: string; by?: string; at: string; account?: string },
) =>
  db.query(
    `INSERT INTO bank_links (id, customer_id, account_id, brokerage_institution_id, bank_id, bank_institution_id,
       bank_name, bank_account_masked, holder_name, bank_subject, bank_strength, cap_amount, status, policy_version,
       decided_by, created_at, suspended_at, suspended_by)
     VALUES ($1, $2, $7, 'broker', 'otp-bank', 'inst', 'x', $3, 'x', 'sub', 'otp', 100000, $4, 'v', '{}',
       $5::timestamptz, CASE WHEN $6::text IS NULL THEN NULL ELSE $5::timestamptz END, $6)`,
    [id, customerId, o.mask ?? null, o.status ?? 'active', o.at, o.by ?? null, o.account ?? 'acc-1'],
  );

describe('migration 0033 (sweep safeguards)', () => {
  it('keeps the oldest of duplicate unasserted-account links, records old peer suspensions, then refuses duplicates', async () => {
    const customerId = await insertCustomer(db);
    const other = await insertCustomer(db);
    await db.query(
      "INSERT INTO institutions (id, kind, name_ja, name_en) VALUES ('broker', 'brokerage', '証券', 'Broker')",
    );
    await db.query(
      `INSERT INTO accounts (id, customer_id, institution_id, kind, branch_code, account_number, nickname, opened_on)
       VALUES ('acc-1', $1, 'broker', 'securities', '001', '1234567', 'x', '2020-01-01'),
              ('acc-2', $2, 'broker', 'securities', '001', '7654321', 'x', '2020-01-01')`,
      [customerId, other],
    );
    await link('lnk_a', customerId, { at: '2026-01-01' });
    await link('lnk_b', customerId, { at: '2026-02-01' });
    await link('lnk_c', customerId, { at: '2026-03-01', status: 'suspended', by: 'peer:peer-z' });
    await link('lnk_old', customerId, { at: '2025-01-01', status: 'removed' });
    await link('lnk_masked', customerId, { at: '2026-04-01', mask: '123 普通 ****321' });
    await link('lnk_other', other, {
      at: '2026-04-01',
      status: 'suspended',
      by: 'institution:inst',
      account: 'acc-2',
    });

    // 0033 is applied now (later migrations, if any, after it).
    expect((await migrate(db)).filter((v) => v <= '0033')).toEqual(['0033']);

    const status = await db.query<{ id: string; status: string }>(
      'SELECT id, status FROM bank_links ORDER BY id',
    );
    expect(Object.fromEntries(status.rows.map((r) => [r.id, r.status]))).toEqual({
      lnk_a: 'active',
      lnk_b: 'removed',
      lnk_c: 'removed',
      lnk_masked: 'active',
      lnk_old: 'removed',
      lnk_other: 'suspended',
    });
    const told = await db.query<{ institution_id: string; link_id: string }>(
      "SELECT institution_id, link_id FROM institution_events WHERE type = 'link.removed' ORDER BY link_id, institution_id",
    );
    expect(told.rows.map((r) => [r.link_id, r.institution_id])).toEqual([
      ['lnk_b', 'broker'],
      ['lnk_b', 'inst'],
      ['lnk_c', 'broker'],
      ['lnk_c', 'inst'],
    ]);
    // The peer's old suspension is a standing stop on the customer's sweeps; an institution's is not.
    const stops = await db.query<{ customer_id: string; peer_id: string }>(
      'SELECT customer_id, peer_id FROM sweep_peer_stops WHERE cleared_at IS NULL',
    );
    expect(stops.rows).toEqual([{ customer_id: customerId, peer_id: 'peer-z' }]);
    // No second live link of the same bank without an asserted account.
    await expect(link('lnk_d', customerId, { at: '2026-05-01' })).rejects.toThrow(/bank_links_live/);
  });
});
