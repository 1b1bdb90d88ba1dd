/**
 * Member institutions as API clients. An institution is an OAuth client whose metadata names its
 * `institution_id`; it gets client-credentials tokens for the institution resource (RFC 8707),
 * bound to a DPoP key (RFC 9449), with the institution scopes it is registered for:
 *   institution:ingest     push accounts, balances, holdings, transactions (ingest.ts)
 *   institution:decisions  ask for a policy decision before a withdrawal or a sweep (src/linking)
 *   institution:links      suspend and resume a customer's bank links (src/linking)
 * `createInstitutionAuthenticator` checks all of it for one request (a certificate-bound token over
 * its certificate works as well: RFC 8705) with the hub's one token check, then the client's
 * metadata as it is now.
 */
import type { Context } from 'koa';
import type Provider from 'oidc-provider';
import type { Client, ClientCredentials, KoaContextWithOIDC, ResourceServer } from 'oidc-provider';
import { errors } from 'oidc-provider';
import type { Config } from '../config/index.ts';
import type { Db } from '../db/index.ts';
import { SIGNING_ALGS } from '../keys/index.ts';
import { mtlsFor } from '../mtls/index.ts';
import { createAccessTokenCheck } from './accessTokenCheck.ts';
import type { DpopReplayStore } from './dpop.ts';
import { ApiError, dpopChallenge } from './errors.ts';

export const INGEST_SCOPE = 'institution:ingest';
export const DECISIONS_SCOPE = 'institution:decisions';
export const LINKS_SCOPE = 'institution:links';
export const INSTITUTION_SCOPES = [INGEST_SCOPE, DECISIONS_SCOPE, LINKS_SCOPE] as const;
export type InstitutionScope = (typeof INSTITUTION_SCOPES)[number];

/** Client metadata naming the member institution a client acts for. */
export const INSTITUTION_ID_METADATA = 'institution_id';
/** The resource indicator (RFC 8707) of the institution APIs: their tokens name it as `aud`. */
export const institutionResource = (issuer: string) => `${issuer}/api/institution`;
/** Short-lived: an institution fetches a new token for each run of calls. */
export const INSTITUTION_TOKEN_TTL_SECONDS = 600;

/** Institution ids are operator-chosen slugs such as `demo-securities`. */
const INSTITUTION_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

export const isInstitutionId = (value: unknown): value is string =>
  typeof value === 'string' && INSTITUTION_ID.test(value);

export const isInstitutionScope = (scope: string): scope is InstitutionScope =>
  (INSTITUTION_SCOPES as readonly string[]).includes(scope);

/** The institution a client acts for, when its metadata names a well-formed one. */
export function institutionIdOf(client: Client | undefined): string | undefined {
  const value = (client as unknown as Record<string, unknown> | undefined)?.[INSTITUTION_ID_METADATA];
  return isInstitutionId(value) ? value : undefined;
}

/**
 * oidc-provider's `extraClientMetadata.validator` for `institution_id` (synchronous, so existence
 * is checked at request time): a well-formed id, on either an institution's API client (client
 * credentials only) or a brokerage's relying party (authorization code, never the aggregator
 * `accounts` scope) — whose approvals only that institution may spend (src/linking).
 */
export function validateInstitutionMetadata(key: string, value: unknown, metadata: Record<string, unknown>) {
  if (key !== INSTITUTION_ID_METADATA || value === undefined) return;
  if (!isInstitutionId(value))
    throw new errors.InvalidClientMetadata(
      'institution_id must be 1–64 letters, digits, dots, underscores or hyphens',
    );
  const grants = Array.isArray(metadata.grant_types) ? metadata.grant_types : [];
  const apiClient = grants.length === 1 && grants[0] === 'client_credentials';
  const scopes = String(metadata.scope ?? '').split(' ');
  const relyingParty =
    grants.includes('authorization_code') &&
    !grants.includes('client_credentials') &&
    !scopes.includes('accounts') &&
    !scopes.some(isInstitutionScope);
  if (!apiClient && !relyingParty)
    throw new errors.InvalidClientMetadata(
      'a client with institution_id must use the client_credentials grant only, or be a brokerage relying party (authorization_code without the accounts or institution scopes)',
    );
}

/**
 * What oidc-provider issues for the institution resource: the institution scopes the client is
 * registered for (the request narrows them), only at the token endpoint with client credentials,
 * only to a client whose metadata names an institution.
 */
export function institutionResourceServer(
  issuer: string,
  ctx: KoaContextWithOIDC,
  client: Client,
): ResourceServer {
  const params = ctx.oidc?.params as { grant_type?: unknown } | undefined;
  const registered = String((client as unknown as { scope?: string }).scope ?? '')
    .split(' ')
    .filter(isInstitutionScope);
  if (params?.grant_type !== 'client_credentials' || !institutionIdOf(client) || !registered.length)
    throw new errors.InvalidTarget();
  return {
    scope: registered.join(' '),
    audience: institutionResource(issuer),
    accessTokenTTL: INSTITUTION_TOKEN_TTL_SECONDS,
    accessTokenFormat: 'opaque',
  };
}

export interface InstitutionCaller {
  clientId: string;
  institutionId: string;
}

/** What is known of the caller so far, for the audit record of a refused request. */
export interface InstitutionTrace {
  clientId?: string;
  institutionId?: string;
}

export interface InstitutionAuthOptions {
  provider: Provider;
  db: Db;
  config: Config;
  replay: DpopReplayStore;
}

/** A function that authenticates one institution request for one scope (errors are ApiErrors). */
export type InstitutionAuthenticator = (
  ctx: Context,
  scope: InstitutionScope,
  trace?: InstitutionTrace,
) => Promise<InstitutionCaller>;

export function createInstitutionAuthenticator({
  provider,
  db,
  config,
  replay,
}: InstitutionAuthOptions): InstitutionAuthenticator {
  const resource = institutionResource(config.issuer);
  // The hub's one token check (src/api/accessTokenCheck.ts): refused proofs and certificates are
  // audited as `institution.dpop.rejected` / `institution.mtls.rejected`; challenges follow the scheme.
  // A refused DPoP proof keeps this API's documented answer, `invalid_dpop_proof`.
  const tokenCheck = createAccessTokenCheck<ClientCredentials>({
    db,
    config,
    mtls: mtlsFor(config),
    algs: SIGNING_ALGS,
    audit: 'institution',
    find: async (value) => {
      const token = await provider.ClientCredentials.find(value);
      return token && !token.isExpired ? token : undefined;
    },
    proofError: (description) =>
      new ApiError(
        401,
        'invalid_dpop_proof',
        description,
        dpopChallenge('invalid_dpop_proof', description, SIGNING_ALGS),
      ),
  });

  return async (ctx, scope, trace = {}) => {
    const { token } = await tokenCheck.check(ctx, scope, replay, (found) => {
      trace.clientId = found.clientId;
      const aud = found.aud;
      if (!(Array.isArray(aud) ? aud.includes(resource) : aud === resource))
        throw tokenCheck.invalid('the access token is not for the institution API');
    });
    // The client's metadata now, not at issuance: a disabled client or a removed institution stops at
    // once, and a registration the provider no longer accepts (a malformed institution_id) is no client.
    const client = await provider.Client.find(token.clientId!).catch((err: unknown) => {
      if (err instanceof errors.OIDCProviderError) return undefined;
      throw err;
    });
    if (!client) throw tokenCheck.invalid('the client of this token is no longer registered');
    const institutionId = institutionIdOf(client);
    if (!institutionId)
      throw new ApiError(403, 'access_denied', 'this client is not registered for a member institution');
    trace.institutionId = institutionId;
    const known = await db.query('SELECT 1 FROM institutions WHERE id = $1', [institutionId]);
    if (known.rowCount !== 1)
      throw new ApiError(403, 'unknown_institution', 'the institution of this client is not known here');
    return { clientId: client.clientId, institutionId };
  };
}
