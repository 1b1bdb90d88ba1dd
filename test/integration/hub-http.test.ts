/**
 * The running hub over HTTPS: headers every response carries, the API's error envelope, and
 * that client mistakes at the interaction endpoints are 4xx in the protocol's shape, never 500.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { issueEnrollmentTicket } from '../../src/authn/index.ts';
import { startTestHub, type TestHub } from '../support/hub.ts';
import { createEmulator } from '../support/passkeyEmulator.ts';
import { demoRp, startAuthorization } from '../support/rp.ts';

let t: TestHub;
beforeAll(async () => {
  t = await startTestHub();
});
afterAll(() => t?.close());

/** Starts an authorization and follows it to the login page, keeping the interaction cookies. */
async function openInteraction(): Promise<{ uid: string; cookie: string }> {
  const rp = await demoRp(t);
  const { url } = await startAuthorization(rp);
  const res = await t.fetch(url, { redirect: 'manual' });
  expect(res.status).toBe(303);
  const location = new URL(res.headers.get('location')!, t.issuer);
  const uid = location.pathname.split('/').pop()!;
  const cookie = res.headers
    .getSetCookie()
    .map((c) => c.split(';')[0])
    .join('; ');
  return { uid, cookie };
}

const postJson = (path: string, cookie: string, body: unknown, headers: Record<string, string> = {}) =>
  t.fetch(`${t.issuer}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', cookie, ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });

describe('every response', () => {
  it('carries HSTS, hardening headers and a generated x-fapi-interaction-id', async () => {
    const res = await t.fetch(`${t.issuer}/.well-known/openid-configuration`);
    expect(res.status).toBe(200);
    expect(res.headers.get('strict-transport-security')).toMatch(/max-age=\d{7,}/);
    expect(res.headers.get('x-content-type-options')).toBe('nosniff');
    expect(res.headers.get('x-fapi-interaction-id')).toMatch(
      /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/,
    );
  });

  it('echoes a client x-fapi-interaction-id, also on errors, and replaces a malformed one', async () => {
    const id = '3f1e0c52-9c1d-4d8e-a0e5-0a3b7b1f2c4d';
    const ok = await t.fetch(`${t.issuer}/jwks`, { headers: { 'x-fapi-interaction-id': id } });
    expect(ok.headers.get('x-fapi-interaction-id')).toBe(id);
    const err = await t.fetch(`${t.issuer}/api/v1/accounts`, { headers: { 'x-fapi-interaction-id': id } });
    expect(err.status).toBe(401);
    expect(err.headers.get('x-fapi-interaction-id')).toBe(id);
    const bad = await t.fetch(`${t.issuer}/jwks`, { headers: { 'x-fapi-interaction-id': '<script>' } });
    expect(bad.headers.get('x-fapi-interaction-id')).not.toBe('<script>');
  });

  it('publishes only public signing keys with the FAPI algorithms', async () => {
    const jwks = (await (await t.fetch(`${t.issuer}/jwks`)).json()) as {
      keys: Array<Record<string, unknown>>;
    };
    expect(jwks.keys.length).toBeGreaterThanOrEqual(3);
    for (const k of jwks.keys) {
      expect(['ES256', 'PS256', 'EdDSA']).toContain(k.alg);
      for (const priv of ['d', 'p', 'q', 'dp', 'dq', 'qi']) expect(k).not.toHaveProperty(priv);
    }
  });
});

describe('the API error envelope', () => {
  it('asks for a DPoP token when none is sent', async () => {
    const res = await t.fetch(`${t.issuer}/api/v1/accounts`);
    expect(res.status).toBe(401);
    expect(res.headers.get('www-authenticate')).toMatch(/^DPoP algs="PS256 ES256 EdDSA"$/);
    const body = (await res.json()) as {
      error: { status: number; code: string; message: string };
      meta: { interactionId: string };
    };
    expect(body.error).toMatchObject({ status: 401, code: 'unauthorized' });
    expect(body.meta.interactionId).toBe(res.headers.get('x-fapi-interaction-id'));
  });

  it('rejects an unknown token with invalid_token in WWW-Authenticate and the envelope', async () => {
    const res = await t.fetch(`${t.issuer}/api/v1/accounts`, {
      headers: { authorization: 'DPoP not-a-token', dpop: 'x.y.z' },
    });
    expect(res.status).toBe(401);
    expect(res.headers.get('www-authenticate')).toMatch(/^DPoP error="invalid_token"/);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe('invalid_token');
  });

  it('answers an unknown token presented as Bearer (a certificate-bound client) with a Bearer challenge', async () => {
    const res = await t.fetch(`${t.issuer}/api/v1/accounts`, {
      headers: { authorization: 'Bearer not-a-token' },
    });
    expect(res.status).toBe(401);
    expect(res.headers.get('www-authenticate')).toMatch(/^Bearer error="invalid_token"/);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe('invalid_token');
    // Grant management answers the same way, in its OAuth error format.
    const grants = await t.fetch(`${t.issuer}/grants/some-grant`, {
      headers: { authorization: 'Bearer not-a-token' },
    });
    expect(grants.status).toBe(401);
    expect(grants.headers.get('www-authenticate')).toMatch(/^Bearer error="invalid_token"/);
    expect(((await grants.json()) as { error: string }).error).toBe('invalid_token');
  });
});

describe('interaction endpoints answer client mistakes with 4xx', () => {
  it('an unknown interaction without cookies is a 400 page, not a 500', async () => {
    const res = await t.fetch(`${t.issuer}/interaction/doesnotexist`);
    expect(res.status).toBe(400);
    expect(await res.text()).toContain('invalid_request');
    const api = await postJson('/interaction/doesnotexist/passkey/options', '', {});
    expect(api.status).toBe(400);
    expect(((await api.json()) as { error: string }).error).toBe('invalid_request');
  });

  it('refuses a body that is not JSON, or of the wrong type, cleanly', async () => {
    const { uid, cookie } = await openInteraction();
    const notJson = await postJson(`/interaction/${uid}/enroll/options`, cookie, '{oops');
    expect(notJson.status).toBe(400);
    const wrongType = await t.fetch(`${t.issuer}/interaction/${uid}/enroll/options`, {
      method: 'POST',
      headers: { 'content-type': 'text/plain', cookie },
      body: 'hello',
    });
    expect(wrongType.status).toBe(415);
    const missing = await postJson(`/interaction/${uid}/enroll/options`, cookie, {
      customerNumber: '10000001',
    });
    expect(missing.status).toBe(400);
  });

  it('rejects a wrong enrollment ticket with a clear error and locks after repeated guessing', async () => {
    const { uid, cookie } = await openInteraction();
    const good = await issueEnrollmentTicket(t.hub.authn, {
      customerId: t.hub.demo!.customerId,
      issuedBy: 'operator:test',
    });
    const guess = 'KKH-00000-00000-00000-00000';
    let last: Response | undefined;
    for (let i = 0; i < t.hub.config.enrollment.maxFailedAttempts; i++) {
      last = await postJson(`/interaction/${uid}/enroll/options`, cookie, {
        customerNumber: '10000001',
        ticket: guess,
      });
      expect(last.status).toBeGreaterThanOrEqual(400);
      expect(last.status).toBeLessThan(500);
    }
    // After the limit even the right ticket no longer works: the operator must issue a new one.
    const locked = await postJson(`/interaction/${uid}/enroll/options`, cookie, {
      customerNumber: '10000001',
      ticket: good.ticket,
    });
    expect(locked.status).toBe(429);
    expect(((await locked.json()) as { error_code: string }).error_code).toBe('ERR_TICKET_LOCKED');
    const audit = await t.hub.db.query<{ type: string }>(
      "SELECT type FROM audit_events WHERE customer_id = $1 AND type LIKE 'enrollment.%'",
      [t.hub.demo!.customerId],
    );
    expect(audit.rows.map((r) => r.type)).toContain('enrollment.ticket.locked');
    for (const row of (await t.hub.db.query<{ data: unknown }>('SELECT data FROM audit_events')).rows)
      expect(JSON.stringify(row.data)).not.toContain(good.ticket.slice(4));
  });

  it('rejects a passkey created for another origin', async () => {
    const { uid, cookie } = await openInteraction();
    const ticket = await issueEnrollmentTicket(t.hub.authn, {
      customerId: t.hub.demo!.customerId,
      issuedBy: 'operator:test',
    });
    const options = await postJson(`/interaction/${uid}/enroll/options`, cookie, {
      customerNumber: '10000001',
      ticket: ticket.ticket,
    });
    expect(options.status).toBe(200);
    const emulator = createEmulator();
    // A look-alike origin (a proxy on another port) that a phishing page would have.
    const response = emulator.register((await options.json()) as never, 'https://localhost:1');
    const verify = await postJson(`/interaction/${uid}/enroll/verify`, cookie, { response });
    expect(verify.status).toBe(400);
    expect(((await verify.json()) as { error_code: string }).error_code).toBe('ERR_WEBAUTHN_VERIFICATION');
    const stored = await t.hub.db.query('SELECT 1 FROM passkeys WHERE customer_id = $1', [
      t.hub.demo!.customerId,
    ]);
    expect(stored.rowCount).toBe(0);
    const unused = await t.hub.db.query('SELECT used_at FROM enrollment_tickets WHERE id = $1', [
      ticket.ticketId,
    ]);
    expect(unused.rows[0]).toEqual({ used_at: null });
  });
});

// Transport (TLS versions and suites on both listeners, HSTS on the browser-facing endpoints, Secure
// and HttpOnly cookies) is checked by the conformance plan's group "Transport" (conformance/checks/
// transport.ts), under vitest in conformance/fapi2.test.ts.
