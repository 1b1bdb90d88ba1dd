/** Operators manage clients: FAPI policy on registration; disabling stops the client at its next request. */
import { generateKeyPairSync } from 'node:crypto';
import * as client from 'openid-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { completeLogin } from '../../conformance/lib/login.ts';
import { issueEnrollmentTicket } from '../../src/authn/index.ts';
import {
  addClient,
  ClientPolicyError,
  listClients,
  removeClient,
  setClientEnabled,
  validateClientMetadata,
} from '../../src/oidc/clients.ts';
import { startTestHub, type TestHub } from '../support/hub.ts';
import { createEmulator } from '../support/passkeyEmulator.ts';
import { accountsStatus, demoRp, redeem, startAuthorization } from '../support/rp.ts';

let t: TestHub;
beforeAll(async () => {
  t = await startTestHub();
});
afterAll(() => t?.close());

const publicJwk = () =>
  generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ format: 'jwk' });
const valid = () => ({
  client_id: 'pfm-example',
  client_name: 'Example PFM',
  redirect_uris: ['https://pfm.example/callback'],
  grant_types: ['authorization_code', 'refresh_token'],
  token_endpoint_auth_method: 'private_key_jwt',
  token_endpoint_auth_signing_alg: 'ES256',
  dpop_bound_access_tokens: true,
  jwks: { keys: [publicJwk()] },
});

describe('client registration policy', () => {
  it('accepts FAPI-conformant metadata and forces PAR and code', () => {
    const m = validateClientMetadata(valid());
    expect(m).toMatchObject({ response_types: ['code'], require_pushed_authorization_requests: true });
  });

  it.each([
    [{ redirect_uris: ['http://pfm.example/callback'] }, /redirect_uris\.0/],
    [{ redirect_uris: ['https://pfm.example/cb#frag'] }, /fragment/],
    [{ redirect_uris: [] }, /redirect_uris: required for the authorization_code grant/],
    [{ token_endpoint_auth_method: 'client_secret_basic' }, /token_endpoint_auth_method/],
    [{ token_endpoint_auth_signing_alg: 'RS256' }, /token_endpoint_auth_signing_alg/],
    [{ id_token_signed_response_alg: 'HS256' }, /id_token_signed_response_alg/],
    [{ dpop_bound_access_tokens: false }, /dpop_bound_access_tokens/],
    [{ jwks: undefined }, /exactly one of jwks and jwks_uri/],
    [{ jwks_uri: 'https://pfm.example/jwks' }, /exactly one of jwks and jwks_uri/],
    [{ jwks: { keys: [{ ...publicJwk(), d: 'secret' }] } }, /public keys only/],
    [{ client_id: 'x' }, /client_id/],
    [{ grant_types: ['implicit'] }, /grant_types/],
  ])('refuses %o', (change, message) => {
    expect(() => validateClientMetadata({ ...valid(), ...change })).toThrow(ClientPolicyError);
    expect(() => validateClientMetadata({ ...valid(), ...change })).toThrow(message);
  });

  it('registers once and lists it; a duplicate is refused', async () => {
    await addClient(t.hub.db, valid(), 'operator:test');
    await expect(addClient(t.hub.db, valid(), 'operator:test')).rejects.toThrow(/already registered/);
    expect((await listClients(t.hub.db)).map((c) => c.clientId)).toContain('pfm-example');
  });
});

describe('disabling and removing clients', () => {
  it('stops a disabled client at once — reads, refresh, new authorizations — and enabling restores it', async () => {
    const rp = await demoRp(t);
    const auth = await startAuthorization(rp, 'openid offline_access accounts');
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
    const read = () => accountsStatus(t, rp, tokens.access_token);
    expect(await read()).toBe(200);

    expect(await setClientEnabled(t.hub.db, 'demo-aggregator', false, 'operator:test')).toBe(true);
    expect(await read()).toBe(401);
    await expect(
      client.refreshTokenGrant(rp.config, tokens.refresh_token!, undefined, { DPoP: rp.dpop }),
    ).rejects.toMatchObject({
      error: 'invalid_client',
    });
    await expect(startAuthorization(rp)).rejects.toMatchObject({ error: 'invalid_client' });

    expect(await setClientEnabled(t.hub.db, 'demo-aggregator', true, 'operator:test')).toBe(true);
    expect(await read()).toBe(200);
    const audit = await t.hub.db.query<{ type: string }>(
      "SELECT type FROM audit_events WHERE client_id = 'demo-aggregator' AND type LIKE 'client.%' ORDER BY id",
    );
    expect(audit.rows.map((r) => r.type)).toEqual(['client.disabled', 'client.enabled']);
  });

  it('removes a client with its tokens and consents', async () => {
    expect(await removeClient(t.hub.db, 'demo-aggregator-2', 'operator:test')).toBe(true);
    expect(await removeClient(t.hub.db, 'demo-aggregator-2', 'operator:test')).toBe(false);
    expect((await listClients(t.hub.db)).map((c) => c.clientId)).not.toContain('demo-aggregator-2');
  });
});
