/**
 * Customer limits, channels and allowed products on the security page (issue 6, item 3): lowering
 * applies at once; raising needs a passkey sign-in within 5 minutes and waits for the policy's
 * cool-off; a raise waiting is cancelled by a later lowering; every change is decided by the policy,
 * audited and notified. Brokerages ask POST /api/institution/v1/decisions with operation `trade`
 * before an order and get the policy's decision for every row of the `trade` table.
 */

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { completeLogin } from '../../conformance/lib/login.ts';
import { createUserAgent, type UserAgent } from '../../conformance/lib/userAgent.ts';
import type { Queryable } from '../../src/db/index.ts';
import { DEMO_INSTITUTION_ID } from '../../src/demo/seed.ts';
import {
  applyDueLimitRaises,
  changeChannel,
  changeLimit,
  changeProduct,
  channelStates,
  customerLimits,
  loadPolicy,
  productStates,
} from '../../src/linking/index.ts';
import { addEmailChannel } from '../../src/notify/index.ts';
import { enrollDemoCustomer } from '../support/customer.ts';
import { insertCustomer } from '../support/db.ts';
import { startTestHub, type TestHub } from '../support/hub.ts';
import { registerClient, type Token, tokenFor } from '../support/institution.ts';
import { type OpenApiValidator, openApiValidator } from '../support/openapi.ts';
import type { PasskeyEmulator } from '../support/passkeyEmulator.ts';
import { accountsStatus, demoRp, redeem, startAuthorization } from '../support/rp.ts';

let t: TestHub;
let device: PasskeyEmulator;
let customerId: string;
const defaults = { withdrawal_daily: 3_000_000, sweep_daily: 1_000_000 };
const defaultProducts = ['domestic_equity', 'foreign_equity', 'investment_trust', 'bonds'] as const;
let accountId: string;
let decisions: Token;
let endpoint: string;
let oas: OpenApiValidator;

beforeAll(async () => {
  t = await startTestHub();
  device = await enrollDemoCustomer(t);
  customerId = t.hub.demo!.customerId;
  await addEmailChannel(t.hub.db, t.hub.authn.kek!, {
    customerId,
    address: 'taro@example.jp',
    actor: 'system',
  });
});
afterAll(() => t?.close());

async function signedIn(): Promise<{ ua: UserAgent; csrf: string }> {
  const ua = createUserAgent({ fetch: t.fetch, language: 'ja' });
  await ua.get(`${t.issuer}/account`);
  const options = await ua.postJson(`${t.issuer}/account/login/options`, {});
  await ua.postJson(`${t.issuer}/account/login/verify`, device.authenticate(options.json(), t.issuer));
  const page = await ua.get(`${t.issuer}/account`);
  return { ua, csrf: /name="csrf" value="([^"]+)"/.exec(page.text)![1]! };
}

const limitsNow = () => customerLimits(t.hub.db, customerId, defaults);

/** The limits as stored (customer_limits), without raises in force not yet written into them. */
const storedLimits = async () => {
  const r = await t.hub.db.query<{ withdrawal_daily: string; sweep_daily: string }>(
    'SELECT withdrawal_daily, sweep_daily FROM customer_limits WHERE customer_id = $1',
    [customerId],
  );
  return {
    withdrawal_daily: Number(r.rows[0]!.withdrawal_daily),
    sweep_daily: Number(r.rows[0]!.sweep_daily),
  };
};

/** The `limits.raise.applied` records of the customer, oldest first. */
const raisesApplied = async () =>
  (
    await t.hub.db.query<{
      data: { raiseId: string; limit: string; from: number; to: number; effectiveAt: string };
    }>("SELECT data FROM audit_events WHERE type = 'limits.raise.applied' AND customer_id = $1 ORDER BY id", [
      customerId,
    ])
  ).rows.map((r) => r.data);

/** Runs a read in a READ ONLY transaction: it fails if the read writes anything. */
const readOnly = <T>(read: (tx: Queryable) => Promise<T>) =>
  t.hub.db.transaction(async (tx) => {
    await tx.query('SET TRANSACTION READ ONLY');
    return read(tx);
  });

describe('limits on the security page', () => {
  it('shows the limits; lowering applies at once, is audited and notified', async () => {
    const { ua, csrf } = await signedIn();
    const page = await ua.get(`${t.issuer}/account`);
    expect(page.text).toContain('1日あたりの出金限度額');
    expect(page.text).toContain('3,000,000円');
    const res = await ua.postForm(`${t.issuer}/account/limits`, {
      csrf,
      limit: 'withdrawal_daily',
      amount: '500000',
    });
    expect(res.status).toBe(303);
    expect((await limitsNow()).current.withdrawal_daily).toBe(500_000);
    const audit = await t.hub.db.query(
      "SELECT 1 FROM audit_events WHERE type = 'policy.lower_limit.allow' AND customer_id = $1",
      [customerId],
    );
    expect(audit.rowCount).toBe(1);
    const told = await t.hub.db.query<{ data: { from: number; to: number } }>(
      "SELECT data FROM notify_outbox WHERE customer_id = $1 AND kind = 'limit_changed'",
      [customerId],
    );
    expect(told.rows[0]?.data).toMatchObject({ from: 3_000_000, to: 500_000 });
  });

  it('raising after a fresh sign-in waits for the cool-off; a stale sign-in is refused', async () => {
    const { ua, csrf } = await signedIn();
    const raise = await ua.postForm(`${t.issuer}/account/limits`, {
      csrf,
      limit: 'withdrawal_daily',
      amount: '2000000',
    });
    expect(raise.status).toBe(303);
    const after = await limitsNow();
    expect(after.current.withdrawal_daily).toBe(500_000);
    expect(after.pending).toHaveLength(1);
    expect(after.pending[0]).toMatchObject({ limit: 'withdrawal_daily', from: 500_000, to: 2_000_000 });
    const wait = after.pending[0]!.effectiveAt.getTime() - Date.now();
    expect(wait).toBeGreaterThan(86_400_000 - 60_000);
    expect((await ua.get(`${t.issuer}/account`)).text).toContain('2,000,000円への引き上げは');

    // The sign-in ages past 5 minutes: raising is refused and nothing changes.
    await t.hub.db.query(
      `UPDATE oidc_payloads SET payload = jsonb_set(payload, '{loginTs}', to_jsonb((payload ->> 'loginTs')::bigint - 600))
       WHERE model = 'Session' AND payload ->> 'accountId' = $1`,
      [customerId],
    );
    const stale = await ua.postForm(`${t.issuer}/account/limits`, {
      csrf,
      limit: 'sweep_daily',
      amount: '5000000',
    });
    expect(stale.status).toBe(403);
    expect(stale.text).toContain('ERR_LIMIT_NEEDS_FRESH_PASSKEY');
    expect((await limitsNow()).current.sweep_daily).toBe(1_000_000);
    expect((await limitsNow()).pending).toHaveLength(1);
  });

  it('a raise takes effect when its cool-off ends; a lowering cancels a raise still waiting', async () => {
    await t.hub.db.query(
      "UPDATE limit_raises SET effective_at = now() - interval '1 second' WHERE customer_id = $1",
      [customerId],
    );
    const applied = await limitsNow();
    expect(applied.current.withdrawal_daily).toBe(2_000_000);
    expect(applied.pending).toEqual([]);
    // Reading it writes nothing: it works in a READ ONLY transaction, and nothing is recorded yet.
    expect(await readOnly((tx) => customerLimits(tx, customerId, defaults))).toEqual(applied);
    expect(await raisesApplied()).toEqual([]);
    expect(await storedLimits()).toEqual({ withdrawal_daily: 500_000, sweep_daily: 1_000_000 });

    const { ua, csrf } = await signedIn();
    await ua.postForm(`${t.issuer}/account/limits`, { csrf, limit: 'sweep_daily', amount: '3000000' });
    // A change of the customer's limits writes the raise in force first, with its record.
    expect(await storedLimits()).toEqual({ withdrawal_daily: 2_000_000, sweep_daily: 1_000_000 });
    expect(await raisesApplied()).toEqual([
      expect.objectContaining({ limit: 'withdrawal_daily', from: 500_000, to: 2_000_000 }),
    ]);
    expect((await limitsNow()).pending).toHaveLength(1);
    await ua.postForm(`${t.issuer}/account/limits`, { csrf, limit: 'sweep_daily', amount: '100000' });
    const lowered = await limitsNow();
    expect(lowered.current.sweep_daily).toBe(100_000);
    expect(lowered.pending).toEqual([]);
  });

  it('the sweeper writes a raise in force into the stored limits and records it once, however many nodes run it', async () => {
    const { ua, csrf } = await signedIn();
    const raise = await ua.postForm(`${t.issuer}/account/limits`, {
      csrf,
      limit: 'sweep_daily',
      amount: '400000',
    });
    expect(raise.status).toBe(303);
    const { rows } = await t.hub.db.query<{ id: string }>(
      `UPDATE limit_raises SET effective_at = now() - interval '1 second'
       WHERE customer_id = $1 AND applied_at IS NULL AND cancelled_at IS NULL RETURNING id`,
      [customerId],
    );
    expect(rows).toHaveLength(1);
    const before = await readOnly((tx) => customerLimits(tx, customerId, defaults));
    expect(before).toEqual({ current: { withdrawal_daily: 2_000_000, sweep_daily: 400_000 }, pending: [] });
    expect((await storedLimits()).sweep_daily).toBe(100_000);

    // Two nodes' sweepers at once, then another round: the raise is applied and recorded once.
    const runs = await Promise.all([
      applyDueLimitRaises(t.hub.db, defaults),
      applyDueLimitRaises(t.hub.db, defaults),
    ]);
    expect(runs[0] + runs[1]).toBe(1);
    expect(await applyDueLimitRaises(t.hub.db, defaults)).toBe(0);
    const records = (await raisesApplied()).filter((r) => r.raiseId === rows[0]!.id);
    expect(records).toEqual([
      expect.objectContaining({
        limit: 'sweep_daily',
        from: 100_000,
        to: 400_000,
        effectiveAt: expect.any(String),
      }),
    ]);
    expect(await storedLimits()).toEqual({ withdrawal_daily: 2_000_000, sweep_daily: 400_000 });
    expect(await limitsNow()).toEqual(before);
  });

  it('refuses malformed input and changes nothing', async () => {
    const { ua, csrf } = await signedIn();
    const before = await limitsNow();
    for (const form of [
      { csrf, limit: 'withdrawal_daily', amount: '-5' },
      { csrf, limit: 'withdrawal_daily', amount: '1e9' },
      { csrf, limit: 'order_daily', amount: '100' },
      { csrf, limit: 'withdrawal_daily', amount: '99999999999' },
    ]) {
      const res = await ua.postForm(`${t.issuer}/account/limits`, form);
      expect(res.status).toBe(400);
      expect(res.text).toContain('ERR_LIMIT_INVALID');
    }
    const forged = await ua.postForm(`${t.issuer}/account/limits`, {
      csrf: 'x',
      limit: 'withdrawal_daily',
      amount: '1',
    });
    expect(forged.status).toBe(403);
    expect(await limitsNow()).toEqual(before);
  });
});

describe('a raise asked by a customer frozen since the page read their status', () => {
  it('is decided on the status under the customer’s lock: denied, audited, nothing raised', async () => {
    const policy = loadPolicy(t.hub.config.linking.policyFile);
    // What the account page read before an operator's freeze committed: active, freshly signed in.
    const who = {
      customerId,
      acr: 'phr',
      authTime: Math.floor(Date.now() / 1000),
      frozen: false,
      actor: `customer:${customerId}`,
    };
    await t.hub.db.query(
      "INSERT INTO customer_channels (customer_id, channel, disabled) VALUES ($1, 'sweeps', true)",
      [customerId],
    );
    const limitsBefore = await limitsNow();
    const channelsBefore = await channelStates(t.hub.db, customerId);
    const productsBefore = await productStates(t.hub.db, customerId, defaultProducts);
    const denials = async () =>
      (
        await t.hub.db.query<{ n: number }>(
          "SELECT count(*)::int AS n FROM audit_events WHERE type = 'policy.raise_limit.deny' AND customer_id = $1",
          [customerId],
        )
      ).rows[0]!.n;
    const denied = await denials();
    await t.hub.db.query("UPDATE customers SET status = 'frozen' WHERE id = $1", [customerId]);
    try {
      const limit = limitsBefore.current.withdrawal_daily + 1000;
      await expect(
        changeLimit(t.hub.db, policy, defaults, { ...who, limit: 'withdrawal_daily', amount: limit }),
      ).rejects.toMatchObject({ code: 'ERR_LIMIT_DENIED' });
      await expect(
        changeChannel(t.hub.db, policy, { ...who, channel: 'sweeps', enable: true }),
      ).rejects.toMatchObject({ code: 'ERR_LIMIT_DENIED' });
      await expect(
        changeProduct(t.hub.db, policy, defaultProducts, { ...who, product: 'margin', allow: true }),
      ).rejects.toMatchObject({ code: 'ERR_LIMIT_DENIED' });
    } finally {
      await t.hub.db.query("UPDATE customers SET status = 'active' WHERE id = $1", [customerId]);
    }
    expect(await denials()).toBe(denied + 3);
    expect(await limitsNow()).toEqual(limitsBefore);
    expect(await channelStates(t.hub.db, customerId)).toEqual(channelsBefore);
    expect(await productStates(t.hub.db, customerId, defaultProducts)).toEqual(productsBefore);
    await t.hub.db.query("DELETE FROM customer_channels WHERE customer_id = $1 AND channel = 'sweeps'", [
      customerId,
    ]);
  });
});

describe('channels the customer switches off', () => {
  it('switching off third-party access stops the aggregator at once; switching on waits, after a fresh sign-in', async () => {
    const rp = await demoRp(t);
    const started = await startAuthorization(rp);
    const callback = await completeLogin({ fetch: t.fetch, authorizationUrl: started.url, device });
    const tokens = await redeem(rp, started, callback);
    expect(await accountsStatus(t, rp, tokens.access_token)).toBe(200);

    const { ua, csrf } = await signedIn();
    const aggregatorAccess = (action: 'disable' | 'enable') =>
      ua.postForm(`${t.issuer}/account/channels`, { csrf, channel: 'aggregator_access', action });
    expect((await aggregatorAccess('disable')).status).toBe(303);
    expect(await accountsStatus(t, rp, tokens.access_token)).toBe(403);
    expect(await outbox('channel_changed')).toEqual([{ channel: 'aggregator_access', enabled: false }]);
    expect((await ua.get(`${t.issuer}/account`)).text).toContain('data-channel-name="aggregator_access"');

    expect((await aggregatorAccess('enable')).status).toBe(303);
    const pending = (await channelStates(t.hub.db, customerId)).find(
      (c) => c.channel === 'aggregator_access',
    )!;
    expect(pending.enabled).toBe(false);
    expect(pending.enableAt!.getTime() - Date.now()).toBeGreaterThan(86_400_000 - 60_000);
    expect(await accountsStatus(t, rp, tokens.access_token)).toBe(403);
    // The cool-off ends: access is back without anything else happening, and reading it writes nothing.
    await t.hub.db.query(
      "UPDATE customer_channels SET enable_at = now() - interval '1 second' WHERE customer_id = $1",
      [customerId],
    );
    expect((await readOnly((tx) => channelStates(tx, customerId))).every((c) => c.enabled)).toBe(true);
    expect((await channelStates(t.hub.db, customerId)).every((c) => c.enabled && !c.enableAt)).toBe(true);
    expect(await accountsStatus(t, rp, tokens.access_token)).toBe(200);
    // Switching off again (the row still holds the ended cool-off) applies at once and is told.
    expect((await aggregatorAccess('disable')).status).toBe(303);
    expect(await accountsStatus(t, rp, tokens.access_token)).toBe(403);
    expect((await outbox('channel_changed')).at(-1)).toEqual({
      channel: 'aggregator_access',
      enabled: false,
    });
  });

  it('switching a channel on after a stale sign-in is refused; unknown channels are refused', async () => {
    const { ua, csrf } = await signedIn();
    await ua.postForm(`${t.issuer}/account/channels`, { csrf, channel: 'withdrawals', action: 'disable' });
    await t.hub.db.query(
      `UPDATE oidc_payloads SET payload = jsonb_set(payload, '{loginTs}', to_jsonb((payload ->> 'loginTs')::bigint - 600))
       WHERE model = 'Session' AND payload ->> 'accountId' = $1`,
      [customerId],
    );
    const stale = await ua.postForm(`${t.issuer}/account/channels`, {
      csrf,
      channel: 'withdrawals',
      action: 'enable',
    });
    expect(stale.status).toBe(403);
    expect(stale.text).toContain('ERR_LIMIT_NEEDS_FRESH_PASSKEY');
    const state = (await channelStates(t.hub.db, customerId)).find((c) => c.channel === 'withdrawals')!;
    expect(state).toMatchObject({ enabled: false, enableAt: null });
    const bad = await ua.postForm(`${t.issuer}/account/channels`, {
      csrf,
      channel: 'telex',
      action: 'disable',
    });
    expect(bad.status).toBe(400);
  });
});

const stateOf = async (product: string) =>
  (await productStates(t.hub.db, customerId, defaultProducts)).find((p) => p.product === product)!;

async function trade(body: Record<string, unknown>, token: Token | null = decisions) {
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  if (token) {
    headers.authorization = `DPoP ${token.value}`;
    headers.dpop = token.proof('POST', endpoint);
  }
  const res = await t.fetch(endpoint, {
    method: 'POST',
    headers,
    body: JSON.stringify({ operation: 'trade', ...body }),
  });
  // biome-ignore lint/suspicious/noExplicitAny: the test reads the JSON answer field by field
  const answer = { status: res.status, body: (await res.json()) as Record<string, any> };
  // Every answer, decisions and mistakes alike, is what the OpenAPI document says.
  oas.check('POST', endpoint, answer.status, answer.body);
  return answer;
}

const outbox = async (kind: string) =>
  (
    await t.hub.db.query<{ data: Record<string, unknown> }>(
      'SELECT data FROM notify_outbox WHERE customer_id = $1 AND kind = $2 ORDER BY id',
      [customerId, kind],
    )
  ).rows.map((r) => r.data);

describe('the products a customer allows (operation trade at the decision endpoint)', () => {
  beforeAll(async () => {
    endpoint = `${t.issuer}/api/institution/v1/decisions`;
    accountId = (
      await t.hub.db.query<{ id: string }>(
        "SELECT id FROM accounts WHERE customer_id = $1 AND kind = 'securities' ORDER BY id LIMIT 1",
        [customerId],
      )
    ).rows[0]!.id;
    const api = await registerClient(t, 'brokerage-api', {
      scope: 'institution:decisions',
      institution_id: DEMO_INSTITUTION_ID,
    });
    decisions = await tokenFor(t, api, { scope: 'institution:decisions' });
    oas = openApiValidator(
      (await (await t.fetch(`${t.issuer}/api/openapi.json`)).json()) as Record<string, unknown>,
    );
  });

  it('the security page lists the catalogue with the configured defaults; a default product trades', async () => {
    const { ua } = await signedIn();
    const page = (await ua.get(`${t.issuer}/account`)).text;
    expect(page).toContain('お取引する商品');
    expect(page).toContain('data-product="foreign_equity" data-allowed="true"');
    expect(page).toContain('data-product="margin" data-allowed="false"');
    const ok = await trade({ accountId, product: 'foreign_equity', reference: 'ord-1' });
    expect(ok.status).toBe(200);
    expect(ok.body).toMatchObject({ operation: 'trade', decision: 'allow', decidedBy: ['trade.allow'] });
    expect(ok.body.policyVersion).toBe('2026-11-26.4');
    const audit = await t.hub.db.query<{ data: { facts: Record<string, unknown>; subject: unknown } }>(
      "SELECT data FROM audit_events WHERE type = 'policy.trade.allow' AND customer_id = $1",
      [customerId],
    );
    expect(audit.rows[0]?.data.facts).toMatchObject({ product: 'foreign_equity', productAllowed: true });
    expect(audit.rows[0]?.data.subject).toEqual({ accountId, product: 'foreign_equity', reference: 'ord-1' });
  });

  it('blocking a product applies at once, is told on every channel, and orders in it are denied and told', async () => {
    const { ua, csrf } = await signedIn();
    const res = await ua.postForm(`${t.issuer}/account/products`, {
      csrf,
      product: 'foreign_equity',
      action: 'block',
    });
    expect(res.status).toBe(303);
    expect(await stateOf('foreign_equity')).toMatchObject({ allowed: false, allowAt: null });
    expect(await outbox('products_changed')).toEqual([{ product: 'foreign_equity', allowed: false }]);
    const lowered = await t.hub.db.query<{ data: { subject: unknown } }>(
      "SELECT data FROM audit_events WHERE type = 'policy.lower_limit.allow' AND customer_id = $1 AND data -> 'subject' ? 'product'",
      [customerId],
    );
    expect(lowered.rows.map((r) => r.data.subject)).toEqual([{ product: 'foreign_equity', allow: false }]);

    const denied = await trade({ accountId, product: 'foreign_equity', reference: 'ord-2' });
    expect(denied.body).toMatchObject({ decision: 'deny', decidedBy: ['trade.product-blocked'] });
    expect(denied.body.reasons[0].ja).toContain('許可していません');
    expect(await outbox('security_alert')).toEqual([{ reason: 'suspicious_activity', action: 'none' }]);
    // Other products are untouched.
    expect((await trade({ accountId, product: 'domestic_equity' })).body.decision).toBe('allow');
    // Blocking again changes nothing and tells nobody again.
    await ua.postForm(`${t.issuer}/account/products`, { csrf, product: 'foreign_equity', action: 'block' });
    expect(await outbox('products_changed')).toHaveLength(1);
  });

  it('allowing a product needs a fresh passkey sign-in and waits for the cool-off; then orders are allowed', async () => {
    const { ua, csrf } = await signedIn();
    const res = await ua.postForm(`${t.issuer}/account/products`, {
      csrf,
      product: 'foreign_equity',
      action: 'allow',
    });
    expect(res.status).toBe(303);
    const pending = await stateOf('foreign_equity');
    expect(pending.allowed).toBe(false);
    expect(pending.allowAt!.getTime() - Date.now()).toBeGreaterThan(86_400_000 - 60_000);
    expect((await ua.get(`${t.issuer}/account`)).text).toContain('からお取引いただけます');
    expect((await outbox('products_changed')).at(-1)).toMatchObject({
      product: 'foreign_equity',
      allowed: true,
      effectiveAt: pending.allowAt!.toISOString(),
    });
    const raised = await t.hub.db.query(
      "SELECT 1 FROM audit_events WHERE type = 'policy.raise_limit.allow' AND customer_id = $1 AND data -> 'subject' ->> 'product' = 'foreign_equity'",
      [customerId],
    );
    expect(raised.rowCount).toBe(1);

    const waiting = await trade({ accountId, product: 'foreign_equity' });
    expect(waiting.body).toMatchObject({ decision: 'deny', decidedBy: ['trade.product-cool-off'] });
    expect(Date.parse(waiting.body.allowAt)).toBe(pending.allowAt!.getTime());

    await t.hub.db.query(
      "UPDATE customer_products SET allow_at = now() - interval '1 second' WHERE customer_id = $1",
      [customerId],
    );
    expect(await stateOf('foreign_equity')).toMatchObject({ allowed: true, allowAt: null });
    const read = await readOnly((tx) => productStates(tx, customerId, defaultProducts));
    expect(read.find((p) => p.product === 'foreign_equity')).toMatchObject({ allowed: true, allowAt: null });
    expect((await trade({ accountId, product: 'foreign_equity' })).body.decidedBy).toEqual(['trade.allow']);
  });

  it('a product off by default (margin) is allowed only after a fresh sign-in; a stale one is refused', async () => {
    const { ua, csrf } = await signedIn();
    expect((await trade({ accountId, product: 'margin' })).body.decidedBy).toEqual(['trade.product-blocked']);
    await t.hub.db.query(
      `UPDATE oidc_payloads SET payload = jsonb_set(payload, '{loginTs}', to_jsonb((payload ->> 'loginTs')::bigint - 600))
       WHERE model = 'Session' AND payload ->> 'accountId' = $1`,
      [customerId],
    );
    const stale = await ua.postForm(`${t.issuer}/account/products`, {
      csrf,
      product: 'margin',
      action: 'allow',
    });
    expect(stale.status).toBe(403);
    expect(stale.text).toContain('ERR_LIMIT_NEEDS_FRESH_PASSKEY');
    expect(await stateOf('margin')).toMatchObject({ allowed: false, allowAt: null });

    const fresh = await signedIn();
    await fresh.ua.postForm(`${t.issuer}/account/products`, {
      csrf: fresh.csrf,
      product: 'margin',
      action: 'allow',
    });
    expect((await stateOf('margin')).allowAt).not.toBeNull();
    // Blocking while the allow waits cancels it at once.
    await fresh.ua.postForm(`${t.issuer}/account/products`, {
      csrf: fresh.csrf,
      product: 'margin',
      action: 'block',
    });
    expect(await stateOf('margin')).toMatchObject({ allowed: false, allowAt: null });
    const bad = await fresh.ua.postForm(`${t.issuer}/account/products`, {
      csrf: fresh.csrf,
      product: 'crypto',
      action: 'allow',
    });
    expect(bad.status).toBe(400);
  });

  it('high risk and a frozen customer are denied whatever the product', async () => {
    await t.hub.db.query(
      `INSERT INTO risk_levels (customer_id, level) VALUES ($1, 'HIGH')
       ON CONFLICT (customer_id) DO UPDATE SET level = 'HIGH'`,
      [customerId],
    );
    try {
      const risky = await trade({ accountId, product: 'domestic_equity', reference: 'ord-9' });
      expect(risky.body).toMatchObject({ decision: 'deny', decidedBy: ['trade.high-risk'] });
      expect(risky.body.obligations.notify).toEqual(['customer', 'brokerage']);
    } finally {
      await t.hub.db.query("UPDATE risk_levels SET level = 'LOW' WHERE customer_id = $1", [customerId]);
    }
    await t.hub.db.query("UPDATE customers SET status = 'frozen' WHERE id = $1", [customerId]);
    try {
      const frozen = await trade({ accountId, product: 'domestic_equity' });
      expect(frozen.body).toMatchObject({ decision: 'deny', decidedBy: ['trade.frozen'] });
    } finally {
      await t.hub.db.query("UPDATE customers SET status = 'active' WHERE id = $1", [customerId]);
    }
    const denials = await t.hub.db.query<{ type: string }>(
      "SELECT type FROM audit_events WHERE type = 'policy.trade.deny' AND customer_id = $1",
      [customerId],
    );
    expect(denials.rowCount).toBeGreaterThanOrEqual(4);
  });

  it('answers client mistakes in the API envelope and decides nothing', async () => {
    const before = await t.hub.db.query(
      "SELECT count(*)::int AS n FROM audit_events WHERE type LIKE 'policy.trade.%'",
    );
    expect((await trade({ accountId, product: 'domestic_equity' }, null)).status).toBe(401);
    const unknownProduct = await trade({ accountId, product: 'crypto' });
    expect(unknownProduct).toMatchObject({ status: 400, body: { error: { code: 'invalid_request' } } });
    const extra = await trade({ accountId, product: 'bonds', amount: 5 });
    expect(extra.status).toBe(400);
    const badRef = await trade({ accountId, product: 'bonds', reference: 'has space' });
    expect(badRef.status).toBe(400);
    const foreign = await trade({ accountId: 'acc-of-someone-else', product: 'bonds' });
    expect(foreign).toMatchObject({ status: 404, body: { error: { code: 'not_found' } } });
    const after = await t.hub.db.query(
      "SELECT count(*)::int AS n FROM audit_events WHERE type LIKE 'policy.trade.%'",
    );
    expect(after.rows[0]).toEqual(before.rows[0]);
  });
});

describe('the raise sweeper and customers lowering limits at the same time', () => {
  it('never deadlock: every lowering stands and every raise is applied once', async () => {
    const policy = loadPolicy(t.hub.config.linking.policyFile);
    const customers = await Promise.all(Array.from({ length: 12 }, () => insertCustomer(t.hub.db)));
    for (const id of customers)
      await t.hub.db.query(
        `INSERT INTO limit_raises (customer_id, limit_name, from_amount, to_amount, effective_at)
         VALUES ($1, 'withdrawal_daily', 3000000, 5000000, now() - interval '1 second')`,
        [id],
      );
    // The sweeper claims every customer's due raise while each customer lowers the same limit: the
    // sweeper used to hold all the raises while writing limits one by one, and a lowering holding
    // its customer's limits row then waited for that customer's raise — a deadlock on PostgreSQL.
    const outcomes = await Promise.allSettled([
      applyDueLimitRaises(t.hub.db, defaults),
      ...customers.map((id) =>
        changeLimit(t.hub.db, policy, defaults, {
          customerId: id,
          acr: 'phr',
          authTime: Math.floor(Date.now() / 1000),
          frozen: false,
          actor: `customer:${id}`,
          limit: 'withdrawal_daily',
          amount: 1_000_000,
        }),
      ),
    ]);
    expect(
      outcomes.filter((o) => o.status === 'rejected').map((o) => String((o as PromiseRejectedResult).reason)),
    ).toEqual([]);
    for (const id of customers) {
      expect((await customerLimits(t.hub.db, id, defaults)).current.withdrawal_daily).toBe(1_000_000);
      const applied = await t.hub.db.query<{ n: number }>(
        "SELECT count(*)::int AS n FROM audit_events WHERE type = 'limits.raise.applied' AND customer_id = $1",
        [id],
      );
      expect(applied.rows[0]!.n).toBe(1);
    }
  });
});
