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

/** `Bearer error="…", error_description="…"`: the challenge for certificate-bound tokens (RFC 8705, RFC 6750). */
export function bearerChallenge(error: string, description: string): string {
  return `Bearer error="${quote(error)}", error_description="${quote(description)}"`;
}

/**
 * `invalid_token` with the challenge of the scheme the client used: Bearer for a client that holds
 * certificate-bound tokens (RFC 6750 §3, RFC 8705 §3), DPoP otherwise.
 */
export function invalidTokenError(scheme: string, description: string, algs: readonly string[]): ApiError {
  return new ApiError(
    401,
    'invalid_token',
    description,
    scheme === 'bearer'
      ? bearerChallenge('invalid_token', description)
      : dpopChallenge('invalid_token', description, algs),
  );
}

/**
 * `insufficient_scope` (403) with the challenge of the scheme the client used: Bearer for a
 * certificate-bound token (RFC 6750 §3.1, RFC 8705 §3), DPoP otherwise (RFC 9449 §7.1).
 */
export function insufficientScopeError(scheme: string, scope: string, algs: readonly string[]): ApiError {
  const description = `the token lacks the ${scope} scope`;
  return new ApiError(
    403,
    'insufficient_scope',
    description,
    // The scope wanted, as RFC 6750 §3 lets the challenge say (the institution APIs always named it).
    `${
      scheme === 'bearer'
        ? bearerChallenge('insufficient_scope', description)
        : dpopChallenge('insufficient_scope', undefined, algs)
    }, scope="${quote(scope)}"`,
  );
}

/** The answer to an access token the hub does not know (or no longer: expired, revoked). */
export function unknownTokenError(scheme: string, algs: readonly string[]): ApiError {
  return invalidTokenError(scheme, 'the access token is invalid, expired or revoked', algs);
}

/**
 * The scheme (lower-cased) and token of the Authorization header: `DPoP` for DPoP-bound tokens, `Bearer`
 * for certificate-bound ones (RFC 8705 §3). No header: 401 `unauthorized` with a bare DPoP challenge.
 */
export function presentedAccessToken(
  ctx: Context,
  algs: readonly string[],
): { scheme: string; value: string } {
  const match = /^(\S+) +(\S+)$/.exec(ctx.get('authorization'));
  if (!match)
    throw new ApiError(
      401,
      'unauthorized',
      'a DPoP-bound or certificate-bound access token is required',
      dpopChallenge(undefined, undefined, algs),
    );
  return { scheme: match[1]!.toLowerCase(), value: match[2]! };
}

/** Every DPoP header value as sent (node joins nothing; more than one is refused by the verifier). */
export function dpopHeaders(ctx: Context): string[] {
  const raw = ctx.req.headers.dpop;
  return raw === undefined ? [] : Array.isArray(raw) ? raw : [raw];
}
