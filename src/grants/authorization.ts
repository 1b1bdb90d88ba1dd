/**
 * FAPI Grant Management for OAuth 2.0 (ID1) on the authorization side, which oidc-provider does
 * not implement: the `grant_management_action` / `grant_id` request parameters, which grant an
 * authorization request works on, `grant_id` in token responses, and the discovery metadata.
 *
 *   create   a new grant, whatever grants the client already has.
 *   merge    adds what the customer grants now to the grant `grant_id` (union of accounts, data
 *            types and scopes; the longer lookback and the later expiry).
 *   replace  the grant `grant_id` then holds exactly what the customer grants now.
 *   (none)   a request with authorization_details makes a new grant, as `create`; a scope-only
 *            request keeps oidc-provider's behaviour (the grant of this browser session and client).
 */
import type Provider from 'oidc-provider';
import type { Configuration, KoaContextWithOIDC } from 'oidc-provider';
import { errors, interactionPolicy } from 'oidc-provider';

export const GRANT_MANAGEMENT_SCOPES = ['grant_management_query', 'grant_management_revoke'] as const;
export const GRANT_ACTIONS = ['create', 'merge', 'replace'] as const;
export type GrantAction = (typeof GRANT_ACTIONS)[number];
export const grantManagementEndpoint = (issuer: string) => `${issuer}/grants`;

/** Grant Management's own error for a grant_id that is unknown, ended, or not this client's or customer's. */
export class InvalidGrantId extends errors.CustomOIDCProviderError {
  constructor(description: string) {
    super('invalid_grant_id', description);
  }
}

/** The action of a request's parameters, or undefined. */
export function grantActionOf(params: Record<string, unknown> | undefined): GrantAction | undefined {
  const a = params?.grant_management_action;
  return typeof a === 'string' && (GRANT_ACTIONS as readonly string[]).includes(a)
    ? (a as GrantAction)
    : undefined;
}

/**
 * `extraParams` with their checks (at PAR, and again at the authorization endpoint): the action is
 * one of create/merge/replace; merge and replace name an existing grant of this client; create and
 * no action name none.
 */
export function grantManagementParams(): NonNullable<Configuration['extraParams']> {
  return {
    grant_id: null,
    async grant_management_action(ctx: KoaContextWithOIDC, value: unknown, client: unknown) {
      const grantId = (ctx.oidc.params as Record<string, unknown>).grant_id;
      if (value === undefined) {
        if (grantId !== undefined)
          throw new errors.InvalidRequest('grant_id needs grant_management_action merge or replace');
        return;
      }
      if (!(GRANT_ACTIONS as readonly unknown[]).includes(value))
        throw new errors.InvalidRequest(`grant_management_action must be one of ${GRANT_ACTIONS.join(', ')}`);
      if (value === 'create') {
        if (grantId !== undefined) throw new errors.InvalidRequest('grant_id must not accompany create');
        return;
      }
      if (typeof grantId !== 'string' || !grantId)
        throw new errors.InvalidRequest(`grant_management_action ${String(value)} requires grant_id`);
      const grant = await ctx.oidc.provider.Grant.find(grantId);
      if (!grant || grant.clientId !== (client as { clientId: string }).clientId)
        throw new InvalidGrantId('the grant_id is unknown, has ended or belongs to another client');
    },
  } as unknown as NonNullable<Configuration['extraParams']>;
}

/**
 * oidc-provider's `loadExistingGrant`: which grant an authorization request (once the customer has
 * signed in) extends. A grant of another customer is refused like an unknown one.
 */
export async function loadExistingGrant(ctx: KoaContextWithOIDC) {
  const params = ctx.oidc.params as Record<string, unknown>;
  const action = grantActionOf(params);
  const decided = (ctx.oidc.result as { consent?: { grantId?: string } } | undefined)?.consent?.grantId;
  const { Grant } = ctx.oidc.provider;
  if (action === 'merge' || action === 'replace') {
    const grant = await Grant.find(decided ?? String(params.grant_id));
    if (
      !grant ||
      grant.clientId !== ctx.oidc.client!.clientId ||
      grant.accountId !== ctx.oidc.session!.accountId
    )
      throw new InvalidGrantId('the grant_id is unknown, has ended or belongs to another client or customer');
    return grant;
  }
  if (action === 'create' || params.authorization_details !== undefined)
    return decided ? Grant.find(decided) : undefined;
  const grantId = decided || ctx.oidc.session!.grantIdFor(ctx.oidc.client!.clientId);
  return grantId ? Grant.find(grantId) : undefined;
}

/**
 * A consent-prompt check: merge and replace always show the consent page, even when the grant
 * already holds every scope asked for (otherwise a scope-only replace would change nothing).
 */
export function grantActionConsentCheck(): interactionPolicy.Check {
  return new interactionPolicy.Check(
    'grant_management_action',
    'the client asks to merge into or replace a grant',
    (ctx) => {
      const action = grantActionOf(ctx.oidc.params as Record<string, unknown>);
      return (action === 'merge' || action === 'replace') && !ctx.oidc.result?.consent
        ? interactionPolicy.Check.REQUEST_PROMPT
        : interactionPolicy.Check.NO_NEED_TO_PROMPT;
    },
  );
}

/** Discovery metadata of Grant Management. */
export function grantManagementDiscovery(issuer: string): Record<string, unknown> {
  return {
    grant_management_actions_supported: ['query', 'revoke', ...GRANT_ACTIONS],
    grant_management_endpoint: grantManagementEndpoint(issuer),
    grant_management_action_required: false,
  };
}

/** Every token response for a grant (code and refresh token grants) names it: `grant_id`. */
export function addGrantIdToTokenResponses(provider: Provider): void {
  provider.use(async (ctx, next) => {
    await next();
    if (ctx.oidc?.route !== 'token' || ctx.status !== 200) return;
    const body = ctx.body as Record<string, unknown> | undefined;
    const grantId = (ctx.oidc.entities.AccessToken as { grantId?: string } | undefined)?.grantId;
    if (body && typeof body.access_token === 'string' && grantId) body.grant_id = grantId;
  });
}
