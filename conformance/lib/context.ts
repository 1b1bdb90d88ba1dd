/**
 * What a check gets: the hub under test and short-hand for the steps most checks share — a
 * pushed authorization request, the customer's login and consent, the code exchange, a refresh,
 * a resource call — each built by hand (client.ts) so a check can change exactly one thing.
 * Happy-path checks use openid-client through `rp()` instead, as a real aggregator would.
 */
import { randomBytes } from 'node:crypto';
import * as oidc from 'openid-client';
import type { TestCert } from '../../test/support/certificates.ts';
import {
  type AssertionOptions,
  authorizationUrl,
  type ClientIdentity,
  type DpopKey,
  dpopProof,
  generateDpopKey,
  type HttpResult,
  type HubConnection,
  type Pkce,
  type ProofOptions,
  pkce,
  pushAuthorizationRequest,
  send,
  tokenRequest,
} from './client.ts';
import { CheckFailure, CheckNotApplicable, describe } from './expect.ts';
import type { LoginOptions } from './login.ts';
import type { MtlsFixture } from './mtls.ts';
import type { Target } from './target.ts';
import type { Variant } from './types.ts';
import { createUserAgent, type UaResponse, type UserAgent } from './userAgent.ts';

export const DEFAULT_SCOPE = 'openid offline_access accounts';
/** The plain OAuth variants' scope: no openid (no id_token, no nonce). */
export const PLAIN_OAUTH_SCOPE = 'offline_access accounts';

/**
 * A certificate to present instead of the client's own (mTLS clients); null presents none. The request
 * still goes to the mtls_endpoint_aliases.
 */
type CertificateOption = TestCert | null;

export interface ParOptions {
  client?: ClientIdentity;
  /**
   * Key whose proof accompanies the PAR (binding the code to it via dpop_jkt); null: no DPoP header.
   * Default: a fresh key, sent by DPoP clients only.
   */
  dpopKey?: DpopKey | null;
  certificate?: CertificateOption;
  scope?: string;
  pkce?: Pkce;
  /** Replaces default parameters; a parameter set to undefined is left out. */
  params?: Record<string, string | undefined>;
  assertion?: AssertionOptions | string | null;
}

export interface Pushed {
  client: ClientIdentity;
  /** The DPoP key of the authorization (a certificate-bound client's is never sent by default). */
  dpopKey: DpopKey;
  pkce: Pkce;
  params: Record<string, string>;
  requestUri: string;
  /** expires_in of the PAR response, seconds. */
  expiresIn: number;
  /** The authorization URL the browser is sent to. */
  url: URL;
}

export interface Authorized extends Pushed {
  callback: URL;
  code: string;
}

export interface RedeemOptions {
  client?: ClientIdentity;
  /**
   * Key for a valid proof (default: the key of the authorization for DPoP clients, none for
   * certificate-bound ones); null: no DPoP header.
   */
  dpopKey?: DpopKey | null;
  certificate?: CertificateOption;
  /** A DPoP header value to send as is. */
  proof?: string;
  /** null: leave code_verifier out. */
  verifier?: string | null;
  assertion?: AssertionOptions | string | null;
  clientId?: string | null;
}

export interface Tokens {
  client: ClientIdentity;
  /** The key the tokens are bound to (DPoP clients; certificate-bound tokens: unused). */
  dpopKey: DpopKey;
  accessToken: string;
  refreshToken: string;
  /** token_type of the response, lower-cased. */
  tokenType: string;
}

export interface ResourceOptions {
  /** Key for a valid proof (default the tokens' key). */
  dpopKey?: DpopKey;
  /** Changes to the valid proof. */
  proof?: Partial<ProofOptions>;
  /**
   * A DPoP header value sent as is; null sends none. Default: a valid proof for DPoP-bound tokens,
   * none for certificate-bound ones.
   */
  rawProof?: string | null;
  /** Authorization scheme; default `DPoP` for DPoP-bound tokens, `Bearer` for certificate-bound ones. */
  scheme?: string;
  /** Default the accounts API (`apiUrl` of the tokens' client). */
  url?: string;
  certificate?: CertificateOption;
}

export type Visit =
  | { kind: 'interaction'; response: UaResponse }
  | { kind: 'callback'; url: URL }
  | { kind: 'page'; response: UaResponse };

export interface Rp {
  config: oidc.Configuration;
  dpopKey: DpopKey;
  client: ClientIdentity;
  /** openid-client's request options: the DPoP handle of `dpopKey` for a DPoP client, none otherwise. */
  options: { DPoP: oidc.DPoPHandle } | undefined;
}

export interface CheckContext {
  /** The hub this check runs against. */
  target: Target;
  variant: Variant;
  /** The variant's two clients (private_key_jwt + DPoP: demo-aggregator and demo-aggregator-2). */
  a: ClientIdentity;
  b: ClientIdentity;
  /** The variant's client registered for signed request objects and JARM, if the hub has one. */
  signed: ClientIdentity | undefined;
  issuer: string;
  /** The variant's default scope: with openid, or without (plain OAuth). */
  scope: string;
  /** `${issuer}/api/v1/accounts` */
  accountsUrl: string;
  /** The accounts API where `client`'s tokens are used: the issuer's origin, or the mTLS origin when certificate-bound. */
  apiUrl(client: ClientIdentity): string;
  /** The mTLS fixture (n/a without one). */
  mtls(): MtlsFixture;
  /**
   * How `client` reaches the hub: itself for a client without a certificate; otherwise the
   * mtls_endpoint_aliases (as the metadata's endpoints) over a connection presenting its certificate,
   * or `certificate` instead (null: none).
   */
  via(client: ClientIdentity, certificate?: CertificateOption): HubConnection;
  /** openid-client configured for `client` (discovery, its authentication, the mTLS aliases if it has a certificate), with a DPoP handle for DPoP clients. */
  rp(client?: ClientIdentity, dpopKey?: DpopKey): Promise<Rp>;
  /** A pushed authorization request (default parameters changed as asked) and its outcome. */
  pushRaw(o?: ParOptions): Promise<{ res: HttpResult; pushed: Pushed | undefined }>;
  /** A pushed authorization request that must succeed (201 with a request_uri). */
  par(o?: ParOptions): Promise<Pushed>;
  /**
   * A browser's first visit to an authorization URL (fresh cookie jar): where did the hub send it —
   * to the login page (the request was accepted), back to the redirect URI, or to an error page?
   */
  visit(url: URL, userAgent?: UserAgent): Promise<Visit>;
  /** The customer signs in with the enrolled passkey and consents; returns the callback URL. */
  login(
    url: URL,
    options?: Omit<LoginOptions, 'fetch' | 'authorizationUrl' | 'device' | 'enroll'>,
  ): Promise<URL>;
  /** PAR + login; the callback must carry a code. */
  authorize(o?: ParOptions): Promise<Authorized>;
  /**
   * An authorization whose code is still unredeemed, shared by the checks whose token request the hub
   * must refuse before it consumes the code (oidc-provider checks the client, the grant's client, PKCE
   * and redirect_uri first). A redemption of it that succeeds, or half the code lifetime (30 s at most),
   * makes the next call authorize afresh.
   */
  unredeemed(): Promise<Authorized>;
  /** The token request for an authorization's code. */
  redeem(auth: Authorized, o?: RedeemOptions): Promise<HttpResult>;
  /** authorize + redeem, both must succeed. */
  tokens(o?: ParOptions): Promise<Tokens>;
  /** One token set shared by checks that do not spend it (resource calls, rejected refreshes). */
  shared(): Promise<Tokens>;
  /** A refresh_token grant (default: with the tokens' client and its holder-of-key: a valid proof of their key, or its certificate). */
  refresh(
    tokens: Tokens,
    o?: {
      client?: ClientIdentity;
      dpopKey?: DpopKey | null;
      proof?: string;
      certificate?: CertificateOption;
    },
  ): Promise<HttpResult>;
  /** GET the accounts API with the access token and its holder-of-key (a DPoP proof or the certificate), changed as asked. */
  resource(tokens: Tokens, o?: ResourceOptions): Promise<HttpResult>;
  sleep(ms: number): Promise<void>;
  /** Ends a check that cannot apply to this hub (reported as n/a by the CLI; a failure under vitest). */
  notApplicable(reason: string): never;
}

const random = () => randomBytes(16).toString('base64url');

export function tokensFrom(res: HttpResult, client: ClientIdentity, dpopKey: DpopKey, what: string): Tokens {
  const body = res.body;
  if (res.status !== 200 || !body || typeof body.access_token !== 'string')
    throw new CheckFailure(`${what}: expected tokens, got ${describe(res)}`);
  return {
    client,
    dpopKey,
    accessToken: body.access_token,
    refreshToken: String(body.refresh_token ?? ''),
    tokenType: String(body.token_type ?? '').toLowerCase(),
  };
}

/** The token_type a client's tokens must have: DPoP, or Bearer when certificate-bound (RFC 8705 §3). */
export const expectedTokenType = (client: ClientIdentity) =>
  client.senderConstraint === 'dpop' ? 'dpop' : 'bearer';

/** The clients of a variant on a target (undefined: the target cannot run the variant). */
export function variantClients(
  target: Target,
  variant: Variant,
): { a: ClientIdentity; b: ClientIdentity; signed: ClientIdentity | undefined } | undefined {
  if (variant.clientAuth === 'private_key_jwt' && variant.senderConstraint === 'dpop')
    return { ...target.clients, signed: target.signed };
  return target.mtls?.clientsFor(variant);
}

export function createContext(target: Target, variant: Variant): CheckContext {
  const clients = variantClients(target, variant);
  if (!clients)
    throw new Error(`the hub under test has no clients for the variant ${JSON.stringify(variant)}`);
  const rps = new Map<string, Promise<oidc.Configuration>>();
  const connections = new Map<string, HubConnection>();
  let shared: Promise<Tokens> | undefined;
  let unredeemed: { auth: Promise<Authorized>; at: number; resolved?: Authorized } | undefined;
  const openid = variant.flow === 'openid';

  const fixture = () =>
    target.mtls ?? ctx.notApplicable('no mTLS test clients on this hub (in-process hubs register them)');

  /** A DPoP header goes with a request when asked for, or by default for a DPoP client. */
  const dpopFor = (client: ClientIdentity, key: DpopKey | null | undefined, fallback: DpopKey) =>
    key === null ? undefined : (key ?? (client.senderConstraint === 'dpop' ? fallback : undefined));

  const ctx: CheckContext = {
    target,
    variant,
    a: clients.a,
    b: clients.b,
    signed: clients.signed,
    issuer: target.issuer,
    scope: openid ? DEFAULT_SCOPE : PLAIN_OAUTH_SCOPE,
    accountsUrl: `${target.issuer}/api/v1/accounts`,

    apiUrl: (client) =>
      client.senderConstraint === 'mtls' ? `${fixture().origin}/api/v1/accounts` : ctx.accountsUrl,

    mtls: fixture,

    via(client, certificate) {
      if (!client.certificate && certificate === undefined) return target;
      const cert = certificate === undefined ? client.certificate : (certificate ?? undefined);
      const key = cert?.thumbprint ?? '';
      let c = connections.get(key);
      if (!c) {
        const f = fixture();
        const aliases = (target.metadata.mtls_endpoint_aliases ?? {}) as Record<string, string>;
        c = {
          issuer: target.issuer,
          ...f.connection(cert),
          metadata: { ...target.metadata, ...aliases },
        };
        connections.set(key, c);
      }
      return c;
    },

    async rp(client = clients.a, dpopKey) {
      let config = rps.get(client.clientId);
      if (!config) {
        const mtls = client.certificate !== undefined;
        config = oidc.discovery(
          new URL(target.issuer),
          client.clientId,
          mtls ? { use_mtls_endpoint_aliases: true, id_token_signed_response_alg: 'ES256' } : undefined,
          client.authMethod === 'private_key_jwt'
            ? oidc.PrivateKeyJwt({ key: client.privateKey, kid: client.kid })
            : oidc.TlsClientAuth(),
          { [oidc.customFetch]: ctx.via(client).fetch as oidc.CustomFetch },
        );
        rps.set(client.clientId, config);
      }
      const key = dpopKey ?? (await generateDpopKey());
      const c = await config;
      const dpop = client.senderConstraint === 'dpop' ? oidc.getDPoPHandle(c, key.pair) : undefined;
      return { config: c, dpopKey: key, client, options: dpop ? { DPoP: dpop } : undefined };
    },

    async pushRaw(o = {}) {
      const client = o.client ?? clients.a;
      const dpopKey = o.dpopKey ?? (await generateDpopKey());
      const p = o.pkce ?? pkce();
      const params: Record<string, string> = {};
      const defaults: Record<string, string | undefined> = {
        response_type: 'code',
        redirect_uri: client.redirectUri,
        scope: o.scope ?? ctx.scope,
        code_challenge: p.challenge,
        code_challenge_method: 'S256',
        state: random(),
        ...(openid ? { nonce: random() } : {}),
        ...o.params,
      };
      for (const [k, v] of Object.entries(defaults)) if (v !== undefined) params[k] = v;
      const proofKey = dpopFor(client, o.dpopKey, dpopKey);
      const res = await pushAuthorizationRequest(ctx.via(client, o.certificate), client, params, {
        ...(proofKey ? { dpop: proofKey } : {}),
        ...(o.assertion !== undefined ? { assertion: o.assertion } : {}),
      });
      const requestUri = res.status === 201 ? res.body?.request_uri : undefined;
      const pushed =
        typeof requestUri === 'string'
          ? {
              client,
              dpopKey,
              pkce: p,
              params,
              requestUri,
              expiresIn: Number(res.body?.expires_in),
              url: authorizationUrl(target, client.clientId, requestUri),
            }
          : undefined;
      return { res, pushed };
    },

    async par(o = {}) {
      const { res, pushed } = await ctx.pushRaw(o);
      if (!pushed) throw new CheckFailure(`PAR: expected 201 with a request_uri, got ${describe(res)}`);
      return pushed;
    },

    async visit(url, userAgent) {
      const ua = userAgent ?? createUserAgent({ fetch: target.fetch });
      const origin = new URL(target.issuer).origin;
      const { response, stoppedAt } = await ua.follow(url, {
        stopAt: (u) => u.origin !== origin || !/^\/(auth|interaction)(\/|$)/.test(u.pathname),
      });
      if (stoppedAt) return { kind: 'callback', url: stoppedAt };
      if (response.status === 200 && /^\/interaction\/[^/]+$/.test(response.url.pathname))
        return { kind: 'interaction', response };
      return { kind: 'page', response };
    },

    login(url, options = {}) {
      return target.user.login(url, { redirectUri: ctx.a.redirectUri, ...options });
    },

    async authorize(o = {}) {
      const pushed = await ctx.par(o);
      const callback = await target.user.login(pushed.url, { redirectUri: pushed.client.redirectUri });
      const code = callback.searchParams.get('code');
      if (!code)
        throw new CheckFailure(`authorization: expected a code at the redirect URI, got ${callback.search}`);
      return { ...pushed, callback, code };
    },

    unredeemed() {
      // Well inside the code's lifetime (60 s at most), even on a slow machine.
      const fresh = unredeemed && Date.now() - unredeemed.at < Math.min(30, target.codeTtl / 2) * 1000;
      if (!fresh) {
        const u: NonNullable<typeof unredeemed> = {
          at: Date.now(),
          auth: ctx.authorize().then((a) => {
            u.resolved = a;
            return a;
          }),
        };
        unredeemed = u;
      }
      return unredeemed!.auth;
    },

    async redeem(auth, o = {}) {
      const client = o.client ?? auth.client;
      const dpopKey = dpopFor(auth.client, o.dpopKey, auth.dpopKey);
      const params: Record<string, string> = {
        grant_type: 'authorization_code',
        code: auth.code,
        redirect_uri: auth.client.redirectUri,
      };
      const verifier = o.verifier === undefined ? auth.pkce.verifier : o.verifier;
      if (verifier !== null) params.code_verifier = verifier;
      const res = await tokenRequest(ctx.via(client, o.certificate), client, params, {
        ...(o.proof !== undefined ? { dpop: o.proof } : dpopKey ? { dpop: dpopKey } : {}),
        ...(o.assertion !== undefined ? { assertion: o.assertion } : {}),
        ...(o.clientId !== undefined ? { clientId: o.clientId } : {}),
      });
      if (res.status === 200 && unredeemed?.resolved === auth) unredeemed = undefined;
      return res;
    },

    async tokens(o = {}) {
      const auth = await ctx.authorize(o);
      return tokensFrom(await ctx.redeem(auth), auth.client, auth.dpopKey, 'code exchange');
    },

    shared() {
      shared ??= ctx.tokens();
      return shared;
    },

    refresh(tokens, o = {}) {
      const client = o.client ?? tokens.client;
      const dpopKey = dpopFor(tokens.client, o.dpopKey, tokens.dpopKey);
      return tokenRequest(
        ctx.via(client, o.certificate),
        client,
        { grant_type: 'refresh_token', refresh_token: tokens.refreshToken },
        o.proof !== undefined ? { dpop: o.proof } : dpopKey ? { dpop: dpopKey } : {},
      );
    },

    async resource(tokens, o = {}) {
      const url = o.url ?? ctx.apiUrl(tokens.client);
      const dpopBound = tokens.client.senderConstraint === 'dpop';
      const headers: Record<string, string> = {
        authorization: `${o.scheme ?? (dpopBound ? 'DPoP' : 'Bearer')} ${tokens.accessToken}`,
      };
      if (o.rawProof !== null && (o.rawProof !== undefined || dpopBound)) {
        headers.dpop =
          o.rawProof ??
          (await dpopProof(o.dpopKey ?? tokens.dpopKey, {
            htm: 'GET',
            htu: url,
            accessToken: tokens.accessToken,
            ...o.proof,
          }));
      }
      const hub =
        tokens.client.senderConstraint === 'mtls' || o.certificate !== undefined
          ? ctx.via(tokens.client, o.certificate)
          : target;
      return send(hub, url, { headers });
    },

    sleep: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),

    notApplicable(reason) {
      throw new CheckNotApplicable(reason);
    },
  };
  return ctx;
}
