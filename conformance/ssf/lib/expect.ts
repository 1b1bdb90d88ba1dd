/** Assertions for SSF checks; a failure names what was expected and shows the hub's answer. */
import { CheckFailure } from '../../lib/expect.ts';
import type { Reply } from './manager.ts';

export { CheckFailure, check, equal } from '../../lib/expect.ts';

export function show(r: Reply): string {
  const www = r.headers.get('www-authenticate');
  const body = r.text.length > 300 ? `${r.text.slice(0, 300)}…` : r.text;
  return `HTTP ${r.status}${www ? ` [WWW-Authenticate: ${www}]` : ''} ${body.replace(/\s+/g, ' ')}`;
}

export function status(r: Reply, expected: number | number[], what: string): void {
  const ok = Array.isArray(expected) ? expected : [expected];
  if (!ok.includes(r.status))
    throw new CheckFailure(`${what}: expected HTTP ${ok.join(' or ')}, got ${show(r)}`);
}

export const obj = (r: Reply): Record<string, unknown> =>
  r.body && typeof r.body === 'object' && !Array.isArray(r.body) ? (r.body as Record<string, unknown>) : {};

/** An OAuth-shaped error (`error`), with one of the statuses. */
export function oauthError(r: Reply, statuses: number[], errors: string[], what: string): void {
  const error = obj(r).error;
  if (!statuses.includes(r.status) || typeof error !== 'string' || !errors.includes(error))
    throw new CheckFailure(
      `${what}: expected HTTP ${statuses.join('/')} with error ${errors.join(' or ')}, got ${show(r)}`,
    );
}

/** An RFC 8935 §2.3 error: JSON `{err, description}` with the status given. */
export function setError(r: Reply, statusCode: number | number[], err: string, what: string): void {
  const codes = Array.isArray(statusCode) ? statusCode : [statusCode];
  const b = obj(r);
  if (!codes.includes(r.status) || b.err !== err || typeof b.description !== 'string')
    throw new CheckFailure(`${what}: expected HTTP ${codes.join('/')} {"err":"${err}",…}, got ${show(r)}`);
  if (!(r.headers.get('content-type') ?? '').startsWith('application/json'))
    throw new CheckFailure(`${what}: the error is not application/json`);
}
