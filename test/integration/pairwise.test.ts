/** Brokerages registered with subject_type pairwise each learn their own, stable customer identifier. */
import { generateKeyPairSync } from 'node:crypto';
import * as client from 'openid-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PasskeyUser } from '../../conformance/lib/login.ts';
import { addClient } from '../../src/oidc/clients.ts';
import { demoCustomer } from '../support/customer.ts';
import { startTestHub, type TestHub } from '../support/hub.ts';

let t: TestHub;
let customer: PasskeyUser;
beforeAll(async () => {
  t = await startTestHub();
  customer = demoCustomer(t);
});
afterAll(() => t?.close());

/** Registers a brokerage client on its own host (its own sector) and returns an openid-client for it. */
async function brokerage(name: string): Promise<{ config: client.Configuration; redirectUri: string }> {
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
      subject_type: 'pairwise',
      scope: 'openid accounts',
      jwks: {
        keys: [{ ...publicKey.export({ format: 'jwk' }), kid: `${name}-1`, alg: 'ES256', use: 'sig' }],
      },
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
    {
      [client.customFetch]: t.fetch as client.CustomFetch,
    },
  );
  return { config, redirectUri };
}

async function subjectAt(b: { config: client.Configuration; redirectUri: string }): Promise<string> {
  const dpop = client.getDPoPHandle(b.config, await client.randomDPoPKeyPair('ES256'));
  const verifier = client.randomPKCECodeVerifier();
  const state = client.randomState();
  const url = await client.buildAuthorizationUrlWithPAR(
    b.config,
    {
      redirect_uri: b.redirectUri,
      scope: 'openid accounts',
      code_challenge: await client.calculatePKCECodeChallenge(verifier),
      code_challenge_method: 'S256',
      state,
    },
    { DPoP: dpop },
  );
  const callback = await customer.login(url, { redirectUri: b.redirectUri });
  const tokens = await client.authorizationCodeGrant(
    b.config,
    callback,
    { pkceCodeVerifier: verifier, expectedState: state },
    undefined,
    { DPoP: dpop },
  );
  return tokens.claims()!.sub;
}

describe('pairwise subjects', () => {
  it('differ per brokerage, differ from the internal id, and stay the same across sign-ins', async () => {
    const a = await brokerage('broker-a');
    const b = await brokerage('broker-b');
    const subA = await subjectAt(a);
    const subB = await subjectAt(b);
    expect(subA).not.toBe(t.hub.demo!.customerId);
    expect(subB).not.toBe(subA);
    expect(subA).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(await subjectAt(a)).toBe(subA);
    const discovery = (await (await t.fetch(`${t.issuer}/.well-known/openid-configuration`)).json()) as {
      subject_types_supported: string[];
    };
    expect(discovery.subject_types_supported).toEqual(expect.arrayContaining(['public', 'pairwise']));
  });
});
