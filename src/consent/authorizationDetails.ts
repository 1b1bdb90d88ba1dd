/**
 * The RFC 9396 authorization_details types the hub understands: ONE registry from which the
 * provider builds `features.richAuthorizationRequests` (src/oidc/provider.ts). A new type (issue 6:
 * `withdrawal`, `withdrawal_account_change`) is one more entry in AUTHORIZATION_DETAIL_TYPES.
 *
 * `account_information` (read access for aggregators), as a client requests it:
 *   { "type": "account_information",
 *     "data_types": ["balances", "holdings", "transactions", "account_details"],  // at least one
 *     "transaction_lookback_days": 365,       // optional, 1…api.transactionLookbackDays (default that)
 *     "expires_at": "2027-05-01T00:00:00Z",   // optional, at most oidc.grantTtl ahead (default that)
 *     "account_hints": ["acc_…"],             // optional: pre-ticks these on the consent page, nothing more
 *     "locations": ["https://hub/api/v1"] }    // optional, only the hub's read API
 * Accounts are never named by the client: the customer ticks them on the consent page. What was
 * granted (grant, token response, grant management query) adds `accounts` and resolves the defaults:
 *   { "type": "account_information", "locations": [...], "data_types": [...],
 *     "transaction_lookback_days": 365, "expires_at": "…", "accounts": ["acc_…", "acc_…"] }
 */
import type { KoaContextWithOIDC, RichAuthorizationRequestsActiveConfiguration } from 'oidc-provider';
import { errors } from 'oidc-provider';
import { z } from 'zod';
import { checkOperationRequest } from '../linking/approvals/checkOperationRequest.ts';
import { withdrawalAccountChangeDetails, withdrawalDetails } from '../linking/approvals/operationDetails.ts';

export const ACCOUNT_INFORMATION = 'account_information';
/** What an account_information consent may cover (account_details = unmasked identifiers). */
export const DATA_TYPES = ['account_details', 'balances', 'holdings', 'transactions'] as const;
export type DataType = (typeof DATA_TYPES)[number];
/** What a consent given with the `accounts` scope alone covers. */
export const SCOPE_ONLY_DATA_TYPES: readonly DataType[] = ['balances', 'holdings', 'transactions'];
/** A detail must leave the customer some time: expiries sooner than this are refused. */
const MIN_EXPIRY_SECONDS = 300;
const ACCOUNT_ID = /^[\x21-\x7e]{1,64}$/;

/** The hub's policy the types are checked against (from the configuration). */
export interface DetailPolicy {
  issuer: string;
  /** Longest (and default) transaction lookback: api.transactionLookbackDays. */
  maxLookbackDays: number;
  /** Longest (and default) consent: oidc.grantTtl. */
  maxExpirySeconds: number;
}

export const apiLocation = (issuer: string) => `${issuer}/api/v1`;

export interface AccountInformationRequest {
  type: typeof ACCOUNT_INFORMATION;
  data_types: DataType[];
  transaction_lookback_days?: number | undefined;
  expires_at?: string | undefined;
  account_hints?: string[] | undefined;
  locations?: string[] | undefined;
}

export interface AccountInformationGrant {
  type: typeof ACCOUNT_INFORMATION;
  locations: string[];
  data_types: DataType[];
  transaction_lookback_days?: number;
  expires_at: string;
  accounts: string[];
}

function accountInformationSchema(policy: DetailPolicy) {
  return z
    .object({
      type: z.literal(ACCOUNT_INFORMATION),
      data_types: z
        .array(z.enum(DATA_TYPES))
        .min(1)
        .refine((a) => new Set(a).size === a.length, 'data_types must not repeat a value'),
      transaction_lookback_days: z.number().int().min(1).max(policy.maxLookbackDays).optional(),
      expires_at: z.iso
        .datetime({ offset: true })
        .refine((s) => Date.parse(s) >= Date.now() + MIN_EXPIRY_SECONDS * 1000, {
          message: `expires_at must be at least ${MIN_EXPIRY_SECONDS} seconds ahead`,
        })
        .refine((s) => Date.parse(s) <= Date.now() + policy.maxExpirySeconds * 1000, {
          message: `expires_at may be at most ${policy.maxExpirySeconds} seconds ahead`,
        })
        .optional(),
      account_hints: z.array(z.string().regex(ACCOUNT_ID)).min(1).max(50).optional(),
      locations: z
        .array(z.literal(apiLocation(policy.issuer)))
        .min(1)
        .optional(),
    })
    .strict()
    .superRefine((d, ctx) => {
      if (d.transaction_lookback_days !== undefined && !d.data_types.includes('transactions'))
        ctx.addIssue({
          code: 'custom',
          path: ['transaction_lookback_days'],
          message: 'transaction_lookback_days needs the transactions data type',
        });
    });
}

/** One authorization details type: how a request's detail is checked. */
export interface AuthorizationDetailType {
  /** The request form's schema (strict: unknown members are refused). */
  schema(policy: DetailPolicy): z.ZodType;
  /** At most this many details of the type in one request. */
  maxPerRequest: number;
  /**
   * A client whose registration lists no `authorization_details_types` may request it: `true`,
   * `false` (a type that moves money: registered per client), or `'accounts'`: only when the
   * client may ask for the `accounts` scope (its registered scope lists it, or it registered no
   * scope, which allows every scope) — a detail must not reach data its scope does not.
   */
  allowedByDefault: boolean | 'accounts';
  /** Why a member the schema does not know was refused, when there is a better word for it. */
  unknownMemberHint?: Record<string, string>;
  /** A further check of the request (who may ask, what may be combined); throws InvalidAuthorizationDetails. */
  check?(ctx: KoaContextWithOIDC, detail: unknown, client: unknown): void;
}

export const AUTHORIZATION_DETAIL_TYPES: Record<string, AuthorizationDetailType> = {
  [ACCOUNT_INFORMATION]: {
    schema: accountInformationSchema,
    maxPerRequest: 1,
    // It grants what the accounts scope grants (src/api): a client registered without that scope
    // reaches account data through it only when its registration lists the type (security review).
    allowedByDefault: 'accounts',
    unknownMemberHint: {
      accounts: 'accounts are chosen by the customer on the consent page; send account_hints instead',
    },
  },
  // Operations a brokerage asks the customer to approve with a passkey (src/linking/approvals).
  withdrawal: {
    schema: () => withdrawalDetails,
    maxPerRequest: 1,
    allowedByDefault: false,
    check: checkOperationRequest,
  },
  withdrawal_account_change: {
    schema: () => withdrawalAccountChangeDetails,
    maxPerRequest: 1,
    allowedByDefault: false,
    check: checkOperationRequest,
  },
};

/** `authorization_details_types` (RFC 9396 §10) of a client whose registration lists none, by its scope. */
export function defaultClientDetailTypes(scope: unknown): string[] {
  const mayAskAccounts =
    scope === undefined || (typeof scope === 'string' && scope.split(' ').includes('accounts'));
  return Object.entries(AUTHORIZATION_DETAIL_TYPES)
    .filter(([, e]) => e.allowedByDefault === true || (e.allowedByDefault === 'accounts' && mayAskAccounts))
    .map(([type]) => type);
}

/**
 * The provider's clientDefaults value of `authorization_details_types`: a placeholder that
 * settleClientDetailTypes replaces. Not a type, so a client left with it fails oidc-provider's own
 * metadata check (fail closed) instead of being allowed every type.
 */
export const DETAIL_TYPES_FROM_SCOPE = '(from the scope)';

/**
 * For oidc-provider's extraClientMetadata validator (which sees the metadata with the defaults and
 * may change it): a client that registered no `authorization_details_types` (it holds the
 * placeholder default) gets them from its scope.
 */
export function settleClientDetailTypes(metadata: Record<string, unknown>): void {
  const types = metadata.authorization_details_types;
  if (
    types === undefined ||
    (Array.isArray(types) && types.length === 1 && types[0] === DETAIL_TYPES_FROM_SCOPE)
  )
    metadata.authorization_details_types = defaultClientDetailTypes(metadata.scope);
}

/** The first problem zod found, as one line for error_description. */
function describeIssue(err: z.ZodError, hint: Record<string, string> | undefined): string {
  const issue = err.issues[0]!;
  if (issue.code === 'unrecognized_keys') {
    const key = issue.keys[0]!;
    return hint?.[key] ?? `unknown member ${key}`;
  }
  const where = issue.path.length ? `${issue.path.join('.')}: ` : '';
  return `${where}${issue.message}`;
}

/** Parses the request's details, or throws oidc-provider's InvalidAuthorizationDetails. */
export function parseAuthorizationDetail(policy: DetailPolicy, detail: unknown, index: number): unknown {
  const type = (detail as { type?: unknown } | null)?.type;
  const entry = typeof type === 'string' ? AUTHORIZATION_DETAIL_TYPES[type] : undefined;
  if (!entry)
    throw new errors.InvalidAuthorizationDetails(`unsupported type (authorization details index ${index})`);
  const parsed = entry.schema(policy).safeParse(detail);
  if (!parsed.success)
    throw new errors.InvalidAuthorizationDetails(
      `${describeIssue(parsed.error, entry.unknownMemberHint)} (authorization details index ${index})`,
    );
  return parsed.data;
}

/** The request's details (already checked by oidc-provider at PAR), or [] when it has none. */
export function requestedDetails(params: Record<string, unknown> | undefined): Array<{ type: string }> {
  const raw = params?.authorization_details;
  if (typeof raw !== 'string') return [];
  const parsed = JSON.parse(raw) as unknown;
  return Array.isArray(parsed) ? (parsed as Array<{ type: string }>) : [];
}

/** The account_information detail of a request, if any. */
export function accountInformationOf(
  details: Array<{ type: string }>,
): AccountInformationRequest | undefined {
  return details.find((d) => d.type === ACCOUNT_INFORMATION) as AccountInformationRequest | undefined;
}

/** The active configuration, with introspection's helper (introspection is on: src/oidc/messageSigning.ts). */
type RarFeature = RichAuthorizationRequestsActiveConfiguration & {
  authorizationDetailsForIntrospection(ctx: KoaContextWithOIDC, token: unknown): Promise<unknown>;
};

/**
 * `features.richAuthorizationRequests` for oidc-provider: every registered type validated with its
 * schema (invalid → `invalid_authorization_details`, at PAR as an OAuth error). Codes, access and
 * refresh tokens carry what the customer granted — the grant's details as the consent page stored
 * them (src/consent/decision.ts), never the request's. The read API enforces the consents row, not
 * the token's copy, so a merge, replace or revocation applies to tokens already issued.
 */
export function richAuthorizationRequestsFeature(policy: DetailPolicy): RarFeature {
  const types = Object.fromEntries(
    Object.entries(AUTHORIZATION_DETAIL_TYPES).map(([type, entry]) => [
      type,
      {
        validate(ctx: KoaContextWithOIDC, detail: unknown, client: unknown) {
          // oidc-provider lets a client without the member use every type: never so here.
          if (!Array.isArray((client as { authorizationDetailsTypes?: unknown }).authorizationDetailsTypes))
            throw new errors.InvalidAuthorizationDetails(
              `authorization details type '${type}' is not allowed for this client`,
            );
          const all = requestedDetails(ctx.oidc.params as Record<string, unknown>);
          // oidc-provider passes the detail alone: find its position for the error message.
          const same = JSON.stringify(detail);
          const index = Math.max(
            all.findIndex((d) => JSON.stringify(d) === same),
            0,
          );
          if (all.filter((d) => d.type === type).length > entry.maxPerRequest)
            throw new errors.InvalidAuthorizationDetails(
              `at most ${entry.maxPerRequest} authorization detail(s) of type ${type} per request`,
            );
          parseAuthorizationDetail(policy, detail, index);
          entry.check?.(ctx, detail, client);
        },
      },
    ]),
  );
  return {
    enabled: true,
    types,
    authorizationDetailsForGrantSource: async (ctx: KoaContextWithOIDC) =>
      (ctx.oidc.grant as unknown as { rar?: unknown[] } | undefined)?.rar,
    // The grant's details now (a refresh after a merge or replace carries the new terms), else the source's.
    authorizationDetailsForAccessToken: async (ctx: KoaContextWithOIDC, _token: unknown, source: unknown) => {
      const grant = ctx.oidc.entities.Grant as unknown as { rar?: unknown[] } | undefined;
      return grant ? grant.rar : (source as { rar?: unknown[] } | undefined)?.rar;
    },
    authorizationDetailsForIntrospection: async (_ctx: KoaContextWithOIDC, token: unknown) =>
      (token as { rar?: unknown[] } | undefined)?.rar,
  } as unknown as RarFeature;
}
