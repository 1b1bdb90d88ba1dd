/**
 * The demo aggregator as a real relying party: openid-client 6 with private_key_jwt, PAR, PKCE
 * and DPoP, trusting the test hub's dev CA.
 */
import { generateKeyPairSync } from 'node:crypto';
import * as client from 'openid-client';
import { addClient } from '../../src/oidc/clients.ts';
import type { TestHub } from './hub.ts';

export interface Rp {
  config: client.Configuration;
  dpopKey: client.CryptoKeyPair;
  dpop: client.DPoPHandle;
  redirectUri: string;
}

export async function demoRp(t: TestHub, options: { dpopKey?: client.CryptoKeyPair } = {}): Promise<Rp> {
  const { private_jwk, client_id, redirect_uris } = t.demoClient;
  const config = await clientConfig(t, client_id, private_jwk);
  const dpopKey = options.dpopKey ?? (await client.randomDPoPKeyPair('ES256'));
  return { config, dpopKey, dpop: client.getDPoPHandle(config, dpopKey), redirectUri: redirect_uris[0]! };
}

/** openid-client for a registered client whose private_key_jwt key is the P-256 JWK given. */
export async function clientConfig(
  t: TestHub,
  clientId: string,
  privateJwk: JsonWebKey & { kid: string },
): Promise<client.Configuration> {
  const {
    kid,
    alg: _alg,
    use: _use,
    key_ops: _ops,
    ...jwk
  } = privateJwk as JsonWebKey & { kid: string; alg?: string; use?: string };
  const key = await crypto.subtle.importKey('jwk', jwk, { name: 'ECDSA', namedCurve: 'P-256' }, false, [
    'sign',
  ]);
  return client.discovery(new URL(t.issuer), clientId, undefined, client.PrivateKeyJwt({ key, kid }), {
    [client.customFetch]: t.fetch as client.CustomFetch,
  });
}

/**
 * Registers another FAPI client as an operator would (private_key_jwt with a fresh P-256 key, DPoP,
 * redirect URI https://<name>.example/callback), with `metadata` on top, and returns it as an Rp.
 */
export async function registeredRp(
  t: TestHub,
  name: string,
  metadata: Record<string, unknown> = {},
): Promise<Rp> {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const redirectUri = `https://${name}.example/callback`;
  await addClient(
    t.hub.db,
    {
      client_id: name,
      client_name: name,
      redirect_uris: [redirectUri],
      grant_types: ['authorization_code'],
      token_endpoint_auth_method: 'private_key_jwt',
      token_endpoint_auth_signing_alg: 'ES256',
      id_token_signed_response_alg: 'ES256',
      dpop_bound_access_tokens: true,
      jwks: {
        keys: [{ ...publicKey.export({ format: 'jwk' }), kid: `${name}-1`, alg: 'ES256', use: 'sig' }],
      },
      ...metadata,
    },
    'operator:test',
  );
  const key = await crypto.subtle.importKey(
    'jwk',
    privateKey.export({ format: 'jwk' }),
    { name: 'ECDSA', namedCurve: 'P-256' },
    false,
    ['sign'],
  );
  const config = await client.discovery(
    new URL(t.issuer),
    name,
    undefined,
    client.PrivateKeyJwt({ key, kid: `${name}-1` }),
    { [client.customFetch]: t.fetch as client.CustomFetch },
  );
  const dpopKey = await client.randomDPoPKeyPair('ES256');
  return { config, dpopKey, dpop: client.getDPoPHandle(config, dpopKey), redirectUri };
}

export interface StartedAuthorization {
  url: URL;
  codeVerifier: string;
  state: string;
}

/** PAR with PKCE and the DPoP key (dpop_jkt), returning the URL to send the browser to. */
export async function startAuthorization(
  rp: Rp,
  scope = 'openid accounts',
  extra: Record<string, string> = {},
): Promise<StartedAuthorization> {
  const codeVerifier = client.randomPKCECodeVerifier();
  const state = client.randomState();
  const url = await client.buildAuthorizationUrlWithPAR(
    rp.config,
    {
      redirect_uri: rp.redirectUri,
      scope,
      code_challenge: await client.calculatePKCECodeChallenge(codeVerifier),
      code_challenge_method: 'S256',
      state,
      ...extra,
    },
    { DPoP: rp.dpop },
  );
  return { url, codeVerifier, state };
}

/** Redeems the code the callback carries, with the authorization's PKCE verifier and state and the RP's DPoP key. */
export function redeem(
  rp: Rp,
  started: StartedAuthorization,
  callback: URL,
): Promise<client.TokenEndpointResponse & client.TokenEndpointResponseHelpers> {
  return client.authorizationCodeGrant(
    rp.config,
    callback,
    { pkceCodeVerifier: started.codeVerifier, expectedState: started.state },
    undefined,
    { DPoP: rp.dpop },
  );
}

/** GET the accounts API with a DPoP-bound access token: the HTTP status (401 when refused). */
export function accountsStatus(t: TestHub, rp: Rp, accessToken: string): Promise<number> {
  return client
    .fetchProtectedResource(
      rp.config,
      accessToken,
      new URL(`${t.issuer}/api/v1/accounts`),
      'GET',
      undefined,
      undefined,
      { DPoP: rp.dpop },
    )
    .then(
      (r) => r.status,
      (e: client.WWWAuthenticateChallengeError) => e.response?.status ?? 0,
    );
}
