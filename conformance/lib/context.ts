/**
 * What a check gets: the hub under test and short-hand for the steps most checks share — a
 * pushed authorization request, the customer's login and consent, the code exchange, a refresh,
 * a resource call — each built by hand (client.ts) so a check can change exactly one thing.
 * Happy-path checks use openid-client through `rp()` instead, as a real aggregator would.
 */
import { randomBytes } from 'node:crypto';
import * as oidc from 'openid-client';
import {
  type AssertionOptions,
  authorizationUrl,
  type ClientIdentity,
  type DpopKey,
  dpopProof,
  generateDpopKey,
  type HttpResult,
  type Pkce,
  type ProofOptions,
  pkce,
  pushAuthorizationRequest,
  send,
  tokenRequest,
} from './client.ts';
import { CheckFailure, CheckNotApplicable, describe } from './expect.ts';
import type { LoginOptions } from './login.ts';
import type { Target } from './target.ts';
import type { Variant } from './types.ts';
import { createUserAgent, type UaResponse, type UserAgent } from './userAgent.ts';

export const DEFAULT_SCOPE = 'openid offline_access accounts';

export interface ParOptions {
  client?: ClientIdentity;
  /** Key whose proof accompanies the PAR (binding the code to it via dpop_jkt); null: no DPoP header. */
  dpopKey?: DpopKey | null;
  scope?: string;
  pkce?: Pkce;
  /** Replaces default parameters; a parameter set to undefined is left out. */
  params?: Record<string, string | undefined>;
  assertion?: AssertionOptions | string | null;
}

export interface Pushed {
  client: ClientIdentity;
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
  /** Key for a valid proof (default the key of the authorization); null: no DPoP header. */
  dpopKey?: DpopKey | null;
  /** A DPoP header value to send as is. */
  proof?: string;
  /** null: leave code_verifier out. */
  verifier?: string | null;
  assertion?: AssertionOptions | string | null;
  clientId?: string | null;
}

export interface Tokens {
  client: ClientIdentity;
  dpopKey: DpopKey;
  accessToken: string;
  refreshToken: string;
}

export interface ResourceOptions {
  /** Key for a valid proof (default the tokens' key). */
  dpopKey?: DpopKey;
  /** Changes to the valid proof. */
  proof?: Partial<ProofOptions>;
  /** A DPoP header value sent as is; null sends none. */
  rawProof?: string | null;
  /** Authorization scheme; default `DPoP`. */
  scheme?: string;
  /** Default the accounts API. */
  url?: string;
}

export type Visit =
  | { kind: 'interaction'; response: UaResponse }
  | { kind: 'callback'; url: URL }
  | { kind: 'page'; response: UaResponse };

export interface Rp {
  config: oidc.Configuration;
  dpop: oidc.DPoPHandle;
  dpopKey: DpopKey;
  client: ClientIdentity;
}

export interface CheckContext {
  /** The hub this check runs against. */
  target: Target;
  variant: Variant;
  /** demo-aggregator and demo-aggregator-2. */
  a: ClientIdentity;
  b: ClientIdentity;
  issuer: string;
  /** `${issuer}/api/v1/accounts` */
  accountsUrl: string;
  /** openid-client configured for `client` (discovery, private_key_jwt) with a DPoP handle. */
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
  /** The token request for an authorization's code. */
  redeem(auth: Authorized, o?: RedeemOptions): Promise<HttpResult>;
  /** authorize + redeem, both must succeed. */
  tokens(o?: ParOptions): Promise<Tokens>;
  /** One token set shared by checks that do not spend it (resource calls, rejected refreshes). */
  shared(): Promise<Tokens>;
  /** A refresh_token grant (default: with the tokens' client and a valid proof of their key). */
  refresh(
    tokens: Tokens,
    o?: { client?: ClientIdentity; dpopKey?: DpopKey | null; proof?: string },
  ): Promise<HttpResult>;
  /** GET the accounts API with the access token and a DPoP proof (changed as asked). */
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
  };
}

export function createContext(target: Target, variant: Variant): CheckContext {
  const rps = new Map<string, Promise<oidc.Configuration>>();
  let shared: Promise<Tokens> | undefined;

  const ctx: CheckContext = {
    target,
    variant,
    a: target.clients.a,
    b: target.clients.b,
    issuer: target.issuer,
    accountsUrl: `${target.issuer}/api/v1/accounts`,

    async rp(client = target.clients.a, dpopKey) {
      let config = rps.get(client.clientId);
      if (!config) {
        config = oidc.discovery(
          new URL(target.issuer),
          client.clientId,
          undefined,
          oidc.PrivateKeyJwt({ key: client.privateKey, kid: client.kid }),
          { [oidc.customFetch]: target.fetch as oidc.CustomFetch },
        );
        rps.set(client.clientId, config);
      }
      const key = dpopKey ?? (await generateDpopKey());
      const c = await config;
      return { config: c, dpop: oidc.getDPoPHandle(c, key.pair), dpopKey: key, client };
    },

    async pushRaw(o = {}) {
      const client = o.client ?? target.clients.a;
      const dpopKey = o.dpopKey ?? (await generateDpopKey());
      const p = o.pkce ?? pkce();
      const params: Record<string, string> = {};
      const defaults: Record<string, string | undefined> = {
        response_type: 'code',
        redirect_uri: client.redirectUri,
        scope: o.scope ?? DEFAULT_SCOPE,
        code_challenge: p.challenge,
        code_challenge_method: 'S256',
        state: random(),
        nonce: random(),
        ...o.params,
      };
      for (const [k, v] of Object.entries(defaults)) if (v !== undefined) params[k] = v;
      const res = await pushAuthorizationRequest(target, client, params, {
        ...(o.dpopKey === null ? {} : { dpop: dpopKey }),
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

    redeem(auth, o = {}) {
      const client = o.client ?? auth.client;
      const dpopKey = o.dpopKey === undefined ? auth.dpopKey : o.dpopKey;
      const params: Record<string, string> = {
        grant_type: 'authorization_code',
        code: auth.code,
        redirect_uri: auth.client.redirectUri,
      };
      const verifier = o.verifier === undefined ? auth.pkce.verifier : o.verifier;
      if (verifier !== null) params.code_verifier = verifier;
      return tokenRequest(target, client, params, {
        ...(o.proof !== undefined ? { dpop: o.proof } : dpopKey ? { dpop: dpopKey } : {}),
        ...(o.assertion !== undefined ? { assertion: o.assertion } : {}),
        ...(o.clientId !== undefined ? { clientId: o.clientId } : {}),
      });
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
      const dpopKey = o.dpopKey === undefined ? tokens.dpopKey : o.dpopKey;
      return tokenRequest(
        target,
        client,
        { grant_type: 'refresh_token', refresh_token: tokens.refreshToken },
        o.proof !== undefined ? { dpop: o.proof } : dpopKey ? { dpop: dpopKey } : {},
      );
    },

    async resource(tokens, o = {}) {
      const url = o.url ?? ctx.accountsUrl;
      const headers: Record<string, string> = {
        authorization: `${o.scheme ?? 'DPoP'} ${tokens.accessToken}`,
      };
      if (o.rawProof !== null) {
        headers.dpop =
          o.rawProof ??
          (await dpopProof(o.dpopKey ?? tokens.dpopKey, {
            htm: 'GET',
            htu: url,
            accessToken: tokens.accessToken,
            ...o.proof,
          }));
      }
      return send(target, url, { headers });
    },

    sleep: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),

    notApplicable(reason) {
      throw new CheckNotApplicable(reason);
    },
  };
  return ctx;
}
