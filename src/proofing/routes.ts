/**
 * Identity proofing over HTTP, inside an OIDC interaction (so bound to the browser that started
 * the sign-in): a page offering the methods, the eKYC redirect and its callback, and the JPKI
 * challenge/verify JSON endpoints. A verified flow leads to /interaction/:uid/enroll?proofing=<flow>,
 * where the passkey registration consumes it (src/oidc/interactions.ts → enrollmentProof).
 */
import Router from '@koa/router';
import type { Context } from 'koa';
import type Provider from 'oidc-provider';
import { errors as oidcErrors } from 'oidc-provider';
import { type AuthnContext, AuthnError } from '../authn/index.ts';
import type { Config } from '../config/index.ts';
import type { Db } from '../db/index.ts';
import { BodyError, HttpError, readBody } from '../http/index.ts';
import { jsonEndpoint } from '../oidc/jsonEndpoint.ts';
import { checkTicketThrottled, refuseThrottledSource, requestMeta } from '../oidc/passkeySignIn.ts';
import { DEFAULT_THROTTLE_POLICY, recordAuthFailure, type ThrottlePolicy } from '../risk/index.ts';
import { errorPage, languageOf } from '../web/index.ts';
import { createProofingContext, EKYC_CALLBACK_PATH, type ProofingContext } from './context.ts';
import {
  beginProofing,
  completeProofing,
  customerByNumber,
  type ProofingResult,
  proofedEnrollment,
  refuseProofing,
} from './engine.ts';
import { ProofingError, proofingErrorMessage } from './errors.ts';
import { PROOFING_PURPOSES, type ProofingMethod, type ProofingPurpose } from './method.ts';
import { type TicketAnswer, ticketMethod } from './methods/ticket.ts';
import { proofingPage } from './pages.ts';
import { reproofed } from './reproofed.ts';

export interface ProofingRoutesOptions {
  provider: Provider;
  db: Db;
  config: Config;
  authn: AuthnContext;
  throttle?: ThrottlePolicy;
  proofing?: ProofingContext;
}

/** Where the eKYC callback sends the browser on, under the interaction (cookie-bound) that started the flow. */
const EKYC_FINISH_PATH = '/proofing/ekyc/finish';

/** Refusals that are evidence of someone trying identities: they slow the source down. */
const COUNTED = new Set([
  'ERR_PROOFING_MISMATCH',
  'ERR_PROOFING_SIGNATURE',
  'ERR_PROOFING_CERTIFICATE',
  'ERR_PROOFING_CERTIFICATE_REVOKED',
  'ERR_PROOFING_CERTIFICATE_NO_IDENTITY',
]);

function purposeOf(value: unknown): ProofingPurpose {
  return PROOFING_PURPOSES.includes(value as ProofingPurpose) ? (value as ProofingPurpose) : 'enrollment';
}

function text(value: unknown, max: number): string {
  return typeof value === 'string' ? value.trim().slice(0, max) : '';
}

/**
 * ProofingError → the OAuth-shaped error of the hub's JSON endpoints and pages, its message in the
 * page's language (the pages show error_description as it comes).
 */
function toHttp(err: ProofingError, ctx?: Context): HttpError {
  const message = ctx ? proofingErrorMessage(err.code, languageOf(ctx)) : err.message;
  if (err.code === 'ERR_PROOFING_FLOW' || err.code === 'ERR_PROOFING_INPUT')
    return new HttpError(400, 'invalid_request', message, err.code);
  if (err.code === 'ERR_PROOFING_METHOD_DISABLED')
    return new HttpError(404, 'invalid_request', message, err.code);
  // Not the customer's doing: no CRL could be had (fail closed); they may retry later.
  if (err.code === 'ERR_PROOFING_REVOCATION_UNAVAILABLE')
    return new HttpError(503, 'temporarily_unavailable', message, err.code);
  return new HttpError(403, 'access_denied', message, err.code);
}

export function proofingRoutes(o: ProofingRoutesOptions): Router {
  const { provider, db, authn } = o;
  const throttle = o.throttle ?? DEFAULT_THROTTLE_POLICY;
  const signIn = { db, authn, throttle };
  const proofing = o.proofing ?? createProofingContext(db, o.config);
  const router = new Router();

  async function interactionUid(ctx: Context): Promise<string> {
    try {
      const d = await provider.interactionDetails(ctx.req, ctx.res);
      if (d.uid !== ctx.params.uid) throw new HttpError(400, 'invalid_request', 'interaction mismatch');
      return d.uid;
    } catch (err) {
      if (err instanceof oidcErrors.SessionNotFound)
        throw new HttpError(
          400,
          'invalid_request',
          'the sign-in has expired or was opened in another browser; start again from the application',
        );
      throw err;
    }
  }

  function enabled<S, A>(method: ProofingMethod<S, A> | undefined): ProofingMethod<S, A> {
    if (!method) throw toHttp(new ProofingError('ERR_PROOFING_METHOD_DISABLED'));
    return method;
  }

  /**
   * Answers a flow under the sign-in throttle; a verified unlock lifts the account lock at once
   * (`unlocked`: a lock was in force and is lifted now).
   */
  async function answer<A>(
    ctx: Context,
    method: ProofingMethod<unknown, A>,
    input: { flowId: string; interactionId: string; answer: A },
  ): Promise<ProofingResult & { unlocked: boolean }> {
    const meta = requestMeta(ctx, input.interactionId);
    const source = await refuseThrottledSource(signIn, ctx);
    let result: ProofingResult;
    try {
      result = await completeProofing(db, method, input, meta);
    } catch (err) {
      if (!(err instanceof ProofingError)) throw err;
      if (COUNTED.has(err.code))
        await recordAuthFailure(db, { source }, { ...meta, reason: err.code }, throttle);
      throw toHttp(err, ctx);
    }
    const unlocked =
      result.purpose === 'unlock' && (await reproofed(db, result.customerId, { flowId: result.flowId }));
    return { ...result, unlocked };
  }

  // The sign-in page says the lock was lifted only when one was (none may have been in force: the
  // lock had run out, or the customer re-proofed while frozen, which only an operator ends).
  const nextStep = (uid: string, r: ProofingResult & { unlocked: boolean }) =>
    r.purpose === 'unlock'
      ? {
          verified: true,
          purpose: r.purpose,
          unlocked: r.unlocked,
          redirectTo: `/interaction/${uid}${r.unlocked ? '?unlocked=1' : ''}`,
        }
      : {
          verified: true,
          purpose: r.purpose,
          flowId: r.flowId,
          redirectTo: `/interaction/${uid}/enroll?proofing=${encodeURIComponent(r.flowId)}`,
        };

  router.get('/interaction/:uid/proofing', async (ctx) => {
    ctx.set('cache-control', 'no-store');
    ctx.type = 'html';
    const lang = languageOf(ctx);
    try {
      const uid = await interactionUid(ctx);
      ctx.body = proofingPage({
        lang,
        uid,
        purpose: purposeOf(ctx.query.purpose),
        ekyc: !!proofing.ekyc,
        jpki: !!proofing.jpki,
      });
    } catch (err) {
      if (!(err instanceof HttpError)) throw err;
      ctx.status = err.status;
      ctx.body = errorPage({ lang, error: err.error, description: err.message });
    }
  });

  /** Starts a proofing flow for the customer number a page or client sent, once the source is not throttled. */
  async function begin<Start>(
    ctx: Context,
    method: ProofingMethod<Start, unknown>,
    body: Record<string, unknown>,
    uid: string,
  ) {
    const customerNumber = text(body.customerNumber, 32);
    if (!customerNumber) throw new HttpError(400, 'invalid_request', 'customer number is required');
    await refuseThrottledSource(signIn, ctx);
    const purpose = purposeOf(body.purpose);
    return beginProofing(
      db,
      method,
      { purpose, interactionId: uid, customer: await customerByNumber(db, customerNumber, purpose) },
      requestMeta(ctx, uid),
    );
  }

  /** A step of the eKYC flow that redirects the browser; errors as the error page, in the page's language. */
  async function redirectStep(ctx: Context, run: () => Promise<string>) {
    ctx.set('cache-control', 'no-store');
    try {
      ctx.redirect(await run());
      ctx.status = 303;
    } catch (err) {
      if (!(err instanceof HttpError || err instanceof BodyError)) throw err;
      ctx.status = err.status;
      ctx.type = 'html';
      ctx.body = errorPage({
        lang: languageOf(ctx),
        error: err instanceof HttpError ? err.error : 'invalid_request',
        description: err.message,
      });
    }
  }

  // The page's form (redirects the browser) or a JSON client ({ redirectTo }).
  router.post('/interaction/:uid/proofing/ekyc', async (ctx) => {
    const json = ctx.request.type === 'application/json';
    const run = async () => {
      const method = enabled(proofing.ekyc);
      const uid = await interactionUid(ctx);
      const body = json ? await readBody(ctx, 'json') : Object.fromEntries(await readBody(ctx, 'form'));
      const started = await begin(ctx, method, body, uid).catch((err: unknown) => {
        throw err instanceof ProofingError ? toHttp(err, ctx) : err;
      });
      return started.reply.redirectTo;
    };
    if (json) return jsonEndpoint(ctx, async () => ({ redirectTo: await run() }));
    return redirectStep(ctx, run);
  });

  /**
   * The provider's redirect back carries no interaction (its URL is registered once), only the
   * flow id as `state`. It completes nothing: it sends the browser on to the interaction that
   * started the flow, where only the browser holding that interaction's cookie can finish it. So
   * a provider URL passed to someone else proves nothing for the one who started the flow.
   */
  router.get(EKYC_CALLBACK_PATH, (ctx) =>
    redirectStep(ctx, async () => {
      enabled(proofing.ekyc);
      const state = text(ctx.query.state, 200);
      if (!state) throw new HttpError(400, 'invalid_request', 'state is missing');
      const flow = await db.query<{ interaction_id: string }>(
        `SELECT interaction_id FROM proofing_flows
         WHERE id = $1 AND method = 'ekyc' AND answered_at IS NULL AND expires_at > now()`,
        [state],
      );
      const uid = flow.rows[0]?.interaction_id;
      if (!uid) throw toHttp(new ProofingError('ERR_PROOFING_FLOW'), ctx);
      return `/interaction/${encodeURIComponent(uid)}${EKYC_FINISH_PATH}?${ctx.querystring}`;
    }),
  );

  /**
   * The provider's answer, completed in the browser of the interaction that started the flow. In
   * another browser (no cookie of that interaction) the flow is spent and recorded as refused
   * (`other_browser`), so the answer in that URL cannot be carried over to the starting browser.
   */
  router.get(`/interaction/:uid${EKYC_FINISH_PATH}`, (ctx) =>
    redirectStep(ctx, async () => {
      const method = enabled(proofing.ekyc);
      const state = text(ctx.query.state, 200);
      if (!state) throw new HttpError(400, 'invalid_request', 'state is missing');
      const uid = await interactionUid(ctx).catch(async (err: unknown) => {
        if (err instanceof HttpError) {
          const flow = { flowId: state, method: method.name, interactionId: String(ctx.params.uid) };
          const refusal = new ProofingError('ERR_PROOFING_FLOW', { reason: 'other_browser' });
          await refuseProofing(db, flow, refusal, requestMeta(ctx, flow.interactionId));
        }
        throw err;
      });
      // What the provider redirected to: openid-client checks the parameters and redirect_uri from it.
      const callbackUrl = new URL(`${o.config.issuer}${EKYC_CALLBACK_PATH}`);
      callbackUrl.search = ctx.querystring;
      const result = await answer(ctx, method, {
        flowId: state,
        interactionId: uid,
        answer: { callbackUrl },
      });
      return nextStep(uid, result).redirectTo;
    }),
  );

  router.post('/interaction/:uid/proofing/jpki/challenge', (ctx) =>
    jsonEndpoint(ctx, async () => {
      const method = enabled(proofing.jpki);
      const uid = await interactionUid(ctx);
      const body = await readBody(ctx, 'json');
      const started = await begin(ctx, method, body, uid);
      return {
        flowId: started.flowId,
        challenge: started.reply.challenge,
        expiresAt: started.expiresAt.toISOString(),
      };
    }),
  );

  router.post('/interaction/:uid/proofing/jpki/verify', (ctx) =>
    jsonEndpoint(ctx, async () => {
      const method = enabled(proofing.jpki);
      const uid = await interactionUid(ctx);
      const body = await readBody(ctx, 'json');
      const flowId = text(body.flowId, 200);
      const certificate = text(body.certificate, 16_384);
      const signature = text(body.signature, 2048);
      const chain = Array.isArray(body.chain) ? body.chain.slice(0, 4).map((c) => text(c, 16_384)) : [];
      if (!flowId || !certificate || !signature)
        throw new HttpError(400, 'invalid_request', 'flowId, certificate and signature are required');
      const result = await answer(ctx, method, {
        flowId,
        interactionId: uid,
        answer: { certificate, signature, chain },
      });
      return nextStep(uid, result);
    }),
  );

  return router;
}

/**
 * What entitles this interaction to register a passkey: a verified proofing flow (`proofing`) or a
 * one-time ticket (`customerNumber` + `ticket`, checked as the ticket proofing method, recorded
 * like any other). `purpose: 'recovery'` makes the registration a recovery.
 */
export async function enrollmentProof(
  o: { db: Db; authn: AuthnContext; throttle?: ThrottlePolicy },
  ctx: Context,
  uid: string,
  body: Record<string, unknown>,
): Promise<{ customerId: string; ticketId: string; purpose: ProofingPurpose }> {
  const db = o.db;
  try {
    const flowId = text(body.proofing, 200);
    if (flowId) return await proofedEnrollment(db, { flowId, interactionId: uid });
    const answerIn: TicketAnswer = {
      customerNumber: text(body.customerNumber, 64),
      ticket: text(body.ticket, 100),
    };
    if (
      !answerIn.customerNumber ||
      !answerIn.ticket ||
      answerIn.customerNumber.length > 32 ||
      answerIn.ticket.length > 64
    )
      throw new HttpError(400, 'invalid_request', 'customer number and registration code are required');
    const signIn = { db, authn: o.authn, throttle: o.throttle ?? DEFAULT_THROTTLE_POLICY };
    const method = ticketMethod((a) => checkTicketThrottled(signIn, ctx, { ceremonyId: uid, ...a }));
    const purpose = body.purpose === 'recovery' ? 'recovery' : 'enrollment';
    const { flowId: started } = await beginProofing(db, method, {
      purpose,
      interactionId: uid,
      customer: null,
    });
    await completeProofing(
      db,
      method,
      { flowId: started, interactionId: uid, answer: answerIn },
      requestMeta(ctx, uid),
    );
    return await proofedEnrollment(db, { flowId: started, interactionId: uid });
  } catch (err) {
    // The ticket's own errors keep their codes (ERR_TICKET_*), as before the ticket became a method.
    if (err instanceof ProofingError && err.cause instanceof AuthnError) throw err.cause;
    if (err instanceof ProofingError) throw toHttp(err, ctx);
    throw err;
  }
}
