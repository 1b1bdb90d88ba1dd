/**
 * Operation-bound step-up over real HTTPS (issue 6, items 2, 3 and 5): a brokerage's relying party
 * (openid-client, PAR + PKCE + DPoP + private_key_jwt) asks the customer to approve a withdrawal or a
 * new withdrawal account with RFC 9396 authorization_details; the customer signs in and approves with
 * a passkey whose WebAuthn challenge commits to the details; the brokerage's institution client then
 * asks POST /api/institution/v1/decisions, which spends the approval once and answers with the
 * withdrawal-strength policy's decision.
 */
import { createHash } from 'node:crypto';
import * as client from 'openid-client';
import * as OTPAuth from 'otpauth';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createUserAgent, type UaResponse, type UserAgent } from '../../conformance/lib/userAgent.ts';
import {
  confirmTotpSetup,
  endExemption,
  grantExemption,
  issueEnrollmentTicket,
  startTotpSetup,
} from '../../src/authn/index.ts';
import { freezeCustomer } from '../../src/console/index.ts';
import { DEMO_INSTITUTION_ID } from '../../src/demo/seed.ts';
import {
  canonicalJson,
  changeChannel,
  changeLimit,
  loadPolicy,
  registerWithdrawalAccount,
} from '../../src/linking/index.ts';
import { addEmailChannel } from '../../src/notify/index.ts';
import { enrollDemoCustomer } from '../support/customer.ts';
import { startTestHub, type TestHub } from '../support/hub.ts';
import { type ClientKey, configFor, registerClient, type Token, tokenFor } from '../support/institution.ts';
import type { PasskeyEmulator } from '../support/passkeyEmulator.ts';
import { waitFor } from '../support/waitFor.ts';

const REDIRECT = 'https://brokerage.example/cb';
const bank = {
  bankCode: '0005',
  bankName: 'かけはし銀行',
  branchCode: '123',
  accountType: 'ordinary' as const,
  accountNumber: '1112223',
  holderName: 'ﾔﾏﾀﾞ ﾀﾛｳ',
};

let t: TestHub;
let device: PasskeyEmulator;
let customerId: string;
let sourceAccount: string;
let rpKey: ClientKey;
let rp: client.Configuration;
let decisions: Token;
let endpoint: string;

const withdrawal = (amount = '50000', destination = bank) => ({
  type: 'withdrawal',
  instructedAmount: { amount, currency: 'JPY' },
  sourceAccountId: sourceAccount,
  destination,
});

interface Approved {
  accessToken: string;
  tokenResponse: client.TokenEndpointResponse;
}

/** PAR with the details; returns the authorization URL and what the code exchange needs. */
async function push(details: unknown, config = rp, redirectUri = REDIRECT) {
  const codeVerifier = client.randomPKCECodeVerifier();
  const state = client.randomState();
  const dpopKey = await client.randomDPoPKeyPair('ES256');
  const dpop = client.getDPoPHandle(config, dpopKey);
  const url = await client.buildAuthorizationUrlWithPAR(
    config,
    {
      redirect_uri: redirectUri,
      scope: 'openid',
      code_challenge: await client.calculatePKCECodeChallenge(codeVerifier),
      code_challenge_method: 'S256',
      state,
      authorization_details: JSON.stringify([details]),
    },
    { DPoP: dpop },
  );
  return { url, codeVerifier, state, dpop };
}

const isCallback = (u: URL) => u.href.startsWith(REDIRECT);

/** How a customer signs in at an interaction and approves its operation. */
interface Approver {
  signIn(ua: UserAgent, uid: string): Promise<UaResponse>;
  approve(ua: UserAgent, uid: string): Promise<UaResponse>;
}

/** The demo customer's passkey: signs in and signs the challenge that commits to the details. */
const withPasskey: Approver = {
  async signIn(ua, uid) {
    const base = `${t.issuer}/interaction/${uid}`;
    const options = (await ua.postJson(`${base}/passkey/options`, {})).json<never>();
    return ua.postJson(`${base}/passkey/verify`, device.authenticate(options, t.issuer));
  },
  async approve(ua, uid) {
    const base = `${t.issuer}/interaction/${uid}/approval`;
    const options = (await ua.postJson(`${base}/options`, {})).json<never>();
    return ua.postJson(`${base}/verify`, device.authenticate(options, t.issuer));
  },
};

const uidOf = (u: URL) => /\/interaction\/([^/]+)$/.exec(u.pathname)![1]!;

/** Signs in and lands on the approval page; returns its uid and HTML. */
async function toApprovalPage(ua: UserAgent, url: URL, by: Approver = withPasskey) {
  let { response } = await ua.follow(url, { stopAt: isCallback });
  // A browser already signed in goes straight to the approval.
  if (response.text.includes('approval-details')) return { uid: uidOf(response.url), html: response.text };
  const verified = (await by.signIn(ua, uidOf(response.url))).json<{ redirectTo: string }>();
  ({ response } = await ua.follow(new URL(verified.redirectTo, t.issuer), { stopAt: isCallback }));
  expect(response.status).toBe(200);
  return { uid: uidOf(response.url), html: response.text };
}

/** The whole approval: PAR, sign-in, approval, code exchange (a fresh browser unless given). */
async function approve(
  details: unknown,
  ua: UserAgent = createUserAgent({ fetch: t.fetch, language: 'ja' }),
  by: Approver = withPasskey,
): Promise<Approved> {
  const started = await push(details);
  const { uid, html } = await toApprovalPage(ua, started.url, by);
  expect(html).toContain('approval-details');
  const res = await by.approve(ua, uid);
  expect(res.status).toBe(200);
  const { stoppedAt } = await ua.follow(new URL(res.json<{ redirectTo: string }>().redirectTo, t.issuer), {
    stopAt: isCallback,
  });
  const tokenResponse = await client.authorizationCodeGrant(
    rp,
    stoppedAt!,
    { pkceCodeVerifier: started.codeVerifier, expectedState: started.state },
    undefined,
    { DPoP: started.dpop },
  );
  return { accessToken: tokenResponse.access_token, tokenResponse };
}

async function decide(body: unknown, token: Token | null = decisions) {
  const headers: Record<string, string> = { 'content-type': 'application/json', accept: 'application/json' };
  if (token) {
    headers.authorization = `DPoP ${token.value}`;
    headers.dpop = token.proof('POST', endpoint);
  }
  const res = await t.fetch(endpoint, { method: 'POST', headers, body: JSON.stringify(body) });
  // biome-ignore lint/suspicious/noExplicitAny: the test reads the JSON answer field by field
  return { status: res.status, body: (await res.json()) as Record<string, any> };
}

beforeAll(async () => {
  t = await startTestHub();
  endpoint = `${t.issuer}/api/institution/v1/decisions`;
  device = await enrollDemoCustomer(t);
  customerId = t.hub.demo!.customerId;
  sourceAccount = (
    await t.hub.db.query<{ id: string }>(
      "SELECT id FROM accounts WHERE customer_id = $1 AND tax_category = 'specific'",
      [customerId],
    )
  ).rows[0]!.id;
  rpKey = await registerClient(t, 'brokerage-rp', {
    client_name: 'かけはし証券',
    grant_types: ['authorization_code'],
    response_types: ['code'],
    redirect_uris: [REDIRECT],
    scope: 'openid',
    id_token_signed_response_alg: 'ES256',
    institution_id: DEMO_INSTITUTION_ID,
    authorization_details_types: ['withdrawal', 'withdrawal_account_change'],
  });
  rp = await configFor(t, rpKey);
  const api = await registerClient(t, 'brokerage-api', {
    scope: 'institution:decisions',
    institution_id: DEMO_INSTITUTION_ID,
  });
  decisions = await tokenFor(t, api, { scope: 'institution:decisions' });
  await registerWithdrawalAccount(t.hub.db, customerId, bank, 0);
  await addEmailChannel(t.hub.db, t.hub.authn.kek!, {
    customerId,
    address: 'taro@example.jp',
    actor: 'system',
  });
});
afterAll(() => t?.close());

describe('approving a withdrawal with a passkey bound to its details', () => {
  let approved: Approved;

  it('shows the details, signs a challenge committing to them, and returns them with the token', async () => {
    approved = await approve(withdrawal());
    expect(approved.tokenResponse.authorization_details).toEqual([withdrawal()]);
    const evidence = (
      await t.hub.db.query<{ evidence: { clientDataJSON: string }; details_hash: string }>(
        'SELECT evidence, details_hash FROM operation_approvals WHERE customer_id = $1 ORDER BY approved_at DESC LIMIT 1',
        [customerId],
      )
    ).rows[0]!;
    // Anyone holding the evidence can check the commitment: the signed challenge starts with the hash.
    const challenge = Buffer.from(
      JSON.parse(Buffer.from(evidence.evidence.clientDataJSON, 'base64url').toString()).challenge,
      'base64url',
    );
    const expected = createHash('sha256').update(canonicalJson(withdrawal())).digest();
    expect(challenge.subarray(0, 32).equals(expected)).toBe(true);
    expect(evidence.details_hash).toBe(expected.toString('base64url'));
  });

  it('the decision endpoint allows it once, names the rule, counts it and tells the customer', async () => {
    const first = await decide({
      operation: 'withdrawal',
      approvalToken: approved.accessToken,
      details: withdrawal(),
    });
    expect(first.status).toBe(200);
    expect(first.body).toMatchObject({
      decision: 'allow',
      decidedBy: ['withdrawal.allow'],
      operation: 'withdrawal',
    });
    expect(first.body.reasons[0].ja).toMatch(/パスキー/);
    const queued = await t.hub.db.query(
      "SELECT 1 FROM notify_outbox WHERE customer_id = $1 AND kind = 'withdrawal_requested'",
      [customerId],
    );
    expect(queued.rowCount).toBeGreaterThan(0);
    const audit = await t.hub.db.query<{ data: { decidedBy: string[] } }>(
      "SELECT data FROM audit_events WHERE type = 'policy.withdrawal.allow' AND customer_id = $1",
      [customerId],
    );
    expect(audit.rows[0]?.data.decidedBy).toEqual(['withdrawal.allow']);

    const replay = await decide({
      operation: 'withdrawal',
      approvalToken: approved.accessToken,
      details: withdrawal(),
    });
    expect(replay.status).toBe(409);
    expect(replay.body.error.code).toBe('approval_used');
  });

  it('a tampered amount or destination at decision time is denied as unbound', async () => {
    const a = await approve(withdrawal('30000'));
    const tampered = await decide({
      operation: 'withdrawal',
      approvalToken: a.accessToken,
      details: withdrawal('300000'),
    });
    expect(tampered.status).toBe(200);
    expect(tampered.body.decision).toBe('deny');
    expect(tampered.body.decidedBy).toContain('withdrawal.unbound');
  });

  it('an assertion over a challenge that does not commit to the details is refused', async () => {
    const started = await push(withdrawal('1000'));
    const ua = createUserAgent({ fetch: t.fetch });
    const { uid } = await toApprovalPage(ua, started.url);
    const base = `${t.issuer}/interaction/${uid}/approval`;
    const options = (await ua.postJson(`${base}/options`, {})).json<{ challenge: string }>();
    const forged = { ...options, challenge: Buffer.alloc(48, 7).toString('base64url') };
    const res = await ua.postJson(`${base}/verify`, device.authenticate(forged as never, t.issuer));
    expect(res.status).toBe(400);
    expect(res.json<{ error_code: string }>().error_code).toBe('ERR_APPROVAL_DETAILS');
    const stored = await t.hub.db.query(
      "SELECT 1 FROM operation_approvals WHERE details->'instructedAmount'->>'amount' = '1000'",
    );
    expect(stored.rowCount).toBe(0);
  });

  it('a stale approval asks for step-up; a new browser needs an approval within the last minute', async () => {
    // A browser the customer has used for days: only the age of the approval matters.
    const browser = createUserAgent({ fetch: t.fetch });
    await approve(withdrawal('1'), browser);
    await t.hub.db.query(
      "UPDATE known_devices SET created_at = now() - interval '2 days' WHERE customer_id = $1",
      [customerId],
    );
    const stale = await approve(withdrawal('20000'), browser);
    await t.hub.db.query(
      "UPDATE operation_approvals SET approved_at = now() - interval '10 minutes', expires_at = now() + interval '1 minute' WHERE consumed_at IS NULL",
    );
    const s = await decide({
      operation: 'withdrawal',
      approvalToken: stale.accessToken,
      details: withdrawal('20000'),
    });
    expect(s.body).toMatchObject({ decision: 'step_up', decidedBy: ['withdrawal.stale-approval'] });
    expect(s.body.obligations.stepUp).toMatchObject({ maxAgeSeconds: 300 });
    const known = await approve(withdrawal('20000'), browser);
    await t.hub.db.query(
      "UPDATE operation_approvals SET approved_at = now() - interval '90 seconds' WHERE consumed_at IS NULL",
    );
    const ok = await decide({
      operation: 'withdrawal',
      approvalToken: known.accessToken,
      details: withdrawal('20000'),
    });
    expect(ok.body.decision).toBe('allow');

    // The same 90-second-old approval from a browser first seen today is not enough.
    const fresh = await approve(withdrawal('20000'));
    await t.hub.db.query(
      "UPDATE operation_approvals SET approved_at = now() - interval '90 seconds' WHERE consumed_at IS NULL",
    );
    const n = await decide({
      operation: 'withdrawal',
      approvalToken: fresh.accessToken,
      details: withdrawal('20000'),
    });
    expect(n.body).toMatchObject({ decision: 'step_up', decidedBy: ['withdrawal.new-device'] });
    expect(n.body.obligations.stepUp).toMatchObject({ maxAgeSeconds: 60 });
  });

  it('over the daily limit and to an account that is not the registered one are denied', async () => {
    const big = await approve(withdrawal('2999999'));
    const over = await decide({
      operation: 'withdrawal',
      approvalToken: big.accessToken,
      details: withdrawal('2999999'),
    });
    expect(over.body.decision).toBe('deny');
    expect(over.body.decidedBy).toEqual(['withdrawal.over-cap']);

    const elsewhere = { ...bank, accountNumber: '9998887' };
    const other = await approve(withdrawal('1000', elsewhere));
    const d = await decide({
      operation: 'withdrawal',
      approvalToken: other.accessToken,
      details: withdrawal('1000', elsewhere),
    });
    expect(d.body.decision).toBe('deny');
    expect(d.body.decidedBy).toEqual(['withdrawal.unregistered-destination']);
  });
});

/** Yen withdrawn today (Japanese day). */
const usedToday = async () =>
  Number(
    (
      await t.hub.db.query<{ amount: string }>(
        `SELECT COALESCE(sum(amount), 0)::text AS amount FROM withdrawal_usage
         WHERE customer_id = $1 AND day = (now() AT TIME ZONE 'UTC' + interval '9 hours')::date`,
        [customerId],
      )
    ).rows[0]!.amount,
  );

describe('withdrawals decided at the same time', () => {
  it('never pass the daily limit together', async () => {
    const approvals = [];
    for (let i = 0; i < 3; i++) approvals.push(await approve(withdrawal('50000')));
    const before = await usedToday();
    // 100,000 yen left today: two of the three fit.
    await t.hub.db.query(
      `INSERT INTO customer_limits (customer_id, withdrawal_daily, sweep_daily) VALUES ($1, $2, 1000000)
       ON CONFLICT (customer_id) DO UPDATE SET withdrawal_daily = EXCLUDED.withdrawal_daily`,
      [customerId, before + 100_000],
    );
    try {
      const answers = await Promise.all(
        approvals.map((a) =>
          decide({ operation: 'withdrawal', approvalToken: a.accessToken, details: withdrawal('50000') }),
        ),
      );
      expect(answers.map((a) => a.status)).toEqual([200, 200, 200]);
      expect(answers.map((a) => a.body.decidedBy[0]).sort()).toEqual([
        'withdrawal.allow',
        'withdrawal.allow',
        'withdrawal.over-cap',
      ]);
      expect(await usedToday()).toBe(before + 100_000);
    } finally {
      await t.hub.db.query('UPDATE customer_limits SET withdrawal_daily = 3000000 WHERE customer_id = $1', [
        customerId,
      ]);
    }
  });
});

describe('the risk engine’s level', () => {
  it('risk that rises after the approval (e.g. a peer’s signal) stops the withdrawal', async () => {
    await registerWithdrawalAccount(t.hub.db, customerId, bank, 0);
    const a = await approve(withdrawal('700'));
    await t.hub.db.query(
      `INSERT INTO risk_levels (customer_id, level) VALUES ($1, 'HIGH')
       ON CONFLICT (customer_id) DO UPDATE SET level = 'HIGH'`,
      [customerId],
    );
    try {
      const res = await decide({
        operation: 'withdrawal',
        approvalToken: a.accessToken,
        details: withdrawal('700'),
      });
      expect(res.body).toMatchObject({ decision: 'deny', decidedBy: ['withdrawal.high-risk'] });
    } finally {
      await t.hub.db.query("UPDATE risk_levels SET level = 'LOW' WHERE customer_id = $1", [customerId]);
    }
  });
});

describe('channels', () => {
  it('a customer who switched withdrawals off cannot withdraw', async () => {
    await registerWithdrawalAccount(t.hub.db, customerId, bank, 0);
    await t.hub.db.query(
      "INSERT INTO customer_channels (customer_id, channel, disabled) VALUES ($1, 'withdrawals', true)",
      [customerId],
    );
    try {
      const a = await approve(withdrawal('810'));
      const res = await decide({
        operation: 'withdrawal',
        approvalToken: a.accessToken,
        details: withdrawal('810'),
      });
      expect(res.body).toMatchObject({ decision: 'deny', decidedBy: ['withdrawal.channel-disabled'] });
    } finally {
      await t.hub.db.query('DELETE FROM customer_channels WHERE customer_id = $1', [customerId]);
    }
  });
});

describe('a freeze by an operator', () => {
  it('stops a withdrawal the customer approved before it', async () => {
    const a = await approve(withdrawal('800'));
    await freezeCustomer(
      t.hub.db,
      { customerId, operator: 'olga', reason: 'suspected takeover', suspectedTakeover: true },
      {},
    );
    try {
      const res = await decide({
        operation: 'withdrawal',
        approvalToken: a.accessToken,
        details: withdrawal('800'),
      });
      // The freeze revoked the customer's grants, the approval with them (the policy's
      // withdrawal.frozen rule stands behind that for anything that would still reach it).
      expect(res.status).toBe(400);
      expect(res.body.error.code).toBe('invalid_approval');
      const allowed = await t.hub.db.query(
        "SELECT 1 FROM audit_events WHERE type = 'policy.withdrawal.allow' AND (data -> 'subject' ->> 'amount')::int = 800",
      );
      expect(allowed.rowCount).toBe(0);
    } finally {
      await t.hub.db.query("UPDATE customers SET status = 'active' WHERE id = $1", [customerId]);
      await t.hub.db.query('UPDATE customer_freezes SET unfrozen_at = now() WHERE customer_id = $1', [
        customerId,
      ]);
    }
  });
});

describe('a freeze while a withdrawal is being decided', () => {
  it('is seen by the decision or waits for it: no withdrawal is allowed after a committed freeze', async () => {
    await registerWithdrawalAccount(t.hub.db, customerId, bank, 0);
    // Every decision is held 150 ms where it spends the approval: before the customer's lock, right
    // after facts read outside it, when those were read first; inside the lock when they are read
    // under it. The freeze starts at a different moment of each round.
    await t.hub.db.exec(`
      CREATE FUNCTION test_slow_spend() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN PERFORM pg_sleep(0.15); RETURN NEW; END $$;
      CREATE TRIGGER test_slow_spend BEFORE UPDATE ON operation_approvals FOR EACH ROW
        WHEN (OLD.consumed_at IS NULL AND NEW.consumed_at IS NOT NULL AND NEW.customer_id = '${customerId}')
        EXECUTE FUNCTION test_slow_spend();`);
    const unfreeze = async () => {
      await t.hub.db.query("UPDATE customers SET status = 'active' WHERE id = $1", [customerId]);
      await t.hub.db.query(
        'UPDATE customer_freezes SET unfrozen_at = now() WHERE customer_id = $1 AND unfrozen_at IS NULL',
        [customerId],
      );
    };
    const rounds: { answer: string; frozen: boolean; order: string[] }[] = [];
    try {
      for (let i = 0; i < 20; i++) {
        const amount = String(900 + i);
        const a = await approve(withdrawal(amount));
        const mark = (await t.hub.db.query<{ id: string }>('SELECT max(id)::text AS id FROM audit_events'))
          .rows[0]!.id;
        const [answer, frozen] = await Promise.all([
          decide({ operation: 'withdrawal', approvalToken: a.accessToken, details: withdrawal(amount) }),
          new Promise((r) => setTimeout(r, (i % 10) * 25)).then(() =>
            freezeCustomer(
              t.hub.db,
              { customerId, operator: 'olga', reason: 'race', suspectedTakeover: true },
              {},
            ).then(() => true),
          ),
        ]);
        // The order in which the two took the customer's lock: audit ids are drawn under it.
        const order = await t.hub.db.query<{ type: string }>(
          `SELECT type FROM audit_events WHERE customer_id = $1 AND id > $2::bigint
             AND (type LIKE 'policy.withdrawal.%' OR type = 'console.customer.frozen') ORDER BY id`,
          [customerId, mark],
        );
        rounds.push({
          answer: answer.status === 200 ? answer.body.decidedBy[0] : answer.body.error.code,
          frozen,
          order: order.rows.map((r) => r.type),
        });
        await unfreeze();
      }
    } finally {
      await t.hub.db.exec(
        'DROP TRIGGER test_slow_spend ON operation_approvals; DROP FUNCTION test_slow_spend();',
      );
      await unfreeze();
    }
    for (const round of rounds) {
      expect(round.frozen).toBe(true);
      // Freeze first: the approval is revoked with the grant, or the decision reads `frozen`.
      // Decision first: it is allowed and the freeze waited for it.
      expect(
        [
          { answer: 'invalid_approval', order: ['console.customer.frozen'] },
          { answer: 'withdrawal.frozen', order: ['console.customer.frozen', 'policy.withdrawal.deny'] },
          { answer: 'withdrawal.allow', order: ['policy.withdrawal.allow', 'console.customer.frozen'] },
        ],
        JSON.stringify(round),
      ).toContainEqual({ answer: round.answer, order: round.order });
    }
  });
});

describe('switching withdrawals off or lowering the limit while a withdrawal is being decided', () => {
  it('the change waits for the decision or the decision sees it: never allowed after the change committed', async () => {
    await registerWithdrawalAccount(t.hub.db, customerId, bank, 0);
    const policy = loadPolicy(t.hub.config.linking.policyFile);
    // Each allowed decision is held 150 ms where it counts the withdrawal (after it read the switch
    // and the limit); commit-time triggers log the order in which the two transactions commit.
    await t.hub.db.exec(`
      CREATE TABLE test_commits (seq bigserial PRIMARY KEY, what text NOT NULL);
      CREATE FUNCTION test_slow_count() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN PERFORM pg_sleep(0.15); RETURN NEW; END $$;
      CREATE TRIGGER test_slow_count BEFORE INSERT ON withdrawal_usage FOR EACH ROW EXECUTE FUNCTION test_slow_count();
      CREATE FUNCTION test_log_commit() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN INSERT INTO test_commits (what) VALUES (TG_ARGV[0]); RETURN NULL; END $$;
      CREATE CONSTRAINT TRIGGER test_commit_withdrawal AFTER INSERT OR UPDATE ON withdrawal_usage
        DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION test_log_commit('withdrawal');
      CREATE CONSTRAINT TRIGGER test_commit_channel AFTER INSERT OR UPDATE ON customer_channels
        DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION test_log_commit('change');
      CREATE CONSTRAINT TRIGGER test_commit_limit AFTER INSERT OR UPDATE ON customer_limits
        DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION test_log_commit('change');`);
    const restore = async () => {
      await t.hub.db.query('DELETE FROM customer_channels WHERE customer_id = $1', [customerId]);
      await t.hub.db.query('UPDATE customer_limits SET withdrawal_daily = 3000000 WHERE customer_id = $1', [
        customerId,
      ]);
      await t.hub.db.query('DELETE FROM test_commits');
    };
    const who = { customerId, acr: 'phr', authTime: Math.floor(Date.now() / 1000), frozen: false };
    const rounds: { change: string; answer: string; commits: string[] }[] = [];
    try {
      await restore();
      for (let i = 0; i < 16; i++) {
        const amount = String(1200 + i);
        const a = await approve(withdrawal(amount));
        const change = i % 2 === 0 ? 'withdrawals off' : 'limit lowered';
        const [answer] = await Promise.all([
          decide({ operation: 'withdrawal', approvalToken: a.accessToken, details: withdrawal(amount) }),
          new Promise((r) => setTimeout(r, (i % 8) * 25)).then(
            (): Promise<unknown> =>
              change === 'withdrawals off'
                ? changeChannel(t.hub.db, policy, {
                    ...who,
                    channel: 'withdrawals',
                    enable: false,
                    actor: 'test',
                  })
                : changeLimit(t.hub.db, policy, t.hub.config.linking.defaultLimits, {
                    ...who,
                    limit: 'withdrawal_daily',
                    amount: 0,
                    actor: 'test',
                  }),
          ),
        ]);
        const commits = await t.hub.db.query<{ what: string }>('SELECT what FROM test_commits ORDER BY seq');
        rounds.push({
          change,
          answer: answer.status === 200 ? answer.body.decidedBy[0] : answer.body.error.code,
          commits: commits.rows.map((r) => r.what),
        });
        await restore();
      }
    } finally {
      await t.hub.db.exec(`
        DROP TRIGGER test_slow_count ON withdrawal_usage; DROP FUNCTION test_slow_count();
        DROP TRIGGER test_commit_withdrawal ON withdrawal_usage; DROP TRIGGER test_commit_channel ON customer_channels;
        DROP TRIGGER test_commit_limit ON customer_limits; DROP FUNCTION test_log_commit(); DROP TABLE test_commits;`);
      await restore().catch(() => {});
    }
    for (const round of rounds)
      expect(
        [
          { answer: 'withdrawal.allow', commits: ['withdrawal', 'change'] },
          {
            answer:
              round.change === 'withdrawals off' ? 'withdrawal.channel-disabled' : 'withdrawal.over-cap',
            commits: ['change'],
          },
        ],
        JSON.stringify(round),
      ).toContainEqual({ answer: round.answer, commits: round.commits });
  });
});

describe('changing the withdrawal account', () => {
  it('registers the approved account, holds withdrawals to it for the cool-off, and notifies', async () => {
    const next = { ...bank, bankCode: '0009', bankName: 'みらい銀行', accountNumber: '5556667' };
    const change = { type: 'withdrawal_account_change', sourceAccountId: sourceAccount, newAccount: next };
    const a = await approve(change);
    const res = await decide({
      operation: 'change_withdrawal_account',
      approvalToken: a.accessToken,
      details: change,
    });
    expect(res.body).toMatchObject({ decision: 'allow', decidedBy: ['account-change.allow'] });
    const hold = Date.parse(res.body.holdUntil) - Date.now();
    expect(hold).toBeGreaterThan(259_200_000 - 60_000);
    const critical = await t.hub.db.query(
      "SELECT 1 FROM notify_outbox WHERE customer_id = $1 AND kind = 'withdrawal_account_changed'",
      [customerId],
    );
    expect(critical.rowCount).toBeGreaterThan(0);

    const w = await approve(withdrawal('1000', next));
    const held = await decide({
      operation: 'withdrawal',
      approvalToken: w.accessToken,
      details: withdrawal('1000', next),
    });
    expect(held.body.decision).toBe('deny');
    expect(held.body.decidedBy).toEqual(['withdrawal.destination-cool-off']);
  });

  it('shows the new account number in full on the approval page, a withdrawal destination masked', async () => {
    const next = { ...bank, bankCode: '0009', bankName: 'みらい銀行', accountNumber: '7778889' };
    const change = { type: 'withdrawal_account_change', sourceAccountId: sourceAccount, newAccount: next };
    const ua = createUserAgent({ fetch: t.fetch, language: 'ja' });
    const changePage = await toApprovalPage(ua, (await push(change)).url, withPasskey);
    expect(changePage.html).toMatch(/id="approval-destination">[^<]*7778889</);
    const withdrawalPage = await toApprovalPage(ua, (await push(withdrawal('1000', next))).url, withPasskey);
    expect(withdrawalPage.html).toMatch(/id="approval-destination">[^<]*\*\*\*\*889</);
    expect(withdrawalPage.html).not.toContain('7778889');
  });

  it('refuses an account in another holder’s name', async () => {
    const change = {
      type: 'withdrawal_account_change',
      sourceAccountId: sourceAccount,
      newAccount: { ...bank, accountNumber: '4443332', holderName: 'ｻﾄｳ ﾊﾅｺ' },
    };
    const a = await approve(change);
    const res = await decide({
      operation: 'change_withdrawal_account',
      approvalToken: a.accessToken,
      details: change,
    });
    expect(res.body).toMatchObject({ decision: 'deny', decidedBy: ['account-change.name-mismatch'] });
    const active = await t.hub.db.query<{ account_number: string }>(
      "SELECT account_number FROM withdrawal_accounts WHERE customer_id = $1 AND status = 'active'",
      [customerId],
    );
    expect(active.rows[0]!.account_number).toBe('5556667');
  });
});

describe('a decision that fails half-way', () => {
  /** Runs `run` while every notice of `kind` to the customer fails to be written (the last write). */
  async function whileNoticesFail<T>(kind: string, run: () => Promise<T>): Promise<T> {
    await t.hub.db.exec(`
      CREATE FUNCTION test_fail_notice() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN RAISE EXCEPTION 'injected failure'; END $$;
      CREATE TRIGGER test_fail_notice BEFORE INSERT ON notify_outbox FOR EACH ROW
        WHEN (NEW.kind = '${kind}' AND NEW.customer_id = '${customerId}') EXECUTE FUNCTION test_fail_notice();`);
    try {
      return await run();
    } finally {
      await t.hub.db.exec(
        'DROP TRIGGER test_fail_notice ON notify_outbox; DROP FUNCTION test_fail_notice();',
      );
    }
  }

  /** The customer's approval of exactly these details (approved_at has whole seconds: no ordering). */
  const approvalOf = async (details: unknown) => {
    const found = await t.hub.db.query<{ id: string }>(
      'SELECT id FROM operation_approvals WHERE customer_id = $1 AND details = $2::jsonb',
      [customerId, JSON.stringify(details)],
    );
    expect(found.rows).toHaveLength(1);
    return found.rows[0]!.id;
  };

  /** What a decision on this approval wrote: its audit records, the approval's state, notices. */
  async function writtenFor(approvalId: string, operation: string, dedupeKey: string) {
    const count = async (sql: string, params: unknown[]) =>
      (await t.hub.db.query<{ n: number }>(sql, params)).rows[0]!.n;
    const approval = (
      await t.hub.db.query<{ spent: boolean; decision: string | null }>(
        'SELECT consumed_at IS NOT NULL AS spent, decision FROM operation_approvals WHERE id = $1',
        [approvalId],
      )
    ).rows[0]!;
    const notices = await t.hub.db.query<{ n: number; channels: number }>(
      'SELECT count(*)::int AS n, count(DISTINCT channel_id)::int AS channels FROM notify_outbox WHERE dedupe_key = $1',
      [dedupeKey],
    );
    return {
      decisions: await count(
        "SELECT count(*)::int AS n FROM audit_events WHERE type LIKE $1 AND data -> 'subject' ->> 'approvalId' = $2",
        [`policy.${operation}.%`, approvalId],
      ),
      ...approval,
      notices: notices.rows[0]!.n,
      noticeChannels: notices.rows[0]!.channels,
    };
  }

  it('a withdrawal whose notice cannot be written leaves nothing: unspent, uncounted, undecided; asked again, allowed once', async () => {
    await registerWithdrawalAccount(t.hub.db, customerId, bank, 0);
    const a = await approve(withdrawal('4321'));
    const approvalId = await approvalOf(withdrawal('4321'));
    const ask = () =>
      decide({ operation: 'withdrawal', approvalToken: a.accessToken, details: withdrawal('4321') });
    const written = () => writtenFor(approvalId, 'withdrawal', `withdrawal:${approvalId}`);
    const before = await usedToday();

    const failed = await whileNoticesFail('withdrawal_requested', ask);
    expect(failed).toEqual({ status: 500, body: expect.objectContaining({ error: 'server_error' }) });
    expect(await written()).toEqual({
      decisions: 0,
      spent: false,
      decision: null,
      notices: 0,
      noticeChannels: 0,
    });
    expect(await usedToday()).toBe(before);

    const again = await ask();
    expect(again.body).toMatchObject({ decision: 'allow', decidedBy: ['withdrawal.allow'], approvalId });
    const once = await written();
    expect(once).toMatchObject({ decisions: 1, spent: true, decision: 'allow' });
    expect(once.notices).toBeGreaterThan(0);
    expect(once.notices).toBe(once.noticeChannels);
    expect(await usedToday()).toBe(before + 4321);
    // The approval is spent now: a third request changes nothing.
    const third = await ask();
    expect(third.status).toBe(409);
    expect(third.body.error.code).toBe('approval_used');
    expect(await written()).toEqual(once);
    expect(await usedToday()).toBe(before + 4321);
  });

  it('an account change whose notice cannot be written keeps the old account and spends nothing; asked again, registered once', async () => {
    await registerWithdrawalAccount(t.hub.db, customerId, bank, 0);
    const next = { ...bank, bankCode: '0010', bankName: 'あおば銀行', accountNumber: '8889990' };
    const change = { type: 'withdrawal_account_change', sourceAccountId: sourceAccount, newAccount: next };
    const a = await approve(change);
    const approvalId = await approvalOf(change);
    const ask = () =>
      decide({ operation: 'change_withdrawal_account', approvalToken: a.accessToken, details: change });
    const accounts = async () =>
      (
        await t.hub.db.query<{ account_number: string; status: string }>(
          `SELECT account_number, status FROM withdrawal_accounts
           WHERE customer_id = $1 AND (status = 'active' OR account_number = $2) ORDER BY registered_at`,
          [customerId, next.accountNumber],
        )
      ).rows;
    const changeNotices = () =>
      t.hub.db
        .query<{ n: number }>(
          "SELECT count(*)::int AS n FROM notify_outbox WHERE customer_id = $1 AND kind = 'withdrawal_account_changed'",
          [customerId],
        )
        .then((r) => r.rows[0]!.n);
    const noticesBefore = await changeNotices();

    const failed = await whileNoticesFail('withdrawal_account_changed', ask);
    expect(failed).toEqual({ status: 500, body: expect.objectContaining({ error: 'server_error' }) });
    const after = await writtenFor(approvalId, 'change_withdrawal_account', 'none');
    expect(after).toMatchObject({ decisions: 0, spent: false, decision: null });
    expect(await accounts()).toEqual([{ account_number: bank.accountNumber, status: 'active' }]);
    expect(await changeNotices()).toBe(noticesBefore);

    const again = await ask();
    expect(again.body).toMatchObject({ decision: 'allow', decidedBy: ['account-change.allow'], approvalId });
    const registered = await accounts();
    expect(registered).toEqual([{ account_number: next.accountNumber, status: 'active' }]);
    const once = await writtenFor(approvalId, 'change_withdrawal_account', 'none');
    expect(once).toMatchObject({ decisions: 1, spent: true, decision: 'allow' });
    const told = await changeNotices();
    expect(told).toBeGreaterThan(noticesBefore);
    const third = await ask();
    expect(third.status).toBe(409);
    expect(third.body.error.code).toBe('approval_used');
    expect(await accounts()).toEqual(registered);
    expect(await writtenFor(approvalId, 'change_withdrawal_account', 'none')).toEqual(once);
    expect(await changeNotices()).toBe(told);
  });
});

describe('what is refused before anything is approved', () => {
  it('invalid details, and clients that may not ask for approvals, get invalid_authorization_details', async () => {
    await expect(push(withdrawal('12.5'))).rejects.toMatchObject({ error: 'invalid_authorization_details' });
    await expect(push({ ...withdrawal(), extra: 1 })).rejects.toMatchObject({
      error: 'invalid_authorization_details',
    });
    // A relying party that lists the types but is no member institution's.
    const stranger = await registerClient(t, 'stranger-rp', {
      grant_types: ['authorization_code'],
      response_types: ['code'],
      redirect_uris: [REDIRECT],
      scope: 'openid',
      authorization_details_types: ['withdrawal'],
    });
    await expect(push(withdrawal(), await configFor(t, stranger))).rejects.toMatchObject({
      error: 'invalid_authorization_details',
      error_description: expect.stringMatching(/member institution/),
    });
    // The demo aggregator is not registered for these types at all.
    const { private_jwk, client_id } = t.demoClient;
    const { kid, alg: _a, ...jwk } = private_jwk;
    const key = await crypto.subtle.importKey('jwk', jwk, { name: 'ECDSA', namedCurve: 'P-256' }, false, [
      'sign',
    ]);
    const aggregator = await client.discovery(
      new URL(t.issuer),
      client_id,
      undefined,
      client.PrivateKeyJwt({ key, kid }),
      { [client.customFetch]: t.fetch as client.CustomFetch },
    );
    await expect(push(withdrawal(), aggregator, t.demoClient.redirect_uris[0])).rejects.toMatchObject({
      error: 'invalid_authorization_details',
    });
  });

  it('names the customer reads carry no control, invisible or direction-changing characters (security review)', async () => {
    const refused = (details: unknown, path: string) =>
      expect(push(details)).rejects.toMatchObject({
        error: 'invalid_authorization_details',
        error_description: expect.stringContaining(path),
      });
    // A NUL was accepted, shown, and failed only after the customer's passkey ceremony (a 500: the
    // approval's JSON cannot hold it); a right-to-left override in the bank name showed the bank
    // code, branch and account number after it reversed on the approval page.
    await refused(withdrawal('700', { ...bank, holderName: 'ﾔﾏﾀﾞ\u0000ﾀﾛｳ' }), 'destination.holderName');
    await refused(withdrawal('700', { ...bank, bankName: 'かけはし銀行\u202e' }), 'destination.bankName');
    await refused(withdrawal('700', { ...bank, holderName: 'ﾔﾏﾀﾞ\u200bﾀﾛｳ' }), 'destination.holderName');
    await refused(withdrawal('700', { ...bank, holderName: 'ﾔﾏﾀﾞ\ud800' }), 'destination.holderName');
    await refused(withdrawal('700', { ...bank, holderName: 'ﾔﾏﾀﾞ\nﾀﾛｳ' }), 'destination.holderName');
    await refused(withdrawal('700', { ...bank, holderName: '\u3000' }), 'destination.holderName');
    await refused(withdrawal('700', { ...bank, bankName: ' かけはし銀行' }), 'destination.bankName');
    await refused(
      {
        type: 'withdrawal_account_change',
        sourceAccountId: sourceAccount,
        newAccount: { ...bank, bankName: '\u2066銀行' },
      },
      'newAccount.bankName',
    );
    // Spaces inside a name (ideographic or not) are how names are written.
    await expect(push(withdrawal('700', { ...bank, holderName: 'ヤマダ　タロウ' }))).resolves.toHaveProperty(
      'url',
    );
    // Every refusal is audited with the client, the operation and the reason (none were before).
    const refusals = async () =>
      (
        await t.hub.db.query<{ client_id: string; data: { kinds: string[]; reason: string } }>(
          "SELECT client_id, data FROM audit_events WHERE type = 'approval.request_refused' ORDER BY id",
        )
      ).rows;
    await waitFor('the refusals audited', async () => (await refusals()).length >= 8);
    expect((await refusals()).slice(-2)).toEqual([
      {
        client_id: 'brokerage-rp',
        data: { kinds: ['withdrawal'], reason: expect.stringContaining('destination.bankName') },
      },
      {
        client_id: 'brokerage-rp',
        data: {
          kinds: ['withdrawal_account_change'],
          reason: expect.stringContaining('newAccount.bankName'),
        },
      },
    ]);
  });

  it('the decision endpoint answers client mistakes in the API envelope', async () => {
    expect((await decide({ operation: 'withdrawal' }, null)).status).toBe(401);
    const bad = await decide({ operation: 'teleport', approvalToken: 'x', details: {} });
    expect(bad.status).toBe(400);
    expect(bad.body.error.code).toBe('invalid_request');
    const wrongType = await decide({
      operation: 'withdrawal',
      approvalToken: 'x',
      details: { type: 'withdrawal' },
    });
    expect(wrongType.body.error.code).toBe('invalid_details');
    const unknown = await decide({
      operation: 'withdrawal',
      approvalToken: 'not-a-token',
      details: withdrawal(),
    });
    expect(unknown).toMatchObject({ status: 400, body: { error: { code: 'invalid_approval' } } });
    const ingestOnly = await registerClient(t, 'other-api', {
      scope: 'institution:ingest',
      institution_id: DEMO_INSTITUTION_ID,
    });
    const res = await decide(
      { operation: 'withdrawal', approvalToken: 'x', details: withdrawal() },
      await tokenFor(t, ingestOnly, { scope: 'institution:ingest' }),
    );
    expect(res.status).toBe(403);
    expect(res.body.error.code).toBe('insufficient_scope');
  });

  it('another institution cannot spend an approval given to this brokerage', async () => {
    await t.hub.db.query(
      "INSERT INTO institutions (id, kind, name_ja, name_en) VALUES ('other-sec', 'brokerage', 'ほか証券', 'Other Securities')",
    );
    const other = await registerClient(t, 'other-sec-api', {
      scope: 'institution:decisions',
      institution_id: 'other-sec',
    });
    await registerWithdrawalAccount(t.hub.db, customerId, bank, 0);
    const a = await approve(withdrawal('500'));
    const res = await decide(
      { operation: 'withdrawal', approvalToken: a.accessToken, details: withdrawal('500') },
      await tokenFor(t, other, { scope: 'institution:decisions' }),
    );
    expect(res.status).toBe(403);
    expect(res.body.error.code).toBe('approval_foreign');
    // The refusal did not spend it: the brokerage itself still can.
    const own = await decide({
      operation: 'withdrawal',
      approvalToken: a.accessToken,
      details: withdrawal('500'),
    });
    expect(own.body).toMatchObject({ decision: 'allow', decidedBy: ['withdrawal.allow'] });
  });
});

describe('a customer exempted from passkeys (TOTP instead)', () => {
  const exemptId = 'cus_exempt_totp';
  const exemptNumber = '10000077';
  let exemptAccount: string;
  let secret: string;
  /** The current code; the replay guard is reset first unless `fresh` is false (one code per step). */
  const code = async (fresh = true) => {
    if (fresh)
      await t.hub.db.query('UPDATE totp_credentials SET last_step = 0 WHERE customer_id = $1', [exemptId]);
    return new OTPAuth.TOTP({ secret: OTPAuth.Secret.fromBase32(secret), digits: 6, period: 30 }).generate();
  };
  const withCode: Approver = {
    signIn: async (ua, uid) =>
      ua.postJson(`${t.issuer}/interaction/${uid}/alternative/verify`, {
        customerNumber: exemptNumber,
        code: await code(),
      }),
    approve: async (ua, uid) =>
      ua.postJson(`${t.issuer}/interaction/${uid}/approval/totp`, { code: await code() }),
  };
  const exemptWithdrawal = (amount: string, destination = bank) => ({
    ...withdrawal(amount, destination),
    sourceAccountId: exemptAccount,
  });
  /** A browser the exempted customer signed in with days ago. */
  let known: UserAgent;

  beforeAll(async () => {
    await t.hub.db.query(
      `INSERT INTO customers (id, institution_id, customer_number, name_kanji, name_kana)
       VALUES ($1, $2, $3, '山田 太郎', 'ヤマダ タロウ')`,
      [exemptId, DEMO_INSTITUTION_ID, exemptNumber],
    );
    exemptAccount = 'acc_exempt_1';
    await t.hub.db.query(
      `INSERT INTO accounts (id, customer_id, institution_id, kind, tax_category, branch_code, account_number, nickname, opened_on)
       VALUES ($1, $2, $3, 'securities', 'specific', '001', '7654321', '特定口座', '2020-04-01')`,
      [exemptAccount, exemptId, DEMO_INSTITUTION_ID],
    );
    await grantExemption(t.hub.db, {
      customerId: exemptId,
      reason: 'スマートフォンを持っていない',
      grantedBy: 'operator:a',
    });
    const ticket = await issueEnrollmentTicket(t.hub.authn, { customerId: exemptId, issuedBy: 'operator:a' });
    ({ secret } = await startTotpSetup(t.hub.authn, {
      customerId: exemptId,
      ticketId: ticket.ticketId,
      interactionId: 'setup-exempt',
    }));
    await confirmTotpSetup(t.hub.authn, { interactionId: 'setup-exempt', code: await code() });
    await registerWithdrawalAccount(t.hub.db, exemptId, bank, 0);
    known = createUserAgent({ fetch: t.fetch, language: 'ja' });
    const started = await push(exemptWithdrawal('1'));
    await toApprovalPage(known, started.url, withCode);
    await t.hub.db.query(
      "UPDATE known_devices SET created_at = now() - interval '2 days' WHERE customer_id = $1",
      [exemptId],
    );
  });

  it('the page offers a one-time code; the approval binds the details server-side; allowed within the lower cap', async () => {
    const { html } = await toApprovalPage(known, (await push(exemptWithdrawal('60000'))).url, withCode);
    expect(html).toContain('id="approval-code"');
    expect(html).toContain('1日10万円まで');
    const a = await approve(exemptWithdrawal('60000'), known, withCode);
    expect(a.tokenResponse.authorization_details).toEqual([exemptWithdrawal('60000')]);
    const stored = await t.hub.db.query<{
      acr: string;
      evidence: Record<string, unknown>;
      details_hash: string;
    }>(
      'SELECT acr, evidence, details_hash FROM operation_approvals WHERE customer_id = $1 AND consumed_at IS NULL ORDER BY approved_at DESC LIMIT 1',
      [exemptId],
    );
    const expected = createHash('sha256')
      .update(canonicalJson(exemptWithdrawal('60000')))
      .digest('base64url');
    expect(stored.rows[0]).toEqual({
      acr: 'otp',
      evidence: { method: 'totp', detailsHash: expected },
      details_hash: expected,
    });
    const res = await decide({
      operation: 'withdrawal',
      approvalToken: a.accessToken,
      details: exemptWithdrawal('60000'),
    });
    expect(res.body).toMatchObject({ decision: 'allow', decidedBy: ['withdrawal.exempted-totp'] });
    expect(res.body.obligations).toMatchObject({ capAmount: 100_000, notify: ['customer', 'brokerage'] });
    expect(res.body.obligations.notice.ja).toContain('10万円');
    // Tampering is caught as for passkeys: the hash of what is presented must be the approved one.
    const b = await approve(exemptWithdrawal('100'), known, withCode);
    const tampered = await decide({
      operation: 'withdrawal',
      approvalToken: b.accessToken,
      details: exemptWithdrawal('1000'),
    });
    expect(tampered.body.decidedBy).toContain('withdrawal.unbound');
  });

  it('past 100,000 yen a day, from a new device, at elevated risk or after 2 minutes it is not allowed', async () => {
    const over = await approve(exemptWithdrawal('50000'), known, withCode);
    const o = await decide({
      operation: 'withdrawal',
      approvalToken: over.accessToken,
      details: exemptWithdrawal('50000'),
    });
    expect(o.body).toMatchObject({ decision: 'deny', decidedBy: ['withdrawal.exempted-over-cap'] });

    const fresh = await approve(exemptWithdrawal('1000'), undefined, withCode);
    const n = await decide({
      operation: 'withdrawal',
      approvalToken: fresh.accessToken,
      details: exemptWithdrawal('1000'),
    });
    expect(n.body).toMatchObject({ decision: 'deny', decidedBy: ['withdrawal.exempted-new-device'] });

    const risky = await approve(exemptWithdrawal('1000'), known, withCode);
    await t.hub.db.query(
      `INSERT INTO risk_levels (customer_id, level) VALUES ($1, 'MEDIUM')
       ON CONFLICT (customer_id) DO UPDATE SET level = 'MEDIUM'`,
      [exemptId],
    );
    try {
      const r = await decide({
        operation: 'withdrawal',
        approvalToken: risky.accessToken,
        details: exemptWithdrawal('1000'),
      });
      expect(r.body).toMatchObject({ decision: 'deny', decidedBy: ['withdrawal.exempted-elevated-risk'] });
    } finally {
      await t.hub.db.query("UPDATE risk_levels SET level = 'LOW' WHERE customer_id = $1", [exemptId]);
    }

    const stale = await approve(exemptWithdrawal('1000'), known, withCode);
    await t.hub.db.query(
      "UPDATE operation_approvals SET approved_at = now() - interval '3 minutes' WHERE customer_id = $1 AND consumed_at IS NULL",
      [exemptId],
    );
    const s = await decide({
      operation: 'withdrawal',
      approvalToken: stale.accessToken,
      details: exemptWithdrawal('1000'),
    });
    expect(s.body).toMatchObject({ decision: 'step_up', decidedBy: ['withdrawal.exempted-totp-stale'] });
    expect(s.body.obligations.stepUp).toMatchObject({ acrValues: ['otp'], maxAgeSeconds: 120 });
    // Nothing but the first 60,000 yen was counted.
    const used = await t.hub.db.query<{ amount: string }>(
      'SELECT amount FROM withdrawal_usage WHERE customer_id = $1',
      [exemptId],
    );
    expect(used.rows.map((r) => Number(r.amount))).toEqual([60_000]);
  });

  it('a new withdrawal account cannot be approved with a code', async () => {
    const change = {
      type: 'withdrawal_account_change',
      sourceAccountId: exemptAccount,
      newAccount: { ...bank, accountNumber: '3332221' },
    };
    const { uid, html } = await toApprovalPage(known, (await push(change)).url, withCode);
    expect(html).toContain('id="approval-no-code"');
    expect(html).not.toContain('id="approval-code"');
    const res = await known.postJson(`${t.issuer}/interaction/${uid}/approval/totp`, { code: await code() });
    expect(res.status).toBe(400);
    expect(res.json<{ error_code: string }>().error_code).toBe('ERR_APPROVAL_NEEDS_PASSKEY');
    const stored = await t.hub.db.query(
      "SELECT 1 FROM operation_approvals WHERE customer_id = $1 AND kind = 'withdrawal_account_change'",
      [exemptId],
    );
    expect(stored.rowCount).toBe(0);
  });

  it('a customer who is frozen cannot approve with a code, even on an interaction still open', async () => {
    const { uid } = await toApprovalPage(known, (await push(exemptWithdrawal('300'))).url, withCode);
    // An operator's freeze also ends the customer's sessions and interactions, but one that lands
    // while this request is in flight (its interaction already read) leaves only the status to see:
    // that state, made directly.
    await t.hub.db.query("UPDATE customers SET status = 'frozen' WHERE id = $1", [exemptId]);
    try {
      const res = await known.postJson(`${t.issuer}/interaction/${uid}/approval/totp`, {
        code: await code(),
      });
      // The passkey path's answer (finishPasskeyAuthentication): the customer is not active.
      expect(res.status, res.text).toBe(400);
      expect(res.json<{ error_code: string }>().error_code).toBe('ERR_CUSTOMER_INACTIVE');
      const granted = await t.hub.db.query(
        "SELECT 1 FROM operation_approvals WHERE customer_id = $1 AND details -> 'instructedAmount' ->> 'amount' = '300'",
        [exemptId],
      );
      expect(granted.rowCount).toBe(0);
      const audited = await t.hub.db.query(
        "SELECT 1 FROM audit_events WHERE type = 'approval.rejected' AND customer_id = $1 AND data ->> 'reason' = 'customer not active'",
        [exemptId],
      );
      expect(audited.rowCount).toBe(1);
    } finally {
      await t.hub.db.query("UPDATE customers SET status = 'active' WHERE id = $1", [exemptId]);
    }
  });

  it('the sign-in code does not approve; wrong codes are limited; an ended exemption voids a code approval', async () => {
    const held = await approve(exemptWithdrawal('500'), known, withCode);

    const ua = createUserAgent({ fetch: t.fetch });
    let { response } = await ua.follow((await push(exemptWithdrawal('700'))).url, { stopAt: isCallback });
    const signInCode = await code();
    const verified = await ua.postJson(`${t.issuer}/interaction/${uidOf(response.url)}/alternative/verify`, {
      customerNumber: exemptNumber,
      code: signInCode,
    });
    ({ response } = await ua.follow(new URL(verified.json<{ redirectTo: string }>().redirectTo, t.issuer), {
      stopAt: isCallback,
    }));
    const endpointOf = `${t.issuer}/interaction/${uidOf(response.url)}/approval/totp`;
    const replay = await ua.postJson(endpointOf, { code: signInCode });
    expect(replay.status).toBe(400);
    expect(replay.json<{ error_code: string }>().error_code).toBe('ERR_APPROVAL_TOTP');
    // Ten wrong codes at once: the limit holds under concurrency — four more are checked (the replay
    // took the first of five slots), the other six are refused unchecked.
    const burst = await Promise.all(
      Array.from({ length: 10 }, () => ua.postJson(endpointOf, { code: '000000' })),
    );
    expect(burst.map((r) => r.status).sort()).toEqual([400, 400, 400, 400, 429, 429, 429, 429, 429, 429]);
    // Five wrong codes in 15 minutes: even the right one is refused now.
    const limited = await ua.postJson(endpointOf, { code: await code() });
    expect(limited.status).toBe(429);
    expect(limited.json<{ error_code: string }>().error_code).toBe('ERR_APPROVAL_TOTP_ATTEMPTS');
    const rejected = await t.hub.db.query(
      "SELECT 1 FROM audit_events WHERE type = 'approval.rejected' AND customer_id = $1 AND data ->> 'method' = 'totp' AND data ->> 'reason' <> 'customer not active'",
      [exemptId],
    );
    expect(rejected.rowCount).toBe(13);
    const approvals = await t.hub.db.query(
      "SELECT 1 FROM operation_approvals WHERE customer_id = $1 AND details -> 'instructedAmount' ->> 'amount' = '700'",
      [exemptId],
    );
    expect(approvals.rowCount).toBe(0);

    await endExemption(t.hub.db, exemptId, 'operator:a');
    const res = await decide({
      operation: 'withdrawal',
      approvalToken: held.accessToken,
      details: exemptWithdrawal('500'),
    });
    expect(res.body).toMatchObject({ decision: 'step_up', decidedBy: ['withdrawal.not-phishing-resistant'] });
  });
});
