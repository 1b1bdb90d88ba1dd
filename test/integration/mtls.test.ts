/**
 * Mutual TLS (RFC 8705) over real HTTPS against a running hub, with a test CA and client certificates
 * made here. Every client authentication {private_key_jwt, tls_client_auth, self_signed_tls_client_auth}
 * × sender constraint {DPoP, mTLS} goes through a full openid flow with openid-client 6 (PAR, passkey
 * login, consent, code, userinfo, refresh, the read API), presenting its certificate through an undici
 * dispatcher. Then what must fail: missing, wrong, untrusted and unregistered certificates, a
 * certificate-bound token over another certificate or with a DPoP proof beside it, and — behind a
 * TLS-terminating proxy — a certificate header from an address that is not a trusted proxy.
 */
import { createPublicKey, generateKeyPairSync, randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import * as client from 'openid-client';
import { Agent, fetch as undiciFetch } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { completeLogin } from '../../conformance/lib/login.ts';
import { DEMO_INSTITUTION_ID } from '../../src/demo/seed.ts';
import { jwkThumbprint } from '../../src/keys/index.ts';
import { addClient } from '../../src/oidc/clients.ts';
import { createSelfSigned, createTestCa, type TestCa, type TestCert } from '../support/certificates.ts';
import { enrollDemoCustomer } from '../support/customer.ts';
import { startTestHub, type TestHub } from '../support/hub.ts';
import type { PasskeyEmulator } from '../support/passkeyEmulator.ts';

type AuthMethod = 'private_key_jwt' | 'tls_client_auth' | 'self_signed_tls_client_auth';
type Sender = 'dpop' | 'mtls';
// biome-ignore lint/suspicious/noExplicitAny: JSON bodies of the hub's answers
type Body = any;

interface TestClient {
  clientId: string;
  auth: AuthMethod;
  sender: Sender;
  cert: TestCert | undefined;
  signingKey: CryptoKey | undefined;
  kid: string | undefined;
}

let t: TestHub;
let ca: TestCa;
let untrustedCa: TestCa;
let device: PasskeyEmulator;
let mtlsOrigin: string;
let pkiDir: string;
const agents: Agent[] = [];

const crlFile = () => path.join(pkiDir, 'clients-ca.crl.pem');

/** Publishes a new CRL of `ca` (the hubs re-read the file when it changes). */
async function revoke(certs: TestCert[]): Promise<void> {
  writeFileSync(crlFile(), await ca.crl({ revoked: certs }));
  // A distinct mtime even when two writes fall in the same clock tick.
  const at = new Date(Date.now() + revocations++ * 1000);
  utimesSync(crlFile(), at, at);
}
let revocations = 1;

/** fetch over a connection presenting `cert` (or none), trusting the hub's dev CA. */
function fetchWith(cert: TestCert | undefined, target: TestHub = t): typeof globalThis.fetch {
  const agent = new Agent({
    connect: { ca: target.caPem, ...(cert ? { cert: cert.certPem, key: cert.keyPem } : {}) },
  });
  agents.push(agent);
  return ((url: string | URL, init?: RequestInit) =>
    undiciFetch(url, { ...(init as object), dispatcher: agent })) as unknown as typeof globalThis.fetch;
}

function es256Key() {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const pub = publicKey.export({ format: 'jwk' }) as { kty: string };
  return { privateKey, publicJwk: { ...pub, kid: jwkThumbprint(pub), alg: 'ES256', use: 'sig' } };
}

/** Registers a client through the operator's policy (src/oidc/clients.ts) and returns its credentials. */
async function register(
  auth: AuthMethod,
  sender: Sender,
  extra: Record<string, unknown> = {},
  o: { id?: string; grant?: 'authorization_code' | 'client_credentials'; target?: TestHub } = {},
): Promise<TestClient> {
  const target = o.target ?? t;
  const clientId = o.id ?? `${auth}-${sender}`.replaceAll('_', '-');
  let cert: TestCert | undefined;
  const metadata: Record<string, unknown> = {
    client_id: clientId,
    client_name: `mTLS test ${clientId}`,
    token_endpoint_auth_method: auth,
    ...(o.grant === 'client_credentials'
      ? { grant_types: ['client_credentials'] }
      : {
          grant_types: ['authorization_code', 'refresh_token'],
          redirect_uris: target.demoClient.redirect_uris,
          scope: 'openid offline_access accounts',
        }),
    ...(sender === 'dpop'
      ? { dpop_bound_access_tokens: true }
      : { tls_client_certificate_bound_access_tokens: true }),
  };
  let signingKey: CryptoKey | undefined;
  let kid: string | undefined;
  if (auth === 'private_key_jwt') {
    const k = es256Key();
    metadata.jwks = { keys: [k.publicJwk] };
    metadata.token_endpoint_auth_signing_alg = 'ES256';
    kid = k.publicJwk.kid;
    signingKey = await crypto.subtle.importKey(
      'pkcs8',
      k.privateKey.export({ format: 'der', type: 'pkcs8' }),
      { name: 'ECDSA', namedCurve: 'P-256' },
      false,
      ['sign'],
    );
    // A certificate only to bind tokens to: nobody needs to trust it.
    if (sender === 'mtls') cert = await createSelfSigned({ subject: `CN=${clientId}` });
  } else if (auth === 'tls_client_auth') {
    cert = await ca.issue({
      subject: `CN=${clientId}, O=Test Aggregator, C=JP`,
      san: [{ type: 'dns', value: `${clientId}.aggregator.example` }],
    });
    // Both ways of naming the expected subject: the DN, and a SAN.
    if (sender === 'dpop') metadata.tls_client_auth_subject_dn = `CN=${clientId}, O=Test Aggregator, C=JP`;
    else metadata.tls_client_auth_san_dns = `${clientId}.aggregator.example`;
  } else {
    cert = await createSelfSigned({ subject: `CN=${clientId}` });
    const jwk = createPublicKey(cert.certPem).export({ format: 'jwk' });
    metadata.jwks = { keys: [{ ...jwk, use: 'sig', x5c: [cert.x5c] }] };
  }
  await addClient(target.hub.db, { ...metadata, ...extra }, 'operator:test');
  return { clientId, auth, sender, cert, signingKey, kid };
}

/** openid-client for a test client: its certificate on every connection, the mTLS aliases when it has one. */
async function configFor(
  c: TestClient,
  o: { cert?: TestCert | null; target?: TestHub; fetch?: typeof globalThis.fetch } = {},
) {
  const cert = o.cert === undefined ? c.cert : (o.cert ?? undefined);
  const target = o.target ?? t;
  const authn =
    c.auth === 'private_key_jwt'
      ? client.PrivateKeyJwt({ key: c.signingKey!, kid: c.kid! })
      : client.TlsClientAuth();
  return client.discovery(
    new URL(target.issuer),
    c.clientId,
    { use_mtls_endpoint_aliases: c.cert !== undefined, id_token_signed_response_alg: 'ES256' },
    authn,
    { [client.customFetch]: (o.fetch ?? fetchWith(cert, target)) as client.CustomFetch },
  );
}

interface Flow {
  config: client.Configuration;
  dpop: client.DPoPHandle | undefined;
  tokens: client.TokenEndpointResponse & client.TokenEndpointResponseHelpers;
}

/** PAR → login with the passkey → consent → code → tokens, as the client would do it. */
async function authorize(c: TestClient): Promise<Flow> {
  const config = await configFor(c);
  const dpop =
    c.sender === 'dpop' ? client.getDPoPHandle(config, await client.randomDPoPKeyPair('ES256')) : undefined;
  const codeVerifier = client.randomPKCECodeVerifier();
  const state = client.randomState();
  const nonce = client.randomNonce();
  const url = await client.buildAuthorizationUrlWithPAR(
    config,
    {
      redirect_uri: t.demoClient.redirect_uris[0]!,
      scope: 'openid offline_access accounts',
      code_challenge: await client.calculatePKCECodeChallenge(codeVerifier),
      code_challenge_method: 'S256',
      state,
      nonce,
    },
    dpop ? { DPoP: dpop } : undefined,
  );
  const callback = await completeLogin({ fetch: t.fetch, authorizationUrl: url, device });
  const tokens = await client.authorizationCodeGrant(
    config,
    callback,
    { pkceCodeVerifier: codeVerifier, expectedState: state, expectedNonce: nonce },
    undefined,
    dpop ? { DPoP: dpop } : undefined,
  );
  return { config, dpop, tokens };
}

/** A read of the consented accounts through openid-client; the status, 0 on a network error. */
async function readAccounts(f: Flow, origin: string, token = f.tokens.access_token): Promise<number> {
  return client
    .fetchProtectedResource(
      f.config,
      token,
      new URL(`${origin}/api/v1/accounts`),
      'GET',
      undefined,
      undefined,
      f.dpop ? { DPoP: f.dpop } : undefined,
    )
    .then(
      (r) => r.status,
      (e: client.WWWAuthenticateChallengeError) => e.response?.status ?? 0,
    );
}

/** A hand-built API call: the status, the body and the challenge. */
async function call(
  fetch: typeof globalThis.fetch,
  url: string,
  headers: Record<string, string>,
  init: RequestInit = {},
): Promise<{ status: number; body: Body; challenge: string | null }> {
  const res = await fetch(url, { ...init, headers });
  const text = await res.text();
  return {
    status: res.status,
    body: text ? JSON.parse(text) : undefined,
    challenge: res.headers.get('www-authenticate'),
  };
}

/** Pushes a one-transaction batch for the demo customer's first account with a certificate-bound token. */
async function pushBatch(hub: TestHub, fetch: typeof globalThis.fetch, url: string, accessToken: string) {
  const account = (
    await hub.hub.db.query<{ id: string }>('SELECT id FROM accounts WHERE customer_id = $1 LIMIT 1', [
      hub.hub.demo!.customerId,
    ])
  ).rows[0]!.id;
  const batch = {
    transactions: [
      {
        accountId: account,
        externalId: `mtls-${randomUUID()}`,
        bookedAt: new Date(Date.now() - 86_400_000).toISOString(),
        type: 'deposit',
        amount: '1000',
        currency: 'JPY',
        description: 'mTLS取込',
      },
    ],
  };
  return call(
    fetch,
    url,
    {
      authorization: `Bearer ${accessToken}`,
      'content-type': 'application/json',
      'idempotency-key': randomUUID(),
    },
    { method: 'POST', body: JSON.stringify(batch) },
  );
}

async function auditOf(type: string): Promise<Array<{ client_id: string | null; data: Body }>> {
  return (
    await t.hub.db.query<{ client_id: string | null; data: Body }>(
      'SELECT client_id, data FROM audit_events WHERE type = $1 ORDER BY id',
      [type],
    )
  ).rows;
}

beforeAll(async () => {
  ca = await createTestCa();
  untrustedCa = await createTestCa(ca.subject); // same name, other key
  pkiDir = mkdtempSync(path.join(tmpdir(), 'kkh-mtls-pki-'));
  writeFileSync(path.join(pkiDir, 'clients-ca.pem'), ca.certPem);
  await revoke([]);
  t = await startTestHub({
    mtls: { caFiles: [path.join(pkiDir, 'clients-ca.pem')], revocation: { crlFiles: [crlFile()] } },
  });
  // mtls.port 0 (the default): the system chose the port; the hub knows the aliases' origin.
  mtlsOrigin = t.hub.mtlsUrl!;
  expect(mtlsOrigin).toBe(`https://localhost:${(t.hub.mtlsServer!.address() as AddressInfo).port}`);
  device = await enrollDemoCustomer(t);
});

afterAll(async () => {
  await Promise.all(agents.map((a) => a.close()));
  await t?.close();
  rmSync(pkiDir, { recursive: true, force: true });
});

describe('discovery', () => {
  it('publishes the mTLS methods, certificate-bound tokens and mtls_endpoint_aliases on the mTLS port', async () => {
    const doc = (await (await t.fetch(`${t.issuer}/.well-known/openid-configuration`)).json()) as Body;
    expect(doc.token_endpoint_auth_methods_supported).toEqual([
      'private_key_jwt',
      'tls_client_auth',
      'self_signed_tls_client_auth',
    ]);
    expect(doc.tls_client_certificate_bound_access_tokens).toBe(true);
    const aliases = doc.mtls_endpoint_aliases;
    for (const member of [
      'token_endpoint',
      'pushed_authorization_request_endpoint',
      'revocation_endpoint',
      'userinfo_endpoint',
    ])
      expect(aliases[member]).toBe(doc[member].replace(t.issuer, mtlsOrigin));
    // Introspection is aliased exactly when the hub offers it.
    expect('introspection_endpoint' in aliases).toBe('introspection_endpoint' in doc);
  });

  it('requests a certificate only on the mTLS port, and completes handshakes without one', async () => {
    const cert = await ca.issue({ subject: 'CN=probe' });
    const main = await fetchWith(cert)(`${t.issuer}/healthz`);
    expect(main.status).toBe(200);
    const alias = await fetchWith(undefined)(`${mtlsOrigin}/healthz`);
    expect(alias.status).toBe(200);
  });
});

describe('every client authentication × sender constraint (openid-client)', () => {
  const combos: Array<[AuthMethod, Sender]> = [];
  for (const auth of ['private_key_jwt', 'tls_client_auth', 'self_signed_tls_client_auth'] as const)
    for (const sender of ['dpop', 'mtls'] as const) combos.push([auth, sender]);

  it.each(combos)('%s × %s: PAR, code, userinfo, read API, refresh and revocation', async (auth, sender) => {
    const c = await register(auth, sender);
    const f = await authorize(c);
    expect(f.tokens.token_type.toLowerCase()).toBe(sender === 'dpop' ? 'dpop' : 'bearer');
    expect(f.tokens.claims()?.sub).toBeTruthy();

    // Exactly one binding on the stored token: the DPoP key, or the certificate (x5t#S256).
    const stored = await t.hub.provider.AccessToken.find(f.tokens.access_token);
    if (sender === 'dpop') {
      expect(stored?.jkt).toBeTruthy();
      expect(stored?.['x5t#S256']).toBeUndefined();
    } else {
      expect(stored?.['x5t#S256']).toBe(c.cert!.thumbprint);
      expect(stored?.jkt).toBeUndefined();
    }

    const info = await client.fetchUserInfo(
      f.config,
      f.tokens.access_token,
      f.tokens.claims()!.sub,
      f.dpop ? { DPoP: f.dpop } : undefined,
    );
    expect(info.sub).toBe(f.tokens.claims()!.sub);

    if (sender === 'dpop') {
      // A DPoP-bound token works on either origin (htu is the one addressed), certificate or not.
      expect(await readAccounts(f, t.issuer)).toBe(200);
      if (c.cert) expect(await readAccounts(f, mtlsOrigin)).toBe(200);
    } else {
      expect(await readAccounts(f, mtlsOrigin)).toBe(200);
      // On the main port no certificate is asked for: the bound token is refused there.
      expect(await readAccounts(f, t.issuer)).toBe(401);
    }

    const refreshed = await client.refreshTokenGrant(
      f.config,
      f.tokens.refresh_token!,
      undefined,
      f.dpop ? { DPoP: f.dpop } : undefined,
    );
    expect(refreshed.refresh_token ?? f.tokens.refresh_token).toBe(f.tokens.refresh_token);
    const again = await t.hub.provider.AccessToken.find(refreshed.access_token);
    if (sender === 'mtls') expect(again?.['x5t#S256']).toBe(c.cert!.thumbprint);
    else expect(again?.jkt).toBe(stored?.jkt);
    const origin = sender === 'mtls' ? mtlsOrigin : t.issuer;
    expect(await readAccounts(f, origin, refreshed.access_token)).toBe(200);

    // Revocation (at the alias for clients with a certificate) authenticates the same way.
    await client.tokenRevocation(f.config, refreshed.access_token);
    expect(await readAccounts(f, origin, refreshed.access_token)).toBe(401);
  });
});

describe('what must fail', () => {
  let bound: TestClient;
  let flow: Flow;
  let stranger: TestCert;

  beforeAll(async () => {
    bound = await register('private_key_jwt', 'mtls', {}, { id: 'pkjwt-bound-negative' });
    flow = await authorize(bound);
    stranger = await ca.issue({ subject: 'CN=stranger, O=Test Aggregator, C=JP' });
  });

  async function parWith(c: TestClient, cert: TestCert | null) {
    const config = await configFor(c, { cert });
    return client
      .buildAuthorizationUrlWithPAR(config, {
        redirect_uri: t.demoClient.redirect_uris[0]!,
        scope: 'openid accounts',
        code_challenge: await client.calculatePKCECodeChallenge(client.randomPKCECodeVerifier()),
        code_challenge_method: 'S256',
      })
      .then(
        () => 'accepted',
        (e: client.ResponseBodyError) => e.error,
      );
  }

  it('tls_client_auth: no certificate, an untrusted chain or another subject → invalid_client', async () => {
    const c = await register('tls_client_auth', 'mtls', {}, { id: 'tls-negative' });
    expect(await parWith(c, c.cert!)).toBe('accepted');
    expect(await parWith(c, null)).toBe('invalid_client');
    // Same subject and SAN, issued by a CA the hub does not trust.
    const forged = await untrustedCa.issue({
      subject: 'CN=tls-negative, O=Test Aggregator, C=JP',
      san: [{ type: 'dns', value: 'tls-negative.aggregator.example' }],
    });
    expect(await parWith(c, forged)).toBe('invalid_client');
    expect(await parWith(c, stranger)).toBe('invalid_client');
    // A self-signed certificate with the right names is no CA-issued one either.
    const self = await createSelfSigned({
      subject: 'CN=tls-negative, O=Test Aggregator, C=JP',
      san: [{ type: 'dns', value: 'tls-negative.aggregator.example' }],
    });
    expect(await parWith(c, self)).toBe('invalid_client');
  });

  it('tls_client_auth: a certificate its CA has revoked → invalid_client on the next connection, audited', async () => {
    const c = await register('tls_client_auth', 'mtls', {}, { id: 'tls-revoked' });
    expect(await parWith(c, c.cert!)).toBe('accepted');
    await revoke([c.cert!]);
    expect(await parWith(c, c.cert!)).toBe('invalid_client');
    const audited = await t.hub.db.query<{ data: Body }>(
      "SELECT data FROM audit_events WHERE type = 'mtls.certificate.revoked'",
    );
    expect(audited.rows.map((r) => r.data.thumbprint)).toContain(c.cert!.thumbprint);
    // Another certificate of the same CA is unaffected.
    const other = await register('tls_client_auth', 'mtls', {}, { id: 'tls-not-revoked' });
    expect(await parWith(other, other.cert!)).toBe('accepted');
  });

  it('self_signed_tls_client_auth: no certificate or one not in its jwks → invalid_client', async () => {
    const c = await register('self_signed_tls_client_auth', 'dpop', {}, { id: 'self-negative' });
    expect(await parWith(c, c.cert!)).toBe('accepted');
    expect(await parWith(c, null)).toBe('invalid_client');
    expect(await parWith(c, await createSelfSigned({ subject: 'CN=self-negative' }))).toBe('invalid_client');
    expect(await parWith(c, stranger)).toBe('invalid_client');
  });

  it('a certificate-bound token over another certificate, or none, is refused and audited', async () => {
    const url = `${mtlsOrigin}/api/v1/accounts`;
    const bearer = { authorization: `Bearer ${flow.tokens.access_token}` };
    expect((await call(fetchWith(bound.cert), url, bearer)).status).toBe(200);
    for (const [fetch, why] of [
      [fetchWith(stranger), /does not match/],
      [fetchWith(undefined), /over mutual TLS/],
    ] as const) {
      const r = await call(fetch, url, bearer);
      expect(r.status).toBe(401);
      expect(r.body.error).toMatchObject({ status: 401, code: 'invalid_token' });
      expect(r.body.error.message).toMatch(why);
      expect(r.challenge).toMatch(/^Bearer error="invalid_token"/);
    }
    const audited = await auditOf('api.mtls.rejected');
    expect(audited.filter((a) => a.client_id === bound.clientId).length).toBeGreaterThanOrEqual(2);
    // userinfo (oidc-provider) refuses it too.
    const info = await call(fetchWith(stranger), `${mtlsOrigin}/me`, bearer);
    expect(info.status).toBe(401);
    expect(info.body.error).toBe('invalid_token');
  });

  it('grant management checks a certificate-bound token as the read API does: Bearer challenges, refusals audited', async () => {
    const grantId = String(flow.tokens.grant_id);
    const url = `${mtlsOrigin}/grants/${grantId}`;
    const bearer = { authorization: `Bearer ${flow.tokens.access_token}` };
    // Over its certificate, without the grant management scope: 403 with an RFC 6750 challenge, not DPoP.
    const scope = await call(fetchWith(bound.cert), url, bearer);
    expect(scope.status).toBe(403);
    expect(scope.body.error).toBe('insufficient_scope');
    expect(scope.challenge).toMatch(/^Bearer error="insufficient_scope"/);
    // Over another certificate: refused before the scope, and audited.
    const r = await call(fetchWith(stranger), url, bearer);
    expect(r.status).toBe(401);
    expect(r.body.error).toBe('invalid_token');
    expect(r.challenge).toMatch(/^Bearer error="invalid_token"/);
    const audited = (await auditOf('grants.mtls.rejected')).filter((a) => a.client_id === bound.clientId);
    expect(audited).toHaveLength(1);
    expect(audited[0]!.data).toMatchObject({
      path: `/grants/${grantId}`,
      reason: expect.stringMatching(/does not match/),
    });
  });

  it('a refresh over another certificate → invalid_grant; the token stays usable with its own', async () => {
    const other = await configFor(bound, { cert: stranger });
    await expect(client.refreshTokenGrant(other, flow.tokens.refresh_token!)).rejects.toMatchObject({
      error: 'invalid_grant',
    });
    const own = await client.refreshTokenGrant(flow.config, flow.tokens.refresh_token!);
    expect(own.token_type.toLowerCase()).toBe('bearer');
  });

  it('one sender constraint per token: DPoP beside a certificate binding is refused everywhere', async () => {
    const dpop = client.getDPoPHandle(flow.config, await client.randomDPoPKeyPair('ES256'));
    // Token endpoint: the client is registered for certificate-bound tokens and sends a DPoP proof too.
    await expect(
      client.refreshTokenGrant(flow.config, flow.tokens.refresh_token!, undefined, { DPoP: dpop }),
    ).rejects.toMatchObject({ error: 'invalid_request' });
    // Resource server: the DPoP scheme for a certificate-bound token, or a proof beside the Bearer token.
    const url = `${mtlsOrigin}/api/v1/accounts`;
    const asDpop = await call(fetchWith(bound.cert), url, {
      authorization: `DPoP ${flow.tokens.access_token}`,
    });
    expect(asDpop.status).toBe(401);
    expect(asDpop.body.error.code).toBe('invalid_token');
    const both = await call(fetchWith(bound.cert), url, {
      authorization: `Bearer ${flow.tokens.access_token}`,
      dpop: 'eyJhbGciOiJFUzI1NiJ9.e30.AAAA',
    });
    expect(both.status).toBe(400);
    expect(both.body.error).toMatchObject({ code: 'invalid_request' });
    // A DPoP-bound client's certificate is transport only: its token stays DPoP-bound (tested above),
    // and a DPoP-bound token presented as Bearer is refused.
    const dpopClient = await register('tls_client_auth', 'dpop', {}, { id: 'tls-dpop-negative' });
    const f = await authorize(dpopClient);
    const asBearer = await call(fetchWith(dpopClient.cert), url, {
      authorization: `Bearer ${f.tokens.access_token}`,
    });
    expect(asBearer.status).toBe(401);
    expect(asBearer.body.error.message).toMatch(/DPoP scheme/);
  });

  it('ignores (and audits) a certificate header when the hub terminates TLS itself', async () => {
    const r = await call(fetchWith(undefined), `${mtlsOrigin}/api/v1/accounts`, {
      authorization: `Bearer ${flow.tokens.access_token}`,
      'x-ssl-client-cert': encodeURIComponent(bound.cert!.certPem),
    });
    expect(r.status).toBe(401);
    const audited = await auditOf('mtls.certificate_header.ignored');
    expect(audited.at(-1)?.data).toMatchObject({
      reason: 'the hub terminates TLS itself',
      path: '/api/v1/accounts',
    });
  });
});

describe('ingestion API with a certificate-bound client-credentials token', () => {
  it('accepts a batch over the bound certificate only', async () => {
    const c = await register(
      'tls_client_auth',
      'mtls',
      { institution_id: DEMO_INSTITUTION_ID, scope: 'institution:ingest' },
      { id: 'institution-mtls', grant: 'client_credentials' },
    );
    const config = await configFor(c);
    const token = await client.clientCredentialsGrant(config, { scope: 'institution:ingest' });
    expect(token.token_type.toLowerCase()).toBe('bearer');
    const push = (fetch: typeof globalThis.fetch) =>
      pushBatch(t, fetch, `${mtlsOrigin}/api/institution/v1/batches`, token.access_token);
    const other = await push(fetchWith(await ca.issue({ subject: 'CN=other-institution' })));
    expect(other.status).toBe(401);
    expect(other.body.error.code).toBe('invalid_token');
    expect(other.challenge).toMatch(/^Bearer error="invalid_token"/);
    const none = await push(fetchWith(undefined));
    expect(none.status).toBe(401);
    // Refused as the read API and grant management refuse them (one token check), and audited.
    const audited = (await auditOf('institution.mtls.rejected')).filter((a) => a.client_id === c.clientId);
    expect(audited.map((a) => a.data)).toEqual([
      { path: '/api/institution/v1/batches', reason: expect.stringMatching(/does not match/) },
      { path: '/api/institution/v1/batches', reason: expect.stringMatching(/over mutual TLS/) },
    ]);
    const ok = await push(fetchWith(c.cert));
    expect(ok.status).toBe(201);
    expect(ok.body.transactions).toMatchObject({ inserted: 1 });
    // Over its certificate but for an API it has no scope for: an RFC 6750 challenge naming the scope.
    const decision = await call(
      fetchWith(c.cert),
      `${mtlsOrigin}/api/institution/v1/decisions`,
      { authorization: `Bearer ${token.access_token}`, 'content-type': 'application/json' },
      { method: 'POST', body: '{}' },
    );
    expect(decision.status).toBe(403);
    expect(decision.body.error.code).toBe('insufficient_scope');
    expect(decision.challenge).toMatch(/^Bearer error="insufficient_scope".*scope="institution:decisions"/);
  });
});

describe('behind a TLS-terminating proxy', () => {
  /** The proxy hub's re-check interval: short, so that a revocation shows within the test. */
  const RECHECK_MS = 2000;
  let p: TestHub;
  const proxyAgents: Agent[] = [];

  beforeAll(async () => {
    p = await startTestHub({
      tls: { mode: 'proxy' },
      mtls: {
        caFiles: [path.join(pkiDir, 'clients-ca.pem')],
        revocation: { crlFiles: [crlFile()], recheckIntervalMs: RECHECK_MS },
        baseUrl: 'https://mtls.localhost',
        certificateHeader: 'X-Client-Cert',
        trustedProxies: ['127.0.0.2'],
      },
    });
  });
  afterAll(async () => {
    await Promise.all(proxyAgents.map((a) => a.close()));
    await p?.close();
  });

  /**
   * What a proxy does: receive https://host/path, connect to the hub's plain-HTTP listener from
   * `from`, and forward the scheme, host and (from a trusted address) the client certificate.
   */
  function viaProxy(cert: TestCert | undefined, from: string): typeof globalThis.fetch {
    return viaProxyTo(p, cert, from);
  }

  function viaProxyTo(p: TestHub, cert: TestCert | undefined, from: string): typeof globalThis.fetch {
    const agent = new Agent({ localAddress: from });
    proxyAgents.push(agent);
    return ((url: string | URL, init?: RequestInit) => {
      const u = new URL(url);
      const headers: Record<string, string> = {};
      new Headers(init?.headers).forEach((value, name) => {
        headers[name] = value;
      });
      headers['x-forwarded-proto'] = 'https';
      headers['x-forwarded-host'] = u.host;
      if (cert) headers['x-client-cert'] = encodeURIComponent(cert.certPem);
      return undiciFetch(`${p.hub.listenUrl}${u.pathname}${u.search}`, {
        ...(init as object),
        headers,
        dispatcher: agent,
      });
    }) as unknown as typeof globalThis.fetch;
  }

  it('publishes the aliases on the configured mTLS host', async () => {
    const doc = (await (
      await viaProxy(undefined, '127.0.0.1')(`${p.issuer}/.well-known/openid-configuration`)
    ).json()) as Body;
    expect(doc.mtls_endpoint_aliases.token_endpoint).toBe('https://mtls.localhost/token');
  });

  it('believes the header only from the trusted proxy address; otherwise ignores and audits it', async () => {
    const c = await register(
      'tls_client_auth',
      'mtls',
      { institution_id: DEMO_INSTITUTION_ID, scope: 'institution:ingest' },
      { id: 'institution-proxied', grant: 'client_credentials', target: p },
    );
    const trusted = await configFor(c, { target: p, fetch: viaProxy(c.cert, '127.0.0.2') });
    const token = await client.clientCredentialsGrant(trusted, { scope: 'institution:ingest' });
    const stored = await p.hub.provider.ClientCredentials.find(token.access_token);
    expect(stored?.['x5t#S256']).toBe(c.cert!.thumbprint);

    // The same header from an address that is not the proxy: no certificate, so no client authentication.
    const spoofed = await configFor(c, { target: p, fetch: viaProxy(c.cert, '127.0.0.1') });
    await expect(
      client.clientCredentialsGrant(spoofed, { scope: 'institution:ingest' }),
    ).rejects.toMatchObject({
      error: 'invalid_client',
    });
    const audited = (
      await p.hub.db.query<{ data: Body }>(
        "SELECT data FROM audit_events WHERE type = 'mtls.certificate_header.ignored' ORDER BY id",
      )
    ).rows;
    expect(audited.at(-1)?.data).toMatchObject({
      peer: '127.0.0.1',
      reason: 'the TCP peer is not a trusted proxy',
    });

    // The ingestion API: the bound token with its certificate through the proxy; not from elsewhere.
    const push = (fetch: typeof globalThis.fetch) =>
      pushBatch(p, fetch, 'https://mtls.localhost/api/institution/v1/batches', token.access_token);
    expect((await push(viaProxy(c.cert, '127.0.0.1'))).status).toBe(401);
    expect((await push(viaProxy(await ca.issue({ subject: 'CN=x' }), '127.0.0.2'))).status).toBe(401);
    expect((await push(viaProxy(c.cert, '127.0.0.2'))).status).toBe(201);
  });

  it('a revocation takes effect after the re-check interval; every request is refused, audited once per interval', async () => {
    const c = await register(
      'tls_client_auth',
      'mtls',
      { institution_id: DEMO_INSTITUTION_ID, scope: 'institution:ingest' },
      { id: 'institution-revoked', grant: 'client_credentials', target: p },
    );
    const proxied = await configFor(c, { target: p, fetch: viaProxy(c.cert, '127.0.0.2') });
    const grant = () =>
      client.clientCredentialsGrant(proxied, { scope: 'institution:ingest' }).then(
        () => 'accepted',
        (e: client.ResponseBodyError) => e.error,
      );
    const audited = async () =>
      (
        await p.hub.db.query<{ data: Body }>(
          "SELECT data FROM audit_events WHERE type = 'mtls.certificate.revoked' AND data->>'thumbprint' = $1",
          [c.cert!.thumbprint],
        )
      ).rows.length;
    // A good certificate keeps working, request after request.
    for (let i = 0; i < 3; i++) expect(await grant()).toBe('accepted');
    await revoke([c.cert!]);
    await new Promise((r) => setTimeout(r, RECHECK_MS));
    const started = Date.now();
    const outcomes: string[] = [];
    for (let i = 0; i < 6; i++) outcomes.push(await grant());
    const elapsed = Date.now() - started;
    expect(outcomes).toEqual(Array(6).fill('invalid_client'));
    // One audit row per interval the requests spanned (one, unless this machine is very slow), not six.
    const rows = await audited();
    expect(rows).toBeGreaterThanOrEqual(1);
    expect(rows).toBeLessThanOrEqual(1 + Math.floor(elapsed / RECHECK_MS));
    // The next interval: checked again, still refused, audited once more.
    await new Promise((r) => setTimeout(r, RECHECK_MS));
    expect([await grant(), await grant()]).toEqual(['invalid_client', 'invalid_client']);
    expect(await audited()).toBe(rows + 1);
  });

  it('fails closed without a usable CRL: tls_client_auth refused and audited, unless revocation is off', async () => {
    const hubWith = (revocation: Record<string, unknown>) =>
      startTestHub({
        tls: { mode: 'proxy' },
        mtls: {
          caFiles: [path.join(pkiDir, 'clients-ca.pem')],
          certificateHeader: 'X-Client-Cert',
          trustedProxies: ['127.0.0.2'],
          revocation: { crlFiles: [], fetchDistributionPoints: false, ...revocation },
        },
      });
    const strict = await hubWith({});
    const off = await hubWith({ enabled: false });
    try {
      for (const [hub, expected] of [
        [strict, 'invalid_client'],
        [off, 'accepted'],
      ] as const) {
        const c = await register(
          'tls_client_auth',
          'mtls',
          { institution_id: DEMO_INSTITUTION_ID, scope: 'institution:ingest' },
          { id: 'institution-no-crl', grant: 'client_credentials', target: hub },
        );
        const viaTrusted = await configFor(c, { target: hub, fetch: viaProxyTo(hub, c.cert, '127.0.0.2') });
        const outcome = await client.clientCredentialsGrant(viaTrusted, { scope: 'institution:ingest' }).then(
          () => 'accepted',
          (e: client.ResponseBodyError) => e.error,
        );
        expect(outcome).toBe(expected);
      }
      const audited = await strict.hub.db.query<{ data: Body }>(
        "SELECT data FROM audit_events WHERE type = 'mtls.certificate.revocation_unavailable'",
      );
      expect(audited.rows.length).toBeGreaterThan(0);
    } finally {
      await strict.close();
      await off.close();
    }
  });
});
