/**
 * The hub as an OpenID relying party of each configured bank (openid-client 6): discovery, the
 * authorization request (pushed when the bank advertises PAR; always PKCE S256, state and nonce),
 * the code exchange with private_key_jwt (the hub's sealed key) or a client secret, and what the
 * bank asserted: acr, amr, the account holder's name (plain or `verified_claims`) and the account.
 *
 * What the bank's discovery advertises, the hub uses (FAPI 2.0 toward banks that can): a signed
 * request object (JAR, RFC 9101; ES256 with the hub's RP key) when it lists ES256 in
 * `request_object_signing_alg_values_supported`, offers PAR, and the hub authenticates with
 * private_key_jwt (never through the browser: that key authenticates the hub), and
 * DPoP-bound tokens (RFC 9449; the hub's sealed DPoP key) when it lists ES256 in
 * `dpop_signing_alg_values_supported` — at PAR, the token endpoint and userinfo alike.
 */
import { readFileSync } from 'node:fs';
import * as client from 'openid-client';
import { Agent, fetch as undiciFetch } from 'undici';
import type { Config } from '../config/index.ts';
import type { Queryable } from '../db/index.ts';
import { FederationError } from './errors.ts';
import { DPOP_SECRET_NAME, loadRpKey, type RpKey, rpJwksFollower } from './rpKey.ts';

export type BankConfig = Config['linking']['banks'][number];

/** The JWS algorithms of ID tokens the hub takes from a bank that names none (FAPI 2.0). */
export const ID_TOKEN_ALGS: readonly string[] = ['PS256', 'ES256', 'EdDSA'];

/** The `alg` of a compact JWS's protected header (undefined when it has none or is not one). */
function jwsAlg(jws: string | undefined): unknown {
  try {
    return JSON.parse(Buffer.from(jws?.split('.')[0] ?? '', 'base64url').toString('utf8')).alg;
  } catch {
    return undefined;
  }
}

/** What the hub keeps of one authorization request, to check the response against. */
export interface BankChecks {
  state: string;
  nonce: string;
  codeVerifier: string;
}

/** What the bank asserted about the customer and the account. */
export interface BankAssertion {
  subject: string;
  acr: string | undefined;
  amr: string[];
  /** Every account-holder name the bank gave (kanji, kana, verified or plain). */
  names: string[];
  /** The bank account, masked ("001 普通 ****567"), when the bank named one. */
  accountMasked: string | undefined;
  /** How the exchange with the bank was protected (for the audit log). */
  protections: BankProtections;
}

/** Which of the bank's advertised protections the hub used. */
export interface BankProtections {
  par: boolean;
  jar: boolean;
  dpop: boolean;
}

export interface BankFederation {
  readonly banks: readonly BankConfig[];
  bank(id: string): BankConfig | undefined;
  /**
   * Where a bank sends the customer back: `<issuer>/account/links/callback/<bankId>`, one per bank,
   * so that an answer cannot be taken for another bank's (OAuth mix-up, RFC 9700 §4.4.2).
   */
  redirectUriFor(bankId: string): string;
  authorizationUrl(bankId: string, checks: BankChecks): Promise<URL>;
  /** Validates the callback and exchanges the code; FederationError on any failure. */
  complete(bankId: string, callbackUrl: URL, checks: BankChecks): Promise<BankAssertion>;
  /**
   * The public keys banks register for private_key_jwt: current, and a staged next or the previous.
   * Opened again only when the sealed keys changed, looked at every keys.pollSeconds.
   */
  jwks(): Promise<{ keys: JsonWebKey[] }>;
}

/** The callback paths: `<BANK_CALLBACK_PATH>/<bankId>`; the bare path served attempts before 0038. */
export const BANK_CALLBACK_PATH = '/account/links/callback';

const ACCOUNT_TYPES: Record<string, string> = {
  '1': '普通',
  '2': '当座',
  '4': '貯蓄',
  ordinary: '普通',
  savings: '普通',
  current: '当座',
  checking: '当座',
};

const maskDigits = (n: string) => `${'*'.repeat(Math.max(0, n.length - 3))}${n.slice(-3)}`;

/** "001 普通 ****567" from `{branch_code, account_type, account_number}` or a bare account number. */
export function maskBankAccount(value: unknown): string | undefined {
  if (typeof value === 'string' || typeof value === 'number') {
    const digits = String(value).replace(/\D/g, '');
    return digits ? maskDigits(digits) : undefined;
  }
  if (value === null || typeof value !== 'object') return undefined;
  const o = value as Record<string, unknown>;
  const number = String(o.account_number ?? '').replace(/\D/g, '');
  if (!number) return undefined;
  const branch =
    typeof o.branch_code === 'string' && /^\d{3}$/.test(o.branch_code) ? o.branch_code : undefined;
  const type = ACCOUNT_TYPES[String(o.account_type ?? '')];
  return [branch, type, maskDigits(number)].filter(Boolean).join(' ');
}

const str = (v: unknown) => (typeof v === 'string' && v.trim() ? v.trim().slice(0, 200) : undefined);

/** Names in one claims object: full names, family + given (kanji and kana), with language tags. */
function namesIn(o: Record<string, unknown>): string[] {
  const out: string[] = [];
  for (const tag of ['', '#ja-Kana-JP', '#ja-Hani-JP', '#ja-Hira-JP', '#ja-Jpan-JP']) {
    const full = str(o[`name${tag}`]);
    if (full) out.push(full);
    const family = str(o[`family_name${tag}`]);
    const given = str(o[`given_name${tag}`]);
    if (family && given) out.push(`${family} ${given}`);
  }
  return out;
}

/** Names in plain claims and in `verified_claims` (an object or an array of them, OIDC4IDA). */
export function assertedNames(claims: Record<string, unknown>): string[] {
  const names = namesIn(claims);
  const verified = claims.verified_claims;
  for (const v of Array.isArray(verified) ? verified : verified ? [verified] : []) {
    const inner = (v as { claims?: unknown }).claims;
    if (inner && typeof inner === 'object') names.push(...namesIn(inner as Record<string, unknown>));
  }
  return [...new Set(names)];
}

/** Seconds of clock difference tolerated with a bank (openid-client's own tolerance). */
const CLOCK_TOLERANCE = 30;

/**
 * What openid-client leaves unchecked in a bank's ID token, as the reason it is refused (undefined:
 * fine): `azp`, when present, must be the hub's client id (OIDC Core 3.1.3.7; openid-client compares
 * it only with several audiences); `iat` must lie between the oldest acceptable sign-in (`maxAge`,
 * the max_age the hub sent) and now, with the clock tolerance — a token from the future or one
 * older than the sign-in it reports is no answer to this exchange.
 */
export function idTokenProblem(
  claims: { azp?: unknown; iat?: unknown },
  o: { clientId: string; maxAge: number; now?: number },
): string | undefined {
  if (claims.azp !== undefined && claims.azp !== o.clientId) return 'ID token azp is not the hub';
  const now = o.now ?? Math.floor(Date.now() / 1000);
  if (typeof claims.iat !== 'number') return 'ID token iat is missing';
  if (claims.iat > now + CLOCK_TOLERANCE) return 'ID token iat is in the future';
  if (claims.iat < now - o.maxAge - CLOCK_TOLERANCE) return 'ID token iat is older than max_age';
  return undefined;
}

function fetchFor(bank: BankConfig): client.CustomFetch | undefined {
  if (!bank.caFile) return undefined;
  const dispatcher = new Agent({ connect: { ca: readFileSync(bank.caFile, 'utf8') } });
  return ((url: string, init: RequestInit) =>
    undiciFetch(url, { ...(init as object), dispatcher })) as unknown as client.CustomFetch;
}

function asFederationError(err: unknown, what: string): FederationError {
  if (err instanceof FederationError) return err;
  if (err instanceof client.AuthorizationResponseError)
    return new FederationError('ERR_BANK_DENIED', `the bank refused: ${err.error}`, {
      cause: err,
      oauthError: err.error,
    });
  if (err instanceof TypeError && /fetch failed/i.test(err.message))
    return new FederationError('ERR_BANK_UNAVAILABLE', `the bank could not be reached (${what})`, {
      cause: err,
    });
  // openid-client's own message is generic ("invalid response encountered"); oauth4webapi's, kept as
  // the cause, names the check (e.g. "JWT signature verification failed"). Neither carries tokens.
  const cause = (err as Error).cause;
  const detail = cause instanceof Error ? ` (${cause.message})` : '';
  return new FederationError(
    'ERR_BANK_RESPONSE',
    `${what}: ${(err as Error).message}${detail}`.slice(0, 300),
    {
      cause: err,
    },
  );
}

export function createBankFederation(o: { config: Config; db: Queryable; kek: Buffer }): BankFederation {
  const banks = o.config.linking.banks;
  const redirectUriFor = (bankId: string) => `${o.config.issuer}${BANK_CALLBACK_PATH}/${bankId}`;
  const discovered = new Map<string, Promise<client.Configuration>>();
  /**
   * A sealed key, read again after keys.pollSeconds so that a promoted signing key (keys promote-rp)
   * signs on every node within that time; a failed load is tried again next time.
   */
  const cachedKey = (name?: string) => {
    let loaded: Promise<RpKey> | undefined;
    let loadedAt = 0;
    return () => {
      if (!loaded || Date.now() - loadedAt > o.config.keys.pollSeconds * 1000) {
        loadedAt = Date.now();
        loaded = loadRpKey(o.db, o.kek, name).catch((err) => {
          loaded = undefined;
          throw err;
        });
      }
      return loaded;
    };
  };
  const key = cachedKey();
  const dpopKey = cachedKey(DPOP_SECRET_NAME);

  const offersEs256 = (config: client.Configuration, member: string) => {
    const algs = (config.serverMetadata() as Record<string, unknown>)[member];
    return Array.isArray(algs) && algs.includes('ES256');
  };
  function protectionsFor(bank: BankConfig, config: client.Configuration): BankProtections {
    const par = Boolean(config.serverMetadata().pushed_authorization_request_endpoint);
    return {
      par,
      // Only over PAR: a request object sent through the browser would put a JWS signed with the
      // client-authentication key in the front channel (docs/bank-linking.md, key separation).
      jar:
        par &&
        bank.auth.method === 'private_key_jwt' &&
        offersEs256(config, 'request_object_signing_alg_values_supported'),
      dpop: offersEs256(config, 'dpop_signing_alg_values_supported'),
    };
  }
  /** The DPoP handle for a bank that offers DPoP (a fresh handle keeps its own server nonce). */
  async function dpopFor(config: client.Configuration, p: BankProtections) {
    if (!p.dpop) return undefined;
    const k = await dpopKey();
    return client.getDPoPHandle(config, { privateKey: k.privateKey, publicKey: k.publicKey });
  }

  const bankById = (id: string) => banks.find((b) => b.id === id);

  function configuration(bank: BankConfig): Promise<client.Configuration> {
    let found = discovered.get(bank.id);
    if (!found) {
      found = (async () => {
        // private_key_jwt with whichever key signs at the time of each request (rotation).
        const auth: client.ClientAuth =
          bank.auth.method === 'client_secret'
            ? client.ClientSecretBasic(bank.auth.secret)
            : async (as, metadata, body, headers) => {
                const k = await key();
                await client.PrivateKeyJwt({ key: k.privateKey, kid: k.kid })(as, metadata, body, headers);
              };
        const customFetch = fetchFor(bank);
        const config = await client.discovery(
          new URL(bank.issuer),
          bank.clientId,
          { redirect_uris: [redirectUriFor(bank.id)] },
          auth,
          {
            ...(customFetch ? { [client.customFetch]: customFetch } : {}),
          },
        );
        // openid-client checks an ID token's signature only when told (TLS alone otherwise): the
        // acr, amr and names the policy decides on must be the bank's signed word (keys from its
        // jwks_uri, refetched on an unknown kid; HS* refused).
        client.enableNonRepudiationChecks(config);
        return config;
      })().catch((err: unknown) => {
        // Not cached: the next attempt discovers again.
        discovered.delete(bank.id);
        throw asFederationError(err, 'discovery');
      });
      discovered.set(bank.id, found);
    }
    return found;
  }

  function known(bankId: string): BankConfig {
    const bank = bankById(bankId);
    if (!bank) throw new FederationError('ERR_BANK_UNKNOWN', 'no such bank');
    return bank;
  }

  return {
    banks,
    bank: bankById,
    redirectUriFor,

    async authorizationUrl(bankId, checks) {
      const bank = known(bankId);
      // The hub's own key first: a key that does not open is the hub's fault (ERR_RP_KEY), whatever the bank does.
      if (bank.auth.method === 'private_key_jwt') await key();
      const config = await configuration(bank);
      const params: Record<string, string> = {
        redirect_uri: redirectUriFor(bank.id),
        scope: bank.scope,
        state: checks.state,
        nonce: checks.nonce,
        // A sign-in at the bank as fresh as the hub wants its own: an old bank session proves nothing
        // about who links the account now (auth_time is then required and checked).
        max_age: String(o.config.linking.signInMaxAgeSeconds),
        code_challenge: await client.calculatePKCECodeChallenge(checks.codeVerifier),
        code_challenge_method: 'S256',
        ...(bank.claims ? { claims: JSON.stringify(bank.claims) } : {}),
        ...(bank.acrValues ? { acr_values: bank.acrValues.join(' ') } : {}),
      };
      const p = protectionsFor(bank, config);
      try {
        // JAR: the parameters travel as one request object signed with the hub's RP key.
        const signer = p.jar ? await key() : undefined;
        const url = signer
          ? await client.buildAuthorizationUrlWithJAR(config, params, {
              key: signer.privateKey,
              kid: signer.kid,
            })
          : client.buildAuthorizationUrl(config, params);
        if (!p.par) return url;
        const DPoP = await dpopFor(config, p);
        return await client.buildAuthorizationUrlWithPAR(
          config,
          url.searchParams,
          DPoP ? { DPoP } : undefined,
        );
      } catch (err) {
        throw asFederationError(err, 'authorization request');
      }
    },

    async complete(bankId, callbackUrl, checks) {
      const bank = known(bankId);
      const error = callbackUrl.searchParams.get('error');
      if (error)
        throw new FederationError('ERR_BANK_DENIED', `the bank answered ${error.slice(0, 60)}`, {
          oauthError: error.slice(0, 60),
        });
      const config = await configuration(bank);
      const protections = protectionsFor(bank, config);
      try {
        const DPoP = await dpopFor(config, protections);
        const tokens = await client.authorizationCodeGrant(
          config,
          callbackUrl,
          {
            pkceCodeVerifier: checks.codeVerifier,
            expectedState: checks.state,
            expectedNonce: checks.nonce,
            maxAge: o.config.linking.signInMaxAgeSeconds,
            idTokenExpected: true,
          },
          undefined,
          DPoP ? { DPoP } : undefined,
        );
        // Whatever the bank's discovery lists: only these algorithms (openid-client takes any listed).
        const alg = jwsAlg(tokens.id_token);
        if (!(bank.idTokenSigningAlg ? [bank.idTokenSigningAlg] : ID_TOKEN_ALGS).includes(alg as string))
          throw new FederationError(
            'ERR_BANK_RESPONSE',
            `ID token alg ${JSON.stringify(alg)?.slice(0, 20)} is not allowed`,
          );
        // A bank that offers DPoP must bind its token: a Bearer token there is a downgrade.
        if (protections.dpop && tokens.token_type?.toLowerCase() !== 'dpop')
          throw new FederationError('ERR_BANK_RESPONSE', 'the bank offers DPoP but issued an unbound token');
        const idToken = tokens.claims()!;
        const problem = idTokenProblem(idToken, {
          clientId: bank.clientId,
          maxAge: o.config.linking.signInMaxAgeSeconds,
        });
        if (problem) throw new FederationError('ERR_BANK_RESPONSE', problem);
        let claims: Record<string, unknown> = { ...idToken };
        // Banks that keep names or the account out of the ID token give them at userinfo.
        const missing = !assertedNames(claims).length || claims[bank.accountClaim] === undefined;
        if (missing && config.serverMetadata().userinfo_endpoint) {
          const info = await client.fetchUserInfo(
            config,
            tokens.access_token,
            idToken.sub,
            DPoP ? { DPoP } : undefined,
          );
          claims = { ...info, ...claims };
        }
        return {
          subject: idToken.sub,
          acr: typeof idToken.acr === 'string' ? idToken.acr : undefined,
          amr: Array.isArray(idToken.amr)
            ? idToken.amr.filter((v): v is string => typeof v === 'string')
            : [],
          names: assertedNames(claims),
          accountMasked: maskBankAccount(claims[bank.accountClaim]),
          protections,
        };
      } catch (err) {
        throw asFederationError(err, 'callback');
      }
    },

    // Followed like the signing key: a staged or promoted key is published within keys.pollSeconds.
    jwks: rpJwksFollower({ db: o.db, kek: o.kek, pollSeconds: o.config.keys.pollSeconds }),
  };
}
