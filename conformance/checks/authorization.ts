/**
 * Checklist group "Authorization endpoint and PAR": parameters only by PAR, only `code`, PKCE S256
 * required, registered redirect URIs, request_uri lifetime / single use / client binding (each with
 * the variant's client), and the client assertion rules at the PAR endpoint (issuer-string aud,
 * bounded clock skew; private_key_jwt only — the certificate rules at PAR are in group "mTLS").
 */
import { generateKeyPair } from 'jose';
import {
  authorizationUrl,
  type clientAssertion,
  clientAuthFields,
  now,
  pkce,
  pushAuthorizationRequest,
  requestObject,
  send,
} from '../lib/client.ts';
import type { CheckContext, Pushed } from '../lib/context.ts';
import { authorizationRejected, check, equal, oauthError, status } from '../lib/expect.ts';
import { type Check, PRIVATE_KEY_JWT_ONLY } from '../lib/types.ts';

const GROUP = 'Authorization endpoint and PAR';
const INVALID_CLIENT = { status: [400, 401], error: 'invalid_client' };

/** A PAR that must be refused with one of `errors` (400), never a request_uri. */
async function parRefused(
  ctx: CheckContext,
  o: Parameters<CheckContext['pushRaw']>[0],
  errors: string[],
  what: string,
) {
  const { res } = await ctx.pushRaw(o);
  oauthError(res, { status: 400, error: errors }, what);
}

export const authorizationChecks: Check[] = [
  {
    group: GROUP,
    id: 'par-rar-client-named-accounts',
    title: 'authorization_details in which the client names the accounts (RFC 9396; the customer chooses)',
    expect: 'fail',
    async run(ctx) {
      await parRefused(
        ctx,
        {
          params: {
            authorization_details: JSON.stringify([
              { type: 'account_information', data_types: ['balances'], accounts: ['acc_1'] },
            ]),
          },
        },
        ['invalid_authorization_details'],
        'PAR with account_information naming accounts',
      );
    },
  },
  {
    group: GROUP,
    id: 'par-grant-management-unknown-grant',
    title: 'grant_management_action merge with an unknown grant_id (FAPI Grant Management)',
    expect: 'fail',
    async run(ctx) {
      await parRefused(
        ctx,
        { params: { grant_management_action: 'merge', grant_id: 'unknown-grant-id-0000' } },
        ['invalid_grant_id'],
        'PAR merging into an unknown grant',
      );
    },
  },
  {
    group: GROUP,
    id: 'authz-without-par',
    title: 'authorization request with parameters in the query, without PAR',
    expect: 'fail',
    async run(ctx) {
      const p = pkce();
      const url = new URL(ctx.target.metadata.authorization_endpoint);
      const params = {
        client_id: ctx.a.clientId,
        response_type: 'code',
        redirect_uri: ctx.a.redirectUri,
        scope: 'openid accounts',
        code_challenge: p.challenge,
        code_challenge_method: 'S256',
        state: 'no-par',
        nonce: 'no-par',
      };
      for (const [k, v] of Object.entries(params)) url.searchParams.set(k, v);
      authorizationRejected(await ctx.visit(url), ['invalid_request'], 'authorization request without PAR');
    },
  },
  {
    group: GROUP,
    id: 'par-response-type-code-id-token',
    title: 'response_type "code id_token" at PAR',
    expect: 'fail',
    async run(ctx) {
      await parRefused(
        ctx,
        { params: { response_type: 'code id_token' } },
        ['unsupported_response_type', 'unauthorized_client', 'invalid_request'],
        'PAR with response_type=code id_token',
      );
    },
  },
  {
    group: GROUP,
    id: 'par-response-type-token',
    title: 'response_type "token" at PAR',
    expect: 'fail',
    async run(ctx) {
      await parRefused(
        ctx,
        { params: { response_type: 'token' } },
        ['unsupported_response_type', 'unauthorized_client', 'invalid_request'],
        'PAR with response_type=token',
      );
    },
  },
  {
    group: GROUP,
    id: 'par-no-pkce',
    title: 'PAR without code_challenge',
    expect: 'fail',
    async run(ctx) {
      await parRefused(
        ctx,
        { params: { code_challenge: undefined, code_challenge_method: undefined } },
        ['invalid_request'],
        'PAR without PKCE',
      );
    },
  },
  {
    group: GROUP,
    id: 'par-plain-pkce',
    title: 'PAR with code_challenge_method=plain',
    expect: 'fail',
    async run(ctx) {
      const p = pkce();
      await parRefused(
        ctx,
        { params: { code_challenge: p.verifier, code_challenge_method: 'plain' } },
        ['invalid_request'],
        'PAR with plain PKCE',
      );
    },
  },
  {
    group: GROUP,
    id: 'token-pkce-wrong-verifier',
    title: 'token request with a wrong code_verifier → invalid_grant',
    expect: 'fail',
    async run(ctx) {
      const auth = await ctx.unredeemed();
      oauthError(
        await ctx.redeem(auth, { verifier: pkce().verifier }),
        { status: 400, error: 'invalid_grant' },
        'wrong code_verifier',
      );
    },
  },
  {
    group: GROUP,
    id: 'token-pkce-missing-verifier',
    title: 'token request without code_verifier → invalid_grant',
    expect: 'fail',
    async run(ctx) {
      const auth = await ctx.unredeemed();
      oauthError(
        await ctx.redeem(auth, { verifier: null }),
        { status: 400, error: 'invalid_grant' },
        'missing code_verifier',
      );
    },
  },
  {
    group: GROUP,
    id: 'par-no-redirect-uri',
    title: 'PAR without redirect_uri',
    expect: 'fail',
    async run(ctx) {
      await parRefused(
        ctx,
        { params: { redirect_uri: undefined } },
        ['invalid_request'],
        'PAR without redirect_uri',
      );
    },
  },
  {
    group: GROUP,
    id: 'par-unregistered-redirect-uri',
    title: 'PAR with an unregistered redirect_uri',
    expect: 'fail',
    async run(ctx) {
      await parRefused(
        ctx,
        { params: { redirect_uri: 'https://attacker.example/callback' } },
        ['invalid_request', 'invalid_redirect_uri'],
        'PAR with an unregistered redirect_uri',
      );
    },
  },
  {
    group: GROUP,
    id: 'authz-request-uri-reused',
    title: 'request_uri used again after the authorization completed',
    expect: 'fail',
    async run(ctx) {
      const auth = await ctx.authorize();
      authorizationRejected(
        await ctx.visit(auth.url),
        ['invalid_request_uri', 'invalid_request'],
        'second use of a request_uri',
      );
    },
  },
  {
    group: GROUP,
    id: 'authz-request-uri-twice-before-login',
    title: 'request_uri visited twice before the login completes',
    expect: 'accept',
    async run(ctx) {
      const pushed = await ctx.par();
      const first = await ctx.visit(pushed.url);
      equal(first.kind, 'interaction', 'first visit');
      // The customer reloads / opens the link again, then signs in.
      const callback = await ctx.login(pushed.url);
      check(callback.searchParams.get('code'), `second visit: expected a code, got ${callback.search}`);
      const res = await ctx.redeem({ ...pushed, callback, code: callback.searchParams.get('code')! });
      status(res, 200, 'code exchange');
    },
  },
  {
    group: GROUP,
    id: 'authz-request-uri-expired',
    title: 'expired request_uri',
    expect: 'fail',
    hub: 'short-lifetimes',
    async prepare(ctx) {
      return { pushed: await ctx.par(), at: Date.now() };
    },
    async run(ctx, prepared) {
      const { pushed, at } = prepared as { pushed: Pushed; at: number };
      // FAPI 2.0 §5.3.2.2: request_uri lifetime under 600 s; its end is what the PAR response says.
      check(pushed.expiresIn > 0 && pushed.expiresIn < 600, `PAR expires_in ${pushed.expiresIn}`);
      await ctx.sleep(Math.max(0, at + pushed.expiresIn * 1000 + 1500 - Date.now()));
      authorizationRejected(
        await ctx.visit(pushed.url),
        ['invalid_request_uri', 'invalid_request'],
        'expired request_uri',
      );
    },
  },
  {
    group: GROUP,
    id: 'authz-request-uri-other-client',
    title: "another client's request_uri",
    expect: 'fail',
    async run(ctx) {
      const pushed = await ctx.par({ client: ctx.a });
      const url = authorizationUrl(ctx.target, ctx.b.clientId, pushed.requestUri);
      // The error codes the OpenID conformance suite accepts here (a PAR is a stored request object).
      authorizationRejected(
        await ctx.visit(url),
        ['invalid_request_uri', 'invalid_request', 'invalid_request_object'],
        "client b using client a's request_uri",
      );
    },
  },
  {
    group: GROUP,
    id: 'par-request-uri-in-body',
    title: 'request_uri sent in the PAR body',
    expect: 'fail',
    async run(ctx) {
      const earlier = await ctx.par();
      // RFC 9126 §2.1 fixes no code; these are the ones the OpenID conformance suite accepts.
      await parRefused(
        ctx,
        { params: { request_uri: earlier.requestUri } },
        ['invalid_request', 'invalid_request_object', 'request_uri_not_supported'],
        'PAR carrying a request_uri',
      );
    },
  },
  {
    group: GROUP,
    id: 'par-request-uri-in-request-object',
    title: 'request_uri inside a request object at PAR',
    expect: 'fail',
    async run(ctx) {
      const earlier = await ctx.par();
      const p = pkce();
      const request = await requestObject(ctx.issuer, ctx.a, {
        response_type: 'code',
        redirect_uri: ctx.a.redirectUri,
        scope: 'openid accounts',
        code_challenge: p.challenge,
        code_challenge_method: 'S256',
        state: 'ro',
        nonce: 'ro',
        request_uri: earlier.requestUri,
      });
      const res = await pushAuthorizationRequest(ctx.via(ctx.a), ctx.a, { request }, {});
      // A hub that takes request objects must refuse this one as invalid; one that takes none
      // (request_parameter_supported absent or false) refuses every request object as such.
      const takesRequestObjects = ctx.target.metadata.request_parameter_supported === true;
      oauthError(
        res,
        { status: 400, error: takesRequestObjects ? 'invalid_request_object' : 'request_not_supported' },
        'request object carrying request_uri',
      );
    },
  },
  {
    group: GROUP,
    id: 'par-wrong-http-verb',
    title: 'GET or PUT instead of POST at the PAR endpoint → 405',
    expect: 'fail',
    async run(ctx) {
      const p = pkce();
      const hub = ctx.via(ctx.a);
      for (const method of ['GET', 'PUT']) {
        const res = await send(hub, hub.metadata.pushed_authorization_request_endpoint, {
          method,
          query: {
            ...(await clientAuthFields(hub, ctx.a)),
            response_type: 'code',
            redirect_uri: ctx.a.redirectUri,
            scope: 'openid accounts',
            code_challenge: p.challenge,
            code_challenge_method: 'S256',
          },
        });
        check(res.body?.request_uri === undefined, `a request_uri was issued for ${method}`);
        // RFC 9126 §2.3: a request that did not use POST is answered 405 (Method Not Allowed).
        status(res, 405, `${method} at the PAR endpoint`);
      }
    },
  },
  {
    group: GROUP,
    id: 'par-assertion-aud-par-endpoint',
    title: 'client assertion aud = PAR endpoint URL',
    expect: 'fail',
    variants: PRIVATE_KEY_JWT_ONLY,
    async run(ctx) {
      await parRefusedClient(
        ctx,
        { aud: ctx.via(ctx.a).metadata.pushed_authorization_request_endpoint },
        'aud = PAR endpoint',
      );
    },
  },
  {
    group: GROUP,
    id: 'par-assertion-aud-token-endpoint',
    title: 'client assertion aud = token endpoint URL',
    expect: 'fail',
    variants: PRIVATE_KEY_JWT_ONLY,
    async run(ctx) {
      await parRefusedClient(ctx, { aud: ctx.via(ctx.a).metadata.token_endpoint }, 'aud = token endpoint');
    },
  },
  {
    group: GROUP,
    id: 'par-assertion-aud-array',
    title: 'client assertion aud = [issuer] (an array)',
    expect: 'fail',
    variants: PRIVATE_KEY_JWT_ONLY,
    async run(ctx) {
      await parRefusedClient(ctx, { aud: [ctx.issuer] }, 'aud as an array');
    },
  },
  {
    group: GROUP,
    id: 'par-assertion-iat-nbf-8s-future',
    title: 'client assertion iat and nbf 8 s in the future',
    expect: 'accept',
    variants: PRIVATE_KEY_JWT_ONLY,
    async run(ctx) {
      const t = now() + 8;
      await ctx.par({ assertion: { iat: t, nbf: t, exp: t + 60 } });
    },
  },
  {
    group: GROUP,
    id: 'par-assertion-iat-nbf-far-future',
    title: 'client assertion iat and nbf 70 s in the future',
    expect: 'fail',
    variants: PRIVATE_KEY_JWT_ONLY,
    async run(ctx) {
      const t = now() + 70;
      await parRefusedClient(ctx, { iat: t, nbf: t, exp: t + 60 }, 'iat/nbf 70 s ahead');
    },
  },
  {
    group: GROUP,
    id: 'par-assertion-rs256',
    title: 'client assertion signed with RS256',
    expect: 'fail',
    variants: PRIVATE_KEY_JWT_ONLY,
    async run(ctx) {
      const { privateKey } = await generateKeyPair('RS256');
      await parRefusedClient(ctx, { alg: 'RS256', key: privateKey as CryptoKey }, 'RS256 assertion');
    },
  },
];

async function parRefusedClient(
  ctx: CheckContext,
  assertion: Parameters<typeof clientAssertion>[2],
  what: string,
) {
  const { res } = await ctx.pushRaw({ assertion });
  oauthError(res, INVALID_CLIENT, `PAR with client assertion ${what}`);
}
