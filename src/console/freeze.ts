/**
 * Freezing a customer on suspicion (JSDA IV.6.(1)) and lifting it only after re-proofing
 * (IV.6.(2)). A freeze is one transaction: status `frozen` (the sign-in gate refuses non-active
 * customers and the withdrawal-strength policy denies frozen ones), every session, grant and token
 * gone, the customer told, and RISC account-disabled queued for the peers that share them.
 */
import { randomUUID } from 'node:crypto';
import { recordAudit } from '../audit/index.ts';
import type { RequestMeta } from '../authn/index.ts';
import type { Db } from '../db/index.ts';
import { enqueueNotification } from '../notify/index.ts';
import { revokeCustomerSessions } from '../oidc/adapter.ts';
import { verifiedProofingSince } from '../proofing/index.ts';
import { emitSecurityEvent } from '../signals/index.ts';
import { ConsoleError } from './errors.ts';

const meta = (m: RequestMeta) => ({ ip: m.ip, port: m.port, userAgent: m.userAgent });

function cleanReason(reason: string): string {
  const r = reason
    .normalize('NFKC')
    .replace(/\p{Cc}/gu, ' ')
    .trim();
  if (!r || r.length > 500) throw new ConsoleError('ERR_REASON_REQUIRED');
  return r;
}

export async function freezeCustomer(
  db: Db,
  input: { customerId: string; operator: string; reason: string; suspectedTakeover: boolean },
  m: RequestMeta,
): Promise<{ sessions: number; grants: number; tokens: number }> {
  const reason = cleanReason(input.reason);
  const actor = `operator:${input.operator}`;
  return db.transaction(async (tx) => {
    // The customer's row lock that withdrawal, account-change and trade decisions take before they read
    // the status (src/db/customerLock.ts): a decision in flight finishes first, a later one sees
    // `frozen`.
    const c = await tx.query<{ status: string }>(
      'SELECT status FROM customers WHERE id = $1 FOR NO KEY UPDATE',
      [input.customerId],
    );
    const status = c.rows[0]?.status;
    if (!status) throw new ConsoleError('ERR_CUSTOMER_UNKNOWN');
    if (status === 'frozen') throw new ConsoleError('ERR_ALREADY_FROZEN');
    await tx.query("UPDATE customers SET status = 'frozen' WHERE id = $1", [input.customerId]);
    await tx.query('INSERT INTO customer_freezes (customer_id, frozen_by, reason) VALUES ($1, $2, $3)', [
      input.customerId,
      actor,
      reason,
    ]);
    const revoked = await revokeCustomerSessions(tx, input.customerId);
    await recordAudit(tx, {
      type: 'console.customer.frozen',
      outcome: 'success',
      actor,
      customerId: input.customerId,
      ...meta(m),
      data: { reason, previousStatus: status, suspectedTakeover: input.suspectedTakeover, ...revoked },
    });
    // Enqueued in the freeze's transaction: a notice that cannot be written fails the freeze with its
    // own error and leaves nothing frozen, revoked or queued (notifyCustomer would swallow it and
    // leave the transaction aborted).
    await enqueueNotification(tx, {
      customerId: input.customerId,
      kind: 'security_alert',
      data: { reason: 'suspicious_activity', action: 'account_frozen' },
    });
    const txn = randomUUID();
    await emitSecurityEvent(tx, {
      type: 'account-disabled',
      customerId: input.customerId,
      txn,
      ...(input.suspectedTakeover ? { reason: 'hijacking' as const } : {}),
      initiatingEntity: 'admin',
      reasonAdmin: 'account frozen by the institution',
    });
    if (revoked.sessions + revoked.grants > 0)
      await emitSecurityEvent(tx, {
        type: 'session-revoked',
        customerId: input.customerId,
        txn,
        initiatingEntity: 'admin',
      });
    return revoked;
  });
}

/**
 * Lifts the open freeze when the customer has re-proofed their identity after it: a verified
 * proofing record (src/proofing) for `unlock` or `recovery` created after the freeze. Refusals
 * are audited too.
 */
export async function unfreezeCustomer(
  db: Db,
  input: { customerId: string; operator: string },
  m: RequestMeta,
): Promise<{ proofingId: string }> {
  const actor = `operator:${input.operator}`;
  try {
    return await db.transaction(async (tx) => {
      const open = await tx.query<{ id: string; frozen_at: Date }>(
        `SELECT f.id::text AS id, f.frozen_at FROM customers c
         JOIN customer_freezes f ON f.customer_id = c.id AND f.unfrozen_at IS NULL
         WHERE c.id = $1 AND c.status = 'frozen' FOR UPDATE OF c, f`,
        [input.customerId],
      );
      const freeze = open.rows[0];
      if (!freeze) throw new ConsoleError('ERR_NOT_FROZEN');
      const proof = await verifiedProofingSince(
        tx,
        input.customerId,
        ['unlock', 'recovery'],
        new Date(freeze.frozen_at),
      );
      if (!proof) throw new ConsoleError('ERR_REPROOFING_REQUIRED');
      await tx.query("UPDATE customers SET status = 'active' WHERE id = $1", [input.customerId]);
      await tx.query(
        'UPDATE customer_freezes SET unfrozen_at = now(), unfrozen_by = $2, proofing_id = $3 WHERE id = $1::bigint',
        [freeze.id, actor, proof.id],
      );
      await recordAudit(tx, {
        type: 'console.customer.unfrozen',
        outcome: 'success',
        actor,
        customerId: input.customerId,
        ...meta(m),
        data: { proofingId: proof.id, method: proof.method, purpose: proof.purpose },
      });
      await enqueueNotification(tx, { customerId: input.customerId, kind: 'account_unlocked', data: {} });
      await emitSecurityEvent(tx, {
        type: 'account-enabled',
        customerId: input.customerId,
        initiatingEntity: 'admin',
        reasonAdmin: 'account unfrozen after identity re-proofing',
      });
      return { proofingId: proof.id };
    });
  } catch (err) {
    if (err instanceof ConsoleError)
      await recordAudit(db, {
        type: 'console.customer.unfrozen',
        outcome: 'failure',
        actor,
        customerId: input.customerId,
        ...meta(m),
        data: { reason: err.code },
      });
    throw err;
  }
}

/** The open freeze of a customer, if any. */
export async function openFreeze(
  db: Db,
  customerId: string,
): Promise<{ frozenAt: Date; frozenBy: string; reason: string } | undefined> {
  const res = await db.query<{ frozen_at: Date; frozen_by: string; reason: string }>(
    'SELECT frozen_at, frozen_by, reason FROM customer_freezes WHERE customer_id = $1 AND unfrozen_at IS NULL',
    [customerId],
  );
  const r = res.rows[0];
  return r ? { frozenAt: new Date(r.frozen_at), frozenBy: r.frozen_by, reason: r.reason } : undefined;
}
