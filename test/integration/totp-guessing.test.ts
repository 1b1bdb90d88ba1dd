/**
 * One-time codes can be guessed (security review, issue 4 item 5): every code sign-in attempt takes
 * its slot against the account before the code is checked, in one atomic statement, so parallel
 * guesses from many networks cannot outrun the lock; a locked account answers alike for right and
 * wrong codes (no oracle) — except on a device the owner already used (FSA comment 83). Meant for
 * real PostgreSQL (TEST_DATABASE_URL), where the parallel requests really interleave.
 */
import { Agent, fetch as undiciFetch } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createUserAgent, type UserAgent } from '../../conformance/lib/userAgent.ts';
import { DEFAULT_THROTTLE_POLICY, recordAuthSuccess, takeAccountAttempt } from '../../src/risk/index.ts';
import { insertCustomer } from '../support/db.ts';
import { type ExemptCustomer, enrollExemptCustomer } from '../support/exempt.ts';
import { startTestHub, type TestHub } from '../support/hub.ts';

let t: TestHub;
const agents: Agent[] = [];
/** A browser whose connections come from another loopback address, i.e. another network source. */
function browserAt(address: string): UserAgent {
  const dispatcher = new Agent({ localAddress: address, connect: { ca: t.caPem } });
  agents.push(dispatcher);
  return createUserAgent({
    fetch: ((url: string | URL, init?: RequestInit) =>
      undiciFetch(url, { ...(init as object), dispatcher })) as never,
  });
}

beforeAll(async () => {
  t = await startTestHub();
});
afterAll(async () => {
  for (const a of agents) await a.close();
  await t?.close();
});

const answer = (res: { status: number; json<T>(): T }) =>
  `${res.status} ${res.json<{ error_code?: string }>().error_code ?? ''}`;

describe('code sign-in guesses', () => {
  const { lockAfter } = DEFAULT_THROTTLE_POLICY.account;
  let owner: ExemptCustomer;
  let ownerBrowser: UserAgent;
  const count = async (sql: string) => (await t.hub.db.query(sql, [owner.customerId])).rowCount;

  beforeAll(async () => {
    owner = await enrollExemptCustomer(t, 'cus_guessed');
    // The owner signed in once from this browser: a known device.
    ownerBrowser = createUserAgent({ fetch: t.fetch });
    await owner.signIn(ownerBrowser);
  });

  it('of 30 parallel wrong codes from 30 networks, only the lock threshold is checked', async () => {
    // 30 addresses of one /24 that is not the owner's (the risk rules judge ranges too).
    const attackers = Array.from({ length: 30 }, (_, i) => browserAt(`127.0.2.${10 + i}`));
    const uids = await Promise.all(attackers.map((ua) => owner.interaction(ua)));
    const answers = await Promise.all(attackers.map((ua, i) => owner.verify(ua, uids[i]!, '000000')));
    const tally = answers.map(answer).reduce<Record<string, number>>((m, a) => {
      m[a] = (m[a] ?? 0) + 1;
      return m;
    }, {});
    expect(tally).toEqual({ '400 ERR_TOTP_INVALID': lockAfter, '403 ERR_ACCOUNT_LOCKED': 30 - lockAfter });
    expect(
      await count(
        "SELECT 1 FROM audit_events WHERE type = 'authn.totp.login' AND customer_id = $1 AND data ->> 'reason' = 'ERR_TOTP_INVALID'",
      ),
    ).toBe(lockAfter);
    expect(
      await count("SELECT 1 FROM audit_events WHERE type = 'risk.account.locked' AND customer_id = $1"),
    ).toBe(1);
  });

  it('while locked, a new device gets the same answer for a right and a wrong code, and the code is not spent', async () => {
    for (const [n, code] of [
      [50, '000000'],
      [51, await owner.code()],
    ] as const) {
      const ua = browserAt(`127.0.3.${n}`);
      const res = await owner.verify(ua, await owner.interaction(ua), code);
      expect(answer(res)).toBe('403 ERR_ACCOUNT_LOCKED');
    }
    const step = await t.hub.db.query<{ last_step: string }>(
      'SELECT last_step FROM totp_credentials WHERE customer_id = $1',
      [owner.customerId],
    );
    expect(Number(step.rows[0]!.last_step)).toBe(0);
  });

  it('the owner’s known browser still signs in with the right code (FSA comment 83)', async () => {
    // Its earlier session is over; the device cookie stays.
    await t.hub.db.query(
      "DELETE FROM oidc_payloads WHERE model = 'Session' AND payload ->> 'accountId' = $1",
      [owner.customerId],
    );
    const res = await owner.verify(ownerBrowser, await owner.interaction(ownerBrowser));
    expect(res.status, res.text).toBe(200);
  });
});

describe('right codes refused for another reason', () => {
  it('give their slot back: a frozen customer’s attempts do not lock them out after the freeze ends', async () => {
    const customer = await enrollExemptCustomer(t, 'cus_frozen_codes');
    await t.hub.db.query("UPDATE customers SET status = 'frozen' WHERE id = $1", [customer.customerId]);
    for (let i = 0; i < DEFAULT_THROTTLE_POLICY.account.lockAfter + 2; i++) {
      const ua = createUserAgent({ fetch: t.fetch });
      expect(answer(await customer.verify(ua, await customer.interaction(ua)))).toBe(
        '400 ERR_CUSTOMER_INACTIVE',
      );
    }
    await t.hub.db.query("UPDATE customers SET status = 'active' WHERE id = $1", [customer.customerId]);
    const ua = createUserAgent({ fetch: t.fetch });
    expect(answer(await customer.verify(ua, await customer.interaction(ua)))).toBe('200 ');
  });
});

describe('attempt slots', () => {
  it('after a lock runs out, one of many parallel attempts gets a slot; a success frees them', async () => {
    const customerId = await insertCustomer(t.hub.db);
    await t.hub.db.query(
      `INSERT INTO account_lockouts (customer_id, consecutive_failures, locked_at, locked_until)
       VALUES ($1, $2, now() - interval '2 days', now() - interval '1 second')`,
      [customerId, DEFAULT_THROTTLE_POLICY.account.lockAfter],
    );
    const slots = await Promise.all(
      Array.from({ length: 10 }, () => takeAccountAttempt(t.hub.db, customerId)),
    );
    expect(slots.filter(Boolean)).toHaveLength(1);
    await recordAuthSuccess(t.hub.db, customerId);
    expect(await takeAccountAttempt(t.hub.db, customerId)).toBe(true);
  });

  it('a peer’s re-proofing lock gives no slot at all', async () => {
    const customerId = await insertCustomer(t.hub.db);
    await t.hub.db.query(
      'INSERT INTO account_lockouts (customer_id, consecutive_failures, reproofing_required) VALUES ($1, 0, true)',
      [customerId],
    );
    expect(await takeAccountAttempt(t.hub.db, customerId)).toBe(false);
  });
});

describe('the per-source throttle', () => {
  it('still slows down one network guessing codes for numbers that do not exist', async () => {
    const ua = browserAt('127.0.4.60');
    const uid = await (await enrollExemptCustomer(t, 'cus_throttle')).interaction(ua);
    const answers: string[] = [];
    for (let i = 0; i < DEFAULT_THROTTLE_POLICY.source.freeFailures + 2; i++) {
      const res = await ua.postJson(`${t.issuer}/interaction/${uid}/alternative/verify`, {
        customerNumber: `9999000${i}`,
        code: '123456',
      });
      answers.push(answer(res));
    }
    expect(answers.at(-1)).toBe('429 ERR_THROTTLED');
  });
});
