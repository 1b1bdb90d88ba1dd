/**
 * The whole walking skeleton over HTTPS: openid-client as the aggregator (PAR, private_key_jwt,
 * PKCE, DPoP), a real Chromium with a virtual authenticator enrolling a passkey with a one-time
 * ticket, signing in with it and consenting to one of two accounts, the token exchange, and
 * GET /api/v1/accounts with DPoP returning exactly the consented account. Then the aggregator
 * journey with RFC 9396 authorization_details: two of three accounts, reads, pagination, and the
 * customer disconnecting the app on the security page — the next read is 401. And a brokerage's
 * withdrawal approval: the approval page, the passkey, the token carrying exactly the details; and
 * the same approval by a customer exempted from passkeys, with a one-time code.
 */
import * as client from 'openid-client';
import * as OTPAuth from 'otpauth';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  confirmTotpSetup,
  grantExemption,
  issueEnrollmentTicket,
  startTotpSetup,
} from '../../src/authn/index.ts';
import { DEMO_INSTITUTION_ID } from '../../src/demo/seed.ts';
import { ingestDemoLedger } from '../../src/ledger/index.ts';
import { addVirtualAuthenticator, launchBrowser } from '../support/browser.ts';
import { startTestHub, type TestHub } from '../support/hub.ts';
import { demoRp, redeem, registeredRp, startAuthorization } from '../support/rp.ts';

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

/**
 * Opens the authorization URL in `page` (whose context has a virtual authenticator), enrolls a new
 * passkey for the demo customer with a fresh ticket and signs in with it.
 */
async function enrollAndSignIn(page: Page, url: URL): Promise<void> {
  await page.goto(url.href);
  await expect.poll(() => page.url()).toMatch(/\/interaction\/[^/]+$/);
  const ticket = await issueEnrollmentTicket(t.hub.authn, {
    customerId: t.hub.demo!.customerId,
    issuedBy: 'operator:test',
  });
  await page.click('#enroll-link');
  await page.fill('#customerNumber', t.hub.demo!.customerNumber);
  await page.fill('#ticket', ticket.ticket);
  await page.click('#enroll-button');
  await page.waitForURL(/enrolled=1/);
  await page.click('#passkey-login');
}

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

    const tokens = await redeem(rp, auth, callback);
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

  it('aggregator journey: authorization_details for two of three accounts, reads, pages, revoke on the dashboard', async () => {
    const third = 'acc_e2e_third';
    await t.hub.db.query(
      `INSERT INTO accounts (id, customer_id, institution_id, kind, tax_category, branch_code, account_number, nickname, opened_on)
       VALUES ($1, $2, $3, 'securities', 'general', '002', '5558888', '一般口座', '2025-03-03')`,
      [third, t.hub.demo!.customerId, DEMO_INSTITUTION_ID],
    );
    await ingestDemoLedger(t.hub.db, DEMO_INSTITUTION_ID, [third]);
    const rp = await demoRp(t);
    const auth = await startAuthorization(rp, 'openid offline_access', {
      authorization_details: JSON.stringify([
        {
          type: 'account_information',
          data_types: ['balances', 'holdings', 'transactions'],
          transaction_lookback_days: 365,
        },
      ]),
    });

    const context = await browser.newContext({ locale: 'ja-JP' });
    const page = await context.newPage();
    await addVirtualAuthenticator(context, page);
    await enrollAndSignIn(page, auth.url);
    await page.waitForSelector('#consent-form');
    // The page shows what is asked: data, lookback, expiry; the customer picks two of three accounts.
    expect(await page.locator('#data-types li').count()).toBe(3);
    expect(await page.textContent('#lookback')).toContain('365');
    expect(await page.getAttribute('#expiry', 'data-expires')).toBeTruthy();
    const boxes = page.locator('input[name="account"]');
    expect(await boxes.count()).toBe(3);
    const offered = await boxes.evaluateAll((els) => els.map((e) => (e as HTMLInputElement).value));
    await boxes.nth(1).uncheck();
    await page.click('#approve');
    await page.waitForURL((u) => u.pathname === '/demo/callback');
    const tokens = await client.authorizationCodeGrant(
      rp.config,
      new URL(page.url()),
      { pkceCodeVerifier: auth.codeVerifier, expectedState: auth.state },
      undefined,
      { DPoP: rp.dpop },
    );
    const chosen = [offered[0]!, offered[2]!];
    expect(tokens.authorization_details).toEqual([expect.objectContaining({ accounts: chosen })]);

    interface ApiPage {
      status: number;
      body: {
        data?: Array<{ accountId: string; transactionId?: string }>;
        links?: { next?: string; prev?: string };
      };
    }
    const read = (url: string): Promise<ApiPage> =>
      client
        .fetchProtectedResource(rp.config, tokens.access_token, new URL(url), 'GET', undefined, undefined, {
          DPoP: rp.dpop,
        })
        .then(
          async (res) => ({ status: res.status, body: (await res.json()) as ApiPage['body'] }),
          (err: client.WWWAuthenticateChallengeError) => ({ status: err.response?.status ?? 0, body: {} }),
        );
    const list = await read(`${t.issuer}/api/v1/accounts`);
    expect(list.status).toBe(200);
    expect(list.body.data!.map((a) => a.accountId).sort()).toEqual([...chosen].sort());
    // Pagination over the consented accounts' transactions: two pages, no overlap, links back.
    const first = await read(`${t.issuer}/api/v1/transactions?pageSize=5`);
    expect(first.status).toBe(200);
    const next = first.body.links?.next;
    expect(next).toBeTruthy();
    const second = await read(next!);
    expect(second.status).toBe(200);
    const ids = (p: ApiPage) => p.body.data!.map((x) => x.transactionId);
    expect(ids(second)).toHaveLength(5);
    expect(ids(second).some((id) => ids(first).includes(id))).toBe(false);
    expect(second.body.links?.prev).toBeTruthy();
    for (const x of [...first.body.data!, ...second.body.data!]) expect(chosen).toContain(x.accountId);

    // The customer opens the security page (same browser, same sign-in) and disconnects the app.
    await page.goto(`${t.issuer}/account`);
    const row = page.locator(`tr[data-grant="${String(tokens.grant_id)}"]`);
    expect(await row.textContent()).toContain('デモ家計簿アプリ');
    expect(await row.locator('[data-type]').count()).toBe(3);
    expect(await row.locator('.last-used').textContent()).not.toBe('未使用');
    await row.locator('button.revoke').click();
    await page.waitForURL(/\/account\?notice=/);
    expect(await page.locator(`tr[data-grant="${String(tokens.grant_id)}"]`).count()).toBe(0);
    await context.close();

    expect((await read(`${t.issuer}/api/v1/accounts`)).status).toBe(401);
  });
});

describe('operation-bound step-up in a real browser', () => {
  it('shows the withdrawal with the account masked, approves it with the passkey, and the token carries exactly it', async () => {
    const brokerage = await registeredRp(t, 'e2e-brokerage', {
      scope: 'openid',
      institution_id: DEMO_INSTITUTION_ID,
    });
    const source = (
      await t.hub.db.query<{ id: string }>(
        "SELECT id FROM accounts WHERE customer_id = $1 AND tax_category = 'specific'",
        [t.hub.demo!.customerId],
      )
    ).rows[0]!.id;
    const details = {
      type: 'withdrawal',
      instructedAmount: { amount: '50000', currency: 'JPY' },
      sourceAccountId: source,
      destination: {
        bankCode: '0005',
        bankName: 'かけはし銀行',
        branchCode: '123',
        accountType: 'ordinary',
        accountNumber: '1112223',
        holderName: 'ヤマダ タロウ',
      },
    };
    const auth = await startAuthorization(brokerage, 'openid', {
      authorization_details: JSON.stringify([details]),
    });

    const context = await browser.newContext({ locale: 'ja-JP' });
    // The brokerage's redirect URI is not a real host: the browser's arrival there is the result.
    let callback: URL | undefined;
    await context.route(
      (u) => u.hostname === 'e2e-brokerage.example',
      (route) => {
        callback = new URL(route.request().url());
        return route.fulfill({ status: 200, body: 'ok' });
      },
    );
    const page = await context.newPage();
    await addVirtualAuthenticator(context, page);
    await enrollAndSignIn(page, auth.url);

    // After signing in, the approval page: amount, destination masked, holder — in Japanese.
    await page.waitForSelector('#approval-details');
    expect(await page.textContent('h1')).toBe('出金の承認');
    expect(await page.textContent('#approval-amount')).toBe('50,000円');
    const destination = await page.textContent('#approval-destination');
    expect(destination).toContain('かけはし銀行');
    expect(destination).toContain('****223');
    expect(await page.textContent('body')).not.toContain('1112223');
    expect(await page.textContent('#approval-holder')).toBe('ヤマダ タロウ');
    await page.click('#passkey-login');
    await expect.poll(() => callback?.hostname, { timeout: 10_000 }).toBe('e2e-brokerage.example');
    await context.close();

    const tokens = await redeem(brokerage, auth, callback!);
    expect(tokens.authorization_details).toEqual([details]);
    // The approval stored for the decision endpoint is tied to exactly this grant.
    expect(tokens.grant_id).toEqual(expect.any(String));
    const approval = await t.hub.db.query<{ kind: string; acr: string; grant_id: string }>(
      'SELECT kind, acr, grant_id FROM operation_approvals WHERE customer_id = $1 ORDER BY approved_at DESC LIMIT 1',
      [t.hub.demo!.customerId],
    );
    expect(approval.rows[0]).toMatchObject({
      kind: 'withdrawal',
      acr: 'phr',
      grant_id: tokens.grant_id,
    });
  });

  it('an exempted customer signs in and approves the withdrawal with one-time codes', async () => {
    const customerId = 'cus_e2e_exempt';
    await t.hub.db.query(
      `INSERT INTO customers (id, institution_id, customer_number, name_kanji, name_kana)
       VALUES ($1, $2, '10000088', '鈴木 一郎', 'スズキ イチロウ')`,
      [customerId, DEMO_INSTITUTION_ID],
    );
    await t.hub.db.query(
      `INSERT INTO accounts (id, customer_id, institution_id, kind, tax_category, branch_code, account_number, nickname, opened_on)
       VALUES ('acc_e2e_exempt', $1, $2, 'securities', 'specific', '001', '5550001', '特定口座', '2021-01-04')`,
      [customerId, DEMO_INSTITUTION_ID],
    );
    await grantExemption(t.hub.db, {
      customerId,
      reason: 'パスキー対応端末がない',
      grantedBy: 'operator:test',
    });
    const ticket = await issueEnrollmentTicket(t.hub.authn, { customerId, issuedBy: 'operator:test' });
    const { secret } = await startTotpSetup(t.hub.authn, {
      customerId,
      ticketId: ticket.ticketId,
      interactionId: 'e2e-totp-setup',
    });
    /** The current code, with the once-per-step guard reset (sign-in and approval fall in one step). */
    const code = async () => {
      await t.hub.db.query('UPDATE totp_credentials SET last_step = 0 WHERE customer_id = $1', [customerId]);
      return new OTPAuth.TOTP({
        secret: OTPAuth.Secret.fromBase32(secret),
        digits: 6,
        period: 30,
      }).generate();
    };
    await confirmTotpSetup(t.hub.authn, { interactionId: 'e2e-totp-setup', code: await code() });

    const brokerage = await registeredRp(t, 'e2e-brokerage-totp', {
      scope: 'openid',
      institution_id: DEMO_INSTITUTION_ID,
    });
    const details = {
      type: 'withdrawal',
      instructedAmount: { amount: '30000', currency: 'JPY' },
      sourceAccountId: 'acc_e2e_exempt',
      destination: {
        bankCode: '0005',
        bankName: 'かけはし銀行',
        branchCode: '123',
        accountType: 'ordinary',
        accountNumber: '2223334',
        holderName: 'スズキ イチロウ',
      },
    };
    const auth = await startAuthorization(brokerage, 'openid', {
      authorization_details: JSON.stringify([details]),
    });
    const context = await browser.newContext({ locale: 'ja-JP' });
    let callback: URL | undefined;
    await context.route(
      (u) => u.hostname === 'e2e-brokerage-totp.example',
      (route) => {
        callback = new URL(route.request().url());
        return route.fulfill({ status: 200, body: 'ok' });
      },
    );
    const page = await context.newPage();
    await page.goto(auth.url.href);
    await page.click('#alternative-link');
    await page.fill('#customerNumber', '10000088');
    await page.fill('#code', await code());
    await page.click('#alternative-button');

    await page.waitForSelector('#approval-code');
    expect(await page.textContent('#approval-amount')).toBe('30,000円');
    expect(await page.textContent('#approval-code')).toContain('1日10万円まで');
    await page.fill('#approval-code-input', '000000');
    await page.click('#approval-totp-button');
    await page.waitForSelector('#error:not([hidden])');
    expect(await page.textContent('#error')).toContain('one-time code');
    await page.fill('#approval-code-input', await code());
    await page.click('#approval-totp-button');
    await expect.poll(() => callback?.hostname, { timeout: 10_000 }).toBe('e2e-brokerage-totp.example');
    await context.close();

    const tokens = await redeem(brokerage, auth, callback!);
    expect(tokens.authorization_details).toEqual([details]);
    const approval = await t.hub.db.query<{ acr: string; grant_id: string; evidence: { method: string } }>(
      'SELECT acr, grant_id, evidence FROM operation_approvals WHERE customer_id = $1',
      [customerId],
    );
    expect(approval.rows).toEqual([
      { acr: 'otp', grant_id: tokens.grant_id, evidence: expect.objectContaining({ method: 'totp' }) },
    ]);
  });
});
