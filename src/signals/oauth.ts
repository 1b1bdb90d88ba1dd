/**
 * How oidc-provider issues SSF management tokens: client credentials for the SSF resource (RFC 8707).
 * Only clients configured as peers get one, with the `ssf.*` scopes their client metadata lists;
 * a peer that names no resource gets the SSF one by default. Authorization-code flows never default
 * to a resource, so the FAPI clients' tokens are unchanged.
 */
import type { Client, KoaContextWithOIDC, ResourceServer } from 'oidc-provider';
import { errors } from 'oidc-provider';
import type { Config } from '../config/index.ts';
import { SSF_SCOPES, ssfResource } from './context.ts';

/** Short-lived, as the CAEP interoperability profile asks (at most 60 minutes). */
export const SSF_TOKEN_TTL_SECONDS = 600;

export interface SsfResourceIndicators {
  defaultResource(
    ctx: KoaContextWithOIDC,
    client: Client,
    oneOf?: readonly string[],
  ): Promise<string | readonly string[] | undefined>;
  getResourceServerInfo(
    ctx: KoaContextWithOIDC,
    resourceIndicator: string,
    client: Client,
  ): Promise<ResourceServer>;
  useGrantedResource(): Promise<boolean>;
}

export function ssfResourceIndicators(config: Config): SsfResourceIndicators {
  const resource = ssfResource(config.issuer);
  const peerClients = new Set(config.signals.peers.flatMap((p) => (p.clientId ? [p.clientId] : [])));
  const scopesOf = (client: Client) =>
    String((client as unknown as { scope?: string }).scope ?? '')
      .split(' ')
      .filter((s) => (SSF_SCOPES as readonly string[]).includes(s));
  return {
    async defaultResource(ctx, client, oneOf) {
      if (oneOf) return oneOf;
      const params = ctx.oidc.params as { grant_type?: unknown; scope?: unknown } | undefined;
      if (params?.grant_type !== 'client_credentials') return undefined;
      // A peer, or anyone asking for an ssf.* scope, is judged by getResourceServerInfo: only peers pass.
      const asksSsf = String(params.scope ?? '')
        .split(' ')
        .some((s) => s.startsWith('ssf.'));
      return peerClients.has(client.clientId) || asksSsf ? resource : undefined;
    },
    async getResourceServerInfo(_ctx, indicator, client) {
      const scopes = scopesOf(client);
      if (indicator !== resource || !peerClients.has(client.clientId) || scopes.length === 0)
        throw new errors.InvalidTarget();
      return {
        scope: scopes.join(' '),
        audience: resource,
        accessTokenTTL: SSF_TOKEN_TTL_SECONDS,
        accessTokenFormat: 'opaque',
      };
    },
    async useGrantedResource() {
      return false;
    },
  };
}
