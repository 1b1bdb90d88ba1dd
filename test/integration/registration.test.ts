/**
 * Dynamic client registration (RFC 7591) and management (RFC 7592) against a running hub: initial
 * access tokens and directory-signed software statements as the two ways in, the FAPI client policy
 * on every registration and update, the operator's disable/remove on registered clients, the audit.
 */
import { generateKeyPairSync } from 'node:crypto';
import { type JWK, SignJWT } from 'jose';
import * as client from 'openid-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type HubMetadata, sendJson } from '../../conformance/lib/client.ts';
import { removeClient, setClientEnabled } from '../../src/oidc/clients.ts';
import { createInitialAccessToken } from '../../src/registration/index.ts';
import { demoCustomer } from '../support/customer.ts';
import { startTestHub, type TestHub } from '../support/hub.ts';
import { clientConfig } from '../support/rp.ts';

const DIRECTORY = 'https://directory.example';
const directoryKey = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const strangerKey = generateKeyPairSync('ec', { namedCurve: 'P-256' });

let t: TestHub;
let registrationEndpoint: string;
beforeAll(async () => {
  t = await startTestHub({
    registration: {
      directories: [
        {
          issuer: DIRECTORY,
          jwks: {
            keys: [
              { ...directoryKey.publicKey.export({ format: 'jwk' }), kid: 'dir-1', alg: 'ES256', use: 'sig' },
            ],
          },
        },
      ],
    },
  });
  const discovery = (await (await t.fetch(`${t.issuer}/.well-known/openid-configuration`)).json()) as {
    registration_endpoint: string;
  };
  registrationEndpoint = discovery.registration_endpoint;
});
afterAll(() => t?.close());

interface Software {
  metadata: Record<string, unknown>;
  privateJwk: JWK;
  publicJwk: JWK;
}

/** A client's key pair and FAPI-conformant registration metadata. */
function software(name: string): Software {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const publicJwk = {
    ...publicKey.export({ format: 'jwk' }),
    kid: `${name}-1`,
    alg: 'ES256',
    use: 'sig',
  } as JWK;
  return {
    publicJwk,
    privateJwk: { ...privateKey.export({ format: 'jwk' }), kid: `${name}-1` } as JWK,
    metadata: {
      client_name: name,
      redirect_uris: [`https://${name}.example/cb`],
      grant_types: ['authorization_code', 'refresh_token'],
      token_endpoint_auth_method: 'private_key_jwt',
      token_endpoint_auth_signing_alg: 'ES256',
      dpop_bound_access_tokens: true,
      scope: 'openid offline_access accounts',
      jwks: { keys: [publicJwk] },
    },
  };
}

const call = async (method: string, url: string, body?: unknown, bearer?: string) => {
  const res = await sendJson(
    { issuer: t.issuer, fetch: t.fetch, dispatcher: t.dispatcher, metadata: {} as HubMetadata },
    method,
    url,
    body,
    bearer,
  );
  return { ...res, body: res.body ?? {} };
};
const register = (metadata: unknown, iat?: string) => call('POST', registrationEndpoint, metadata, iat);
const iat = async () => (await createInitialAccessToken(t.hub.db, 600, 'operator:test')).value;

function statement(
  claims: Record<string, unknown>,
  o: { key?: typeof directoryKey; kid?: string; iss?: string } = {},
) {
  return new SignJWT({ iss: o.iss ?? DIRECTORY, ...claims })
    .setProtectedHeader({ alg: 'ES256', kid: o.kid ?? 'dir-1', typ: 'JWT' })
    .setIssuedAt()
    .sign((o.key ?? directoryKey).privateKey);
}

async function auditTypes(clientId: string): Promise<string[]> {
  const res = await t.hub.db.query<{ type: string }>(
    'SELECT type FROM audit_events WHERE client_id = $1 ORDER BY id',
    [clientId],
  );
  return res.rows.map((r) => r.type);
}

/** A full authorization with the registered client (openid-client: PAR, PKCE, DPoP, private_key_jwt). */
async function signInWith(clientId: string, sw: Software): Promise<string> {
  const config = await clientConfig(t, clientId, sw.privateJwk as JsonWebKey & { kid: string });
  const dpop = client.getDPoPHandle(config, await client.randomDPoPKeyPair('ES256'));
  const verifier = client.randomPKCECodeVerifier();
  const redirectUri = (sw.metadata.redirect_uris as string[])[0]!;
  const url = await client.buildAuthorizationUrlWithPAR(
    config,
    {
      redirect_uri: redirectUri,
      scope: 'openid accounts',
      code_challenge: await client.calculatePKCECodeChallenge(verifier),
      code_challenge_method: 'S256',
    },
    { DPoP: dpop },
  );
  const callback = await demoCustomer(t).login(url, { redirectUri });
  const tokens = await client.authorizationCodeGrant(
    config,
    callback,
    { pkceCodeVerifier: verifier },
    undefined,
    {
      DPoP: dpop,
    },
  );
  return tokens.access_token;
}

describe('registration with an initial access token', () => {
  it('needs an initial access token or a software statement (401 invalid_token)', async () => {
    const none = await register(software('anon').metadata);
    expect(none.status).toBe(401);
    expect(none.body.error).toBe('invalid_token');
    expect(none.headers.get('www-authenticate')).toMatch(/^Bearer .*error="invalid_token"/);
    const unknown = await register(software('anon').metadata, 'kiat_not-a-token');
    expect(unknown.status).toBe(401);
    expect(unknown.body.error).toBe('invalid_token');
    // No metadata feedback before the token is checked.
    const probing = await register(
      { ...software('anon').metadata, redirect_uris: ['http://x.example/cb'] },
      'kiat_not-a-token',
    );
    expect(probing.status).toBe(401);
  });

  it('registers a FAPI client once per token; the client completes a flow; only hashes are stored', async () => {
    const token = await iat();
    const sw = software('pfm-one');
    const res = await register(sw.metadata, token);
    expect(res.status).toBe(201);
    const clientId = String(res.body.client_id);
    expect(res.body).toMatchObject({
      client_name: 'pfm-one',
      token_endpoint_auth_method: 'private_key_jwt',
      dpop_bound_access_tokens: true,
      require_pushed_authorization_requests: true,
      registration_client_uri: `${registrationEndpoint}/${clientId}`,
    });
    expect(typeof res.body.registration_access_token).toBe('string');
    expect(res.body.client_secret).toBeUndefined();

    const again = await register(software('pfm-two').metadata, token);
    expect(again.status).toBe(401);
    expect(again.body.error).toBe('invalid_token');

    const stored = await t.hub.db.query<{ n: number }>(
      "SELECT count(*)::int AS n FROM oidc_payloads WHERE id = $1 OR payload::text LIKE '%' || $1 || '%'",
      [res.body.registration_access_token],
    );
    expect(stored.rows[0]!.n).toBe(0);
    const iats = await t.hub.db.query<{ n: number }>(
      'SELECT count(*)::int AS n FROM registration_initial_access_tokens WHERE token_hash = $1',
      [token],
    );
    expect(iats.rows[0]!.n).toBe(0);

    expect(await signInWith(clientId, sw)).toBeTruthy();
    expect(await auditTypes(clientId)).toContain('client.registered');
  });

  it('gives account_information only to a client registered for the accounts scope or listing the type (security review)', async () => {
    const narrow = await register(
      { ...software('pfm-narrow').metadata, scope: 'openid offline_access' },
      await iat(),
    );
    expect(narrow.status).toBe(201);
    expect(narrow.body.authorization_details_types).toEqual([]);
    const wide = await register(software('pfm-wide').metadata, await iat());
    expect(wide.body.authorization_details_types).toEqual(['account_information']);
    const typed = await register(
      {
        ...software('pfm-typed').metadata,
        scope: 'openid',
        authorization_details_types: ['account_information'],
      },
      await iat(),
    );
    expect(typed.body.authorization_details_types).toEqual(['account_information']);
    // What the registration answered is what holds at PAR.
    const stored = await t.hub.provider.Client.find(String(narrow.body.client_id));
    expect(stored?.authorizationDetailsTypes).toEqual([]);
  });

  const violations: [string, Record<string, unknown>, RegExp][] = [
    ['an http redirect URI', { redirect_uris: ['http://pfm.example/cb'] }, /redirect_uris/],
    [
      'client_secret_basic',
      { token_endpoint_auth_method: 'client_secret_basic' },
      /token_endpoint_auth_method/,
    ],
    ['RS256 assertions', { token_endpoint_auth_signing_alg: 'RS256' }, /token_endpoint_auth_signing_alg/],
    ['no sender constraint', { dpop_bound_access_tokens: false }, /dpop_bound_access_tokens/],
    ['no keys', { jwks: undefined }, /exactly one of jwks and jwks_uri/],
    ['a private key', { jwks: { keys: [{ ...software('x').privateJwk }] } }, /public keys only/],
    ['an http jwks_uri', { jwks: undefined, jwks_uri: 'http://pfm.example/jwks' }, /jwks_uri/],
    ['the resource_server flag', { resource_server: true }, /operator only/],
  ];
  it.each(violations)(
    'refuses %s (invalid_client_metadata) without spending the token',
    async (_w, change, why) => {
      const token = await iat();
      const res = await register({ ...software('bad').metadata, ...change }, token);
      expect(res.status).toBe(400);
      expect(res.body.error).toBe('invalid_client_metadata');
      expect(String(res.body.error_description)).toMatch(why);
      expect((await register(software('good').metadata, token)).status).toBe(201);
    },
  );

  it('refuses an unsupported algorithm oidc-provider itself checks (request objects signed HS256)', async () => {
    const res = await register(
      { ...software('hs').metadata, request_object_signing_alg: 'HS256' },
      await iat(),
    );
    expect(res.status).toBe(400);
    expect(res.body.error).toBe('invalid_client_metadata');
  });
});

describe('registration with a software statement from the directory', () => {
  it('registers without a token; the statement sets software_id, name, redirect URIs and keys', async () => {
    const sw = software('aggregator-x');
    const ssa = await statement({
      software_id: 'sw-aggregator-x',
      org_name: 'Aggregator X K.K.',
      software_redirect_uris: sw.metadata.redirect_uris,
      jwks: { keys: [sw.publicJwk] },
    });
    const { jwks: _keys, client_name: _name, ...request } = sw.metadata;
    const res = await register({ ...request, software_statement: ssa });
    expect(res.status).toBe(201);
    expect(res.body).toMatchObject({
      software_id: 'sw-aggregator-x',
      client_name: 'Aggregator X K.K.',
      redirect_uris: sw.metadata.redirect_uris,
    });
    expect(res.body.software_statement).toBeUndefined();
    const clientId = String(res.body.client_id);
    expect(await signInWith(clientId, sw)).toBeTruthy();
    const audit = await t.hub.db.query<{ actor: string; data: { softwareId?: string } }>(
      "SELECT actor, data FROM audit_events WHERE client_id = $1 AND type = 'client.registered'",
      [clientId],
    );
    expect(audit.rows[0]).toMatchObject({
      actor: `directory:${DIRECTORY}`,
      data: { softwareId: 'sw-aggregator-x' },
    });

    // What the directory vouched for changes only with a statement again.
    const uri = String(res.body.registration_client_uri);
    const rat = String(res.body.registration_access_token);
    const hijack = await call(
      'PUT',
      uri,
      { ...sw.metadata, client_id: clientId, redirect_uris: ['https://attacker.example/cb'] },
      rat,
    );
    expect(hijack.status).toBe(400);
    expect(hijack.body.error).toBe('invalid_client_metadata');
    expect(String(hijack.body.error_description)).toMatch(/software statement/);
    const renewed = await call('PUT', uri, { ...request, client_id: clientId, software_statement: ssa }, rat);
    expect(renewed.status).toBe(200);
    expect(renewed.body).toMatchObject({
      software_id: 'sw-aggregator-x',
      redirect_uris: sw.metadata.redirect_uris,
    });
  });

  it('refuses a request whose redirect URIs or keys differ from the statement (invalid_client_metadata)', async () => {
    const sw = software('aggregator-y');
    const ssa = await statement({
      software_id: 'sw-y',
      software_redirect_uris: ['https://aggregator-y.example/other'],
      jwks: { keys: [sw.publicJwk] },
    });
    const res = await register({ ...sw.metadata, software_statement: ssa });
    expect(res.status).toBe(400);
    expect(res.body.error).toBe('invalid_client_metadata');
    expect(String(res.body.error_description)).toMatch(/redirect_uris/);

    const keys = await statement({
      software_id: 'sw-y',
      software_jwks_endpoint: 'https://directory.example/sw-y/jwks',
    });
    const other = await register({ ...sw.metadata, software_statement: keys });
    expect(other.status).toBe(400);
    expect(other.body.error).toBe('invalid_client_metadata');
    expect(String(other.body.error_description)).toMatch(/^jwks: does not match/);
    const { jwks: _own, ...withoutKeys } = sw.metadata;
    const viaUri = await register({ ...withoutKeys, software_statement: keys });
    expect(viaUri.status).toBe(201);
    expect(viaUri.body.jwks_uri).toBe('https://directory.example/sw-y/jwks');
    expect(viaUri.body.jwks).toBeUndefined();
  });

  const bad: [string, () => Promise<string>, string][] = [
    [
      'unsigned',
      async () =>
        `${Buffer.from('{"alg":"none"}').toString('base64url')}.${Buffer.from(JSON.stringify({ iss: DIRECTORY, software_id: 's', iat: Math.floor(Date.now() / 1000) })).toString('base64url')}.`,
      'invalid_software_statement',
    ],
    [
      'expired',
      async () => statement({ software_id: 's', exp: Math.floor(Date.now() / 1000) - 120 }),
      'invalid_software_statement',
    ],
    [
      'from an unknown issuer',
      async () => statement({ software_id: 's' }, { iss: 'https://rogue.example' }),
      'unapproved_software_statement',
    ],
    [
      'with an unknown kid',
      async () => statement({ software_id: 's' }, { kid: 'dir-9' }),
      'invalid_software_statement',
    ],
    [
      "signed by a key not the directory's",
      async () => statement({ software_id: 's' }, { key: strangerKey }),
      'invalid_software_statement',
    ],
    ['without software_id', async () => statement({ org_name: 'x' }), 'invalid_software_statement'],
  ];
  it.each(bad)('refuses a statement %s', async (_w, build, error) => {
    const res = await register({ ...software('ssa').metadata, software_statement: await build() });
    expect(res.status).toBe(400);
    expect(res.body.error).toBe(error);
  });
});

describe('management (RFC 7592) and the operator', () => {
  it('reads, updates under the policy, and deletes with the registration access token; audited', async () => {
    const sw = software('managed');
    const created = await register(sw.metadata, await iat());
    const clientId = String(created.body.client_id);
    const uri = String(created.body.registration_client_uri);
    let rat = String(created.body.registration_access_token);

    const read = await call('GET', uri, undefined, rat);
    expect(read.status).toBe(200);
    expect(read.body.client_id).toBe(clientId);
    rat = String(read.body.registration_access_token);
    expect((await call('GET', uri, undefined, 'wrong-token')).status).toBe(401);

    const refused = await call(
      'PUT',
      uri,
      { ...sw.metadata, client_id: clientId, redirect_uris: ['http://x.example/cb'] },
      rat,
    );
    expect(refused.status).toBe(400);
    expect(refused.body.error).toBe('invalid_client_metadata');

    const updated = await call(
      'PUT',
      uri,
      { ...sw.metadata, client_id: clientId, client_name: 'Managed PFM' },
      rat,
    );
    expect(updated.status).toBe(200);
    expect(updated.body.client_name).toBe('Managed PFM');
    expect(updated.body.require_pushed_authorization_requests).toBe(true);
    const rotated = String(updated.body.registration_access_token);
    expect(rotated).not.toBe(rat);
    expect((await call('GET', uri, undefined, rat)).status).toBe(401);
    rat = rotated;

    const accessToken = await signInWith(clientId, sw);
    expect((await call('DELETE', uri, undefined, rat)).status).toBe(204);
    expect((await call('GET', uri, undefined, rat)).status).toBe(401);
    const left = await t.hub.db.query("SELECT 1 FROM oidc_payloads WHERE payload ->> 'clientId' = $1", [
      clientId,
    ]);
    expect(left.rowCount).toBe(0);
    // Its consents end as with the operator's removal (endClientAccess), with who and why.
    const consents = await t.hub.db.query<{ revoked_by: string | null; revoke_reason: string | null }>(
      'SELECT revoked_by, revoke_reason FROM consents WHERE client_id = $1',
      [clientId],
    );
    expect(consents.rows).toEqual([
      { revoked_by: `client:${clientId}`, revoke_reason: 'client deleted its registration' },
    ]);
    expect(accessToken).toBeTruthy();
    expect(await auditTypes(clientId)).toEqual(
      expect.arrayContaining([
        'client.registered',
        'client.update.refused',
        'client.updated',
        'client.deleted',
      ]),
    );
  });

  it('operator disable stops a registered client at once (token endpoint, management) and enable restores it', async () => {
    const sw = software('switched');
    const created = await register(sw.metadata, await iat());
    const clientId = String(created.body.client_id);
    const uri = String(created.body.registration_client_uri);
    const rat = String(created.body.registration_access_token);
    expect(await setClientEnabled(t.hub.db, clientId, false, 'operator:test')).toBe(true);
    const blocked = await call('GET', uri, undefined, rat);
    expect(blocked.status).toBe(401);
    expect(blocked.body.error).toBe('invalid_token');
    await expect(signInWith(clientId, sw)).rejects.toMatchObject({ error: 'invalid_client' });
    expect(await setClientEnabled(t.hub.db, clientId, true, 'operator:test')).toBe(true);
    expect((await call('GET', uri, undefined, rat)).status).toBe(200);
    expect(await removeClient(t.hub.db, clientId, 'operator:test')).toBe(true);
    expect((await call('GET', uri, undefined, rat)).status).toBe(401);
  });

  it('answers a non-JSON body with invalid_request, never a 500', async () => {
    const res = await t.fetch(registrationEndpoint, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${await iat()}` },
      body: '{not json',
    });
    expect(res.status).toBe(400);
    expect(((await res.json()) as { error: string }).error).toBe('invalid_request');
    // Another media type, and a body over the limit, in RFC 7591's error format too.
    const cases: Array<[string, string, number]> = [
      ['text/plain', '{}', 400],
      ['application/json', JSON.stringify({ client_name: 'x'.repeat(60 * 1024) }), 413],
    ];
    for (const [type, body, status] of cases) {
      const refused = await t.fetch(registrationEndpoint, {
        method: 'POST',
        headers: { 'content-type': type, authorization: `Bearer ${await iat()}` },
        body,
      });
      expect(refused.status).toBe(status);
      expect(((await refused.json()) as { error: string }).error).toBe('invalid_request');
    }
  });
});
