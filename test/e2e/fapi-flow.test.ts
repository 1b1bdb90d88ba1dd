/**
 * The whole walking skeleton over HTTPS: openid-client as the aggregator (PAR, private_key_jwt,
 * PKCE, DPoP), a real Chromium with a virtual authenticator enrolling a passkey with a one-time
 * ticket, signing in with it and consenting to one of two accounts, the token exchange, and
 * GET /api/v1/accounts with DPoP returning exactly the consented account.
 */
import * as client from 'openid-client';
import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { issueEnrollmentTicket } from '../../src/authn/index.ts';
import { addVirtualAuthenticator, launchBrowser } from '../support/browser.ts';
import { startTestHub, type TestHub } from '../support/hub.ts';
import { demoRp, startAuthorization } from '../support/rp.ts';

let t: TestHub;
let browser: Browser;

beforeAll(async () => {
  t = await startTestHub();
  browser = await launchBrowser(t.dataDir);
});
afterAll(async () => {
  await browser?.close();
  await t?.close();
});

describe('FAPI 2.0 code flow with passkey login and consent in a real browser', () => {
  it('enrolls, signs in, consents to one account, exchanges the code and reads only that account', async () => {
    const rp = await demoRp(t);
    const auth = await startAuthorization(rp, 'openid offline_access accounts');
    expect(auth.url.searchParams.get('request_uri')).toMatch(/^urn:ietf:params:oauth:request_uri:/);

    const context = await browser.newContext({ locale: 'ja-JP' });
    const page = await context.newPage();
    const authenticator = await addVirtualAuthenticator(context, page);

    await page.goto(auth.url.href);
    await expect.poll(() => page.url()).toMatch(/\/interaction\/[^/]+$/);
    expect(await page.locator('html').getAttribute('lang')).toBe('ja');
    expect(await page.textContent('body')).toContain('デモ家計簿アプリ');

    // First visit: enroll a passkey with the ticket an operator issued after KYC.
    const ticket = await issueEnrollmentTicket(t.hub.authn, {
      customerId: t.hub.demo!.customerId,
      issuedBy: 'operator:test',
    });
    await page.click('#enroll-link');
    await page.fill('#customerNumber', t.hub.demo!.customerNumber);
    await page.fill('#ticket', ticket.ticket);
    await page.fill('#passkeyName', 'テスト端末');
    await page.click('#enroll-button');
    await page.waitForURL(/enrolled=1/);
    expect(await authenticator.credentials()).toHaveLength(1);

    // Sign in with the new passkey (discoverable credential, user verification).
    await page.click('#passkey-login');
    await page.waitForSelector('#consent-form');
    const boxes = page.locator('input[name="account"]');
    expect(await boxes.count()).toBe(2);
    const accountIds = await boxes.evaluateAll((els) => els.map((e) => (e as HTMLInputElement).value));
    // The customer narrows the consent to the first account only.
    await boxes.nth(1).uncheck();
    await page.click('#approve');
    await page.waitForURL((u) => u.pathname === '/demo/callback');
    const callback = new URL(page.url());
    expect(callback.searchParams.get('iss')).toBe(t.issuer);
    expect(callback.searchParams.get('code')).toBeTruthy();
    await context.close();

    const tokens = await client.authorizationCodeGrant(
      rp.config,
      callback,
      { pkceCodeVerifier: auth.codeVerifier, expectedState: auth.state },
      undefined,
      { DPoP: rp.dpop },
    );
    expect(tokens.token_type.toLowerCase()).toBe('dpop');
    expect(tokens.refresh_token).toBeTruthy();
    const claims = tokens.claims()!;
    expect(claims.acr).toBe('phr');
    expect(claims.amr).toEqual(expect.arrayContaining(['pop', 'user']));
    expect(claims.sub).toBe(t.hub.demo!.customerId);

    const res = await client.fetchProtectedResource(
      rp.config,
      tokens.access_token,
      new URL(`${t.issuer}/api/v1/accounts`),
      'GET',
      undefined,
      undefined,
      { DPoP: rp.dpop },
    );
    expect(res.status).toBe(200);
    expect(res.headers.get('x-fapi-interaction-id')).toMatch(/^[0-9a-f-]{36}$/);
    const body = (await res.json()) as {
      data: Array<{ accountId: string; accountNumberMasked: string }>;
      meta: { totalRecords: number };
    };
    expect(body.data.map((a) => a.accountId)).toEqual([accountIds[0]]);
    expect(body.meta.totalRecords).toBe(1);
    expect(body.data[0]!.accountNumberMasked).toMatch(/^\*+\d{3}$/);

    // Refresh keeps the same DPoP binding and is not rotated.
    const refreshed = await client.refreshTokenGrant(rp.config, tokens.refresh_token!, undefined, {
      DPoP: rp.dpop,
    });
    expect(refreshed.refresh_token ?? tokens.refresh_token).toBe(tokens.refresh_token);
  });
});
