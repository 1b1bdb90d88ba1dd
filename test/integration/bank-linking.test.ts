/**
 * Bank linking end to end: three real OpenID providers play banks of different strengths (passkey
 * with PAR and private_key_jwt, OTP and password-only with client secrets), the customer signs in at
 * the hub with a passkey and links over HTTP, and the withdrawal-strength policy decides every row of
 * create_sweep_link. Then the callback's defences, unlinking, and the institution API.
 */

import { generateKeyPairSync } from 'node:crypto';
import * as client from 'openid-client';
import { Agent, fetch as undiciFetch } from 'undici';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { completeLogin } from '../../conformance/lib/login.ts';
import { createUserAgent, type UserAgent } from '../../conformance/lib/userAgent.ts';
import { institutionResource } from '../../src/api/index.ts';
import { issueEnrollmentTicket } from '../../src/authn/index.ts';
import type { Db } from '../../src/db/index.ts';
import { DEMO_INSTITUTION_ID } from '../../src/demo/seed.ts';
import { encryptAtRest } from '../../src/keys/index.ts';
import {
  applySweepSuspensions,
  changeLimit,
  decide,
  decideSweepPull,
  deleteExpiredLinkAttempts,
  LinkError,
  listBankLinks,
  loadPolicy,
  recordSweep,
  reportSweepDecision,
  setBankLinkSuspended,
  sweepPullFacts,
} from '../../src/linking/index.ts';
import { addEmailChannel } from '../../src/notify/index.ts';
import {
  accountLock,
  clearAfterReproofing,
  clearPeerLevels,
  effectiveRiskLevel,
  riskEngineFor,
  unlockAccount,
} from '../../src/risk/index.ts';
import { applyPeerRiskActions } from '../../src/risk/peerActions.ts';
import { enrollDemoCustomer } from '../support/customer.ts';
import { startTestHub, type TestHub } from '../support/hub.ts';
import { registerClient, tokenFor } from '../support/institution.ts';
import { type OpenApiValidator, openApiValidator } from '../support/openapi.ts';
import { createEmulator, type PasskeyEmulator } from '../support/passkeyEmulator.ts';
import { demoRp, startAuthorization } from '../support/rp.ts';
import { startUpstreamOp, type UpstreamOp } from '../support/upstreamOp.ts';

const BANK_INSTITUTION = 'a-bank';
const SECRET = 'otp-bank-client-secret-0123456789';

let t: TestHub;
let device: PasskeyEmulator;
let passkeyBank: UpstreamOp;
let otpBank: UpstreamOp;
let passwordBank: UpstreamOp;
/** Signs its ID tokens with HS256 (the client secret), which its discovery advertises. */
let hs256Bank: UpstreamOp;
/** Signs ES256 ID tokens with a key its jwks_uri never publishes (what a forged token looks like). */
let forgedBank: UpstreamOp;
let customerId: string;
let accountId: string;
/** Access tokens the passkey bank issued: their type and DPoP binding. */
const issued: Array<{ tokenType: string | undefined; jkt: string | undefined }> = [];
/** fetch that trusts the hub's CA and every bank's. */
let browserFetch: typeof globalThis.fetch;

const YAMADA = {
  name: '山田 太郎',
  'name#ja-Kana-JP': 'ﾔﾏﾀﾞ ﾀﾛｳ',
  bank_account: { branch_code: '123', account_type: '1', account_number: '7654321' },
};

beforeAll(async () => {
  [passkeyBank, otpBank, passwordBank, hs256Bank, forgedBank] = await Promise.all([
    startUpstreamOp({
      claims: YAMADA,
      login: { acr: 'urn:a-bank:loa:transfer-2', amr: ['hwk', 'user'] },
      requirePar: true,
      // A FAPI bank: signed request objects only, and (below) DPoP-bound tokens only.
      requireSignedRequestObject: true,
      profileClaims: ['bank_account'],
    }),
    startUpstreamOp({
      // The bank knows only the kana, in hiragana with an ideographic space.
      claims: {
        'family_name#ja-Kana-JP': 'やまだ',
        'given_name#ja-Kana-JP': 'たろう',
        bank_account: '0001112',
      },
      login: { amr: ['pwd', 'otp'] },
      profileClaims: ['bank_account'],
    }),
    startUpstreamOp({ claims: { name: '山田太郎' }, login: { amr: ['pwd'] } }),
    startUpstreamOp({ claims: YAMADA, login: { amr: ['hwk', 'user'] }, idTokenAlg: 'HS256' }),
    startUpstreamOp({ claims: YAMADA, login: { amr: ['hwk', 'user'] } }),
  ]);
  const otherKey = generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ format: 'jwk' });
  forgedBank.publishedJwks = { keys: [{ ...otherKey, kid: 'upstream-es256', alg: 'ES256', use: 'sig' }] };
  t = await startTestHub({
    // No consumers of peers' actions in the background: the tests run them (a pending row stays pending
    // until they do, whatever the time an HTTP flow takes).
    signals: { enabled: false },
    linking: {
      // The customer's own daily sweep limit above the links' caps, so that the caps' rows decide; the
      // limit's own rows are tested at the end with lowered limits.
      defaultLimits: { withdrawal_daily: 3_000_000, sweep_daily: 5_000_000 },
      banks: [
        {
          id: 'a-bank',
          name: { ja: 'あおぞら銀行', en: 'A Bank' },
          institutionId: BANK_INSTITUTION,
          issuer: passkeyBank.issuer,
          clientId: 'kakehashi',
          acrStrength: { 'urn:a-bank:loa:transfer-2': 'phishing_resistant' },
          caFile: passkeyBank.caPath,
        },
        // Client-secret banks.
        ...(
          [
            ['otp-bank', 'ワンタイム銀行', 'OTP Bank', otpBank],
            ['pw-bank', 'パスワード銀行', 'Password Bank', passwordBank],
            ['hs256-bank', '共通鍵銀行', 'HS256 Bank', hs256Bank],
            ['forged-bank', '偽署名銀行', 'Forged Bank', forgedBank],
          ] as const
        ).map(([id, ja, en, op]) => ({
          id,
          name: { ja, en },
          issuer: op.issuer,
          clientId: 'kakehashi',
          auth: { method: 'client_secret' as const, secret: SECRET },
          caFile: op.caPath,
        })),
        // Nothing listens there.
        {
          id: 'down-bank',
          name: { ja: '停止中銀行', en: 'Down Bank' },
          issuer: 'https://localhost:1',
          clientId: 'x',
        },
      ],
    },
  });
  passkeyBank.provider.on('access_token.saved', (token) => {
    issued.push({ tokenType: token.tokenType, jkt: token.jkt });
  });
  // Each bank registers the hub's redirect URI for that bank (mix-up defence).
  const redirect = (bankId: string) => `${t.issuer}/account/links/callback/${bankId}`;
  const jwks = await (await t.fetch(`${t.issuer}/federation/jwks.json`)).json();
  await passkeyBank.addClient({
    client_id: 'kakehashi',
    redirect_uris: [redirect('a-bank')],
    token_endpoint_auth_method: 'private_key_jwt',
    token_endpoint_auth_signing_alg: 'ES256',
    id_token_signed_response_alg: 'ES256',
    request_object_signing_alg: 'ES256',
    dpop_bound_access_tokens: true,
    jwks,
  });
  for (const [bankId, bank, alg] of [
    ['otp-bank', otpBank, 'ES256'],
    ['pw-bank', passwordBank, 'ES256'],
    ['hs256-bank', hs256Bank, 'HS256'],
    ['forged-bank', forgedBank, 'ES256'],
  ] as const)
    await bank.addClient({
      client_id: 'kakehashi',
      client_secret: SECRET,
      redirect_uris: [redirect(bankId)],
      token_endpoint_auth_method: 'client_secret_basic',
      id_token_signed_response_alg: alg,
    });
  const dispatcher = new Agent({
    connect: {
      ca: [t.caPem, passkeyBank.caPem, otpBank.caPem, passwordBank.caPem, hs256Bank.caPem, forgedBank.caPem],
    },
  });
  browserFetch = ((url: string | URL, init?: RequestInit) =>
    undiciFetch(url, { ...(init as object), dispatcher })) as unknown as typeof globalThis.fetch;

  device = await enrollDemoCustomer(t);
  customerId = t.hub.demo!.customerId;
  accountId = (
    await t.hub.db.query<{ id: string }>(
      "SELECT id FROM accounts WHERE customer_id = $1 AND tax_category = 'specific'",
      [customerId],
    )
  ).rows[0]!.id;
  await t.hub.db.query(
    "INSERT INTO institutions (id, kind, name_ja, name_en) VALUES ($1, 'bank', 'あおぞら銀行', 'A Bank'), ('other-inst', 'brokerage', 'ほか証券', 'Other')",
    [BANK_INSTITUTION],
  );
  await t.hub.db.transaction((tx) =>
    addEmailChannel(tx, t.hub.authn.kek!, { customerId, address: 'taro@example.jp', actor: 'operator:test' }),
  );
});
afterAll(async () => {
  await t?.close();
  await Promise.all([passkeyBank, otpBank, passwordBank, hs256Bank, forgedBank].map((b) => b?.close()));
});

async function signedIn(fetch = browserFetch): Promise<{ ua: UserAgent; csrf: string }> {
  const ua = createUserAgent({ fetch });
  await ua.get(`${t.issuer}/account`);
  const options = await ua.postJson(`${t.issuer}/account/login/options`, {});
  const verify = await ua.postJson(
    `${t.issuer}/account/login/verify`,
    device.authenticate(options.json(), new URL(t.issuer).origin),
  );
  expect(verify.status).toBe(200);
  const page = await ua.get(`${t.issuer}/account/links`);
  expect(page.status).toBe(200);
  const csrf = /name="csrf" value="([^"]+)"/.exec(page.text)?.[1];
  expect(csrf).toBeTruthy();
  return { ua, csrf: csrf! };
}

/** Starts a link and goes through the bank; returns the callback URL the bank sent the browser to. */
async function throughBank(ua: UserAgent, csrf: string, bankId: string): Promise<URL> {
  const start = await ua.postForm(`${t.issuer}/account/links/start`, { csrf, bankId, accountId });
  expect(start.status).toBe(303);
  const { stoppedAt, response } = await ua.follow(start.location!, {
    stopAt: (u) => u.origin === new URL(t.issuer).origin && u.pathname.startsWith('/account/links/callback'),
  });
  expect(stoppedAt, response.text.slice(0, 300)).toBeDefined();
  return stoppedAt!;
}

async function linkAt(bankId: string, session?: { ua: UserAgent; csrf: string }) {
  const { ua, csrf } = session ?? (await signedIn());
  const res = await ua.get(await throughBank(ua, csrf, bankId));
  expect(res.status).toBe(200);
  const result = /data-result="([^"]+)"(?: data-reason="([^"]+)")?/.exec(res.text);
  return { res, ua, result: result?.[1], reason: result?.[2] };
}

const liveLinks = async () =>
  (await listBankLinks(t.hub.db, customerId)).filter((l) => l.status !== 'removed');
const outbox = async (event: string) =>
  (
    await t.hub.db.query<{ data: Record<string, unknown> }>(
      "SELECT data FROM notify_outbox WHERE customer_id = $1 AND kind = 'bank_link' AND data ->> 'event' = $2 ORDER BY id",
      [customerId, event],
    )
  ).rows.map((r) => r.data);
const events = async (institution: string, type: string) =>
  (
    await t.hub.db.query<{ data: Record<string, unknown>; link_id: string | null }>(
      'SELECT data, link_id FROM institution_events WHERE institution_id = $1 AND type = $2 ORDER BY id',
      [institution, type],
    )
  ).rows;
const decisions = async () =>
  (
    await t.hub.db.query<{ type: string; data: { decidedBy: string[]; subject: Record<string, unknown> } }>(
      "SELECT type, data FROM audit_events WHERE type LIKE 'policy.create_sweep_link.%' ORDER BY id",
    )
  ).rows;

/** The customer's credential and contact changes move ten days back: sweeps are no longer paused. */
async function credentialChangesTenDaysAgo() {
  await t.hub.db.query("UPDATE passkeys SET created_at = now() - interval '10 days' WHERE customer_id = $1", [
    customerId,
  ]);
  await t.hub.db.query(
    "UPDATE notify_channels SET created_at = now() - interval '10 days' WHERE customer_id = $1",
    [customerId],
  );
  await t.hub.db.query(
    "UPDATE audit_events SET at = now() - interval '10 days' WHERE customer_id = $1 AND at > now() - interval '10 days'",
    [customerId],
  );
}

async function removeAll() {
  await t.hub.db.query(
    "UPDATE bank_links SET status = 'removed', removed_at = now() WHERE customer_id = $1",
    [customerId],
  );
}

describe('create_sweep_link, every policy row', () => {
  it('links a passkey bank (PAR, JAR, DPoP, private_key_jwt): full default cap, everyone told', async () => {
    const { result, res } = await linkAt('a-bank');
    expect(result).toBe('linked');
    expect(res.text).not.toContain('id="policy-notice"');
    const [link] = await liveLinks();
    expect(link).toMatchObject({
      bankId: 'a-bank',
      bankStrength: 'phishing_resistant',
      capAmount: 1_000_000,
      bankAccountMasked: '123 普通 ****321',
      status: 'active',
      decidedBy: ['link.allow'],
      bankInstitutionId: BANK_INSTITUTION,
    });
    expect((await decisions()).at(-1)).toMatchObject({
      type: 'policy.create_sweep_link.allow',
      data: { decidedBy: ['link.allow'] },
    });
    // The bank requires a signed request object at PAR and DPoP-bound tokens: the hub used both, and
    // the token the bank issued is bound to the hub's DPoP key.
    expect((await decisions()).at(-1)!.data.subject.bankProtections).toEqual({
      par: true,
      jar: true,
      dpop: true,
    });
    expect(issued.at(-1)).toMatchObject({ tokenType: 'DPoP', jkt: expect.any(String) });
    expect(await outbox('linked')).toEqual([
      { event: 'linked', bankName: 'あおぞら銀行', accountMasked: '123 普通 ****321', capAmount: 1_000_000 },
    ]);
    const brokerage = await events(DEMO_INSTITUTION_ID, 'link.created');
    expect(brokerage).toHaveLength(1);
    expect(brokerage[0]!.data).toMatchObject({ customerNumber: t.hub.demo!.customerNumber, accountId });
    const bank = await events(BANK_INSTITUTION, 'link.created');
    expect(bank[0]!.data).toMatchObject({ subject: passkeyBank.account.sub });
    expect(bank[0]!.data).not.toHaveProperty('customerNumber');
    // The page lists it; linking the same account again makes no second link.
    const again = await linkAt('a-bank');
    expect(again.result).toBe('exists');
    expect(await liveLinks()).toHaveLength(1);
    await removeAll();
  });

  it('links an OTP bank with the reduced cap and the notice, matching kana despite hiragana and spaces', async () => {
    const { result, res } = await linkAt('otp-bank');
    // A client-secret bank: no request object (nothing to sign it with), DPoP since it offers it.
    expect((await decisions()).at(-1)!.data.subject.bankProtections).toEqual({
      par: true,
      jar: false,
      dpop: true,
    });
    expect(result).toBe('linked');
    expect(res.text).toContain('id="policy-notice"');
    expect(res.text).toContain('100,000');
    const [link] = await liveLinks();
    expect(link).toMatchObject({ bankStrength: 'otp', capAmount: 100_000, decidedBy: ['link.bank-otp'] });
    expect((await outbox('linked')).at(-1)).toMatchObject({ capAmount: 100_000, reducedCap: true });
    await removeAll();
  });

  it('refuses a password-only bank, and one that asserts nothing it recognises', async () => {
    const pw = await linkAt('pw-bank');
    expect([pw.result, pw.reason]).toEqual(['refused', 'bank_strength']);
    passwordBank.login.amr = undefined;
    try {
      const unknown = await linkAt('pw-bank');
      expect([unknown.result, unknown.reason]).toEqual(['refused', 'bank_strength']);
    } finally {
      passwordBank.login.amr = ['pwd'];
    }
    expect(await liveLinks()).toHaveLength(0);
    expect((await decisions()).slice(-2).map((d) => d.data.decidedBy)).toEqual([
      ['link.bank-password-only'],
      ['link.bank-password-only'],
    ]);
    expect((await outbox('refused')).slice(-2)).toEqual([
      { event: 'refused', bankName: 'パスワード銀行', reason: 'bank_strength' },
      { event: 'refused', bankName: 'パスワード銀行', reason: 'bank_strength' },
    ]);
    expect((await events(DEMO_INSTITUTION_ID, 'link.refused')).length).toBeGreaterThanOrEqual(2);
  });

  it('refuses when the holder name differs, even at a passkey bank', async () => {
    passkeyBank.account.claims = { ...YAMADA, name: '佐藤 花子', 'name#ja-Kana-JP': 'ｻﾄｳ ﾊﾅｺ' };
    try {
      const { result, reason } = await linkAt('a-bank');
      expect([result, reason]).toEqual(['refused', 'name_mismatch']);
    } finally {
      passkeyBank.account.claims = { ...YAMADA };
    }
    expect(await liveLinks()).toHaveLength(0);
    // The bank's institution hears of the refusal with its own subject.
    expect((await events(BANK_INSTITUTION, 'link.refused')).at(-1)!.data).toMatchObject({
      reason: 'name_mismatch',
      subject: passkeyBank.account.sub,
    });
  });

  it('refuses for a frozen customer', async () => {
    const session = await signedIn();
    await t.hub.db.query("UPDATE customers SET status = 'frozen' WHERE id = $1", [customerId]);
    try {
      const { result, reason } = await linkAt('a-bank', session);
      expect([result, reason]).toEqual(['refused', 'frozen']);
    } finally {
      await t.hub.db.query("UPDATE customers SET status = 'active' WHERE id = $1", [customerId]);
    }
  });

  it('asks for a passkey sign-in again when the hub session is not phishing-resistant', async () => {
    const session = await signedIn();
    await t.hub.db.query(
      `UPDATE oidc_payloads SET payload = jsonb_set(payload, '{acr}', '"otp"')
       WHERE model = 'Session' AND payload ->> 'accountId' = $1`,
      [customerId],
    );
    const { result, ua } = await linkAt('a-bank', session);
    expect(result).toBe('step_up');
    expect((await decisions()).at(-1)!.type).toBe('policy.create_sweep_link.step_up');
    expect(await liveLinks()).toHaveLength(0);
    // The sign-in ended: the security page asks for a passkey.
    expect((await ua.get(`${t.issuer}/account`)).text).toContain('id="passkey-login"');
  });

  it('asks for a passkey sign-in again when the hub sign-in is older than five minutes', async () => {
    const session = await signedIn();
    await t.hub.db.query(
      `UPDATE oidc_payloads SET payload = jsonb_set(payload, '{loginTs}', to_jsonb((payload ->> 'loginTs')::bigint - 301))
       WHERE model = 'Session' AND payload ->> 'accountId' = $1`,
      [customerId],
    );
    const { result } = await linkAt('a-bank', session);
    expect(result).toBe('step_up');
    expect((await decisions()).at(-1)!.data).toMatchObject({ decidedBy: ['link.brokerage-not-phr'] });
  });

  it('refuses (and tells) when the customer cancels at the bank', async () => {
    passkeyBank.decision = 'deny';
    try {
      const { result, reason } = await linkAt('a-bank');
      expect([result, reason]).toEqual(['refused', 'bank_error']);
    } finally {
      passkeyBank.decision = 'approve';
    }
    const failed = await t.hub.db.query<{ data: { code: string; oauthError: string } }>(
      "SELECT data FROM audit_events WHERE type = 'linking.link.bank_failed' ORDER BY id DESC LIMIT 1",
    );
    expect(failed.rows[0]!.data).toMatchObject({ code: 'ERR_BANK_DENIED', oauthError: 'access_denied' });
  });
});

describe('the callback', () => {
  it('refuses a tampered or missing state, another session and a replay, and never 500s', async () => {
    const { ua, csrf } = await signedIn();
    const callback = await throughBank(ua, csrf, 'a-bank');
    const tampered = new URL(callback);
    tampered.searchParams.set('state', `${callback.searchParams.get('state')}x`);
    const bad = await ua.get(tampered);
    expect(bad.status).toBe(400);
    expect(bad.text).toContain('ERR_LINK_STATE');
    const none = new URL(callback);
    none.searchParams.delete('state');
    expect((await ua.get(none)).text).toContain('ERR_LINK_STATE');
    // The same customer signed in elsewhere cannot complete this browser's attempt.
    const other = await signedIn();
    const stolen = await other.ua.get(callback);
    expect(stolen.status).toBe(400);
    expect(stolen.text).toContain('ERR_LINK_SESSION');
    // Without any sign-in: 401, nothing consumed.
    const anonymous = await createUserAgent({ fetch: browserFetch }).get(callback);
    expect(anonymous.status).toBe(401);
    // The real answer still works once; a second use is a replay.
    const ok = await ua.get(callback);
    expect(ok.text).toContain('data-result="linked"');
    const replay = await ua.get(callback);
    expect(replay.status).toBe(400);
    expect(replay.text).toContain('ERR_LINK_REPLAY');
    expect(await liveLinks()).toHaveLength(1);
    await removeAll();
  });

  it('refuses an answer on another bank’s callback path and exchanges nothing (OAuth mix-up; security review)', async () => {
    const { ua, csrf } = await signedIn();
    const callback = await throughBank(ua, csrf, 'otp-bank');
    // Each bank has its own redirect URI, and the bank answered on this one's.
    expect(callback.pathname).toBe('/account/links/callback/otp-bank');
    expect(callback.searchParams.get('iss')).toBe(otpBank.issuer);
    const exchanged: string[] = [];
    const onToken = () => exchanged.push('otp-bank');
    otpBank.provider.on('grant.success', onToken);
    try {
      // The same answer delivered on another bank's path (what a mix-up makes of it), and on the
      // shared path of attempts started before per-bank paths: refused, nothing exchanged or spent.
      for (const path of ['/account/links/callback/a-bank', '/account/links/callback']) {
        const elsewhere = new URL(callback);
        elsewhere.pathname = path;
        const res = await ua.get(elsewhere);
        expect(res.status, path).toBe(400);
        expect(res.text).toContain('ERR_LINK_WRONG_BANK');
      }
      expect(exchanged).toEqual([]);
      const attempt = await t.hub.db.query<{ consumed_at: Date | null; redirect_uri: string }>(
        'SELECT consumed_at, redirect_uri FROM bank_link_attempts WHERE customer_id = $1 ORDER BY created_at DESC LIMIT 1',
        [customerId],
      );
      expect(attempt.rows[0]).toEqual({
        consumed_at: null,
        redirect_uri: `${t.issuer}/account/links/callback/otp-bank`,
      });
      const audited = await t.hub.db.query(
        "SELECT 1 FROM audit_events WHERE type = 'linking.callback.rejected' AND data ->> 'code' = 'ERR_LINK_WRONG_BANK'",
      );
      expect(audited.rowCount).toBe(2);
      expect(await liveLinks()).toHaveLength(0);
      // On its own bank's path the answer still completes the link, with one exchange.
      const ok = await ua.get(callback);
      expect(ok.text).toContain('data-result="linked"');
      expect(exchanged).toEqual(['otp-bank']);
    } finally {
      otpBank.provider.off('grant.success', onToken);
    }
    await removeAll();
  });

  it('takes the shared callback path only for an attempt started before per-bank paths', async () => {
    const { ua, csrf } = await signedIn();
    const callback = await throughBank(ua, csrf, 'a-bank');
    await t.hub.db.query(
      'UPDATE bank_link_attempts SET redirect_uri = NULL WHERE customer_id = $1 AND consumed_at IS NULL',
      [customerId],
    );
    // Its own path is now the wrong one; the shared path passes the hub's check and reaches the bank
    // (which refuses a redirect_uri its request did not name: this attempt did not start on it).
    expect((await ua.get(callback)).text).toContain('ERR_LINK_WRONG_BANK');
    const shared = new URL(callback);
    shared.pathname = '/account/links/callback';
    const res = await ua.get(shared);
    expect(res.status).toBe(200);
    expect(res.text).toContain('data-reason="bank_error"');
    expect(await liveLinks()).toHaveLength(0);
  });

  it('refuses an answer that comes after the attempt expired; expired attempts are swept later', async () => {
    const { ua, csrf } = await signedIn();
    const callback = await throughBank(ua, csrf, 'a-bank');
    await t.hub.db.query(
      "UPDATE bank_link_attempts SET expires_at = now() - interval '2 days' WHERE customer_id = $1 AND consumed_at IS NULL",
      [customerId],
    );
    const late = await ua.get(callback);
    expect(late.status).toBe(400);
    expect(late.text).toContain('ERR_LINK_EXPIRED');
    expect(await liveLinks()).toHaveLength(0);
    expect(await deleteExpiredLinkAttempts(t.hub.db)).toBeGreaterThanOrEqual(1);
    expect((await ua.get(callback)).text).toContain('ERR_LINK_STATE');
  });

  it('refuses an ID token whose nonce is not the one sent', async () => {
    const { ua, csrf } = await signedIn();
    const callback = await throughBank(ua, csrf, 'a-bank');
    // What the hub expects is sealed in the attempt; make it expect another nonce than the bank echoes.
    const attempt = (
      await t.hub.db.query<{ id: string }>(
        'SELECT id FROM bank_link_attempts WHERE customer_id = $1 ORDER BY created_at DESC LIMIT 1',
        [customerId],
      )
    ).rows[0]!;
    const verifier = client.randomPKCECodeVerifier();
    await t.hub.db.query('UPDATE bank_link_attempts SET secrets_enc = $2 WHERE id = $1', [
      attempt.id,
      encryptAtRest(
        t.hub.authn.kek!,
        JSON.stringify({ nonce: client.randomNonce(), codeVerifier: verifier }),
        attempt.id,
      ),
    ]);
    const res = await ua.get(callback);
    expect(res.status).toBe(200);
    expect(res.text).toContain('data-reason="bank_error"');
    expect(await liveLinks()).toHaveLength(0);
  });

  it('takes ID tokens only in the allowed algorithms, and only with a valid signature (security review)', async () => {
    // openid-client takes whatever alg the bank's discovery lists and checks no signature unless told:
    // an HS256 token (the client secret: anyone holding it) asserting a passkey linked at the full cap.
    const hs = await linkAt('hs256-bank');
    expect([hs.result, hs.reason]).toEqual(['refused', 'bank_error']);
    // An ES256 token whose signature no key of the bank's jwks_uri verifies was taken as well.
    const forged = await linkAt('forged-bank');
    expect([forged.result, forged.reason]).toEqual(['refused', 'bank_error']);
    expect(await liveLinks()).toHaveLength(0);
    const failed = await t.hub.db.query<{ data: { bankId: string; reason: string } }>(
      "SELECT data FROM audit_events WHERE type = 'linking.link.bank_failed' ORDER BY id DESC LIMIT 2",
    );
    expect(failed.rows.map((r) => [r.data.bankId, r.data.reason])).toEqual([
      ['forged-bank', expect.stringMatching(/signature/)],
      ['hs256-bank', expect.stringMatching(/alg/)],
    ]);
  });

  it('asks the bank for a sign-in as fresh as the hub’s own: an old bank session does not link (security review)', async () => {
    // The customer opened a session at the bank an hour ago; without max_age the bank answered
    // from it (one sign-in, auth_time an hour old) and the link was made on that.
    passkeyBank.login.authTime = Math.floor(Date.now() / 1000) - 3600;
    const before = passkeyBank.signIns;
    const { result } = await linkAt('a-bank');
    expect(passkeyBank.signIns - before).toBe(2);
    expect(result).toBe('linked');
    const [link] = await liveLinks();
    expect(link?.bankId).toBe('a-bank');
    await removeAll();
  });

  it('an acr the bank’s configuration does not map never counts as phishing-resistant (security review)', async () => {
    // `phr` from a bank that maps no acr values, with a password sign-in: the acr alone said passkey.
    passwordBank.login = { acr: 'phr', amr: ['pwd'] };
    try {
      const pw = await linkAt('pw-bank');
      expect([pw.result, pw.reason]).toEqual(['refused', 'bank_strength']);
    } finally {
      passwordBank.login = { amr: ['pwd'] };
    }
    expect(await liveLinks()).toHaveLength(0);
  });

  it('refuses a start for an account that is not the customer’s or an unknown bank', async () => {
    const { ua, csrf } = await signedIn();
    // The security page leads here.
    expect((await ua.get(`${t.issuer}/account`)).text).toContain('href="/account/links" id="bank-links"');
    const wrongAccount = await ua.postForm(`${t.issuer}/account/links/start`, {
      csrf,
      bankId: 'a-bank',
      accountId: 'acc_nope',
    });
    expect(wrongAccount.status).toBe(400);
    expect(wrongAccount.text).toContain('ERR_LINK_ACCOUNT');
    const wrongBank = await ua.postForm(`${t.issuer}/account/links/start`, { csrf, bankId: 'x', accountId });
    expect(wrongBank.text).toContain('ERR_LINK_BANK');
    const down = await ua.postForm(`${t.issuer}/account/links/start`, {
      csrf,
      bankId: 'down-bank',
      accountId,
    });
    expect(down.status).toBe(503);
    expect(down.text).toContain('ERR_LINK_BANK_UNAVAILABLE');
    const forged = await ua.postForm(`${t.issuer}/account/links/start`, {
      csrf: 'x',
      bankId: 'a-bank',
      accountId,
    });
    expect(forged.status).toBe(403);
  });
});

describe('unlinking, sweeps and the institution API', () => {
  let linkId: string;
  type Caller = {
    // biome-ignore lint/suspicious/noExplicitAny: the test reads the JSON envelope field by field
    call(method: string, path: string, body?: unknown): Promise<{ status: number; body: any }>;
  };
  const callers: Record<string, Caller> = {};

  async function institutionCaller(institutionId: string, scope = 'institution:links'): Promise<Caller> {
    const c = await registerClient(t, `links-${institutionId}-${scope.replace(/\W/g, '')}`, {
      scope,
      institution_id: institutionId,
    });
    const {
      config,
      dpop: DPoP,
      value,
    } = await tokenFor(t, c, {
      scope,
      resource: institutionResource(t.issuer),
    });
    const tokens = { access_token: value };
    return {
      async call(method, path, body) {
        // openid-client throws on a WWW-Authenticate challenge; the envelope is still in its response.
        const res = await client
          .fetchProtectedResource(
            config,
            tokens.access_token,
            new URL(`${t.issuer}${path}`),
            method,
            body === undefined ? undefined : JSON.stringify(body),
            new Headers(body === undefined ? {} : { 'content-type': 'application/json' }),
            { DPoP },
          )
          .catch((err: unknown) => {
            if (err instanceof client.WWWAuthenticateChallengeError) return err.response;
            throw err;
          });
        const text = await res.text();
        const parsed = text ? JSON.parse(text) : undefined;
        // Every answer is what the OpenAPI document says it is.
        oas.check(method, `${t.issuer}${path}`, res.status, parsed);
        return { status: res.status, body: parsed };
      },
    };
  }

  let oas: OpenApiValidator;

  beforeAll(async () => {
    oas = openApiValidator(
      (await (await t.fetch(`${t.issuer}/api/openapi.json`)).json()) as Record<string, unknown>,
    );
    await removeAll();
    expect((await linkAt('a-bank')).result).toBe('linked');
    linkId = (await liveLinks())[0]!.id;
    callers.brokerage = await institutionCaller(DEMO_INSTITUTION_ID);
    callers.bank = await institutionCaller(BANK_INSTITUTION);
    callers.other = await institutionCaller('other-inst');
    callers.ingestOnly = await institutionCaller(DEMO_INSTITUTION_ID, 'institution:ingest');
    callers.decisions = await institutionCaller(DEMO_INSTITUTION_ID, 'institution:decisions');
  });

  it('gives the decision endpoint its sweep_pull facts and counts allowed pulls against the cap', async () => {
    const policy = loadPolicy();
    const pull = async (amount: number, reference: string) => {
      const facts = await sweepPullFacts(t.hub.db, t.hub.config, {
        customerId,
        linkId,
        amount,
        bankApprovalBound: false,
      });
      const decision = await decide(t.hub.db, policy, 'sweep_pull', facts, {
        customerId,
        actor: 'client:test',
      });
      const { usedToday } = await reportSweepDecision(t.hub.db, t.hub.config, {
        customerId,
        linkId,
        amount,
        reference,
        decision,
      });
      return { facts, decision: decision.decision, decidedBy: decision.decidedBy, usedToday };
    };
    // The passkey was enrolled and the e-mail added moments ago: a credential change today pauses sweeps.
    const recent = await pull(600_000, 'buy-0');
    expect(recent.facts).toMatchObject({
      overDailyCap: false,
      linkSuspended: false,
      frozen: false,
      daysSinceCredentialChange: 0,
    });
    expect([recent.decision, recent.decidedBy, recent.usedToday]).toEqual([
      'deny',
      ['sweep.recent-credential-change'],
      0,
    ]);
    // Ten days later (the changes moved back), within the cap: allowed and counted once per reference.
    await credentialChangesTenDaysAgo();
    const allowed = await pull(600_000, 'buy-1');
    expect(allowed.facts.daysSinceCredentialChange).toBe(10);
    expect([allowed.decision, allowed.usedToday]).toEqual(['allow', 600_000]);
    // The same decision reported again (a retry) counts and tells nothing twice.
    const retry = await reportSweepDecision(t.hub.db, t.hub.config, {
      customerId,
      linkId,
      amount: 600_000,
      reference: 'buy-1',
      decision: { decision: 'allow', decidedBy: allowed.decidedBy },
    });
    expect(retry.usedToday).toBe(600_000);
    expect(await recordSweep(t.hub.db, { linkId, amount: 600_000, reference: 'buy-1' })).toEqual({
      recorded: false,
      usedToday: 600_000,
    });
    // Above the daily cap: the bank must approve this amount; nothing counted.
    const over = await pull(400_001, 'buy-2');
    expect([over.facts.overDailyCap, over.decision, over.usedToday]).toEqual([true, 'step_up', 600_000]);
    const notices = await t.hub.db.query<{ data: { outcome: string; amount: number } }>(
      "SELECT data FROM notify_outbox WHERE customer_id = $1 AND kind = 'sweep' ORDER BY id",
      [customerId],
    );
    expect(notices.rows.map((r) => [r.data.outcome, r.data.amount])).toEqual([
      ['refused', 600_000],
      ['allowed', 600_000],
      ['needs_bank_approval', 400_001],
    ]);
    expect((await events(BANK_INSTITUTION, 'sweep.allowed')).map((e) => e.data.reference)).toEqual(['buy-1']);
    expect(
      (await events(DEMO_INSTITUTION_ID, 'sweep.needs_bank_approval')).map((e) => e.data.amount),
    ).toEqual([400_001]);
    await expect(
      sweepPullFacts(t.hub.db, t.hub.config, {
        customerId: 'cus_other',
        linkId,
        amount: 1,
        bankApprovalBound: false,
      }),
    ).rejects.toBeInstanceOf(LinkError);
  });

  it('decides sweep pulls over HTTP for the link’s brokerage, once per reference', async () => {
    const path = '/api/institution/v1/decisions';
    const ask = (amount: number, reference: string, extra: Record<string, unknown> = {}) =>
      callers.decisions!.call('POST', path, { operation: 'sweep_pull', linkId, amount, reference, ...extra });
    // 600,000 of the 1,000,000 cap is used today (the test above).
    const ok = await ask(100_000, 'http-1');
    expect(ok.status).toBe(200);
    expect(ok.body).toMatchObject({ operation: 'sweep_pull', decision: 'allow' });
    expect((await ask(100_000, 'http-1')).body.error.code).toBe('sweep_reference_used');
    const over = await ask(400_000, 'http-2');
    expect(over.body).toMatchObject({ decision: 'step_up', decidedBy: ['sweep.over-cap'] });
    expect(over.body.obligations.stepUp).toMatchObject({ byBank: true });
    const bound = await ask(400_000, 'http-3', { bankApprovalBound: true });
    expect(bound.body.decision).toBe('allow');
    // Only the brokerage the link pays into asks: the bank and strangers see no such link.
    const bank = await institutionCaller(BANK_INSTITUTION, 'institution:decisions');
    expect(
      (await bank.call('POST', path, { operation: 'sweep_pull', linkId, amount: 1, reference: 'x' })).status,
    ).toBe(404);
    expect((await ask(0, 'http-4')).status).toBe(400);
  });

  it('decides, counts and reports a pull in one transaction: a failure after the decision leaves nothing', async () => {
    // A failure injected where the allowed pull is counted: after the decision's audit record.
    await t.hub.db.exec(`
      CREATE FUNCTION test_fail_sweep() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN RAISE EXCEPTION 'injected failure'; END $$;
      CREATE TRIGGER test_fail_sweep BEFORE INSERT ON bank_link_sweeps
        FOR EACH ROW WHEN (NEW.reference = 'boom') EXECUTE FUNCTION test_fail_sweep();`);
    const request = {
      brokerageInstitutionId: DEMO_INSTITUTION_ID,
      linkId,
      amount: 1_000,
      reference: 'boom',
      bankApprovalBound: true,
      actor: 'client:test',
    };
    const written = async () => {
      const n = async (sql: string) =>
        (await t.hub.db.query<{ n: number }>(sql, [linkId, 'boom'])).rows[0]!.n;
      return {
        decisions: await n(
          "SELECT count(*)::int AS n FROM audit_events WHERE type LIKE 'policy.sweep_pull.%' AND data -> 'subject' ->> 'linkId' = $1 AND data -> 'subject' ->> 'reference' = $2",
        ),
        counted: await n(
          'SELECT count(*)::int AS n FROM bank_link_sweeps WHERE link_id = $1 AND reference = $2',
        ),
        institutions: await n(
          "SELECT count(*)::int AS n FROM institution_events WHERE link_id = $1 AND data ->> 'reference' = $2",
        ),
        customer: await n(
          "SELECT count(*)::int AS n FROM notify_outbox WHERE kind = 'sweep' AND dedupe_key LIKE 'sweep:' || $1::text || ':' || $2::text || ':%'",
        ),
      };
    };
    try {
      await expect(decideSweepPull(t.hub.db, loadPolicy(), t.hub.config, request)).rejects.toThrow(
        'injected failure',
      );
      expect(await written()).toEqual({ decisions: 0, counted: 0, institutions: 0, customer: 0 });
    } finally {
      await t.hub.db.exec(
        'DROP TRIGGER test_fail_sweep ON bank_link_sweeps; DROP FUNCTION test_fail_sweep();',
      );
    }
    // The reference was not spent: asked again, the pull is decided, counted and told once each.
    const again = await decideSweepPull(t.hub.db, loadPolicy(), t.hub.config, request);
    expect(again.status === 'decided' && again.decision.decision).toBe('allow');
    expect(await written()).toEqual({ decisions: 1, counted: 1, institutions: 2, customer: 1 });
  });

  it('parallel pulls on one link never pass its daily cap together', async () => {
    // Earlier pulls move to two days ago: today starts empty under the 1,000,000 cap.
    await t.hub.db.query("UPDATE bank_link_sweeps SET at = at - interval '2 days' WHERE link_id = $1", [
      linkId,
    ]);
    const answers = await Promise.all(
      Array.from({ length: 6 }, (_, i) =>
        callers.decisions!.call('POST', '/api/institution/v1/decisions', {
          operation: 'sweep_pull',
          linkId,
          amount: 300_000,
          reference: `parallel-${i}`,
        }),
      ),
    );
    expect(answers.map((a) => a.status)).toEqual(Array(6).fill(200));
    const verdicts = answers.map((a) => a.body.decision).sort();
    expect(verdicts).toEqual(['allow', 'allow', 'allow', 'step_up', 'step_up', 'step_up']);
    const today = await t.hub.db.query<{ n: number; total: number }>(
      "SELECT count(*)::int AS n, COALESCE(sum(amount), 0)::int AS total FROM bank_link_sweeps WHERE link_id = $1 AND reference LIKE 'parallel-%'",
      [linkId],
    );
    expect(today.rows[0]).toEqual({ n: 3, total: 900_000 });
  });

  it('lets the bank suspend and only the suspender resume; others see nothing', async () => {
    const path = `/api/institution/v1/links/${linkId}`;
    const suspended = await callers.bank!.call('POST', `${path}/suspend`, { reason: 'fraud check' });
    expect(suspended.status).toBe(200);
    expect(suspended.body.data).toMatchObject({
      linkId,
      status: 'suspended',
      suspendedBy: `institution:${BANK_INSTITUTION}`,
    });
    expect(
      (
        await sweepPullFacts(t.hub.db, t.hub.config, {
          customerId,
          linkId,
          amount: 1,
          bankApprovalBound: false,
        })
      ).linkSuspended,
    ).toBe(true);
    const again = await callers.bank!.call('POST', `${path}/suspend`);
    expect([again.status, again.body.error.code]).toEqual([409, 'conflict']);
    const byBrokerage = await callers.brokerage!.call('POST', `${path}/resume`);
    expect(byBrokerage.status).toBe(409);
    const stranger = await callers.other!.call('POST', `${path}/suspend`);
    expect([stranger.status, stranger.body.error.code]).toEqual([404, 'not_found']);
    const wrongMethod = await t.fetch(`${t.issuer}${path}/suspend`);
    expect([wrongMethod.status, wrongMethod.headers.get('allow')]).toEqual([405, 'POST']);
    expect(((await wrongMethod.json()) as { error: { code: string } }).error.code).toBe('method_not_allowed');
    expect((await t.fetch(`${t.issuer}/api/institution/v1/events`, { method: 'POST' })).status).toBe(405);
    const unknown = await callers.bank!.call('POST', '/api/institution/v1/links/lnk_0000/suspend');
    expect(unknown.status).toBe(404);
    const scope = await callers.ingestOnly!.call('POST', `${path}/resume`);
    expect([scope.status, scope.body.error.code]).toEqual([403, 'insufficient_scope']);
    const resumed = await callers.bank!.call('POST', `${path}/resume`);
    expect([resumed.status, resumed.body.data.status]).toEqual([200, 'active']);
    expect((await outbox('suspended')).length).toBe(1);
    expect((await outbox('resumed')).length).toBe(1);
    const audit = await t.hub.db.query<{ type: string }>(
      "SELECT type FROM audit_events WHERE type LIKE 'linking.link.%' OR type LIKE 'api.links.%' ORDER BY id",
    );
    const types = audit.rows.map((r) => r.type);
    expect(types).toContain('linking.link.suspended');
    expect(types).toContain('linking.link.resumed');
    expect(types).toContain('api.links.suspend.refused');
  });

  it('stops sweeps at once on a peer’s suspend_sweeps signal, then suspends the links', async () => {
    await t.hub.db.query(
      `INSERT INTO ssf_action_outbox (action, customer_id, peer_id, jti, event_type)
       VALUES ('suspend_sweeps', $1, 'peer-x', 'jti-1', 'https://schemas.openid.net/secevent/risc/event-type/account-disabled')`,
      [customerId],
    );
    const facts = () =>
      sweepPullFacts(t.hub.db, t.hub.config, { customerId, linkId, amount: 1, bankApprovalBound: false });
    expect((await facts()).linkSuspended).toBe(true);
    expect(await applySweepSuspensions(t.hub.db, t.hub.config)).toEqual({ claimed: 1, suspended: 1 });
    expect(await applySweepSuspensions(t.hub.db, t.hub.config)).toEqual({ claimed: 0, suspended: 0 });
    expect((await liveLinks())[0]).toMatchObject({ status: 'suspended', suspendedBy: 'peer:peer-x' });
    expect((await facts()).linkSuspended).toBe(true);
    // No institution lifts a peer's stop (a stranger does not even see the link); an operator's clear
    // (or the customer's re-proofing) does, and then an institution of the link resumes it.
    expect((await callers.other!.call('POST', `/api/institution/v1/links/${linkId}/resume`)).status).toBe(
      404,
    );
    const refused = await callers.brokerage!.call('POST', `/api/institution/v1/links/${linkId}/resume`);
    expect([refused.status, refused.body.error.code]).toEqual([409, 'conflict']);
    expect((await facts()).linkSuspended).toBe(true);
    await clearPeerLevels(t.hub.db, customerId, 'operator:test');
    const resumed = await callers.brokerage!.call('POST', `/api/institution/v1/links/${linkId}/resume`);
    expect([resumed.status, resumed.body.data.status]).toEqual([200, 'active']);
    expect((await facts()).linkSuspended).toBe(false);
  });

  it('feeds both institutions their events and lists links by customer number', async () => {
    const feed = await callers.brokerage!.call('GET', '/api/institution/v1/events');
    expect(feed.status).toBe(200);
    const types = feed.body.data.map((e: { type: string }) => e.type);
    expect(types).toEqual(
      expect.arrayContaining(['link.created', 'link.refused', 'link.suspended', 'link.resumed']),
    );
    const after = await callers.brokerage!.call(
      'GET',
      `/api/institution/v1/events?after=${feed.body.meta.next}`,
    );
    expect(after.body.data).toEqual([]);
    const bad = await callers.brokerage!.call('GET', '/api/institution/v1/events?after=-1');
    expect(bad.status).toBe(400);
    const bankFeed = await callers.bank!.call('GET', '/api/institution/v1/events');
    for (const e of bankFeed.body.data) expect(e.data).not.toHaveProperty('customerNumber');
    const list = await callers.brokerage!.call(
      'GET',
      `/api/institution/v1/links?customer=${t.hub.demo!.customerNumber}`,
    );
    expect(list.body.data.map((l: { linkId: string }) => l.linkId)).toContain(linkId);
    expect((await callers.other!.call('GET', '/api/institution/v1/links')).body.data).toEqual([]);
  });

  it('unlinks at once from the security page, telling the customer and both institutions', async () => {
    const { ua, csrf } = await signedIn();
    const res = await ua.postForm(`${t.issuer}/account/links/remove`, { csrf, linkId });
    expect(res.status).toBe(303);
    expect(await liveLinks()).toHaveLength(0);
    expect((await outbox('unlinked')).length).toBe(1);
    expect(await events(BANK_INSTITUTION, 'link.removed')).toHaveLength(1);
    const lower = await t.hub.db.query(
      "SELECT 1 FROM audit_events WHERE type = 'policy.lower_limit.allow' AND data -> 'subject' ->> 'linkId' = $1",
      [linkId],
    );
    expect(lower.rowCount).toBe(1);
    expect(
      (
        await sweepPullFacts(t.hub.db, t.hub.config, {
          customerId,
          linkId,
          amount: 1,
          bankApprovalBound: false,
        })
      ).linkSuspended,
    ).toBe(true);
    const twice = await ua.postForm(`${t.issuer}/account/links/remove`, { csrf, linkId });
    expect(twice.status).toBe(404);
    // A removed link cannot be resumed by an institution.
    expect((await callers.bank!.call('POST', `/api/institution/v1/links/${linkId}/resume`)).status).toBe(409);
  });
});

describe('the risk check at the link forms (JSDA IV.5: signals at every important operation)', () => {
  it('holds back a link start from a stolen session cookie, lets it unlink (protective), and records both', async () => {
    // One cookie jar whose requests leave from the customer's network and browser, later from a thief's.
    let via = browserFetch;
    const session = await signedIn(((url: string | URL, init?: RequestInit) =>
      via(url, init)) as typeof fetch);
    // From home: the session's first network and browser; the start is assessed and allowed.
    expect((await linkAt('a-bank', session)).result).toBe('linked');
    const [link] = await liveLinks();
    const home = await lastOperation();
    expect(home).toMatchObject({ method: 'account.links.start', decision: 'allow', result: 'success' });

    // The same session cookie used from another network by another browser.
    const thief = new Agent({
      localAddress: '127.0.3.20',
      connect: { ca: [t.caPem, passkeyBank.caPem, otpBank.caPem, passwordBank.caPem] },
    });
    via = ((url: string | URL, init?: RequestInit) => {
      // The user agent sends its headers as a plain record.
      const headers = {
        ...(init?.headers as Record<string, string>),
        'user-agent': 'Mozilla/5.0 (X11; Linux x86_64) Thief/1.0',
      };
      return undiciFetch(url, { ...(init as object), headers, dispatcher: thief });
    }) as unknown as typeof globalThis.fetch;
    const attempts = async () =>
      Number(
        (
          await t.hub.db.query<{ n: string }>(
            'SELECT count(*) AS n FROM bank_link_attempts WHERE customer_id = $1',
            [customerId],
          )
        ).rows[0]!.n,
      );
    const before = await attempts();
    const start = await session.ua.postForm(`${t.issuer}/account/links/start`, {
      csrf: session.csrf,
      bankId: 'a-bank',
      accountId,
    });
    expect(start.status).toBe(403);
    expect(start.location).toBeUndefined();
    expect(start.text).toContain('ERR_RISK_STEP_UP');
    expect(await attempts()).toBe(before);
    const held = await lastOperation();
    expect(held).toMatchObject({
      method: 'account.links.start',
      decision: 'step_up',
      result: 'step_up',
      ip: '127.0.3.20',
    });
    expect(held.reasons.map((r) => r.rule)).toContain('elevated-session');
    const audited = await t.hub.db.query<{ data: { operation: string; reasons: string[] } }>(
      "SELECT data FROM audit_events WHERE type = 'risk.operation.step_up' AND customer_id = $1 ORDER BY id",
      [customerId],
    );
    expect(audited.rows.map((r) => r.data.operation)).toEqual(['account.links.start']);
    expect(audited.rows[0]!.data.reasons).toContain('elevated-session');

    // Unlinking stops money moving, so it goes ahead — assessed, audited and told like any unlink.
    const remove = await session.ua.postForm(`${t.issuer}/account/links/remove`, {
      csrf: session.csrf,
      linkId: link!.id,
    });
    expect(remove.status).toBe(303);
    expect(await liveLinks()).toHaveLength(0);
    expect(await lastOperation()).toMatchObject({
      method: 'account.links.remove',
      decision: 'step_up',
      result: 'success',
      ip: '127.0.3.20',
    });
    const removeAudit = await t.hub.db.query<{ data: { operation: string } }>(
      "SELECT data FROM audit_events WHERE type = 'risk.operation.step_up' AND customer_id = $1 ORDER BY id DESC LIMIT 1",
      [customerId],
    );
    expect(removeAudit.rows[0]!.data.operation).toBe('account.links.remove');
    await thief.close();
  });
});

async function lastOperation() {
  return (
    await t.hub.db.query<{
      method: string;
      decision: string;
      result: string;
      ip: string;
      reasons: Array<{ rule: string }>;
    }>(
      "SELECT method, decision, result, ip, reasons FROM risk_events WHERE customer_id = $1 AND kind = 'operation' ORDER BY id DESC LIMIT 1",
      [customerId],
    )
  ).rows[0]!;
}

describe('sweep safeguards (security review): customer limit, bank approval claims, peer stops', () => {
  const policy = loadPolicy();
  let n = 0;
  /** A live link made directly (the linking flow is tested above): only its decision facts matter here. */
  async function insertLink(o: { bankId: string; strength: string; cap: number }): Promise<string> {
    const id = `lnk_${(++n).toString(16).padStart(32, 'f')}`;
    await t.hub.db.query(
      `INSERT INTO bank_links (id, customer_id, account_id, brokerage_institution_id, bank_id, bank_institution_id,
         bank_name, bank_account_masked, holder_name, bank_subject, bank_strength, cap_amount, policy_version, decided_by)
       VALUES ($1, $2, $3, $4, $5, $6, 'test bank', $7, '山田 太郎', 'sub', $8, $9, 'test', '{link.allow}')`,
      [
        id,
        customerId,
        accountId,
        DEMO_INSTITUTION_ID,
        o.bankId,
        o.bankId === 'a-bank' ? BANK_INSTITUTION : null,
        `safeguard-${n}`,
        o.strength,
        o.cap,
      ],
    );
    return id;
  }
  let ref = 0;
  const pull = async (linkId: string, amount: number, bankApprovalBound = false) => {
    const out = await decideSweepPull(t.hub.db, policy, t.hub.config, {
      brokerageInstitutionId: DEMO_INSTITUTION_ID,
      linkId,
      amount,
      reference: `safeguard-${++ref}`,
      bankApprovalBound,
      actor: 'client:test',
    });
    if (out.status !== 'decided') throw new Error(out.status);
    return out.decision;
  };
  const lowerSweepLimit = (amount: number) =>
    changeLimit(t.hub.db, policy, t.hub.config.linking.defaultLimits, {
      customerId,
      limit: 'sweep_daily',
      amount,
      acr: 'phr',
      authTime: Math.floor(Date.now() / 1000),
      frozen: false,
      actor: `customer:${customerId}`,
    });

  beforeEach(async () => {
    await removeAll();
    // Earlier pulls move to two days ago, and credential changes ten days back: today starts clean.
    await t.hub.db.query("UPDATE bank_link_sweeps SET at = at - interval '2 days'");
    await credentialChangesTenDaysAgo();
  });

  it('believes the brokerage’s bank-approval claim above the cap only for a phishing-resistant bank', async () => {
    const otp = await insertLink({ bankId: 'otp-bank', strength: 'otp', cap: 100_000 });
    const strong = await insertLink({ bankId: 'a-bank', strength: 'phishing_resistant', cap: 100_000 });
    const atOtp = await pull(otp, 150_000, true);
    expect([atOtp.decision, atOtp.decidedBy]).toEqual(['step_up', ['sweep.over-cap']]);
    expect(
      (
        await sweepPullFacts(t.hub.db, t.hub.config, {
          customerId,
          linkId: otp,
          amount: 1,
          bankApprovalBound: true,
        })
      ).bankApprovalBound,
    ).toBe(false);
    const atStrong = await pull(strong, 150_000, true);
    expect(atStrong.decision).toBe('allow');
  });

  it('parallel pulls over two links never pass the customer’s daily sweep limit together', async () => {
    expect((await lowerSweepLimit(500_000)).status).toBe('applied');
    const links = [
      await insertLink({ bankId: 'a-bank', strength: 'phishing_resistant', cap: 1_000_000 }),
      await insertLink({ bankId: 'otp-bank', strength: 'otp', cap: 1_000_000 }),
    ];
    const verdicts = await Promise.all(Array.from({ length: 8 }, (_, i) => pull(links[i % 2]!, 100_000)));
    expect(verdicts.filter((d) => d.decision === 'allow')).toHaveLength(5);
    for (const d of verdicts.filter((v) => v.decision !== 'allow'))
      expect([d.decision, d.decidedBy]).toEqual(['deny', ['sweep.over-customer-limit']]);
    const today = await t.hub.db.query<{ total: number }>(
      "SELECT COALESCE(sum(amount), 0)::int AS total FROM bank_link_sweeps WHERE link_id = ANY($1) AND at > now() - interval '1 hour'",
      [links],
    );
    expect(today.rows[0]!.total).toBe(500_000);
  });

  it('refuses a second link’s pull beyond the customer’s limit (500,000 over two links of 1,000,000), then at limit 0 everything', async () => {
    expect((await lowerSweepLimit(500_000)).status).toBe('applied');
    const first = await insertLink({ bankId: 'a-bank', strength: 'phishing_resistant', cap: 1_000_000 });
    const second = await insertLink({ bankId: 'otp-bank', strength: 'otp', cap: 1_000_000 });
    expect((await pull(first, 300_000)).decision).toBe('allow');
    const beyond = await pull(second, 300_000);
    expect([beyond.decision, beyond.decidedBy]).toEqual(['deny', ['sweep.over-customer-limit']]);
    expect(beyond.reasons[0]!.en).toContain('daily sweep limit');
    // A bank approval does not lift the customer's own limit.
    expect((await pull(first, 300_000, true)).decision).toBe('deny');
    expect((await pull(second, 200_000)).decision).toBe('allow');
    // The customer lowers the limit to 0: at once, no pull at all.
    expect((await lowerSweepLimit(0)).status).toBe('applied');
    await t.hub.db.query("UPDATE bank_link_sweeps SET at = at - interval '2 days'");
    const none = await pull(first, 1);
    expect([none.decision, none.decidedBy]).toEqual(['deny', ['sweep.over-customer-limit']]);
    expect(
      (
        await sweepPullFacts(t.hub.db, t.hub.config, {
          customerId,
          linkId: second,
          amount: 1,
          bankApprovalBound: false,
        })
      ).overCustomerLimit,
    ).toBe(true);
  });

  it('links a bank that asserts no account only once per brokerage account (no second cap)', async () => {
    const claims = otpBank.account.claims;
    otpBank.account.claims = { ...claims };
    delete otpBank.account.claims.bank_account;
    try {
      const first = await linkAt('otp-bank');
      expect(first.result).toBe('linked');
      expect((await liveLinks()).map((l) => l.bankAccountMasked)).toEqual([null]);
      const second = await linkAt('otp-bank');
      expect([second.res.status, second.result]).toEqual([200, 'exists']);
      expect(await liveLinks()).toHaveLength(1);
    } finally {
      otpBank.account.claims = claims;
    }
  });

  it('keeps a peer’s stop on a link an institution had suspended: its resume does not lift it; re-proofing does', async () => {
    await t.hub.db.query('DELETE FROM customer_limits WHERE customer_id = $1', [customerId]);
    const linkId = await insertLink({ bankId: 'a-bank', strength: 'phishing_resistant', cap: 1_000_000 });
    const bank = { linkId, institutionId: BANK_INSTITUTION, clientId: 'bank-client' };
    await setBankLinkSuspended(t.hub.db, t.hub.config, { ...bank, suspend: true, reason: 'fraud check' });
    await t.hub.db.query(
      `INSERT INTO ssf_action_outbox (action, customer_id, peer_id, jti, event_type)
       VALUES ('suspend_sweeps', $1, 'peer-y', 'jti-safeguard', 'https://schemas.openid.net/secevent/risc/event-type/account-disabled')`,
      [customerId],
    );
    await applySweepSuspensions(t.hub.db, t.hub.config);
    // The bank lifts its own stop: refused while the peer's stands, and no sweep flows.
    await expect(
      setBankLinkSuspended(t.hub.db, t.hub.config, { ...bank, suspend: false }),
    ).rejects.toMatchObject({ code: 'ERR_LINK_SUSPENDED_BY_OTHER' });
    expect((await pull(linkId, 1_000)).decidedBy).toContain('sweep.link-suspended');
    const stops = await t.hub.db.query(
      "SELECT 1 FROM sweep_peer_stops WHERE customer_id = $1 AND peer_id = 'peer-y' AND cleared_at IS NULL",
      [customerId],
    );
    expect(stops.rowCount).toBe(1);
    // A link made after the signal is stopped too.
    const later = await insertLink({ bankId: 'otp-bank', strength: 'otp', cap: 100_000 });
    expect((await pull(later, 1_000)).decidedBy).toContain('sweep.link-suspended');
    // Re-proofing ends the peer's stop; then the bank resumes its own and sweeps flow.
    await clearPeerLevels(t.hub.db, customerId, 'reproofing');
    await setBankLinkSuspended(t.hub.db, t.hub.config, { ...bank, suspend: false });
    expect((await pull(linkId, 1_000)).decision).toBe('allow');
    expect((await pull(later, 1_000)).decision).toBe('allow');
    const audit = await t.hub.db.query<{ type: string }>(
      "SELECT type FROM audit_events WHERE customer_id = $1 AND type LIKE 'linking.sweeps.peer_stop%' ORDER BY id",
      [customerId],
    );
    expect(audit.rows.map((r) => r.type).slice(-2)).toEqual([
      'linking.sweeps.peer_stopped',
      'linking.sweeps.peer_stop_cleared',
    ]);
  });

  // A peer's verdict received before a re-proofing but not yet acted on (ssf_action_outbox) is settled by
  // it; one received once the proof had begun acts as usual (docs/reproofing-settles.md). This hub runs
  // no consumers of its own (signals.enabled false), so each test decides when they run.
  const DISABLED = 'https://schemas.openid.net/secevent/risc/event-type/account-disabled';
  /** A peer's action as the receiver leaves it, received `at` (SQL; default now()). */
  const received = (action: string, jti: string, at = 'now()', peer = 'peer-r') =>
    t.hub.db.query(
      `INSERT INTO ssf_action_outbox (action, customer_id, peer_id, jti, event_type, created_at)
       VALUES ($1, $2, $3, $4, $5, ${at})`,
      [action, customerId, peer, jti, DISABLED],
    );
  const consume = async () => ({
    sweeps: (await applySweepSuspensions(t.hub.db, t.hub.config)).claimed,
    risk: await applyPeerRiskActions(riskEngineFor(t.hub.config), t.hub.db),
  });
  const actionsOf = async (prefix: string) =>
    (
      await t.hub.db.query<{ action: string; processed: boolean; by: string | null }>(
        `SELECT action, processed_at IS NOT NULL AS processed, detail ->> 'supersededBy' AS by
         FROM ssf_action_outbox WHERE customer_id = $1 AND jti LIKE $2 ORDER BY id`,
        [customerId, `${prefix}%`],
      )
    ).rows;
  const superseded = async (prefix: string) =>
    (
      await t.hub.db.query<{ actor: string; data: Record<string, string> }>(
        `SELECT actor, data FROM audit_events
         WHERE customer_id = $1 AND type = 'signals.actions.superseded' AND data ->> 'jti' LIKE $2 ORDER BY id`,
        [customerId, `${prefix}%`],
      )
    ).rows;
  const openStops = async () =>
    (
      await t.hub.db.query<{ peer_id: string }>(
        'SELECT peer_id FROM sweep_peer_stops WHERE customer_id = $1 AND cleared_at IS NULL ORDER BY id',
        [customerId],
      )
    ).rows.map((r) => r.peer_id);
  /**
   * The customer re-proves over HTTP: an operator's one-time ticket (the proof begins when it is
   * issued), `during` the flow, then a new passkey registered with it. Returns when the ticket was issued.
   */
  async function reproof(during?: () => Promise<void>): Promise<{ began: Date; signIn: string }> {
    const { ticket } = await issueEnrollmentTicket(t.hub.authn, { customerId, issuedBy: 'operator:test' });
    await during?.();
    const signIn = await completeLogin({
      fetch: t.fetch,
      authorizationUrl: (await startAuthorization(await demoRp(t))).url,
      device: createEmulator(),
      enroll: { customerNumber: t.hub.demo!.customerNumber, ticket },
    }).then(
      () => 'signed in',
      (err: Error & { status?: number; body?: string }) => `${err.status} ${err.body}`,
    );
    const issued = await t.hub.db.query<{ created_at: Date }>(
      'SELECT created_at FROM enrollment_tickets WHERE customer_id = $1 ORDER BY created_at DESC LIMIT 1',
      [customerId],
    );
    return { began: new Date(issued.rows[0]!.created_at), signIn };
  }
  /** An operator ends what the peers left after each test: stops, levels, the lock; leftovers processed. */
  async function operatorCleanUp() {
    await clearPeerLevels(t.hub.db, customerId, 'operator:test');
    await unlockAccount(t.hub.db, customerId, 'operator:test');
    await t.hub.db.query(
      'UPDATE ssf_action_outbox SET processed_at = now() WHERE customer_id = $1 AND processed_at IS NULL',
      [customerId],
    );
  }

  afterEach(operatorCleanUp);

  it('re-proofing settles peer actions received before the proof began: never applied, sweeps run, audited', async () => {
    const linkId = await insertLink({ bankId: 'a-bank', strength: 'phishing_resistant', cap: 1_000_000 });
    const before = "now() - interval '1 minute'";
    await received('suspend_sweeps', 'settle-1', before);
    await received('raise_risk', 'settle-2', before);
    await received('require_reproofing', 'settle-3', before);
    await received('require_step_up', 'settle-4', before);
    await received('notify', 'settle-5', before);
    const receivedAt = new Map(
      (
        await t.hub.db.query<{ jti: string; created_at: Date }>(
          "SELECT jti, created_at FROM ssf_action_outbox WHERE customer_id = $1 AND jti LIKE 'settle-%'",
          [customerId],
        )
      ).rows.map((r) => [r.jti, new Date(r.created_at).toISOString()]),
    );
    expect((await effectiveRiskLevel(t.hub.db, customerId)).level).toBe('LOW');

    const { began, signIn } = await reproof();
    expect(signIn).toBe('signed in');

    expect(await actionsOf('settle-')).toEqual([
      { action: 'suspend_sweeps', processed: true, by: 'reproofing' },
      { action: 'raise_risk', processed: true, by: 'reproofing' },
      { action: 'require_reproofing', processed: true, by: 'reproofing' },
      // Step-up is for the sessions live when it is applied, which this proof does not vouch for; the
      // notice is still the customer's to see.
      { action: 'require_step_up', processed: false, by: null },
      { action: 'notify', processed: false, by: null },
    ]);
    expect(await superseded('settle-')).toEqual(
      ['suspend_sweeps', 'raise_risk', 'require_reproofing'].map((action, i) => ({
        actor: 'reproofing',
        data: {
          action,
          peer: 'peer-r',
          jti: `settle-${i + 1}`,
          receivedAt: receivedAt.get(`settle-${i + 1}`),
          proofBegan: began.toISOString(),
        },
      })),
    );
    // The sweeps run (the new passkey's own pause moved out of the way), nothing is left to stop them…
    await credentialChangesTenDaysAgo();
    expect((await pull(linkId, 1_000)).decision).toBe('allow');
    // … and the consumers find only the step-up: a MEDIUM level, never the HIGH of the takeover, no lock.
    expect(await consume()).toEqual({ sweeps: 0, risk: 1 });
    expect(await openStops()).toEqual([]);
    expect((await effectiveRiskLevel(t.hub.db, customerId)).peer).toBe('MEDIUM');
    expect((await accountLock(t.hub.db, customerId)).locked).toBe(false);
  });

  it('re-proofing leaves peer actions received once the proof had begun: they act afterwards', async () => {
    const linkId = await insertLink({ bankId: 'a-bank', strength: 'phishing_resistant', cap: 1_000_000 });
    const { signIn } = await reproof(async () => {
      // Received at the very moment the ticket was issued, and later while the customer signs in.
      await received(
        'suspend_sweeps',
        'during-1',
        '(SELECT max(created_at) FROM enrollment_tickets WHERE customer_id = $2)',
      );
      await received('raise_risk', 'during-2');
      await received('require_reproofing', 'during-3');
    });
    expect(signIn).toBe('signed in');
    expect(await actionsOf('during-')).toEqual([
      { action: 'suspend_sweeps', processed: false, by: null },
      { action: 'raise_risk', processed: false, by: null },
      { action: 'require_reproofing', processed: false, by: null },
    ]);
    expect(await superseded('during-')).toEqual([]);
    expect(await consume()).toEqual({ sweeps: 1, risk: 2 });
    expect(await openStops()).toEqual(['peer-r']);
    await credentialChangesTenDaysAgo();
    expect((await pull(linkId, 1_000)).decidedBy).toContain('sweep.link-suspended');
    expect((await effectiveRiskLevel(t.hub.db, customerId)).level).toBe('HIGH');
    expect((await accountLock(t.hub.db, customerId)).reproofingRequired).toBe(true);
  });

  it('re-proofing lifts no peer verdict applied while the proof ran: the stop, the level and the lock stay', async () => {
    const linkId = await insertLink({ bankId: 'a-bank', strength: 'phishing_resistant', cap: 1_000_000 });
    await received('suspend_sweeps', 'applied-before', "now() - interval '1 minute'", 'peer-q');
    expect(await consume()).toEqual({ sweeps: 1, risk: 0 });
    const { began, signIn } = await reproof(async () => {
      // Received once the ticket was issued, and applied at once (the consumers run within moments).
      await received('suspend_sweeps', 'applied-during-1');
      await received('raise_risk', 'applied-during-2');
      await received('require_reproofing', 'applied-during-3');
      expect(await consume()).toEqual({ sweeps: 1, risk: 2 });
    });
    // The passkey is registered, but the peer asked for re-proofing after this proof began: locked.
    expect(signIn).toMatch(/^403 .*ERR_ACCOUNT_LOCKED/);
    expect(await accountLock(t.hub.db, customerId)).toEqual({
      locked: true,
      lockedUntil: null,
      reproofingRequired: true,
    });
    // The stop received before the proof began is lifted; the one received during it stands.
    expect(await openStops()).toEqual(['peer-r']);
    expect((await effectiveRiskLevel(t.hub.db, customerId)).peer).toBe('HIGH');
    await credentialChangesTenDaysAgo();
    expect((await pull(linkId, 1_000)).decidedBy).toContain('sweep.link-suspended');
    const kept = await t.hub.db.query<{ data: { proofBegan: string; kept: Array<Record<string, unknown>> } }>(
      "SELECT data FROM audit_events WHERE customer_id = $1 AND type = 'risk.reproofing.kept' ORDER BY id DESC LIMIT 1",
      [customerId],
    );
    expect(kept.rows[0]!.data.proofBegan).toBe(began.toISOString());
    expect(kept.rows[0]!.data.kept.map((k) => [k.verdict, k.peer, k.level])).toEqual([
      ['sweep_stop', 'peer-r', null],
      ['peer_level', 'peer-r', 'HIGH'],
      ['reproofing_required', null, null],
    ]);
  });

  it('an operator’s clear settles no pending peer action (it may be one the operator never saw)', async () => {
    await received('suspend_sweeps', 'operator-1', "now() - interval '1 minute'");
    await received('raise_risk', 'operator-2', "now() - interval '1 minute'");
    await clearPeerLevels(t.hub.db, customerId, 'operator:test');
    await unlockAccount(t.hub.db, customerId, 'operator:test');
    expect(await actionsOf('operator-')).toEqual([
      { action: 'suspend_sweeps', processed: false, by: null },
      { action: 'raise_risk', processed: false, by: null },
    ]);
    expect(await consume()).toEqual({ sweeps: 1, risk: 1 });
    expect(await openStops()).toEqual(['peer-r']);
    expect((await effectiveRiskLevel(t.hub.db, customerId)).level).toBe('HIGH');
    expect(await superseded('operator-')).toEqual([]);
  });

  describe('a consumer running while a re-proofing clears', () => {
    /**
     * `db` whose transactions stop right after their first statement on ssf_action_outbox (a consumer's
     * claim, or the re-proofing's settle) until released: the other side then runs while that
     * transaction is open (PostgreSQL: it holds those rows locked; PGlite: it holds everyone out).
     */
    function pausedAfterOutbox(db: Db) {
      let reached: () => void = () => {};
      let release: () => void = () => {};
      const atPause = new Promise<void>((r) => {
        reached = r;
      });
      const released = new Promise<void>((r) => {
        release = r;
      });
      const paused: Db = {
        kind: db.kind,
        query: (sql, params) => db.query(sql, params),
        exec: (sql) => db.exec(sql),
        afterCommit: (fn) => db.afterCommit(fn),
        close: () => db.close(),
        transaction: (fn) =>
          db.transaction((tx) =>
            fn({
              exec: (sql) => tx.exec(sql),
              afterCommit: (f) => tx.afterCommit(f),
              query: async <R>(sql: string, params?: unknown[]) => {
                const res = await tx.query<R>(sql, params);
                if (/^\s*UPDATE ssf_action_outbox/.test(sql)) {
                  reached();
                  await released;
                }
                return res;
              },
            }),
          ),
      };
      return { db: paused, atPause, release };
    }
    const aMoment = () => new Promise((r) => setTimeout(r, 150));

    it('applied first: the re-proofing waits for it and then lifts what it applied', async () => {
      await received('suspend_sweeps', 'applied-first-1', "now() - interval '1 minute'");
      await received('raise_risk', 'applied-first-2', "now() - interval '1 minute'");
      const consumer = pausedAfterOutbox(t.hub.db);
      const applying = applySweepSuspensions(consumer.db, t.hub.config);
      await Promise.race([consumer.atPause, applying]);
      const clearing = clearAfterReproofing(t.hub.db, { customerId, began: new Date() });
      await aMoment();
      consumer.release();
      expect((await applying).claimed).toBe(1);
      await clearing;
      // The raise_risk, not yet taken by any consumer, was settled by the re-proofing.
      expect(await actionsOf('applied-first-')).toEqual([
        { action: 'suspend_sweeps', processed: true, by: null },
        { action: 'raise_risk', processed: true, by: 'reproofing' },
      ]);
      expect(await openStops()).toEqual([]);
      const stops = await t.hub.db.query<{ type: string }>(
        "SELECT type FROM audit_events WHERE customer_id = $1 AND type LIKE 'linking.sweeps.peer_stop%' ORDER BY id DESC LIMIT 2",
        [customerId],
      );
      expect(stops.rows.map((r) => r.type)).toEqual([
        'linking.sweeps.peer_stop_cleared',
        'linking.sweeps.peer_stopped',
      ]);
      expect(await consume()).toEqual({ sweeps: 0, risk: 0 });
      expect((await effectiveRiskLevel(t.hub.db, customerId)).level).toBe('LOW');
    });

    it('settled first: the consumers find nothing, then or afterwards', async () => {
      await received('suspend_sweeps', 'settled-first-1', "now() - interval '1 minute'");
      await received('raise_risk', 'settled-first-2', "now() - interval '1 minute'");
      const reproofing = pausedAfterOutbox(t.hub.db);
      const clearing = clearAfterReproofing(reproofing.db, { customerId, began: new Date() });
      await Promise.race([reproofing.atPause, clearing]);
      const consuming = consume();
      await aMoment();
      reproofing.release();
      expect(await clearing).toEqual({ unlocked: false, settled: 2 });
      expect(await consuming).toEqual({ sweeps: 0, risk: 0 });
      expect(await consume()).toEqual({ sweeps: 0, risk: 0 });
      expect(await actionsOf('settled-first-')).toEqual([
        { action: 'suspend_sweeps', processed: true, by: 'reproofing' },
        { action: 'raise_risk', processed: true, by: 'reproofing' },
      ]);
      expect(await openStops()).toEqual([]);
      expect((await effectiveRiskLevel(t.hub.db, customerId)).level).toBe('LOW');
    });
  });
});
