/**
 * The one check of an access token at the hub's resource endpoints: the read API (/api/v1), grant
 * management (/grants) and the institution APIs (/api/institution, client-credentials tokens). The token is one the hub knows; its sender constraint holds (a DPoP
 * proof for this exact request, or the certificate it is bound to: RFC 9449, RFC 8705); it carries
 * the scope. Refused proofs and certificates are audited (`<audit>.dpop.rejected`,
 * `<audit>.mtls.rejected`); challenges follow the scheme the client used (Bearer for certificate-bound
 * tokens). What is particular to one endpoint (consent, acr, a disabled client) stays with it.
 */
import type { Context } from 'koa';
import { recordAudit } from '../audit/index.ts';
import type { Config } from '../config/index.ts';
import type { Queryable } from '../db/index.ts';
import type { Mtls } from '../mtls/index.ts';
import type { DpopReplayStore } from './dpop.ts';
import {
  ApiError,
  dpopChallenge,
  insufficientScopeError,
  presentedAccessToken,
  unknownTokenError,
} from './errors.ts';
import { CertificateBindingError, checkSenderConstraint, DpopError } from './senderConstraint.ts';

/** What the check reads of an access token (an oidc-provider AccessToken, or the read API's cached facts). */
export interface CheckableToken {
  clientId?: string | undefined;
  accountId?: string | undefined;
  scope?: string | undefined;
  jkt?: string | undefined;
  'x5t#S256'?: string | undefined;
}

export interface AccessTokenCheckOptions<T extends CheckableToken> {
  db: Queryable;
  config: Config;
  mtls: Mtls;
  /** The JWS algorithms named in DPoP challenges. */
  algs: readonly string[];
  /** The token a presented value stands for, or undefined when unknown, expired or revoked. */
  find: (value: string) => Promise<T | undefined>;
  /** The audit types' prefix: `api` for the read API, `grants` for grant management, `institution`. */
  audit: string;
  /**
   * The error a refused DPoP proof is answered with (after its audit); default `invalid_token`. The
   * institution APIs answer `invalid_dpop_proof` (RFC 9449 §7.1), as documented for their clients.
   */
  proofError?: (description: string) => ApiError;
  /** What else in a token grants a scope besides the scope itself (the read API: a RAR detail). */
  alsoGrants?: (token: T, scope: string) => boolean;
}

export interface CheckedAccessToken<T> {
  token: T;
  /** The Authorization scheme, lower-cased: `dpop` or `bearer` (certificate-bound). */
  scheme: string;
  value: string;
}

/** Who a refusal is about, as far as known. */
export interface TokenHolder {
  clientId?: string | undefined;
  customerId?: string | undefined;
}

export interface AccessTokenCheck<T> {
  /**
   * The caller's token for `scope` (every failure an ApiError); DPoP proof ids go to `replay`. `admit`
   * sees the token as soon as it is found, before its sender constraint: it may refuse it (throw an
   * ApiError, e.g. a token for another audience) or note who the caller is for a refusal's audit.
   */
  check(
    ctx: Context,
    scope: string,
    replay: DpopReplayStore,
    admit?: (token: T) => void,
  ): Promise<CheckedAccessToken<T>>;
  /** `invalid_token` with a DPoP challenge: what a DPoP-bound token (or one of the wrong kind) is refused with. */
  invalid(description: string): ApiError;
  /** Audits a refused DPoP proof (also a replay found afterwards) and returns the error to answer with. */
  rejectProof(ctx: Context, who: TokenHolder, reason: string): Promise<ApiError>;
}

export function createAccessTokenCheck<T extends CheckableToken>(
  o: AccessTokenCheckOptions<T>,
): AccessTokenCheck<T> {
  const invalid = (description: string) =>
    new ApiError(401, 'invalid_token', description, dpopChallenge('invalid_token', description, o.algs));

  async function refused(ctx: Context, kind: 'dpop' | 'mtls', who: TokenHolder, reason: string) {
    await recordAudit(o.db, {
      type: `${o.audit}.${kind}.rejected`,
      outcome: 'failure',
      clientId: who.clientId,
      customerId: who.customerId,
      ip: ctx.ip,
      data: { reason, path: ctx.path },
    });
  }

  async function rejectProof(ctx: Context, who: TokenHolder, reason: string): Promise<ApiError> {
    await refused(ctx, 'dpop', who, reason);
    return (o.proofError ?? invalid)(reason);
  }

  return {
    invalid,
    rejectProof,
    async check(ctx, scope, replay, admit) {
      const { scheme, value } = presentedAccessToken(ctx, o.algs);
      const token = await o.find(value);
      if (!token) throw unknownTokenError(scheme, o.algs);
      admit?.(token);
      const who = { clientId: token.clientId, customerId: token.accountId };
      const { config, mtls } = o;
      try {
        await checkSenderConstraint({ ctx, config, mtls, scheme, value, token, replay, invalid });
      } catch (err) {
        if (err instanceof DpopError) throw await rejectProof(ctx, who, err.message);
        if (err instanceof CertificateBindingError) await refused(ctx, 'mtls', who, err.message);
        throw err;
      }
      const scopes = String(token.scope ?? '').split(' ');
      if (!scopes.includes(scope) && !o.alsoGrants?.(token, scope))
        throw insufficientScopeError(scheme, scope, o.algs);
      return { token, scheme, value };
    },
  };
}
