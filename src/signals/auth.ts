/**
 * Who is calling the SSF management and poll endpoints: an access token the hub issued to a peer
 * with the client-credentials grant for the SSF resource (RFC 8707), sent in the Authorization header
 * only (never the query string: CAEP interop §2.7.2). A DPoP-bound token needs its proof (RFC 9449);
 * a bearer token is accepted only when the peer's client is not DPoP-bound. `ssf.manage` includes
 * `ssf.read`. The client must still be enabled. Errors are RFC 6750 §3 (or RFC 9449 §7.1) challenges.
 */
import type { Context } from 'koa';
import type Provider from 'oidc-provider';
import { createDbReplayStore, DpopError, type DpopReplayStore, verifyDpopProof } from '../api/dpop.ts';
import type { PeerConfig } from '../config/index.ts';
import { SIGNING_ALGS } from '../keys/index.ts';
import { type SignalsContext, ssfResource } from './context.ts';
import { ManagementError } from './errors.ts';

export type SsfScope = 'ssf.read' | 'ssf.manage';

export interface Caller {
  clientId: string;
  peer: PeerConfig;
  scopes: Set<string>;
}

const quote = (s: string) => s.replace(/["\\]/g, '');

function challenge(scheme: 'Bearer' | 'DPoP', error?: string, description?: string, scope?: string): string {
  const parts: string[] = [];
  if (error) parts.push(`error="${error}"`);
  if (description) parts.push(`error_description="${quote(description)}"`);
  if (scope) parts.push(`scope="${scope}"`);
  if (scheme === 'DPoP') parts.push(`algs="${SIGNING_ALGS.join(' ')}"`);
  return parts.length ? `${scheme} ${parts.join(', ')}` : scheme;
}

/** What authenticate leaves on the request for the audit of a refusal. */
export interface SsfState {
  /** The client of the live access token presented (set even when a later check refused it). */
  ssfTokenClient?: string | undefined;
}

export interface Authenticator {
  authenticate(ctx: Context, scope: SsfScope): Promise<Caller>;
}

export function createAuthenticator(signals: SignalsContext, provider: Provider): Authenticator {
  const replay: DpopReplayStore = createDbReplayStore(signals.db);
  const resource = ssfResource(signals.issuer);

  return {
    async authenticate(ctx, scope) {
      // Checked before anything else, so a token in a URL is refused even alongside a valid header.
      if (ctx.querystring && new URLSearchParams(ctx.querystring).has('access_token'))
        throw new ManagementError(
          400,
          'invalid_request',
          'access tokens are not accepted in the query string',
          challenge('Bearer', 'invalid_request', 'access tokens are not accepted in the query string'),
        );
      const header = ctx.get('authorization');
      const match = /^(Bearer|DPoP) +([\x21-\x7e]+)$/i.exec(header);
      if (!match)
        throw new ManagementError(
          401,
          'invalid_token',
          header ? 'malformed Authorization header' : 'an access token is required',
          `${challenge('Bearer', header ? 'invalid_token' : undefined)}, ${challenge('DPoP')}`,
        );
      const scheme = match[1]!.toLowerCase() === 'dpop' ? 'DPoP' : 'Bearer';
      const value = match[2]!;
      const invalid = (description: string) =>
        new ManagementError(
          401,
          'invalid_token',
          description,
          challenge(scheme, 'invalid_token', description),
        );

      const token = await provider.ClientCredentials.find(value);
      if (!token || token.isExpired) throw invalid('the access token is invalid, expired or revoked');
      // From here on the caller presented a live token: its refusals name a client and are always audited.
      (ctx.state as SsfState).ssfTokenClient = token.clientId;
      const aud = (token as unknown as { aud?: string | string[] }).aud;
      if (!(Array.isArray(aud) ? aud.includes(resource) : aud === resource))
        throw invalid('the access token is not for the SSF API');
      if (token['x5t#S256']) throw invalid('certificate-bound tokens are not supported here');
      if (token.jkt) {
        if (scheme !== 'DPoP')
          throw invalid('the access token is DPoP-bound: use the DPoP scheme with a proof');
        const raw = ctx.req.headers.dpop;
        try {
          await verifyDpopProof({
            headers: raw === undefined ? [] : Array.isArray(raw) ? raw : [raw],
            method: ctx.method,
            url: `${signals.config.origin}${ctx.originalUrl}`,
            accessToken: value,
            expectedJkt: token.jkt,
            replay,
            iatWindowSeconds: signals.config.api.dpopIatWindowSeconds,
          });
        } catch (err) {
          if (!(err instanceof DpopError)) throw err;
          throw new ManagementError(
            401,
            'invalid_dpop_proof',
            err.message,
            challenge('DPoP', 'invalid_dpop_proof', err.message),
          );
        }
      } else if (scheme === 'DPoP') {
        throw invalid('the access token is not DPoP-bound');
      }
      const clientId = token.clientId!;
      // Disabling a client takes effect at its next request (as at the read API and grant management),
      // not when its short-lived token expires.
      const client = await signals.db.query('SELECT 1 FROM clients WHERE client_id = $1 AND enabled', [
        clientId,
      ]);
      if (client.rowCount !== 1) throw invalid('the client has been disabled');
      const peer = signals.peers.byClient.get(clientId);
      if (!peer)
        throw new ManagementError(403, 'access_denied', 'this client is not an SSF receiver of this hub');
      const scopes = new Set(
        String(token.scope ?? '')
          .split(' ')
          .filter(Boolean),
      );
      const ok = scopes.has('ssf.manage') || (scope === 'ssf.read' && scopes.has('ssf.read'));
      if (!ok)
        throw new ManagementError(
          403,
          'insufficient_scope',
          `the access token lacks the ${scope} scope`,
          challenge(scheme, 'insufficient_scope', undefined, scope),
        );
      return { clientId, peer, scopes };
    },
  };
}
