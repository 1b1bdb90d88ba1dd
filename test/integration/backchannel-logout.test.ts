/**
 * Brokerages federating their login to the hub (issue 6, item 1): registered through the operator's
 * client policy they get pairwise subjects by default, and every brokerage a customer is signed in
 * to receives an OpenID Connect Back-Channel Logout token when the hub session ends — however it
 * ends — exactly once, even though oidc-provider re-saves sessions at every sign-in.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { createLocalJWKSet, jwtVerify } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PasskeyUser } from '../../conformance/lib/login.ts';
import { createUserAgent, type UserAgent } from '../../conformance/lib/userAgent.ts';
import { DEMO_INSTITUTION_ID } from '../../src/demo/seed.ts';
import { revokeCustomerSessions } from '../../src/oidc/adapter.ts';
import { demoCustomer } from '../support/customer.ts';
import { startTestHub, type TestHub } from '../support/hub.ts';
import { type Rp, redeem, registeredRp, startAuthorization } from '../support/rp.ts';
import { waitFor } from '../support/waitFor.ts';

let t: TestHub;
let customer: PasskeyUser;
let receiver: http.Server;
let receiverUrl: string;
const received: Array<{ path: string; token: string }> = [];

interface Brokerage extends Rp {
  name: string;
}

beforeAll(async () => {
  t = await startTestHub({ oidc: { allowPrivateNetworkFetch: true } });
  customer = demoCustomer(t);
  receiver = http.createServer((req, res) => {
    let body = '';
    req.on('data', (c) => {
      body += c;
    });
    req.on('end', () => {
      received.push({ path: req.url ?? '', token: new URLSearchParams(body).get('logout_token') ?? '' });
      res.writeHead(200).end();
    });
  });
  await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
  receiverUrl = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}`;
});
afterAll(async () => {
  await t?.close();
  receiver?.close();
});

/** A brokerage relying party registered the way an operator does (FAPI client policy). */
async function brokerage(name: string, extra: Record<string, unknown> = {}): Promise<Brokerage> {
  const rp = await registeredRp(t, name, {
    scope: 'openid',
    institution_id: DEMO_INSTITUTION_ID,
    backchannel_logout_uri: `${receiverUrl}/${name}`,
    backchannel_logout_session_required: true,
    ...extra,
  });
  const stored = await t.hub.db.query<{ metadata: { subject_type?: string } }>(
    'SELECT metadata FROM clients WHERE client_id = $1',
    [name],
  );
  expect(stored.rows[0]!.metadata.subject_type).toBe(extra.subject_type ?? 'pairwise');
  return { ...rp, name };
}

/**
 * Signs in at the brokerage in `browser`: with the passkey ('required', a browser without a session)
 * or by riding the session the browser holds at the hub ('session', single sign-on). Returns the ID
 * token's sub and sid.
 */
async function signIn(
  b: Brokerage,
  browser: UserAgent,
  how: 'required' | 'session',
  extra: Record<string, string> = {},
): Promise<{ sub: string; sid: string; idToken: string }> {
  const auth = await startAuthorization(b, 'openid', extra);
  const callback = await customer.login(auth.url, {
    redirectUri: b.redirectUri,
    userAgent: browser,
    signIn: how,
  });
  const tokens = await redeem(b, auth, callback);
  const claims = tokens.claims()!;
  return { sub: claims.sub, sid: String(claims.sid), idToken: tokens.id_token! };
}

const settle = () => new Promise((r) => setTimeout(r, 2500));

const logoutTokens = (n: number) => waitFor(`${n} logout tokens`, () => received.length >= n, 10_000);

describe('back-channel logout to every brokerage', () => {
  it('tells each brokerage of the session once, with its own subject and sid, when the session ends', async () => {
    const a = await brokerage('broker-a');
    const b = await brokerage('broker-b', { subject_type: 'public' });
    const browser = createUserAgent({ fetch: t.fetch });
    const atA = await signIn(a, browser, 'required');
    // Another brokerage in the same browser rides the session (single sign-on); resuming its
    // interaction re-saves the session under a new id: nobody is logged out.
    const atB = await signIn(b, browser, 'session');
    expect(atA.sub).not.toBe(t.hub.demo!.customerId);
    expect(atB.sub).toBe(t.hub.demo!.customerId);
    // The customer signs in again at the first brokerage (prompt=login: the passkey, not the
    // session): the session carries on, and still nobody is logged out.
    const again = await signIn(a, browser, 'required', { prompt: 'login' });
    expect(again).toMatchObject({ sub: atA.sub, sid: atA.sid });
    await settle();
    expect(received).toEqual([]);

    // The session ends from outside the browser (as recovery and Shared Signals do).
    await revokeCustomerSessions(t.hub.db, t.hub.demo!.customerId);
    await logoutTokens(2);
    await settle();
    expect(received.map((r) => r.path).sort()).toEqual(['/broker-a', '/broker-b']);

    const jwks = createLocalJWKSet(
      (await (await t.fetch(`${t.issuer}/jwks`)).json()) as Parameters<typeof createLocalJWKSet>[0],
    );
    for (const [r, expected, clientId] of [
      [received.find((x) => x.path === '/broker-a')!, atA, 'broker-a'],
      [received.find((x) => x.path === '/broker-b')!, atB, 'broker-b'],
    ] as const) {
      const { payload, protectedHeader } = await jwtVerify(r.token, jwks, {
        issuer: t.issuer,
        audience: clientId,
      });
      expect(protectedHeader.typ).toBe('logout+jwt');
      expect(payload.events).toEqual({ 'http://schemas.openid.net/event/backchannel-logout': {} });
      expect(payload.sub).toBe(expected.sub);
      expect(payload.sid).toBe(expected.sid);
      expect(payload.nonce).toBeUndefined();
      expect(payload.jti).toEqual(expect.any(String));
    }
    const audit = await t.hub.db.query(
      "SELECT client_id FROM audit_events WHERE type = 'oidc.backchannel_logout.delivered' ORDER BY client_id",
    );
    expect(audit.rows.map((r) => r.client_id)).toEqual(['broker-a', 'broker-b']);
  });

  it('RP-initiated logout at one brokerage reaches the others, each once', async () => {
    received.length = 0;
    const e = await brokerage('broker-e');
    const f = await brokerage('broker-f');
    const browser = createUserAgent({ fetch: t.fetch });
    const atE = await signIn(e, browser, 'required');
    await signIn(f, browser, 'session');
    const page = await browser.get(`${t.issuer}/session/end?id_token_hint=${atE.idToken}&client_id=broker-e`);
    expect(page.status).toBe(200);
    const xsrf = /name="xsrf" value="([^"]+)"/.exec(page.text)?.[1];
    expect(xsrf).toBeTruthy();
    const confirm = await browser.postForm(`${t.issuer}/session/end/confirm`, { xsrf: xsrf!, logout: 'yes' });
    expect(confirm.status).toBeLessThan(400);
    await logoutTokens(2);
    await settle();
    expect(received.map((r) => r.path).sort()).toEqual(['/broker-e', '/broker-f']);
  });

  it('retries a brokerage that did not answer, with backoff', async () => {
    received.length = 0;
    const c = await brokerage('broker-c', { backchannel_logout_uri: 'http://127.0.0.1:9/unreachable' });
    const browser = createUserAgent({ fetch: t.fetch });
    await signIn(c, browser, 'required');
    await revokeCustomerSessions(t.hub.db, t.hub.demo!.customerId);
    let row: { attempts: number; last_error: string | null } | undefined;
    for (let i = 0; i < 50 && !row?.attempts; i++) {
      await new Promise((r) => setTimeout(r, 100));
      row = (
        await t.hub.db.query<{ attempts: number; last_error: string | null }>(
          "SELECT attempts, last_error FROM backchannel_logouts WHERE client_id = 'broker-c' AND done_at IS NULL",
        )
      ).rows[0];
    }
    expect(row?.attempts).toBe(1);
    expect(row?.last_error).toBeTruthy();
    const next = await t.hub.db.query<{ later: boolean }>(
      "SELECT next_at > now() AS later FROM backchannel_logouts WHERE client_id = 'broker-c' AND done_at IS NULL",
    );
    expect(next.rows[0]!.later).toBe(true);
  });

  it('the client policy refuses a plain-http logout URI outside loopback', async () => {
    await expect(
      brokerage('broker-d', { backchannel_logout_uri: 'http://broker-d.example/logout' }),
    ).rejects.toThrow(/backchannel_logout_uri: must be https/);
  });
});
