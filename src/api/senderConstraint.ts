/**
 * The sender constraint of an access token at the resource server, the same for the read API and the
 * ingestion API: a DPoP-bound token (`cnf.jkt`) needs the DPoP scheme and a valid proof for this exact
 * request; a certificate-bound one (`cnf.x5t#S256`, RFC 8705 §3) needs the Bearer scheme over a
 * connection presenting that certificate, and no DPoP proof beside it — FAPI 2.0 wants exactly one
 * sender constraint per token, so a request offering two is refused rather than judged by either.
 */
import type { Context } from 'koa';
import type { Config } from '../config/index.ts';
import { certificateBindingProblem, type Mtls } from '../mtls/index.ts';
import { DpopError, type DpopReplayStore, verifyDpopProof } from './dpop.ts';
import { ApiError, bearerChallenge, dpopHeaders } from './errors.ts';

export interface SenderConstraintOptions {
  ctx: Context;
  config: Config;
  mtls: Mtls;
  /** From presentedAccessToken. */
  scheme: string;
  value: string;
  token: { jkt?: string | undefined; 'x5t#S256'?: string | undefined };
  replay: DpopReplayStore;
  /** The API's invalid_token error (with its challenge). */
  invalid: (description: string) => ApiError;
}

/**
 * Resolves with the binding that was checked, or rejects: an ApiError for a certificate problem or a
 * missing binding (`binding: 'mtls'` on the error for auditing), a DpopError for a bad proof (each API
 * answers those in its own words).
 */
export async function checkSenderConstraint(o: SenderConstraintOptions): Promise<'dpop' | 'mtls'> {
  const { ctx, token } = o;
  const proofs = dpopHeaders(ctx);
  const x5t = token['x5t#S256'];
  if (x5t) {
    const invalid = (message: string) =>
      new CertificateBindingError(401, 'invalid_token', message, bearerChallenge('invalid_token', message));
    if (o.scheme !== 'bearer')
      throw invalid('a certificate-bound access token is presented with the Bearer scheme');
    if (proofs.length)
      throw new CertificateBindingError(
        400,
        'invalid_request',
        'a certificate-bound access token must not come with a DPoP proof (one sender constraint per token)',
        bearerChallenge('invalid_request', 'one sender constraint per token'),
      );
    const problem = certificateBindingProblem(o.mtls.presented(ctx.req), x5t);
    if (problem) throw invalid(problem);
    return 'mtls';
  }
  if (o.scheme !== 'dpop') throw o.invalid('the access token must be presented with the DPoP scheme');
  if (!token.jkt) throw o.invalid('the access token is not DPoP-bound');
  await verifyDpopProof({
    headers: proofs,
    method: ctx.method,
    url: `${o.mtls.requestOrigin(ctx)}${ctx.originalUrl}`,
    accessToken: o.value,
    expectedJkt: token.jkt,
    replay: o.replay,
    iatWindowSeconds: o.config.api.dpopIatWindowSeconds,
  });
  return 'dpop';
}

/** A certificate-bound token refused (the caller audits it as such). */
export class CertificateBindingError extends ApiError {}

export { DpopError };
