/**
 * Group "mTLS (RFC 8705)": the checks specific to the mTLS variants, beside the base groups that run
 * under every variant — the mTLS methods and `mtls_endpoint_aliases` in discovery; client
 * authentication by certificate (tls_client_auth: chain and registered subject; self-signed: the
 * certificate in the client's jwks; another client's certificate); one sender constraint per token
 * (a DPoP proof beside a certificate binding fails); and the resource server's holder-of-key check of
 * certificate-bound tokens (another certificate of the same client, none, the DPoP scheme or header,
 * userinfo). The mTLS equivalents of the token endpoint rules are in group "Token endpoint".
 */
import type { TestCert } from '../../test/support/certificates.ts';
import type { ClientIdentity, HttpResult } from '../lib/client.ts';
import type { CheckContext } from '../lib/context.ts';
import { CheckFailure, check, describe, equal, oauthError, status } from '../lib/expect.ts';
import type { MtlsFixture } from '../lib/mtls.ts';
import { BOTH_FLOWS, CERTIFICATE_AUTH_ONLY, type Check, usesMtls } from '../lib/types.ts';

const GROUP = 'mTLS (RFC 8705)';
const INVALID_CLIENT = { status: [400, 401], error: 'invalid_client' };

/** PAR for `client` presenting `cert` (null: none): must fail client authentication. */
async function parRejected(
  ctx: CheckContext,
  client: ClientIdentity,
  cert: TestCert | null,
  what: string,
): Promise<void> {
  const { res } = await ctx.pushRaw({ client, certificate: cert });
  oauthError(res, INVALID_CLIENT, what);
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

/** The shared certificate-bound token at the read API, presented as given, must be refused so. */
function boundTokenRefused(
  id: string,
  title: string,
  present: (ctx: CheckContext) => {
    certificate?: TestCert | null;
    scheme?: string;
    rawProof?: string;
  },
  expected: { status: number; code: string },
): Check {
  return {
    group: GROUP,
    id,
    title,
    expect: 'fail',
    variants: { senderConstraint: ['mtls'] },
    async run(ctx) {
      const tokens = await ctx.shared();
      boundRejection(await ctx.resource(tokens, present(ctx)), expected, title);
    },
  };
}

function impostorOf(ctx: CheckContext): TestCert {
  const impostor = ctx.mtls().clientsFor(ctx.variant)?.impostor;
  check(impostor, 'no certificate from an untrusted CA for this variant');
  return impostor;
}

const fixture = (ctx: CheckContext): MtlsFixture => ctx.mtls();

export const mtlsChecks: Check[] = [
  {
    group: GROUP,
    id: 'mtls-discovery',
    title: 'discovery: mTLS methods, certificate-bound tokens, mtls_endpoint_aliases on https',
    expect: 'accept',
    when: usesMtls,
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
  {
    group: GROUP,
    id: 'mtls-auth-no-certificate',
    title: 'certificate-authenticated client at PAR without a client certificate → invalid_client',
    expect: 'fail',
    variants: CERTIFICATE_AUTH_ONLY,
    run: (ctx) => parRejected(ctx, ctx.a, null, 'PAR without a certificate'),
  },
  {
    group: GROUP,
    id: 'mtls-auth-other-clients-certificate',
    title: "PAR as this client presenting another client's certificate → invalid_client",
    expect: 'fail',
    variants: CERTIFICATE_AUTH_ONLY,
    run: (ctx) => parRejected(ctx, ctx.a, ctx.b.certificate!, "PAR with client b's certificate"),
  },
  {
    group: GROUP,
    id: 'mtls-auth-second-certificate',
    title: 'PAR presenting a second certificate the client registered (same subject / in its jwks) → accept',
    expect: 'accept',
    variants: CERTIFICATE_AUTH_ONLY,
    async run(ctx) {
      await ctx.par({ certificate: ctx.a.otherCertificate! });
    },
  },
  {
    group: GROUP,
    id: 'mtls-auth-san-dns',
    title: 'tls_client_auth of a client registered by its DNS SAN (tls_client_auth_san_dns) → accept',
    expect: 'accept',
    variants: { clientAuth: ['tls_client_auth'] },
    async run(ctx) {
      // `a` is registered by its subject DN (every other check), `b` by its SAN.
      await ctx.par({ client: ctx.b });
    },
  },
  {
    group: GROUP,
    id: 'mtls-auth-untrusted-ca',
    title: 'tls_client_auth with the right subject and SAN from an untrusted CA → invalid_client',
    expect: 'fail',
    variants: { clientAuth: ['tls_client_auth'] },
    run: (ctx) => parRejected(ctx, ctx.a, impostorOf(ctx), 'PAR, untrusted chain'),
  },
  {
    group: GROUP,
    id: 'mtls-auth-wrong-subject',
    title:
      'tls_client_auth with a trusted certificate of another subject (DN and SAN clients) → invalid_client',
    expect: 'fail',
    variants: { clientAuth: ['tls_client_auth'] },
    async run(ctx) {
      const stranger = fixture(ctx).strangers.trustedCa;
      await parRejected(ctx, ctx.a, stranger, 'PAR, other subject DN');
      await parRejected(ctx, ctx.b, stranger, 'PAR, other SAN');
    },
  },
  {
    group: GROUP,
    id: 'mtls-self-signed-unregistered',
    title: 'self_signed_tls_client_auth with a certificate not in the client jwks → invalid_client',
    expect: 'fail',
    variants: { clientAuth: ['self_signed_tls_client_auth'] },
    run: (ctx) => parRejected(ctx, ctx.a, fixture(ctx).strangers.selfSigned, 'PAR, unregistered certificate'),
  },
  {
    group: GROUP,
    id: 'mtls-token-dpop-and-certificate',
    title:
      'code exchange of a certificate-bound client with a DPoP proof too (two constraints) → invalid_request',
    expect: 'fail',
    variants: { senderConstraint: ['mtls'] },
    async run(ctx) {
      const auth = await ctx.authorize();
      const res = await ctx.redeem(auth, { dpopKey: auth.dpopKey });
      oauthError(res, { status: 400, error: 'invalid_request' }, 'code exchange with DPoP and mTLS');
      check(res.body?.access_token === undefined, 'an access token was issued');
    },
  },
  {
    group: GROUP,
    id: 'mtls-token-type',
    title: 'certificate-bound tokens: token_type Bearer (RFC 8705 §3), read API over the certificate',
    expect: 'accept',
    variants: { senderConstraint: ['mtls'], flow: BOTH_FLOWS },
    async run(ctx) {
      const tokens = await ctx.shared();
      equal(tokens.tokenType, 'bearer', 'token_type');
      status(await ctx.resource(tokens), 200, 'read API over the bound certificate');
    },
  },
  boundTokenRefused(
    'mtls-resource-other-certificate',
    "certificate-bound token at the resource over the client's other (valid) certificate → 401",
    (ctx) => ({ certificate: ctx.a.otherCertificate! }),
    { status: 401, code: 'invalid_token' },
  ),
  boundTokenRefused(
    'mtls-resource-stranger-certificate',
    'certificate-bound token at the resource over an unknown self-signed certificate → 401',
    (ctx) => ({ certificate: fixture(ctx).strangers.selfSigned }),
    { status: 401, code: 'invalid_token' },
  ),
  boundTokenRefused(
    'mtls-resource-no-certificate',
    'certificate-bound token at the resource without a certificate → 401',
    () => ({ certificate: null }),
    { status: 401, code: 'invalid_token' },
  ),
  boundTokenRefused(
    'mtls-resource-dpop-scheme',
    'certificate-bound token presented with the DPoP scheme → 401',
    () => ({ scheme: 'DPoP' }),
    { status: 401, code: 'invalid_token' },
  ),
  boundTokenRefused(
    'mtls-resource-with-dpop-proof',
    'certificate-bound token with a DPoP proof beside it (two constraints) → 400 invalid_request',
    () => ({ rawProof: 'eyJhbGciOiJFUzI1NiJ9.e30.AAAA' }),
    { status: 400, code: 'invalid_request' },
  ),
  {
    group: GROUP,
    id: 'mtls-userinfo-other-certificate',
    title: 'certificate-bound token at userinfo (mTLS alias): 200 over its certificate, 401 over another',
    expect: 'fail',
    variants: { senderConstraint: ['mtls'] },
    async run(ctx) {
      const tokens = await ctx.shared();
      const userinfo = String(ctx.via(ctx.a).metadata.userinfo_endpoint);
      const other = await ctx.resource(tokens, { url: userinfo, certificate: ctx.a.otherCertificate! });
      if (other.status !== 401 || other.body?.error !== 'invalid_token')
        throw new CheckFailure(
          `userinfo over another certificate: expected 401 invalid_token, got ${describe(other)}`,
        );
      status(await ctx.resource(tokens, { url: userinfo }), 200, 'userinfo over the bound certificate');
    },
  },
  {
    group: GROUP,
    id: 'mtls-dpop-token-certificate-binds-nothing',
    title:
      'certificate-authenticated DPoP client: its token as Bearer over its certificate at the mTLS origin → 401',
    expect: 'fail',
    variants: { ...CERTIFICATE_AUTH_ONLY, senderConstraint: ['dpop'] },
    async run(ctx) {
      const tokens = await ctx.shared();
      equal(tokens.tokenType, 'dpop', 'token_type');
      const res = await ctx.resource(tokens, {
        url: `${fixture(ctx).origin}/api/v1/accounts`,
        scheme: 'Bearer',
        rawProof: null,
        certificate: ctx.a.certificate!,
      });
      // The DPoP client's token needs its proof whatever certificate comes along.
      check(res.status === 401, `expected 401, got ${describe(res)}`);
    },
  },
];
