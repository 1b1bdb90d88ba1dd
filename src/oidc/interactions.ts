/**
 * The pages oidc-provider sends the browser to (`/interaction/:uid`): passkey login, enrollment
 * with a one-time ticket, and consent. JSON endpoints serve the WebAuthn ceremonies; every
 * error answers in the OAuth error shape with a 4xx.
 */
import Router from '@koa/router';
import type { Context } from 'koa';
import type Provider from 'oidc-provider';
import type { InteractionResults } from 'oidc-provider';
import { errors as oidcErrors } from 'oidc-provider';
import { recordAudit } from '../audit/index.ts';
import {
  ALTERNATIVE_MFA_ACR,
  type AuthnContext,
  confirmTotpSetup,
  finishPasskeyRegistration,
  startPasskeyAuthentication,
  startPasskeyRegistration,
  startTotpSetup,
} from '../authn/index.ts';
import type { Config } from '../config/index.ts';
import {
  accountInformationOf,
  applyConsentDecision,
  ConsentError,
  requestedDetails,
  termsOf,
} from '../consent/index.ts';
import type { Db } from '../db/index.ts';
import { BodyError, HttpError, readBody } from '../http/index.ts';
import { approvalView } from '../linking/approvals/approvalInteraction.ts';
import { acknowledgeNotices, pendingNotices } from '../notices/index.ts';
import { completeRecoveryAfterEnrollment, enrollmentProof, reproofed } from '../proofing/index.ts';
import { DEFAULT_THROTTLE_POLICY, riskEngineFor, type ThrottlePolicy } from '../risk/index.ts';
import {
  alternativeLoginPage,
  approvalPage,
  consentPage,
  enrollPage,
  errorPage,
  languageOf,
  loginPage,
  noticesPage,
} from '../web/index.ts';
import { jsonEndpoint } from './jsonEndpoint.ts';
import {
  checkTicketThrottled,
  requestMeta,
  signInWithAlternativeMfa,
  signInWithPasskey,
} from './passkeySignIn.ts';
import { requestedAcrValues } from './provider.ts';
import { notifyCustomer } from './securityNotices.ts';

export interface InteractionRoutesOptions {
  provider: Provider;
  db: Db;
  config: Config;
  authn: AuthnContext;
  throttle?: ThrottlePolicy;
}

type Details = Awaited<ReturnType<Provider['interactionDetails']>>;

/** The customer number and enrollment ticket a customer typed, or a 400. */
function ticketInput(body: Record<string, unknown>): { customerNumber: string; ticket: string } {
  const customerNumber = typeof body.customerNumber === 'string' ? body.customerNumber.trim() : '';
  const ticket = typeof body.ticket === 'string' ? body.ticket : '';
  if (!customerNumber || !ticket || customerNumber.length > 32 || ticket.length > 64)
    throw new HttpError(400, 'invalid_request', 'customer number and registration code are required');
  return { customerNumber, ticket };
}

export function interactionRoutes({
  provider,
  db,
  config,
  authn,
  throttle = DEFAULT_THROTTLE_POLICY,
}: InteractionRoutesOptions): Router {
  const signIn = { db, authn, throttle, risk: riskEngineFor(config) };
  const router = new Router({ prefix: '/interaction/:uid' });

  /** Loads the interaction bound to this browser's cookie and to the uid in the path. */
  async function details(ctx: Context): Promise<Details> {
    try {
      const d = await provider.interactionDetails(ctx.req, ctx.res);
      if (d.uid !== ctx.params.uid) throw new HttpError(400, 'invalid_request', 'interaction mismatch');
      return d;
    } catch (err) {
      if (err instanceof HttpError) throw err;
      if (err instanceof oidcErrors.SessionNotFound)
        throw new HttpError(
          400,
          'invalid_request',
          'the sign-in has expired or was opened in another browser; start again from the application',
        );
      throw err;
    }
  }

  /**
   * Records the interaction's result on the interaction already loaded by details() — what
   * provider.interactionResult does, without loading the interaction, its session and cookies again.
   */
  async function storeResult(
    d: Details,
    result: InteractionResults,
    options: { mergeWithLastSubmission: boolean },
  ): Promise<string> {
    d.result =
      options.mergeWithLastSubmission && !('error' in result) ? { ...d.lastSubmission, ...result } : result;
    await d.save(d.exp - Math.floor(Date.now() / 1000));
    return d.returnTo;
  }

  /**
   * Records a sign-in. When the client asked for acr values this sign-in cannot reach (e.g. `phrh`
   * after a synced passkey, `phr` after the alternative MFA), the request ends with
   * unmet_authentication_requirements instead of looping back to the login prompt.
   */
  async function storeLogin(
    d: Details,
    login: { customerId: string; acr: string; amr: string[]; authTime: number },
  ): Promise<string> {
    const requested = requestedAcrValues(d.params.acr_values);
    if (requested && !requested.includes(login.acr)) {
      await recordAudit(db, {
        type: 'authn.acr.unmet',
        outcome: 'failure',
        customerId: login.customerId,
        clientId: String(d.params.client_id),
        interactionId: d.uid,
        data: { requested, achieved: login.acr },
      });
      return storeResult(
        d,
        {
          error: 'unmet_authentication_requirements',
          error_description: `the sign-in reached acr ${login.acr}, the client requires one of ${requested.join(' ')}`,
        },
        { mergeWithLastSubmission: false },
      );
    }
    return storeResult(
      d,
      { login: { accountId: login.customerId, acr: login.acr, amr: login.amr, ts: login.authTime } },
      { mergeWithLastSubmission: false },
    );
  }

  /** Stores the result and sends the browser back to the authorization endpoint. */
  async function finish(
    ctx: Context,
    d: Details,
    result: InteractionResults,
    options: { mergeWithLastSubmission: boolean },
  ) {
    ctx.redirect(await storeResult(d, result, options));
    ctx.status = 303;
  }

  async function clientName(clientId: unknown): Promise<string> {
    const client = typeof clientId === 'string' ? await provider.Client.find(clientId) : undefined;
    return (client?.clientName as string | undefined) ?? String(clientId);
  }

  async function page(ctx: Context, work: () => Promise<string>): Promise<void> {
    ctx.set('cache-control', 'no-store');
    ctx.type = 'html';
    try {
      ctx.body = await work();
    } catch (err) {
      if (!(err instanceof HttpError)) throw err;
      ctx.status = err.status;
      ctx.body = errorPage({ lang: languageOf(ctx), error: err.error, description: err.message });
    }
  }

  router.get('/', (ctx) =>
    page(ctx, async () => {
      const d = await details(ctx);
      const lang = languageOf(ctx);
      const name = await clientName(d.params.client_id);
      if (d.prompt.name === 'login') {
        const acr = requestedAcrValues(d.params.acr_values);
        return loginPage({
          lang,
          uid: d.uid,
          clientName: name,
          enrolled: ctx.query.enrolled === '1',
          unlocked: ctx.query.unlocked === '1',
          alternative: !acr || acr.includes(ALTERNATIVE_MFA_ACR),
        });
      }
      if (d.prompt.name === 'consent') {
        const customerId = d.session?.accountId;
        if (!customerId) throw new HttpError(400, 'invalid_request', 'no signed-in customer');
        const accounts = await db.query<{
          id: string;
          nickname: string;
          tax_category: string | null;
          account_number: string;
          name_ja: string;
          name_en: string;
        }>(
          `SELECT a.id, a.nickname, a.tax_category, a.account_number, i.name_ja, i.name_en
           FROM accounts a JOIN institutions i ON i.id = a.institution_id
           WHERE a.customer_id = $1 AND a.status = 'open' ORDER BY a.opened_on, a.id`,
          [customerId],
        );
        const scopes = String(d.params.scope ?? '')
          .split(' ')
          .filter(Boolean);
        const info = accountInformationOf(requestedDetails(d.params));
        const action = d.params.grant_management_action;
        const preview = termsOf(
          { scopes, accountInformation: info, accountIds: [] },
          { lookbackDays: config.api.transactionLookbackDays, grantTtlSeconds: config.oidc.grantTtl },
        );
        return consentPage({
          lang,
          uid: d.uid,
          clientName: name,
          scopes,
          data: preview.dataTypes.length ? preview : undefined,
          hinted: info?.account_hints,
          action: action === 'merge' || action === 'replace' ? action : undefined,
          accounts: accounts.rows.map((a) => ({
            id: a.id,
            nickname: a.nickname,
            institutionName: lang === 'ja' ? a.name_ja : a.name_en,
            taxCategory: a.tax_category,
            maskedNumber: `••••${a.account_number.slice(-3)}`,
          })),
        });
      }
      if (d.prompt.name === 'approval')
        return approvalPage({ lang, uid: d.uid, view: await approvalView(db, d, name) });
      if (d.prompt.name === 'notices') {
        const customerId = d.session?.accountId;
        if (!customerId) throw new HttpError(400, 'invalid_request', 'no signed-in customer');
        return noticesPage({
          lang,
          uid: d.uid,
          notices: (await pendingNotices(db, customerId)).map((n) => ({
            id: n.id,
            title: n.title[lang],
            body: n.body[lang],
          })),
        });
      }
      throw new HttpError(400, 'invalid_request', `unsupported prompt ${d.prompt.name}`);
    }),
  );

  router.get('/enroll', (ctx) =>
    page(ctx, async () => {
      const d = await details(ctx);
      const proofing = typeof ctx.query.proofing === 'string' ? ctx.query.proofing.slice(0, 200) : undefined;
      return enrollPage({ lang: languageOf(ctx), uid: d.uid, proofing });
    }),
  );

  router.post('/passkey/options', (ctx) =>
    jsonEndpoint(ctx, async () => {
      const d = await details(ctx);
      return startPasskeyAuthentication(authn, { interactionId: d.uid });
    }),
  );

  router.post('/passkey/verify', (ctx) =>
    jsonEndpoint(ctx, async () => {
      const d = await details(ctx);
      if (d.prompt.name !== 'login') throw new HttpError(400, 'invalid_request', 'already signed in');
      const body = await readBody(ctx, 'json');
      const result = await signInWithPasskey(signIn, ctx, { ceremonyId: d.uid, response: body });
      return { redirectTo: await storeLogin(d, result) };
    }),
  );

  router.get('/alternative', (ctx) =>
    page(ctx, async () => {
      const d = await details(ctx);
      return alternativeLoginPage({ lang: languageOf(ctx), uid: d.uid });
    }),
  );

  router.post('/alternative/verify', (ctx) =>
    jsonEndpoint(ctx, async () => {
      const d = await details(ctx);
      if (d.prompt.name !== 'login') throw new HttpError(400, 'invalid_request', 'already signed in');
      const body = await readBody(ctx, 'json');
      const customerNumber =
        typeof body.customerNumber === 'string' ? body.customerNumber.trim().slice(0, 32) : '';
      const code = typeof body.code === 'string' ? body.code.trim() : '';
      if (!customerNumber || !code)
        throw new HttpError(400, 'invalid_request', 'customer number and code are required');
      const result = await signInWithAlternativeMfa(signIn, ctx, { ceremonyId: d.uid, customerNumber, code });
      return { redirectTo: await storeLogin(d, result) };
    }),
  );

  router.post('/enroll/totp', (ctx) =>
    jsonEndpoint(ctx, async () => {
      const d = await details(ctx);
      const body = await readBody(ctx, 'json');
      const checked = await checkTicketThrottled(signIn, ctx, { ceremonyId: d.uid, ...ticketInput(body) });
      const setup = await startTotpSetup(authn, { ...checked, interactionId: d.uid });
      return { secret: setup.secret, uri: setup.uri };
    }),
  );

  router.post('/enroll/totp/confirm', (ctx) =>
    jsonEndpoint(ctx, async () => {
      const d = await details(ctx);
      const body = await readBody(ctx, 'json');
      const code = typeof body.code === 'string' ? body.code.trim() : '';
      const { customerId, ticketId } = await confirmTotpSetup(
        authn,
        { interactionId: d.uid, code },
        requestMeta(ctx, d.uid),
      );
      // Setting up with a one-time ticket is re-proofing of identity, as for a passkey.
      await reproofed(db, customerId, { ticketId });
      return { registered: true };
    }),
  );

  router.post('/enroll/options', (ctx) =>
    jsonEndpoint(ctx, async () => {
      const d = await details(ctx);
      const body = await readBody(ctx, 'json');
      // A verified proofing flow, or a ticket checked as the ticket proofing method (src/proofing).
      const checked = await enrollmentProof(signIn, ctx, d.uid, body);
      return startPasskeyRegistration(authn, {
        customerId: checked.customerId,
        ticketId: checked.ticketId,
        interactionId: d.uid,
      });
    }),
  );

  router.post('/enroll/verify', (ctx) =>
    jsonEndpoint(ctx, async () => {
      const d = await details(ctx);
      const body = await readBody(ctx, 'json');
      if (typeof body.response !== 'object' || body.response === null)
        throw new HttpError(400, 'invalid_request', 'response is required');
      const name = typeof body.passkeyName === 'string' ? body.passkeyName.trim().slice(0, 64) : undefined;
      let recovered = false;
      const result = await finishPasskeyRegistration(
        authn,
        {
          interactionId: d.uid,
          response: body.response as never,
          ...(name ? { passkeyName: name } : {}),
          // Registered under a recovery proof: the lost passkeys, sessions and tokens go with it (src/proofing).
          onRegistered: async (tx, registered) => {
            recovered = !!(await completeRecoveryAfterEnrollment(
              tx,
              { interactionId: d.uid, ...registered },
              requestMeta(ctx, d.uid),
            ));
          },
        },
        requestMeta(ctx, d.uid),
      );
      await notifyCustomer(db, {
        customerId: result.customerId,
        kind: 'passkey_added',
        data: { ...(name ? { passkeyName: name } : {}) },
      });
      // Enrolling with a one-time ticket (an operator's, or the one a verified proofing flow minted) is
      // re-proofing of identity: it lifts an automatic lock.
      if (result.ticketId) await reproofed(db, result.customerId, { ticketId: result.ticketId });
      return { registered: true, credentialId: result.credentialId, recovered };
    }),
  );

  router.post('/consent', async (ctx) => {
    ctx.set('cache-control', 'no-store');
    let d: Details;
    let form: URLSearchParams;
    try {
      d = await details(ctx);
      if (d.prompt.name !== 'consent') throw new HttpError(400, 'invalid_request', 'no consent is pending');
      form = await readBody(ctx, 'form');
    } catch (err) {
      if (!(err instanceof HttpError || err instanceof BodyError)) throw err;
      ctx.status = err instanceof BodyError ? err.status : err.status;
      ctx.type = 'html';
      ctx.body = errorPage({ lang: languageOf(ctx), error: 'invalid_request', description: err.message });
      return;
    }
    const customerId = d.session!.accountId;
    const clientId = String(d.params.client_id);
    if (form.get('decision') !== 'approve') {
      await recordAudit(db, {
        type: 'consent.denied',
        outcome: 'info',
        actor: `customer:${customerId}`,
        customerId,
        clientId,
        ip: ctx.ip,
        interactionId: d.uid,
      });
      return finish(
        ctx,
        d,
        { error: 'access_denied', error_description: 'the customer denied the request' },
        { mergeWithLastSubmission: false },
      );
    }
    const isNew = !d.grantId;
    const grant = d.grantId
      ? await provider.Grant.find(d.grantId)
      : new provider.Grant({ accountId: customerId, clientId });
    if (!grant) {
      // The grant to extend ended meanwhile (revoked by the customer or the client, or expired).
      ctx.status = 400;
      ctx.type = 'html';
      ctx.body = errorPage({
        lang: languageOf(ctx),
        error: 'invalid_grant_id',
        description: 'the permission to extend has ended; start again from the application',
      });
      return;
    }
    let decided: Awaited<ReturnType<typeof applyConsentDecision>>;
    try {
      decided = await applyConsentDecision(db, {
        grant: grant as unknown as Parameters<typeof applyConsentDecision>[1]['grant'],
        params: d.params,
        customerId,
        clientId,
        accountIds: form.getAll('account'),
        issuer: config.issuer,
        defaults: { lookbackDays: config.api.transactionLookbackDays, grantTtlSeconds: config.oidc.grantTtl },
      });
    } catch (err) {
      if (!(err instanceof ConsentError)) throw err;
      if (isNew && grant.jti) await grant.destroy();
      const revoked = err.code === 'ERR_CONSENT_REVOKED';
      if (revoked)
        await recordAudit(db, {
          type: 'consent.extension_refused',
          outcome: 'failure',
          actor: `customer:${customerId}`,
          customerId,
          clientId,
          ip: ctx.ip,
          interactionId: d.uid,
          data: { grantId: grant.jti ?? null, reason: 'revoked meanwhile' },
        });
      ctx.status = 400;
      ctx.type = 'html';
      ctx.body = errorPage({
        lang: languageOf(ctx),
        error: revoked ? 'invalid_grant_id' : 'invalid_request',
        description: err.message,
      });
      return;
    }
    const { grantId, terms } = decided;
    const { scopes, accountIds } = terms;
    await notifyCustomer(db, {
      customerId,
      kind: 'consent_granted',
      data: {
        clientName: await clientName(clientId),
        expiresAt: terms.expiresAt.toISOString(),
      },
      dedupeKey: `consent:${grantId}`,
    });
    await recordAudit(db, {
      type: 'consent.granted',
      outcome: 'success',
      actor: `customer:${customerId}`,
      customerId,
      clientId,
      ip: ctx.ip,
      userAgent: ctx.get('user-agent'),
      interactionId: d.uid,
      data: {
        grantId,
        scopes,
        accountIds,
        dataTypes: terms.dataTypes,
        lookbackDays: terms.lookbackDays,
        expiresAt: terms.expiresAt.toISOString(),
        ...(typeof d.params.grant_management_action === 'string'
          ? { action: d.params.grant_management_action }
          : {}),
      },
    });
    return finish(ctx, d, { consent: { grantId } }, { mergeWithLastSubmission: true });
  });

  router.post('/notices', async (ctx) => {
    ctx.set('cache-control', 'no-store');
    let d: Details;
    let form: URLSearchParams;
    try {
      d = await details(ctx);
      if (d.prompt.name !== 'notices' || !d.session?.accountId)
        throw new HttpError(400, 'invalid_request', 'no notice is pending');
      form = await readBody(ctx, 'form');
      if (form.get('confirmed') !== 'yes')
        throw new HttpError(400, 'invalid_request', 'please confirm that you have read the notices');
    } catch (err) {
      if (!(err instanceof HttpError || err instanceof BodyError)) throw err;
      ctx.status = err.status;
      ctx.type = 'html';
      ctx.body = errorPage({ lang: languageOf(ctx), error: 'invalid_request', description: err.message });
      return;
    }
    // Only what was shown: a notice published meanwhile is shown next, not acknowledged unseen.
    await acknowledgeNotices(db, d.session.accountId, form.getAll('notice'), requestMeta(ctx, d.uid));
    return finish(ctx, d, {}, { mergeWithLastSubmission: true });
  });

  router.post('/abort', async (ctx) => {
    ctx.set('cache-control', 'no-store');
    let d: Details;
    try {
      d = await details(ctx);
    } catch (err) {
      if (!(err instanceof HttpError)) throw err;
      ctx.status = err.status;
      ctx.type = 'html';
      ctx.body = errorPage({ lang: languageOf(ctx), error: err.error, description: err.message });
      return;
    }
    await recordAudit(db, {
      type: 'authn.aborted',
      outcome: 'info',
      clientId: String(d.params.client_id),
      ip: ctx.ip,
      interactionId: d.uid,
    });
    return finish(
      ctx,
      d,
      { error: 'access_denied', error_description: 'the customer cancelled the sign-in' },
      { mergeWithLastSubmission: false },
    );
  });

  return router;
}
