/**
 * Assertions for checks. A failed check throws CheckFailure whose message names what was expected
 * and shows the hub's answer (status, error, description, start of the body) so the table and the
 * vitest report are enough to file a bug against the hub.
 */
import type { HttpResult } from './client.ts';
import type { Visit } from './context.ts';

export class CheckFailure extends Error {
  override name = 'CheckFailure';
  readonly code = 'ERR_CHECK_FAILED';
}

/** Thrown by a check that cannot apply to the hub under test (only the CLI reports it, as n/a). */
export class CheckNotApplicable extends Error {
  override name = 'CheckNotApplicable';
  readonly code = 'ERR_CHECK_NOT_APPLICABLE';
}

export function describe(res: Pick<HttpResult, 'status' | 'text' | 'headers'>): string {
  const www = res.headers.get('www-authenticate');
  const body = res.text.length > 300 ? `${res.text.slice(0, 300)}…` : res.text;
  return `HTTP ${res.status}${www ? ` [WWW-Authenticate: ${www}]` : ''} ${body.replace(/\s+/g, ' ')}`;
}

export function check(condition: unknown, message: string): asserts condition {
  if (!condition) throw new CheckFailure(message);
}

export function equal<T>(actual: T, expected: T, what: string): void {
  if (actual !== expected)
    throw new CheckFailure(`${what}: expected ${JSON.stringify(expected)}, got ${JSON.stringify(actual)}`);
}

export function status(res: HttpResult, expected: number | number[], what: string): void {
  const ok = Array.isArray(expected) ? expected : [expected];
  if (!ok.includes(res.status))
    throw new CheckFailure(`${what}: expected HTTP ${ok.join(' or ')}, got ${describe(res)}`);
}

/** An OAuth error response (RFC 6749 §5.2 shape) with one of the given statuses and error codes. */
export function oauthError(
  res: HttpResult,
  expected: { status: number | number[]; error: string | string[] },
  what: string,
): void {
  const statuses = Array.isArray(expected.status) ? expected.status : [expected.status];
  const errors = Array.isArray(expected.error) ? expected.error : [expected.error];
  const got = typeof res.body?.error === 'string' ? res.body.error : undefined;
  if (!statuses.includes(res.status) || !got || !errors.includes(got))
    throw new CheckFailure(
      `${what}: expected HTTP ${statuses.join('/')} with error ${errors.join(' or ')}, got ${describe(res)}`,
    );
  if (res.status >= 500) throw new CheckFailure(`${what}: server error ${describe(res)}`);
}

/**
 * A rejection at the resource server: 401, a DPoP challenge in WWW-Authenticate whose error is one
 * of `errors`, and the API error envelope carrying the same code.
 */
export function resourceRejection(
  res: HttpResult,
  what: string,
  errors: string[] = ['invalid_token', 'invalid_dpop_proof'],
): void {
  const www = res.headers.get('www-authenticate') ?? '';
  const challengeError = /\berror="([^"]*)"/.exec(www)?.[1];
  const envelope = res.body?.error as { status?: unknown; code?: unknown } | undefined;
  if (
    res.status !== 401 ||
    !/^DPoP\b/i.test(www) ||
    !challengeError ||
    !errors.includes(challengeError) ||
    envelope?.code !== challengeError ||
    envelope?.status !== 401
  )
    throw new CheckFailure(
      `${what}: expected 401 with a DPoP challenge error=${errors.join('|')} and the same code in the error envelope, got ${describe(res)}`,
    );
}

/** Never a 5xx: the hub answers malformed or extreme input with a clean 4xx (or accepts it). */
export function noServerError(res: HttpResult, what: string): void {
  if (res.status >= 500) throw new CheckFailure(`${what}: server error ${describe(res)}`);
}

/** The error code on the hub's error page (`<p … id="error-code">…</p>`). */
export function pageErrorCode(html: string): string | undefined {
  return /id="error-code"[^>]*>([^<]*)</.exec(html)?.[1]?.trim();
}

/**
 * The authorization endpoint refused the request: either an error page (4xx) or a redirect to the
 * redirect URI with `error` (and `iss`, no `code`) — never the login page, never a 5xx.
 */
export function authorizationRejected(visit: Visit, errors: string[], what: string): void {
  if (visit.kind === 'interaction')
    throw new CheckFailure(
      `${what}: the hub accepted the request and showed its login page (${visit.response.url.pathname})`,
    );
  if (visit.kind === 'callback') {
    const q = visit.url.searchParams;
    if (q.has('code')) throw new CheckFailure(`${what}: the hub issued a code`);
    const error = q.get('error');
    if (!error || !errors.includes(error))
      throw new CheckFailure(
        `${what}: expected error ${errors.join(' or ')} at the redirect URI, got ${visit.url.search.slice(0, 300)}`,
      );
    return;
  }
  const res = visit.response;
  const error = pageErrorCode(res.text);
  if (res.status < 400 || res.status >= 500 || !error || !errors.includes(error))
    throw new CheckFailure(
      `${what}: expected a 4xx error page with ${errors.join(' or ')}, got HTTP ${res.status} at ${res.url.pathname} (error ${error ?? 'none'}) ${res.text.slice(0, 200).replace(/\s+/g, ' ')}`,
    );
}
