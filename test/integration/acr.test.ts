/** acr_values are enforced (oidc-provider alone does not): unmet levels end with an error, not a loop. */
import * as OTPAuth from 'otpauth';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { completeLogin } from '../../conformance/lib/login.ts';
import { createUserAgent } from '../../conformance/lib/userAgent.ts';
import { grantExemption, issueEnrollmentTicket } from '../../src/authn/index.ts';
import { enrollDemoCustomer } from '../support/customer.ts';
import { startTestHub, type TestHub } from '../support/hub.ts';
import type { PasskeyEmulator } from '../support/passkeyEmulator.ts';
import { demoRp, startAuthorization } from '../support/rp.ts';

let t: TestHub;
let device: PasskeyEmulator;
beforeAll(async () => {
  t = await startTestHub();
  device = await enrollDemoCustomer(t);
});
afterAll(() => t?.close());

describe('acr_values', () => {
  it('ends with unmet_authentication_requirements when a passkey sign-in cannot reach phrh', async () => {
    const url = await completeLogin({
      fetch: t.fetch,
      authorizationUrl: (await startAuthorization(await demoRp(t), 'openid accounts', { acr_values: 'phrh' }))
        .url,
      device,
    });
    expect(url.searchParams.get('error')).toBe('unmet_authentication_requirements');
    expect(url.searchParams.get('iss')).toBe(t.issuer);
    const audit = await t.hub.db.query<{ data: { requested: string[]; achieved: string } }>(
      "SELECT data FROM audit_events WHERE type = 'authn.acr.unmet'",
    );
    expect(audit.rows[0]!.data).toEqual({ requested: ['phrh'], achieved: 'phr' });
  });

  it('accepts phr from a passkey, and a session that reached phr needs no new sign-in', async () => {
    const browser = createUserAgent({ fetch: t.fetch });
    const first = await completeLogin({
      fetch: t.fetch,
      userAgent: browser,
      authorizationUrl: (await startAuthorization(await demoRp(t), 'openid accounts', { acr_values: 'phr' }))
        .url,
      device,
    });
    expect(first.searchParams.get('code')).toBeTruthy();
    const sso = await browser.follow(
      (await startAuthorization(await demoRp(t), 'openid accounts', { acr_values: 'phr' })).url,
      {
        stopAt: (u) => u.pathname === '/demo/callback',
      },
    );
    expect(sso.stoppedAt?.searchParams.get('code')).toBeTruthy();
  });

  it('does not let the alternative MFA satisfy a client that requires phr, nor offers it', async () => {
    await grantExemption(t.hub.db, {
      customerId: t.hub.demo!.customerId,
      reason: 'テスト用の免除',
      grantedBy: 'operator:test',
    });
    const ua = createUserAgent({ fetch: t.fetch });
    const rp = await demoRp(t);
    // Set up the authenticator app (no acr requirement on this request).
    const setupUid = (await ua.follow((await startAuthorization(rp)).url)).response.url.pathname
      .split('/')
      .pop()!;
    const ticket = await issueEnrollmentTicket(t.hub.authn, {
      customerId: t.hub.demo!.customerId,
      issuedBy: 'operator:test',
    });
    const setup = await ua.postJson(`${t.issuer}/interaction/${setupUid}/enroll/totp`, {
      customerNumber: t.hub.demo!.customerNumber,
      ticket: ticket.ticket,
    });
    const totp = new OTPAuth.TOTP({
      secret: OTPAuth.Secret.fromBase32(setup.json<{ secret: string }>().secret),
    });
    expect(
      (
        await ua.postJson(`${t.issuer}/interaction/${setupUid}/enroll/totp/confirm`, {
          code: totp.generate(),
        })
      ).status,
    ).toBe(200);

    const strict = await ua.follow(
      (await startAuthorization(rp, 'openid accounts', { acr_values: 'phr' })).url,
    );
    expect(strict.response.text).not.toContain('alternative-link');
    const uid = strict.response.url.pathname.split('/').pop()!;
    const res = await ua.postJson(`${t.issuer}/interaction/${uid}/alternative/verify`, {
      customerNumber: t.hub.demo!.customerNumber,
      code: totp.generate({ timestamp: Date.now() + 30_000 }),
    });
    expect(res.status).toBe(200);
    const end = await ua.follow(new URL(res.json<{ redirectTo: string }>().redirectTo, t.issuer), {
      stopAt: (u) => u.pathname === '/demo/callback',
    });
    expect(end.stoppedAt?.searchParams.get('error')).toBe('unmet_authentication_requirements');
  });
});
