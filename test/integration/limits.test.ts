/**
 * Customer limits and channels on the security page (issue 6, item 3): lowering applies at once; raising needs a
 * passkey sign-in within 5 minutes and waits for the policy's cool-off; a raise waiting is cancelled
 * by a later lowering; every change is decided by the policy, audited and notified.
 */

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { completeLogin } from '../../conformance/lib/login.ts';
import { createUserAgent, type UserAgent } from '../../conformance/lib/userAgent.ts';
import { channelStates, customerLimits } from '../../src/linking/index.ts';
import { addEmailChannel } from '../../src/notify/index.ts';
import { enrollDemoCustomer } from '../support/customer.ts';
import { startTestHub, type TestHub } from '../support/hub.ts';
import type { PasskeyEmulator } from '../support/passkeyEmulator.ts';
import { accountsStatus, demoRp, redeem, startAuthorization } from '../support/rp.ts';

let t: TestHub;
let device: PasskeyEmulator;
let customerId: string;
const defaults = { withdrawal_daily: 3_000_000, sweep_daily: 1_000_000 };

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

    const { ua, csrf } = await signedIn();
    await ua.postForm(`${t.issuer}/account/limits`, { csrf, limit: 'sweep_daily', amount: '3000000' });
    expect((await limitsNow()).pending).toHaveLength(1);
    await ua.postForm(`${t.issuer}/account/limits`, { csrf, limit: 'sweep_daily', amount: '100000' });
    const lowered = await limitsNow();
    expect(lowered.current.sweep_daily).toBe(100_000);
    expect(lowered.pending).toEqual([]);
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

describe('channels the customer switches off', () => {
  it('switching off third-party access stops the aggregator at once; switching on waits, after a fresh sign-in', async () => {
    const rp = await demoRp(t);
    const started = await startAuthorization(rp);
    const callback = await completeLogin({ fetch: t.fetch, authorizationUrl: started.url, device });
    const tokens = await redeem(rp, started, callback);
    expect(await accountsStatus(t, rp, tokens.access_token)).toBe(200);

    const { ua, csrf } = await signedIn();
    const off = await ua.postForm(`${t.issuer}/account/channels`, {
      csrf,
      channel: 'aggregator_access',
      action: 'disable',
    });
    expect(off.status).toBe(303);
    expect(await accountsStatus(t, rp, tokens.access_token)).toBe(403);
    const told = await t.hub.db.query<{ data: { channel: string; enabled: boolean } }>(
      "SELECT data FROM notify_outbox WHERE customer_id = $1 AND kind = 'channel_changed'",
      [customerId],
    );
    expect(told.rows.map((r) => r.data)).toEqual([{ channel: 'aggregator_access', enabled: false }]);
    expect((await ua.get(`${t.issuer}/account`)).text).toContain('data-channel-name="aggregator_access"');

    const on = await ua.postForm(`${t.issuer}/account/channels`, {
      csrf,
      channel: 'aggregator_access',
      action: 'enable',
    });
    expect(on.status).toBe(303);
    const pending = (await channelStates(t.hub.db, customerId)).find(
      (c) => c.channel === 'aggregator_access',
    )!;
    expect(pending.enabled).toBe(false);
    expect(pending.enableAt!.getTime() - Date.now()).toBeGreaterThan(86_400_000 - 60_000);
    expect(await accountsStatus(t, rp, tokens.access_token)).toBe(403);
    // The cool-off ends: access is back without anything else happening.
    await t.hub.db.query(
      "UPDATE customer_channels SET enable_at = now() - interval '1 second' WHERE customer_id = $1",
      [customerId],
    );
    expect((await channelStates(t.hub.db, customerId)).every((c) => c.enabled)).toBe(true);
    expect(await accountsStatus(t, rp, tokens.access_token)).toBe(200);
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
