/**
 * The customer's security page in a real browser: sign in there with a passkey, add a second
 * passkey (after a fresh sign-in), rename and remove passkeys (never the last), see and end other
 * sessions, read the sign-in history, and end every session. Then the limits section: lower a daily
 * limit, switch a product off (at once) and allow one (waits for the cool-off), in Japanese and English.
 */
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { issueEnrollmentTicket } from '../../src/authn/index.ts';
import { customerLimits, productStates } from '../../src/linking/index.ts';
import { addVirtualAuthenticator, launchBrowser, type VirtualAuthenticator } from '../support/browser.ts';
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

/** Enrolls a passkey on `authenticator` through an authorization request's enrollment page. */
async function enrollThroughAuthorization(page: Page): Promise<void> {
  const auth = await startAuthorization(await demoRp(t));
  const ticket = await issueEnrollmentTicket(t.hub.authn, {
    customerId: t.hub.demo!.customerId,
    issuedBy: 'operator:test',
  });
  await page.goto(auth.url.href);
  await page.click('#enroll-link');
  await page.fill('#customerNumber', t.hub.demo!.customerNumber);
  await page.fill('#ticket', ticket.ticket);
  await page.fill('#passkeyName', 'ノートPC');
  await page.click('#enroll-button');
  await page.waitForURL(/enrolled=1/);
}

async function signInAtAccount(page: Page): Promise<void> {
  await page.goto(`${t.issuer}/account`);
  await page.click('#passkey-login');
  await page.waitForSelector('#passkeys');
}

const passkeyRows = (page: Page) => page.locator('#passkeys tbody tr');

describe('security page', () => {
  let context: BrowserContext;
  let page: Page;
  let first: VirtualAuthenticator;

  it('signs in with a passkey and shows passkeys and history, in Japanese by default', async () => {
    context = await browser.newContext({ locale: 'ja-JP' });
    page = await context.newPage();
    first = await addVirtualAuthenticator(context, page);
    await enrollThroughAuthorization(page);
    await context.clearCookies();
    await page.goto(`${t.issuer}/account`);
    expect(await page.textContent('h1')).toBe('セキュリティ設定にログイン');
    await page.click('#passkey-login');
    await page.waitForSelector('#passkeys');
    expect(await page.textContent('h1')).toBe('セキュリティ設定');
    expect(await passkeyRows(page).count()).toBe(1);
    expect(await page.inputValue('#passkeys tbody tr input[name="name"]')).toBe('ノートPC');
    // One usable passkey: there is no remove button.
    expect(await page.locator('#passkeys button.remove').count()).toBe(0);
    const history = await page.textContent('#history');
    expect(history).toContain('パスキーでログイン');
    expect(history).toContain('パスキーを登録');
  });

  it('adds a second passkey right after signing in, renames one and removes the other', async () => {
    // The new passkey lives on another authenticator (the first one would be excluded).
    await first.cdp.send('WebAuthn.removeVirtualAuthenticator', { authenticatorId: first.authenticatorId });
    const second = await addVirtualAuthenticator(context, page, { backupEligible: true });
    await page.click('#add-passkey');
    await page.waitForFunction(() => document.querySelectorAll('#passkeys tbody tr').length === 2);
    expect(await second.credentials()).toHaveLength(1);
    expect(await page.textContent('#passkeys tbody tr:nth-child(2)')).toContain('同期パスキー');

    const firstRow = passkeyRows(page).nth(0);
    await firstRow.locator('input[name="name"]').fill('古いノートPC');
    await firstRow.locator('button[type="submit"]').first().click();
    await page.waitForLoadState('load');
    expect(await page.inputValue('#passkeys tbody tr:nth-child(1) input[name="name"]')).toBe('古いノートPC');

    await passkeyRows(page).nth(0).locator('button.remove').click();
    await page.waitForFunction(() => document.querySelectorAll('#passkeys tbody tr').length === 1);
    expect(await page.locator('#passkeys button.remove').count()).toBe(0);

    // The remaining (new) passkey signs in.
    await context.clearCookies();
    await signInAtAccount(page);
    expect(await page.textContent('#history')).toContain('パスキーを削除');
  });

  it('refuses to add a passkey when the sign-in is not recent', async () => {
    await t.hub.db.query(
      `UPDATE oidc_payloads SET payload = jsonb_set(payload, '{loginTs}', to_jsonb((payload ->> 'loginTs')::bigint - 3600))
       WHERE model = 'Session' AND payload ->> 'accountId' = $1`,
      [t.hub.demo!.customerId],
    );
    await page.reload();
    await page.click('#add-passkey');
    await page.waitForSelector('#error:not([hidden])');
    expect(await page.textContent('#error')).toContain('5分以内');
  });

  it('lists other sessions, ends one, and ends all', async () => {
    // Every earlier sign-in left a session behind; this browser signs in once more.
    await context.clearCookies();
    await signInAtAccount(page);
    const sessionsBefore = await page.locator('#sessions tbody tr').count();
    expect(sessionsBefore).toBeGreaterThanOrEqual(2);
    expect(await page.locator('#sessions tbody tr strong').count()).toBe(1);
    await page.locator('#sessions tbody tr form button').first().click();
    await page.waitForLoadState('load');
    expect(await page.locator('#sessions tbody tr').count()).toBe(sessionsBefore - 1);

    await page.click('#end-all');
    await page.waitForLoadState('load');
    expect(await page.textContent('h1')).toBe('セキュリティ設定にログイン');
    const left = await t.hub.db.query(
      "SELECT 1 FROM oidc_payloads WHERE model IN ('Session', 'Grant') AND payload ->> 'accountId' = $1",
      [t.hub.demo!.customerId],
    );
    expect(left.rowCount).toBe(0);
    const audit = await t.hub.db.query<{ data: { all?: boolean } }>(
      "SELECT data FROM audit_events WHERE type = 'account.sessions.ended' AND customer_id = $1 ORDER BY id",
      [t.hub.demo!.customerId],
    );
    expect(audit.rows.map((r) => r.data.all ?? false)).toEqual([false, true]);
    await context.close();
  });
});

describe('limits and allowed products on the security page', () => {
  const product = (page: Page, name: string) => page.locator(`#products tr[data-product="${name}"]`);

  it('lowers a limit, switches foreign shares off at once and allows margin trading after the waiting period', async () => {
    const context = await browser.newContext({ locale: 'ja-JP' });
    const page = await context.newPage();
    await addVirtualAuthenticator(context, page);
    await enrollThroughAuthorization(page);
    await context.clearCookies();
    await signInAtAccount(page);
    const customerId = t.hub.demo!.customerId;

    expect(await page.textContent('#products')).toContain('外国株式');
    expect(await product(page, 'foreign_equity').getAttribute('data-allowed')).toBe('true');
    expect(await product(page, 'margin').getAttribute('data-allowed')).toBe('false');

    await page.fill('#limits tr[data-limit="withdrawal_daily"] input[name="amount"]', '200000');
    await page.click('#limits tr[data-limit="withdrawal_daily"] button');
    await page.waitForSelector('#limits');
    expect(await page.textContent('#limits tr[data-limit="withdrawal_daily"] .amount')).toBe('200,000円');
    expect(
      (await customerLimits(t.hub.db, customerId, t.hub.config.linking.defaultLimits)).current,
    ).toMatchObject({
      withdrawal_daily: 200_000,
    });

    await product(page, 'foreign_equity').locator('button').click();
    await page.waitForSelector('#products tr[data-product="foreign_equity"][data-allowed="false"]');
    expect(await page.textContent('body')).toContain('この商品のお取引を停止しました。');
    expect(await product(page, 'foreign_equity').textContent()).toContain('停止中');

    // Signed in a moment ago: allowing is accepted and waits for the cool-off; no button meanwhile.
    await product(page, 'margin').locator('button').click();
    await page.waitForSelector('#products tr[data-product="margin"] .pending');
    expect(await product(page, 'margin').textContent()).toContain('からお取引いただけます');
    expect(await product(page, 'margin').locator('button').count()).toBe(0);
    const states = await productStates(t.hub.db, customerId, t.hub.config.linking.defaultProducts);
    expect(states.find((s) => s.product === 'margin')).toMatchObject({
      allowed: false,
      allowAt: expect.any(Date),
    });
    expect(states.find((s) => s.product === 'foreign_equity')).toMatchObject({
      allowed: false,
      allowAt: null,
    });
    await context.close();

    // The same page in English.
    const en = await browser.newContext({ locale: 'en-US' });
    const enPage = await en.newPage();
    await addVirtualAuthenticator(en, enPage);
    await enrollThroughAuthorization(enPage);
    await en.clearCookies();
    await signInAtAccount(enPage);
    expect(await enPage.textContent('#products')).toContain('Foreign shares');
    expect(await product(enPage, 'foreign_equity').textContent()).toContain('Off');
    expect(await product(enPage, 'margin').textContent()).toContain('Allowed from');
    await en.close();
  });
});
