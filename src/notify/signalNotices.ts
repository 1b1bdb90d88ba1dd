/**
 * Notices for the customer from shared signals: the signals receiver leaves a `notify` action in
 * ssf_action_outbox when a peer institution reports something about a shared customer (that
 * table is the receiver's hand-over point to the modules that own each action). Each is turned
 * into a security_alert in one transaction with marking it processed, so none is lost or doubled.
 */
import type { Db } from '../db/index.ts';
import { EVENT } from '../signals/vocabulary.ts';
import { enqueueNotification } from './outbox.ts';

export async function takeSignalNotices(db: Db, limit = 100): Promise<number> {
  return db.transaction(async (tx) => {
    const taken = await tx.query<{
      customer_id: string;
      peer_id: string;
      jti: string;
      event_type: string;
      created_at: Date;
      actions: string[] | null;
    }>(
      `WITH taken AS (
         UPDATE ssf_action_outbox a SET processed_at = now()
         WHERE a.id IN (SELECT id FROM ssf_action_outbox WHERE action = 'notify' AND processed_at IS NULL
                        ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED)
         RETURNING a.id, a.customer_id, a.peer_id, a.jti, a.event_type, a.created_at)
       SELECT t.customer_id, t.peer_id, t.jti, t.event_type, t.created_at, r.actions
       FROM taken t LEFT JOIN ssf_received r ON r.peer_id = t.peer_id AND r.jti = t.jti
       ORDER BY t.id`,
      [limit],
    );
    for (const r of taken.rows)
      await enqueueNotification(tx, {
        customerId: r.customer_id,
        kind: 'security_alert',
        data: {
          reason: r.event_type === EVENT.credentialCompromise ? 'credential_compromise' : 'peer_signal',
          action: r.actions?.includes('revoke_sessions') ? 'sessions_ended' : 'none',
        },
        occurredAt: new Date(r.created_at),
        dedupeKey: `ssf:${r.peer_id}:${r.jti}`,
      });
    return taken.rowCount;
  });
}
