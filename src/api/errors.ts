import type { Context } from 'koa';

/**
 * The API's one error envelope:
 *   { "error": { "status": 401, "code": "invalid_token", "message": "…" }, "meta": { "interactionId": "…" } }
 * Token problems also carry an RFC 6750 / RFC 9449 WWW-Authenticate challenge.
 */
export class ApiError extends Error {
  readonly status: number;
  readonly code: string;
  readonly challenge: string | undefined;
  constructor(status: number, code: string, message: string, challenge?: string) {
    super(message);
    this.status = status;
    this.code = code;
    this.challenge = challenge;
  }
}

const quote = (s: string) => s.replace(/["\\]/g, '');

/** `DPoP error="invalid_token", error_description="…", algs="…"` */
export function dpopChallenge(
  error: string | undefined,
  description: string | undefined,
  algs: readonly string[],
): string {
  const parts = [];
  if (error) parts.push(`error="${quote(error)}"`);
  if (description) parts.push(`error_description="${quote(description)}"`);
  parts.push(`algs="${algs.join(' ')}"`);
  return `DPoP ${parts.join(', ')}`;
}

export function sendApiError(ctx: Context, err: ApiError): void {
  ctx.status = err.status;
  if (err.challenge) ctx.set('www-authenticate', err.challenge);
  ctx.set('cache-control', 'no-store');
  ctx.body = {
    error: { status: err.status, code: err.code, message: err.message },
    meta: { interactionId: ctx.state.interactionId },
  };
}

/**
 * The access token of `Authorization: DPoP <token>` (scheme case-insensitive, RFC 9449 §7.1). No
 * header: 401 `unauthorized` with a bare DPoP challenge; another scheme (Bearer): `invalid(…)`.
 */
export function presentedDpopToken(
  ctx: Context,
  invalid: (description: string) => ApiError,
  algs: readonly string[],
): string {
  const match = /^(\S+) +(\S+)$/.exec(ctx.get('authorization'));
  if (!match)
    throw new ApiError(
      401,
      'unauthorized',
      'a DPoP-bound access token is required',
      dpopChallenge(undefined, undefined, algs),
    );
  const [, scheme, value] = match as unknown as [string, string, string];
  if (scheme.toLowerCase() !== 'dpop')
    throw invalid('the access token must be presented with the DPoP scheme');
  return value;
}

/** Every DPoP header value as sent (node joins nothing; more than one is refused by the verifier). */
export function dpopHeaders(ctx: Context): string[] {
  const raw = ctx.req.headers.dpop;
  return raw === undefined ? [] : Array.isArray(raw) ? raw : [raw];
}
