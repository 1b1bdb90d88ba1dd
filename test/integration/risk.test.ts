/**
 * The risk engine in a running hub (JSDA IV.5, FSA comments 83–88): sources and countries are
 * simulated with loopback addresses (127.0.0.x Japan, 127.0.1.x USA, 127.0.3.x Germany) mapped by
 * an operator-supplied CSV in test/fixtures/risk.
 */
import path from 'node:path';
import * as client from 'openid-client';
import { Agent, fetch as undiciFetch } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  completeLogin,
  createPasskeyUser,
  LoginError,
  type PasskeyUser,
} from '../../conformance/lib/login.ts';
import { createUserAgent, type UserAgent } from '../../conformance/lib/userAgent.ts';
import { issueEnrollmentTicket } from '../../src/authn/index.ts';
import { DEMO_INSTITUTION_ID } from '../../src/demo/seed.ts';
import { loadKeyEncryptionKey } from '../../src/keys/index.ts';
import { addEmailChannel } from '../../src/notify/index.ts';
import { noteAccountRecovered } from '../../src/risk/index.ts';
import { EVENT } from '../../src/signals/index.ts';
import { startTestHub, type TestHub } from '../support/hub.ts';
import { createEmulator } from '../support/passkeyEmulator.ts';
import { demoRp, redeem, startAuthorization } from '../support/rp.ts';

const FIXTURES = path.resolve('test/fixtures/risk');
let t: TestHub;
const agents: Agent[] = [];

beforeAll(async () => {
  t = await startTestHub({
    risk: {
      geo: {
        countryFiles: [`${FIXTURES}/country.csv`],
        asnFiles: [`${FIXTURES}/asn.csv`],
        hostingAsns: [64502, 64510],
      },
    },
  });
});
afterAll(async () => {
  for (const a of agents) await a.close();
  await t?.close();
});

/** A fetch whose connections come from another loopback address, i.e. another network source. */
function fetchFrom(address: string): typeof globalThis.fetch {
  const dispatcher = new Agent({ localAddress: address, connect: { ca: t.caPem } });
  agents.push(dispatcher);
  return ((url: string | URL, init?: RequestInit) =>
    undiciFetch(url, { ...(init as object), dispatcher })) as never;
}
const browserAt = (address: string): UserAgent => createUserAgent({ fetch: fetchFrom(address) });
const authorizationUrl = async () => (await startAuthorization(await demoRp(t))).url;

let customers = 0;
/** A new customer of the demo institution with a passkey, enrolled from `browser`. */
async function enrolledCustomer(browser: UserAgent = createUserAgent({ fetch: t.fetch })) {
  const n = ++customers;
  const id = `risk-customer-${n}`;
  await t.hub.db.query(
    `INSERT INTO customers (id, institution_id, customer_number, name_kanji, name_kana)
     VALUES ($1, $2, $3, '危険 太郎', 'キケン タロウ')`,
    [id, DEMO_INSTITUTION_ID, `2000000${n}`],
  );
  const ticket = await issueEnrollmentTicket(t.hub.authn, { customerId: id, issuedBy: 'operator:test' });
  const user = createPasskeyUser({ fetch: t.fetch, customerNumber: `2000000${n}`, ticket: ticket.ticket });
  await user.login(await authorizationUrl(), { userAgent: browser });
  return { id, user, browser };
}

/**
 * Signs in with the passkey (never riding a session `browser` holds: each call is a risk decision)
 * and returns the hub's refusal code, or 'ok' when the sign-in went through.
 */
async function signIn(user: Pick<PasskeyUser, 'login'>, browser: UserAgent) {
  try {
    const callback = await user.login(await authorizationUrl(), { userAgent: browser, signIn: 'required' });
    return callback.searchParams.get('code') ? 'ok' : 'no code';
  } catch (err) {
    if (!(err instanceof LoginError)) throw err;
    const code = /"error_code":"([^"]+)"/.exec(err.body)?.[1];
    return code ? `${err.status} ${code}` : err.message;
  }
}

interface EventRow {
  result: string;
  decision: string | null;
  score: number | null;
  reasons: Array<{ rule: string }>;
  ip: string;
  port: number | null;
  country: string | null;
  asn: number | null;
  user_agent: string | null;
  rule_version: string | null;
  method: string;
}
async function lastEvent(customerId: string, kind = 'login'): Promise<EventRow & { rules: string[] }> {
  const res = await t.hub.db.query<EventRow>(
    'SELECT * FROM risk_events WHERE customer_id = $1 AND kind = $2 ORDER BY id DESC LIMIT 1',
    [customerId, kind],
  );
  const row = res.rows[0]!;
  return { ...row, rules: row.reasons.map((r) => r.rule) };
}

describe('sign-in decisions', () => {
  it('blocks a credential-stuffing source, tells the customer, and keeps the owner’s own network working', async () => {
    const { id, user } = await enrolledCustomer();
    await addEmailChannel(t.hub.db, loadKeyEncryptionKey(t.hub.config), {
      customerId: id,
      address: 'risk1@example.jp',
      actor: 'operator:test',
    });
    // Five passkeys unknown here, tried from one source …
    const attacker = browserAt('127.0.0.77');
    for (let i = 0; i < 5; i++) {
      // A passkey made for this site on the attacker's side, never registered here.
      const stranger = createEmulator();
      stranger.register(
        {
          challenge: 'AAAAAAAAAAAAAAAAAAAAAA',
          rp: { id: new URL(t.issuer).hostname, name: 'x' },
          user: {
            id: Buffer.from(`victim-${i}`).toString('base64url'),
            name: `victim-${i}`,
            displayName: 'v',
          },
          pubKeyCredParams: [{ type: 'public-key', alg: -7 }],
          authenticatorSelection: { residentKey: 'required', userVerification: 'required' },
        },
        new URL(t.issuer).origin,
      );
      const uid = (await attacker.follow(await authorizationUrl())).response.url.pathname.split('/').pop()!;
      const options = await attacker.postJson(`${t.issuer}/interaction/${uid}/passkey/options`, {});
      const res = await attacker.postJson(
        `${t.issuer}/interaction/${uid}/passkey/verify`,
        stranger.authenticate(options.json(), new URL(t.issuer).origin),
      );
      expect(res.json<{ error_code: string }>().error_code).toBe('ERR_PASSKEY_UNKNOWN');
    }
    // … then the customer's passkey (stolen, or an owner unlucky enough to share that source).
    expect(await signIn(user, attacker)).toBe('403 ERR_RISK_BLOCKED');
    const blocked = await lastEvent(id);
    expect(blocked).toMatchObject({
      result: 'blocked',
      decision: 'block',
      ip: '127.0.0.77',
      country: 'JP',
      asn: 64500,
    });
    expect(blocked.rules).toContain('credential-stuffing');
    expect(blocked.port).toBeGreaterThan(0);
    expect(blocked.rule_version).toBe('2026-11-26.3');

    const alerts = await t.hub.db.query<{ data: unknown }>(
      "SELECT data FROM notify_outbox WHERE customer_id = $1 AND kind = 'security_alert'",
      [id],
    );
    expect(alerts.rows).toEqual([{ data: { reason: 'risk_block', action: 'login_blocked' } }]);
    const level = await t.hub.db.query<{ claims: { current_level: string } }>(
      `SELECT payload -> 'claims' AS claims FROM ssf_events WHERE customer_id = $1 AND event_type = $2 ORDER BY id`,
      [id, EVENT.riskLevelChange],
    );
    expect(level.rows.map((r) => r.claims.current_level)).toEqual(['HIGH']);

    // A sign-in from the customer's own network is not caught by the attacker's block (a fresh
    // browser profile: the one used at enrollment still has its session and would not sign in).
    expect(await signIn(user, createUserAgent({ fetch: t.fetch }))).toBe('ok');
    expect((await lastEvent(id)).decision).toBe('allow');
    const after = await t.hub.db.query<{ claims: { current_level: string; previous_level: string } }>(
      `SELECT payload -> 'claims' AS claims FROM ssf_events WHERE customer_id = $1 AND event_type = $2 ORDER BY id`,
      [id, EVENT.riskLevelChange],
    );
    expect(after.rows.at(-1)?.claims).toMatchObject({ current_level: 'LOW', previous_level: 'HIGH' });
  });

  it('flags impossible travel, steps up a sign-in from abroad without declared travel, and admits declared travel', async () => {
    const { id, user, browser: home } = await enrolledCustomer();
    // Minutes after a sign-in in Japan, one from Germany: impossible travel (and a takeover's profile).
    expect(await signIn(user, browserAt('127.0.3.5'))).toBe('403 ERR_RISK_BLOCKED');
    const travel = await lastEvent(id);
    expect(travel).toMatchObject({ country: 'DE', asn: 64503, decision: 'block' });
    expect(travel.rules).toEqual(
      expect.arrayContaining(['impossible-travel', 'abroad-undeclared', 'new-country']),
    );

    // A day later (history moved back), from the USA: abroad without declared travel → step-up.
    await t.hub.db.query("UPDATE risk_events SET at = at - interval '1 day' WHERE customer_id = $1", [id]);
    expect(await signIn(user, browserAt('127.0.1.5'))).toBe('403 ERR_RISK_STEP_UP');
    const abroad = await lastEvent(id);
    expect(abroad).toMatchObject({ country: 'US', decision: 'step_up', result: 'step_up' });
    expect(abroad.rules).toContain('abroad-undeclared');
    expect(abroad.rules).not.toContain('impossible-travel');

    // The customer declares the trip on the security page (from home), then signs in from there.
    const page = await home.get(`${t.issuer}/account`);
    const csrf = /name="csrf" value="([^"]+)"/.exec(page.text)?.[1];
    expect(csrf).toBeTruthy();
    expect(page.text).toContain('<form method="post" action="/account/travel" id="travel">');
    const jstDay = (offsetDays: number) =>
      new Date(Date.now() + 9 * 3600_000 + offsetDays * 86_400_000).toISOString().slice(0, 10);
    const bad = await home.postForm(`${t.issuer}/account/travel`, {
      csrf: csrf!,
      country: 'USA',
      from: jstDay(0),
      to: jstDay(7),
    });
    expect(bad.status).toBe(400);
    const declared = await home.postForm(`${t.issuer}/account/travel`, {
      csrf: csrf!,
      country: 'us',
      from: jstDay(0),
      to: jstDay(7),
    });
    expect(declared.status).toBe(303);
    expect((await lastEvent(id, 'operation')).method).toBe('account.travel');
    expect(await signIn(user, browserAt('127.0.1.5'))).toBe('ok');
    const admitted = await lastEvent(id);
    expect(admitted).toMatchObject({ country: 'US', decision: 'allow', result: 'success' });
    expect(admitted.rules).not.toContain('abroad-undeclared');
  });

  it('refuses a sensitive change on the security page from abroad, but never a protective one', async () => {
    const { id, user } = await enrolledCustomer();
    await t.hub.db.query("UPDATE risk_events SET at = at - interval '1 day' WHERE customer_id = $1", [id]);
    await t.hub.db.query(
      `INSERT INTO travel_declarations (customer_id, country, starts_at, ends_at, declared_by)
       VALUES ($1, 'US', now() - interval '1 hour', now() + interval '1 hour', 'operator:test')`,
      [id],
    );
    const abroad = browserAt('127.0.1.9');
    expect(await signIn(user, abroad)).toBe('ok');
    // The trip ends early on paper; the session abroad may still end itself but not add exposure.
    await t.hub.db.query('DELETE FROM travel_declarations WHERE customer_id = $1', [id]);
    const page = (await abroad.get(`${t.issuer}/account`)).text;
    // The history shows where each sign-in came from, coarsely (JSDA IV.5.(1)).
    expect(page).toContain('127.0.1.9');
    expect(page).toContain('US · AS64501 US Cable Inc');
    const csrf = /name="csrf" value="([^"]+)"/.exec(page)![1]!;
    const add = await abroad.postForm(`${t.issuer}/account/contacts/add`, {
      csrf,
      kind: 'email',
      address: 'x@example.jp',
    });
    expect(add.status).toBe(403);
    expect(add.text).toContain('ERR_RISK_STEP_UP');
    const end = await abroad.postForm(`${t.issuer}/account/sessions/end-all`, { csrf });
    expect(end.status).toBe(303);
  });
});

describe('recovery hook', () => {
  it('marks the first sign-in after a recovery, and only that one', async () => {
    const { id, user } = await enrolledCustomer();
    await noteAccountRecovered(t.hub.db, id);
    expect(await signIn(user, createUserAgent({ fetch: t.fetch }))).toBe('ok');
    expect((await lastEvent(id)).rules).toContain('first-login-after-recovery');
    expect(await signIn(user, createUserAgent({ fetch: t.fetch }))).toBe('ok');
    expect((await lastEvent(id)).rules).not.toContain('first-login-after-recovery');
  });
});

describe('post-login behaviour', () => {
  it('raises the session’s risk when its access token is used from a new network, once', async () => {
    const rp = await demoRp(t);
    const auth = await startAuthorization(rp, 'openid accounts');
    const ticket = await issueEnrollmentTicket(t.hub.authn, {
      customerId: t.hub.demo!.customerId,
      issuedBy: 'operator:test',
    });
    const callback = await completeLogin({
      fetch: t.fetch,
      authorizationUrl: auth.url,
      device: createEmulator(),
      enroll: { customerNumber: t.hub.demo!.customerNumber, ticket: ticket.ticket },
    });
    const tokens = await redeem(rp, auth, callback);
    const read = async () =>
      (
        await client.fetchProtectedResource(
          rp.config,
          tokens.access_token,
          new URL(`${t.issuer}/api/v1/accounts`),
          'GET',
          undefined,
          new Headers({ 'x-fapi-customer-ip-address': '203.0.113.9' }),
          { DPoP: rp.dpop },
        )
      ).status;
    const risk = async () =>
      (
        await t.hub.db.query<{ score: number; reasons: string[] }>(
          "SELECT score, reasons FROM session_risk WHERE customer_id = $1 AND session_key LIKE 'grant:%'",
          [t.hub.demo!.customerId],
        )
      ).rows;
    expect(await read()).toBe(200);
    expect(await read()).toBe(200);
    expect(await risk()).toEqual([]);

    // The same token from a network in Germany (a stolen token replayed elsewhere).
    rp.config[client.customFetch] = fetchFrom('127.0.3.20') as client.CustomFetch;
    expect(await read()).toBe(200);
    expect(await read()).toBe(200);
    expect(await risk()).toEqual([{ score: 30, reasons: ['session-network-changed'] }]);
    const seen = await lastEvent(t.hub.demo!.customerId, 'request');
    expect(seen).toMatchObject({ ip: '127.0.3.20', country: 'DE', result: 'observed' });
    expect(seen.rules).toEqual(['session-network-changed']);
  });
});
