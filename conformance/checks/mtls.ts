/**
 * Group "mTLS (RFC 8705)": the checklist's mTLS variants — client authentication tls_client_auth and
 * self_signed_tls_client_auth, certificate-bound access and refresh tokens — and its mTLS rows: the
 * methods and `mtls_endpoint_aliases` in discovery, no holder-of-key (no certificate) at the token
 * endpoint, refresh tokens bound to the same certificate, and the resource server's binding check.
 * Happy paths run openid-client (use_mtls_endpoint_aliases, a dispatcher presenting the certificate);
 * negative cases change exactly one thing. FAPI 2.0 allows one sender constraint per token, so DPoP
 * offered beside a certificate binding must fail too.
 */
import * as oidc from 'openid-client';
import type { TestCertificate } from '../../test/support/pki.ts';
import { type HttpResult, send } from '../lib/client.ts';
import type { CheckContext } from '../lib/context.ts';
import { CheckFailure, check, describe, equal, status } from '../lib/expect.ts';
import type { MtlsClient, MtlsFixture } from '../lib/mtls.ts';
import type { Check } from '../lib/types.ts';

const GROUP = 'mTLS (RFC 8705)';
const OPENID_SCOPE = 'openid offline_access accounts';

function fixture(ctx: CheckContext): MtlsFixture {
  const f = ctx.target.mtls;
  if (!f) ctx.notApplicable('no mTLS test clients on this hub (in-process hubs register them)');
  return f;
}

/** openid-client for an mTLS client, presenting `cert` (default its own; null none) on every connection. */
function rpFor(f: MtlsFixture, ctx: CheckContext, c: MtlsClient, cert: TestCertificate | null = c.cert) {
  return oidc.discovery(
    new URL(ctx.issuer),
    c.clientId,
    { use_mtls_endpoint_aliases: true, id_token_signed_response_alg: 'ES256' },
    c.auth === 'private_key_jwt'
      ? oidc.PrivateKeyJwt({ key: c.signingKey!, kid: c.kid! })
      : oidc.TlsClientAuth(),
    { [oidc.customFetch]: f.fetchWith(cert ?? undefined) as oidc.CustomFetch },
  );
}

interface Flow {
  config: oidc.Configuration;
  dpop: oidc.DPoPHandle | undefined;
  tokens: oidc.TokenEndpointResponse & oidc.TokenEndpointResponseHelpers;
}

interface Code {
  config: oidc.Configuration;
  dpop: oidc.DPoPHandle | undefined;
  callback: URL;
  verifier: string;
  state: string;
  nonce: string | undefined;
}

/** PAR (at the mTLS alias) → the customer signs in and consents → the callback with a code. */
async function code(ctx: CheckContext, c: MtlsClient, scope = OPENID_SCOPE): Promise<Code> {
  const f = fixture(ctx);
  const config = await rpFor(f, ctx, c);
  const dpop =
    c.sender === 'dpop' ? oidc.getDPoPHandle(config, await oidc.randomDPoPKeyPair('ES256')) : undefined;
  const verifier = oidc.randomPKCECodeVerifier();
  const state = oidc.randomState();
  const nonce = scope.split(' ').includes('openid') ? oidc.randomNonce() : undefined;
  const url = await oidc.buildAuthorizationUrlWithPAR(
    config,
    {
      redirect_uri: c.redirectUri,
      scope,
      code_challenge: await oidc.calculatePKCECodeChallenge(verifier),
      code_challenge_method: 'S256',
      state,
      ...(nonce ? { nonce } : {}),
    },
    dpop ? { DPoP: dpop } : undefined,
  );
  const callback = await ctx.login(url, { redirectUri: c.redirectUri });
  return { config, dpop, callback, verifier, state, nonce };
}

function redeem(k: Code, config = k.config, dpop = k.dpop) {
  return oidc.authorizationCodeGrant(
    config,
    k.callback,
    { pkceCodeVerifier: k.verifier, expectedState: k.state, ...(k.nonce ? { expectedNonce: k.nonce } : {}) },
    undefined,
    dpop ? { DPoP: dpop } : undefined,
  );
}

async function flow(ctx: CheckContext, c: MtlsClient, scope = OPENID_SCOPE): Promise<Flow> {
  const k = await code(ctx, c, scope);
  return { config: k.config, dpop: k.dpop, tokens: await redeem(k) };
}

/** One certificate-bound token set per context, for the checks that do not spend it. */
const sharedBound = new WeakMap<CheckContext, Promise<Flow>>();
function bound(ctx: CheckContext): Promise<Flow> {
  let f = sharedBound.get(ctx);
  if (!f) {
    f = flow(ctx, fixture(ctx).clients.privateKeyJwtBound);
    sharedBound.set(ctx, f);
  }
  return f;
}

/** GET the accounts API at the mTLS origin with a certificate-bound token, presenting `cert`. */
function boundRead(
  ctx: CheckContext,
  accessToken: string,
  cert: TestCertificate | undefined,
  o: { scheme?: string; dpop?: string; url?: string } = {},
): Promise<HttpResult> {
  const f = fixture(ctx);
  return send({ ...ctx.target, fetch: f.fetchWith(cert) }, o.url ?? `${f.origin}/api/v1/accounts`, {
    headers: {
      authorization: `${o.scheme ?? 'Bearer'} ${accessToken}`,
      ...(o.dpop ? { dpop: o.dpop } : {}),
    },
  });
}

/** The resource server's refusal of a certificate-bound token: status, Bearer challenge, envelope code. */
function boundRejection(res: HttpResult, expected: { status: number; code: string }, what: string): void {
  const www = res.headers.get('www-authenticate') ?? '';
  const envelope = res.body?.error as { status?: unknown; code?: unknown } | undefined;
  if (
    res.status !== expected.status ||
    !/^Bearer\b/.test(www) ||
    !www.includes(`error="${expected.code}"`) ||
    envelope?.code !== expected.code
  )
    throw new CheckFailure(
      `${what}: expected ${expected.status} ${expected.code} with a Bearer challenge, got ${describe(res)}`,
    );
}

/** An openid-client call that must end in an OAuth error with one of `errors`. */
async function oauthRejects(p: Promise<unknown>, errors: string[], what: string): Promise<void> {
  try {
    await p;
  } catch (err) {
    const e = err as { error?: unknown; status?: unknown };
    if (typeof e.error === 'string' && errors.includes(e.error)) {
      if (typeof e.status === 'number' && e.status >= 500) throw new CheckFailure(`${what}: server error`);
      return;
    }
    throw new CheckFailure(
      `${what}: expected error ${errors.join(' or ')}, got ${err instanceof Error ? `${err.name}: ${err.message}` : String(err)}${typeof e.error === 'string' ? ` (${e.error})` : ''}`,
    );
  }
  throw new CheckFailure(`${what}: the hub accepted it`);
}

/** PAR for `c` presenting `cert`: must fail client authentication. */
async function parRejected(ctx: CheckContext, c: MtlsClient, cert: TestCertificate | null, what: string) {
  const f = fixture(ctx);
  const config = await rpFor(f, ctx, c, cert);
  await oauthRejects(
    oidc.buildAuthorizationUrlWithPAR(config, {
      redirect_uri: c.redirectUri,
      scope: OPENID_SCOPE,
      code_challenge: await oidc.calculatePKCECodeChallenge(oidc.randomPKCECodeVerifier()),
      code_challenge_method: 'S256',
    }),
    ['invalid_client'],
    what,
  );
}

const FAPI_ID_TOKEN_ALGS = ['PS256', 'ES256', 'EdDSA'];

/** A full openid flow for one client, then the read API with its sender constraint. */
function happyFlow(key: keyof MtlsFixture['clients'], title: string): Check {
  return {
    group: GROUP,
    id: `mtls-flow-${key.replace(/[A-Z]/g, (m) => `-${m.toLowerCase()}`)}`,
    title,
    expect: 'accept',
    async run(ctx) {
      const f = fixture(ctx);
      const c = f.clients[key];
      const { config, dpop, tokens } = await flow(ctx, c);
      equal(tokens.token_type.toLowerCase(), c.sender === 'dpop' ? 'dpop' : 'bearer', 'token_type');
      const idToken = tokens.id_token;
      check(idToken, 'the openid flow returned no id_token');
      const alg = JSON.parse(Buffer.from(idToken.split('.')[0]!, 'base64url').toString()).alg;
      check(FAPI_ID_TOKEN_ALGS.includes(alg), `id_token signed with ${alg}`);
      if (c.sender === 'dpop') {
        const res = await oidc.fetchProtectedResource(
          config,
          tokens.access_token,
          new URL(ctx.accountsUrl),
          'GET',
          undefined,
          undefined,
          { DPoP: dpop! },
        );
        equal(res.status, 200, 'read API with the DPoP-bound token');
      } else {
        status(await boundRead(ctx, tokens.access_token, c.cert), 200, 'read API over the bound certificate');
      }
    },
  };
}

/** The shared certificate-bound token at the read API, presented as given, must be refused so. */
function boundTokenRefused(
  id: string,
  title: string,
  cert: (f: MtlsFixture) => TestCertificate | undefined,
  o: { scheme?: string; dpop?: string },
  expected: { status: number; code: string },
): Check {
  return {
    group: GROUP,
    id,
    title,
    expect: 'fail',
    async run(ctx) {
      const { tokens } = await bound(ctx);
      boundRejection(await boundRead(ctx, tokens.access_token, cert(fixture(ctx)), o), expected, title);
    },
  };
}

export const mtlsChecks: Check[] = [
  {
    group: GROUP,
    id: 'mtls-discovery',
    title: 'discovery: mTLS methods, certificate-bound tokens, mtls_endpoint_aliases on https',
    expect: 'accept',
    async run(ctx) {
      fixture(ctx);
      const doc = ctx.target.metadata;
      const methods = doc.token_endpoint_auth_methods_supported as string[] | undefined;
      for (const m of ['tls_client_auth', 'self_signed_tls_client_auth'])
        check(methods?.includes(m), `token_endpoint_auth_methods_supported lacks ${m}`);
      equal(
        doc.tls_client_certificate_bound_access_tokens,
        true,
        'tls_client_certificate_bound_access_tokens',
      );
      const aliases = doc.mtls_endpoint_aliases as Record<string, string> | undefined;
      check(aliases, 'no mtls_endpoint_aliases');
      for (const member of [
        'token_endpoint',
        'pushed_authorization_request_endpoint',
        'revocation_endpoint',
        'userinfo_endpoint',
        ...(doc.introspection_endpoint ? ['introspection_endpoint'] : []),
      ])
        check(
          typeof aliases[member] === 'string' && aliases[member].startsWith('https://'),
          `mtls_endpoint_aliases.${member} missing or not https`,
        );
    },
  },
  happyFlow('tlsDpop', 'tls_client_auth (subject DN) + DPoP: openid flow and read API'),
  happyFlow('tlsBound', 'tls_client_auth (SAN DNS) + certificate-bound token: openid flow and read API'),
  happyFlow('selfSignedDpop', 'self_signed_tls_client_auth + DPoP: openid flow and read API'),
  happyFlow(
    'selfSignedBound',
    'self_signed_tls_client_auth + certificate-bound token: openid flow and read API',
  ),
  happyFlow('privateKeyJwtBound', 'private_key_jwt + certificate-bound token: openid flow and read API'),
  {
    group: GROUP,
    id: 'mtls-flow-plain-oauth',
    title: 'tls_client_auth + certificate-bound token without openid (plain OAuth) → accept, no id_token',
    expect: 'accept',
    async run(ctx) {
      const c = fixture(ctx).clients.tlsBound;
      const { tokens } = await flow(ctx, c, 'offline_access accounts');
      check(tokens.id_token === undefined, 'plain OAuth flow returned an id_token');
      status(await boundRead(ctx, tokens.access_token, c.cert), 200, 'read API over the bound certificate');
    },
  },
  {
    group: GROUP,
    id: 'mtls-auth-no-certificate',
    title: 'tls_client_auth without a client certificate → invalid_client',
    expect: 'fail',
    run: (ctx) => parRejected(ctx, fixture(ctx).clients.tlsBound, null, 'PAR without a certificate'),
  },
  {
    group: GROUP,
    id: 'mtls-auth-untrusted-ca',
    title: 'tls_client_auth with the right subject from an untrusted CA → invalid_client',
    expect: 'fail',
    run: (ctx) =>
      parRejected(
        ctx,
        fixture(ctx).clients.tlsBound,
        fixture(ctx).strangers.untrustedCa,
        'PAR, untrusted chain',
      ),
  },
  {
    group: GROUP,
    id: 'mtls-auth-wrong-subject',
    title: 'tls_client_auth with a trusted certificate of another subject → invalid_client',
    expect: 'fail',
    async run(ctx) {
      const f = fixture(ctx);
      await parRejected(ctx, f.clients.tlsDpop, f.strangers.trustedCa, 'PAR, other subject DN');
      await parRejected(ctx, f.clients.tlsBound, f.strangers.trustedCa, 'PAR, other SAN');
    },
  },
  {
    group: GROUP,
    id: 'mtls-self-signed-unregistered',
    title: 'self_signed_tls_client_auth with a certificate not in the client jwks → invalid_client',
    expect: 'fail',
    async run(ctx) {
      const f = fixture(ctx);
      await parRejected(
        ctx,
        f.clients.selfSignedBound,
        f.strangers.selfSigned,
        'PAR, unregistered certificate',
      );
      await parRejected(ctx, f.clients.selfSignedBound, null, 'PAR without a certificate');
    },
  },
  {
    group: GROUP,
    id: 'mtls-token-no-certificate',
    title: 'code exchange of a certificate-bound client without a certificate (no holder-of-key) → fail',
    expect: 'fail',
    async run(ctx) {
      const f = fixture(ctx);
      const c = f.clients.privateKeyJwtBound;
      const k = await code(ctx, c);
      await oauthRejects(
        redeem(k, await rpFor(f, ctx, c, null)),
        ['invalid_grant', 'invalid_request'],
        'code exchange without a certificate',
      );
    },
  },
  {
    group: GROUP,
    id: 'mtls-token-dpop-and-certificate',
    title:
      'code exchange of a certificate-bound client with a DPoP proof too (two constraints) → invalid_request',
    expect: 'fail',
    async run(ctx) {
      const c = fixture(ctx).clients.privateKeyJwtBound;
      const k = await code(ctx, c);
      const dpop = oidc.getDPoPHandle(k.config, await oidc.randomDPoPKeyPair('ES256'));
      await oauthRejects(redeem(k, k.config, dpop), ['invalid_request'], 'code exchange with DPoP and mTLS');
    },
  },
  {
    group: GROUP,
    id: 'mtls-refresh-same-certificate',
    title: 'refresh over the same certificate → a token bound to it; the refresh token is not rotated',
    expect: 'accept',
    async run(ctx) {
      const c = fixture(ctx).clients.privateKeyJwtBound;
      const { config, tokens } = await bound(ctx);
      const refreshed = await oidc.refreshTokenGrant(config, tokens.refresh_token!);
      check(
        refreshed.refresh_token === undefined || refreshed.refresh_token === tokens.refresh_token,
        'the refresh token was rotated',
      );
      status(await boundRead(ctx, refreshed.access_token, c.cert), 200, 'read API with the refreshed token');
      boundRejection(
        await boundRead(ctx, refreshed.access_token, fixture(ctx).strangers.trustedCa),
        { status: 401, code: 'invalid_token' },
        'refreshed token over another certificate',
      );
    },
  },
  {
    group: GROUP,
    id: 'mtls-refresh-other-certificate',
    title: 'refresh of a certificate-bound refresh token over another certificate → invalid_grant',
    expect: 'fail',
    async run(ctx) {
      const f = fixture(ctx);
      const { tokens } = await bound(ctx);
      const other = await rpFor(f, ctx, f.clients.privateKeyJwtBound, f.strangers.trustedCa);
      await oauthRejects(
        oidc.refreshTokenGrant(other, tokens.refresh_token!),
        ['invalid_grant'],
        'refresh over another certificate',
      );
    },
  },
  boundTokenRefused(
    'mtls-resource-other-certificate',
    'certificate-bound token at the resource over another certificate → 401',
    (f) => f.strangers.selfSigned,
    {},
    { status: 401, code: 'invalid_token' },
  ),
  boundTokenRefused(
    'mtls-resource-no-certificate',
    'certificate-bound token at the resource without a certificate → 401',
    () => undefined,
    {},
    { status: 401, code: 'invalid_token' },
  ),
  boundTokenRefused(
    'mtls-resource-dpop-scheme',
    'certificate-bound token presented with the DPoP scheme → 401',
    (f) => f.clients.privateKeyJwtBound.cert,
    { scheme: 'DPoP' },
    { status: 401, code: 'invalid_token' },
  ),
  boundTokenRefused(
    'mtls-resource-with-dpop-proof',
    'certificate-bound token with a DPoP proof beside it (two constraints) → 400 invalid_request',
    (f) => f.clients.privateKeyJwtBound.cert,
    { dpop: 'eyJhbGciOiJFUzI1NiJ9.e30.AAAA' },
    { status: 400, code: 'invalid_request' },
  ),
  {
    group: GROUP,
    id: 'mtls-userinfo-other-certificate',
    title: 'certificate-bound token at userinfo (mTLS alias) over another certificate → 401',
    expect: 'fail',
    async run(ctx) {
      const f = fixture(ctx);
      const { tokens } = await bound(ctx);
      const res = await boundRead(ctx, tokens.access_token, f.strangers.trustedCa, {
        url: `${f.origin}/me`,
      });
      if (res.status !== 401 || res.body?.error !== 'invalid_token')
        throw new CheckFailure(
          `userinfo over another certificate: expected 401 invalid_token, got ${describe(res)}`,
        );
      status(
        await boundRead(ctx, tokens.access_token, f.clients.privateKeyJwtBound.cert, {
          url: `${f.origin}/me`,
        }),
        200,
        'userinfo over the bound certificate',
      );
    },
  },
];
