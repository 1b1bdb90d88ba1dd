/**
 * Checklist group "Token endpoint": single-use and short-lived codes bound to their client, client
 * authentication (private_key_jwt: issuer aud, ES/PS/EdDSA only, fresh, with sub; mTLS: a certificate,
 * the client's own), a holder-of-key on every token request, and refresh tokens bound to the client
 * and to the DPoP key or the certificate, never rotated (FAPI 2.0 §5.3.2.1).
 */
import { generateKeyPair } from 'jose';
import { type AssertionOptions, generateDpopKey, type HttpResult, now } from '../lib/client.ts';
import {
  type Authorized,
  type CheckContext,
  expectedTokenType,
  type Tokens,
  tokensFrom,
} from '../lib/context.ts';
import {
  CheckFailure,
  check,
  describe,
  equal,
  oauthError,
  resourceRejection,
  status,
} from '../lib/expect.ts';
import { BOTH_FLOWS, CERTIFICATE_AUTH_ONLY, type Check, PRIVATE_KEY_JWT_ONLY } from '../lib/types.ts';

const GROUP = 'Token endpoint';
const INVALID_CLIENT = { status: [400, 401], error: 'invalid_client' };

/** A rejection at the resource server, whatever the binding (DPoP: DPoP challenge; mTLS: Bearer). */
function tokenRejected(res: HttpResult, tokens: Tokens, what: string): void {
  if (tokens.client.senderConstraint === 'dpop') {
    resourceRejection(res, what, ['invalid_token']);
    return;
  }
  const www = res.headers.get('www-authenticate') ?? '';
  if (res.status !== 401 || !/^Bearer\b/.test(www) || !www.includes('error="invalid_token"'))
    throw new CheckFailure(
      `${what}: expected 401 with a Bearer invalid_token challenge, got ${describe(res)}`,
    );
}

/**
 * The errors for a token request without its holder-of-key: the suite's for a missing DPoP proof or
 * certificate binding — and invalid_client when the certificate is also the client's authentication.
 */
const noHolderOfKeyErrors = (ctx: CheckContext) =>
  ctx.variant.senderConstraint === 'mtls' && ctx.variant.clientAuth !== 'private_key_jwt'
    ? ['invalid_client']
    : ['invalid_request', 'invalid_grant'];

/** A code exchange whose client authentication is broken as given: invalid_client. */
async function clientRejected(
  ctx: CheckContext,
  o: { assertion?: AssertionOptions | null; clientId?: string },
  what: string,
) {
  const auth = await ctx.unredeemed();
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
    variants: { flow: BOTH_FLOWS },
    // The first exchange is prepared at the start; the reuse comes at the end, long after 1 s.
    async prepare(ctx) {
      const auth = await ctx.authorize();
      const tokens = tokensFrom(await ctx.redeem(auth), auth.client, auth.dpopKey, 'first code exchange');
      status(await ctx.resource(tokens), 200, 'resource call with the new access token');
      return { auth, tokens, at: Date.now() };
    },
    async run(ctx, prepared) {
      type Prepared = { auth: Authorized; tokens: Tokens; at: number };
      let { auth, tokens, at } = prepared as Prepared;
      // The reuse must come within the code's lifetime (on a very slow run, start over).
      if (Date.now() - at > (ctx.target.codeTtl - 10) * 1000)
        ({ auth, tokens, at } = (await this.prepare!(ctx)) as Prepared);
      await ctx.sleep(Math.max(0, at + 1000 - Date.now()));
      oauthError(await ctx.redeem(auth), { status: 400, error: 'invalid_grant' }, 'second use of the code');
      tokenRejected(await ctx.resource(tokens), tokens, 'access token issued from the reused code');
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
      const auth = await ctx.unredeemed();
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
    variants: PRIVATE_KEY_JWT_ONLY,
    async run(ctx) {
      // As the OpenID conformance suite does: client b's client_id and an assertion for b signed with
      // a's key, redeeming a's code. The order of the client and code checks is not specified, so
      // invalid_grant is also a correct answer.
      const auth = await ctx.unredeemed();
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
    variants: PRIVATE_KEY_JWT_ONLY,
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
    variants: PRIVATE_KEY_JWT_ONLY,
    async run(ctx) {
      await clientRejected(ctx, { assertion: null }, 'no client assertion');
    },
  },
  {
    group: GROUP,
    id: 'token-assertion-rs256',
    title: 'client assertion signed with RS256',
    expect: 'fail',
    variants: PRIVATE_KEY_JWT_ONLY,
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
    variants: PRIVATE_KEY_JWT_ONLY,
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
    variants: PRIVATE_KEY_JWT_ONLY,
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
    variants: PRIVATE_KEY_JWT_ONLY,
    async run(ctx) {
      await clientRejected(ctx, { assertion: { sub: null } }, 'assertion without sub');
    },
  },
  {
    group: GROUP,
    id: 'token-mtls-no-certificate',
    title: 'code exchange of a certificate-authenticated client without a certificate → invalid_client',
    expect: 'fail',
    variants: CERTIFICATE_AUTH_ONLY,
    async run(ctx) {
      const auth = await ctx.unredeemed();
      oauthError(await ctx.redeem(auth, { certificate: null }), INVALID_CLIENT, 'no client certificate');
    },
  },
  {
    group: GROUP,
    id: 'token-mtls-other-clients-certificate',
    title: "code exchange as this client presenting another client's (valid) certificate → invalid_client",
    expect: 'fail',
    variants: CERTIFICATE_AUTH_ONLY,
    async run(ctx) {
      const auth = await ctx.unredeemed();
      oauthError(
        await ctx.redeem(auth, { certificate: ctx.b.certificate! }),
        INVALID_CLIENT,
        "client b's certificate",
      );
    },
  },
  {
    group: GROUP,
    id: 'token-no-holder-of-key',
    title: 'code exchange with neither a DPoP proof nor a certificate',
    expect: 'fail',
    async run(ctx) {
      // The PAR carries no DPoP key either, so only the client's registered binding requires one.
      const auth = await ctx.authorize({ dpopKey: null });
      const res = await ctx.redeem(
        auth,
        ctx.variant.senderConstraint === 'dpop' ? { dpopKey: null } : { certificate: null },
      );
      oauthError(
        res,
        { status: [400, 401], error: noHolderOfKeyErrors(ctx) },
        'token request without holder-of-key',
      );
      check(res.body?.access_token === undefined, 'an access token was issued');
    },
  },
  {
    group: GROUP,
    id: 'token-refresh-other-dpop-key',
    title: 'refresh with a proof of another DPoP key',
    expect: 'fail',
    variants: { senderConstraint: ['dpop'] },
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
    id: 'token-refresh-other-certificate',
    title:
      "refresh of a certificate-bound refresh token over the client's other certificate (it authenticates, it is not the binding) → invalid_grant",
    expect: 'fail',
    variants: { senderConstraint: ['mtls'] },
    async run(ctx) {
      const tokens = await ctx.shared();
      oauthError(
        await ctx.refresh(tokens, { certificate: ctx.a.otherCertificate! }),
        { status: 400, error: 'invalid_grant' },
        'refresh over another certificate',
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
    variants: { senderConstraint: ['dpop'] },
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
    id: 'token-refresh-no-certificate',
    title: 'refresh of a certificate-bound refresh token without a certificate',
    expect: 'fail',
    variants: { senderConstraint: ['mtls'] },
    async run(ctx) {
      const tokens = await ctx.shared();
      oauthError(
        await ctx.refresh(tokens, { certificate: null }),
        { status: [400, 401], error: noHolderOfKeyErrors(ctx) },
        'refresh without a certificate',
      );
    },
  },
  {
    group: GROUP,
    id: 'token-refresh-not-rotated',
    title:
      'refresh with the same holder-of-key: a new access token bound like the first, the refresh token is not rotated',
    expect: 'accept',
    variants: { flow: BOTH_FLOWS },
    async run(ctx) {
      const tokens = await ctx.tokens();
      const res = await ctx.refresh(tokens);
      const refreshed = tokensFrom(res, tokens.client, tokens.dpopKey, 'refresh');
      equal(refreshed.tokenType, expectedTokenType(tokens.client), 'token_type');
      if (res.body?.refresh_token !== undefined)
        equal(res.body.refresh_token, tokens.refreshToken, 'refresh_token in the response');
      status(await ctx.resource(refreshed), 200, 'resource call with the refreshed access token');
      if (tokens.client.senderConstraint === 'mtls')
        tokenRejected(
          await ctx.resource(refreshed, { certificate: tokens.client.otherCertificate! }),
          refreshed,
          "refreshed token over the client's other certificate",
        );
      else
        resourceRejection(
          await ctx.resource(refreshed, { dpopKey: await generateDpopKey() }),
          'refreshed token with a proof of another key',
        );
      // The same refresh token keeps working (a retried refresh must not fail, FAPI 2.0 §5.3.2.1).
      const again = await ctx.refresh(tokens);
      check(again.status === 200, `second refresh with the same refresh token: ${describe(again)}`);
    },
  },
];
