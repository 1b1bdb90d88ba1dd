/**
 * Migration 0037 on a database that already holds what it forbids: one identifier two customers
 * consented to share with the same peer. Both consents are withdrawn (audited), a consent of the
 * same identifier with another peer stays, and afterwards a second consent of it is refused.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Db, migrate } from '../../src/db/index.ts';
import { insertCustomer, type TestDb, testDb } from '../support/db.ts';

let t: TestDb;
let db: Db;

beforeAll(async () => {
  // Every migration before 0037.
  t = await testDb({ before: '0037' });
  db = t.db;
});
afterAll(() => t?.close());

const link = (peerId: string, customerId: string, pairwise: string, shared: unknown) =>
  db.query(
    `INSERT INTO ssf_subject_links (peer_id, customer_id, pairwise_sub, shared_subject, consent_ref, consented_at)
     VALUES ($1, $2, $3, $4::jsonb, 'ref', now())`,
    [peerId, customerId, pairwise, JSON.stringify(shared)],
  );

describe('migration 0037 (one customer per shared identifier and peer)', () => {
  it('withdraws consents of an identifier several customers share with one peer, then refuses a second one', async () => {
    const a = await insertCustomer(db);
    const b = await insertCustomer(db);
    const c = await insertCustomer(db);
    const email = { format: 'email', email: 'family@example.com' };
    await link('bank', a, 'p-a', email);
    await link('bank', b, 'p-b', { email: 'family@example.com', format: 'email' });
    await link('broker', c, 'p-c', email);

    expect((await migrate(db)).filter((v) => v <= '0037')).toEqual(['0037']);

    const rows = await db.query<{ peer_id: string; customer_id: string; consented: boolean }>(
      `SELECT peer_id, customer_id, consented_at IS NOT NULL AND shared_subject IS NOT NULL AS consented
       FROM ssf_subject_links ORDER BY pairwise_sub`,
    );
    expect(rows.rows).toEqual([
      { peer_id: 'bank', customer_id: a, consented: false },
      { peer_id: 'bank', customer_id: b, consented: false },
      { peer_id: 'broker', customer_id: c, consented: true },
    ]);
    const audited = await db.query<{ customer_id: string }>(
      "SELECT customer_id FROM audit_events WHERE type = 'ssf.subject.consent_withdrawn' ORDER BY customer_id",
    );
    expect(audited.rows.map((r) => r.customer_id)).toEqual([a, b].sort());
    await db.query(
      "UPDATE ssf_subject_links SET shared_subject = $2::jsonb, consented_at = now() WHERE peer_id = 'bank' AND customer_id = $1",
      [a, JSON.stringify(email)],
    );
    await expect(
      db.query(
        "UPDATE ssf_subject_links SET shared_subject = $2::jsonb, consented_at = now() WHERE peer_id = 'bank' AND customer_id = $1",
        [b, JSON.stringify(email)],
      ),
    ).rejects.toThrow(/ssf_subject_links_shared/);
  });
});
