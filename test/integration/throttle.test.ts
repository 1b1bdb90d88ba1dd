/**
 * Failed-authentication throttling and the automatic account lock (JSDA IV.1.(2)③), and that an
 * attacker cannot use the lock to keep the owner out of a device they already used (FSA comment 83).
 */
import { Agent, fetch as undiciFetch } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { completeLogin } from '../../conformance/lib/login.ts';
import { createUserAgent, type UserAgent } from '../../conformance/lib/userAgent.ts';
import { issueEnrollmentTicket } from '../../src/authn/index.ts';
import {
  accountLock,
  DEFAULT_THROTTLE_POLICY,
  isKnownDevice,
  recordAuthFailure,
  recordAuthSuccess,
  rememberDevice,
  sourceKey,
  sourceRetryAfter,
  type ThrottlePolicy,
  unlockAccount,
} from '../../src/risk/index.ts';
import { insertCustomer, type TestDb, testDb } from '../support/db.ts';
import { startTestHub, type TestHub } from '../support/hub.ts';
import { createEmulator, type PasskeyEmulator } from '../support/passkeyEmulator.ts';
import { demoRp, startAuthorization } from '../support/rp.ts';

describe('sourceKey', () => {
  it('keeps IPv4 addresses, unwraps IPv4-mapped IPv6 and groups IPv6 by /64', () => {
    expect(sourceKey('203.0.113.7')).toBe('203.0.113.7');
    expect(sourceKey('::ffff:203.0.113.7')).toBe('203.0.113.7');
    expect(sourceKey('2001:db8:1:2:aaaa:bbbb:cccc:dddd')).toBe('2001:db8:1:2::/64');
    expect(sourceKey('2001:db8:1:2::1')).toBe(sourceKey('2001:db8:1:2:ffff::9'));
    expect(sourceKey('2001:db8::1')).toBe('2001:db8:0:0::/64');
    expect(sourceKey(undefined)).toBe('unknown');
  });
});

describe('throttle state in the database', () => {
  let t: TestDb;
  const policy: ThrottlePolicy = {
    source: { freeFailures: 2, windowSeconds: 900, baseDelaySeconds: 2, maxDelaySeconds: 8 },
    account: { lockAfter: 3, lockSeconds: 3600 },
  };
  const meta = { reason: 'test' };
  beforeAll(async () => {
    t = await testDb();
    await t.db.query(
      "INSERT INTO institutions (id, kind, name_ja, name_en) VALUES ('i', 'brokerage', 'i', 'i')",
    );
    for (const id of ['c1', 'c2', 'c3'])
      await t.db.query(
        "INSERT INTO customers (id, institution_id, customer_number, name_kanji, name_kana) VALUES ($1, 'i', $1, 'x', 'x')",
        [id],
      );
  });
  afterAll(() => t.close());

  it('slows a failing source down progressively, capped', async () => {
    const waits = [];
    for (let i = 0; i < 6; i++)
      waits.push((await recordAuthFailure(t.db, { source: '198.51.100.1' }, meta, policy)).sourceRetryAfter);
    expect(waits).toEqual([0, 0, 2, 4, 8, 8]);
    expect(await sourceRetryAfter(t.db, '198.51.100.1')).toBeGreaterThan(6);
    expect(await sourceRetryAfter(t.db, '198.51.100.2')).toBe(0);
  });

  it('counts concurrent failures from one source without losing any', async () => {
    await Promise.all(
      Array.from({ length: 10 }, () => recordAuthFailure(t.db, { source: '198.51.100.9' }, meta, policy)),
    );
    const row = await t.db.query<{ failures: number }>(
      "SELECT failures FROM auth_source_failures WHERE source = '198.51.100.9'",
    );
    expect(row.rows[0]?.failures).toBe(10);
  });

  it('locks an account after consecutive failures, audits it, and a success only resets the count', async () => {
    await recordAuthFailure(t.db, { source: 's1', customerId: 'c1' }, meta, policy);
    await recordAuthSuccess(t.db, 'c1');
    for (let i = 0; i < 2; i++)
      await recordAuthFailure(t.db, { source: `s${i}`, customerId: 'c1' }, meta, policy);
    expect((await accountLock(t.db, 'c1')).locked).toBe(false);
    const third = await recordAuthFailure(t.db, { source: 's9', customerId: 'c1' }, meta, policy);
    expect(third.accountLockedNow).toBe(true);
    const lock = await accountLock(t.db, 'c1');
    expect(lock.locked).toBe(true);
    expect(lock.lockedUntil!.getTime()).toBeGreaterThan(Date.now() + 3500_000);
    // Further failures do not re-lock (no second audit event), a success does not unlock.
    expect(
      (await recordAuthFailure(t.db, { source: 's9', customerId: 'c1' }, meta, policy)).accountLockedNow,
    ).toBe(false);
    await recordAuthSuccess(t.db, 'c1');
    expect((await accountLock(t.db, 'c1')).locked).toBe(true);
    const audit = await t.db.query(
      "SELECT 1 FROM audit_events WHERE type = 'risk.account.locked' AND customer_id = 'c1'",
    );
    expect(audit.rowCount).toBe(1);
    expect(await unlockAccount(t.db, 'c1', 'operator:test')).toBe(true);
    expect((await accountLock(t.db, 'c1')).locked).toBe(false);
    const unlocked = await t.db.query(
      "SELECT data FROM audit_events WHERE type = 'risk.account.unlocked' AND customer_id = 'c1'",
    );
    expect(unlocked.rows[0]).toEqual({ data: { by: 'operator:test' } });
  });

  it('an operator unlock lifts only a lock in force: counted failures or a lock that ran out are reset silently', async () => {
    const audits = async () =>
      (
        await t.db.query(
          "SELECT 1 FROM audit_events WHERE type = 'risk.account.unlocked' AND customer_id = 'c3'",
        )
      ).rowCount;
    const failures = async () =>
      (
        await t.db.query<{ n: number }>(
          "SELECT consecutive_failures AS n FROM account_lockouts WHERE customer_id = 'c3'",
        )
      ).rows[0]?.n;
    for (let i = 0; i < 2; i++)
      await recordAuthFailure(t.db, { source: 's3', customerId: 'c3' }, meta, policy);
    expect(await unlockAccount(t.db, 'c3', 'operator:test')).toBe(false);
    expect(await failures()).toBe(0);
    // Locked, then its time runs out.
    for (let i = 0; i < 3; i++)
      await recordAuthFailure(t.db, { source: 's3', customerId: 'c3' }, meta, policy);
    expect((await accountLock(t.db, 'c3')).locked).toBe(true);
    await t.db.query(
      "UPDATE account_lockouts SET locked_until = now() - interval '1 second' WHERE customer_id = 'c3'",
    );
    expect(await unlockAccount(t.db, 'c3', 'operator:test')).toBe(false);
    expect(await failures()).toBe(0);
    expect(await audits()).toBe(0);
    // Nothing left to lift: still false.
    expect(await unlockAccount(t.db, 'c3', 'operator:test')).toBe(false);
    expect(await audits()).toBe(0);
  });

  it('remembers devices per customer by a hash of the cookie', async () => {
    const token = await rememberDevice(t.db, 'c2', undefined, 'UA');
    expect(token).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(await isKnownDevice(t.db, 'c2', token)).toBe(true);
    expect(await isKnownDevice(t.db, 'c1', token)).toBe(false);
    expect(await isKnownDevice(t.db, 'c2', 'x'.repeat(43))).toBe(false);
    expect(await isKnownDevice(t.db, 'c2', undefined)).toBe(false);
    expect(await rememberDevice(t.db, 'c2', token, 'UA')).toBe(token);
    const stored = await t.db.query<{ device_hash: string }>(
      "SELECT device_hash FROM known_devices WHERE customer_id = 'c2'",
    );
    expect(stored.rows.map((r) => r.device_hash)).not.toContain(token);
  });
});

describe('an attacker elsewhere cannot lock the owner out (FSA comment 83)', () => {
  let t: TestHub;
  const agents: Agent[] = [];
  /** A fetch whose connections come from another loopback address, i.e. another network source. */
  const fetchFrom = (address: string): typeof globalThis.fetch => {
    const dispatcher = new Agent({ localAddress: address, connect: { ca: t.caPem } });
    agents.push(dispatcher);
    return ((url: string | URL, init?: RequestInit) =>
      undiciFetch(url, { ...(init as object), dispatcher })) as never;
  };
  beforeAll(async () => {
    t = await startTestHub();
  });
  afterAll(async () => {
    for (const a of agents) await a.close();
    await t?.close();
  });

  /** `signIn`: prompt=login, so a browser with a session still signs in (and shows its device cookie). */
  async function authorizationUrl(o: { signIn?: boolean } = {}): Promise<URL> {
    return (await startAuthorization(await demoRp(t), undefined, o.signIn ? { prompt: 'login' } : {})).url;
  }

  /** One sign-in attempt carrying the owner's credential id with a forged signature. */
  async function forgedAttempt(
    ua: UserAgent,
    owner: PasskeyEmulator,
  ): Promise<{ status: number; code: string }> {
    const start = await ua.follow(await authorizationUrl());
    const uid = start.response.url.pathname.split('/').pop()!;
    const options = await ua.postJson(`${t.issuer}/interaction/${uid}/passkey/options`, {});
    const assertion = owner.authenticate(options.json(), new URL(t.issuer).origin) as {
      response: { signature: string };
    };
    const sig = Buffer.from(assertion.response.signature, 'base64url');
    sig[sig.length - 1]! ^= 0xff;
    assertion.response.signature = sig.toString('base64url');
    const res = await ua.postJson(`${t.issuer}/interaction/${uid}/passkey/verify`, assertion);
    const body = res.json<{ error_code?: string }>();
    return { status: res.status, code: body.error_code ?? '' };
  }

  it('locks the account for new devices, keeps the owner’s browser working, and re-proofing unlocks', async () => {
    const owner = createEmulator();
    const ownerBrowser = createUserAgent({ fetch: t.fetch });
    const ticket = await issueEnrollmentTicket(t.hub.authn, {
      customerId: t.hub.demo!.customerId,
      issuedBy: 'operator:test',
    });
    // The owner enrolls and signs in once from their browser: it becomes a known device.
    const first = await completeLogin({
      fetch: t.fetch,
      authorizationUrl: await authorizationUrl(),
      device: owner,
      userAgent: ownerBrowser,
      enroll: { customerNumber: t.hub.demo!.customerNumber, ticket: ticket.ticket },
    });
    expect(first.searchParams.get('code')).toBeTruthy();

    // Forged attempts from several other networks: each source gets slowed down after a few
    // failures, and together they reach the account's lock threshold.
    const { lockAfter } = DEFAULT_THROTTLE_POLICY.account;
    const perSource = DEFAULT_THROTTLE_POLICY.source.freeFailures;
    let sent = 0;
    for (let n = 2; sent < lockAfter; n++) {
      const attacker = createUserAgent({ fetch: fetchFrom(`127.0.0.${n}`) });
      for (let i = 0; i < perSource && sent < lockAfter; i++, sent++) {
        const r = await forgedAttempt(attacker, owner);
        expect(r).toEqual({ status: 400, code: 'ERR_WEBAUTHN_VERIFICATION' });
      }
      if (n === 2) {
        // One more from the same source: past the free failures it is now made to wait.
        await forgedAttempt(attacker, owner);
        sent++;
        const throttled = await forgedAttempt(attacker, owner).catch(() => undefined);
        expect(throttled).toEqual({ status: 429, code: 'ERR_THROTTLED' });
      }
    }
    expect((await accountLock(t.hub.db, t.hub.demo!.customerId)).locked).toBe(true);

    // Even the real passkey is refused on a browser that never signed in for this customer …
    const newBrowser = createUserAgent({ fetch: t.fetch });
    const refused = await completeLogin({
      fetch: t.fetch,
      authorizationUrl: await authorizationUrl(),
      device: owner,
      userAgent: newBrowser,
    }).then(
      () => 'signed in',
      (err: Error & { status?: number; body?: string }) => `${err.status} ${err.body}`,
    );
    expect(refused).toMatch(/^403 .*ERR_ACCOUNT_LOCKED/);
    const recorded = await t.hub.db.query(
      "SELECT 1 FROM risk_events WHERE customer_id = $1 AND result = 'failure' AND signals ->> 'failure' = 'ERR_ACCOUNT_LOCKED'",
      [t.hub.demo!.customerId],
    );
    expect(recorded.rowCount).toBe(1);

    // … while the owner's own browser still gets in (signing in again: its device, not its session).
    const again = await completeLogin({
      fetch: t.fetch,
      authorizationUrl: await authorizationUrl({ signIn: true }),
      device: owner,
      userAgent: ownerBrowser,
      signIn: 'required',
    });
    expect(again.searchParams.get('code')).toBeTruthy();

    // Re-proofing (a new one-time ticket and passkey) lifts the lock for every device.
    const second = createEmulator();
    const reproof = await issueEnrollmentTicket(t.hub.authn, {
      customerId: t.hub.demo!.customerId,
      issuedBy: 'operator:test',
    });
    const afterReproof = await completeLogin({
      fetch: t.fetch,
      authorizationUrl: await authorizationUrl(),
      device: second,
      userAgent: createUserAgent({ fetch: t.fetch }),
      enroll: { customerNumber: t.hub.demo!.customerNumber, ticket: reproof.ticket },
    });
    expect(afterReproof.searchParams.get('code')).toBeTruthy();
    expect((await accountLock(t.hub.db, t.hub.demo!.customerId)).locked).toBe(false);

    const types = (
      await t.hub.db.query<{ type: string }>(
        "SELECT DISTINCT type FROM audit_events WHERE customer_id = $1 AND type LIKE 'risk.%'",
        [t.hub.demo!.customerId],
      )
    ).rows.map((r) => r.type);
    // Every sign-in keeps the source address and port for investigators (JSDA IV.5.(1)).
    const logins = await t.hub.db.query<{ ip: string; port: number; user_agent: string | null }>(
      "SELECT ip, port, user_agent FROM audit_events WHERE type = 'authn.passkey.login' AND customer_id = $1",
      [t.hub.demo!.customerId],
    );
    expect(logins.rowCount).toBeGreaterThan(lockAfter);
    for (const row of logins.rows) {
      expect(row.ip).toMatch(/^(::ffff:)?127\.0\.0\.\d+$/);
      expect(row.port).toBeGreaterThan(0);
    }
    expect(types).toEqual(
      expect.arrayContaining([
        'risk.auth.failure',
        'risk.account.locked',
        'risk.account.locked.refused',
        'risk.account.unlocked',
      ]),
    );
  });

  it('a verified sign-in ends the run of failures counted before it', async () => {
    const customerId = await insertCustomer(t.hub.db);
    const owner = createEmulator();
    const ownerBrowser = createUserAgent({ fetch: t.fetch });
    const ticket = await issueEnrollmentTicket(t.hub.authn, { customerId, issuedBy: 'operator:test' });
    await completeLogin({
      fetch: t.fetch,
      authorizationUrl: await authorizationUrl(),
      device: owner,
      userAgent: ownerBrowser,
      enroll: { customerNumber: customerId, ticket: ticket.ticket },
    });
    const failures = async () =>
      (
        await t.hub.db.query<{ n: number }>(
          'SELECT consecutive_failures AS n FROM account_lockouts WHERE customer_id = $1',
          [customerId],
        )
      ).rows[0]?.n ?? 0;
    const attacker = createUserAgent({ fetch: fetchFrom('127.0.0.90') });
    for (let i = 0; i < 2; i++) expect((await forgedAttempt(attacker, owner)).status).toBe(400);
    expect(await failures()).toBe(2);
    const signedIn = await completeLogin({
      fetch: t.fetch,
      authorizationUrl: await authorizationUrl({ signIn: true }),
      device: owner,
      userAgent: ownerBrowser,
      signIn: 'required',
    });
    expect(signedIn.searchParams.get('code')).toBeTruthy();
    expect(await failures()).toBe(0);
  });
});
