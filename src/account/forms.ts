/**
 * The one way a signed-in customer's form post is handled, on the security page (/account/…) and
 * on the bank-links page (/account/links/…): the oidc-provider session, the CSRF token, the risk
 * check of the operation (guardOperation: JSDA IV.5, signals "at every important operation"), the
 * work, a 303 back, and every refusal as an error page in the page's language.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { Context } from 'koa';
import type Provider from 'oidc-provider';
import { BodyError, HttpError, readBody } from '../http/index.ts';
import { guardOperation, type SignInDeps } from '../oidc/passkeySignIn.ts';
import { errorPage, languageOf } from '../web/index.ts';

type Session = Awaited<ReturnType<Provider['Session']['get']>>;
export type SignedInSession = Session & { accountId: string };

/**
 * Form operations that add exposure: held back when the risk rules ask for a step-up or a block.
 * The others (ending sessions, revoking a consent, lowering a limit, removing a bank link …) protect
 * the customer and go ahead whatever the risk — they are still assessed and recorded. Limits,
 * channels and products are not here because the withdrawal-strength policy decides their raising.
 */
const SENSITIVE_OPERATIONS: ReadonlySet<string> = new Set([
  'account.passkeys.add',
  'account.passkeys.remove',
  'account.contacts.add',
  'account.contacts.remove',
  'account.notifications',
  'account.travel',
  // A new path for money between a bank and the brokerage (JSDA IV.7.(3)).
  'account.links.start',
]);

/** The risk engine's name of a customer form: its path, e.g. `/account/links/start` → `account.links.start`. */
export const formOperation = (path: string) => path.replace(/^\//, '').replace(/\//g, '.');

/** Double-submit token tied to the session id, which only the httpOnly cookie carries. */
export const accountCsrfToken = (session: { jti: string }) =>
  createHash('sha256').update(`csrf:${session.jti}`).digest('base64url');

/** Refuses (403 ERR_CSRF) a form post whose token is not the session's. */
export function checkAccountCsrf(session: { jti: string }, given: unknown): void {
  const expected = Buffer.from(accountCsrfToken(session));
  const got = Buffer.from(typeof given === 'string' ? given : '');
  if (got.length !== expected.length || !timingSafeEqual(got, expected))
    throw new HttpError(403, 'access_denied', 'the form has expired; reload the page', 'ERR_CSRF');
}

export interface AccountFormsOptions {
  provider: Provider;
  /** Where the risk engine and its records live. */
  risk: Pick<SignInDeps, 'db' | 'risk'>;
  /**
   * The HTTP status and error code of a capability's own error (AuthnError, LinkError …), or
   * undefined when it is not one: such errors are not the customer's and are thrown on.
   */
  errorOf: (err: unknown) => { status: number; code: string } | undefined;
}

export interface AccountForms {
  /** The signed-in session, or undefined. */
  signedIn(ctx: Context): Promise<SignedInSession | undefined>;
  /**
   * Handles a form post: not signed in → /account; bad CSRF → 403; the operation (named after the
   * path) assessed by the risk engine — a sensitive one answered 403 ERR_RISK_STEP_UP or
   * ERR_RISK_BLOCKED; then `work`, whose answer is where the browser goes next (303).
   */
  handle(
    ctx: Context,
    work: (session: SignedInSession, body: URLSearchParams) => Promise<string>,
  ): Promise<void>;
  /** Answers a customer's mistake or a refusal with the error page; anything else is thrown on. */
  fail(ctx: Context, err: unknown): void;
}

export function createAccountForms({ provider, risk, errorOf }: AccountFormsOptions): AccountForms {
  async function signedIn(ctx: Context): Promise<SignedInSession | undefined> {
    const session = await provider.Session.get(ctx);
    return session.accountId ? (session as SignedInSession) : undefined;
  }

  async function handle(
    ctx: Context,
    work: (session: SignedInSession, body: URLSearchParams) => Promise<string>,
  ): Promise<void> {
    ctx.set('cache-control', 'no-store');
    try {
      const session = await signedIn(ctx);
      if (!session) return ctx.redirect('/account');
      const body = await readBody(ctx, 'form');
      checkAccountCsrf(session, body.get('csrf'));
      const operation = formOperation(ctx.path);
      await guardOperation(risk, ctx, {
        customerId: session.accountId,
        sessionUid: session.uid,
        operation,
        sensitive: SENSITIVE_OPERATIONS.has(operation),
      });
      const next = await work(session, body);
      ctx.status = 303;
      ctx.redirect(next);
    } catch (err) {
      fail(ctx, err);
    }
  }

  function fail(ctx: Context, err: unknown): void {
    const known =
      err instanceof HttpError
        ? { status: err.status, code: err.code ?? err.error }
        : err instanceof BodyError
          ? { status: err.status, code: 'invalid_request' }
          : errorOf(err);
    if (!known) throw err;
    ctx.status = known.status;
    ctx.type = 'html';
    ctx.body = errorPage({ lang: languageOf(ctx), error: known.code, description: (err as Error).message });
  }

  return { signedIn, handle, fail };
}
