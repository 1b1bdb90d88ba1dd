/**
 * What a received event does here. The action list comes from the configuration (a peer's own
 * `actions`, then `signals.actions`, then DEFAULT_ACTIONS), looked up first as `<type>#<detail>`
 * (account-disabled `reason`, risk-level-change `current_level`) and then as `<type>`.
 *
 * - revoke_sessions: every session, grant and token of the customer, at once (oidc adapter).
 * - raise_risk, require_step_up, require_reproofing, suspend_sweeps, notify: a row in
 *   ssf_action_outbox for the module that owns it, plus an audit event.
 * - forward: the same event (same txn) to the customer's other linked peers — never to the one it
 *   came from, and never a txn this hub has already emitted or forwarded, so rings cannot loop.
 *
 * A second SET for a cause already handled (same customer, txn and type, other jti — e.g. the same
 * event forwarded by two peers) is recorded but runs no action again.
 *
 * A peer whose SETs acted on customers too often lately has its circuit breaker open (breaker.ts):
 * its SETs are still recorded and acknowledged, their actions held until an operator releases them.
 */
import { recordAudit } from '../audit/index.ts';
import type { PeerConfig } from '../config/index.ts';
import type { Queryable } from '../db/index.ts';
import { revokeCustomerSessions } from '../oidc/adapter.ts';
import { breakerLimits, holdIfBreakerOpen } from './breaker.ts';
import type { SignalsContext } from './context.ts';
import { wakeSignals } from './emit.ts';
import { forwardableEvent } from './forwarding.ts';
import type { VerifiedSet } from './receiver.ts';
import type { SignalAction } from './types.ts';
import { DEFAULT_ACTIONS, EVENT } from './vocabulary.ts';

type Listener = () => void;
const listeners = new Set<Listener>();

/**
 * Called (in-process, once the receiving transaction has committed, so the consumer sees the rows)
 * whenever deferred actions were queued: the consumers of ssf_action_outbox (src/signals/consumers.ts)
 * subscribe.
 */
export function onActionsQueued(listener: Listener): () => void {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

function wakeActionConsumers(): void {
  if (listeners.size)
    setImmediate(() => {
      for (const l of listeners) l();
    });
}

const DEFERRED: ReadonlySet<SignalAction> = new Set([
  'raise_risk',
  'require_step_up',
  'require_reproofing',
  'suspend_sweeps',
  'notify',
]);

export function actionsFor(
  ctx: SignalsContext,
  peer: PeerConfig,
  eventType: string,
  event: Record<string, unknown>,
): SignalAction[] {
  const detail =
    eventType === EVENT.accountDisabled
      ? event.reason
      : eventType === EVENT.riskLevelChange
        ? event.current_level
        : undefined;
  const keys = typeof detail === 'string' ? [`${eventType}#${detail}`, eventType] : [eventType];
  for (const key of keys) {
    const list = peer.actions?.[key] ?? ctx.signals.actions[key] ?? DEFAULT_ACTIONS[key];
    if (list) return [...list];
  }
  return [];
}

/** What acting on a SET needs of it. */
export type ActedSet = Pick<VerifiedSet, 'jti' | 'txn' | 'eventType' | 'event'>;

export async function runActions(
  ctx: SignalsContext,
  tx: Queryable,
  peer: PeerConfig,
  set: VerifiedSet,
  customerId: string,
): Promise<string[]> {
  if (await causeHandled(tx, peer.id, set, customerId)) return [];
  const actions = actionsFor(ctx, peer, set.eventType, set.event);
  if (actions.length === 0) return [];
  if (await holdIfBreakerOpen(tx, peer.id, breakerLimits(ctx, peer), set, customerId, actions)) return [];
  return executeActions(tx, peer.id, set, customerId, actions);
}

/** The same cause (customer, txn, event type) already came under another jti. */
export async function causeHandled(
  tx: Queryable,
  peerId: string,
  set: ActedSet,
  customerId: string,
): Promise<boolean> {
  if (!set.txn) return false;
  const again = await tx.query(
    `SELECT 1 FROM ssf_received WHERE customer_id = $1 AND txn = $2 AND event_type = $3 AND NOT (peer_id = $4 AND jti = $5) LIMIT 1`,
    [customerId, set.txn, set.eventType, peerId, set.jti],
  );
  return again.rowCount > 0;
}

/** Runs a SET's actions (as configured, or as held) in the receiving — or releasing — transaction. */
export async function executeActions(
  tx: Queryable,
  peerId: string,
  set: ActedSet,
  customerId: string,
  actions: readonly string[],
): Promise<string[]> {
  const done: string[] = [];
  const audit = (action: string, data: Record<string, unknown> = {}) =>
    recordAudit(tx, {
      type: `ssf.action.${action}`,
      outcome: 'success',
      actor: `peer:${peerId}`,
      customerId,
      data: { jti: set.jti, txn: set.txn, eventType: set.eventType, ...data },
    });

  for (const action of actions) {
    if (action === 'revoke_sessions') {
      const revoked = await revokeCustomerSessions(tx, customerId);
      await audit(action, { ...revoked });
      done.push(action);
    } else if (DEFERRED.has(action as SignalAction)) {
      await tx.query(
        `INSERT INTO ssf_action_outbox (action, customer_id, peer_id, jti, txn, event_type, detail)
         VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb)`,
        [
          action,
          customerId,
          peerId,
          set.jti,
          set.txn ?? null,
          set.eventType,
          JSON.stringify(actionDetail(set)),
        ],
      );
      await audit(action);
      done.push(action);
      tx.afterCommit(wakeActionConsumers);
    } else if (action === 'forward') {
      if (!set.txn) continue;
      // Only the members the event's schema defines, in their defined shapes (forwarding.ts).
      const claims = forwardableEvent(set.eventType, set.event);
      if (!claims) {
        await audit('forward_skipped', { reason: 'event type or members not forwardable' });
        continue;
      }
      // A txn we emitted or forwarded before stops here: that is what keeps peer rings loop-free.
      const fresh = await tx.query('INSERT INTO ssf_txns (txn) VALUES ($1) ON CONFLICT DO NOTHING', [
        set.txn,
      ]);
      if (fresh.rowCount === 0) {
        await audit('forward_skipped', { reason: 'txn already seen' });
        continue;
      }
      await tx.query(
        `INSERT INTO ssf_events (txn, event_type, customer_id, payload, origin_peer) VALUES ($1, $2, $3, $4::jsonb, $5)`,
        [set.txn, set.eventType, customerId, JSON.stringify({ claims }), peerId],
      );
      tx.afterCommit(wakeSignals);
      await audit(action);
      done.push(action);
    }
  }
  return done;
}

/** What the owning module needs to decide (never the SET itself). */
function actionDetail(set: ActedSet): Record<string, unknown> {
  const e = set.event;
  const pick = (k: string) => (e[k] === undefined ? {} : { [k]: e[k] });
  return {
    ...pick('reason'),
    ...pick('current_level'),
    ...pick('previous_level'),
    ...pick('credential_type'),
    ...pick('change_type'),
    ...pick('event_timestamp'),
    ...pick('reason_admin'),
    ...pick('reason_user'),
  };
}
