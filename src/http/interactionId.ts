import { randomUUID } from 'node:crypto';
import type { Middleware } from 'koa';

export const INTERACTION_ID_HEADER = 'x-fapi-interaction-id';
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/**
 * FAPI: echo the client's x-fapi-interaction-id (an RFC 4122 UUID) or generate one, on every
 * response — errors included. A malformed value is replaced rather than reflected.
 */
export function fapiInteractionId(): Middleware {
  return async (ctx, next) => {
    const sent = ctx.get(INTERACTION_ID_HEADER);
    const id = UUID.test(sent) ? sent : randomUUID();
    ctx.state.interactionId = id;
    ctx.set(INTERACTION_ID_HEADER, id);
    try {
      await next();
    } finally {
      // oidc-provider may reset headers on errors; make sure the id survives.
      ctx.set(INTERACTION_ID_HEADER, id);
    }
  };
}
