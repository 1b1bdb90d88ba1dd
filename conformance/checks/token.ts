/**
 * Checklist group "Token endpoint": single-use and short-lived codes bound to their client,
 * private_key_jwt client authentication (issuer aud, ES/PS/EdDSA only, fresh, with sub), a
 * holder-of-key proof on every token request, and refresh tokens bound to the client and the DPoP
 * key and never rotated (FAPI 2.0 §5.3.2.1).
 */
import { generateKeyPair } from 'jose';
import { type AssertionOptions, generateDpopKey, now } from '../lib/client.ts';
import { type Authorized, type CheckContext, tokensFrom } from '../lib/context.ts';
import { check, describe, equal, oauthError, resourceRejection, status } from '../lib/expect.ts';
import type { Check } from '../lib/types.ts';

const GROUP = 'Token endpoint';
const INVALID_CLIENT = { status: [400, 401], error: 'invalid_client' };

/** A code exchange whose client authentication is broken as given: invalid_client. */
async function clientRejected(
  ctx: CheckContext,
  o: { assertion?: AssertionOptions | null; clientId?: string },
  what: string,
) {
  const auth = await ctx.authorize();
  oauthError(
    await ctx.redeem(auth, {
      assertion: o.assertion === undefined ? {} : o.assertion,
      ...(o.clientId ? { clientId: o.clientId } : {}),
    }),
    INVALID_CLIENT,
    what,
  );
}

export const tokenChecks: Check[] = [
  {
    group: GROUP,
    id: 'token-code-reuse',
    title: 'authorization code reused after 1 s → invalid_grant, and its tokens are revoked',
    expect: 'fail',
    async run(ctx) {
      const auth = await ctx.authorize();
      const tokens = tokensFrom(await ctx.redeem(auth), auth.client, auth.dpopKey, 'first code exchange');
      status(await ctx.resource(tokens), 200, 'resource call with the new access token');
      await ctx.sleep(1000);
      oauthError(await ctx.redeem(auth), { status: 400, error: 'invalid_grant' }, 'second use of the code');
      resourceRejection(await ctx.resource(tokens), 'access token issued from the reused code', [
        'invalid_token',
      ]);
      oauthError(
        await ctx.refresh(tokens),
        { status: 400, error: 'invalid_grant' },
        'refresh token issued from the reused code',
      );
    },
  },
  {
    group: GROUP,
    id: 'token-code-expired',
    title: 'authorization code used after its lifetime (≤ 60 s)',
    expect: 'fail',
    hub: 'short-lifetimes',
    async prepare(ctx) {
      return { auth: await ctx.authorize(), at: Date.now() };
    },
    async run(ctx, prepared) {
      const { auth, at } = prepared as { auth: Authorized; at: number };
      check(ctx.target.codeTtl <= 60, `the hub's code lifetime is ${ctx.target.codeTtl} s`);
      await ctx.sleep(Math.max(0, at + ctx.target.codeTtl * 1000 + 1500 - Date.now()));
      oauthError(await ctx.redeem(auth), { status: 400, error: 'invalid_grant' }, 'expired code');
    },
  },
  {
    group: GROUP,
    id: 'token-code-other-client',
    title: 'code issued to another client',
    expect: 'fail',
    async run(ctx) {
      const auth = await ctx.authorize({ client: ctx.a });
      oauthError(
        await ctx.redeem(auth, { client: ctx.b }),
        { status: 400, error: 'invalid_grant' },
        "client b redeeming client a's code",
      );
    },
  },
  {
    group: GROUP,
    id: 'token-other-client-id',
    title: "another client's client_id (its assertion signed with this client's key) → invalid_client",
    expect: 'fail',
    async run(ctx) {
      // As the OpenID conformance suite does: client b's client_id and an assertion for b signed with
      // a's key, redeeming a's code. The order of the client and code checks is not specified, so
      // invalid_grant is also a correct answer.
      const auth = await ctx.authorize({ client: ctx.a });
      const res = await ctx.redeem(auth, {
        client: ctx.b,
        assertion: { key: ctx.a.privateKey, kid: ctx.a.kid },
      });
      oauthError(
        res,
        { status: [400, 401], error: ['invalid_client', 'invalid_grant'] },
        "client b's client_id with client a's key",
      );
      if (res.body?.error === 'invalid_grant') equal(res.status, 400, 'status of invalid_grant');
    },
  },
  {
    group: GROUP,
    id: 'token-assertion-other-clients-key',
    title: "assertion for this client signed with another client's key → invalid_client",
    expect: 'fail',
    async run(ctx) {
      await clientRejected(
        ctx,
        { assertion: { key: ctx.b.privateKey, kid: ctx.b.kid } },
        "assertion signed with client b's key",
      );
    },
  },
  {
    group: GROUP,
    id: 'token-no-assertion',
    title: 'no client assertion (client_id only)',
    expect: 'fail',
    async run(ctx) {
      await clientRejected(ctx, { assertion: null }, 'no client assertion');
    },
  },
  {
    group: GROUP,
    id: 'token-assertion-rs256',
    title: 'client assertion signed with RS256',
    expect: 'fail',
    async run(ctx) {
      const { privateKey } = await generateKeyPair('RS256');
      await clientRejected(
        ctx,
        { assertion: { alg: 'RS256', key: privateKey as CryptoKey } },
        'RS256 assertion',
      );
    },
  },
  {
    group: GROUP,
    id: 'token-assertion-expired',
    title: 'client assertion expired 5 minutes ago',
    expect: 'fail',
    async run(ctx) {
      const t = now();
      await clientRejected(ctx, { assertion: { iat: t - 360, exp: t - 300 } }, 'expired assertion');
    },
  },
  {
    group: GROUP,
    id: 'token-assertion-wrong-aud',
    title: 'client assertion with a foreign aud',
    expect: 'fail',
    async run(ctx) {
      await clientRejected(
        ctx,
        { assertion: { aud: 'https://other-as.example' } },
        'assertion aud of another server',
      );
    },
  },
  {
    group: GROUP,
    id: 'token-assertion-no-sub',
    title: 'client assertion without sub',
    expect: 'fail',
    async run(ctx) {
      await clientRejected(ctx, { assertion: { sub: null } }, 'assertion without sub');
    },
  },
  {
    group: GROUP,
    id: 'token-no-holder-of-key',
    title: 'code exchange with neither a DPoP proof nor a certificate',
    expect: 'fail',
    async run(ctx) {
      // The PAR carries no DPoP key either, so only the client's dpop_bound_access_tokens requires one.
      const auth = await ctx.authorize({ dpopKey: null });
      const res = await ctx.redeem(auth, { dpopKey: null });
      // The errors the OpenID conformance suite accepts for a missing DPoP proof.
      oauthError(
        res,
        { status: 400, error: ['invalid_request', 'invalid_grant'] },
        'token request without DPoP',
      );
      check(res.body?.access_token === undefined, 'an access token was issued');
    },
  },
  {
    group: GROUP,
    id: 'token-refresh-other-dpop-key',
    title: 'refresh with a proof of another DPoP key',
    expect: 'fail',
    async run(ctx) {
      const tokens = await ctx.shared();
      oauthError(
        await ctx.refresh(tokens, { dpopKey: await generateDpopKey() }),
        { status: 400, error: 'invalid_grant' },
        'refresh with another DPoP key',
      );
    },
  },
  {
    group: GROUP,
    id: 'token-refresh-other-client',
    title: 'refresh by another client',
    expect: 'fail',
    async run(ctx) {
      const tokens = await ctx.shared();
      oauthError(
        await ctx.refresh(tokens, { client: ctx.b }),
        { status: 400, error: 'invalid_grant' },
        'refresh by client b',
      );
    },
  },
  {
    group: GROUP,
    id: 'token-refresh-no-dpop',
    title: 'refresh without a DPoP proof',
    expect: 'fail',
    async run(ctx) {
      const tokens = await ctx.shared();
      oauthError(
        await ctx.refresh(tokens, { dpopKey: null }),
        { status: 400, error: ['invalid_request', 'invalid_grant'] },
        'refresh without DPoP',
      );
    },
  },
  {
    group: GROUP,
    id: 'token-refresh-not-rotated',
    title: 'refresh with the same key: new DPoP access token, the refresh token is not rotated',
    expect: 'accept',
    async run(ctx) {
      const tokens = await ctx.tokens();
      const res = await ctx.refresh(tokens);
      const refreshed = tokensFrom(res, tokens.client, tokens.dpopKey, 'refresh');
      equal(String(res.body?.token_type).toLowerCase(), 'dpop', 'token_type');
      if (res.body?.refresh_token !== undefined)
        equal(res.body.refresh_token, tokens.refreshToken, 'refresh_token in the response');
      status(await ctx.resource(refreshed), 200, 'resource call with the refreshed access token');
      // The same refresh token keeps working (a retried refresh must not fail, FAPI 2.0 §5.3.2.1).
      const again = await ctx.refresh(tokens);
      check(again.status === 200, `second refresh with the same refresh token: ${describe(again)}`);
    },
  },
];
