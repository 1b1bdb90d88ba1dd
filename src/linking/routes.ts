/**
 * HTTP surface of bank linking:
 *   /account/links               the customer's links and the form to start one (signed in)
 *   POST /account/links/start    → the bank's authorization endpoint
 *   GET  /account/links/callback/{bankId} ← the bank; decides, shows the result (each bank its own
 *                                path against mix-up; the bare path only for attempts started before)
 *   POST /account/links/remove   unlink at once
 *   POST /api/institution/v1/links/{linkId}/suspend | /resume   (scope institution:links)
 *   GET  /api/institution/v1/links?customer=<customer number>   (scope institution:links)
 *   GET  /api/institution/v1/events?after=<id>                  (scope institution:links)
 *   GET  /federation/jwks.json   the hub's RP key that banks register for private_key_jwt
 * Mount before the API router (whose catch-all answers 404 for unknown /api paths).
 */
import Router from '@koa/router';
import type { Context } from 'koa';
import type Provider from 'oidc-provider';
import { accountCsrfToken, createAccountForms } from '../account/index.ts';
import {
  ApiError,
  createDbReplayStore,
  createInstitutionAuthenticator,
  type InstitutionTrace,
  LINKS_SCOPE,
  sendApiError,
} from '../api/index.ts';
import { recordAudit } from '../audit/index.ts';
import { recordSampledAudit } from '../audit/sampled.ts';
import type { AuthnContext } from '../authn/index.ts';
import type { Config } from '../config/index.ts';
import type { Db } from '../db/index.ts';
import {
  BANK_CALLBACK_PATH,
  createBankFederation,
  FederationError,
  RP_JWKS_MAX_AGE_SECONDS,
} from '../federation/index.ts';
import { BodyError, HttpError, readBody } from '../http/index.ts';
import { loadKeyEncryptionKey } from '../keys/index.ts';
import { requestMeta } from '../oidc/passkeySignIn.ts';
import { riskEngineFor } from '../risk/index.ts';
import { languageOf } from '../web/index.ts';
import { maskAccountNumber } from './approvals/operationDetails.ts';
import {
  finishBankLink,
  type LinkingDeps,
  listBankLinks,
  listInstitutionEvents,
  listInstitutionLinks,
  setBankLinkSuspended,
  startBankLink,
  unlinkBankLink,
} from './bankLinks.ts';
import { LinkError } from './errors.ts';
import { linkResultPage, linksPage } from './pages.ts';
import type { Policy } from './policy/parsePolicy.ts';

export interface LinkingRoutesOptions {
  provider: Provider;
  db: Db;
  config: Config;
  authn: AuthnContext;
  /** The withdrawal-strength policy, loaded once at start (src/app.ts). */
  policy: Policy;
}

const LINK_STATUS: Record<LinkError['code'], number> = {
  ERR_LINK_ACCOUNT: 400,
  ERR_LINK_BANK: 400,
  ERR_LINK_STATE: 400,
  ERR_LINK_REPLAY: 400,
  ERR_LINK_EXPIRED: 400,
  ERR_LINK_SESSION: 400,
  ERR_LINK_WRONG_BANK: 400,
  ERR_LINK_NOT_FOUND: 404,
  ERR_LINK_STATUS: 409,
  ERR_LINK_SUSPENDED_BY_OTHER: 409,
  ERR_LINK_BANK_UNAVAILABLE: 503,
  ERR_LINK_HUB_UNAVAILABLE: 503,
};

const LINK_ID = /^lnk_[0-9a-f]{32}$/;
const CUSTOMER_NUMBER = /^[\x21-\x7e]{1,64}$/;

export function linkingRoutes({ provider, db, config, authn, policy }: LinkingRoutesOptions): Router {
  const router = new Router();
  const kek = authn.kek ?? loadKeyEncryptionKey(config);
  const federation = createBankFederation({ config, db, kek });
  const deps: LinkingDeps = { db, config, policy, federation, kek };
  const sessionCookie = provider.cookieName('session');
  const authenticate = createInstitutionAuthenticator({
    provider,
    db,
    config,
    replay: createDbReplayStore(db),
  });

  // Link forms are handled like every other form of the customer's pages, risk check included.
  const forms = createAccountForms({
    provider,
    risk: { db, risk: riskEngineFor(config) },
    errorOf: (err) =>
      err instanceof LinkError ? { status: LINK_STATUS[err.code], code: err.code } : undefined,
  });
  const { signedIn, fail } = forms;

  router.get('/account/links', async (ctx) => {
    ctx.set('cache-control', 'no-store');
    const session = await signedIn(ctx);
    if (!session) return ctx.redirect('/account');
    const [accounts, links] = await Promise.all([
      db.query<{ id: string; nickname: string; account_number: string }>(
        "SELECT id, nickname, account_number FROM accounts WHERE customer_id = $1 AND kind = 'securities' AND status = 'open' ORDER BY opened_on, id",
        [session.accountId],
      ),
      listBankLinks(db, session.accountId),
    ]);
    ctx.type = 'html';
    ctx.body = linksPage({
      lang: languageOf(ctx),
      csrf: accountCsrfToken(session),
      banks: federation.banks,
      accounts: accounts.rows.map((a) => ({
        id: a.id,
        nickname: a.nickname,
        masked: maskAccountNumber(a.account_number),
      })),
      links,
    });
  });

  // A new path for money: a sensitive operation, held back when the session's risk asks for it.
  router.post('/account/links/start', (ctx) =>
    forms.handle(ctx, async (session, body) => {
      const url = await startBankLink(deps, {
        customerId: session.accountId,
        sessionUid: session.uid,
        sessionAcr: session.acr,
        sessionLoginTs: session.loginTs,
        bankId: body.get('bankId') ?? '',
        accountId: body.get('accountId') ?? '',
        meta: requestMeta(ctx),
      });
      return url.href;
    }),
  );

  const callback = async (ctx: Context) => {
    ctx.set('cache-control', 'no-store');
    try {
      const session = await signedIn(ctx);
      if (!session) throw new HttpError(401, 'login_required', 'sign in first, then start the link again');
      const outcome = await finishBankLink(deps, {
        callbackUrl: new URL(ctx.originalUrl, config.issuer),
        customerId: session.accountId,
        sessionUid: session.uid,
        meta: requestMeta(ctx),
      });
      if (outcome.kind === 'step_up') {
        // Asked to sign in again: this sign-in ends, the next one is a passkey at /account.
        await session.destroy();
        ctx.cookies.set(sessionCookie, null, { signed: true, overwrite: true });
      }
      ctx.type = 'html';
      ctx.body = linkResultPage({ lang: languageOf(ctx), outcome });
    } catch (err) {
      fail(ctx, err);
    }
  };
  // finishBankLink checks the path against the attempt's redirect URI (its bank's).
  router.get(`${BANK_CALLBACK_PATH}/:bankId`, callback);
  router.get(BANK_CALLBACK_PATH, callback);

  // Unlinking stops money moving: protective, so assessed and recorded but never held back.
  router.post('/account/links/remove', (ctx) =>
    forms.handle(ctx, async (session, body) => {
      await unlinkBankLink(deps, {
        customerId: session.accountId,
        linkId: body.get('linkId') ?? '',
        meta: requestMeta(ctx),
      });
      return '/account/links';
    }),
  );

  router.get('/federation/jwks.json', async (ctx) => {
    try {
      ctx.body = await federation.jwks();
      // Public keys, the same for everyone: shared caches may keep them as long as banks do. A staged
      // key must be in every bank's copy before promote-rp (docs/key-rotation.md: wait this long).
      ctx.set('cache-control', `public, max-age=${RP_JWKS_MAX_AGE_SECONDS}`);
      ctx.type = 'application/jwk-set+json';
    } catch (err) {
      if (!(err instanceof FederationError) || err.code !== 'ERR_RP_KEY') throw err;
      // Any caller on the internet asks for this document: while the key is out, per source sampled.
      await recordSampledAudit(db, {
        type: 'federation.rp_key.unavailable',
        outcome: 'failure',
        actor: 'system',
        ip: ctx.ip,
        data: { reason: err.message },
      });
      ctx.set('cache-control', 'no-store');
      ctx.status = 503;
      ctx.body = {
        error: 'temporarily_unavailable',
        error_description: 'the relying-party key is unavailable',
      };
    }
  });

  // --- institution API --------------------------------------------------------------------------

  /** Runs an institution call in the API's envelope; refused calls are audited. */
  const institutionCall =
    (
      name: string,
      handle: (ctx: Context, caller: { clientId: string; institutionId: string }) => Promise<void>,
    ) =>
    async (ctx: Context) => {
      ctx.set('cache-control', 'no-store');
      const trace: InstitutionTrace = {};
      try {
        const caller = await authenticate(ctx, LINKS_SCOPE, trace);
        await handle(ctx, caller);
      } catch (err) {
        const apiErr =
          err instanceof LinkError
            ? new ApiError(
                LINK_STATUS[err.code],
                err.code === 'ERR_LINK_NOT_FOUND' ? 'not_found' : 'conflict',
                err.message,
              )
            : err instanceof BodyError
              ? new ApiError(err.status, 'invalid_request', err.message)
              : err;
        if (!(apiErr instanceof ApiError)) throw err;
        // Before any live token was presented the caller is anyone: sampled (docs/audit-sampling.md).
        await (trace.clientId ? recordAudit : recordSampledAudit)(db, {
          type: `api.links.${name}.refused`,
          outcome: 'failure',
          actor: trace.clientId ? `client:${trace.clientId}` : undefined,
          clientId: trace.clientId,
          ...requestMeta(ctx),
          data: {
            institutionId: trace.institutionId ?? null,
            status: apiErr.status,
            code: apiErr.code,
            reason: apiErr.message,
          },
        });
        sendApiError(ctx, apiErr);
      }
    };

  const suspension = (suspend: boolean) =>
    institutionCall(suspend ? 'suspend' : 'resume', async (ctx, caller) => {
      const linkId = String(ctx.params.linkId ?? '');
      if (!LINK_ID.test(linkId)) throw new ApiError(404, 'not_found', 'no such link');
      let reason: string | undefined;
      if (Number(ctx.get('content-length') || 0) > 0) {
        const body = await readBody(ctx, 'json', 4096);
        if (body.reason !== undefined && (typeof body.reason !== 'string' || body.reason.length > 200))
          throw new ApiError(400, 'invalid_request', 'reason must be a string of at most 200 characters');
        reason = body.reason as string | undefined;
      }
      const link = await setBankLinkSuspended(db, config, {
        linkId,
        institutionId: caller.institutionId,
        clientId: caller.clientId,
        suspend,
        reason,
        meta: requestMeta(ctx),
      });
      ctx.body = { data: institutionView(link), meta: { interactionId: ctx.state.interactionId } };
    });

  router.post('/api/institution/v1/links/:linkId/suspend', suspension(true));
  router.post('/api/institution/v1/links/:linkId/resume', suspension(false));

  router.get(
    '/api/institution/v1/links',
    institutionCall('list', async (ctx, caller) => {
      const customer = ctx.query.customer;
      if (customer !== undefined && (typeof customer !== 'string' || !CUSTOMER_NUMBER.test(customer)))
        throw new ApiError(400, 'invalid_request', 'customer must be one customer number');
      const links = await listInstitutionLinks(db, caller.institutionId, customer);
      ctx.body = { data: links.map(institutionView), meta: { totalRecords: links.length } };
    }),
  );

  router.get(
    '/api/institution/v1/events',
    institutionCall('events', async (ctx, caller) => {
      const after = ctx.query.after === undefined ? 0 : Number(ctx.query.after);
      if (!Number.isSafeInteger(after) || after < 0)
        throw new ApiError(400, 'invalid_request', 'after must be a non-negative integer event id');
      const events = await listInstitutionEvents(db, caller.institutionId, after, 100);
      ctx.body = {
        data: events,
        meta: { next: events.length ? events.at(-1)!.id : after },
      };
    }),
  );

  const methodNotAllowed = (allow: string) => (ctx: Context) => {
    ctx.set('allow', allow);
    sendApiError(
      ctx,
      new ApiError(405, 'method_not_allowed', `${ctx.method} is not allowed here; use ${allow}`),
    );
  };
  router.all('/api/institution/v1/links/:linkId/suspend', methodNotAllowed('POST'));
  router.all('/api/institution/v1/links/:linkId/resume', methodNotAllowed('POST'));
  router.all('/api/institution/v1/links', methodNotAllowed('GET'));
  router.all('/api/institution/v1/events', methodNotAllowed('GET'));

  return router;
}

/** What an institution sees of a link: no customer id of the hub, no bank subject. */
function institutionView(l: Awaited<ReturnType<typeof listBankLinks>>[number]) {
  return {
    linkId: l.id,
    accountId: l.accountId,
    brokerageInstitutionId: l.brokerageInstitutionId,
    bankId: l.bankId,
    bankInstitutionId: l.bankInstitutionId,
    bankAccountMasked: l.bankAccountMasked,
    bankStrength: l.bankStrength,
    capAmount: l.capAmount,
    status: l.status,
    suspendedBy: l.suspendedBy,
    createdAt: l.createdAt,
    updatedAt: l.updatedAt,
  };
}
