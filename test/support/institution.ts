/**
 * Member-institution and other private_key_jwt clients for tests: a key pair, registration straight
 * into the clients table, openid-client configuration, and DPoP-bound client-credentials tokens
 * with a helper that makes the DPoP proof for one request by hand.
 */
import {
  createHash,
  createPrivateKey,
  generateKeyPairSync,
  type KeyObject,
  randomUUID,
  sign,
} from 'node:crypto';
import * as client from 'openid-client';
import { jwkThumbprint } from '../../src/keys/index.ts';
import type { TestHub } from './hub.ts';

export interface ClientKey {
  clientId: string;
  kid: string;
  privateJwk: JsonWebKey;
}

export interface Token {
  value: string;
  type: string;
  scope: string | undefined;
  /** A fresh DPoP proof for one request, made with the key the token is bound to. */
  proof(method: string, url: string, o?: { jti?: string }): string;
  config: client.Configuration;
  dpop: client.DPoPHandle;
}

export function newKey() {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const pub = publicKey.export({ format: 'jwk' }) as { kty: string };
  const kid = jwkThumbprint(pub);
  return {
    kid,
    publicJwk: { ...pub, kid, alg: 'ES256', use: 'sig' },
    privateJwk: privateKey.export({ format: 'jwk' }) as JsonWebKey,
  };
}

/** Registers a private_key_jwt client with `metadata` on top of client-credentials defaults. */
export async function registerClient(
  t: TestHub,
  clientId: string,
  metadata: Record<string, unknown>,
): Promise<ClientKey> {
  const { kid, publicJwk, privateJwk } = newKey();
  await t.hub.db.query('INSERT INTO clients (client_id, metadata) VALUES ($1, $2)', [
    clientId,
    JSON.stringify({
      client_id: clientId,
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
      token_endpoint_auth_method: 'private_key_jwt',
      token_endpoint_auth_signing_alg: 'ES256',
      dpop_bound_access_tokens: true,
      jwks: { keys: [publicJwk] },
      ...metadata,
    }),
  ]);
  return { clientId, kid, privateJwk };
}

export async function configFor(t: TestHub, c: ClientKey): Promise<client.Configuration> {
  const { kty, crv, x, y, d } = c.privateJwk;
  const key = await crypto.subtle.importKey(
    'jwk',
    { kty, crv, x, y, d },
    { name: 'ECDSA', namedCurve: 'P-256' },
    false,
    ['sign'],
  );
  return client.discovery(
    new URL(t.issuer),
    c.clientId,
    undefined,
    client.PrivateKeyJwt({ key, kid: c.kid }),
    {
      [client.customFetch]: t.fetch as client.CustomFetch,
    },
  );
}

/** A client-credentials token from the token endpoint, DPoP-bound unless `dpop` is false. */
export async function tokenFor(
  t: TestHub,
  c: ClientKey,
  parameters: Record<string, string> = { scope: 'institution:ingest' },
  o: { dpop?: boolean } = {},
): Promise<Token> {
  const keys = (await crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, [
    'sign',
    'verify',
  ])) as CryptoKeyPair;
  const config = await configFor(t, c);
  const dpop = client.getDPoPHandle(config, keys);
  const tokens = await client.clientCredentialsGrant(
    config,
    parameters,
    o.dpop === false ? undefined : { DPoP: dpop },
  );
  const proof = await dpopProofMaker(keys, tokens.access_token);
  return {
    value: tokens.access_token,
    type: tokens.token_type,
    scope: tokens.scope,
    config,
    dpop,
    proof,
  };
}

/**
 * DPoP proofs made by hand for `accessToken` with the key pair it is bound to (ES256, `ath` set):
 * tests use them to send exact proofs (chosen jti, other URLs) that openid-client would not.
 */
export async function dpopProofMaker(
  keys: CryptoKeyPair,
  accessToken: string,
): Promise<(method: string, url: string, o?: { jti?: string }) => string> {
  const jwk = (await crypto.subtle.exportKey('jwk', keys.publicKey)) as JsonWebKey;
  const priv: KeyObject = createPrivateKey({
    key: (await crypto.subtle.exportKey('jwk', keys.privateKey)) as import('node:crypto').JsonWebKey,
    format: 'jwk',
  });
  const header = Buffer.from(
    JSON.stringify({ typ: 'dpop+jwt', alg: 'ES256', jwk: { kty: 'EC', crv: 'P-256', x: jwk.x, y: jwk.y } }),
  ).toString('base64url');
  const ath = createHash('sha256').update(accessToken).digest('base64url');
  return (method, url, o = {}) => {
    const u = new URL(url);
    const claims = {
      jti: o.jti ?? randomUUID(),
      htm: method,
      htu: `${u.origin}${u.pathname}`,
      iat: Math.floor(Date.now() / 1000),
      ath,
    };
    const input = `${header}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}`;
    const sig = sign('sha256', Buffer.from(input), { key: priv, dsaEncoding: 'ieee-p1363' });
    return `${input}.${sig.toString('base64url')}`;
  };
}
