/**
 * The aggregator journey end to end: consent to one of two accounts, read it, then the customer
 * disconnects the app on the security page — the very next read and refresh fail.
 */
import * as client from 'openid-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { completeLogin } from '../../conformance/lib/login.ts';
import { createUserAgent } from '../../conformance/lib/userAgent.ts';
import { issueEnrollmentTicket } from '../../src/authn/index.ts';
import { startTestHub, type TestHub } from '../support/hub.ts';
import { createEmulator, type PasskeyEmulator } from '../support/passkeyEmulator.ts';
import { demoRp, redeem, startAuthorization } from '../support/rp.ts';

let t: TestHub;
let device: PasskeyEmulator;
beforeAll(async () => {
  t = await startTestHub();
  device = createEmulator();
});
afterAll(() => t?.close());

const readAccounts = (rp: Awaited<ReturnType<typeof demoRp>>, token: string) =>
  client
    .fetchProtectedResource(
      rp.config,
      token,
      new URL(`${t.issuer}/api/v1/accounts`),
      'GET',
      undefined,
      new Headers({ 'x-fapi-customer-ip-address': '198.51.100.7' }),
      { DPoP: rp.dpop },
    )
    .then(
      (res) => res.status,
      (err: client.WWWAuthenticateChallengeError) => err.response?.status ?? 0,
    );

describe('consent dashboard', () => {
  it('lists the consent with its client and accounts, and one click ends the app’s access at once', async () => {
    const rp = await demoRp(t);
    const auth = await startAuthorization(rp, 'openid offline_access accounts');
    const ticket = await issueEnrollmentTicket(t.hub.authn, {
      customerId: t.hub.demo!.customerId,
      issuedBy: 'operator:test',
    });
    let chosen = '';
    const callback = await completeLogin({
      fetch: t.fetch,
      authorizationUrl: auth.url,
      device,
      enroll: { customerNumber: t.hub.demo!.customerNumber, ticket: ticket.ticket },
      accounts: (offered) => {
        chosen = offered[0]!;
        return [chosen];
      },
    });
    const tokens = await redeem(rp, auth, callback);
    expect(await readAccounts(rp, tokens.access_token)).toBe(200);

    // The customer signs in on the security page and sees the consent.
    const browser = createUserAgent({ fetch: t.fetch, language: 'ja' });
    await browser.get(`${t.issuer}/account`);
    const options = await browser.postJson(`${t.issuer}/account/login/options`, {});
    await browser.postJson(
      `${t.issuer}/account/login/verify`,
      device.authenticate(options.json(), new URL(t.issuer).origin),
    );
    const page = await browser.get(`${t.issuer}/account`);
    expect(page.text).toContain('デモ家計簿アプリ');
    expect(page.text).toMatch(/特定口座 <span class="masked">••••567<\/span>/);
    expect(page.text).not.toContain('NISA口座 <span');
    // What the consent covers and when the app last read with it (the read above).
    const listed = page.text.slice(page.text.indexOf('<tr data-grant='));
    expect(listed).toContain('data-type="balances"');
    expect(listed).toContain('data-type="transactions"');
    expect(listed).not.toContain('data-type="account_details"');
    expect(listed).toContain('取引履歴は過去730日分まで');
    expect(/<td class="last-used">([^<]*)<\/td>/.exec(listed)![1]).not.toBe('未使用');
    const grantId = /data-grant="([^"]+)"/.exec(page.text)![1]!;
    const csrf = /name="csrf" value="([^"]+)"/.exec(page.text)![1]!;

    // Someone else's grant id is not found, and changes nothing.
    const foreign = await browser.postForm(`${t.issuer}/account/consents/revoke`, {
      csrf,
      grantId: 'not-a-grant',
    });
    expect(foreign.status).toBe(404);
    expect(await readAccounts(rp, tokens.access_token)).toBe(200);

    const revoke = await browser.postForm(`${t.issuer}/account/consents/revoke`, { csrf, grantId });
    expect(revoke.status).toBe(303);
    expect(await readAccounts(rp, tokens.access_token)).toBe(401);
    await expect(
      client.refreshTokenGrant(rp.config, tokens.refresh_token!, undefined, { DPoP: rp.dpop }),
    ).rejects.toMatchObject({
      error: 'invalid_grant',
    });
    const after = await browser.get(`${t.issuer}/account`);
    expect(after.text).toContain('id="no-consents"');
    const row = await t.hub.db.query<{ revoked_by: string; revoke_reason: string }>(
      'SELECT revoked_by, revoke_reason FROM consents WHERE grant_id = $1',
      [grantId],
    );
    expect(row.rows[0]).toEqual({
      revoked_by: `customer:${t.hub.demo!.customerId}`,
      revoke_reason: 'revoked by the customer on the security page',
    });
    const audit = await t.hub.db.query<{ actor: string; data: Record<string, unknown> }>(
      "SELECT actor, data FROM audit_events WHERE type = 'consent.revoked' AND customer_id = $1",
      [t.hub.demo!.customerId],
    );
    // Recorded as the client's revocation is (src/consent/revoke.ts): who, and why.
    expect(audit.rows).toEqual([
      {
        actor: `customer:${t.hub.demo!.customerId}`,
        data: expect.objectContaining({
          grantId,
          by: 'customer',
          reason: 'revoked by the customer on the security page',
        }),
      },
    ]);
  });
});
