/**
 * What the read API needs to know of an access token, kept in memory by the token's value. An
 * issued access token never changes (oidc-provider writes it once), so its payload can be cached;
 * whether it still counts — stored, unexpired, its Grant alive — is NOT cached: every read statement
 * checks that itself (src/api/reads.ts `live`), so a revocation on any node counts at the next call.
 * Saves the token lookup's round trip on every read but the first of a token on a node.
 */

/** The parts of an oidc-provider AccessToken the resource server reads. */
export interface AccessTokenFacts {
  /** The token's id: its value for opaque tokens. */
  jti: string;
  clientId: string | undefined;
  accountId: string | undefined;
  grantId: string | undefined;
  scope: string | undefined;
  rar: unknown;
  acr: string | undefined;
  jkt: string | undefined;
  'x5t#S256': string | undefined;
  /** Expiry, seconds since the epoch. */
  exp: number;
}

/** The subset of oidc-provider's AccessToken model instance this reads. */
export interface FoundAccessToken {
  jti: string;
  clientId?: string | undefined;
  accountId?: string | undefined;
  grantId?: string | undefined;
  scope?: string | undefined;
  rar?: unknown;
  extra?: unknown;
  jkt?: string | undefined;
  'x5t#S256'?: string | undefined;
  exp?: number | undefined;
  isExpired: boolean;
}

export interface AccessTokenCacheOptions {
  /** Tokens kept at most; the oldest entry goes first. Default 10,000. */
  maxEntries?: number;
  /** Clock in ms (tests). */
  now?: () => number;
}

export interface AccessTokenCache {
  /** The token's facts, from memory or `find`; undefined when unknown or expired. */
  get(value: string): Promise<AccessTokenFacts | undefined>;
  /** Drops a token a read statement found dead. */
  forget(value: string): void;
  readonly size: number;
}

export function createAccessTokenCache(
  find: (value: string) => Promise<FoundAccessToken | undefined>,
  { maxEntries = 10_000, now = Date.now }: AccessTokenCacheOptions = {},
): AccessTokenCache {
  const entries = new Map<string, AccessTokenFacts>();
  return {
    async get(value) {
      const cached = entries.get(value);
      if (cached) {
        if (cached.exp * 1000 > now()) return cached;
        entries.delete(value);
        return undefined;
      }
      const token = await find(value);
      if (!token || token.isExpired || typeof token.exp !== 'number') return undefined;
      const facts: AccessTokenFacts = {
        jti: token.jti,
        clientId: token.clientId,
        accountId: token.accountId,
        grantId: token.grantId,
        scope: token.scope,
        rar: token.rar,
        acr: (token.extra as { acr?: string } | undefined)?.acr,
        jkt: token.jkt,
        'x5t#S256': token['x5t#S256'],
        exp: token.exp,
      };
      if (entries.size >= maxEntries) entries.delete(entries.keys().next().value as string);
      entries.set(value, facts);
      return facts;
    },
    forget(value) {
      entries.delete(value);
    },
    get size() {
      return entries.size;
    },
  };
}
