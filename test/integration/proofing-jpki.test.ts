/**
 * JPKI-style proofing and recovery after losing every passkey: the customer signs a hub challenge
 * with a certificate chaining to the configured trust anchor; then registers a new passkey, and
 * every lost passkey, session and token stops working. Misuse (replayed challenge, wrong signature,
 * untrusted or expired certificate, a certificate without signing usage, someone else's name) is
 * refused with a clear error and an audited proofing record. Revocation: the CAs' CRLs come from
 * files and from a loopback distribution point; a revoked card is refused, and a card whose CRL is
 * expired or not signed by its CA cannot be checked (fail closed, 503).
 */
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import * as client from 'openid-client';
import { Agent, fetch as undiciFetch } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { completeLogin } from '../../conformance/lib/login.ts';
import { createUserAgent, type UserAgent } from '../../conformance/lib/userAgent.ts';
import { issueEnrollmentTicket } from '../../src/authn/index.ts';
import { addEmailChannel } from '../../src/notify/index.ts';
import { firstLoginAfterRecovery, markLoginAfterRecovery } from '../../src/proofing/index.ts';
import { accountLock, riskEngineFor } from '../../src/risk/index.ts';
import { applyPeerRiskActions } from '../../src/risk/peerActions.ts';
import {
  type CrlServer,
  createTestCa,
  issueCertificate,
  issueCrl,
  KeyUsage,
  signWith,
  startCrlServer,
  type TestCert,
} from '../support/certificates.ts';
import { enrollDemoCustomer } from '../support/customer.ts';
import { startTestHub, type TestHub } from '../support/hub.ts';
import { createEmulator, type PasskeyEmulator } from '../support/passkeyEmulator.ts';
import { demoRp, redeem, startAuthorization } from '../support/rp.ts';

let t: TestHub;
let root: TestCert;
let intermediate: TestCert;
let card: TestCert;
/** A second signing CA whose cards name a CRL distribution point on `crls` (not in the CRL files). */
let dpCa: TestCert;
let crls: CrlServer;
let customerId: string;
let customerNumber: string;
/** The basic four facts of the demo customer's card: 昭和 (era 3) 1980-04-01. */
const TARO = {
  name: '山田　太郎',
  birthDate: '319800401',
  gender: '1',
  address: '東京都千代田区千代田１－１',
};
const CARD_SUBJECT = 'CN=20261126101500123456789A, L=千代田区, L=東京都, C=JP';

beforeAll(async () => {
  root = await createTestCa('CN=Test JPKI Root, O=Test J-LIS, C=JP');
  intermediate = await issueCertificate(root, {
    subject: 'CN=Test JPKI Signing CA, O=Test J-LIS, C=JP',
    ca: true,
  });
  // As J-LIS issues them: the CN is an identifier, name and birth date are in subjectAltName.
  // Full-width space between family and given name, as on a card; registered as '山田 太郎', 1980-04-01.
  card = await issueCertificate(intermediate, {
    subject: CARD_SUBJECT,
    rsa: true,
    keyUsage: KeyUsage.digitalSignature | KeyUsage.nonRepudiation,
    jpki: TARO,
  });
  crls = await startCrlServer();
  dpCa = await issueCertificate(root, { subject: 'CN=Test JPKI Signing CA 2, O=Test J-LIS, C=JP', ca: true });
  const anchors = path.join(process.env.TMPDIR ?? '/tmp', `kkh-jpki-${process.pid}-${Date.now()}.pem`);
  writeFileSync(anchors, root.certPem);
  // Current CRLs of both CAs, revoking nothing (revocation itself: proofing-jpki-revocation.test.ts).
  const crlFiles = [root, intermediate].map((ca, i) => {
    const file = `${anchors}.${i}.crl`;
    return { file, ca };
  });
  for (const { file, ca } of crlFiles) writeFileSync(file, await issueCrl(ca));
  t = await startTestHub({
    // No consumers of peers' actions in the background: a test runs them when it means to.
    signals: { enabled: false },
    proofing: {
      jpki: {
        trustAnchorsFile: anchors,
        revocation: { crlFiles: crlFiles.map((c) => c.file), fetchTimeoutMs: 1000 },
      },
    },
  });
  customerId = t.hub.demo!.customerId;
  customerNumber = t.hub.demo!.customerNumber;
  await addEmailChannel(t.hub.db, t.hub.authn.kek!, {
    customerId,
    address: 'taro@example.jp',
    actor: 'operator:test',
  });
});
const agents: Agent[] = [];
afterAll(async () => {
  for (const a of agents) await a.close();
  await t?.close();
  await crls?.close();
});

/** A browser on another loopback address: another network source for the throttle. */
function browserFrom(address: string): UserAgent {
  const dispatcher = new Agent({ localAddress: address, connect: { ca: t.caPem } });
  agents.push(dispatcher);
  return createUserAgent({
    fetch: ((url: string | URL, init?: RequestInit) =>
      undiciFetch(url, { ...(init as object), dispatcher })) as never,
  });
}

/** A peer's action as the receiver leaves it, received `at` (SQL); no consumer runs in this hub. */
const peerAction = (action: string, jti: string, at: string) =>
  t.hub.db.query(
    `INSERT INTO ssf_action_outbox (action, customer_id, peer_id, jti, event_type, created_at)
     VALUES ($1, $2, 'peer-p', $3, 'https://schemas.openid.net/secevent/risc/event-type/account-disabled', ${at})`,
    [action, customerId, jti],
  );
/** The outbox rows whose jti starts with `prefix`: processed, and by what. */
const peerActions = async (prefix: string) =>
  (
    await t.hub.db.query<{ jti: string; processed: boolean; by: string | null }>(
      `SELECT jti, processed_at IS NOT NULL AS processed, detail ->> 'supersededBy' AS by FROM ssf_action_outbox
       WHERE jti LIKE $1 ORDER BY id`,
      [`${prefix}%`],
    )
  ).rows;

/** A fresh browser at the login page of a new authorization: its interaction uid. */
async function openInteraction(ua: UserAgent): Promise<string> {
  const { response } = await ua.follow((await startAuthorization(await demoRp(t))).url);
  return response.url.pathname.split('/').pop()!;
}

async function challenge(ua: UserAgent, uid: string, purpose = 'recovery') {
  const res = await ua.postJson(`${t.issuer}/interaction/${uid}/proofing/jpki/challenge`, {
    customerNumber,
    purpose,
  });
  expect(res.status).toBe(200);
  return res.json<{ flowId: string; challenge: string }>();
}

async function verify(
  ua: UserAgent,
  uid: string,
  flow: { flowId: string; challenge: string },
  holder: TestCert = card,
  o: { data?: Buffer; chain?: TestCert[] } = {},
) {
  const res = await ua.postJson(`${t.issuer}/interaction/${uid}/proofing/jpki/verify`, {
    flowId: flow.flowId,
    certificate: holder.certPem,
    chain: (o.chain ?? [intermediate]).map((c) => c.certPem),
    signature: signWith(holder, o.data ?? Buffer.from(flow.challenge, 'base64url')).toString('base64url'),
  });
  return { status: res.status, body: res.json<Record<string, unknown>>() };
}

/**
 * A JPKI proofing flow for `purpose` with a peer's `action` received a minute before it began
 * (`<prefix>-before`) and a suspend_sweeps received while it ran, before the card's answer
 * (`<prefix>-during`): the proof says nothing about the latter.
 */
async function proofAmidPeerActions(purpose: string, prefix: string, action: string) {
  await peerAction(action, `${prefix}-before`, "now() - interval '1 minute'");
  const ua = createUserAgent({ fetch: t.fetch });
  const uid = await openInteraction(ua);
  const flow = await challenge(ua, uid, purpose);
  await peerAction('suspend_sweeps', `${prefix}-during`, 'now()');
  return { ua, uid, flow, proved: await verify(ua, uid, flow) };
}

async function lastRecord() {
  const res = await t.hub.db.query<{
    method: string;
    purpose: string;
    result: string;
    reason: string | null;
    evidence: object;
  }>(
    'SELECT method, purpose, result, reason, evidence FROM proofing_records ORDER BY created_at DESC, id LIMIT 1',
  );
  return res.rows[0]!;
}

async function tokensFor(device: PasskeyEmulator) {
  const rp = await demoRp(t);
  const auth = await startAuthorization(rp, 'openid accounts offline_access');
  const callback = await completeLogin({ fetch: t.fetch, authorizationUrl: auth.url, device });
  return {
    rp,
    tokens: await redeem(rp, auth, callback),
  };
}

describe('JPKI-style proofing', () => {
  it('refuses a signature over other data, a replayed challenge, and foreign or unfit certificates', async () => {
    // Refusals count against the source like failed sign-ins: a few per source here.
    const ua = browserFrom('127.0.0.2');
    const uid = await openInteraction(ua);

    const c1 = await challenge(ua, uid);
    expect(await verify(ua, uid, c1, card, { data: Buffer.from('something else') })).toMatchObject({
      status: 403,
      body: { error: 'access_denied', error_code: 'ERR_PROOFING_SIGNATURE' },
    });
    // The challenge was spent by the failed answer: the right signature now comes too late.
    expect(await verify(ua, uid, c1)).toMatchObject({
      status: 400,
      body: { error_code: 'ERR_PROOFING_FLOW' },
    });

    const stranger = await issueCertificate(await createTestCa('CN=Other CA, C=JP'), {
      subject: CARD_SUBJECT,
      jpki: TARO,
    });
    expect(await verify(ua, uid, await challenge(ua, uid), stranger, { chain: [] })).toMatchObject({
      status: 403,
      body: { error_code: 'ERR_PROOFING_CERTIFICATE' },
    });
    expect((await lastRecord()).reason).toBe('ERR_CERT_UNTRUSTED');

    const other = browserFrom('127.0.0.3');
    const uid2 = await openInteraction(other);
    const someoneElse = await issueCertificate(intermediate, {
      subject: CARD_SUBJECT,
      jpki: { ...TARO, name: '佐藤 花子', birthDate: '419900102' },
    });
    expect(await verify(other, uid2, await challenge(other, uid2), someoneElse)).toMatchObject({
      status: 403,
      body: { error_code: 'ERR_PROOFING_MISMATCH' },
    });
    const mismatch = await lastRecord();
    expect(mismatch).toMatchObject({
      method: 'jpki',
      purpose: 'recovery',
      result: 'refused',
      reason: 'mismatch:name,birthdate',
    });
    // The record says what was checked, never the names themselves.
    expect(JSON.stringify(mismatch.evidence)).not.toMatch(/山田|佐藤|花子|太郎/);

    const expired = await issueCertificate(intermediate, {
      subject: CARD_SUBJECT,
      jpki: TARO,
      notBefore: new Date(Date.now() - 10 * 86_400_000),
      notAfter: new Date(Date.now() - 86_400_000),
    });
    expect(await verify(other, uid2, await challenge(other, uid2), expired)).toMatchObject({
      body: { error_code: 'ERR_PROOFING_CERTIFICATE' },
    });
    expect((await lastRecord()).reason).toBe('ERR_CERT_EXPIRED');

    const third = browserFrom('127.0.0.4');
    const uid3 = await openInteraction(third);
    const encipherOnly = await issueCertificate(intermediate, {
      subject: CARD_SUBJECT,
      jpki: TARO,
      keyUsage: KeyUsage.keyEncipherment,
    });
    expect(await verify(third, uid3, await challenge(third, uid3), encipherOnly)).toMatchObject({
      body: { error_code: 'ERR_PROOFING_CERTIFICATE' },
    });
    expect((await lastRecord()).reason).toBe('key_usage');

    // A flow belongs to the interaction (browser) that started it.
    const c4 = await challenge(third, uid3);
    expect(await verify(other, uid2, c4)).toMatchObject({
      status: 400,
      body: { error_code: 'ERR_PROOFING_FLOW' },
    });
  });

  it('checks the birth date the card states: a namesake born on another day and a card stating none are refused', async () => {
    const ua = browserFrom('127.0.0.7');
    const uid = await openInteraction(ua);
    // A genuine card of another 山田 太郎, born 1981-04-01 (the name in the CN as well): the name
    // alone must not prove the customer.
    const namesake = await issueCertificate(intermediate, {
      subject: 'CN=山田　太郎, C=JP',
      rsa: true,
      keyUsage: KeyUsage.digitalSignature | KeyUsage.nonRepudiation,
      jpki: { ...TARO, birthDate: '319810401' },
    });
    expect(await verify(ua, uid, await challenge(ua, uid), namesake)).toMatchObject({
      status: 403,
      body: { error: 'access_denied', error_code: 'ERR_PROOFING_MISMATCH' },
    });
    const mismatch = await lastRecord();
    expect(mismatch).toMatchObject({
      result: 'refused',
      reason: 'mismatch:birthdate',
      evidence: { checks: { name: true, birthdate: false } },
    });
    expect(JSON.stringify(mismatch.evidence)).not.toMatch(/1980|1981|山田/);

    // A certificate naming the customer without a birth date (or with an incomplete one), or with
    // the name only in the CN, proves nobody.
    for (const [jpki, reason] of [
      [{ name: TARO.name, address: TARO.address }, 'no_birthdate'],
      [{ ...TARO, birthDate: '319800400' }, 'no_birthdate'],
      [{ birthDate: TARO.birthDate }, 'no_name'],
    ] as const) {
      const holder = await issueCertificate(intermediate, {
        subject: 'CN=山田 太郎, C=JP',
        keyUsage: KeyUsage.digitalSignature | KeyUsage.nonRepudiation,
        jpki,
      });
      const other = browserFrom('127.0.0.8');
      const uid2 = await openInteraction(other);
      expect(await verify(other, uid2, await challenge(other, uid2), holder), reason).toMatchObject({
        status: 403,
        body: {
          error_code: 'ERR_PROOFING_CERTIFICATE_NO_IDENTITY',
          error_description: expect.stringContaining('does not state a name and date of birth'),
        },
      });
      expect(await lastRecord()).toMatchObject({ method: 'jpki', result: 'refused', reason });
    }
    const audited = await t.hub.db.query<{ data: { reason: string } }>(
      "SELECT data FROM audit_events WHERE type = 'proofing.refused' ORDER BY id DESC LIMIT 1",
    );
    expect(audited.rows[0]!.data.reason).toBe('ERR_PROOFING_CERTIFICATE_NO_IDENTITY');
  });

  it('recovers an account after every passkey is lost: old passkeys, sessions and tokens stop working', async () => {
    const lost = await enrollDemoCustomer(t);
    const before = await tokensFor(lost);
    expect(before.tokens.refresh_token).toBeTruthy();

    const ua = createUserAgent({ fetch: t.fetch });
    const uid = await openInteraction(ua);
    const proved = await verify(ua, uid, await challenge(ua, uid));
    expect(proved.status).toBe(200);
    expect(proved.body).toMatchObject({ verified: true, purpose: 'recovery' });
    expect(await lastRecord()).toMatchObject({ method: 'jpki', purpose: 'recovery', result: 'verified' });

    // The enrollment page then asks for no code, and the passkey registration spends the proof.
    const page = await ua.follow(new URL(String(proved.body.redirectTo), t.issuer));
    expect(page.response.text).toContain(`name="proofing" value="${proved.body.flowId}"`);
    expect(page.response.text).not.toContain('name="ticket"');
    const options = await ua.postJson(`${t.issuer}/interaction/${uid}/enroll/options`, {
      proofing: proved.body.flowId,
    });
    expect(options.status).toBe(200);
    const replacement = createEmulator();
    const registered = await ua.postJson(`${t.issuer}/interaction/${uid}/enroll/verify`, {
      response: replacement.register(options.json(), t.issuer),
      passkeyName: 'new phone',
    });
    expect(registered.json()).toMatchObject({ registered: true, recovered: true });
    // One passkey per proof.
    const again = await ua.postJson(`${t.issuer}/interaction/${uid}/enroll/options`, {
      proofing: proved.body.flowId,
    });
    expect(again.json()).toMatchObject({ error_code: 'ERR_PROOFING_FLOW' });

    // The lost passkey is disabled, the old grant's refresh token is gone.
    const lostLogin = await completeLogin({
      fetch: t.fetch,
      authorizationUrl: (await startAuthorization(await demoRp(t))).url,
      device: lost,
    }).then(
      () => 'signed in',
      (err: Error & { body?: string }) => err.body ?? '',
    );
    expect(lostLogin).toContain('ERR_PASSKEY_DISABLED');
    await expect(
      client.refreshTokenGrant(before.rp.config, before.tokens.refresh_token!, undefined, {
        DPoP: before.rp.dpop,
      }),
    ).rejects.toMatchObject({ error: 'invalid_grant' });

    // Told on every channel (critical kind), to peers (RISC), and a marker for the risk engine.
    const mail = await t.hub.db.query<{ data: { method: string } }>(
      "SELECT data FROM notify_outbox WHERE customer_id = $1 AND kind = 'recovery'",
      [customerId],
    );
    expect(mail.rows.map((r) => r.data)).toEqual([{ method: 'jpki' }]);
    const risc = await t.hub.db.query(
      "SELECT 1 FROM ssf_events WHERE customer_id = $1 AND event_type LIKE '%/risc/event-type/recovery-activated'",
      [customerId],
    );
    expect(risc.rowCount).toBe(1);
    const marker = await firstLoginAfterRecovery(t.hub.db, customerId);
    expect(marker).toMatchObject({ method: 'jpki', credentialId: replacement.credentialIds[0] });
    const audit = await t.hub.db.query<{ data: { revokedPasskeys: number; revokedGrants: number } }>(
      "SELECT data FROM audit_events WHERE type = 'proofing.recovery.completed' AND customer_id = $1",
      [customerId],
    );
    expect(audit.rows[0]!.data.revokedPasskeys).toBeGreaterThanOrEqual(1);
    expect(audit.rows[0]!.data.revokedGrants).toBeGreaterThanOrEqual(1);

    // The new passkey works; the risk engine marks the first login after recovery as seen.
    const after = await tokensFor(replacement);
    expect(after.tokens.claims()).toMatchObject({ acr: 'phr' });
    expect(await markLoginAfterRecovery(t.hub.db, customerId)).toBe(1);
    expect(await firstLoginAfterRecovery(t.hub.db, customerId)).toBeUndefined();

    // The security page shows the recovery in the history.
    const account = createUserAgent({ fetch: t.fetch });
    await account.get(`${t.issuer}/account`);
    const options2 = await account.postJson(`${t.issuer}/account/login/options`, {});
    const signedIn = await account.postJson(
      `${t.issuer}/account/login/verify`,
      replacement.authenticate(options2.json(), t.issuer),
    );
    expect(signedIn.status).toBe(200);
    const securityPage = await account.get(`${t.issuer}/account`);
    expect(securityPage.text).toContain('Account recovered after identity confirmation');
  });

  it('unlocks a locked account by proofing (purpose unlock) without a new passkey', async () => {
    await t.hub.db.query(
      `INSERT INTO account_lockouts (customer_id, consecutive_failures, locked_at, locked_until)
       VALUES ($1, 10, now(), now() + interval '1 day')
       ON CONFLICT (customer_id) DO UPDATE SET locked_until = EXCLUDED.locked_until, consecutive_failures = 10`,
      [customerId],
    );
    expect((await accountLock(t.hub.db, customerId)).locked).toBe(true);
    const ua = createUserAgent({ fetch: t.fetch });
    const uid = await openInteraction(ua);
    const proved = await verify(ua, uid, await challenge(ua, uid, 'unlock'));
    expect(proved.body).toMatchObject({ verified: true, purpose: 'unlock', unlocked: true });
    expect((await accountLock(t.hub.db, customerId)).locked).toBe(false);
    expect(await lastRecord()).toMatchObject({ method: 'jpki', purpose: 'unlock', result: 'verified' });
  });

  it('tells the customer "unlocked" only when a lock was in force: not for counted failures nor a lock that ran out', async () => {
    /** The "account unlocked" notices queued and unlock audits so far. */
    const told = async () =>
      (
        await t.hub.db.query<{ notices: number; audits: number }>(
          `SELECT (SELECT count(*)::int FROM notify_outbox WHERE customer_id = $1 AND kind = 'account_unlocked') AS notices,
                  (SELECT count(*)::int FROM audit_events WHERE customer_id = $1 AND type = 'risk.account.unlocked') AS audits`,
          [customerId],
        )
      ).rows[0]!;
    const failures = async () =>
      (
        await t.hub.db.query<{ n: number }>(
          'SELECT consecutive_failures AS n FROM account_lockouts WHERE customer_id = $1',
          [customerId],
        )
      ).rows[0]?.n;
    const unlockProof = async () => {
      const ua = createUserAgent({ fetch: t.fetch });
      const uid = await openInteraction(ua);
      return { uid, proved: await verify(ua, uid, await challenge(ua, uid, 'unlock')) };
    };
    const before = await told();
    const states = [
      // Failures counted, never locked.
      'consecutive_failures = 4, locked_at = NULL, locked_until = NULL',
      // A lock whose time had run out before the proof.
      "consecutive_failures = 10, locked_at = now() - interval '2 days', locked_until = now() - interval '1 day'",
    ];
    for (const state of states) {
      await t.hub.db.query(
        `INSERT INTO account_lockouts (customer_id) VALUES ($1) ON CONFLICT (customer_id) DO NOTHING`,
        [customerId],
      );
      await t.hub.db.query(
        `UPDATE account_lockouts SET ${state}, reproofing_required = false WHERE customer_id = $1`,
        [customerId],
      );
      const { uid, proved } = await unlockProof();
      expect(proved.body).toEqual({
        verified: true,
        purpose: 'unlock',
        unlocked: false,
        redirectTo: `/interaction/${uid}`,
      });
      expect(await told()).toEqual(before);
      // The count is still reset.
      expect(await failures()).toBe(0);
    }
    // A lock in force: told once (notice and audit).
    await t.hub.db.query(
      `UPDATE account_lockouts SET consecutive_failures = 10, locked_at = now(), locked_until = now() + interval '1 day'
       WHERE customer_id = $1`,
      [customerId],
    );
    const { uid, proved } = await unlockProof();
    expect(proved.body).toMatchObject({ unlocked: true, redirectTo: `/interaction/${uid}?unlocked=1` });
    const after = await told();
    expect(after.audits).toBe(before.audits + 1);
    expect(after.notices).toBeGreaterThan(before.notices);
  });

  it('lifts the lock a peer’s takeover signal set (re-proofing required, no end, known devices refused too)', async () => {
    // As src/risk/peerActions.ts leaves it for a received require_reproofing action.
    await t.hub.db.query(
      `INSERT INTO account_lockouts (customer_id, locked_at, locked_until, reproofing_required)
       VALUES ($1, now(), 'infinity', true)
       ON CONFLICT (customer_id) DO UPDATE SET locked_until = 'infinity', reproofing_required = true`,
      [customerId],
    );
    expect(await accountLock(t.hub.db, customerId)).toEqual({
      locked: true,
      lockedUntil: null,
      reproofingRequired: true,
    });
    const ua = createUserAgent({ fetch: t.fetch });
    const uid = await openInteraction(ua);
    const proved = await verify(ua, uid, await challenge(ua, uid, 'unlock'));
    expect(proved.body).toMatchObject({ verified: true, purpose: 'unlock', unlocked: true });
    expect(await accountLock(t.hub.db, customerId)).toEqual({
      locked: false,
      lockedUntil: null,
      reproofingRequired: false,
    });
  });

  it('settles the peer actions received before the flow began, not those received while it ran', async () => {
    const { flow, proved } = await proofAmidPeerActions('unlock', 'flow', 'require_reproofing');
    expect(proved.body).toMatchObject({ verified: true, purpose: 'unlock' });
    expect(await peerActions('flow-')).toEqual([
      { jti: 'flow-before', processed: true, by: 'reproofing' },
      { jti: 'flow-during', processed: false, by: null },
    ]);
    // The proof began when the flow did (not when the card signed, nor when the answer was checked).
    const began = await t.hub.db.query<{ created_at: Date }>(
      'SELECT created_at FROM proofing_flows WHERE id = $1',
      [flow.flowId],
    );
    const audit = await t.hub.db.query<{ data: Record<string, string> }>(
      "SELECT data FROM audit_events WHERE customer_id = $1 AND type = 'signals.actions.superseded'",
      [customerId],
    );
    expect(audit.rows.map((r) => [r.data.jti, r.data.action, r.data.proofBegan])).toEqual([
      ['flow-before', 'require_reproofing', new Date(began.rows[0]!.created_at).toISOString()],
    ]);
    expect(await applyPeerRiskActions(riskEngineFor(t.hub.config), t.hub.db)).toBe(0);
    expect((await accountLock(t.hub.db, customerId)).locked).toBe(false);
    await t.hub.db.query("UPDATE ssf_action_outbox SET processed_at = now() WHERE jti = 'flow-during'");
  });

  it('enrolment after a proofing flow: the proof began with the flow, not when its ticket was minted', async () => {
    // The 'during' one is received before the verified flow mints its internal ticket.
    const { ua, uid, flow, proved } = await proofAmidPeerActions('enrollment', 'minted', 'suspend_sweeps');
    expect(proved.body).toMatchObject({ verified: true, purpose: 'enrollment' });
    const options = await ua.postJson(`${t.issuer}/interaction/${uid}/enroll/options`, {
      proofing: flow.flowId,
    });
    expect(options.status).toBe(200);
    const registered = await ua.postJson(`${t.issuer}/interaction/${uid}/enroll/verify`, {
      response: createEmulator().register(options.json(), t.issuer),
    });
    expect(registered.json()).toMatchObject({ registered: true });
    expect(await peerActions('minted-')).toEqual([
      { jti: 'minted-before', processed: true, by: 'reproofing' },
      { jti: 'minted-during', processed: false, by: null },
    ]);
    await t.hub.db.query("UPDATE ssf_action_outbox SET processed_at = now() WHERE jti = 'minted-during'");
  });

  it('recovers with a fresh ticket from the operator when the customer ticks recovery', async () => {
    const before = await t.hub.db.query<{ credential_id: string }>(
      'SELECT credential_id FROM passkeys WHERE customer_id = $1 AND disabled_at IS NULL',
      [customerId],
    );
    expect(before.rowCount).toBeGreaterThan(0);
    const { ticket } = await issueEnrollmentTicket(t.hub.authn, { customerId, issuedBy: 'operator:test' });
    const ua = createUserAgent({ fetch: t.fetch });
    const uid = await openInteraction(ua);
    expect((await ua.get(`${t.issuer}/interaction/${uid}/enroll`)).text).toContain(
      'name="purpose" value="recovery"',
    );
    const options = await ua.postJson(`${t.issuer}/interaction/${uid}/enroll/options`, {
      customerNumber,
      ticket,
      purpose: 'recovery',
    });
    expect(options.status).toBe(200);
    const device = createEmulator();
    const done = await ua.postJson(`${t.issuer}/interaction/${uid}/enroll/verify`, {
      response: device.register(options.json(), t.issuer),
    });
    expect(done.json()).toMatchObject({ registered: true, recovered: true });
    const disabled = await t.hub.db.query<{ credential_id: string; disabled_reason: string }>(
      'SELECT credential_id, disabled_reason FROM passkeys WHERE customer_id = $1 AND credential_id = ANY($2::text[])',
      [customerId, before.rows.map((r) => r.credential_id)],
    );
    expect(disabled.rows.map((r) => r.disabled_reason)).toEqual(before.rows.map(() => 'recovery'));
    expect(await lastRecord()).toMatchObject({ method: 'ticket', purpose: 'recovery', result: 'verified' });
    expect(await firstLoginAfterRecovery(t.hub.db, customerId)).toMatchObject({ method: 'ticket' });
  });

  it('records enrollment with a ticket as a ticket proofing record', async () => {
    const records = await t.hub.db.query<{ n: number }>(
      "SELECT count(*)::int AS n FROM proofing_records WHERE method = 'ticket' AND result = 'verified' AND customer_id = $1",
      [customerId],
    );
    expect(records.rows[0]!.n).toBeGreaterThanOrEqual(1);
  });
});

describe('JPKI certificate revocation (CRL)', () => {
  /** A card of the second CA naming `name` on the loopback distribution point as its CRL. */
  const dpCard = (name: string) =>
    issueCertificate(dpCa, {
      subject: CARD_SUBJECT,
      rsa: true,
      keyUsage: KeyUsage.digitalSignature | KeyUsage.nonRepudiation,
      crlUrls: [crls.url(name)],
      jpki: TARO,
    });

  it('accepts a card its CA has not revoked, refuses one it has, with a clear message', async () => {
    const good = await dpCard('ca2.crl');
    const revoked = await dpCard('ca2.crl');
    crls.set('ca2.crl', await issueCrl(dpCa, { revoked: [revoked] }));
    const ua = browserFrom('127.0.0.5');
    const uid = await openInteraction(ua);

    const refused = await verify(ua, uid, await challenge(ua, uid), revoked, { chain: [dpCa] });
    expect(refused.status).toBe(403);
    expect(refused.body).toMatchObject({
      error: 'access_denied',
      error_code: 'ERR_PROOFING_CERTIFICATE_REVOKED',
      error_description: expect.stringContaining('This certificate has been revoked'),
    });
    const record = await lastRecord();
    expect(record).toMatchObject({
      method: 'jpki',
      result: 'refused',
      reason: 'ERR_CERT_REVOKED',
      evidence: {
        revocation: { serialNumber: revoked.cert.serialNumber.toUpperCase(), source: crls.url('ca2.crl') },
      },
    });

    const accepted = await verify(ua, uid, await challenge(ua, uid), good, { chain: [dpCa] });
    expect(accepted).toMatchObject({ status: 200, body: { verified: true } });
    expect(await lastRecord()).toMatchObject({
      result: 'verified',
      evidence: {
        revocation: [
          { serialNumber: good.cert.serialNumber.toUpperCase(), source: crls.url('ca2.crl') },
          { serialNumber: dpCa.cert.serialNumber.toUpperCase(), source: 'file' },
        ],
      },
    });
    // Both answers used the one CRL download (cached until its nextUpdate).
    expect(crls.hits.get('ca2.crl')).toBe(1);
  });

  it('fails closed (503) when the CRL is expired or not signed by the CA, without slowing the customer down', async () => {
    crls.set(
      'expired.crl',
      await issueCrl(dpCa, {
        thisUpdate: new Date(Date.now() - 3 * 86_400_000),
        nextUpdate: new Date(Date.now() - 86_400_000),
      }),
    );
    crls.set(
      'unsigned.crl',
      await issueCrl(dpCa, { signedBy: await createTestCa('CN=Test JPKI Signing CA 2, O=Test J-LIS, C=JP') }),
    );
    const ua = browserFrom('127.0.0.6');
    const uid = await openInteraction(ua);
    for (const [name, problem] of [
      ['expired.crl', 'url:expired'],
      ['unsigned.crl', 'url:signature_invalid'],
      ['expired.crl', 'url:expired'],
      ['unsigned.crl', 'url:signature_invalid'],
    ] as const) {
      const res = await verify(ua, uid, await challenge(ua, uid), await dpCard(name), { chain: [dpCa] });
      expect(res, name).toMatchObject({
        status: 503,
        body: {
          error: 'temporarily_unavailable',
          error_code: 'ERR_PROOFING_REVOCATION_UNAVAILABLE',
          error_description: expect.stringContaining('cannot be checked right now'),
        },
      });
      expect(await lastRecord()).toMatchObject({
        result: 'refused',
        reason: 'ERR_CRL_UNAVAILABLE',
        evidence: { revocation: { problems: [problem] } },
      });
    }
    // Not the customer's doing: none of it counts against their network in the sign-in throttle.
    const counted = await t.hub.db.query("SELECT 1 FROM auth_source_failures WHERE source = '127.0.0.6'");
    expect(counted.rowCount).toBe(0);
  });
});
