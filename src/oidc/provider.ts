/**
 * The FAPI 2.0 authorization server: oidc-provider 9 with every setting DESIGN.md lists that
 * the library's `fapi.profile = '2.0'` does not make by itself.
 */
import { createHash, createHmac } from 'node:crypto';
import Provider, {
  type Configuration,
  errors,
  interactionPolicy,
  type KoaContextWithOIDC,
  type ResourceServer,
} from 'oidc-provider';
// Directly, not through src/api/index.ts, which imports FAPI_ALGS from here.
import {
  INSTITUTION_ID_METADATA,
  INSTITUTION_SCOPES,
  institutionIdOf,
  institutionResource,
  institutionResourceServer,
  isInstitutionScope,
  validateInstitutionMetadata,
} from '../api/institution.ts';
import type { Config } from '../config/index.ts';
import {
  apiLocation,
  DETAIL_TYPES_FROM_SCOPE,
  richAuthorizationRequestsFeature,
  settleClientDetailTypes,
} from '../consent/authorizationDetails.ts';
import type { Db } from '../db/index.ts';
import {
  addGrantIdToTokenResponses,
  GRANT_MANAGEMENT_SCOPES,
  grantActionConsentCheck,
  grantManagementDiscovery,
  grantManagementParams,
  loadExistingGrant,
} from '../grants/authorization.ts';
import { CookieSigner } from '../http/index.ts';
import type { KeyMaterial } from '../keys/index.ts';
import {
  approvalPrompt,
  approvalResource,
  approvalResourceServer,
  operationDetailsOf,
} from '../linking/approvals/approvalInteraction.ts';
import { MTLS_AUTH_METHODS, mtlsFor } from '../mtls/index.ts';
import { pendingNotices } from '../notices/index.ts';
import { createRegistration, SOFTWARE_METADATA } from '../registration/index.ts';
import { SSF_SCOPES, SSF_TOKEN_TTL_SECONDS, ssfResourceIndicators } from '../signals/index.ts';
import { renderErrorPage } from '../web/index.ts';
import { createAdapterFactory, rememberJtiOnce } from './adapter.ts';
import { FAPI_ALGS } from './algs.ts';
import {
  messageSigningFeatures,
  RESOURCE_SERVER_METADATA,
  validateResourceServerMetadata,
} from './messageSigning.ts';

export { FAPI_ALGS } from './algs.ts';
/** Scopes the hub knows. `accounts` is read access to the accounts the customer picks at consent. */
export const SCOPES = ['openid', 'offline_access', 'accounts', ...GRANT_MANAGEMENT_SCOPES] as const;
/**
 * Assurance levels: `phr` phishing-resistant, `phrh` phishing-resistant hardware-protected, `otp`
 * an exempted customer's alternative MFA (not phishing-resistant).
 */
export const ACR_VALUES = ['phr', 'phrh', 'otp'] as const;

export interface CreateProviderOptions {
  config: Config;
  db: Db;
  keys: KeyMaterial;
}

export function createProvider({ config, db, keys }: CreateProviderOptions): Provider {
  const accountsSeen = new WeakMap<object, Map<string, boolean>>();
  const algs = [...FAPI_ALGS];
  const registration = createRegistration(config, db);
  const mtls = mtlsFor(config);
  const configuration: Configuration = {
    adapter: createAdapterFactory(db) as unknown as Configuration['adapter'],
    clients: [],
    clientDefaults: {
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'private_key_jwt',
      // No default token_endpoint_auth_signing_alg: oidc-provider refuses one on mTLS clients; a
      // private_key_jwt client without it may use any of FAPI_ALGS (enabledJWA).
      id_token_signed_response_alg: 'ES256',
      dpop_bound_access_tokens: true,
      require_pushed_authorization_requests: true,
      // Settled per client from its scope (settleClientDetailTypes in the validator below).
      authorization_details_types: [DETAIL_TYPES_FROM_SCOPE],
      authorization_signed_response_alg: 'ES256',
      introspection_signed_response_alg: 'ES256',
    },
    // FAPI 2.0 §5.3.3.4: private_key_jwt, and the RFC 8705 methods when mTLS is on (src/mtls).
    clientAuthMethods: ['private_key_jwt', ...(mtls.enabled ? MTLS_AUTH_METHODS : [])],
    enabledJWA: {
      clientAuthSigningAlgValues: algs,
      idTokenSigningAlgValues: algs,
      requestObjectSigningAlgValues: algs,
      userinfoSigningAlgValues: algs,
      introspectionSigningAlgValues: algs,
      authorizationSigningAlgValues: algs,
      dPoPSigningAlgValues: algs,
    },
    responseTypes: ['code'],
    // ssf.* only ever go to SSF peers' client-credentials tokens (src/signals/oauth.ts), institution:*
    // only to member institutions' (src/api/institution.ts); client metadata may only list known scopes.
    scopes: [...SCOPES, ...SSF_SCOPES, ...INSTITUTION_SCOPES],
    acrValues: [...ACR_VALUES],
    // Brokerages and apps learn a customer identifier of their own (issue 6): a client registered
    // with subject_type pairwise gets HMAC(secret, sector ‖ customer), unlinkable across sectors.
    subjectTypes: ['public', 'pairwise'],
    pairwiseIdentifier: async (_ctx, accountId, client) =>
      createHmac('sha256', keys.pairwiseSecret)
        .update(`${client.sectorIdentifier}\u0000${accountId}`)
        .digest('base64url'),
    // acr, amr and auth_time ride on the openid scope: relying parties always learn how the customer signed in.
    claims: { openid: ['sub', 'acr', 'amr', 'auth_time'] },
    // FAPI 2.0 requires the redirect_uri in every (pushed) authorization request.
    allowOmittingSingleRegisteredRedirectUri: false,
    clockTolerance: config.oidc.clockToleranceSeconds,
    jwks: keys.signingJwks as Configuration['jwks'],
    cookies: {
      // Keygrip-compatible but fast on Node 24 (see CookieSigner); the koa app that mounts the provider
      // must sign with the same object (createApp uses provider.keys).
      keys: new CookieSigner(keys.cookieKeys) as unknown as string[],
      long: { httpOnly: true, sameSite: 'lax', secure: true, signed: true },
      short: { httpOnly: true, sameSite: 'lax', secure: true, signed: true },
    },
    features: {
      devInteractions: { enabled: false },
      fapi: { enabled: true, profile: '2.0' },
      pushedAuthorizationRequests: {
        enabled: true,
        requirePushedAuthorizationRequests: true,
        allowUnregisteredRedirectUris: false,
      },
      dPoP: { enabled: true, nonceSecret: keys.dpopNonceSecret, allowReplay: false },
      // JAR, JARM, introspection (signed), revocation: src/oidc/messageSigning.ts.
      ...messageSigningFeatures({
        db,
        issuer: config.issuer,
        algs,
        clockToleranceSeconds: config.oidc.clockToleranceSeconds,
        transactionLookbackDays: config.api.transactionLookbackDays,
      }),
      // RFC 7591/7592 behind src/registration's guard.
      ...registration.features,
      mTLS: mtls.providerFeature(),
      rpInitiatedLogout: { enabled: true },
      // Brokerages learn when their customer's hub session ends, however it ends (src/oidc/backchannelLogout.ts).
      backchannelLogout: { enabled: true },
      userinfo: { enabled: true },
      claimsParameter: { enabled: false },
      // SSF peers manage their streams with client-credentials tokens for the SSF resource only
      // (src/signals/oauth.ts), member institutions push data with ones for the institution resource
      // (src/api/ingest.ts); FAPI clients are not registered for this grant and are unaffected.
      clientCredentials: { enabled: true },
      resourceIndicators: { enabled: true, ...hubResourceIndicators(config) },
      // RFC 9396: the types live in one registry (src/consent/authorizationDetails.ts).
      richAuthorizationRequests: richAuthorizationRequestsFeature({
        issuer: config.issuer,
        maxLookbackDays: config.api.transactionLookbackDays,
        maxExpirySeconds: config.oidc.grantTtl,
      }),
    },
    // Grant Management (src/grants): grant_management_action / grant_id, and which grant a request extends.
    extraParams: grantManagementParams(),
    loadExistingGrant,
    // A member institution's ingestion client names its institution (checked to exist at each call).
    extraClientMetadata: {
      // resource_server: may introspect (src/oidc/messageSigning.ts); software_*: from a software statement.
      properties: [INSTITUTION_ID_METADATA, RESOURCE_SERVER_METADATA, ...SOFTWARE_METADATA],
      validator: (_ctx, key, value, metadata) => {
        validateInstitutionMetadata(key, value, metadata as unknown as Record<string, unknown>);
        validateResourceServerMetadata(key, value);
        settleClientDetailTypes(metadata as unknown as Record<string, unknown>);
      },
    },
    // How the customer signed in rides on every access token (from the code or refresh token it
    // was issued for), so the resource server can ask for step-up (RFC 9470).
    extraTokenClaims: async (ctx, token) => {
      if (token.kind !== 'AccessToken') return undefined;
      const source = (ctx?.oidc?.entities?.AuthorizationCode ?? ctx?.oidc?.entities?.RefreshToken) as
        | { acr?: string; authTime?: number }
        | undefined;
      return source?.acr ? { acr: source.acr, auth_time: source.authTime } : undefined;
    },
    // Aggregator tokens live by the consent (the grant), not by the customer's browser session.
    expiresWithSession: async () => false,
    // FAPI 2.0 §5.3.2.1: a retried refresh must not revoke the grant, so refresh tokens stay.
    rotateRefreshToken: false,
    // Aggregators hold long-lived consent: every consented client allowed to refresh gets one.
    issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
    pkce: { required: () => true },
    ttl: {
      AuthorizationCode: config.oidc.authorizationCodeTtl,
      // A resource server may shorten it (the read API: to what is left of the consent).
      AccessToken: (_ctx, token) =>
        Math.min(
          config.oidc.accessTokenTtl,
          token.resourceServer?.accessTokenTTL ?? Number.POSITIVE_INFINITY,
        ),
      IdToken: config.oidc.idTokenTtl,
      RefreshToken: config.oidc.refreshTokenTtl,
      Session: config.oidc.sessionTtl,
      Interaction: config.oidc.interactionTtl,
      Grant: config.oidc.grantTtl,
      // SSF management tokens (client credentials): short-lived, as the CAEP interop profile asks.
      ClientCredentials: SSF_TOKEN_TTL_SECONDS,
    },
    interactions: {
      url: (_ctx, interaction) => `/interaction/${interaction.uid}`,
      policy: interactionPolicyFor(db),
    },
    findAccount: async (ctx, sub) => {
      // oidc-provider asks up to three times per request for the same subject; ask the database once.
      let known = accountsSeen.get(ctx);
      if (!known) {
        known = new Map();
        accountsSeen.set(ctx, known);
      }
      let active = known.get(sub);
      if (active === undefined) {
        const res = await db.query("SELECT 1 FROM customers WHERE id = $1 AND status = 'active'", [sub]);
        active = res.rowCount === 1;
        known.set(sub, active);
      }
      return active ? { accountId: sub, claims: async () => ({ sub }) } : undefined;
    },
    renderError: async (ctx, out) => {
      renderErrorPage(ctx as unknown as KoaContextWithOIDC, out as unknown as Record<string, string>);
    },
    discovery: { service_documentation: `${config.issuer}/docs`, ...grantManagementDiscovery(config.issuer) },
    ...(config.oidc.allowPrivateNetworkFetch
      ? {
          // Without oidc-provider's SSRF-protecting dispatcher: loopback receivers are reachable.
          fetch: (url: string | URL | Request, options?: RequestInit) => {
            const { dispatcher: _protected, ...rest } = (options ?? {}) as RequestInit & {
              dispatcher?: unknown;
            };
            return fetch(url, rest);
          },
        }
      : {}),
  };

  const provider = new Provider(config.issuer, configuration);
  registration.install(provider);
  bindRefreshTokensToProofKey(provider);
  addGrantIdToTokenResponses(provider);
  // One atomic statement instead of oidc-provider's find-then-save (see rememberJtiOnce).
  provider.ReplayDetection.unique = async (iss: string, jti: string, exp: number) =>
    rememberJtiOnce(
      db,
      createHash('sha256').update(`${iss}${jti}`).digest('base64url'),
      iss,
      exp - Math.floor(Date.now() / 1000),
    );
  limitRequestUriLifetime(provider, config.oidc.parTtl);
  // mtls_endpoint_aliases at request time: the mTLS listener's port may be chosen only at start.
  provider.use(async (ctx, next) => {
    await next();
    if (ctx.oidc?.route === 'discovery' && ctx.body && typeof ctx.body === 'object')
      Object.assign(
        ctx.body,
        mtls.discovery({ introspection: configuration.features?.introspection?.enabled === true }),
      );
  });
  return provider;
}

type ResourceIndicators = Omit<ReturnType<typeof ssfResourceIndicators>, 'useGrantedResource'> & {
  useGrantedResource(ctx: KoaContextWithOIDC, model: unknown): Promise<boolean>;
};

/**
 * The hub's resource servers besides userinfo: the SSF resource (peers) and the institution resource
 * (member institutions). A client-credentials request that names no resource gets the institution one
 * when it asks for institution:ingest, or when the client is an institution's and SSF claims nothing;
 * otherwise SSF decides exactly as before. Authorization-code flows still default to no resource.
 */
function hubResourceIndicators(config: Config): ResourceIndicators {
  const ssf = ssfResourceIndicators(config);
  const institution = institutionResource(config.issuer);
  const approvals = approvalResource(config.issuer);
  const api = apiLocation(config.issuer);
  return {
    async defaultResource(ctx, client, oneOf) {
      if (oneOf) return oneOf;
      const params = ctx.oidc.params as
        | { grant_type?: unknown; scope?: unknown; authorization_details?: unknown }
        | undefined;
      // An operation approval's token is for the decision endpoint only (RFC 9396 wants a resource).
      if (operationDetailsOf(params?.authorization_details)) return approvals;
      // RFC 9396 needs a resource: authorization details are for the read API (src/api).
      if (params?.authorization_details !== undefined && params.grant_type === undefined) return api;
      const credentials = params?.grant_type === 'client_credentials';
      const scopes = String(params?.scope ?? '').split(' ');
      if (credentials && scopes.some(isInstitutionScope)) return institution;
      const fromSsf = await ssf.defaultResource(ctx, client, oneOf);
      if (fromSsf !== undefined) return fromSsf;
      return credentials && institutionIdOf(client) ? institution : undefined;
    },
    async getResourceServerInfo(ctx, indicator, client): Promise<ResourceServer> {
      if (indicator === approvals) return approvalResourceServer(approvals, client);
      if (indicator === institution) return institutionResourceServer(config.issuer, ctx, client);
      if (indicator === api) {
        if ((ctx.oidc.params as { grant_type?: unknown } | undefined)?.grant_type === 'client_credentials')
          throw new errors.InvalidTarget('the read API needs a customer consent');
        // A token for the read API does not outlive its consent (the grant expires with it).
        const grantExp = (ctx.oidc.entities?.Grant as { exp?: number } | undefined)?.exp;
        const left = grantExp ? grantExp - Math.floor(Date.now() / 1000) : config.oidc.accessTokenTtl;
        return {
          scope: ['accounts', ...GRANT_MANAGEMENT_SCOPES].join(' '),
          audience: api,
          accessTokenTTL: Math.max(1, Math.min(config.oidc.accessTokenTtl, left)),
          accessTokenFormat: 'opaque',
        };
      }
      return ssf.getResourceServerInfo(ctx, indicator, client);
    },
    // A code or refresh token for the read API yields a token for it even with openid (not userinfo).
    async useGrantedResource(_ctx, model) {
      const granted = (model as { resource?: string | string[] }).resource;
      for (const own of [api, approvals])
        if (granted === own || (Array.isArray(granted) && granted.includes(own))) return true;
      return ssf.useGrantedResource();
    },
  };
}

/**
 * oidc-provider binds refresh tokens to a DPoP key only for public clients; for confidential
 * clients RFC 9449 leaves it to client authentication. Kakehashi binds every refresh token to
 * the same key as its first access token as well, so a stolen refresh token plus a stolen client
 * key are both needed; the refresh_token grant then checks `jkt` itself.
 */
function bindRefreshTokensToProofKey(provider: Provider): void {
  const proto = provider.RefreshToken.prototype as unknown as {
    save: (...args: unknown[]) => Promise<string>;
    jkt?: string;
    'x5t#S256'?: string;
  };
  const save = proto.save;
  proto.save = function saveBound(this: typeof proto, ...args: unknown[]) {
    const at = (Provider.ctx as KoaContextWithOIDC | undefined)?.oidc?.entities?.AccessToken as
      | { jkt?: string; 'x5t#S256'?: string }
      | undefined;
    if (at && !this.jkt && !this['x5t#S256']) {
      if (at.jkt) this.jkt = at.jkt;
      if (at['x5t#S256']) this['x5t#S256'] = at['x5t#S256'];
    }
    return save.apply(this, args);
  };
}

/**
 * oidc-provider fixes a request_uri's lifetime at 60 s (less for a request object expiring sooner)
 * and reads no ttl setting for it. Shorter lifetimes are honoured here: the stored request expires
 * after `seconds`, and the PAR response's expires_in says so.
 */
function limitRequestUriLifetime(provider: Provider, seconds: number): void {
  const proto = provider.PushedAuthorizationRequest.prototype as unknown as {
    save: (ttl?: number) => Promise<string>;
  };
  const save = proto.save;
  proto.save = function saveLimited(this: unknown, ttl?: number) {
    return save.call(this, Math.min(ttl ?? seconds, seconds));
  };
  provider.use(async (ctx, next) => {
    await next();
    const body = ctx.body as { expires_in?: number } | undefined;
    if (ctx.oidc?.route === 'pushed_authorization_request' && typeof body?.expires_in === 'number')
      body.expires_in = Math.min(body.expires_in, seconds);
  });
}

/**
 * oidc-provider does not enforce `acr_values` (only essential `acr` claims and max_age). Here an
 * existing session whose acr is not among the requested values does not satisfy the request: the
 * customer is asked to sign in again (and the interaction ends with unmet_authentication_requirements
 * when the sign-in still cannot reach a requested level; see src/oidc/interactions.ts).
 */
function interactionPolicyFor(db: Db): interactionPolicy.Prompt[] {
  const policy = interactionPolicy.base();
  // JSDA IV.7.(2)④: after signing in, notices the customer has not acknowledged come first.
  policy.add(
    new interactionPolicy.Prompt(
      { name: 'notices', requestable: false },
      new interactionPolicy.Check(
        'notices_pending',
        'important notices await acknowledgement',
        async (ctx) => {
          const customerId = ctx.oidc.session?.accountId;
          if (!customerId) return interactionPolicy.Check.NO_NEED_TO_PROMPT;
          return (await pendingNotices(db, customerId)).length > 0
            ? interactionPolicy.Check.REQUEST_PROMPT
            : interactionPolicy.Check.NO_NEED_TO_PROMPT;
        },
      ),
    ),
    1,
  );
  // Withdrawals and withdrawal-account changes: a passkey approval bound to the details, before consent.
  policy.add(approvalPrompt(), 2);
  policy.get('consent')!.checks.add(grantActionConsentCheck());
  policy.get('login')!.checks.add(
    new interactionPolicy.Check('acr_values_unmet', 'the session does not reach a requested acr', (ctx) => {
      const requested = requestedAcrValues(ctx.oidc.params?.acr_values);
      if (!requested) return interactionPolicy.Check.NO_NEED_TO_PROMPT;
      const acr = ctx.oidc.session?.acr;
      return acr && requested.includes(acr)
        ? interactionPolicy.Check.NO_NEED_TO_PROMPT
        : interactionPolicy.Check.REQUEST_PROMPT;
    }),
  );
  return policy;
}

/** The acr values a request asks for, or undefined when it names none. */
export function requestedAcrValues(param: unknown): string[] | undefined {
  const values = typeof param === 'string' ? param.split(' ').filter(Boolean) : [];
  return values.length ? values : undefined;
}
