/**
 * FAPI Grant Management for OAuth 2.0: the authorization-side hooks the provider uses
 * (authorization.ts) and the grant management endpoint (endpoint.ts).
 */
export {
  GRANT_ACTIONS,
  GRANT_MANAGEMENT_SCOPES,
  type GrantAction,
  grantManagementEndpoint,
  InvalidGrantId,
} from './authorization.ts';
export { type GrantManagementRoutesOptions, grantManagementRoutes } from './endpoint.ts';
