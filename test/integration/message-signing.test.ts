/**
 * FAPI 2.0 Message Signing against a running hub: signed request objects at PAR (every rule of the
 * checklist, with the exact OAuth error), JARM through openid-client, signed token introspection
 * for resource servers only, and revocation by the owning client.
 */
import { generateKeyPairSync, randomUUID } from 'node:crypto';
import {
  calculateJwkThumbprint,
  createLocalJWKSet,
  decodeJwt,
  decodeProtectedHeader,
  exportJWK,
  generateKeyPair,
  jwtVerify,
  SignJWT,
} from 'jose';
import * as client from 'openid-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type ClientIdentity,
  clientAssertion,
  clientFromFile,
  generateDpopKey,
  type HubConnection,
  type HubMetadata,
  now,
  pkce,
  pushAuthorizationRequest,
  requestObject,
  send,
} from '../../conformance/lib/client.ts';
import type { PasskeyUser } from '../../conformance/lib/login.ts';
import { addClient } from '../../src/oidc/clients.ts';
import { demoCustomer } from '../support/customer.ts';
import { startTestHub, type TestHub } from '../support/hub.ts';
import { accountsStatus, demoRp, redeem, startAuthorization } from '../support/rp.ts';

let t: TestHub;
let hub: HubConnection;
let customer: PasskeyUser;
let jar: ClientIdentity;
let jarm: ClientIdentity;
let rs: ClientIdentity;
let demo: ClientIdentity;

/** Registers a FAPI client (operator path) with extra metadata and returns its identity. */
async function register(id: string, extra: Record<string, unknown>, grants = ['authorization_code']) {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const redirectUri = `https://${id}.example/cb`;
  await addClient(
    t.hub.db,
    {
      client_id: id,
      client_name: id,
      redirect_uris: grants.includes('authorization_code') ? [redirectUri] : [],
      grant_types: grants,
      token_endpoint_auth_method: 'private_key_jwt',
      token_endpoint_auth_signing_alg: 'ES256',
      dpop_bound_access_tokens: true,
      scope: 'openid offline_access accounts',
      jwks: { keys: [{ ...publicKey.export({ format: 'jwk' }), kid: `${id}-1`, alg: 'ES256', use: 'sig' }] },
      ...extra,
    },
    'operator:test',
  );
  return clientFromFile({
    issuer: t.issuer,
    client_id: id,
    redirect_uris: [redirectUri],
    scope: 'openid offline_access accounts',
    private_jwk: { ...privateKey.export({ format: 'jwk' }), kid: `${id}-1`, alg: 'ES256' },
  });
}

function rpFor(c: ClientIdentity): Promise<client.Configuration> {
  return client.discovery(
    new URL(t.issuer),
    c.clientId,
    undefined,
    client.PrivateKeyJwt({ key: c.privateKey, kid: c.kid }),
    { [client.customFetch]: t.fetch as client.CustomFetch },
  );
}

beforeAll(async () => {
  t = await startTestHub();
  const metadata = (await (
    await t.fetch(`${t.issuer}/.well-known/openid-configuration`)
  ).json()) as HubMetadata;
  hub = { issuer: t.issuer, fetch: t.fetch, dispatcher: t.dispatcher, metadata };
  customer = demoCustomer(t);
  jar = await register('jar-client', { require_signed_request_object: true });
  jarm = await register('jarm-client', { response_modes: ['jwt', 'query.jwt', 'form_post.jwt'] });
  rs = await register('accounts-rs', { resource_server: true }, ['client_credentials']);
  demo = await clientFromFile(t.demoClient);
});
afterAll(() => t?.close());

/** The authorization parameters a request object carries by default. */
function inside(p = pkce(), extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    response_type: 'code',
    redirect_uri: jar.redirectUri,
    scope: 'openid accounts',
    code_challenge: p.challenge,
    code_challenge_method: 'S256',
    state: 'state-inside',
    nonce: 'nonce-inside',
    ...extra,
  };
}

async function parWithRequest(request: string, outside: Record<string, string> = {}) {
  return pushAuthorizationRequest(hub, jar, { request, ...outside }, { dpop: await generateDpopKey() });
}

const b64 = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url');

describe('JAR: signed request objects at the PAR endpoint', () => {
  it('a client registered for signed requests cannot push plain parameters (invalid_request)', async () => {
    const p = pkce();
    const res = await pushAuthorizationRequest(
      hub,
      jar,
      Object.fromEntries(Object.entries(inside(p)).map(([k, v]) => [k, String(v)])),
      { dpop: await generateDpopKey() },
    );
    expect(res.status).toBe(400);
    expect(res.body?.error).toBe('invalid_request');
  });

  it('accepts a signed request object; only what is inside counts (state and nonce inside win)', async () => {
    const p = pkce();
    const dpopKey = await generateDpopKey();
    const res = await pushAuthorizationRequest(
      hub,
      jar,
      {
        request: await requestObject(t.issuer, jar, inside(p)),
        state: 'state-outside',
        nonce: 'nonce-outside',
        scope: 'openid offline_access accounts',
      },
      { dpop: dpopKey },
    );
    expect(res.status).toBe(201);
    const url = new URL(hub.metadata.authorization_endpoint);
    url.searchParams.set('client_id', jar.clientId);
    url.searchParams.set('request_uri', String(res.body?.request_uri));
    const callback = await customer.login(url, { redirectUri: jar.redirectUri });
    expect(callback.searchParams.get('state')).toBe('state-inside');
    const config = await rpFor(jar);
    const tokens = await client.authorizationCodeGrant(
      config,
      callback,
      { pkceCodeVerifier: p.verifier, expectedState: 'state-inside', expectedNonce: 'nonce-inside' },
      undefined,
      { DPoP: client.getDPoPHandle(config, dpopKey.pair) },
    );
    expect(tokens.claims()?.nonce).toBe('nonce-inside');
    // The outside scope (offline_access) did not count: no refresh token.
    expect(tokens.refresh_token).toBeUndefined();
  });

  it('accepts nbf 8 s in the future and an aud array holding the issuer', async () => {
    const t0 = now();
    expect(
      (await parWithRequest(await requestObject(t.issuer, jar, { ...inside(), nbf: t0 + 8 }))).status,
    ).toBe(201);
    const audArray = await requestObject(t.issuer, jar, {
      ...inside(),
      aud: [t.issuer, 'https://other.example'],
    });
    expect((await parWithRequest(audArray)).status).toBe(201);
  });

  const t0 = () => now();
  const refusals: [string, () => Promise<string>, string][] = [
    [
      'without exp',
      async () => requestObject(t.issuer, jar, { ...inside(), exp: undefined }),
      'invalid_request_object',
    ],
    [
      'without nbf',
      async () => requestObject(t.issuer, jar, { ...inside(), nbf: undefined }),
      'invalid_request_object',
    ],
    [
      'expired',
      async () => requestObject(t.issuer, jar, { ...inside(), nbf: t0() - 120, exp: t0() - 60 }),
      'invalid_request_object',
    ],
    [
      'exp − nbf over 60 minutes',
      async () => requestObject(t.issuer, jar, { ...inside(), nbf: t0(), exp: t0() + 3601 }),
      'invalid_request_object',
    ],
    [
      'nbf over 60 minutes in the past',
      async () => requestObject(t.issuer, jar, { ...inside(), nbf: t0() - 3700, exp: t0() + 60 }),
      'invalid_request_object',
    ],
    [
      'aud another server',
      async () => requestObject(t.issuer, jar, { ...inside(), aud: 'https://other.example' }),
      'invalid_request_object',
    ],
    [
      'iss not the client',
      async () => requestObject(t.issuer, jar, { ...inside(), iss: 'someone-else' }),
      'invalid_request_object',
    ],
    [
      'without redirect_uri inside',
      async () => requestObject(t.issuer, jar, { ...inside(), redirect_uri: undefined }),
      'invalid_request',
    ],
    [
      'request_uri inside',
      async () =>
        requestObject(t.issuer, jar, { ...inside(), request_uri: 'urn:ietf:params:oauth:request_uri:x' }),
      'invalid_request_object',
    ],
    [
      'signed RS256',
      async () => {
        const { privateKey } = await generateKeyPair('RS256');
        return new SignJWT(claimsOf(inside()))
          .setProtectedHeader({ alg: 'RS256', kid: jar.kid })
          .sign(privateKey);
      },
      'invalid_request_object',
    ],
    [
      'signed HS256',
      async () =>
        new SignJWT(claimsOf(inside()))
          .setProtectedHeader({ alg: 'HS256' })
          .sign(new TextEncoder().encode('x'.repeat(32))),
      'invalid_request_object',
    ],
    ['alg none', async () => `${b64({ alg: 'none' })}.${b64(claimsOf(inside()))}.`, 'invalid_request_object'],
    [
      'invalid signature',
      async () => {
        const [h, p, s] = (await requestObject(t.issuer, jar, inside())).split('.') as [
          string,
          string,
          string,
        ];
        const sig = Buffer.from(s, 'base64url');
        sig[5]! ^= 1;
        return `${h}.${p}.${sig.toString('base64url')}`;
      },
      'invalid_request_object',
    ],
    [
      "signed with another client's key",
      async () =>
        new SignJWT(claimsOf(inside()))
          .setProtectedHeader({ alg: 'ES256', kid: jar.kid })
          .sign(demo.privateKey),
      'invalid_request_object',
    ],
  ];
  it.each(refusals)('refuses a request object %s', async (_what, build, error) => {
    const res = await parWithRequest(await build());
    expect(res.status).toBe(400);
    expect(res.body?.error).toBe(error);
  });

  it('refuses request_uri in the PAR body (RFC 9126 §2.1)', async () => {
    const res = await parWithRequest(await requestObject(t.issuer, jar, inside()), {
      request_uri: 'urn:ietf:params:oauth:request_uri:abc',
    });
    expect(res.status).toBe(400);
    expect(res.body?.error).toBe('request_uri_not_supported');
  });
});

function claimsOf(params: Record<string, unknown>): Record<string, unknown> {
  const t0 = now();
  return {
    iss: jar.clientId,
    aud: t.issuer,
    client_id: jar.clientId,
    nbf: t0,
    exp: t0 + 60,
    jti: randomUUID(),
    ...params,
  };
}

describe('JARM', () => {
  it('openid-client completes a flow with response_mode=jwt; the response is signed by the hub (FAPI alg)', async () => {
    const config = await rpFor(jarm);
    client.useJwtResponseMode(config);
    const dpop = client.getDPoPHandle(config, await client.randomDPoPKeyPair('ES256'));
    const verifier = client.randomPKCECodeVerifier();
    const state = client.randomState();
    const url = await client.buildAuthorizationUrlWithPAR(
      config,
      {
        redirect_uri: jarm.redirectUri,
        scope: 'openid accounts',
        response_mode: 'jwt',
        code_challenge: await client.calculatePKCECodeChallenge(verifier),
        code_challenge_method: 'S256',
        state,
      },
      { DPoP: dpop },
    );
    const callback = await customer.login(url, { redirectUri: jarm.redirectUri });
    expect(callback.searchParams.has('code')).toBe(false);
    const response = callback.searchParams.get('response')!;
    expect(['PS256', 'ES256', 'EdDSA']).toContain(decodeProtectedHeader(response).alg);
    const claims = decodeJwt(response);
    expect(claims).toMatchObject({ iss: t.issuer, aud: jarm.clientId, state });
    expect(claims.exp).toBeGreaterThan(now());
    const tokens = await client.authorizationCodeGrant(
      config,
      callback,
      { pkceCodeVerifier: verifier, expectedState: state },
      undefined,
      { DPoP: dpop },
    );
    expect(tokens.access_token).toBeTruthy();
  });

  it('the demo RP completes a flow with response_mode=query.jwt', async () => {
    const rp = await demoRp(t);
    client.useJwtResponseMode(rp.config);
    const auth = await startAuthorization(rp, 'openid accounts', { response_mode: 'query.jwt' });
    const callback = await customer.login(auth.url, { redirectUri: rp.redirectUri });
    expect(decodeJwt(callback.searchParams.get('response')!)).toMatchObject({
      iss: t.issuer,
      aud: 'demo-aggregator',
      state: auth.state,
    });
    const tokens = await redeem(rp, auth, callback);
    expect(await accountsStatus(t, rp, tokens.access_token)).toBe(200);
  });

  it('a client registered for JARM only cannot get a plain query response (invalid_request)', async () => {
    const p = pkce();
    const res = await pushAuthorizationRequest(
      hub,
      jarm,
      {
        response_type: 'code',
        redirect_uri: jarm.redirectUri,
        scope: 'openid accounts',
        code_challenge: p.challenge,
        code_challenge_method: 'S256',
      },
      { dpop: await generateDpopKey() },
    );
    expect(res.status).toBe(400);
    expect(res.body?.error).toBe('invalid_request');
  });
});

describe('introspection (signed) and revocation', () => {
  let tokens: client.TokenEndpointResponse & client.TokenEndpointResponseHelpers;
  let rp: Awaited<ReturnType<typeof demoRp>>;
  /** The demo aggregator's tokens from one full authorization. */
  async function flow() {
    const auth = await startAuthorization(rp, 'openid offline_access accounts');
    const callback = await customer.login(auth.url, { redirectUri: rp.redirectUri });
    return redeem(rp, auth, callback);
  }
  beforeAll(async () => {
    rp = await demoRp(t);
    tokens = await flow();
  });

  async function introspect(caller: ClientIdentity, token: string, accept: string) {
    return send(hub, String(hub.metadata.introspection_endpoint), {
      headers: { accept },
      form: {
        token,
        client_id: caller.clientId,
        client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
        client_assertion: await clientAssertion(t.issuer, caller),
      },
    });
  }

  it('a resource server gets a signed JWT (RFC 9701) telling cnf, scope, authorization_details, acr, auth_time', async () => {
    const res = await introspect(rs, tokens.access_token, 'application/token-introspection+jwt');
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^application\/token-introspection\+jwt/);
    const jwks = (await (await t.fetch(hub.metadata.jwks_uri)).json()) as { keys: [] };
    const { payload, protectedHeader } = await jwtVerify(res.text, createLocalJWKSet(jwks), {
      issuer: t.issuer,
      audience: rs.clientId,
      typ: 'token-introspection+jwt',
      algorithms: ['PS256', 'ES256', 'EdDSA'],
    });
    expect(protectedHeader.alg).toBe('ES256');
    const ti = payload.token_introspection as Record<string, unknown>;
    const jkt = await calculateJwkThumbprint(await exportJWK(rp.dpopKey.publicKey));
    expect(ti).toMatchObject({
      active: true,
      client_id: 'demo-aggregator',
      sub: t.hub.demo!.customerId,
      scope: expect.stringContaining('accounts'),
      cnf: { jkt },
      acr: 'phr',
      token_type: 'DPoP',
    });
    expect(typeof ti.exp).toBe('number');
    expect(typeof ti.auth_time).toBe('number');
    // A scope-only consent in the shape every granted account_information detail has (src/consent/terms.ts).
    const consent = (
      await t.hub.db.query<{ account_ids: string[]; expires_at: Date }>(
        'SELECT account_ids, expires_at FROM consents WHERE grant_id = $1',
        [tokens.grant_id],
      )
    ).rows[0]!;
    expect(consent.account_ids.length).toBeGreaterThan(0);
    expect(ti.authorization_details).toEqual([
      {
        type: 'account_information',
        locations: [`${t.issuer}/api/v1`],
        data_types: ['balances', 'holdings', 'transactions'],
        transaction_lookback_days: 730,
        expires_at: consent.expires_at.toISOString(),
        accounts: consent.account_ids,
      },
    ]);
  });

  it('answers plain JSON when asked for JSON', async () => {
    const res = await introspect(rs, tokens.access_token, 'application/json');
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ active: true, client_id: 'demo-aggregator' });
  });

  it('a FAPI client learns nothing by introspecting, not even about its own tokens', async () => {
    for (const token of [tokens.access_token, tokens.refresh_token!]) {
      const res = await introspect(demo, token, 'application/json');
      expect(res.status).toBe(200);
      expect(res.body).toEqual({ active: false });
    }
  });

  const read = (accessToken: string) => accountsStatus(t, rp, accessToken);

  it('the owner revokes an access token: the API answers 401, introspection says inactive', async () => {
    const own = await flow();
    expect(await read(own.access_token)).toBe(200);
    await client.tokenRevocation(rp.config, own.access_token, { token_type_hint: 'access_token' });
    expect(await read(own.access_token)).toBe(401);
    expect((await introspect(rs, own.access_token, 'application/json')).body).toEqual({ active: false });
    // The hub's adapter revokes by grant in one statement: the grant's refresh token goes with it.
    await expect(
      client.refreshTokenGrant(rp.config, own.refresh_token!, undefined, { DPoP: rp.dpop }),
    ).rejects.toMatchObject({ error: 'invalid_grant' });
  });

  it('another client cannot revoke the tokens (invalid_request); the owner revokes the refresh token: invalid_grant', async () => {
    const own = await flow();
    const other = await rpFor(jar);
    await expect(client.tokenRevocation(other, own.refresh_token!)).rejects.toMatchObject({
      error: 'invalid_request',
    });
    expect((await introspect(rs, own.refresh_token!, 'application/json')).body?.active).toBe(true);
    await client.tokenRevocation(rp.config, own.refresh_token!, { token_type_hint: 'refresh_token' });
    await expect(
      client.refreshTokenGrant(rp.config, own.refresh_token!, undefined, { DPoP: rp.dpop }),
    ).rejects.toMatchObject({ error: 'invalid_grant' });
    expect((await introspect(rs, own.refresh_token!, 'application/json')).body).toEqual({ active: false });
    expect(await read(own.access_token)).toBe(401);
    const audit = await t.hub.db.query<{ type: string; client_id: string }>(
      "SELECT type, client_id FROM audit_events WHERE type IN ('token.revoked', 'token.revocation.refused', 'token.introspection.refused')",
    );
    expect(audit.rows).toEqual(
      expect.arrayContaining([
        { type: 'token.revocation.refused', client_id: 'jar-client' },
        { type: 'token.revoked', client_id: 'demo-aggregator' },
        { type: 'token.introspection.refused', client_id: 'demo-aggregator' },
      ]),
    );
  });
});
