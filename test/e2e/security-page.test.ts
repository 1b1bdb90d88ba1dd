/**
 * The customer's security page in a real browser: sign in there with a passkey, add a second
 * passkey (after a fresh sign-in), rename and remove passkeys (never the last), see and end other
 * sessions, read the sign-in history, and end every session.
 */
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { issueEnrollmentTicket } from '../../src/authn/index.ts';
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
