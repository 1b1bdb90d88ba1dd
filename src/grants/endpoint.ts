/**
 * The Grant Management endpoint (FAPI Grant Management for OAuth 2.0, ID1), which oidc-provider
 * does not have: `GET /grants/{grant_id}` (query) and `DELETE /grants/{grant_id}` (revoke, 204).
 * The caller is the client that owns the grant, with an access token the hub issued carrying
 * `grant_management_query` / `grant_management_revoke`, checked as the read API checks its tokens
 * (src/api/accessTokenCheck.ts): DPoP-bound with a proof for this exact request, or certificate-bound
 * over that certificate. Errors are OAuth JSON errors ({error, error_description}) with a challenge
 * in the client's scheme where a token is at fault; a grant that is unknown, ended or another
 * client's is one and the same 404.
 */
import Router from '@koa/router';
import type { Context } from 'koa';
import type Provider from 'oidc-provider';
import { ApiError, createAccessTokenCheck, createDbReplayStore, invalidTokenError } from '../api/index.ts';
import type { Config } from '../config/index.ts';
import { findActiveConsent, revokeConsent } from '../consent/index.ts';
import type { Db } from '../db/index.ts';
import { mtlsFor } from '../mtls/index.ts';
import { FAPI_ALGS } from '../oidc/provider.ts';

export interface GrantManagementRoutesOptions {
  provider: Provider;
  db: Db;
  config: Config;
}

const GRANT_ID = /^[A-Za-z0-9_-]{1,128}$/;

type GrantPayload = {
  jti: string;
  clientId: string;
  accountId: string;
  openid?: { scope?: string; claims?: string[] };
  resources?: Record<string, string>;
  rar?: unknown[];
};

export function grantManagementRoutes({ provider, db, config }: GrantManagementRoutesOptions): Router {
  const router = new Router({ prefix: '/grants' });
  const replay = createDbReplayStore(db);
  const notFound = () => new ApiError(404, 'invalid_grant_id', 'no such grant');

  // The read API's check (src/api/accessTokenCheck.ts): failures audited as `grants.dpop.rejected`
  // and `grants.mtls.rejected`, challenges in the scheme the client used.
  const tokenCheck = createAccessTokenCheck({
    db,
    config,
    mtls: mtlsFor(config),
    algs: FAPI_ALGS,
    find: async (value) => {
      const token = await provider.AccessToken.find(value);
      return token && !token.isExpired ? token : undefined;
    },
    audit: 'grants',
  });

  /** The calling client, once its token and its sender constraint hold and the token has `scope`. */
  async function authenticate(ctx: Context, scope: string): Promise<{ clientId: string }> {
    const { token, scheme } = await tokenCheck.check(ctx, scope, replay);
    const client = await db.query('SELECT 1 FROM clients WHERE client_id = $1 AND enabled', [token.clientId]);
    if (client.rowCount !== 1) throw invalidTokenError(scheme, 'the client has been disabled', FAPI_ALGS);
    return { clientId: token.clientId! };
  }

  /** The grant of this path, if it is the caller's and still exists. */
  async function grantOf(ctx: Context, clientId: string): Promise<GrantPayload> {
    const grantId = ctx.params.grantId ?? '';
    if (!GRANT_ID.test(grantId)) throw notFound();
    const grant = (await provider.Grant.find(grantId)) as unknown as GrantPayload | undefined;
    if (!grant || grant.clientId !== clientId) throw notFound();
    return grant;
  }

  router.use(async (ctx, next) => {
    ctx.set('cache-control', 'no-store');
    try {
      await next();
    } catch (err) {
      if (!(err instanceof ApiError)) throw err;
      ctx.status = err.status;
      if (err.challenge) ctx.set('www-authenticate', err.challenge);
      ctx.body = { error: err.code, error_description: err.message };
    }
  });

  router.get('/:grantId', async (ctx) => {
    const { clientId } = await authenticate(ctx, 'grant_management_query');
    const grant = await grantOf(ctx, clientId);
    const consent = await findActiveConsent(db, grant.jti);
    const scopes: Array<{ scope: string; resource?: string[] }> = [];
    if (grant.openid?.scope) scopes.push({ scope: grant.openid.scope });
    for (const [resource, scope] of Object.entries(grant.resources ?? {}))
      if (scope) scopes.push({ scope, resource: [resource] });
    ctx.body = {
      scopes,
      ...(grant.openid?.claims?.length ? { claims: grant.openid.claims } : {}),
      ...(grant.rar?.length ? { authorization_details: grant.rar } : {}),
      // Kakehashi's additions: when the consent was given, expires and was last used.
      ...(consent
        ? {
            created_at: consent.createdAt.toISOString(),
            expires_at: consent.expiresAt.toISOString(),
            last_used_at: consent.lastUsedAt?.toISOString() ?? null,
          }
        : {}),
    };
  });

  router.delete('/:grantId', async (ctx) => {
    const { clientId } = await authenticate(ctx, 'grant_management_revoke');
    const grant = await grantOf(ctx, clientId);
    await revokeConsent(db, {
      grantId: grant.jti,
      customerId: grant.accountId,
      by: { client: clientId },
      reason: 'revoked by the client through the grant management endpoint',
      request: { ip: ctx.ip, userAgent: ctx.get('user-agent') },
    });
    ctx.status = 204;
  });

  router.all('/:grantId', (ctx) => {
    ctx.set('allow', 'GET, DELETE');
    throw new ApiError(405, 'invalid_request', `${ctx.method} is not allowed here; use GET or DELETE`);
  });
  return router;
}
