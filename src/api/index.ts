/**
 * The resource server: read APIs for aggregators under /api/v1. Every call needs an access
 * token the hub issued, bound to a DPoP key whose proof accompanies the call, and the consent
 * behind the token must cover what is read.
 */
import Router from '@koa/router';
import type { Context } from 'koa';
import type Provider from 'oidc-provider';
import { recordAudit } from '../audit/index.ts';
import type { Config } from '../config/index.ts';
import type { Db } from '../db/index.ts';
import { FAPI_ALGS } from '../oidc/provider.ts';
import { DpopError, dpopSeenKey, verifyDpopProof } from './dpop.ts';
import { ApiError, dpopChallenge, sendApiError } from './errors.ts';

export { deleteExpiredDpopProofs } from './dpop.ts';
export { ApiError } from './errors.ts';

export interface ApiRoutesOptions {
  provider: Provider;
  db: Db;
  config: Config;
}

interface Authorized {
  customerId: string;
  clientId: string;
  grantId: string;
  scopes: Set<string>;
  /** The proof's jti, to be recorded by the read's own statement (one round trip per read). */
  proofSeen: { key: string; expiresAt: Date };
}

interface AccountRow {
  id: string;
  kind: string;
  tax_category: string | null;
  branch_code: string;
  account_number: string;
  nickname: string;
  currency: string;
  status: string;
  opened_on: Date | string;
  institution_id: string;
  name_ja: string;
  name_en: string;
}

const dateOnly = (d: Date | string) =>
  typeof d === 'string' ? d.slice(0, 10) : d.toISOString().slice(0, 10);
const mask = (n: string) => `${'*'.repeat(Math.max(0, n.length - 3))}${n.slice(-3)}`;

export function apiRoutes({ provider, db, config }: ApiRoutesOptions): Router {
  const router = new Router({ prefix: '/api/v1' });
  const invalid = (description: string) =>
    new ApiError(401, 'invalid_token', description, dpopChallenge('invalid_token', description, FAPI_ALGS));

  /** Audits a refused DPoP proof and returns the error to answer with. */
  async function rejectProof(
    ctx: Context,
    who: { clientId?: string | undefined; customerId?: string | undefined },
    reason: string,
  ): Promise<ApiError> {
    await recordAudit(db, {
      type: 'api.dpop.rejected',
      outcome: 'failure',
      clientId: who.clientId,
      customerId: who.customerId,
      ip: ctx.ip,
      data: { reason, path: ctx.path },
    });
    return invalid(reason);
  }

  /** Authenticates the call: DPoP-bound access token + a valid proof for this exact request. */
  async function authorize(ctx: Context, scope: string): Promise<Authorized> {
    const header = ctx.get('authorization');
    const match = /^(\S+) +(\S+)$/.exec(header);
    if (!match)
      throw new ApiError(
        401,
        'unauthorized',
        'a DPoP-bound access token is required',
        dpopChallenge(undefined, undefined, FAPI_ALGS),
      );
    const [, scheme, value] = match as unknown as [string, string, string];
    if (scheme.toLowerCase() !== 'dpop')
      throw invalid('the access token must be presented with the DPoP scheme');
    const token = await provider.AccessToken.find(value);
    if (!token || token.isExpired) throw invalid('the access token is invalid, expired or revoked');
    if (!token.jkt) throw invalid('the access token is not DPoP-bound');
    const raw = ctx.req.headers.dpop;
    const proofs = raw === undefined ? [] : Array.isArray(raw) ? raw : [raw];
    // Every other check first; the jti is recorded atomically by the read's statement (see readOnce).
    let proofSeen: Authorized['proofSeen'] | undefined;
    const replay = {
      async remember(jtiKey: string, expiresAt: Date) {
        proofSeen = { key: dpopSeenKey(jtiKey), expiresAt };
        return true;
      },
    };
    try {
      await verifyDpopProof({
        headers: proofs,
        method: ctx.method,
        url: `${config.origin}${ctx.originalUrl}`,
        accessToken: value,
        expectedJkt: token.jkt,
        replay,
        iatWindowSeconds: config.api.dpopIatWindowSeconds,
      });
    } catch (err) {
      if (!(err instanceof DpopError)) throw err;
      throw await rejectProof(ctx, { clientId: token.clientId, customerId: token.accountId }, err.message);
    }
    const scopes = new Set(String(token.scope ?? '').split(' '));
    if (!scopes.has(scope))
      throw new ApiError(
        403,
        'insufficient_scope',
        `the token lacks the ${scope} scope`,
        dpopChallenge('insufficient_scope', undefined, FAPI_ALGS),
      );
    if (!token.grantId || !token.accountId) throw invalid('the access token has no consent');
    return {
      customerId: token.accountId,
      clientId: token.clientId!,
      grantId: token.grantId,
      scopes,
      proofSeen: proofSeen!,
    };
  }

  router.use(async (ctx, next) => {
    ctx.set('cache-control', 'no-store');
    try {
      await next();
      if (ctx.status === 404 && ctx.body === undefined)
        throw new ApiError(404, 'not_found', 'no such resource');
    } catch (err) {
      if (!(err instanceof ApiError)) throw err;
      sendApiError(ctx, err);
    }
  });

  router.get('/accounts', async (ctx) => {
    const auth = await authorize(ctx, 'accounts');
    // One round trip records the proof's jti (replay check) and reads the consented accounts.
    // A first row with a null grant_id means no active consent; a null id, a consent without accounts.
    const res = await db.query<AccountRow & { fresh: number; grant_id: string | null }>(
      `WITH seen AS (
         INSERT INTO dpop_seen (jti_hash, expires_at) VALUES ($4, $5) ON CONFLICT (jti_hash) DO NOTHING RETURNING 1)
       SELECT (SELECT count(*) FROM seen)::int AS fresh, x.* FROM (SELECT 1) AS one LEFT JOIN (
         SELECT c.grant_id, a.id, a.kind, a.tax_category, a.branch_code, a.account_number, a.nickname, a.currency,
                a.status, a.opened_on, a.institution_id, i.name_ja, i.name_en
         FROM consents c
         LEFT JOIN accounts a ON a.id = ANY (c.account_ids) AND a.customer_id = c.customer_id
         LEFT JOIN institutions i ON i.id = a.institution_id
         WHERE c.grant_id = $1 AND c.client_id = $2 AND c.customer_id = $3 AND c.revoked_at IS NULL
           AND c.expires_at > now()) AS x ON true
       ORDER BY x.opened_on, x.id`,
      [
        auth.grantId,
        auth.clientId,
        auth.customerId,
        auth.proofSeen.key,
        auth.proofSeen.expiresAt.toISOString(),
      ],
    );
    if (res.rows[0]?.fresh !== 1) throw await rejectProof(ctx, auth, 'DPoP proof replayed');
    if (!res.rows[0]?.grant_id)
      throw new ApiError(403, 'consent_inactive', 'the consent behind this token was revoked or has expired');
    const accounts = res.rows.filter((r) => r.id !== null);
    ctx.body = {
      data: accounts.map((a) => ({
        accountId: a.id,
        kind: a.kind,
        taxCategory: a.tax_category,
        institution: { id: a.institution_id, name: { ja: a.name_ja, en: a.name_en } },
        nickname: a.nickname,
        branchCode: a.branch_code,
        accountNumberMasked: mask(a.account_number),
        currency: a.currency,
        status: a.status,
        openedOn: dateOnly(a.opened_on),
      })),
      links: { self: `${config.issuer}/api/v1/accounts` },
      meta: { totalRecords: accounts.length, interactionId: ctx.state.interactionId },
    };
  });

  return router;
}
