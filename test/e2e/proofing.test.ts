/**
 * Identity proofing in a real browser (Chromium, virtual authenticators), in Japanese:
 * - first enrollment proved by eKYC: the proofing page's form, the second OpenID provider
 *   (test/support/ekycProvider.ts), back to the enrollment page without a code, a passkey, sign-in;
 *   a provider answer that does not match is refused on a Japanese error page;
 * - recovery after losing every passkey, proved by a JPKI-style signature: the page shows the data
 *   to sign; the test signs it as the customer's card reader app would (test CA in
 *   test/support/certificates.ts) and pastes certificate and signature. A revoked card (its CA's CRL
 *   on a loopback distribution point) is refused with the reason on the page; a valid one leads to
 *   a new passkey on a new authenticator; the lost device's session is gone and a copy of its
 *   passkey is refused;
 * - an account locked by failures still admits the device used before, refuses others with the
 *   reason and a link, and is unlocked on the page by re-proofing;
 * - an app asking for acr `phrh` gets unmet_authentication_requirements after a passkey without
 *   verified attestation (`phr`; the attestation policy is `none` here), and no alternative MFA.
 */
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { accountLock } from '../../src/risk/index.ts';
import { addVirtualAuthenticator, launchBrowser, type VirtualAuthenticator } from '../support/browser.ts';
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
import { type EkycProvider, jpAmlClaims, startEkycProvider } from '../support/ekycProvider.ts';
import { freePort, startTestHub, type TestHub } from '../support/hub.ts';
import { demoRp, startAuthorization } from '../support/rp.ts';

let t: TestHub;
let op: EkycProvider;
let crls: CrlServer;
let browser: Browser;
let signingCa: TestCert;
let card: TestCert;
let revokedCard: TestCert;

beforeAll(async () => {
  crls = await startCrlServer();
  const root = await createTestCa('CN=Test JPKI Root, O=Test J-LIS, C=JP');
  signingCa = await issueCertificate(root, {
    subject: 'CN=Test JPKI Signing CA, O=Test J-LIS, C=JP',
    ca: true,
  });
  const cardOf = () =>
    issueCertificate(signingCa, {
      subject: 'CN=20261126101500123456789A, L=千代田区, L=東京都, C=JP',
      // ECDSA keeps start-up short; RSA cards: test/integration/proofing-jpki.test.ts.
      keyUsage: KeyUsage.digitalSignature | KeyUsage.nonRepudiation,
      crlUrls: [crls.url('signing-ca.crl')],
      // Name and birth date (昭和, 1980-04-01) where J-LIS puts them, as the hub reads them.
      jpki: { name: '山田　太郎', birthDate: '319800401' },
    });
  card = await cardOf();
  revokedCard = await cardOf();
  crls.set('signing-ca.crl', await issueCrl(signingCa, { revoked: [revokedCard] }));
  const base = path.join(process.env.TMPDIR ?? '/tmp', `kkh-e2e-jpki-${process.pid}-${Date.now()}`);
  writeFileSync(`${base}.pem`, root.certPem);
  writeFileSync(`${base}.crl`, await issueCrl(root));

  const port = await freePort();
  const issuer = `https://localhost:${port}`;
  op = await startEkycProvider({ redirectUri: `${issuer}/proofing/ekyc/callback` });
  t = await startTestHub({
    port,
    issuer,
    proofing: {
      ekyc: { issuer: op.issuer, clientId: op.clientId, clientSecret: op.clientSecret, caFile: op.caPath },
      jpki: { trustAnchorsFile: `${base}.pem`, revocation: { crlFiles: [`${base}.crl`] } },
    },
  });
  browser = await launchBrowser(t.dataDir, [op.certPem]);
});
afterAll(async () => {
  await browser?.close();
  await t?.close();
  await op?.close();
  await crls?.close();
});

/** A device: a browser profile with its own platform authenticator. */
async function device(): Promise<{
  context: BrowserContext;
  page: Page;
  authenticator: VirtualAuthenticator;
}> {
  const context = await browser.newContext({ locale: 'ja-JP' });
  const page = await context.newPage();
  return { context, page, authenticator: await addVirtualAuthenticator(context, page) };
}

/** Opens a new authorization of the demo app at its login page. */
async function openLogin(page: Page): Promise<void> {
  await page.goto((await startAuthorization(await demoRp(t))).url.href);
  await page.waitForSelector('#passkey-login');
}

/** Signs in with the passkey on the login page and allows the app; ends at the app's callback. */
async function signInAndConsent(page: Page): Promise<void> {
  await page.click('#passkey-login');
  await page.waitForSelector('#consent-form');
  await page.click('#approve');
  await page.waitForURL((u) => u.pathname === '/demo/callback');
}

/** Does on the JPKI section what the customer and their card reader app do; returns the challenge. */
async function signWithCard(page: Page, holder: TestCert): Promise<string> {
  await page.fill('#jpki-customerNumber', t.hub.demo!.customerNumber);
  await page.click('#jpki-start');
  await page.waitForSelector('#jpki-sign-step:not([hidden])');
  const challenge = (await page.textContent('#jpki-challenge'))!;
  expect(challenge).toMatch(/^[A-Za-z0-9_-]{43}$/);
  expect(await page.textContent('#jpki-expires')).toContain('このデータの有効期限');
  await page.fill('#jpki-certificate', holder.certPem);
  await page.fill('#jpki-chain', signingCa.certPem);
  await page.fill(
    '#jpki-signature',
    signWith(holder, Buffer.from(challenge, 'base64url')).toString('base64url'),
  );
  await page.click('#jpki-verify');
  return challenge;
}

const records = (method: string) =>
  t.hub.db
    .query<{ purpose: string; result: string; reason: string | null }>(
      'SELECT purpose, result, reason FROM proofing_records WHERE method = $1 ORDER BY created_at, id',
      [method],
    )
    .then((r) => r.rows);

describe('identity proofing pages', () => {
  let oldDevice: Awaited<ReturnType<typeof device>>;
  let newDevice: Awaited<ReturnType<typeof device>>;

  it('enrolls the first passkey after eKYC, and refuses a provider answer that does not match', async () => {
    // Registered: 山田 太郎, born 1980-04-01. First a provider answer with another birth date.
    op.person = {
      sub: 'ekyc-e2e-1',
      verified_claims: jpAmlClaims({ family_name: '山田', given_name: '太郎', birthdate: '1981-04-01' }),
    };
    oldDevice = await device();
    const { page, authenticator } = oldDevice;
    await openLogin(page);
    await page.click('#enroll-link');
    await page.click('#proofing-link');
    expect(await page.textContent('h1')).toBe('本人確認');
    await page.fill('#ekyc-customerNumber', t.hub.demo!.customerNumber);
    await page.click('#ekyc-button');
    // The provider's callback sends the browser on to its interaction, where the answer is checked.
    await page.waitForURL((u) => u.pathname.endsWith('/proofing/ekyc/finish'));
    expect(await page.textContent('h1')).toBe('エラー');
    expect(await page.textContent('#error-description')).toContain('登録内容と一致しません');

    op.person = {
      sub: 'ekyc-e2e-1',
      verified_claims: jpAmlClaims({ family_name: '山田', given_name: '太郎', birthdate: '1980-04-01' }),
    };
    await openLogin(page);
    await page.click('#enroll-link');
    await page.click('#proofing-link');
    await page.fill('#ekyc-customerNumber', t.hub.demo!.customerNumber);
    await page.click('#ekyc-button');
    await page.waitForURL(/\/enroll\?proofing=/);
    // Proven: no code to type, only the passkey.
    expect(await page.textContent('main')).toContain('本人確認が完了しました');
    expect(await page.locator('#ticket').count()).toBe(0);
    await page.fill('#passkeyName', '古いスマートフォン');
    await page.click('#enroll-button');
    await page.waitForURL(/enrolled=1/);
    expect(await authenticator.credentials()).toHaveLength(1);
    await signInAndConsent(page);
    expect((await records('ekyc')).map((r) => [r.purpose, r.result, r.reason])).toEqual([
      ['enrollment', 'refused', 'mismatch:birthdate'],
      ['enrollment', 'verified', null],
    ]);
    // The device is signed in: its security page opens without another sign-in.
    await page.goto(`${t.issuer}/account`);
    expect(await page.textContent('h1')).toBe('セキュリティ設定');
  });

  it('recovers after losing every passkey with the card: a revoked card is refused, the old device is cut off', async () => {
    // The phone is lost; whoever finds it holds a copy of its passkey.
    const { credentials } = await oldDevice.authenticator.cdp.send('WebAuthn.getCredentials', {
      authenticatorId: oldDevice.authenticator.authenticatorId,
    });
    await oldDevice.authenticator.cdp.send('WebAuthn.removeVirtualAuthenticator', {
      authenticatorId: oldDevice.authenticator.authenticatorId,
    });

    newDevice = await device();
    const { page, authenticator } = newDevice;
    await openLogin(page);
    await page.click('#recovery-link');
    expect(await page.textContent('h1')).toBe('本人確認によるアカウントの復旧');

    // A card whose certificate its CA has revoked: refused, the reason on the page, data to sign spent.
    await signWithCard(page, revokedCard);
    await page.waitForSelector('#error:not([hidden])');
    expect(await page.textContent('#error')).toContain('この電子証明書は失効しています');
    expect(await page.isHidden('#jpki-sign-step')).toBe(true);

    // The valid card: new data to sign, then the enrollment page for the new passkey.
    const first = await page.textContent('#jpki-challenge');
    const second = await signWithCard(page, card);
    expect(second).not.toBe(first);
    await page.waitForURL(/\/enroll\?proofing=/);
    await page.fill('#passkeyName', '新しいスマートフォン');
    await page.click('#enroll-button');
    await page.waitForURL(/enrolled=1/);
    expect(await authenticator.credentials()).toHaveLength(1);
    await signInAndConsent(page);
    expect((await records('jpki')).map((r) => [r.purpose, r.result, r.reason])).toEqual([
      ['recovery', 'refused', 'ERR_CERT_REVOKED'],
      ['recovery', 'verified', null],
    ]);

    // The lost device's session is gone.
    await oldDevice.page.goto(`${t.issuer}/account`);
    expect(await oldDevice.page.textContent('h1')).toBe('セキュリティ設定にログイン');
    await oldDevice.context.close();

    // The copy of the lost passkey, on the finder's browser, is refused.
    const finder = await device();
    await finder.authenticator.cdp.send('WebAuthn.addCredential', {
      authenticatorId: finder.authenticator.authenticatorId,
      credential: credentials[0]!,
    });
    await finder.page.goto(`${t.issuer}/account`);
    await finder.page.click('#passkey-login');
    await finder.page.waitForSelector('#error:not([hidden])');
    expect(await finder.page.textContent('#error')).toContain('このパスキーは保護のため停止されています');
    await finder.context.close();

    // The new device's security page: one usable passkey, the old one disabled, the recovery in the history.
    await page.goto(`${t.issuer}/account`);
    const rows = page.locator('#passkeys tbody tr');
    expect(await rows.count()).toBe(2);
    expect(await page.textContent('#passkeys')).toContain('保護のため停止中');
    expect(await page.textContent('#history')).toContain('本人確認によりアカウントを復旧');
  });

  it('shows a locked account on the login page and unlocks it by re-proofing with the card', async () => {
    // As the throttle leaves an account after consecutive failures (test/integration/throttle.test.ts).
    await t.hub.db.query(
      `INSERT INTO account_lockouts (customer_id, consecutive_failures, locked_at, locked_until)
       VALUES ($1, 10, now(), now() + interval '1 day')
       ON CONFLICT (customer_id) DO UPDATE SET locked_until = EXCLUDED.locked_until, consecutive_failures = 10`,
      [t.hub.demo!.customerId],
    );
    // The owner's phone, which signed in before, still gets in (FSA comment 83: the lock must not
    // let whoever hammered the account keep its owner out).
    const { context, page } = newDevice;
    await page.goto(`${t.issuer}/account`);
    await page.click('#sign-out');
    await page.waitForSelector('#passkey-login');
    await openLogin(page);
    await signInAndConsent(page);

    // The same phone after its browser forgot this site (cookies cleared): an unknown device, refused.
    await context.clearCookies();
    await openLogin(page);
    await page.click('#passkey-login');
    await page.waitForSelector('#error:not([hidden])');
    expect(await page.textContent('#error')).toContain(
      'ログインの失敗が続いたため、このアカウントはロックされています',
    );
    await page.click('#unlock-link');
    expect(await page.textContent('h1')).toBe('本人確認によるロック解除');
    // Unlocking registers nothing: no enrollment code offered.
    expect(await page.locator('#ticket-link').count()).toBe(0);
    await signWithCard(page, card);
    await page.waitForURL(/\?unlocked=1$/);
    expect(await page.textContent('#unlocked')).toContain('ロックを解除しました');
    expect((await accountLock(t.hub.db, t.hub.demo!.customerId)).locked).toBe(false);
    await signInAndConsent(page);
    const unlocked = await t.hub.db.query(
      "SELECT 1 FROM audit_events WHERE type = 'risk.account.unlocked' AND customer_id = $1",
      [t.hub.demo!.customerId],
    );
    expect(unlocked.rowCount).toBe(1);
  });

  it('ends with unmet_authentication_requirements when the app demands phrh from an unattested passkey', async () => {
    const { context, page } = newDevice;
    await page.goto(`${t.issuer}/account`);
    await page.click('#sign-out');
    await page.waitForSelector('#passkey-login');
    await page.goto((await startAuthorization(await demoRp(t), 'openid', { acr_values: 'phrh' })).url.href);
    await page.waitForSelector('#passkey-login');
    // No alternative (authenticator app) offered: it could not reach what the app asks for.
    expect(await page.locator('#alternative-link').count()).toBe(0);
    await page.click('#passkey-login');
    await page.waitForURL((u) => u.pathname === '/demo/callback');
    expect(new URL(page.url()).searchParams.get('error')).toBe('unmet_authentication_requirements');
    await context.close();
  });
});
