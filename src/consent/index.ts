/**
 * What a customer allowed a client: per oidc-provider grant, the scopes and the accounts the
 * customer picked on the consent page (never the client's choice).
 */
import type { Queryable } from '../db/index.ts';

export interface Consent {
  grantId: string;
  customerId: string;
  clientId: string;
  scopes: string[];
  accountIds: string[];
  createdAt: Date;
  expiresAt: Date;
  revokedAt: Date | null;
}

export class ConsentError extends Error {
  override name = 'ConsentError';
  readonly code: 'ERR_CONSENT_ACCOUNTS';
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
  created_at: Date;
  expires_at: Date;
  revoked_at: Date | null;
}

const toConsent = (r: ConsentRow): Consent => ({
  grantId: r.grant_id,
  customerId: r.customer_id,
  clientId: r.client_id,
  scopes: r.scopes,
  accountIds: r.account_ids,
  createdAt: r.created_at,
  expiresAt: r.expires_at,
  revokedAt: r.revoked_at,
});

/**
 * Records (or, for a grant the customer extends, replaces) a consent. Account ids must all
 * belong to the customer and be open; anything else is refused and nothing is written.
 */
export async function recordConsent(
  db: Queryable,
  c: {
    grantId: string;
    customerId: string;
    clientId: string;
    scopes: string[];
    accountIds: string[];
    expiresAt: Date;
  },
): Promise<void> {
  const accountIds = [...new Set(c.accountIds)];
  if (accountIds.length) {
    const owned = await db.query<{ n: number }>(
      "SELECT count(*)::int AS n FROM accounts WHERE id = ANY($1::text[]) AND customer_id = $2 AND status = 'open'",
      [accountIds, c.customerId],
    );
    if (owned.rows[0]?.n !== accountIds.length)
      throw new ConsentError(
        'ERR_CONSENT_ACCOUNTS',
        "an account chosen is not one of the customer's open accounts",
      );
  }
  await db.query(
    `INSERT INTO consents (grant_id, customer_id, client_id, scopes, account_ids, expires_at)
     VALUES ($1, $2, $3, $4, $5, $6)
     ON CONFLICT (grant_id) DO UPDATE SET scopes = EXCLUDED.scopes, account_ids = EXCLUDED.account_ids,
       expires_at = EXCLUDED.expires_at, revoked_at = NULL, revoked_by = NULL, revoke_reason = NULL`,
    [c.grantId, c.customerId, c.clientId, c.scopes, accountIds, c.expiresAt],
  );
}

/** The consent behind a grant, if it exists, is not revoked and has not expired. */
export async function findActiveConsent(db: Queryable, grantId: string): Promise<Consent | undefined> {
  const res = await db.query<ConsentRow>(
    'SELECT * FROM consents WHERE grant_id = $1 AND revoked_at IS NULL AND expires_at > now()',
    [grantId],
  );
  return res.rows[0] && toConsent(res.rows[0]);
}

export interface ConsentView extends Consent {
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
