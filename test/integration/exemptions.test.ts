/**
 * Exemptions from phishing-resistant MFA: granted with a reason, an authenticator app set up with a
 * one-time ticket, sign-in with customer number + TOTP marked acr/amr `otp`, and the 解除率 report.
 */
import * as client from 'openid-client';
import * as OTPAuth from 'otpauth';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { completeLogin } from '../../conformance/lib/login.ts';
import { createUserAgent } from '../../conformance/lib/userAgent.ts';
import {
  activeExemption,
  endExemption,
  exemptionReport,
  grantExemption,
  issueEnrollmentTicket,
} from '../../src/authn/index.ts';
import { startTestHub, type TestHub } from '../support/hub.ts';
import { createEmulator } from '../support/passkeyEmulator.ts';
import { demoRp, redeem, startAuthorization } from '../support/rp.ts';

let t: TestHub;
beforeAll(async () => {
  // No consumers of peers' actions in the background: a pending one stays until a test says.
  t = await startTestHub({ signals: { enabled: false } });
});
afterAll(() => t?.close());

const codeAt = (secret: string, offsetSeconds: number) =>
  new OTPAuth.TOTP({ secret: OTPAuth.Secret.fromBase32(secret), digits: 6, period: 30 }).generate({
    timestamp: Date.now() + offsetSeconds * 1000,
  });

describe('exemptions', () => {
  it('need a reason, stay one per customer, and count in the exemption rate', async () => {
    const customerId = t.hub.demo!.customerId;
    await expect(
      grantExemption(t.hub.db, { customerId, reason: ' ', grantedBy: 'operator:a' }),
    ).rejects.toThrow(/reason/);
    expect(await exemptionReport(t.hub.db)).toEqual({ customers: 1, exempted: 0, rate: 0 });
    const first = await grantExemption(t.hub.db, {
      customerId,
      reason: '視覚障害のため端末操作が困難',
      grantedBy: 'operator:a',
    });
    const again = await grantExemption(t.hub.db, {
      customerId,
      reason: 'second request',
      grantedBy: 'operator:b',
    });
    expect(again.id).toBe(first.id);
    expect(await exemptionReport(t.hub.db)).toEqual({ customers: 1, exempted: 1, rate: 1 });
    expect(await endExemption(t.hub.db, customerId, 'operator:a')).toBe(true);
    expect(await activeExemption(t.hub.db, customerId)).toBeUndefined();
    expect((await exemptionReport(t.hub.db)).exempted).toBe(0);
    const audit = await t.hub.db.query<{ type: string }>(
      "SELECT type FROM audit_events WHERE customer_id = $1 AND type LIKE 'authn.exemption.%' ORDER BY id",
      [customerId],
    );
    expect(audit.rows.map((r) => r.type)).toEqual(['authn.exemption.granted', 'authn.exemption.ended']);
  });

  it('lets an exempted customer set up an authenticator app and sign in with it, marked acr/amr otp', async () => {
    const customerId = t.hub.demo!.customerId;
    const customerNumber = t.hub.demo!.customerNumber;
    const ua = createUserAgent({ fetch: t.fetch });
    const rp = await demoRp(t);
    const setupAuth = await startAuthorization(rp);
    const start = await ua.follow(setupAuth.url);
    const uid = start.response.url.pathname.split('/').pop()!;
    const ticket = await issueEnrollmentTicket(t.hub.authn, { customerId, issuedBy: 'operator:a' });

    // Without an exemption there is no authenticator-app set-up.
    const refused = await ua.postJson(`${t.issuer}/interaction/${uid}/enroll/totp`, {
      customerNumber,
      ticket: ticket.ticket,
    });
    expect(refused.status).toBe(400);
    expect(refused.json<{ error_code: string }>().error_code).toBe('ERR_NOT_EXEMPT');

    await grantExemption(t.hub.db, {
      customerId,
      reason: 'スマートフォンを持っていない',
      grantedBy: 'operator:a',
    });
    const setup = await ua.postJson(`${t.issuer}/interaction/${uid}/enroll/totp`, {
      customerNumber,
      ticket: ticket.ticket,
    });
    expect(setup.status).toBe(200);
    const { secret, uri } = setup.json<{ secret: string; uri: string }>();
    expect(uri).toMatch(/^otpauth:\/\/totp\//);
    // The secret is stored encrypted, never in the clear.
    const stored = await t.hub.db.query<{ secret_enc: string }>(
      'SELECT secret_enc FROM totp_credentials WHERE customer_id = $1',
      [customerId],
    );
    expect(stored.rows[0]!.secret_enc).not.toContain(secret);
    // A peer's stop received before the ticket was issued, and one after: setting up the app with the
    // ticket is a re-proofing, which settles the first only (docs/reproofing-settles.md).
    for (const [jti, at] of [
      ['totp-before', "now() - interval '1 minute'"],
      ['totp-after', 'now()'],
    ])
      await t.hub.db.query(
        `INSERT INTO ssf_action_outbox (action, customer_id, peer_id, jti, event_type, created_at)
         VALUES ('suspend_sweeps', $1, 'peer', $2, 'https://schemas.openid.net/secevent/risc/event-type/account-disabled', ${at})`,
        [customerId, jti],
      );
    const wrong = await ua.postJson(`${t.issuer}/interaction/${uid}/enroll/totp/confirm`, { code: '000000' });
    expect(wrong.status).toBe(400);
    const ok = await ua.postJson(`${t.issuer}/interaction/${uid}/enroll/totp/confirm`, {
      code: codeAt(secret, 0),
    });
    expect(ok.status).toBe(200);
    const ticketRow = await t.hub.db.query(
      'SELECT 1 FROM enrollment_tickets WHERE id = $1 AND used_at IS NOT NULL',
      [ticket.ticketId],
    );
    expect(ticketRow.rowCount).toBe(1);
    const settled = await t.hub.db.query<{ jti: string; by: string | null }>(
      "SELECT jti, detail ->> 'supersededBy' AS by FROM ssf_action_outbox WHERE jti LIKE 'totp-%' ORDER BY id",
    );
    expect(settled.rows).toEqual([
      { jti: 'totp-before', by: 'reproofing' },
      { jti: 'totp-after', by: null },
    ]);
    await t.hub.db.query("UPDATE ssf_action_outbox SET processed_at = now() WHERE jti = 'totp-after'");

    // Sign in with customer number + the next code, consent, redeem: acr and amr say `otp`.
    const auth = await startAuthorization(rp, 'openid accounts');
    const browser = createUserAgent({ fetch: t.fetch });
    const login = await browser.follow(auth.url);
    const loginUid = login.response.url.pathname.split('/').pop()!;
    const page = await browser.get(`${t.issuer}/interaction/${loginUid}/alternative`);
    expect(page.status).toBe(200);
    const code = codeAt(secret, 30);
    const verify = await browser.postJson(`${t.issuer}/interaction/${loginUid}/alternative/verify`, {
      customerNumber,
      code,
    });
    expect(verify.status).toBe(200);
    // The same code again is a replay.
    const replayAuth = await startAuthorization(rp);
    const other = createUserAgent({ fetch: t.fetch });
    const replayUid = (await other.follow(replayAuth.url)).response.url.pathname.split('/').pop()!;
    const replay = await other.postJson(`${t.issuer}/interaction/${replayUid}/alternative/verify`, {
      customerNumber,
      code,
    });
    expect(replay.status).toBe(400);
    expect(replay.json<{ error_code: string }>().error_code).toBe('ERR_TOTP_INVALID');

    const consent = await browser.follow(new URL(verify.json<{ redirectTo: string }>().redirectTo, t.issuer));
    const consentUid = consent.response.url.pathname.split('/').pop()!;
    const account = /name="account" value="([^"]+)"/.exec(consent.response.text)![1]!;
    const done = await browser.request(`${t.issuer}/interaction/${consentUid}/consent`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ decision: 'approve', account }).toString(),
    });
    const callback = await browser.follow(done.location!, { stopAt: (u) => u.pathname === '/demo/callback' });
    const tokens = await redeem(rp, auth, callback.stoppedAt!);
    expect(tokens.claims()).toMatchObject({ acr: 'otp', amr: ['otp'], sub: customerId });
    // Account data needs a phishing-resistant sign-in: RFC 9470 step-up challenge.
    const stepUp = await client
      .fetchProtectedResource(
        rp.config,
        tokens.access_token,
        new URL(`${t.issuer}/api/v1/accounts`),
        'GET',
        undefined,
        undefined,
        {
          DPoP: rp.dpop,
        },
      )
      .then(
        () => undefined,
        (err: client.WWWAuthenticateChallengeError) => err,
      );
    expect(stepUp?.response?.status).toBe(401);
    expect(stepUp?.cause?.[0]).toMatchObject({
      scheme: 'dpop',
      parameters: { error: 'insufficient_user_authentication', acr_values: 'phr phrh' },
    });
  });

  it('refuses the code of a customer without an exemption, alike for unknown numbers', async () => {
    await endExemption(t.hub.db, t.hub.demo!.customerId, 'operator:a');
    const ua = createUserAgent({ fetch: t.fetch });
    const uid = (await ua.follow((await startAuthorization(await demoRp(t))).url)).response.url.pathname
      .split('/')
      .pop()!;
    for (const customerNumber of [t.hub.demo!.customerNumber, '99999999']) {
      const res = await ua.postJson(`${t.issuer}/interaction/${uid}/alternative/verify`, {
        customerNumber,
        code: '123456',
      });
      expect(res.status).toBe(400);
      expect(res.json<{ error_code: string }>().error_code).toBe('ERR_TOTP_INVALID');
    }
    // Passkeys keep working for everyone.
    const ticket = await issueEnrollmentTicket(t.hub.authn, {
      customerId: t.hub.demo!.customerId,
      issuedBy: 'operator:a',
    });
    const url = await completeLogin({
      fetch: t.fetch,
      authorizationUrl: (await startAuthorization(await demoRp(t))).url,
      device: createEmulator(),
      enroll: { customerNumber: t.hub.demo!.customerNumber, ticket: ticket.ticket },
    });
    expect(url.searchParams.get('code')).toBeTruthy();
  });
});
