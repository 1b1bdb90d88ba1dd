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
