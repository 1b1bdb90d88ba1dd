/**
 * eKYC proofing over OpenID Connect for Identity Assurance against a second, real oidc-provider:
 * the hub (relying party) asks for `verified_claims` under `jp_aml`, matches name (widths, spaces,
 * kana readings normalised) and birth date with the customer's records, and lets the customer
 * register a passkey with the proof. Mismatches and other trust frameworks are refused and recorded.
 */
import { generateKeyPairSync } from 'node:crypto';
import * as client from 'openid-client';
import { Agent, fetch as undiciFetch } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { completeLogin } from '../../conformance/lib/login.ts';
import { createUserAgent, type UserAgent } from '../../conformance/lib/userAgent.ts';
import { accountLock } from '../../src/risk/index.ts';
import { type EkycProvider, jpAmlClaims, startEkycProvider } from '../support/ekycProvider.ts';
import { freePort, startTestHub, type TestHub } from '../support/hub.ts';
import { createEmulator } from '../support/passkeyEmulator.ts';
import { demoRp, startAuthorization } from '../support/rp.ts';

let t: TestHub;
let op: EkycProvider;
let dispatcher: Agent;
const CALLBACK = '/proofing/ekyc/callback';

/** A hub and an eKYC provider of their own (a hub keeps the provider's keys once it has fetched them). */
async function startPair(): Promise<void> {
  const port = await freePort();
  const issuer = `https://localhost:${port}`;
  op = await startEkycProvider({ redirectUri: `${issuer}${CALLBACK}` });
  t = await startTestHub({
    port,
    issuer,
    proofing: {
      ekyc: { issuer: op.issuer, clientId: op.clientId, clientSecret: op.clientSecret, caFile: op.caPath },
    },
  });
  dispatcher = new Agent({ connect: { ca: [t.caPem, op.caPem] } });
}
async function stopPair(): Promise<void> {
  await dispatcher?.close();
  await t?.close();
  await op?.close();
}
beforeAll(startPair);
afterAll(stopPair);

/** A browser trusting both the hub and the eKYC provider. */
function browser(): UserAgent {
  return createUserAgent({
    fetch: ((url: string | URL, init?: RequestInit) =>
      undiciFetch(url, { ...(init as object), dispatcher })) as never,
  });
}

/** Opens an interaction, starts eKYC from the proofing page's form, returns the hub callback URL. */
async function throughProvider(ua: UserAgent, purpose = 'enrollment') {
  const { response } = await ua.follow((await startAuthorization(await demoRp(t))).url);
  const uid = response.url.pathname.split('/').pop()!;
  const page = await ua.get(`${t.issuer}/interaction/${uid}/proofing?purpose=${purpose}`);
  expect(page.text).toContain(`action="/interaction/${uid}/proofing/ekyc"`);
  const started = await ua.postForm(`${t.issuer}/interaction/${uid}/proofing/ekyc`, {
    customerNumber: t.hub.demo!.customerNumber,
    purpose,
  });
  expect(started.status).toBe(303);
  const authorize = new URL(started.location!);
  expect(authorize.origin).toBe(op.issuer);
  const claims = JSON.parse(authorize.searchParams.get('claims')!);
  expect(claims.id_token.verified_claims.verification.trust_framework).toEqual({ value: 'jp_aml' });
  const { stoppedAt } = await ua.follow(authorize, { stopAt: (u) => u.pathname === CALLBACK });
  expect(stoppedAt).toBeDefined();
  return { uid, callback: stoppedAt! };
}

async function lastRecord() {
  const res = await t.hub.db.query<{
    result: string;
    reason: string | null;
    evidence: Record<string, unknown>;
    purpose: string;
  }>(
    "SELECT result, reason, evidence, purpose FROM proofing_records WHERE method = 'ekyc' ORDER BY created_at DESC, id LIMIT 1",
  );
  return res.rows[0]!;
}

describe('eKYC proofing (OpenID Connect for Identity Assurance)', () => {
  it('proves the customer with verified_claims and lets them register a passkey with it', async () => {
    // Registered: 山田 太郎 / ヤマダ タロウ / 1980-04-01. The provider spells the reading in
    // half-width katakana and the name without a space.
    op.person = {
      sub: 'ekyc-user-1',
      verified_claims: jpAmlClaims({
        family_name: '山田',
        given_name: '太郎',
        'family_name#ja-Kana-JP': 'ﾔﾏﾀﾞ',
        'given_name#ja-Kana-JP': 'ﾀﾛｳ',
        birthdate: '1980-04-01',
      }),
    };
    const ua = browser();
    const { uid, callback } = await throughProvider(ua);
    const landed = await ua.follow(callback);
    expect(landed.response.status).toBe(200);
    expect(landed.response.url.pathname).toBe(`/interaction/${uid}/enroll`);
    const flowId = landed.response.url.searchParams.get('proofing')!;
    expect(landed.response.text).toContain(`name="proofing" value="${flowId}"`);

    const record = await lastRecord();
    expect(record).toMatchObject({ result: 'verified', purpose: 'enrollment' });
    expect(record.evidence).toMatchObject({
      issuer: op.issuer,
      trustFramework: 'jp_aml',
      subject: 'ekyc-user-1',
      evidenceTypes: ['electronic_record'],
      checks: { name: true, birthdate: true, kana: true },
    });
    expect(JSON.stringify(record.evidence)).not.toMatch(/山田|太郎|1980|ﾔﾏﾀﾞ/);

    const options = await ua.postJson(`${t.issuer}/interaction/${uid}/enroll/options`, { proofing: flowId });
    expect(options.status).toBe(200);
    const device = createEmulator();
    const done = await ua.postJson(`${t.issuer}/interaction/${uid}/enroll/verify`, {
      response: device.register(options.json(), t.issuer),
    });
    expect(done.json()).toMatchObject({ registered: true, recovered: false });

    // The passkey signs in.
    const rp = await demoRp(t);
    const auth = await startAuthorization(rp);
    const tokens = await client.authorizationCodeGrant(
      rp.config,
      await completeLogin({ fetch: t.fetch, authorizationUrl: auth.url, device }),
      { pkceCodeVerifier: auth.codeVerifier, expectedState: auth.state },
      undefined,
      { DPoP: rp.dpop },
    );
    expect(tokens.claims()).toMatchObject({ acr: 'phr' });

    // The callback cannot be replayed (state spent, code used).
    const replay = await ua.get(callback);
    expect(replay.status).toBe(400);
    expect(replay.text).toContain('no longer valid');
  });

  it('refuses a birth date that does not match, and records which check failed', async () => {
    op.person = {
      sub: 'ekyc-user-2',
      verified_claims: jpAmlClaims({ family_name: '山田', given_name: '太郎', birthdate: '1981-04-01' }),
    };
    const ua = browser();
    const { uid, callback } = await throughProvider(ua, 'recovery');
    // The page speaks Japanese too.
    const ja = await ua.get(`${t.issuer}/interaction/${uid}/proofing?purpose=recovery&lang=ja`);
    expect(ja.text).toContain('本人確認によるアカウントの復旧');
    expect(ja.text).toContain('本人確認サービスへ進む');
    // The callback sends the browser on to its interaction, where the answer is checked.
    const res = (await ua.follow(callback)).response;
    expect(res.url.pathname).toBe(`/interaction/${uid}/proofing/ekyc/finish`);
    expect(res.status).toBe(403);
    // In the language the customer switched to above.
    expect(res.text).toContain('登録内容と一致しません');
    expect(await lastRecord()).toMatchObject({
      result: 'refused',
      purpose: 'recovery',
      reason: 'mismatch:birthdate',
      evidence: { checks: { name: true, birthdate: false } },
    });
  });

  it('refuses a different name and claims verified under another trust framework', async () => {
    op.person = {
      sub: 'ekyc-user-3',
      verified_claims: jpAmlClaims({ family_name: '山田', given_name: '次郎', birthdate: '1980-04-01' }),
    };
    const ua = browser();
    expect((await ua.follow((await throughProvider(ua)).callback)).response.status).toBe(403);
    expect(await lastRecord()).toMatchObject({ result: 'refused', reason: 'mismatch:name' });

    op.person = {
      sub: 'ekyc-user-4',
      verified_claims: jpAmlClaims(
        { family_name: '山田', given_name: '太郎', birthdate: '1980-04-01' },
        'eidas',
      ),
    };
    const other = browser();
    const res = (await other.follow((await throughProvider(other)).callback)).response;
    expect(res.status).toBe(403);
    expect(await lastRecord()).toMatchObject({
      result: 'refused',
      reason: 'no_verified_claims',
      evidence: { offeredTrustFrameworks: ['eidas'] },
    });
  });

  /**
   * The attack of the security review: someone opens an authorization request (interaction A) in
   * their browser, starts eKYC there with the victim's customer number, and sends the victim the
   * provider's URL. The victim proves themselves at the real provider in their own browser. The
   * provider's answer reaches the hub in the victim's browser, which holds no cookie of A: the
   * flow must not be verified for A, and A must not register a passkey with it.
   */
  async function attackerStarts(attacker: UserAgent, purpose: string) {
    const { response } = await attacker.follow((await startAuthorization(await demoRp(t))).url);
    const uid = response.url.pathname.split('/').pop()!;
    const started = await attacker.postForm(`${t.issuer}/interaction/${uid}/proofing/ekyc`, {
      customerNumber: t.hub.demo!.customerNumber,
      purpose,
    });
    expect(started.status).toBe(303);
    const providerUrl = started.location!;
    return { uid, providerUrl, flowId: providerUrl.searchParams.get('state')! };
  }

  /** The victim, in their own browser, completes eKYC at the provider; the answer comes back to the hub. */
  async function victimCompletes(victim: UserAgent, providerUrl: URL) {
    const { stoppedAt } = await victim.follow(providerUrl, { stopAt: (u) => u.pathname === CALLBACK });
    expect(stoppedAt).toBeDefined();
    return (await victim.follow(stoppedAt!)).response;
  }

  const flowRow = async (flowId: string) =>
    (
      await t.hub.db.query<{ proofing_id: string | null; answered_at: Date | null }>(
        'SELECT proofing_id, answered_at FROM proofing_flows WHERE id = $1',
        [flowId],
      )
    ).rows[0]!;

  it('does not verify a recovery flow in a browser other than the one that started it', async () => {
    op.person = {
      sub: 'ekyc-victim',
      verified_claims: jpAmlClaims({ family_name: '山田', given_name: '太郎', birthdate: '1980-04-01' }),
    };
    const attacker = browser();
    const victim = browser();
    const { uid, providerUrl, flowId } = await attackerStarts(attacker, 'recovery');
    const landed = await victimCompletes(victim, providerUrl);
    // The victim's browser cannot finish interaction A: an error page, nothing verified.
    expect(landed.status).toBe(400);
    expect(landed.url.pathname).toBe(`/interaction/${uid}/proofing/ekyc/finish`);
    expect(landed.text).toContain('another browser');
    // The flow is spent, unproven, and recorded as refused: the answer in that URL is dead.
    const flow = await flowRow(flowId);
    expect(flow.proofing_id).toBeNull();
    expect(flow.answered_at).not.toBeNull();
    const records = await t.hub.db.query<{ result: string; reason: string }>(
      "SELECT result, reason FROM proofing_records WHERE method = 'ekyc' AND interaction_id = $1",
      [uid],
    );
    expect(records.rows).toEqual([{ result: 'refused', reason: 'other_browser' }]);
    // Even with the URL the victim landed on (say, pasted to the attacker), A gets nothing.
    const carried = await attacker.get(landed.url);
    expect(carried.status).toBe(400);
    expect(carried.text).toContain('no longer valid');
    // Interaction A cannot register a passkey (nor a recovery) with the flow.
    const options = await attacker.postJson(`${t.issuer}/interaction/${uid}/enroll/options`, {
      proofing: flowId,
    });
    expect(options.status).toBe(400);
    expect(options.json()).toMatchObject({ error_code: 'ERR_PROOFING_FLOW' });
  });

  it('does not unlock an account from a browser other than the one that started the unlock', async () => {
    const customerId = t.hub.demo!.customerId;
    await t.hub.db.query(
      `INSERT INTO account_lockouts (customer_id, consecutive_failures, locked_at, locked_until)
       VALUES ($1, 10, now(), now() + interval '1 day')
       ON CONFLICT (customer_id) DO UPDATE SET locked_until = EXCLUDED.locked_until, consecutive_failures = 10`,
      [customerId],
    );
    op.person = {
      sub: 'ekyc-victim',
      verified_claims: jpAmlClaims({ family_name: '山田', given_name: '太郎', birthdate: '1980-04-01' }),
    };
    const { flowId, providerUrl } = await attackerStarts(browser(), 'unlock');
    const landed = await victimCompletes(browser(), providerUrl);
    expect(landed.status).toBe(400);
    expect((await flowRow(flowId)).proofing_id).toBeNull();
    expect((await accountLock(t.hub.db, customerId)).locked).toBe(true);

    // The customer unlocking in one browser still works, bound to their own interaction.
    const ua = browser();
    const { uid, callback } = await throughProvider(ua, 'unlock');
    const done = await ua.follow(callback);
    expect(done.response.status).toBe(200);
    expect(done.response.url.pathname).toBe(`/interaction/${uid}`);
    expect(done.response.url.searchParams.get('unlocked')).toBe('1');
    expect((await accountLock(t.hub.db, customerId)).locked).toBe(false);
  });
});

describe('eKYC proofing with a provider whose published keys do not verify its ID tokens', () => {
  beforeAll(async () => {
    await stopPair();
    await startPair();
  });

  it("refuses an ID token its provider's published keys do not verify, and records why", async () => {
    op.person = {
      sub: 'ekyc-forged',
      verified_claims: jpAmlClaims({ family_name: '山田', given_name: '太郎', birthdate: '1980-04-01' }),
    };
    const other = generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey.export({ format: 'jwk' });
    op.publishedJwks = { keys: [{ ...other, kid: 'not-the-signing-key', use: 'sig', alg: 'RS256' }] };
    try {
      const ua = browser();
      const { uid, callback } = await throughProvider(ua);
      const landed = await ua.follow(callback);
      expect(landed.response.url.pathname).not.toBe(`/interaction/${uid}/enroll`);
      const record = await lastRecord();
      expect(record.result).toBe('refused');
      expect(record.reason).toMatch(/^token_exchange:/);
      expect(record.evidence).not.toHaveProperty('checks');
    } finally {
      op.publishedJwks = undefined;
    }
  });
});
