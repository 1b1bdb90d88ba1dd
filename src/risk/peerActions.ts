/**
 * What a peer institution's shared signal does to risk here. The signals receiver leaves
 * `raise_risk`, `require_step_up` and `require_reproofing` rows in ssf_action_outbox (its hand-over
 * point, see src/signals/actions.ts); this takes them — any node, SKIP LOCKED, each row in one
 * transaction with marking it processed, so none is lost or applied twice — and acts through the
 * engine's own state:
 *
 * - raise_risk: the peer's level is kept (peer_risk_levels, see peerLevels.ts) — a
 *   risk-level-change's `current_level`, HIGH for a takeover, a compromised credential or a recovery,
 *   MEDIUM for anything else — until it expires (risk.peerRiskTtlSeconds), the customer re-proves
 *   their identity or an operator clears it. The customer's effective level (which the withdrawal
 *   decision endpoint reads: HIGH denies, MEDIUM asks for a fresh approval) is the higher of it and
 *   the engine's own, so the engine's next clean sign-in does not lower it; a peer never lowers it.
 * - require_step_up: a MEDIUM peer level, and every live session and grant of the customer gets the
 *   post-login score at which the rules ask for step-up (the `sessionScore` rule), so a sensitive
 *   operation in them is held back (assessOperation) until the customer signs in afresh.
 * - require_reproofing: the account is locked with no end until the customer re-proofs (proofing
 *   purpose `unlock`) or an operator unlocks it; unlike a lock after failed sign-ins it refuses known
 *   devices too, since the peer saw the account itself taken over.
 *
 * A re-proofing answers only what was received before its proof began (src/risk/reproofing.ts): the
 * time each row was received goes with the level and the lock it leaves.
 *
 * Peer-raised levels are not announced again as risk-level-change: passing events on is the
 * receiver's `forward` action, which keeps peer rings loop-free.
 */
import { recordAudit } from '../audit/index.ts';
import type { Db, Queryable } from '../db/index.ts';
import type { RiskEngine } from './engine.ts';
import { raisePeerLevel } from './peerLevels.ts';
import type { RuleSet } from './rules.ts';
import { type RiskLevel, raiseSessionRisk } from './store.ts';

const RISC = 'https://schemas.openid.net/secevent/risc/event-type/';
const CAEP = 'https://schemas.openid.net/secevent/caep/event-type/';
const HIGH_EVENTS: ReadonlySet<string> = new Set([
  `${RISC}account-disabled`,
  `${RISC}credential-compromise`,
  `${RISC}recovery-activated`,
]);

export const PEER_RISK_ACTIONS = ['raise_risk', 'require_step_up', 'require_reproofing'] as const;

interface ActionRow {
  id: string;
  action: (typeof PEER_RISK_ACTIONS)[number];
  customer_id: string;
  peer_id: string;
  jti: string;
  txn: string | null;
  event_type: string;
  detail: Record<string, unknown>;
  /** When the receiver took it (a re-proofing whose proof began before then does not answer it). */
  created_at: Date;
}

/** The level a peer's event asks for (undefined: none, e.g. a risk-level-change to LOW). */
export function peerEventLevel(
  eventType: string,
  detail: Record<string, unknown>,
): Exclude<RiskLevel, 'LOW'> | undefined {
  if (eventType === `${CAEP}risk-level-change`) {
    const l = detail.current_level;
    return l === 'HIGH' || l === 'MEDIUM' ? l : undefined;
  }
  return HIGH_EVENTS.has(eventType) ? 'HIGH' : 'MEDIUM';
}

/** The post-login score at which the rules ask for step-up in a session. */
export function stepUpSessionScore(rules: RuleSet): number {
  for (const r of rules.rules) {
    const cond = (r.when as Record<string, unknown>).sessionScore as { gte?: unknown } | undefined;
    if (r.decision === 'step_up' && typeof cond?.gte === 'number') return cond.gte;
  }
  return rules.thresholds.stepUp;
}

/** Applies up to `limit` pending peer risk actions; returns how many rows were taken. */
export async function applyPeerRiskActions(engine: RiskEngine, db: Db, limit = 100): Promise<number> {
  let taken = 0;
  while (taken < limit) {
    const one = await db.transaction(async (tx) => {
      const res = await tx.query<ActionRow>(
        `UPDATE ssf_action_outbox SET processed_at = now()
         WHERE id = (SELECT id FROM ssf_action_outbox WHERE action = ANY ($1::text[]) AND processed_at IS NULL
                     ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
         RETURNING id::text AS id, action, customer_id, peer_id, jti, txn, event_type, detail, created_at`,
        [PEER_RISK_ACTIONS],
      );
      const row = res.rows[0];
      if (row) await apply(engine, tx, row);
      return row !== undefined;
    });
    if (!one) break;
    taken++;
  }
  return taken;
}

async function apply(engine: RiskEngine, tx: Queryable, row: ActionRow): Promise<void> {
  const actor = `peer:${row.peer_id}`;
  const reason = `peer:${row.peer_id}:${row.event_type.split('/').at(-1)}`;
  const base = { jti: row.jti, txn: row.txn, eventType: row.event_type };
  if (row.action === 'raise_risk' || row.action === 'require_step_up') {
    const wanted =
      row.action === 'raise_risk' ? peerEventLevel(row.event_type, row.detail) : ('MEDIUM' as const);
    const raised = wanted
      ? await raisePeerLevel(tx, {
          customerId: row.customer_id,
          peerId: row.peer_id,
          level: wanted,
          reason,
          eventType: row.event_type,
          jti: row.jti,
          txn: row.txn,
          receivedAt: row.created_at,
          ttlSeconds: engine.config.peerRiskTtlSeconds,
        })
      : undefined;
    const changed = raised && raised.current.level !== raised.previous.level;
    let sessions = 0;
    if (row.action === 'require_step_up') {
      const score = stepUpSessionScore(engine.rules);
      for (const key of await liveSessionKeys(tx, row.customer_id)) {
        // Raised to (not by) the step-up score: a second signal does not stack on the first.
        const current = await tx.query<{ score: number }>(
          'SELECT score FROM session_risk WHERE session_key = $1',
          [key.sessionKey],
        );
        const missing = score - (current.rows[0]?.score ?? 0);
        if (missing > 0)
          await raiseSessionRisk(tx, {
            ...key,
            customerId: row.customer_id,
            score: missing,
            reasons: [reason],
          });
        sessions++;
      }
    }
    await recordAudit(tx, {
      type: row.action === 'raise_risk' ? 'risk.peer.raised' : 'risk.peer.step_up_required',
      outcome: 'info',
      actor,
      customerId: row.customer_id,
      data: {
        ...base,
        level: changed ? raised.current.level : 'unchanged',
        previous: changed ? raised.previous.level : undefined,
        peerLevel: wanted ?? 'none',
        expiresAt: raised?.expiresAt.toISOString(),
        sessions,
      },
    });
    return;
  }
  // require_reproofing: no end time, known devices refused too (see passkeySignIn's admit).
  await tx.query(
    `INSERT INTO account_lockouts AS l (customer_id, locked_at, locked_until, reproofing_required, reproofing_required_at)
     VALUES ($1, now(), 'infinity', true, $2)
     ON CONFLICT (customer_id) DO UPDATE SET locked_at = COALESCE(l.locked_at, now()),
       locked_until = 'infinity', reproofing_required = true,
       reproofing_required_at = greatest(CASE WHEN l.reproofing_required THEN l.reproofing_required_at END, $2)`,
    [row.customer_id, row.created_at],
  );
  await recordAudit(tx, {
    type: 'risk.account.locked',
    outcome: 'info',
    actor,
    customerId: row.customer_id,
    data: { ...base, reason: 'reproofing_required' },
  });
}

/** `session:<uid>` of the customer's live browser sessions and `grant:<id>` of their grants. */
async function liveSessionKeys(
  tx: Queryable,
  customerId: string,
): Promise<{ sessionKey: string; clientId: string | undefined }[]> {
  const res = await tx.query<{ key: string; client_id: string | null }>(
    `SELECT CASE WHEN model = 'Session' THEN 'session:' || (payload ->> 'uid') ELSE 'grant:' || id END AS key,
            CASE WHEN model = 'Grant' THEN payload ->> 'clientId' END AS client_id
     FROM oidc_payloads WHERE model IN ('Session', 'Grant') AND payload ->> 'accountId' = $1
       AND (expires_at IS NULL OR expires_at > now()) AND (model = 'Grant' OR payload ? 'uid')
     ORDER BY model, id`,
    [customerId],
  );
  return res.rows.map((r) => ({ sessionKey: r.key, clientId: r.client_id ?? undefined }));
}
