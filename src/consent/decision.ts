/**
 * The customer's "allow" on the consent page, applied to the oidc-provider grant and the consents
 * table together: what the request asked (authorization_details or scopes), narrowed to the accounts
 * the customer ticked, combined with the grant's earlier terms as Grant Management's action says.
 */
import type { Queryable } from '../db/index.ts';
import { revokeGrant } from '../oidc/adapter.ts';
import {
  ACCOUNT_INFORMATION,
  accountInformationOf,
  apiLocation,
  requestedDetails,
} from './authorizationDetails.ts';
import { ConsentError, checkAccounts, consentRevokedMeanwhile, findConsent, recordConsent } from './index.ts';
import {
  type ConsentTerms,
  grantedAccountInformation,
  mergeTerms,
  type TermsDefaults,
  termsOf,
} from './terms.ts';

/** The parts of an oidc-provider Grant this module touches. */
export interface GrantLike {
  jti?: string;
  exp?: number;
  openid?: unknown;
  resources?: unknown;
  rejected?: unknown;
  rar?: Array<{ type: string }> | undefined;
  addOIDCScope(scope: string): void;
  addResourceScope(resource: string, scope: string): void;
  save(): Promise<string>;
}

/** Scopes of the read API resource (src/oidc/provider.ts): what a RAR token carries for it. */
const API_SCOPES = ['accounts', 'grant_management_query', 'grant_management_revoke'];

export interface DecisionInput {
  grant: GrantLike;
  /** The authorization request's parameters. */
  params: Record<string, unknown>;
  customerId: string;
  clientId: string;
  /** Accounts the customer ticked. */
  accountIds: string[];
  issuer: string;
  defaults: TermsDefaults;
}

/**
 * Stores the decision: grant (scopes, resource scopes, authorization details, expiry) and consent
 * row. Throws ConsentError when the accounts are not the customer's or none is chosen for
 * authorization details; the caller destroys a grant it created.
 */
export async function applyConsentDecision(
  db: Queryable,
  o: DecisionInput,
): Promise<{ grantId: string; terms: ConsentTerms }> {
  const scopes = String(o.params.scope ?? '')
    .split(' ')
    .filter(Boolean);
  const details = requestedDetails(o.params);
  const info = accountInformationOf(details);
  const wantsAccounts = scopes.includes('accounts') || info !== undefined;
  // Checked before the grant changes: a refused decision leaves an earlier grant as it was.
  const accountIds = wantsAccounts ? await checkAccounts(db, o.customerId, o.accountIds) : [];
  if (info && accountIds.length === 0)
    throw new ConsentError('ERR_CONSENT_ACCOUNTS', 'choose at least one account to share');
  let terms = termsOf({ scopes, accountInformation: info, accountIds }, o.defaults);

  const action = o.params.grant_management_action;
  const held = o.grant.jti ? await findConsent(db, o.grant.jti) : undefined;
  // The grant was loaded before a revocation landed: extending it would write it back.
  if (held?.revokedAt) throw consentRevokedMeanwhile();
  if (action === 'merge' && held) terms = mergeTerms(held, terms, o.defaults);
  if (action === 'replace') {
    // The grant holds exactly this decision: earlier scopes and details go.
    o.grant.openid = undefined;
    o.grant.resources = undefined;
    o.grant.rejected = undefined;
    o.grant.rar = undefined;
  }

  o.grant.addOIDCScope(terms.scopes.join(' '));
  const others = (o.grant.rar ?? []).filter((d) => d.type !== ACCOUNT_INFORMATION);
  if (info || (action === 'merge' && o.grant.rar?.some((d) => d.type === ACCOUNT_INFORMATION))) {
    o.grant.addResourceScope(
      apiLocation(o.issuer),
      terms.scopes.filter((s) => API_SCOPES.includes(s)).join(' '),
    );
    o.grant.rar = [...others, grantedAccountInformation(o.issuer, terms)];
  }
  // The grant (and so its refresh tokens) ends with the consent.
  o.grant.exp = Math.floor(terms.expiresAt.getTime() / 1000);
  const grantId = await o.grant.save();
  try {
    await recordConsent(db, {
      grantId,
      customerId: o.customerId,
      clientId: o.clientId,
      scopes: terms.scopes,
      accountIds: terms.accountIds,
      dataTypes: terms.dataTypes,
      lookbackDays: terms.lookbackDays,
      expiresAt: terms.expiresAt,
    });
  } catch (err) {
    // A revocation landed after the grant was loaded (its deletion may even have come before the
    // save above): the consent stays revoked (recordConsent wrote nothing) and the grant written
    // back goes again. Any revocation committing after recordConsent deletes the saved grant itself.
    if (err instanceof ConsentError && err.code === 'ERR_CONSENT_REVOKED') await revokeGrant(db, grantId);
    throw err;
  }
  return { grantId, terms };
}
