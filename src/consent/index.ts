/**
 * What a customer allowed a client: per oidc-provider grant, the scopes, the accounts the
 * customer picked on the consent page (never the client's choice), the data types, the
 * transaction lookback and the expiry (from RFC 9396 authorization_details, see
 * authorizationDetails.ts), and when the client last read with it.
 */
import type { Queryable } from '../db/index.ts';
import { SCOPE_ONLY_DATA_TYPES } from './authorizationDetails.ts';

export {
  ACCOUNT_INFORMATION,
  type AccountInformationGrant,
  type AccountInformationRequest,
  AUTHORIZATION_DETAIL_TYPES,
  accountInformationOf,
  apiLocation,
  DATA_TYPES,
  type DataType,
  requestedDetails,
  SCOPE_ONLY_DATA_TYPES,
} from './authorizationDetails.ts';
export { applyConsentDecision } from './decision.ts';
export { type ConsentRevocation, revokeConsent } from './revoke.ts';
export { type ConsentTerms, grantedAccountInformation, termsOf, termsOfConsent } from './terms.ts';

export interface Consent {
  grantId: string;
  customerId: string;
  clientId: string;
  scopes: string[];
  accountIds: string[];
  /** NULL for consents recorded before data types existed: the `accounts` scope's defaults apply. */
  dataTypes: string[] | null;
  /** NULL: the configured default lookback applies. */
  lookbackDays: number | null;
  createdAt: Date;
  expiresAt: Date;
  lastUsedAt: Date | null;
  revokedAt: Date | null;
}

export class ConsentError extends Error {
  override name = 'ConsentError';
  /** ERR_CONSENT_REVOKED: the consent being extended was revoked meanwhile (it stays revoked). */
  readonly code: 'ERR_CONSENT_ACCOUNTS' | 'ERR_CONSENT_REVOKED';
  constructor(code: ConsentError['code'], message: string) {
    super(message);
    this.code = code;
  }
}

interface ConsentRow {
  grant_id: string;
  customer_id: string;
  client_id: string;
  scopes: string[];
  account_ids: string[];
  data_types: string[] | null;
  lookback_days: number | null;
  created_at: Date;
  expires_at: Date;
  last_used_at: Date | null;
  revoked_at: Date | null;
}

const toConsent = (r: ConsentRow): Consent => ({
  grantId: r.grant_id,
  customerId: r.customer_id,
  clientId: r.client_id,
  scopes: r.scopes,
  accountIds: r.account_ids,
  dataTypes: r.data_types,
  lookbackDays: r.lookback_days,
  createdAt: r.created_at,
  expiresAt: r.expires_at,
  lastUsedAt: r.last_used_at,
  revokedAt: r.revoked_at,
});

/**
 * Records (or, for a grant the customer extends, replaces) a consent. Account ids must all
 * belong to the customer and be open; anything else is refused and nothing is written.
 * A revoked consent is never brought back: revocation deletes the grant, so a grant id is recorded
 * again only by a decision that loaded the grant before a revocation landed (security review). Then
 * nothing is written and ConsentError ERR_CONSENT_REVOKED is thrown; the statement waits for a
 * revocation in progress on the row and sees its outcome.
 */
export async function recordConsent(
  db: Queryable,
  c: {
    grantId: string;
    customerId: string;
    clientId: string;
    scopes: string[];
    accountIds: string[];
    dataTypes: string[];
    lookbackDays: number | null;
    expiresAt: Date;
  },
): Promise<void> {
  const accountIds = [...new Set(c.accountIds)];
  // The accounts are checked in the statement that writes (one round trip, and no gap between the two).
  const res = await db.query<{ accounts_ok: boolean; written: number }>(
    `WITH ok AS (
       SELECT count(*) = cardinality($5::text[]) AS accounts_ok FROM accounts
       WHERE id = ANY($5::text[]) AND customer_id = $2 AND status = 'open'),
     written AS (
       INSERT INTO consents (grant_id, customer_id, client_id, scopes, account_ids, data_types, lookback_days, expires_at)
       SELECT $1::text, $2::text, $3::text, $4::text[], $5::text[], $6::text[], $7::int, $8::timestamptz FROM ok
       WHERE ok.accounts_ok
       ON CONFLICT (grant_id) DO UPDATE SET scopes = EXCLUDED.scopes, account_ids = EXCLUDED.account_ids,
         data_types = EXCLUDED.data_types, lookback_days = EXCLUDED.lookback_days,
         expires_at = EXCLUDED.expires_at
       WHERE consents.revoked_at IS NULL
       RETURNING 1)
     SELECT ok.accounts_ok, (SELECT count(*) FROM written)::int AS written FROM ok`,
    [c.grantId, c.customerId, c.clientId, c.scopes, accountIds, c.dataTypes, c.lookbackDays, c.expiresAt],
  );
  if (!res.rows[0]?.accounts_ok) throw accountsRefused();
  if (res.rows[0].written !== 1) throw consentRevokedMeanwhile();
}

const accountsRefused = () =>
  new ConsentError('ERR_CONSENT_ACCOUNTS', "an account chosen is not one of the customer's open accounts");

export const consentRevokedMeanwhile = () =>
  new ConsentError(
    'ERR_CONSENT_REVOKED',
    'the permission to extend has ended; start again from the application',
  );

/** The distinct account ids, once all are the customer's open accounts; ConsentError otherwise. */
export async function checkAccounts(db: Queryable, customerId: string, ids: string[]): Promise<string[]> {
  const accountIds = [...new Set(ids)];
  if (accountIds.length) {
    const owned = await db.query<{ n: number }>(
      "SELECT count(*)::int AS n FROM accounts WHERE id = ANY($1::text[]) AND customer_id = $2 AND status = 'open'",
      [accountIds, customerId],
    );
    if (owned.rows[0]?.n !== accountIds.length) throw accountsRefused();
  }
  return accountIds;
}

/** The consent behind a grant, whatever its state. */
export async function findConsent(db: Queryable, grantId: string): Promise<Consent | undefined> {
  const res = await db.query<ConsentRow>('SELECT * FROM consents WHERE grant_id = $1', [grantId]);
  return res.rows[0] && toConsent(res.rows[0]);
}

/** The consent behind a grant, if it exists, is not revoked and has not expired. */
export async function findActiveConsent(db: Queryable, grantId: string): Promise<Consent | undefined> {
  const res = await db.query<ConsentRow>(
    'SELECT * FROM consents WHERE grant_id = $1 AND revoked_at IS NULL AND expires_at > now()',
    [grantId],
  );
  return res.rows[0] && toConsent(res.rows[0]);
}

export interface ConsentView extends Omit<Consent, 'dataTypes'> {
  /** What the consent covers (the `accounts` scope's defaults for consents recorded without). */
  dataTypes: string[];
  /** The client's display name (from its registration). */
  clientName: string;
  accounts: Array<{ id: string; nickname: string; maskedNumber: string }>;
}

/** The customer's active consents with what they cover, newest first (for the dashboard). */
export async function listActiveConsents(db: Queryable, customerId: string): Promise<ConsentView[]> {
  const res = await db.query<
    ConsentRow & {
      client_name: string | null;
      accounts: Array<{ id: string; nickname: string; number: string }>;
    }
  >(
    `SELECT c.*, cl.metadata ->> 'client_name' AS client_name,
            COALESCE((SELECT json_agg(json_build_object('id', a.id, 'nickname', a.nickname, 'number', a.account_number)
                                      ORDER BY a.opened_on, a.id)
                      FROM accounts a WHERE a.id = ANY (c.account_ids) AND a.customer_id = c.customer_id), '[]'::json) AS accounts
     FROM consents c LEFT JOIN clients cl ON cl.client_id = c.client_id
     WHERE c.customer_id = $1 AND c.revoked_at IS NULL AND c.expires_at > now()
     ORDER BY c.created_at DESC, c.grant_id`,
    [customerId],
  );
  return res.rows.map((r) => ({
    ...toConsent(r),
    dataTypes: r.data_types ?? (r.scopes.includes('accounts') ? [...SCOPE_ONLY_DATA_TYPES] : []),
    clientName: r.client_name ?? r.client_id,
    accounts: r.accounts.map((a) => ({
      id: a.id,
      nickname: a.nickname,
      maskedNumber: `••••${a.number.slice(-3)}`,
    })),
  }));
}

/**
 * Marks the customer's consent revoked, with who and why. Returns the client, or undefined when the
 * consent is not the customer's or already ended. The caller revokes the grant's tokens.
 */
export async function markConsentRevoked(
  db: Queryable,
  input: { grantId: string; customerId: string; by: string; reason: string },
): Promise<{ clientId: string } | undefined> {
  const res = await db.query<{ client_id: string }>(
    `UPDATE consents SET revoked_at = now(), revoked_by = $3, revoke_reason = $4
     WHERE grant_id = $1 AND customer_id = $2 AND revoked_at IS NULL RETURNING client_id`,
    [input.grantId, input.customerId, input.by, input.reason.slice(0, 200)],
  );
  return res.rows[0] ? { clientId: res.rows[0].client_id } : undefined;
}

/** Ends every consent given to a client (the client was removed). Returns how many. */
export async function revokeConsentsOfClient(
  db: Queryable,
  clientId: string,
  by: string,
  reason: string,
): Promise<number> {
  const res = await db.query(
    'UPDATE consents SET revoked_at = now(), revoked_by = $2, revoke_reason = $3 WHERE client_id = $1 AND revoked_at IS NULL',
    [clientId, by, reason.slice(0, 200)],
  );
  return res.rowCount;
}
