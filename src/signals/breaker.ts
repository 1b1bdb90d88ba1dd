/**
 * A per-peer circuit breaker on what received SETs do. A compromised (or broken) peer could
 * otherwise revoke, lock and suspend every customer linked to it at once. Once a peer's SETs acted on
 * customers `maxSetsPerWindow` times within `windowSeconds` (signals.circuitBreaker, per peer
 * overridable), its breaker opens: further SETs are still verified, recorded and acknowledged (RFC
 * 8935 / 8936 — the peer must not retry forever), but their actions are held in ssf_held_sets and
 * nothing is done. The breaker stays open until an operator releases the held actions (they run
 * then, in order) or drops them (`kakehashi ssf held | release | drop`, src/signals/ops.ts); both
 * close it. Audited: ssf.peer.circuit_open, ssf.actions.held, ssf.peer.circuit_closed.
 *
 * The breaker row is upserted first in the receiving transaction: it is the lock that makes a peer's
 * concurrent SETs count one after the other, so the limit holds across nodes.
 */
import { recordAudit } from '../audit/index.ts';
import type { PeerConfig } from '../config/index.ts';
import type { Queryable } from '../db/index.ts';
import type { ActedSet } from './actions.ts';
import type { SignalsContext } from './context.ts';

export interface BreakerLimits {
  maxSetsPerWindow: number;
  windowSeconds: number;
}

export const breakerLimits = (ctx: SignalsContext, peer: PeerConfig): BreakerLimits => ({
  maxSetsPerWindow: peer.circuitBreaker?.maxSetsPerWindow ?? ctx.signals.circuitBreaker.maxSetsPerWindow,
  windowSeconds: peer.circuitBreaker?.windowSeconds ?? ctx.signals.circuitBreaker.windowSeconds,
});

/**
 * True when the peer's breaker is (or now becomes) open: the SET's actions are then held, not run.
 * Counts the peer's SETs that acted within the window (and since the breaker last closed), the
 * current one not included.
 */
export async function holdIfBreakerOpen(
  tx: Queryable,
  peerId: string,
  limits: BreakerLimits,
  set: ActedSet,
  customerId: string,
  actions: readonly string[],
): Promise<boolean> {
  const breaker = await tx.query<{ opened_at: Date | null; closed_at: Date | null }>(
    `INSERT INTO ssf_peer_breakers (peer_id) VALUES ($1)
     ON CONFLICT (peer_id) DO UPDATE SET peer_id = EXCLUDED.peer_id RETURNING opened_at, closed_at`,
    [peerId],
  );
  const { opened_at: openedAt, closed_at: closedAt } = breaker.rows[0]!;
  if (openedAt === null) {
    // After an operator closed the breaker, counting starts again (what was released counts no more).
    const acted = await tx.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM ssf_received
       WHERE peer_id = $1 AND received_at > GREATEST(now() - make_interval(secs => $2), $3::timestamptz)
         AND cardinality(actions) > 0`,
      [peerId, limits.windowSeconds, closedAt],
    );
    const n = acted.rows[0]!.n;
    if (n < limits.maxSetsPerWindow) return false;
    await tx.query(
      `UPDATE ssf_peer_breakers SET opened_at = now(), opened_count = $2, closed_at = NULL, closed_by = NULL
       WHERE peer_id = $1`,
      [peerId, n],
    );
    await recordAudit(tx, {
      type: 'ssf.peer.circuit_open',
      outcome: 'failure',
      actor: 'system',
      data: { peerId, actedSets: n, ...limits },
    });
  }
  await tx.query(
    `INSERT INTO ssf_held_sets (peer_id, jti, txn, event_type, customer_id, event, actions)
     VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7::text[]) ON CONFLICT (peer_id, jti) DO NOTHING`,
    [peerId, set.jti, set.txn ?? null, set.eventType, customerId, JSON.stringify(set.event), actions],
  );
  await recordAudit(tx, {
    type: 'ssf.actions.held',
    outcome: 'info',
    actor: `peer:${peerId}`,
    customerId,
    data: { jti: set.jti, txn: set.txn, eventType: set.eventType, actions },
  });
  return true;
}
