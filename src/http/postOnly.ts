import type { Middleware } from 'koa';

/**
 * RFC 9126 §2.3 and RFC 6749 §3.2: the PAR and token endpoints take POST only. oidc-provider has
 * no route for other verbs and would answer 404; say 405 with `Allow: POST` in the OAuth error shape.
 */
export function postOnly(paths: readonly string[]): Middleware {
  const set = new Set(paths);
  return async (ctx, next) => {
    if (!set.has(ctx.path) || ctx.method === 'POST' || ctx.method === 'OPTIONS') return next();
    ctx.status = 405;
    ctx.set('allow', 'POST');
    ctx.set('cache-control', 'no-store');
    ctx.body = { error: 'invalid_request', error_description: `${ctx.method} is not allowed here; use POST` };
  };
}
