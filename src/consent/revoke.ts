/**
 * Revoking a consent, whoever does it: the customer on the security page (src/account) or the client
 * through grant management (src/grants). The consent row records who and why; the grant and every
 * code, access and refresh token under it go at once, for every node; the audit log and the
 * customer's notification say who did it.
 */
import { type AuditEvent, recordAudit } from '../audit/index.ts';
import type { Db } from '../db/index.ts';
import { revokeGrant } from '../oidc/adapter.ts';
import { notifyCustomer } from '../oidc/securityNotices.ts';
import { markConsentRevoked } from './index.ts';

export interface ConsentRevocation {
  grantId: string;
  /** The customer who gave the consent: a consent of anyone else is not touched. */
  customerId: string;
  /**
   * Who revokes. The customer's consent row is their proof of the grant; a client has proved the
   * grant is its own beforehand (grant management), so its grant ends even without a consent row.
   */
  by: { customer: true } | { client: string };
  /** Why, in a few words (kept with the consent, at most 200 characters). */
  reason: string;
  /** Where the request came from, for the audit log. */
  request: Pick<AuditEvent, 'ip' | 'port' | 'userAgent' | 'interactionId'>;
}

/**
 * Revokes one consent and its grant. Resolves with the consent's client, or undefined when nothing was
 * revoked (for the customer: no active consent of theirs under this grant).
 */
export async function revokeConsent(db: Db, r: ConsentRevocation): Promise<{ clientId: string } | undefined> {
  const kind = 'client' in r.by ? 'client' : 'customer';
  const actor = 'client' in r.by ? `client:${r.by.client}` : `customer:${r.customerId}`;
  const outcome = await db.transaction(async (tx) => {
    const consent = await markConsentRevoked(tx, {
      grantId: r.grantId,
      customerId: r.customerId,
      by: actor,
      reason: r.reason,
    });
    const clientId = consent?.clientId ?? ('client' in r.by ? r.by.client : undefined);
    if (clientId === undefined) return undefined;
    const revokedRows = await revokeGrant(tx, r.grantId);
    await recordAudit(tx, {
      type: 'consent.revoked',
      outcome: 'success',
      actor,
      customerId: r.customerId,
      clientId,
      ...r.request,
      data: { grantId: r.grantId, by: kind, reason: r.reason, revokedRows },
    });
    return { clientId, consentEnded: consent !== undefined };
  });
  if (!outcome) return undefined;
  // The customer hears of a consent that ended, whoever ended it (once per grant).
  if (outcome.consentEnded) {
    const client = await db.query<{ name: string | null }>(
      "SELECT metadata ->> 'client_name' AS name FROM clients WHERE client_id = $1",
      [outcome.clientId],
    );
    await notifyCustomer(db, {
      customerId: r.customerId,
      kind: 'consent_revoked',
      data: { clientName: client.rows[0]?.name ?? outcome.clientId, by: kind },
      dedupeKey: `consent-revoked:${r.grantId}`,
    });
  }
  return { clientId: outcome.clientId };
}
