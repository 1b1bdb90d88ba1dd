/** Cross-cutting HTTP pieces: security headers, x-fapi-interaction-id, body reading. */

export { CookieSigner } from './cookieSigner.ts';
export { HttpError } from './httpError.ts';
export { fapiInteractionId, INTERACTION_ID_HEADER } from './interactionId.ts';
export { postOnly } from './postOnly.ts';
export { BodyError, readBody, readBodyText } from './readBody.ts';
export { securityHeaders } from './securityHeaders.ts';
