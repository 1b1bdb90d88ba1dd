/**
 * Recovery after losing every passkey. The customer re-proves their identity (ticket, eKYC or
 * JPKI, purpose `recovery`) and registers a new passkey with that proof; then, in one
 * transaction: every other passkey is disabled (reason `recovery`: they are lost, possibly to
 * someone else), every session, grant and token of the customer is revoked, the customer is
 * notified on every channel (critical kind, no URL), peers receive RISC recovery-activated, and a
 * recovery marker is left for the risk engine ("first login after recovery").
 */
import { randomBytes } from 'node:crypto';
import { recordAudit } from '../audit/index.ts';
import type { RequestMeta } from '../authn/index.ts';
import type { Queryable } from '../db/index.ts';
import { enqueueNotification } from '../notify/index.ts';
import { revokeCustomerSessions } from '../oidc/adapter.ts';
import { noteAccountRecovered } from '../risk/index.ts';
import { emitSecurityEvent } from '../signals/index.ts';
import { auditMeta, PROOFING_AUDIT } from './engine.ts';
import type { ProofingMethodName } from './method.ts';

export interface CompletedRecovery {
  recoveryId: string;
  method: ProofingMethodName;
  revokedPasskeys: number;
  revokedSessions: number;
  revokedGrants: number;
}

/**
 * Finishes a recovery when the passkey `credentialId` was just registered in interaction
 * `interactionId` under a verified recovery proof; undefined when that registration was not a
 * recovery. Runs at most once per proof. Call it inside the registration's transaction (`tx`), so
 * the new passkey and the revocation of the lost ones commit together.
 */
export async function completeRecoveryAfterEnrollment(
  tx: Queryable,
  input: { interactionId: string; customerId: string; credentialId: string },
  meta?: RequestMeta,
): Promise<CompletedRecovery | undefined> {
  const flow = await tx.query<{ id: string; method: ProofingMethodName; proofing_id: string }>(
    `UPDATE proofing_flows f SET recovered_at = now()
     FROM enrollment_tickets t
     WHERE f.interaction_id = $1 AND f.customer_id = $2 AND f.purpose = 'recovery' AND f.recovered_at IS NULL
       AND f.proofing_id IS NOT NULL AND t.id = f.ticket_id AND t.used_at IS NOT NULL
     RETURNING f.id, f.method, f.proofing_id`,
    [input.interactionId, input.customerId],
  );
  const row = flow.rows[0];
  if (!row) return undefined;
  const disabled = await tx.query(
    `UPDATE passkeys SET disabled_at = now(), disabled_reason = 'recovery'
     WHERE customer_id = $1 AND credential_id <> $2 AND disabled_at IS NULL`,
    [input.customerId, input.credentialId],
  );
  const revoked = await revokeCustomerSessions(tx, input.customerId);
  // The risk engine flags the first sign-in after a recovery (src/risk).
  await noteAccountRecovered(tx, input.customerId);
  const recoveryId = `rcv_${randomBytes(16).toString('base64url')}`;
  await tx.query(
    `INSERT INTO customer_recoveries (id, customer_id, proofing_id, method, credential_id, revoked_passkeys)
     VALUES ($1, $2, $3, $4, $5, $6)`,
    [recoveryId, input.customerId, row.proofing_id, row.method, input.credentialId, disabled.rowCount],
  );
  await enqueueNotification(tx, {
    customerId: input.customerId,
    kind: 'recovery',
    data: { method: row.method },
    dedupeKey: `recovery:${recoveryId}`,
  });
  await emitSecurityEvent(tx, {
    type: 'recovery-activated',
    customerId: input.customerId,
    reasonAdmin: `account recovered after identity proofing (${row.method})`,
  });
  const result: CompletedRecovery = {
    recoveryId,
    method: row.method,
    revokedPasskeys: disabled.rowCount,
    revokedSessions: revoked.sessions,
    revokedGrants: revoked.grants,
  };
  await recordAudit(tx, {
    type: PROOFING_AUDIT.recovery,
    outcome: 'success',
    actor: `customer:${input.customerId}`,
    customerId: input.customerId,
    ...auditMeta({ ...meta, interactionId: input.interactionId }),
    data: { ...result, proofingId: row.proofing_id, credentialId: input.credentialId },
  });
  return result;
}

export interface RecoveryMarker {
  recoveryId: string;
  recoveredAt: Date;
  method: ProofingMethodName;
  /** The passkey registered during the recovery. */
  credentialId: string;
}

/**
 * The customer's latest recovery whose first sign-in the risk engine has not yet marked as seen:
 * the next sign-in is the "first login after recovery" (treat it with more suspicion, e.g. hold
 * withdrawals). Undefined when there is none.
 */
export async function firstLoginAfterRecovery(
  db: Queryable,
  customerId: string,
): Promise<RecoveryMarker | undefined> {
  const res = await db.query<{
    id: string;
    recovered_at: Date;
    method: ProofingMethodName;
    credential_id: string;
  }>(
    `SELECT id, recovered_at, method, credential_id FROM customer_recoveries
     WHERE customer_id = $1 AND first_login_at IS NULL ORDER BY recovered_at DESC LIMIT 1`,
    [customerId],
  );
  const r = res.rows[0];
  return r
    ? {
        recoveryId: r.id,
        recoveredAt: new Date(r.recovered_at),
        method: r.method,
        credentialId: r.credential_id,
      }
    : undefined;
}

/** Marks the first sign-in after the customer's recoveries as seen (the risk engine calls this). */
export async function markLoginAfterRecovery(db: Queryable, customerId: string): Promise<number> {
  const res = await db.query(
    'UPDATE customer_recoveries SET first_login_at = now() WHERE customer_id = $1 AND first_login_at IS NULL',
    [customerId],
  );
  return res.rowCount;
}
