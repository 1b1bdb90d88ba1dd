/**
 * Checklist group "Message signing plan" (FAPI 2.0 Message Signing): signed request objects at PAR
 * with every rule of the request-object checklist, JARM, signed introspection; and the group
 * "Client registration" (RFC 7591/7592 guarded by initial access tokens or software statements, with
 * the variant's client authentication and sender constraint). The signed-request client is the
 * variant's (JAR required, JARM only: the hub's demo-signed-aggregator for private_key_jwt + DPoP),
 * the introspecting one the hub's demo-resource-server; openid-client drives the happy paths.
 */
import { randomUUID, X509Certificate } from 'node:crypto';
import {
  createLocalJWKSet,
  decodeJwt,
  decodeProtectedHeader,
  generateKeyPair,
  jwtVerify,
  SignJWT,
} from 'jose';
import * as oidc from 'openid-client';
import { createSelfSigned } from '../../test/support/certificates.ts';
import {
  type ClientIdentity,
  clientAuthFields,
  generateDpopKey,
  now,
  type Pkce,
  pkce,
  pushAuthorizationRequest,
  requestObject,
  send,
  sendJson,
} from '../lib/client.ts';
import { type CheckContext, expectedTokenType } from '../lib/context.ts';
import { check, describe, equal, oauthError, status } from '../lib/expect.ts';
import { BOTH_FLOWS, type Check, type Variant } from '../lib/types.ts';

const GROUP = 'Message signing plan';
const REGISTRATION = 'Client registration';
const FAPI_ALGS = ['PS256', 'ES256', 'EdDSA'];

function signedClient(ctx: CheckContext): ClientIdentity {
  return ctx.signed ?? ctx.notApplicable('the hub has no demo-signed-aggregator client file');
}

/** A fresh DPoP key for a DPoP client's request, none for a certificate-bound one. */
async function proofKey(c: ClientIdentity) {
  return c.senderConstraint === 'dpop' ? { dpop: await generateDpopKey() } : {};
}

function resourceServer(ctx: CheckContext): ClientIdentity {
  return ctx.target.resourceServer ?? ctx.notApplicable('the hub has no demo-resource-server client file');
}

/** Authorization parameters inside a request object (JARM: response_mode jwt). */
function inside(c: ClientIdentity, p: Pkce, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    response_type: 'code',
    response_mode: 'jwt',
    redirect_uri: c.redirectUri,
    scope: 'openid accounts',
    code_challenge: p.challenge,
    code_challenge_method: 'S256',
    state: `state-${randomUUID()}`,
    nonce: `nonce-${randomUUID()}`,
    ...extra,
  };
}

async function pushSigned(ctx: CheckContext, request: string, outside: Record<string, string> = {}) {
  const c = signedClient(ctx);
  return pushAuthorizationRequest(ctx.via(c), c, { request, ...outside }, await proofKey(c));
}

/** A request object built from `claims` (over the defaults) that PAR must refuse with `error`. */
async function refused(ctx: CheckContext, claims: Record<string, unknown>, error: string, what: string) {
  const c = signedClient(ctx);
  const res = await pushSigned(ctx, await requestObject(ctx.issuer, c, { ...inside(c, pkce()), ...claims }));
  oauthError(res, { status: 400, error }, what);
}

/** A hand-built request object PAR must refuse with invalid_request_object. */
async function objectRefused(ctx: CheckContext, jwt: string, what: string) {
  oauthError(await pushSigned(ctx, jwt), { status: 400, error: 'invalid_request_object' }, what);
}

async function accepted(ctx: CheckContext, claims: Record<string, unknown>, what: string) {
  const c = signedClient(ctx);
  const res = await pushSigned(ctx, await requestObject(ctx.issuer, c, { ...inside(c, pkce()), ...claims }));
  status(res, 201, what);
}

/** Request-object claims with the defaults requestObject() would add (for hand-signed objects). */
function claimsFor(ctx: CheckContext, c: ClientIdentity): Record<string, unknown> {
  const t = now();
  return {
    iss: c.clientId,
    aud: ctx.issuer,
    client_id: c.clientId,
    iat: t,
    nbf: t,
    exp: t + 60,
    jti: randomUUID(),
    ...inside(c, pkce()),
  };
}

const b64 = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url');

async function hubKeys(ctx: CheckContext) {
  const res = await ctx.target.fetch(ctx.target.metadata.jwks_uri);
  return createLocalJWKSet((await res.json()) as { keys: [] });
}

async function introspect(ctx: CheckContext, caller: ClientIdentity, token: string, accept: string) {
  const hub = ctx.via(caller);
  const endpoint = hub.metadata.introspection_endpoint;
  check(typeof endpoint === 'string', 'discovery has no introspection_endpoint');
  return send(hub, endpoint, {
    headers: { accept },
    form: { token, ...(await clientAuthFields(hub, caller)) },
  });
}

function registrationEndpoint(ctx: CheckContext): string {
  const endpoint = ctx.target.metadata.registration_endpoint;
  check(typeof endpoint === 'string', 'discovery has no registration_endpoint');
  return endpoint;
}

/** FAPI-conformant registration metadata for the variant's authentication and binding, with fresh keys. */
async function registrationMetadata(name: string, v: Variant): Promise<Record<string, unknown>> {
  const { publicKey } = await generateKeyPair('ES256', { extractable: true });
  const keys: Record<string, unknown>[] = [
    { ...(await crypto.subtle.exportKey('jwk', publicKey)), kid: `${name}-1`, alg: 'ES256', use: 'sig' },
  ];
  const auth: Record<string, unknown> = { token_endpoint_auth_method: v.clientAuth };
  if (v.clientAuth === 'private_key_jwt') auth.token_endpoint_auth_signing_alg = 'ES256';
  else if (v.clientAuth === 'tls_client_auth')
    auth.tls_client_auth_subject_dn = `CN=${name}, O=Kakehashi conformance, C=JP`;
  else {
    const cert = await createSelfSigned({ subject: `CN=${name}` });
    const { x, y, crv, kty } = (await crypto.subtle.exportKey(
      'jwk',
      await crypto.subtle.importKey(
        'spki',
        new X509Certificate(cert.certPem).publicKey.export({ format: 'der', type: 'spki' }),
        { name: 'ECDSA', namedCurve: 'P-256' },
        true,
        ['verify'],
      ),
    )) as JsonWebKey;
    keys.push({ kty, crv, x, y, use: 'sig', x5c: [cert.x5c] });
  }
  return {
    client_name: name,
    redirect_uris: [`https://${name}.example/cb`],
    grant_types: ['authorization_code', 'refresh_token'],
    ...auth,
    ...(v.senderConstraint === 'dpop'
      ? { dpop_bound_access_tokens: true }
      : { tls_client_certificate_bound_access_tokens: true }),
    jwks: { keys },
  };
}

export const messageSigningChecks: Check[] = [
  {
    group: GROUP,
    id: 'msg-par-unsigned',
    title: 'unsigned request at PAR from a client registered for signed requests',
    expect: 'fail',
    async run(ctx) {
      const c = signedClient(ctx);
      const params = Object.fromEntries(Object.entries(inside(c, pkce())).map(([k, v]) => [k, String(v)]));
      const res = await pushAuthorizationRequest(ctx.via(c), c, params, await proofKey(c));
      oauthError(res, { status: 400, error: 'invalid_request' }, 'plain PAR from a JAR client');
    },
  },
  {
    group: GROUP,
    id: 'msg-ro-no-exp',
    title: 'request object without exp',
    expect: 'fail',
    run: (ctx) => refused(ctx, { exp: undefined }, 'invalid_request_object', 'request object without exp'),
  },
  {
    group: GROUP,
    id: 'msg-ro-no-nbf',
    title: 'request object without nbf',
    expect: 'fail',
    run: (ctx) => refused(ctx, { nbf: undefined }, 'invalid_request_object', 'request object without nbf'),
  },
  {
    group: GROUP,
    id: 'msg-ro-expired',
    title: 'expired request object',
    expect: 'fail',
    run: (ctx) =>
      refused(ctx, { nbf: now() - 120, exp: now() - 60 }, 'invalid_request_object', 'expired request object'),
  },
  {
    group: GROUP,
    id: 'msg-ro-lifetime-over-60-min',
    title: 'request object with exp − nbf over 60 minutes',
    expect: 'fail',
    run: (ctx) =>
      refused(ctx, { nbf: now(), exp: now() + 3601 }, 'invalid_request_object', 'exp − nbf = 3601 s'),
  },
  {
    group: GROUP,
    id: 'msg-ro-nbf-over-60-min-old',
    title: 'request object with nbf more than 60 minutes in the past',
    expect: 'fail',
    run: (ctx) =>
      refused(ctx, { nbf: now() - 3700, exp: now() + 60 }, 'invalid_request_object', 'nbf 3700 s ago'),
  },
  {
    group: GROUP,
    id: 'msg-ro-nbf-8s-future',
    title: 'request object with nbf 8 s in the future',
    expect: 'accept',
    run: (ctx) => accepted(ctx, { nbf: now() + 8 }, 'nbf 8 s in the future'),
  },
  {
    group: GROUP,
    id: 'msg-ro-aud-array',
    title: 'request object aud: an array containing the issuer',
    expect: 'accept',
    run: (ctx) => accepted(ctx, { aud: [ctx.issuer, 'https://other.example'] }, 'aud array with the issuer'),
  },
  {
    group: GROUP,
    id: 'msg-ro-bad-aud',
    title: 'request object aud another server',
    expect: 'fail',
    run: (ctx) =>
      refused(ctx, { aud: 'https://other.example' }, 'invalid_request_object', 'aud of another server'),
  },
  {
    group: GROUP,
    id: 'msg-ro-rs256',
    title: 'request object signed RS256',
    expect: 'fail',
    async run(ctx) {
      const c = signedClient(ctx);
      const { privateKey } = await generateKeyPair('RS256');
      const jwt = await new SignJWT(claimsFor(ctx, c))
        .setProtectedHeader({ alg: 'RS256', kid: c.kid })
        .sign(privateKey);
      await objectRefused(ctx, jwt, 'RS256 request object');
    },
  },
  {
    group: GROUP,
    id: 'msg-ro-alg-none',
    title: 'request object with alg none',
    expect: 'fail',
    async run(ctx) {
      const jwt = `${b64({ alg: 'none' })}.${b64(claimsFor(ctx, signedClient(ctx)))}.`;
      await objectRefused(ctx, jwt, 'unsigned request object');
    },
  },
  {
    group: GROUP,
    id: 'msg-ro-bad-signature',
    title: 'request object with an invalid signature',
    expect: 'fail',
    async run(ctx) {
      const c = signedClient(ctx);
      const [h, p, s] = (await requestObject(ctx.issuer, c, inside(c, pkce()))).split('.') as [
        string,
        string,
        string,
      ];
      const sig = Buffer.from(s, 'base64url');
      sig[sig.length >> 1]! ^= 0x01;
      const jwt = `${h}.${p}.${sig.toString('base64url')}`;
      await objectRefused(ctx, jwt, 'broken signature');
    },
  },
  {
    group: GROUP,
    id: 'msg-ro-other-clients-key',
    title: "request object signed with another client's key",
    expect: 'fail',
    async run(ctx) {
      const c = signedClient(ctx);
      const jwt = await new SignJWT(claimsFor(ctx, c))
        .setProtectedHeader({ alg: ctx.a.alg, kid: c.kid })
        .sign(ctx.a.privateKey);
      await objectRefused(ctx, jwt, "client a's key");
    },
  },
  {
    group: GROUP,
    id: 'msg-ro-no-redirect-uri',
    title: 'request object without redirect_uri (sent outside only)',
    expect: 'fail',
    async run(ctx) {
      const c = signedClient(ctx);
      const res = await pushSigned(
        ctx,
        await requestObject(ctx.issuer, c, { ...inside(c, pkce()), redirect_uri: undefined }),
        {
          redirect_uri: c.redirectUri,
        },
      );
      oauthError(res, { status: 400, error: 'invalid_request' }, 'redirect_uri outside only');
    },
  },
  {
    group: GROUP,
    id: 'msg-ro-inside-governs',
    title: 'different state/nonce inside and outside the request object: the inside values govern',
    expect: 'accept',
    async run(ctx) {
      const c = signedClient(ctx);
      const p = pkce();
      const params = inside(c, p);
      const dpopKey = await generateDpopKey();
      const res = await pushAuthorizationRequest(
        ctx.via(c),
        c,
        {
          request: await requestObject(ctx.issuer, c, params),
          state: 'outside-state',
          nonce: 'outside-nonce',
        },
        c.senderConstraint === 'dpop' ? { dpop: dpopKey } : {},
      );
      status(res, 201, 'PAR with a request object');
      const url = new URL(ctx.target.metadata.authorization_endpoint);
      url.searchParams.set('client_id', c.clientId);
      url.searchParams.set('request_uri', String(res.body?.request_uri));
      const callback = await ctx.login(url, { redirectUri: c.redirectUri });
      const rp = await ctx.rp(c, dpopKey);
      oidc.useJwtResponseMode(rp.config);
      const tokens = await oidc.authorizationCodeGrant(
        rp.config,
        callback,
        {
          pkceCodeVerifier: p.verifier,
          expectedState: String(params.state),
          expectedNonce: String(params.nonce),
        },
        undefined,
        rp.options,
      );
      equal(tokens.claims()?.nonce, params.nonce, 'id_token nonce');
    },
  },
  {
    group: GROUP,
    id: 'msg-jarm-openid-client',
    title: 'JARM: openid-client (JAR + PAR, response_mode=jwt) gets a signed response with iss, aud, exp',
    expect: 'accept',
    variants: { flow: BOTH_FLOWS },
    async run(ctx) {
      const c = signedClient(ctx);
      const rp = await ctx.rp(c);
      oidc.useJwtResponseMode(rp.config);
      const verifier = oidc.randomPKCECodeVerifier();
      const state = oidc.randomState();
      const jar = await oidc.buildAuthorizationUrlWithJAR(
        rp.config,
        {
          redirect_uri: c.redirectUri,
          scope: ctx.variant.flow === 'openid' ? 'openid accounts' : 'accounts',
          response_mode: 'jwt',
          code_challenge: await oidc.calculatePKCECodeChallenge(verifier),
          code_challenge_method: 'S256',
          state,
        },
        { key: c.privateKey, kid: c.kid },
      );
      const url = await oidc.buildAuthorizationUrlWithPAR(rp.config, jar.searchParams, rp.options);
      const callback = await ctx.login(url, { redirectUri: c.redirectUri });
      const response = callback.searchParams.get('response');
      check(
        response && !callback.searchParams.has('code'),
        `expected a JARM response, got ${callback.search}`,
      );
      const alg = decodeProtectedHeader(response).alg;
      check(alg && FAPI_ALGS.includes(alg), `JARM response signed with ${alg}`);
      const claims = decodeJwt(response);
      equal(claims.iss, ctx.issuer, 'JARM iss');
      equal(claims.aud, c.clientId, 'JARM aud');
      check(typeof claims.exp === 'number' && claims.exp > now(), 'JARM exp in the future');
      const tokens = await oidc.authorizationCodeGrant(
        rp.config,
        callback,
        { pkceCodeVerifier: verifier, expectedState: state },
        undefined,
        rp.options,
      );
      check(tokens.access_token, 'no access token');
      equal(tokens.token_type.toLowerCase(), expectedTokenType(c), 'token_type');
      equal(tokens.id_token !== undefined, ctx.variant.flow === 'openid', 'an id_token (openid flow only)');
    },
  },
  {
    group: GROUP,
    id: 'msg-jarm-plain-query',
    title: 'plain query response mode for a client registered for JARM only',
    expect: 'fail',
    async run(ctx) {
      const c = signedClient(ctx);
      const res = await pushSigned(
        ctx,
        await requestObject(ctx.issuer, c, { ...inside(c, pkce()), response_mode: undefined }),
      );
      oauthError(res, { status: 400, error: 'invalid_request' }, 'no response_mode for a JARM client');
    },
  },
  {
    group: GROUP,
    id: 'msg-introspection-signed',
    title: 'signed introspection response (RFC 9701) to the resource server: cnf, scope, acr, auth_time',
    expect: 'accept',
    variants: { flow: BOTH_FLOWS },
    async run(ctx) {
      const rs = resourceServer(ctx);
      const tokens = await ctx.shared();
      const res = await introspect(ctx, rs, tokens.accessToken, 'application/token-introspection+jwt');
      status(res, 200, 'introspection');
      check(
        /^application\/token-introspection\+jwt/.test(res.headers.get('content-type') ?? ''),
        `content-type ${res.headers.get('content-type')}`,
      );
      const { payload } = await jwtVerify(res.text, await hubKeys(ctx), {
        issuer: ctx.issuer,
        audience: rs.clientId,
        typ: 'token-introspection+jwt',
        algorithms: FAPI_ALGS,
      });
      const ti = payload.token_introspection as Record<string, unknown> | undefined;
      check(ti?.active === true, `token_introspection ${JSON.stringify(ti)}`);
      const cnf = ti.cnf as { jkt?: string; 'x5t#S256'?: string } | undefined;
      if (tokens.client.senderConstraint === 'dpop') equal(cnf?.jkt, tokens.dpopKey.jkt, 'cnf.jkt');
      else equal(cnf?.['x5t#S256'], tokens.client.certificate?.thumbprint, 'cnf.x5t#S256');
      equal(ti.client_id, tokens.client.clientId, 'client_id');
      check(typeof ti.scope === 'string' && ti.scope.includes('accounts'), 'scope');
      check(typeof ti.acr === 'string' && typeof ti.auth_time === 'number', 'acr and auth_time');
      check(Array.isArray(ti.authorization_details), 'authorization_details');
    },
  },
  {
    group: GROUP,
    id: 'msg-introspection-by-fapi-client',
    title: 'a FAPI client introspecting (its own token) learns nothing',
    expect: 'fail',
    async run(ctx) {
      const tokens = await ctx.shared();
      const res = await introspect(ctx, ctx.a, tokens.accessToken, 'application/json');
      status(res, 200, 'introspection by client a');
      equal(
        JSON.stringify(res.body),
        JSON.stringify({ active: false }),
        'introspection answer to a FAPI client',
      );
    },
  },
  {
    group: REGISTRATION,
    id: 'reg-without-credentials',
    title: 'registration without initial access token or software statement',
    expect: 'fail',
    async run(ctx) {
      const res = await sendJson(
        ctx.target,
        'POST',
        registrationEndpoint(ctx),
        await registrationMetadata('anon', ctx.variant),
      );
      oauthError(res, { status: 401, error: 'invalid_token' }, 'anonymous registration');
    },
  },
  {
    group: REGISTRATION,
    id: 'reg-untrusted-software-statement',
    title: 'software statement from an issuer the hub does not trust',
    expect: 'fail',
    async run(ctx) {
      const { privateKey } = await generateKeyPair('ES256');
      const ssa = await new SignJWT({ software_id: 'rogue', iss: 'https://rogue-directory.example' })
        .setProtectedHeader({ alg: 'ES256', kid: 'rogue-1' })
        .setIssuedAt()
        .sign(privateKey);
      const body = { ...(await registrationMetadata('rogue', ctx.variant)), software_statement: ssa };
      const res = await sendJson(ctx.target, 'POST', registrationEndpoint(ctx), body);
      oauthError(res, { status: 400, error: 'unapproved_software_statement' }, 'untrusted statement');
    },
  },
  {
    group: REGISTRATION,
    id: 'reg-policy-http-redirect',
    title: 'registration breaking the FAPI client policy (http redirect URI)',
    expect: 'fail',
    async run(ctx) {
      const iat = ctx.target.initialAccessToken ?? ctx.notApplicable('no initial access token for this hub');
      const body = {
        ...(await registrationMetadata('http-redirect', ctx.variant)),
        redirect_uris: ['http://x.example/cb'],
      };
      const res = await sendJson(ctx.target, 'POST', registrationEndpoint(ctx), body, await iat());
      oauthError(res, { status: 400, error: 'invalid_client_metadata' }, 'http redirect URI');
    },
  },
  {
    group: REGISTRATION,
    id: 'reg-register-read-delete',
    title: 'register with an initial access token, read and delete with the registration access token',
    expect: 'accept',
    async run(ctx) {
      const iat = ctx.target.initialAccessToken ?? ctx.notApplicable('no initial access token for this hub');
      const created = await sendJson(
        ctx.target,
        'POST',
        registrationEndpoint(ctx),
        await registrationMetadata(
          `conf-reg-${ctx.variant.clientAuth}-${ctx.variant.senderConstraint}`.replaceAll('_', '-'),
          ctx.variant,
        ),
        await iat(),
      );
      status(created, 201, 'registration');
      const uri = String(created.body?.registration_client_uri);
      let rat = String(created.body?.registration_access_token);
      equal(created.body?.require_pushed_authorization_requests, true, 'PAR forced on the registered client');
      const read = await sendJson(ctx.target, 'GET', uri, undefined, rat);
      status(read, 200, 'read with the registration access token');
      rat = String(read.body?.registration_access_token ?? rat);
      status(await sendJson(ctx.target, 'DELETE', uri, undefined, rat), 204, 'delete');
      const gone = await sendJson(ctx.target, 'GET', uri, undefined, rat);
      check(gone.status === 401, `read after delete: ${describe(gone)}`);
    },
  },
];
