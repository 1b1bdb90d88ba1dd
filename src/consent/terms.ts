/**
 * What a consent covers once the customer has decided: from the request (authorization_details or
 * the `accounts` scope alone) and the accounts ticked, and, for a Grant Management `merge`, together
 * with what the grant already held.
 */
import {
  ACCOUNT_INFORMATION,
  type AccountInformationGrant,
  type AccountInformationRequest,
  apiLocation,
  DATA_TYPES,
  type DataType,
  SCOPE_ONLY_DATA_TYPES,
} from './authorizationDetails.ts';

export interface ConsentTerms {
  scopes: string[];
  accountIds: string[];
  dataTypes: DataType[];
  /** Transaction lookback in days; null when transactions are not covered. */
  lookbackDays: number | null;
  expiresAt: Date;
}

export interface TermsDefaults {
  /** api.transactionLookbackDays */
  lookbackDays: number;
  /** oidc.grantTtl */
  grantTtlSeconds: number;
}

const ordered = (types: Iterable<string>): DataType[] => {
  const set = new Set(types);
  return DATA_TYPES.filter((t) => set.has(t));
};

/**
 * The terms of one decision. A scope-only request with `accounts` maps onto the same model: balances,
 * holdings and transactions (identifiers masked), the configured lookback, the grant's lifetime.
 */
export function termsOf(
  request: {
    scopes: string[];
    accountInformation: AccountInformationRequest | undefined;
    accountIds: string[];
  },
  defaults: TermsDefaults,
  now = Date.now(),
): ConsentTerms {
  const info = request.accountInformation;
  const dataTypes = info
    ? ordered(info.data_types)
    : request.scopes.includes('accounts')
      ? [...SCOPE_ONLY_DATA_TYPES]
      : [];
  const transactions = dataTypes.includes('transactions');
  return {
    scopes: [...new Set(request.scopes)],
    accountIds: [...new Set(request.accountIds)],
    dataTypes,
    lookbackDays: transactions ? (info?.transaction_lookback_days ?? defaults.lookbackDays) : null,
    expiresAt: info?.expires_at ? new Date(info.expires_at) : new Date(now + defaults.grantTtlSeconds * 1000),
  };
}

/** What a recorded consent holds (src/consent `Consent`); rows from before data types existed have none. */
export interface HeldConsent {
  scopes: string[];
  accountIds: string[];
  dataTypes: string[] | null;
  lookbackDays: number | null;
  expiresAt: Date;
}

/**
 * The terms of a recorded consent: a row without data types has the `accounts` scope's, one without a
 * lookback the configured one.
 */
export function termsOfConsent(
  held: HeldConsent,
  defaults: Pick<TermsDefaults, 'lookbackDays'>,
): ConsentTerms {
  const dataTypes = ordered(
    held.dataTypes ?? (held.scopes.includes('accounts') ? SCOPE_ONLY_DATA_TYPES : []),
  );
  return {
    scopes: held.scopes,
    accountIds: held.accountIds,
    dataTypes,
    lookbackDays: dataTypes.includes('transactions') ? (held.lookbackDays ?? defaults.lookbackDays) : null,
    expiresAt: held.expiresAt,
  };
}

/** `merge`: everything either held; the longer lookback, the later expiry. */
export function mergeTerms(held: HeldConsent, next: ConsentTerms, defaults: TermsDefaults): ConsentTerms {
  const before = termsOfConsent(held, defaults);
  const dataTypes = ordered([...before.dataTypes, ...next.dataTypes]);
  const lookback = Math.max(before.lookbackDays ?? 0, next.lookbackDays ?? 0);
  return {
    scopes: [...new Set([...before.scopes, ...next.scopes])],
    accountIds: [...new Set([...before.accountIds, ...next.accountIds])],
    dataTypes,
    lookbackDays: dataTypes.includes('transactions') ? lookback || defaults.lookbackDays : null,
    expiresAt: new Date(Math.max(before.expiresAt.getTime(), next.expiresAt.getTime())),
  };
}

/** The granted account_information detail (grant, tokens, token response, grant query, introspection). */
export function grantedAccountInformation(issuer: string, terms: ConsentTerms): AccountInformationGrant {
  return {
    type: ACCOUNT_INFORMATION,
    locations: [apiLocation(issuer)],
    data_types: terms.dataTypes,
    ...(terms.lookbackDays !== null ? { transaction_lookback_days: terms.lookbackDays } : {}),
    expires_at: terms.expiresAt.toISOString(),
    accounts: terms.accountIds,
  };
}
