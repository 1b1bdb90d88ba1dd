import type { Context } from 'koa';
import { AuthnError, authnErrorMessage } from '../authn/index.ts';
import { BodyError, HttpError } from '../http/index.ts';
import { errorText, languageOf } from '../web/index.ts';

/**
 * Runs a JSON endpoint of the hub's own pages (WebAuthn and TOTP ceremonies): the result is the
 * body; known failures become OAuth-style 4xx bodies `{ error, error_code?, error_description }`
 * (with Retry-After where a wait applies); anything else is a server fault and propagates.
 */
export async function jsonEndpoint(ctx: Context, work: () => Promise<unknown>): Promise<void> {
  ctx.set('cache-control', 'no-store');
  try {
    ctx.body = await work();
  } catch (err) {
    if (err instanceof HttpError) {
      ctx.status = err.status;
      if (err.retryAfter) ctx.set('retry-after', String(err.retryAfter));
      ctx.body = {
        error: err.error,
        ...(err.code ? { error_code: err.code } : {}),
        error_description: errorText(err.message, languageOf(ctx)),
      };
    } else if (err instanceof AuthnError) {
      ctx.status = err.code === 'ERR_TICKET_LOCKED' ? 429 : 400;
      // The hub's pages show error_description as it comes: in the page's language.
      ctx.body = {
        error: 'access_denied',
        error_code: err.code,
        error_description: authnErrorMessage(err.code, languageOf(ctx)),
      };
    } else if (err instanceof BodyError) {
      ctx.status = err.status;
      ctx.body = { error: 'invalid_request', error_description: errorText(err.message, languageOf(ctx)) };
    } else throw err;
  }
}
