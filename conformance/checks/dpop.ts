/**
 * Checklist group "DPoP" (RFC 9449), in the DPoP variants (any client authentication): the code
 * bound to the key named at PAR, and every proof rule tried both at the token endpoint (a
 * refresh_token grant, which a rejected proof leaves intact; the mTLS alias for a client that
 * authenticates with its certificate) and at the resource server (GET /api/v1/accounts).
 */
import {
  ath,
  clientAuthFields,
  type DpopKey,
  dpopProof,
  generateDpopKey,
  now,
  type ProofOptions,
  sendRawHeaders,
} from '../lib/client.ts';
import type { CheckContext, Tokens } from '../lib/context.ts';
import {
  CheckFailure,
  check,
  describe,
  equal,
  oauthError,
  resourceRejection,
  status,
} from '../lib/expect.ts';
import type { Check } from '../lib/types.ts';

const GROUP = 'DPoP';
const DPOP: Check['variants'] = { senderConstraint: ['dpop'] };

type Where = 'token' | 'resource';

interface ProofCase {
  id: string;
  title: string;
  expect: 'accept' | 'fail';
  at: Where[];
  /**
   * The DPoP header line(s) to send, from a valid proof's options for this request (`base`) and
   * the token set's key. Return several values to send several header lines.
   */
  proof(key: DpopKey, base: ProofOptions, ctx: CheckContext, where: Where): Promise<string | string[]>;
  /** Errors acceptable at the token endpoint; default invalid_dpop_proof. */
  tokenErrors?: string[];
}

const iatHourErrors = ['invalid_dpop_proof', 'use_dpop_nonce'];

function upperScheme(url: string): string {
  return url.replace(/^https:/, 'HTTPS:');
}

function upperHost(url: string): string {
  const u = new URL(url);
  return `${u.protocol}//${u.host.toUpperCase()}${u.pathname}`;
}

function explicitDefaultPort(url: string, ctx: CheckContext): string {
  const u = new URL(url);
  if (u.port) ctx.notApplicable(`the issuer has an explicit port (${u.port}); no default port can be added`);
  return `${u.protocol}//${u.hostname}:443${u.pathname}`;
}

const sign = (key: DpopKey, base: ProofOptions, changes: Partial<ProofOptions> = {}) =>
  dpopProof(key, { ...base, ...changes });

const PROOF_CASES: ProofCase[] = [
  {
    id: 'multiple-headers',
    title: 'two DPoP header lines',
    expect: 'fail',
    at: ['token', 'resource'],
    proof: async (key, base) => [await sign(key, base), await sign(key, base)],
  },
  {
    id: 'malformed',
    title: 'DPoP header that is not a JWT',
    expect: 'fail',
    at: ['token', 'resource'],
    proof: async () => 'not-a-jwt',
  },
  ...(['typ', 'alg', 'jwk'] as const).map(
    (member): ProofCase => ({
      id: `no-${member}`,
      title: `proof header without ${member}`,
      expect: 'fail',
      at: ['token', 'resource'],
      proof: (key, base) => sign(key, base, { header: { [member]: undefined } }),
    }),
  ),
  ...(['jti', 'htm', 'htu', 'iat'] as const).map(
    (claim): ProofCase => ({
      id: `no-${claim}`,
      title: `proof without ${claim}`,
      expect: 'fail',
      at: ['token', 'resource'],
      proof: (key, base) => sign(key, base, { claims: { [claim]: undefined } }),
    }),
  ),
  {
    id: 'no-ath',
    title: 'proof without ath',
    expect: 'fail',
    at: ['resource'],
    proof: (key, base) => sign(key, base, { claims: { ath: undefined } }),
  },
  {
    id: 'typ-jwt',
    title: 'proof typ "JWT" instead of "dpop+jwt"',
    expect: 'fail',
    at: ['token', 'resource'],
    proof: (key, base) => sign(key, base, { header: { typ: 'JWT' } }),
  },
  {
    id: 'rs256',
    title: 'proof signed with RS256',
    expect: 'fail',
    at: ['token', 'resource'],
    proof: async (_key, base) => sign(await generateDpopKey('RS256'), base),
  },
  {
    id: 'alg-none',
    title: 'unsigned proof (alg none)',
    expect: 'fail',
    at: ['token', 'resource'],
    proof: (key, base) => sign(key, base, { header: { alg: 'none' }, signature: 'none' }),
  },
  {
    id: 'bad-signature',
    title: 'proof with an invalid signature',
    expect: 'fail',
    at: ['token', 'resource'],
    proof: (key, base) => sign(key, base, { signature: 'corrupt' }),
  },
  {
    id: 'private-jwk',
    title: 'proof whose jwk includes the private key',
    expect: 'fail',
    at: ['token', 'resource'],
    proof: (key, base) => sign(key, base, { header: { jwk: key.privateJwk } }),
  },
  {
    id: 'wrong-htm',
    title: 'htm of another method',
    expect: 'fail',
    at: ['token', 'resource'],
    proof: (key, base) => sign(key, base, { htm: base.htm === 'GET' ? 'POST' : 'GET' }),
  },
  {
    id: 'other-htu',
    title: 'htu of another URL',
    expect: 'fail',
    at: ['token', 'resource'],
    proof: (key, base, ctx, where) =>
      sign(key, base, { htu: where === 'token' ? ctx.accountsUrl : ctx.target.metadata.token_endpoint }),
  },
  {
    id: 'iat-plus-1h',
    title: 'iat one hour ahead',
    expect: 'fail',
    at: ['token', 'resource'],
    proof: (key, base) => sign(key, base, { iat: now() + 3600 }),
    tokenErrors: iatHourErrors,
  },
  {
    id: 'iat-minus-1h',
    title: 'iat one hour ago',
    expect: 'fail',
    at: ['token', 'resource'],
    proof: (key, base) => sign(key, base, { iat: now() - 3600 }),
    tokenErrors: iatHourErrors,
  },
  {
    id: 'wrong-ath',
    title: 'ath of another access token',
    expect: 'fail',
    at: ['resource'],
    proof: (key, base) => sign(key, base, { claims: { ath: ath('another-access-token') } }),
  },
  {
    id: 'other-key',
    title: 'valid proof of a key the token is not bound to',
    expect: 'fail',
    at: ['resource'],
    proof: async (_key, base) => sign(await generateDpopKey(), base),
  },
  {
    id: 'iat-10s-past',
    title: 'iat 10 s ago',
    expect: 'accept',
    at: ['token', 'resource'],
    proof: (key, base) => sign(key, base, { iat: now() - 10 }),
  },
  {
    id: 'iat-10s-future',
    title: 'iat 10 s ahead',
    expect: 'accept',
    at: ['token', 'resource'],
    proof: (key, base) => sign(key, base, { iat: now() + 10 }),
  },
  {
    id: 'extra-claims',
    title: 'extra claims and header members in the proof',
    expect: 'accept',
    at: ['token', 'resource'],
    proof: (key, base) =>
      sign(key, base, { claims: { extra: 'value', n: 1, nested: { a: [1, 2] } }, header: { cty: 'x-test' } }),
  },
  {
    id: 'htu-query',
    title: 'htu with a query string',
    expect: 'accept',
    at: ['token', 'resource'],
    proof: (key, base) => sign(key, base, { htu: `${base.htu}?foo=bar` }),
  },
  {
    id: 'htu-fragment',
    title: 'htu with a fragment',
    expect: 'accept',
    at: ['token', 'resource'],
    proof: (key, base) => sign(key, base, { htu: `${base.htu}#section` }),
  },
  {
    id: 'htu-scheme-case',
    title: 'htu scheme in upper case',
    expect: 'accept',
    at: ['token', 'resource'],
    proof: (key, base) => sign(key, base, { htu: upperScheme(base.htu) }),
  },
  {
    id: 'htu-host-case',
    title: 'htu host in upper case',
    expect: 'accept',
    at: ['token', 'resource'],
    proof: (key, base) => sign(key, base, { htu: upperHost(base.htu) }),
  },
  {
    id: 'htu-default-port',
    title: 'htu with the explicit default port :443',
    expect: 'accept',
    at: ['token', 'resource'],
    proof: (key, base, ctx) => sign(key, base, { htu: explicitDefaultPort(base.htu, ctx) }),
  },
];

/** The token endpoint the tokens' client uses (the mTLS alias when it presents a certificate). */
const tokenEndpoint = (ctx: CheckContext, tokens: Tokens) => ctx.via(tokens.client).metadata.token_endpoint;

/** A refresh_token grant at the token endpoint with exactly these DPoP header lines. */
async function refreshWith(ctx: CheckContext, tokens: Tokens, proofs: string[]) {
  const hub = ctx.via(tokens.client);
  const form = {
    grant_type: 'refresh_token',
    refresh_token: tokens.refreshToken,
    ...(await clientAuthFields(hub, tokens.client)),
  };
  return sendRawHeaders(hub, hub.metadata.token_endpoint, {
    method: 'POST',
    headers: { dpop: proofs },
    form,
  });
}

/** GET /api/v1/accounts with exactly these DPoP header lines. */
async function resourceWith(ctx: CheckContext, tokens: Tokens, proofs: string[], scheme = 'DPoP') {
  return sendRawHeaders(ctx.target, ctx.accountsUrl, {
    method: 'GET',
    headers: { authorization: `${scheme} ${tokens.accessToken}`, dpop: proofs },
  });
}

function tokenEndpointRefusal(res: Awaited<ReturnType<typeof refreshWith>>, errors: string[], what: string) {
  oauthError(res, { status: 400, error: errors }, what);
  if (res.body?.error === 'use_dpop_nonce')
    check(res.headers.get('dpop-nonce'), `${what}: use_dpop_nonce without a DPoP-Nonce header`);
  check(res.body?.access_token === undefined, `${what}: tokens were issued`);
}

function proofCheck(c: ProofCase, where: Where): Check {
  const at = where === 'token' ? 'token endpoint' : 'resource';
  return {
    group: GROUP,
    id: `dpop-${where === 'token' ? 'token' : 'rs'}-${c.id}`,
    title: `${at}: ${c.title}`,
    expect: c.expect,
    variants: DPOP,
    async run(ctx) {
      const tokens = await ctx.shared();
      const base: ProofOptions =
        where === 'token'
          ? { htm: 'POST', htu: tokenEndpoint(ctx, tokens) }
          : { htm: 'GET', htu: ctx.accountsUrl, accessToken: tokens.accessToken };
      const made = await c.proof(tokens.dpopKey, base, ctx, where);
      const proofs = Array.isArray(made) ? made : [made];
      const res =
        where === 'token' ? await refreshWith(ctx, tokens, proofs) : await resourceWith(ctx, tokens, proofs);
      const what = `${at} with ${c.title}`;
      if (c.expect === 'accept') {
        if (res.status !== 200) throw new CheckFailure(`${what}: expected 200, got ${describe(res)}`);
        if (where === 'token') equal(String(res.body?.token_type).toLowerCase(), 'dpop', 'token_type');
      } else if (where === 'token') {
        tokenEndpointRefusal(res, c.tokenErrors ?? ['invalid_dpop_proof'], what);
      } else {
        resourceRejection(res, what);
      }
    },
  };
}

export const dpopChecks: Check[] = [
  {
    group: GROUP,
    id: 'dpop-jkt-mismatch',
    title: 'dpop_jkt at PAR ≠ key of the token request proof',
    expect: 'fail',
    variants: DPOP,
    async run(ctx) {
      const named = await generateDpopKey();
      const auth = await ctx.authorize({ dpopKey: null, params: { dpop_jkt: named.jkt } });
      const res = await ctx.redeem(auth, { dpopKey: await generateDpopKey() });
      oauthError(
        res,
        { status: 400, error: 'invalid_grant' },
        'token request with a key other than dpop_jkt',
      );
      check(res.body?.access_token === undefined, 'tokens were issued');
    },
  },
  {
    group: GROUP,
    id: 'dpop-par-token-keys-differ',
    title: 'PAR proof and token request proof by different keys',
    expect: 'fail',
    variants: DPOP,
    async run(ctx) {
      const auth = await ctx.authorize();
      const res = await ctx.redeem(auth, { dpopKey: await generateDpopKey() });
      oauthError(
        res,
        { status: 400, error: 'invalid_grant' },
        'token request proof by another key than the PAR proof',
      );
    },
  },
  {
    group: GROUP,
    id: 'dpop-token-replayed-jti',
    title: 'token endpoint: the same proof (jti) twice',
    expect: 'fail',
    variants: DPOP,
    async run(ctx) {
      const tokens = await ctx.shared();
      const proof = await dpopProof(tokens.dpopKey, { htm: 'POST', htu: tokenEndpoint(ctx, tokens) });
      status(await refreshWith(ctx, tokens, [proof]), 200, 'first use of the proof');
      // RFC 9449 §11.1 fixes no error code for a replay; oidc-provider reports invalid_grant here.
      tokenEndpointRefusal(
        await refreshWith(ctx, tokens, [proof]),
        ['invalid_dpop_proof', 'invalid_grant'],
        'replayed proof',
      );
    },
  },
  ...PROOF_CASES.filter((c) => c.at.includes('token')).map((c) => proofCheck(c, 'token')),
  ...PROOF_CASES.filter((c) => c.at.includes('resource')).map((c) => proofCheck(c, 'resource')),
  {
    group: GROUP,
    id: 'dpop-rs-replayed-jti',
    title: 'resource: the same proof (jti) twice',
    expect: 'fail',
    variants: DPOP,
    async run(ctx) {
      const tokens = await ctx.shared();
      const proof = await dpopProof(tokens.dpopKey, {
        htm: 'GET',
        htu: ctx.accountsUrl,
        accessToken: tokens.accessToken,
      });
      status(await resourceWith(ctx, tokens, [proof]), 200, 'first use of the proof');
      resourceRejection(await resourceWith(ctx, tokens, [proof]), 'replayed proof');
    },
  },
  {
    group: GROUP,
    id: 'dpop-rs-bearer-scheme',
    title: 'resource: DPoP-bound token presented as Bearer',
    expect: 'fail',
    variants: DPOP,
    async run(ctx) {
      const tokens = await ctx.shared();
      const proof = await dpopProof(tokens.dpopKey, {
        htm: 'GET',
        htu: ctx.accountsUrl,
        accessToken: tokens.accessToken,
      });
      resourceRejection(await resourceWith(ctx, tokens, [proof], 'Bearer'), 'Bearer scheme', [
        'invalid_token',
      ]);
    },
  },
  {
    group: GROUP,
    id: 'dpop-rs-bearer-no-proof',
    title: 'resource: DPoP-bound token presented as Bearer without a DPoP header',
    expect: 'fail',
    variants: DPOP,
    async run(ctx) {
      resourceRejection(
        await ctx.resource(await ctx.shared(), { scheme: 'Bearer', rawProof: null }),
        'Bearer scheme, no proof',
        ['invalid_token'],
      );
    },
  },
  {
    group: GROUP,
    id: 'dpop-rs-header-name-case',
    title: 'resource: header sent as "DPOP" (header names are case-insensitive)',
    expect: 'accept',
    variants: DPOP,
    async run(ctx) {
      const tokens = await ctx.shared();
      const proof = await dpopProof(tokens.dpopKey, {
        htm: 'GET',
        htu: ctx.accountsUrl,
        accessToken: tokens.accessToken,
      });
      const res = await sendRawHeaders(ctx.target, ctx.accountsUrl, {
        method: 'GET',
        headers: { authorization: `DPoP ${tokens.accessToken}`, DPOP: proof },
      });
      status(res, 200, 'DPOP header name');
    },
  },
  {
    group: GROUP,
    id: 'dpop-rs-request-query',
    title: 'resource: request with a query string, htu without it',
    expect: 'accept',
    variants: DPOP,
    async run(ctx) {
      status(
        await ctx.resource(await ctx.shared(), {
          url: `${ctx.accountsUrl}?page=1`,
          proof: { htu: ctx.accountsUrl },
        }),
        200,
        'query in the request only',
      );
    },
  },
  {
    group: GROUP,
    id: 'dpop-rs-no-proof',
    title: 'resource: DPoP-bound token without a DPoP header',
    expect: 'fail',
    variants: DPOP,
    async run(ctx) {
      resourceRejection(await ctx.resource(await ctx.shared(), { rawProof: null }), 'no DPoP header');
    },
  },
  {
    group: GROUP,
    id: 'dpop-rs-scheme-lowercase',
    title: 'resource: "Authorization: dpop …" (scheme is case-insensitive)',
    expect: 'accept',
    variants: DPOP,
    async run(ctx) {
      status(await ctx.resource(await ctx.shared(), { scheme: 'dpop' }), 200, 'lower-case DPoP scheme');
    },
  },
];
