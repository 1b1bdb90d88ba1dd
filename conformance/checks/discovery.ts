/**
 * Checklist group "Discovery and happy path": the discovery document, and full code flows driven
 * by openid-client as a real aggregator (PAR, the variant's client authentication, PKCE, DPoP or a
 * certificate binding; openid or plain OAuth), with the variations the conformance suite tries on
 * parameters that are optional or unusual.
 */
import { randomBytes } from 'node:crypto';
import { decodeProtectedHeader } from 'jose';
import * as oidc from 'openid-client';
import { send } from '../lib/client.ts';
import { type CheckContext, expectedTokenType } from '../lib/context.ts';
import { CheckFailure, check, describe, equal, noServerError, oauthError } from '../lib/expect.ts';
import { BOTH_FLOWS, type Check } from '../lib/types.ts';
import { createUserAgent, type UaResponse } from '../lib/userAgent.ts';

const GROUP = 'Discovery and happy path';
/** FAPI 2.0 Security Profile §5.4.1. */
export const FAPI_ALGS = ['PS256', 'ES256', 'EdDSA'];
/** FAPI 2.0 §5.3.2.1: private_key_jwt, or mTLS (tls_client_auth / self_signed_tls_client_auth). */
const FAPI_AUTH_METHODS = ['private_key_jwt', 'tls_client_auth', 'self_signed_tls_client_auth'];

async function discoveryDocument(ctx: CheckContext): Promise<Record<string, unknown>> {
  const res = await send(ctx.target, `${ctx.issuer}/.well-known/openid-configuration`);
  if (res.status !== 200 || !res.body)
    throw new CheckFailure(`discovery: expected 200 JSON, got ${describe(res)}`);
  return res.body;
}

function stringList(doc: Record<string, unknown>, key: string): string[] {
  const v = doc[key];
  if (!Array.isArray(v) || !v.every((x) => typeof x === 'string'))
    throw new CheckFailure(`discovery: ${key} must be an array of strings, got ${JSON.stringify(v)}`);
  return v as string[];
}

function idTokenAlg(idToken: string | undefined): string {
  if (!idToken) throw new CheckFailure('expected an id_token (openid scope)');
  return String(decodeProtectedHeader(idToken).alg);
}

/**
 * A complete flow through openid-client: PAR (with the DPoP key, or over the client certificate at
 * the mTLS alias), the customer's login and consent, the callback (parsed and checked by
 * openid-client: iss, state), the code exchange and the id_token validation (nonce, signature, alg)
 * in the openid flow, and a call of the read API with the token's holder-of-key.
 */
async function openidClientFlow(
  ctx: CheckContext,
  o: { scope?: string; state?: string | null; nonce?: string | null; extra?: Record<string, string> } = {},
) {
  const rp = await ctx.rp();
  const scope = o.scope ?? ctx.scope;
  const openid = scope.split(' ').includes('openid');
  const verifier = oidc.randomPKCECodeVerifier();
  const state = o.state === undefined ? oidc.randomState() : o.state;
  const nonce = o.nonce === undefined ? (openid ? oidc.randomNonce() : null) : o.nonce;
  const parameters: Record<string, string> = {
    redirect_uri: rp.client.redirectUri,
    scope,
    code_challenge: await oidc.calculatePKCECodeChallenge(verifier),
    code_challenge_method: 'S256',
    ...(state !== null ? { state } : {}),
    ...(nonce !== null ? { nonce } : {}),
    ...o.extra,
  };
  const url = await oidc.buildAuthorizationUrlWithPAR(rp.config, parameters, rp.options);
  const seen: UaResponse[] = [];
  const userAgent = createUserAgent({ fetch: ctx.target.fetch, onResponse: (r) => seen.push(r) });
  const callback = await ctx.login(url, { userAgent, redirectUri: rp.client.redirectUri });
  const last = seen.at(-1);
  // FAPI 2.0 §5.3.2.2: the authorization response is a 303 redirect.
  equal(last?.status, 303, 'status of the redirect to the redirect URI');
  equal(callback.searchParams.get('iss'), ctx.issuer, 'iss in the authorization response (RFC 9207)');
  check(
    callback.searchParams.get('code'),
    `expected a code in the authorization response, got ${callback.search}`,
  );
  const tokens = await oidc.authorizationCodeGrant(
    rp.config,
    callback,
    {
      pkceCodeVerifier: verifier,
      expectedState: state ?? oidc.skipStateCheck,
      ...(nonce !== null ? { expectedNonce: nonce } : {}),
      idTokenExpected: openid,
    },
    undefined,
    rp.options,
  );
  equal(tokens.token_type.toLowerCase(), expectedTokenType(rp.client), 'token_type');
  if (!openid) check(tokens.id_token === undefined, 'an id_token was issued without the openid scope');
  const resource = await oidc.fetchProtectedResource(
    rp.config,
    tokens.access_token,
    new URL(ctx.apiUrl(rp.client)),
    'GET',
    undefined,
    undefined,
    rp.options,
  );
  if (resource.status !== 200)
    throw new CheckFailure(
      `GET /api/v1/accounts with the ${expectedTokenType(rp.client)} token: ${resource.status} ${await resource.text()}`,
    );
  const body = (await resource.json()) as { data?: unknown[] };
  check(Array.isArray(body.data) && body.data.length > 0, 'expected the consented accounts');
  return { rp, tokens, callback, state, nonce };
}

export const discoveryChecks: Check[] = [
  {
    group: GROUP,
    id: 'discovery-grant-management',
    title: 'Grant Management and RFC 9396 metadata in discovery',
    expect: 'accept',
    async run(ctx) {
      const doc = await discoveryDocument(ctx);
      const endpoint = doc.grant_management_endpoint;
      check(
        typeof endpoint === 'string' && endpoint.startsWith('https://'),
        `grant_management_endpoint: ${endpoint}`,
      );
      const actions = stringList(doc, 'grant_management_actions_supported');
      for (const a of ['query', 'revoke', 'create', 'merge', 'replace'])
        check(actions.includes(a), `grant_management_actions_supported lacks ${a}`);
      equal(typeof doc.grant_management_action_required, 'boolean', 'grant_management_action_required type');
      check(
        stringList(doc, 'authorization_details_types_supported').includes('account_information'),
        'authorization_details_types_supported lacks account_information',
      );
    },
  },
  {
    group: GROUP,
    id: 'discovery-issuer',
    title: 'discovery document is served and names the issuer',
    expect: 'accept',
    async run(ctx) {
      const doc = await discoveryDocument(ctx);
      equal(doc.issuer, ctx.issuer, 'issuer');
    },
  },
  {
    group: GROUP,
    id: 'discovery-https-endpoints',
    title: 'every endpoint in discovery is https',
    expect: 'accept',
    async run(ctx) {
      const doc = await discoveryDocument(ctx);
      const urls = Object.entries(doc).filter(([k]) => k.endsWith('_endpoint') || k === 'jwks_uri');
      for (const key of [
        'authorization_endpoint',
        'token_endpoint',
        'jwks_uri',
        'pushed_authorization_request_endpoint',
      ])
        check(typeof doc[key] === 'string', `discovery: ${key} missing`);
      for (const [key, value] of urls)
        check(
          typeof value === 'string' && value.startsWith('https://'),
          `discovery: ${key} is not https: ${value}`,
        );
    },
  },
  {
    group: GROUP,
    id: 'discovery-par-required',
    title: 'PAR endpoint advertised and require_pushed_authorization_requests: true',
    expect: 'accept',
    async run(ctx) {
      const doc = await discoveryDocument(ctx);
      check(
        typeof doc.pushed_authorization_request_endpoint === 'string',
        'pushed_authorization_request_endpoint missing',
      );
      equal(doc.require_pushed_authorization_requests, true, 'require_pushed_authorization_requests');
    },
  },
  {
    group: GROUP,
    id: 'discovery-response-types',
    title: 'only the code response type',
    expect: 'accept',
    async run(ctx) {
      const types = stringList(await discoveryDocument(ctx), 'response_types_supported');
      equal(JSON.stringify(types), JSON.stringify(['code']), 'response_types_supported');
    },
  },
  {
    group: GROUP,
    id: 'discovery-signing-algs',
    title: 'only PS256 / ES256 / EdDSA in every *_alg_values_supported',
    expect: 'accept',
    async run(ctx) {
      const doc = await discoveryDocument(ctx);
      // Encryption algorithms (RSA-OAEP, ECDH-ES…) are not JWS algorithms; FAPI restricts signing.
      const keys = Object.keys(doc).filter(
        (k) => k.endsWith('_alg_values_supported') && !k.endsWith('_encryption_alg_values_supported'),
      );
      check(
        keys.includes('id_token_signing_alg_values_supported'),
        'id_token_signing_alg_values_supported missing',
      );
      check(
        keys.includes('token_endpoint_auth_signing_alg_values_supported'),
        'token_endpoint_auth_signing_alg_values_supported missing',
      );
      for (const key of keys) {
        const algs = stringList(doc, key);
        check(algs.length > 0, `${key} is empty`);
        const other = algs.filter((a) => !FAPI_ALGS.includes(a));
        check(other.length === 0, `${key} lists algorithms FAPI 2.0 forbids: ${other.join(', ')}`);
      }
    },
  },
  {
    group: GROUP,
    id: 'discovery-auth-methods',
    title: 'client authentication only private_key_jwt (or mTLS)',
    expect: 'accept',
    async run(ctx) {
      const doc = await discoveryDocument(ctx);
      const methods = stringList(doc, 'token_endpoint_auth_methods_supported');
      check(
        methods.includes(ctx.variant.clientAuth),
        `token_endpoint_auth_methods_supported lacks ${ctx.variant.clientAuth}`,
      );
      for (const key of Object.keys(doc).filter((k) => k.endsWith('_endpoint_auth_methods_supported'))) {
        const other = stringList(doc, key).filter((m) => !FAPI_AUTH_METHODS.includes(m));
        check(other.length === 0, `${key} lists methods FAPI 2.0 forbids: ${other.join(', ')}`);
      }
    },
  },
  {
    group: GROUP,
    id: 'discovery-dpop-algs',
    title: 'dpop_signing_alg_values_supported advertised (FAPI algorithms only)',
    expect: 'accept',
    variants: { senderConstraint: ['dpop'] },
    async run(ctx) {
      const algs = stringList(await discoveryDocument(ctx), 'dpop_signing_alg_values_supported');
      check(algs.length > 0, 'dpop_signing_alg_values_supported is empty');
      check(
        algs.every((a) => FAPI_ALGS.includes(a)),
        `dpop_signing_alg_values_supported: ${algs.join(', ')}`,
      );
    },
  },
  {
    group: GROUP,
    id: 'discovery-iss-parameter',
    title: 'authorization_response_iss_parameter_supported: true',
    expect: 'accept',
    async run(ctx) {
      equal(
        (await discoveryDocument(ctx)).authorization_response_iss_parameter_supported,
        true,
        'authorization_response_iss_parameter_supported',
      );
    },
  },
  {
    group: GROUP,
    id: 'discovery-jwks',
    title: 'jwks_uri serves public signing keys for FAPI algorithms only',
    expect: 'accept',
    async run(ctx) {
      const res = await send(ctx.target, ctx.target.metadata.jwks_uri);
      const keys = res.body?.keys;
      check(
        res.status === 200 && Array.isArray(keys) && keys.length > 0,
        `jwks: expected keys, got ${describe(res)}`,
      );
      for (const k of keys as Record<string, unknown>[]) {
        for (const member of ['d', 'p', 'q', 'dp', 'dq', 'qi', 'k'])
          check(!(member in k), `jwks: key ${k.kid} has private member ${member}`);
        check(typeof k.kid === 'string', 'jwks: every key needs a kid');
        if (k.alg !== undefined)
          check(FAPI_ALGS.includes(String(k.alg)), `jwks: key ${k.kid} has alg ${k.alg}`);
      }
    },
  },
  {
    group: GROUP,
    id: 'happy-flow',
    title:
      'PAR → login → consent → 303 callback with code and iss → token → resource with its holder-of-key; openid: id_token alg allowed; plain OAuth: no id_token',
    expect: 'accept',
    variants: { flow: BOTH_FLOWS },
    async run(ctx) {
      const { tokens } = await openidClientFlow(ctx);
      check(tokens.refresh_token, 'expected a refresh token (offline access for aggregators)');
      if (ctx.variant.flow === 'plain_oauth') return;
      const alg = idTokenAlg(tokens.id_token);
      check(FAPI_ALGS.includes(alg), `id_token signed with ${alg}`);
      const claims = tokens.claims();
      equal(claims?.iss, ctx.issuer, 'id_token iss');
      equal(claims?.aud, ctx.a.clientId, 'id_token aud');
    },
  },
  {
    group: GROUP,
    id: 'happy-scope-reversed',
    title: 'scopes in reverse order',
    expect: 'accept',
    variants: { flow: BOTH_FLOWS },
    async run(ctx) {
      const reversed = ctx.scope.split(' ').reverse().join(' ');
      const { tokens } = await openidClientFlow(ctx, { scope: reversed });
      const granted = String(tokens.scope ?? '').split(' ');
      for (const s of ctx.scope.split(' ').filter((s) => s !== 'offline_access'))
        check(granted.includes(s), `granted scope lacks ${s}: ${tokens.scope}`);
    },
  },
  {
    group: GROUP,
    id: 'happy-no-state',
    title: 'no state parameter',
    expect: 'accept',
    variants: { flow: BOTH_FLOWS },
    async run(ctx) {
      const { callback } = await openidClientFlow(ctx, { state: null });
      check(!callback.searchParams.has('state'), `state appeared in the response: ${callback.search}`);
    },
  },
  {
    group: GROUP,
    id: 'happy-no-nonce',
    title: 'openid scope without nonce',
    expect: 'accept',
    async run(ctx) {
      const { tokens } = await openidClientFlow(ctx, { nonce: null });
      check(tokens.claims()?.nonce === undefined, 'id_token carries a nonce that was never sent');
    },
  },
  {
    group: GROUP,
    id: 'happy-nonce-64',
    title: '64-character nonce echoed in the id_token',
    expect: 'accept',
    async run(ctx) {
      const nonce = randomBytes(48).toString('base64url');
      const { tokens } = await openidClientFlow(ctx, { nonce });
      equal(tokens.claims()?.nonce, nonce, 'id_token nonce');
    },
  },
  {
    group: GROUP,
    id: 'happy-long-nonce-state',
    title: 'very long nonce (openid) and state (accept or clean error, never a 500)',
    expect: 'accept',
    variants: { flow: BOTH_FLOWS },
    async run(ctx) {
      const state = `s${'A'.repeat(1999)}`;
      const openid = ctx.variant.flow === 'openid';
      const nonce = openid ? `n${'B'.repeat(1999)}` : undefined;
      const { res: par, pushed } = await ctx.pushRaw({ params: { state, nonce } });
      noServerError(par, 'PAR');
      if (!pushed) {
        // A clean refusal at PAR is allowed.
        oauthError(par, { status: 400, error: 'invalid_request' }, 'PAR with a very long state and nonce');
        return;
      }
      const callback = await ctx.login(pushed.url);
      if (callback.searchParams.has('error')) {
        check(
          callback.searchParams.get('error') === 'invalid_request',
          `unexpected error ${callback.search.slice(0, 200)}`,
        );
        return;
      }
      equal(callback.searchParams.get('state'), state, 'state echoed');
      const auth = { ...pushed, callback, code: callback.searchParams.get('code') ?? '' };
      const res = await ctx.redeem(auth);
      noServerError(res, 'token request');
      equal(res.status, 200, `token request (${describe(res)})`);
      if (!openid) return;
      const idToken = String(res.body?.id_token ?? '');
      const payload = JSON.parse(Buffer.from(idToken.split('.')[1] ?? '', 'base64url').toString('utf8')) as {
        nonce?: string;
      };
      equal(payload.nonce, nonce, 'id_token nonce');
    },
  },
  {
    group: GROUP,
    id: 'happy-user-cancels',
    title: 'user cancels at login → access_denied at the redirect URI',
    expect: 'fail',
    async run(ctx) {
      const pushed = await ctx.par();
      const callback = await ctx.login(pushed.url, { decision: 'cancel' });
      equal(`${callback.origin}${callback.pathname}`, ctx.a.redirectUri, 'redirect target');
      equal(callback.searchParams.get('error'), 'access_denied', 'error');
      equal(callback.searchParams.get('state'), pushed.params.state, 'state');
      equal(callback.searchParams.get('iss'), ctx.issuer, 'iss');
      check(!callback.searchParams.has('code'), 'a code was issued');
    },
  },
  {
    group: GROUP,
    id: 'happy-user-denies-consent',
    title: 'user denies at consent → access_denied at the redirect URI',
    expect: 'fail',
    async run(ctx) {
      const pushed = await ctx.par();
      const callback = await ctx.login(pushed.url, { decision: 'deny' });
      equal(callback.searchParams.get('error'), 'access_denied', 'error');
      equal(callback.searchParams.get('iss'), ctx.issuer, 'iss');
      check(!callback.searchParams.has('code'), 'a code was issued');
    },
  },
];
