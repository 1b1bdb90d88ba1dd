/**
 * What received SETs do here, end to end: a peer signs SETs and pushes them (RFC 8935, over HTTPS,
 * with the Authorization header we handed out) to the hub's receiver, which verifies them against
 * the peer's JWKS and queues the actions; the action consumers then act through the modules that
 * own them — the risk engine's levels and session scores, the account lock, bank-link sweeps.
 *
 * The peer is the hub itself under another name (its SSF issuer and SET keys are the hub's), so the
 * SETs are real signed SETs checked against a JWKS fetched over TLS, without a second hub.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { completeLogin } from '../../conformance/lib/login.ts';
import { createUserAgent } from '../../conformance/lib/userAgent.ts';
import { issueEnrollmentTicket } from '../../src/authn/index.ts';
import { takeSignalNotices } from '../../src/notify/signalNotices.ts';
import {
  accountLock,
  assessLogin,
  assessOperation,
  clearAfterReproofing,
  deleteExpiredRiskEvents,
  effectiveRiskLevel,
  riskEngineFor,
} from '../../src/risk/index.ts';
import { onActionsQueued, runActions } from '../../src/signals/actions.ts';
import { EVENT, linkCustomer } from '../../src/signals/index.ts';
import { signJws } from '../../src/signals/jws.ts';
import { processSet, sha256, type VerifiedSet } from '../../src/signals/receiver.ts';
import { startTestHub, type TestHub } from '../support/hub.ts';
import { createEmulator } from '../support/passkeyEmulator.ts';
import { demoRp, startAuthorization } from '../support/rp.ts';
import { waitFor } from '../support/waitFor.ts';

const PUSH_AUTH = `Bearer ${randomUUID()}`;
const PEER_SUBJECT = { format: 'opaque', id: 'peer-customer-1' };
let t: TestHub;
let customerId: string;

beforeAll(async () => {
  t = await startTestHub(({ issuer, caPath }) => ({
    signals: { workerIntervalMs: 50, peers: [{ id: 'peer', issuer, caFile: caPath }] },
    risk: { peerRiskTtlSeconds: 3 * 24 * 3600 },
  }));
  customerId = t.hub.demo!.customerId;
  // Our stream at the peer, as subscribing would have left it: the header the peer must send.
  await t.hub.db.query(
    `INSERT INTO ssf_subscriptions (peer_id, stream_id, delivery_method, push_auth_hash)
     VALUES ('peer', 'stream-at-peer', 'urn:ietf:rfc:8935', $1)`,
    [sha256(PUSH_AUTH).toString('hex')],
  );
  await linkCustomer(t.hub.db, { peerId: 'peer', customerId, peerSubject: PEER_SUBJECT as never });
});

afterAll(async () => {
  await t?.close();
});

/** Signs a SET as the peer and pushes it to our receiver; returns the HTTP status. */
async function push(
  eventType: string,
  event: Record<string, unknown>,
  o: { jti?: string; txn?: string } = {},
) {
  const key = t.hub.signals.context.keys.set.RS256;
  const jwt = await signJws(
    { alg: key.alg, kid: key.kid, typ: 'secevent+jwt' },
    {
      iss: t.issuer,
      aud: t.issuer,
      iat: Math.floor(Date.now() / 1000),
      jti: o.jti ?? randomUUID(),
      txn: o.txn ?? randomUUID(),
      sub_id: PEER_SUBJECT,
      events: { [eventType]: event },
    },
    key,
  );
  const res = await t.fetch(`${t.issuer}/ssf/receive/peer`, {
    method: 'POST',
    headers: { 'content-type': 'application/secevent+jwt', authorization: PUSH_AUTH },
    body: jwt,
  });
  return res.status;
}

/** Rows still waiting for the consumers tested here (`notify` is the notification worker's). */
const pending = async () =>
  (
    await t.hub.db.query<{ n: number }>(
      "SELECT count(*)::int AS n FROM ssf_action_outbox WHERE customer_id = $1 AND processed_at IS NULL AND action <> 'notify'",
      [customerId],
    )
  ).rows[0]!.n;
/** The customer's effective level: the engine's, or higher when a peer raised it. */
const level = async () => (await effectiveRiskLevel(t.hub.db, customerId)).level;
const audits = async (type: string) =>
  (
    await t.hub.db.query<{ n: number }>(
      'SELECT count(*)::int AS n FROM audit_events WHERE customer_id = $1 AND type = $2',
      [customerId, type],
    )
  ).rows[0]!.n;

describe('actions of received SETs', () => {
  it('require_step_up: MEDIUM, and a live session must step up for a sensitive operation; a repeat changes nothing', async () => {
    // A live browser session of the customer (as oidc-provider stores it).
    const uid = `uid-${randomUUID()}`;
    await t.hub.db.query(
      `INSERT INTO oidc_payloads (model, id, payload, expires_at) VALUES ('Session', $1, $2::jsonb, now() + interval '1 hour')`,
      [randomUUID(), JSON.stringify({ uid, accountId: customerId, kind: 'Session' })],
    );
    const engine = riskEngineFor(t.hub.config);
    const sensitive = () =>
      assessOperation(engine, t.hub.db, {
        customerId,
        operation: 'passkey.add',
        sensitive: true,
        sessionKey: `session:${uid}`,
      });
    expect((await sensitive()).decision).toBe('allow');

    const jti = randomUUID();
    const txn = randomUUID();
    expect(await push(EVENT.accountCredentialChangeRequired, { event_timestamp: 1 }, { jti, txn })).toBe(202);
    await waitFor('the step-up to apply', async () => (await audits('risk.peer.step_up_required')) === 1);
    expect(await level()).toBe('MEDIUM');
    const score = async () =>
      (
        await t.hub.db.query<{ score: number }>('SELECT score FROM session_risk WHERE session_key = $1', [
          `session:${uid}`,
        ])
      ).rows[0]?.score;
    expect(await score()).toBe(60);
    const d = await sensitive();
    expect(d.decision).toBe('step_up');
    expect(d.reasons.map((r) => r.rule)).toContain('elevated-session');

    // The same SET again, and the same cause from another jti: 202, nothing queued or applied again.
    expect(await push(EVENT.accountCredentialChangeRequired, { event_timestamp: 1 }, { jti, txn })).toBe(202);
    expect(await push(EVENT.accountCredentialChangeRequired, { event_timestamp: 1 }, { txn })).toBe(202);
    await new Promise((r) => setTimeout(r, 300));
    expect(await pending()).toBe(0);
    expect(await audits('risk.peer.step_up_required')).toBe(1);
    expect(await score()).toBe(60);
  });

  it('raise_risk: a peer risk-level-change HIGH makes the customer HIGH; a later MEDIUM never lowers it', async () => {
    expect(
      await push(EVENT.riskLevelChange, { current_level: 'HIGH', previous_level: 'LOW', principal: 'USER' }),
    ).toBe(202);
    await waitFor('HIGH', async () => (await level()) === 'HIGH');
    expect(await push(EVENT.riskLevelChange, { current_level: 'MEDIUM', principal: 'USER' })).toBe(202);
    await waitFor('the MEDIUM signal to be taken', async () => (await pending()) === 0);
    expect(await level()).toBe('HIGH');
    const raised = await t.hub.db.query<{ data: { level: string; previous: string } }>(
      `SELECT data FROM audit_events WHERE customer_id = $1 AND type = 'risk.peer.raised' ORDER BY id`,
      [customerId],
    );
    expect(raised.rows.map((r) => r.data.level)).toEqual(['HIGH', 'unchanged']);
  });

  it('a peer’s level outlives the engine’s clean sign-ins, until it expires, re-proofing, or a new raise', async () => {
    // Still HIGH from the peer (the test before). The engine now sees a clean sign-in: its own level is LOW…
    await waitFor('our own risk-level-change to come back', async () => {
      const live = await t.hub.db.query<{ n: number }>(
        'SELECT count(*)::int AS n FROM peer_risk_levels WHERE customer_id = $1 AND ended_at IS NULL',
        [customerId],
      );
      return live.rows[0]!.n === 4;
    });
    const engine = riskEngineFor(t.hub.config);
    const clean = await assessLogin(engine, t.hub.db, {
      customerId,
      method: 'passkey',
      knownDevice: true,
      ip: '127.0.0.1',
    });
    expect(clean).toMatchObject({ decision: 'allow', level: 'LOW' });
    // …and the customer stays HIGH: the peer's level stands (it used to be overwritten here).
    expect(await effectiveRiskLevel(t.hub.db, customerId)).toEqual({
      level: 'HIGH',
      engine: 'LOW',
      peer: 'HIGH',
    });
    const raised = await t.hub.db.query<{ ttl: number; peer_id: string; reason: string }>(
      `SELECT extract(epoch FROM expires_at - raised_at)::int AS ttl, peer_id, reason FROM peer_risk_levels
       WHERE customer_id = $1 AND ended_at IS NULL ORDER BY id`,
      [customerId],
    );
    // Every peer signal so far is kept, each for the configured time (risk.peerRiskTtlSeconds): the
    // step-up's MEDIUM, HIGH, MEDIUM, and the MEDIUM this hub announced when its engine stepped up
    // the operation in the first test (the peer here is the hub itself, so it comes back).
    const reasons = (rows: Array<{ reason: string }>) => rows.map((r) => r.reason.split(':')[2]).sort();
    expect(raised.rows.every((r) => r.ttl === 3 * 24 * 3600 && r.peer_id === 'peer')).toBe(true);
    expect(reasons(raised.rows)).toEqual([
      'account-credential-change-required',
      'risk-level-change',
      'risk-level-change',
      'risk-level-change',
    ]);

    // Three days on, the peer's levels have expired: the engine's level is the customer's again,
    // and the sweeper records the expiry.
    await t.hub.db.query(
      `UPDATE peer_risk_levels SET raised_at = raised_at - interval '3 days', expires_at = expires_at - interval '3 days'
       WHERE customer_id = $1`,
      [customerId],
    );
    expect(await level()).toBe('LOW');
    await deleteExpiredRiskEvents(t.hub.db, t.hub.config.risk.retentionDays);
    const expired = await t.hub.db.query<{ data: { expired: unknown[] } }>(
      `SELECT data FROM audit_events WHERE customer_id = $1 AND type = 'risk.peer.expired'`,
      [customerId],
    );
    expect(expired.rows).toHaveLength(1);
    expect(expired.rows[0]!.data.expired.map((x) => (x as { level: string }).level).sort()).toEqual([
      'HIGH',
      'MEDIUM',
      'MEDIUM',
      'MEDIUM',
    ]);

    // A new MEDIUM from the peer stands until the customer re-proves their identity.
    expect(await push(EVENT.riskLevelChange, { current_level: 'MEDIUM', principal: 'USER' })).toBe(202);
    await waitFor('MEDIUM', async () => (await level()) === 'MEDIUM');
    expect(await audits('risk.peer.cleared')).toBe(0);
    // A proof begun now, after the peer's signal (docs/reproofing-settles.md).
    await clearAfterReproofing(t.hub.db, { customerId, began: new Date() });
    expect(await effectiveRiskLevel(t.hub.db, customerId)).toEqual({
      level: 'LOW',
      engine: 'LOW',
      peer: undefined,
    });
    const cleared = await t.hub.db.query<{ actor: string; data: unknown }>(
      `SELECT actor, data FROM audit_events WHERE customer_id = $1 AND type = 'risk.peer.cleared'`,
      [customerId],
    );
    expect(cleared.rows).toEqual([
      { actor: 'reproofing', data: { by: 'reproofing', cleared: [{ peer: 'peer', level: 'MEDIUM' }] } },
    ]);
    const ended = await t.hub.db.query<{ ended_by: string; n: number }>(
      'SELECT ended_by, count(*)::int AS n FROM peer_risk_levels WHERE customer_id = $1 GROUP BY ended_by ORDER BY ended_by',
      [customerId],
    );
    expect(ended.rows).toEqual([
      { ended_by: 'expired', n: 4 },
      { ended_by: 'reproofing', n: 1 },
    ]);
  });

  it('a takeover (account-disabled, hijacking) suspends sweeps and locks sign-in, known devices too, until re-proofing', async () => {
    // The customer signs in once: this browser becomes a known device.
    const device = createEmulator();
    const browser = createUserAgent({ fetch: t.fetch });
    const rp = await demoRp(t);
    const authorizationUrl = async () => (await startAuthorization(rp)).url;
    const ticket = await issueEnrollmentTicket(t.hub.authn, { customerId, issuedBy: 'operator:test' });
    const first = await completeLogin({
      fetch: t.fetch,
      authorizationUrl: await authorizationUrl(),
      device,
      userAgent: browser,
      enroll: { customerNumber: t.hub.demo!.customerNumber, ticket: ticket.ticket },
    });
    expect(first.searchParams.get('code')).toBeTruthy();

    // An active bank link of the customer, to a brokerage account of theirs.
    const account = await t.hub.db.query<{ id: string; institution_id: string }>(
      `SELECT id, institution_id FROM accounts WHERE customer_id = $1 AND kind = 'securities' ORDER BY id LIMIT 1`,
      [customerId],
    );
    const linkId = `link-${randomUUID()}`;
    await t.hub.db.query(
      `INSERT INTO bank_links (id, customer_id, account_id, brokerage_institution_id, bank_id, bank_name, holder_name,
         bank_subject, bank_strength, cap_amount, policy_version, decided_by)
       VALUES ($1, $2, $3, $4, 'demo-bank', 'Demo Bank', 'ヤマダ タロウ', 'bank-sub', 'phishing_resistant', 100000, 'test', '{}')`,
      [linkId, customerId, account.rows[0]!.id, account.rows[0]!.institution_id],
    );

    const sessions = async () =>
      (
        await t.hub.db.query<{ n: number }>(
          "SELECT count(*)::int AS n FROM oidc_payloads WHERE model = 'Session' AND payload ->> 'accountId' = $1",
          [customerId],
        )
      ).rows[0]!.n;
    expect(await sessions()).toBeGreaterThan(0);

    await takeSignalNotices(t.hub.db); // earlier tests' notices
    const jti = randomUUID();
    expect(await push(EVENT.accountDisabled, { reason: 'hijacking' }, { jti })).toBe(202);
    // revoke_sessions at once, in the receiving transaction.
    expect(await sessions()).toBe(0);
    await waitFor('the lock', async () => (await accountLock(t.hub.db, customerId)).reproofingRequired);
    await waitFor('the link suspended', async () => {
      const r = await t.hub.db.query<{ status: string; suspended_by: string }>(
        'SELECT status, suspended_by FROM bank_links WHERE id = $1',
        [linkId],
      );
      return r.rows[0]?.status === 'suspended' && r.rows[0].suspended_by === 'peer:peer';
    });
    expect(await audits('linking.link.suspended')).toBe(1);
    // notify: the notification worker's (it runs with SMTP configured); one round of it, here.
    expect(await takeSignalNotices(t.hub.db)).toBe(1);
    // The same SET again: 202 and no second lock, suspension or notice.
    expect(await push(EVENT.accountDisabled, { reason: 'hijacking' }, { jti })).toBe(202);
    await new Promise((r) => setTimeout(r, 300));
    expect(await pending()).toBe(0);
    expect(await audits('linking.link.suspended')).toBe(1);
    expect(await audits('ssf.set.duplicate')).toBe(2);
    const locks = await t.hub.db.query<{ n: number }>(
      "SELECT count(*)::int AS n FROM audit_events WHERE customer_id = $1 AND type = 'risk.account.locked' AND actor = 'peer:peer'",
      [customerId],
    );
    expect(locks.rows[0]!.n).toBe(1);
    expect(await takeSignalNotices(t.hub.db)).toBe(0);
    const actions = await t.hub.db.query<{ action: string }>(
      'SELECT action FROM ssf_action_outbox WHERE jti = $1 ORDER BY id',
      [jti],
    );
    expect(actions.rows.map((r) => r.action)).toEqual([
      'raise_risk',
      'require_reproofing',
      'suspend_sweeps',
      'notify',
    ]);

    // Even the known browser with the real passkey is refused.
    const refused = await completeLogin({
      fetch: t.fetch,
      authorizationUrl: await authorizationUrl(),
      device,
      userAgent: browser,
      signIn: 'required',
    }).then(
      () => 'signed in',
      (err: Error & { status?: number; body?: string }) => `${err.status} ${err.body}`,
    );
    expect(refused).toMatch(/^403 .*ERR_ACCOUNT_LOCKED/);
    expect(await audits('risk.account.locked.refused')).toBe(1);

    // Re-proofing lifts it (as the proofing routes do on a verified `unlock` flow).
    expect((await clearAfterReproofing(t.hub.db, { customerId, began: new Date() })).unlocked).toBe(true);
    const lock = await accountLock(t.hub.db, customerId);
    expect(lock).toEqual({ locked: false, lockedUntil: null, reproofingRequired: false });
    const again = await completeLogin({
      fetch: t.fetch,
      authorizationUrl: await authorizationUrl(),
      device,
      userAgent: browser,
      signIn: 'required',
    });
    expect(again.searchParams.get('code')).toBeTruthy();
  });
});

describe('waking the action consumers', () => {
  it('happens once the receiving transaction commits: the woken consumer sees the rows; a rollback wakes nobody', async () => {
    const ctx = t.hub.signals.context;
    const peer = ctx.peers.byId.get('peer')!;
    const set = (): VerifiedSet => ({
      jti: randomUUID(),
      iss: t.issuer,
      txn: randomUUID(),
      subId: PEER_SUBJECT as never,
      eventType: EVENT.riskLevelChange,
      event: { current_level: 'MEDIUM', principal: 'USER' },
      claims: {},
    });
    const rowsOf = async (jti: string) =>
      (
        await t.hub.db.query<{ n: number }>(
          'SELECT count(*)::int AS n FROM ssf_action_outbox WHERE jti = $1',
          [jti],
        )
      ).rows[0]!.n;
    // A consumer that looks at the outbox the moment it is woken (as the real ones do).
    let current = '';
    const seen: number[] = [];
    const stop = onActionsQueued(() => {
      const jti = current;
      void rowsOf(jti).then((n) => seen.push(n));
    });
    try {
      const committed = set();
      current = committed.jti;
      expect((await processSet(ctx, peer, committed, 'push')).actions).toEqual(['raise_risk']);
      await waitFor('the consumer to be woken', () => seen.length > 0);
      expect(seen).toEqual([1]);

      const rolledBack = set();
      current = rolledBack.jti;
      await expect(
        t.hub.db.transaction(async (tx) => {
          expect(await runActions(ctx, tx, peer, rolledBack, customerId)).toEqual(['raise_risk']);
          throw new Error('rolled back');
        }),
      ).rejects.toThrow('rolled back');
      await new Promise((r) => setTimeout(r, 100));
      expect(seen).toEqual([1]);
      expect(await rowsOf(rolledBack.jti)).toBe(0);
    } finally {
      stop();
    }
  });
});
