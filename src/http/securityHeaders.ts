import type { Middleware } from 'koa';

const CSP = [
  "default-src 'self'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "connect-src 'self'",
  "frame-ancestors 'none'",
  "base-uri 'none'",
  "object-src 'none'",
].join('; ');

/** HSTS and the browser hardening every response gets. */
export function securityHeaders(): Middleware {
  return async (ctx, next) => {
    ctx.set('strict-transport-security', 'max-age=31536000; includeSubDomains');
    ctx.set('x-content-type-options', 'nosniff');
    ctx.set('referrer-policy', 'no-referrer');
    ctx.set('x-frame-options', 'DENY');
    ctx.set('content-security-policy', CSP);
    ctx.set('cross-origin-opener-policy', 'same-origin');
    ctx.set('permissions-policy', 'publickey-credentials-get=(self), publickey-credentials-create=(self)');
    await next();
  };
}
