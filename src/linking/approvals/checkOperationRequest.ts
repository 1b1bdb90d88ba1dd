import { type KoaContextWithOIDC, errors as oidcErrors } from 'oidc-provider';
import { institutionIdOf } from '../../api/institution.ts';
import { isOperationDetailType } from './operationDetails.ts';

/**
 * The further check of an operation detail (src/consent/authorizationDetails.ts validates its
 * schema): only a brokerage's relying party (a client naming its institution) may ask, and for
 * one operation per request.
 */
export function checkOperationRequest(ctx: KoaContextWithOIDC, detail: unknown, client: unknown): void {
  const type = (detail as { type?: string }).type;
  if (!institutionIdOf(client as Parameters<typeof institutionIdOf>[0]))
    throw new oidcErrors.InvalidAuthorizationDetails(
      `${type} approvals may only be requested by a member institution's relying party`,
    );
  const all = JSON.parse(String(ctx.oidc.params?.authorization_details ?? '[]')) as Array<{ type?: unknown }>;
  if (all.filter((d) => isOperationDetailType(d?.type)).length > 1)
    throw new oidcErrors.InvalidAuthorizationDetails('approve one operation per request');
}
