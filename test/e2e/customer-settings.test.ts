/**
 * The customer's other flows in a real browser (Chromium, virtual authenticator), in Japanese:
 * - exemption from passkeys: with the operator's exemption and a one-time code, the customer sets
 *   up an authenticator app on the enrollment page and signs in with customer number + TOTP; the
 *   app's ID token says `otp`, not `phr`;
 * - an important notice that must be acknowledged before continuing;
 * - on the security page: the contact address masked and changed (a fresh passkey needed; the old
 *   address is told), notification preferences (security ones cannot be switched off, the change
 *   takes effect), switching off third-party access (the app's next read is refused at once) and
 *   disconnecting the app;
 * - a cloned authenticator: a copy of the passkey with an older signature counter is refused and
 *   the passkey disabled.
 */
import * as OTPAuth from 'otpauth';
import type { Browser, BrowserContext, Locator, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { grantExemption, issueEnrollmentTicket } from '../../src/authn/index.ts';
import { publishNotice } from '../../src/notices/index.ts';
import { addEmailChannel } from '../../src/notify/index.ts';
import { addVirtualAuthenticator, launchBrowser, type VirtualAuthenticator } from '../support/browser.ts';
import { startTestHub, type TestHub } from '../support/hub.ts';
import {
  accountsStatus,
  demoRp,
  type Rp,
  redeem,
  type StartedAuthorization,
  startAuthorization,
} from '../support/rp.ts';

let t: TestHub;
let browser: Browser;
let customerId: string;

beforeAll(async () => {
  t = await startTestHub();
  browser = await launchBrowser(t.dataDir);
  customerId = t.hub.demo!.customerId;
  await addEmailChannel(t.hub.db, t.hub.authn.kek!, {
    customerId,
    address: 'taro.yamada@example.jp',
    actor: 'operator:test',
  });
});
afterAll(async () => {
  await browser?.close();
  await t?.close();
});

const ticket = async () =>
  (await issueEnrollmentTicket(t.hub.authn, { customerId, issuedBy: 'operator:test' })).ticket;

const outbox = (kind: string) =>
  t.hub.db
    .query<{ channel_id: string }>(
      'SELECT channel_id FROM notify_outbox WHERE customer_id = $1 AND kind = $2',
      [customerId, kind],
    )
    .then((r) => r.rows.map((x) => x.channel_id));

/** The app at its callback: exchanges the code. */
async function tokensAt(page: Page, rp: Rp, auth: StartedAuthorization) {
  await page.waitForURL((u) => u.pathname === '/demo/callback');
  return redeem(rp, auth, new URL(page.url()));
}

describe('exemption from passkeys', () => {
  it('sets up an authenticator app with the exemption and a code, and signs in with it as otp', async () => {
    await grantExemption(t.hub.db, {
      customerId,
      reason: '対応端末を持っていないため',
      grantedBy: 'operator:test',
    });
    const context = await browser.newContext({ locale: 'ja-JP' });
    const page = await context.newPage();
    const rp = await demoRp(t);
    const auth = await startAuthorization(rp, 'openid accounts');
    await page.goto(auth.url.href);
    await page.click('#enroll-link');
    await page.fill('#customerNumber', t.hub.demo!.customerNumber);
    await page.fill('#ticket', await ticket());
    await page.click('#totp-setup');
    await page.waitForSelector('#totp-setup-step:not([hidden])');
    const secret = (await page.textContent('#totp-secret'))!.replace(/\s+/g, '');
    expect(secret).toMatch(/^[A-Z2-7]{32}$/);
    const totp = new OTPAuth.TOTP({ secret: OTPAuth.Secret.fromBase32(secret), digits: 6, period: 30 });
    const setupCode = totp.generate();
    await page.fill('#totp-confirm-code', setupCode);
    await page.click('#totp-confirm');
    await page.waitForURL(/\/alternative$/);
    // The page says what this method is not.
    expect(await page.textContent('main')).toContain('フィッシングに強い認証ではありません');

    // A wrong code first: refused with the reason in Japanese.
    await page.fill('#customerNumber', t.hub.demo!.customerNumber);
    await page.fill('#code', String((Number(setupCode) + 1) % 1_000_000).padStart(6, '0'));
    await page.click('#alternative-button');
    await page.waitForSelector('#error:not([hidden])');
    expect(await page.textContent('#error')).toBe('お客様番号またはコードが正しくありません。');
    // The code used for the set-up is spent: the app's next one (30 s later) signs in.
    await page.fill('#code', setupCode);
    await page.click('#alternative-button');
    await page.waitForSelector('#error:not([hidden])');
    expect(await page.textContent('#error')).toBe('お客様番号またはコードが正しくありません。');
    expect(new URL(page.url()).pathname).toMatch(/\/alternative$/);
    await page.fill('#code', totp.generate({ timestamp: Date.now() + 30_000 }));
    await page.click('#alternative-button');
    await page.waitForSelector('#consent-form');
    await page.click('#approve');
    const tokens = await tokensAt(page, rp, auth);
    expect(tokens.claims()).toMatchObject({ acr: 'otp', amr: expect.arrayContaining(['otp']) });
    await context.close();
  });
});

describe('notices and the security page', () => {
  let context: BrowserContext;
  let page: Page;
  let rp: Rp;
  let accessToken: string;
  let grantId: string;
  let authenticator: VirtualAuthenticator;

  const read = () => accountsStatus(t, rp, accessToken);
  /** Submits a security-page form and waits for the page it leads back to (same URL: /account). */
  const submit = async (button: Locator) => {
    await Promise.all([page.waitForEvent('framenavigated'), button.click()]);
    await page.waitForLoadState('load');
  };

  it('enrolls a passkey, acknowledges an important notice before continuing, and the app reads', async () => {
    await publishNotice(
      t.hub.db,
      {
        title: { ja: 'フィッシングにご注意ください', en: 'Beware of phishing' },
        body: {
          ja: '当社がメールやSMSでログインを求めることはありません。',
          en: 'We never ask you to sign in through a link in an e-mail or SMS.',
        },
      },
      'operator:test',
    );
    context = await browser.newContext({ locale: 'ja-JP' });
    page = await context.newPage();
    authenticator = await addVirtualAuthenticator(context, page);
    rp = await demoRp(t);
    const auth = await startAuthorization(rp, 'openid accounts');
    await page.goto(auth.url.href);
    await page.click('#enroll-link');
    await page.fill('#customerNumber', t.hub.demo!.customerNumber);
    await page.fill('#ticket', await ticket());
    await page.click('#enroll-button');
    await page.waitForURL(/enrolled=1/);
    await page.click('#passkey-login');
    await page.waitForSelector('#notices-form');
    expect(await page.textContent('h1')).toBe('重要なお知らせ');
    expect(await page.textContent('.notice-item')).toContain('フィッシングにご注意ください');
    // The browser will not submit without the confirmation ticked.
    await page.click('#notices-continue');
    expect(await page.locator('#notices-form').count()).toBe(1);
    await page.check('#notices-confirmed');
    await page.click('#notices-continue');
    await page.waitForSelector('#consent-form');
    await page.click('#approve');
    const tokens = await tokensAt(page, rp, auth);
    accessToken = tokens.access_token;
    grantId = String(tokens.grant_id);
    expect(await read()).toBe(200);
  });

  it('shows the contact masked, changes it after a fresh sign-in, and tells the old address', async () => {
    await page.goto(`${t.issuer}/account`);
    const row = page.locator('#contacts tr[data-channel]');
    expect(await row.count()).toBe(1);
    const oldChannel = (await row.getAttribute('data-channel'))!;
    // taro.yamada@example.jp, masked (JSDA IV.1.(2)④).
    expect(await row.locator('td').first().textContent()).toBe('t***@e******.jp');

    // A sign-in older than 5 minutes is not enough to change where we notify.
    await t.hub.db.query(
      `UPDATE oidc_payloads SET payload = jsonb_set(payload, '{loginTs}', to_jsonb((payload ->> 'loginTs')::bigint - 3600))
       WHERE model = 'Session' AND payload ->> 'accountId' = $1`,
      [customerId],
    );
    await row.locator('input[name="address"]').fill('hanako@example.com');
    await row.locator('button', { hasText: '変更' }).click();
    await page.waitForSelector('#error-description');
    expect(await page.textContent('#error-description')).toContain(
      '直前（5分以内）のパスキーでのログインが必要です',
    );
    expect(await outbox('contact_changed')).toEqual([]);

    // Signed in again with the passkey, the change goes through.
    await page.goto(`${t.issuer}/account`);
    await page.click('#sign-out');
    await page.waitForSelector('#passkey-login');
    await page.click('#passkey-login');
    await page.waitForSelector('#contacts');
    await page.locator('#contacts tr[data-channel] input[name="address"]').fill('hanako@example.com');
    await submit(page.locator('#contacts tr[data-channel] button', { hasText: '変更' }));
    await page.waitForSelector('#contacts');
    const now = page.locator('#contacts tr[data-channel]');
    expect(await now.count()).toBe(1);
    expect(await now.getAttribute('data-channel')).not.toBe(oldChannel);
    expect(await now.locator('td').first().textContent()).toBe('h***@e******.com');
    // Told at the old address as well as the new one.
    expect(await outbox('contact_changed')).toEqual(
      expect.arrayContaining([oldChannel, await now.getAttribute('data-channel')]),
    );
    expect(await page.textContent('#history')).toContain('通知先を変更');
  });

  it('keeps security notifications on, switches sign-in notifications off, and that takes effect', async () => {
    const box = (kind: string) => page.locator(`#notification-settings input[name="kind"][value="${kind}"]`);
    // Security-critical kinds cannot be switched off; every kind has a Japanese label.
    expect(await box('contact_changed').isDisabled()).toBe(true);
    expect(await box('contact_changed').isChecked()).toBe(true);
    const labels = await page.locator('#notification-settings li').allTextContents();
    for (const label of labels) expect(label).not.toMatch(/[a-z]+_[a-z]+/);
    expect(await box('login').isChecked()).toBe(true);
    await box('login').uncheck();
    await page.selectOption('#notification-settings select[name="language"]', 'en');
    await submit(page.locator('#notification-settings button[type="submit"]'));
    expect(await box('login').isChecked()).toBe(false);
    expect(await page.inputValue('#notification-settings select[name="language"]')).toBe('en');
    expect(await page.textContent('#history')).toContain('通知設定を変更');

    // A sign-in from this known device now queues no sign-in notification.
    const before = (await outbox('login')).length;
    await page.click('#sign-out');
    await page.click('#passkey-login');
    await page.waitForSelector('#contacts');
    expect((await outbox('login')).length).toBe(before);
  });

  it('switches third-party access off (the app is refused at once) and disconnects the app', async () => {
    const access = page.locator('#channels tr[data-channel-name="aggregator_access"]');
    expect(await access.locator('.state').textContent()).toBe('利用中');
    await submit(access.locator('button'));
    expect(await access.locator('.state').textContent()).toBe('停止中');
    expect(await read()).toBe(403);
    expect(await outbox('channel_changed')).toHaveLength(1);

    // The app holds two consents (the authenticator-app sign-in above made the other): this one goes.
    expect(await page.locator('#consents tbody tr').count()).toBe(2);
    await page.locator(`tr[data-grant="${grantId}"] button.revoke`).click();
    await page.waitForURL(/\/account\?notice=/);
    expect(await page.textContent('.notice')).toContain('連携を解除しました');
    expect(await page.locator(`tr[data-grant="${grantId}"]`).count()).toBe(0);
    expect(await page.locator('#consents tbody tr').count()).toBe(1);
    expect(await read()).toBe(401);
  });

  it('disables a passkey whose signature counter goes backwards (a cloned authenticator) and says so', async () => {
    // A copy of the passkey as it is now, then two more sign-ins move the original's counter on.
    const { credentials } = await authenticator.cdp.send('WebAuthn.getCredentials', {
      authenticatorId: authenticator.authenticatorId,
    });
    for (let i = 0; i < 2; i++) {
      await page.click('#sign-out');
      await page.click('#passkey-login');
      await page.waitForSelector('#passkeys');
    }
    expect((await authenticator.credentials())[0]!.signCount).toBeGreaterThan(credentials[0]!.signCount);
    // Not moments after the owner's own use (that would be two crossed ceremonies, not a clone).
    await t.hub.db.query(
      "UPDATE passkeys SET last_used_at = now() - interval '1 minute' WHERE customer_id = $1",
      [customerId],
    );

    const clone = await browser.newContext({ locale: 'ja-JP' });
    const clonePage = await clone.newPage();
    const cloned = await addVirtualAuthenticator(clone, clonePage);
    await cloned.cdp.send('WebAuthn.addCredential', {
      authenticatorId: cloned.authenticatorId,
      credential: credentials[0]!,
    });
    await clonePage.goto(`${t.issuer}/account`);
    await clonePage.click('#passkey-login');
    await clonePage.waitForSelector('#error:not([hidden])');
    expect(await clonePage.textContent('#error')).toBe(
      'このパスキーは受け付けられません。当社までご連絡ください。',
    );
    await clone.close();

    // The original is now disabled too, until the customer re-proves their identity.
    await page.click('#sign-out');
    await page.click('#passkey-login');
    await page.waitForSelector('#error:not([hidden])');
    expect(await page.textContent('#error')).toContain('このパスキーは保護のため停止されています');
    const audit = await t.hub.db.query(
      "SELECT 1 FROM audit_events WHERE type = 'authn.passkey.clone_suspected' AND customer_id = $1",
      [customerId],
    );
    expect(audit.rowCount).toBe(1);
    await context.close();
  });
});
