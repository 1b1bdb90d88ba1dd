/**
 * Risk levels raised by peer institutions (shared signals), kept apart from the engine's own level
 * so that the engine's next clean sign-in does not wipe them out: each stands until it expires, the
 * customer re-proves their identity (clearAfterReproofing) or an operator clears it (console).
 * The customer's effective level — what withdrawal decisions and the console read — is the higher of
 * the engine's and the live peer levels. Every raise, clear and expiry is audited.
 */
import { recordAudit } from '../audit/index.ts';
import type { Queryable } from '../db/index.ts';
import type { RiskLevel } from './store.ts';

const RANK: Record<RiskLevel, number> = { LOW: 0, MEDIUM: 1, HIGH: 2 };
export const higherLevel = (a: RiskLevel, b: RiskLevel): RiskLevel => (RANK[a] >= RANK[b] ? a : b);

export interface PeerRiskLevel {
  id: string;
  peerId: string;
  level: 'MEDIUM' | 'HIGH';
  reason: string;
  eventType: string;
  raisedAt: Date;
  expiresAt: Date;
}

export interface EffectiveRiskLevel {
  /** The higher of the engine's level and the live peer levels. */
  level: RiskLevel;
  /** The engine's own (latest decision). */
  engine: RiskLevel;
  /** The highest live peer level, if any. */
  peer: RiskLevel | undefined;
}

const LIVE = 'ended_at IS NULL AND expires_at > now()';

/** The customer's effective level in one query (reads only; expiry is judged by the clock). */
export async function effectiveRiskLevel(db: Queryable, customerId: string): Promise<EffectiveRiskLevel> {
  const r = await db.query<{ engine: RiskLevel | null; peer: RiskLevel | null }>(
    `SELECT (SELECT level FROM risk_levels WHERE customer_id = $1) AS engine,
            (SELECT CASE WHEN bool_or(level = 'HIGH') THEN 'HIGH' WHEN count(*) > 0 THEN 'MEDIUM' END
             FROM peer_risk_levels WHERE customer_id = $1 AND ${LIVE}) AS peer`,
    [customerId],
  );
  const engine = r.rows[0]?.engine ?? 'LOW';
  const peer = r.rows[0]?.peer ?? undefined;
  return { level: peer ? higherLevel(engine, peer) : engine, engine, peer };
}

/** The live peer levels of a customer, newest first (console). */
export async function livePeerLevels(db: Queryable, customerId: string): Promise<PeerRiskLevel[]> {
  const r = await db.query<{
    id: string;
    peer_id: string;
    level: 'MEDIUM' | 'HIGH';
    reason: string;
    event_type: string;
    raised_at: Date;
    expires_at: Date;
  }>(
    `SELECT id::text AS id, peer_id, level, reason, event_type, raised_at, expires_at FROM peer_risk_levels
     WHERE customer_id = $1 AND ${LIVE} ORDER BY raised_at DESC, id DESC`,
    [customerId],
  );
  return r.rows.map((x) => ({
    id: x.id,
    peerId: x.peer_id,
    level: x.level,
    reason: x.reason,
    eventType: x.event_type,
    raisedAt: new Date(x.raised_at),
    expiresAt: new Date(x.expires_at),
  }));
}

/**
 * Records a peer's level (inside the caller's transaction). Returns the effective level before and
 * after; a lower or equal level than the one already standing still gets its own row (it may outlive it).
 */
export async function raisePeerLevel(
  tx: Queryable,
  p: {
    customerId: string;
    peerId: string;
    level: 'MEDIUM' | 'HIGH';
    reason: string;
    eventType: string;
    jti?: string | null | undefined;
    txn?: string | null | undefined;
    /** When the peer's action was received (ssf_action_outbox.created_at). */
    receivedAt?: Date | undefined;
    ttlSeconds: number;
  },
): Promise<{ previous: EffectiveRiskLevel; current: EffectiveRiskLevel; expiresAt: Date }> {
  const previous = await effectiveRiskLevel(tx, p.customerId);
  const r = await tx.query<{ expires_at: Date }>(
    `INSERT INTO peer_risk_levels (customer_id, peer_id, level, reason, event_type, jti, txn, expires_at, received_at)
     VALUES ($1, $2, $3, $4, $5, $6, $7, now() + make_interval(secs => $8), $9) RETURNING expires_at`,
    [
      p.customerId,
      p.peerId,
      p.level,
      p.reason,
      p.eventType,
      p.jti ?? null,
      p.txn ?? null,
      p.ttlSeconds,
      p.receivedAt ?? null,
    ],
  );
  const current: EffectiveRiskLevel = {
    ...previous,
    peer: previous.peer ? higherLevel(previous.peer, p.level) : p.level,
    level: higherLevel(previous.level, p.level),
  };
  return { previous, current, expiresAt: new Date(r.rows[0]!.expires_at) };
}

/**
 * The pending peer actions a re-proofing answers when they were received before its proof began:
 * those whose effect it ends anyway once applied (a peer's level, a peer's stop on the sweeps, the
 * lock until re-proofing). Not `require_step_up`: it asks for step-up in every session live when it
 * is applied, and a proof made in one interaction does not vouch for the others; nor `notify`: the
 * notice of the peer's signal is still the customer's to see.
 */
export const SETTLED_BY_REPROOFING = ['raise_risk', 'require_reproofing', 'suspend_sweeps'] as const;

/**
 * Marks the customer's pending SETTLED_BY_REPROOFING actions received (ssf_action_outbox.created_at)
 * before `proofBegan` as processed, each audited signals.actions.superseded; one received at or after
 * it stays pending and acts as usual. Inside the re-proofing's transaction (src/risk/reproofing.ts).
 * A row a consumer has claimed is locked until that consumer commits: this waits for it and then
 * skips it (applied, so lifted by the clear that follows); a row settled here is locked until the
 * re-proofing commits and processed afterwards, so a consumer (SKIP LOCKED, processed_at IS NULL)
 * never takes it. Returns how many it settled.
 */
export async function settlePeerActions(
  tx: Queryable,
  customerId: string,
  proofBegan: Date,
): Promise<number> {
  const r = await tx.query<{ id: string; action: string; peer_id: string; jti: string; created_at: Date }>(
    `UPDATE ssf_action_outbox SET processed_at = now(), detail = detail || '{"supersededBy":"reproofing"}'::jsonb
     WHERE customer_id = $1 AND processed_at IS NULL AND action = ANY ($2::text[]) AND created_at < $3
     RETURNING id::text AS id, action, peer_id, jti, created_at`,
    [customerId, SETTLED_BY_REPROOFING, proofBegan],
  );
  // Audited in the order received (RETURNING has none of its own).
  for (const x of r.rows.sort((a, b) => Number(BigInt(a.id) - BigInt(b.id))))
    await recordAudit(tx, {
      type: 'signals.actions.superseded',
      outcome: 'info',
      actor: 'reproofing',
      customerId,
      data: {
        action: x.action,
        peer: x.peer_id,
        jti: x.jti,
        receivedAt: new Date(x.created_at).toISOString(),
        proofBegan: proofBegan.toISOString(),
      },
    });
  return r.rowCount;
}

/**
 * Ends the customer's live peer levels: after re-proofing (`by` = 'reproofing', see
 * clearAfterReproofing) or by an operator (`operator:<name>`). Audited as risk.peer.cleared when there
 * was any; returns how many ended. It settles no pending peer action: an operator's clear must not
 * drop a signal the operator never saw.
 * A peer's stop on the customer's sweeps (sweep_peer_stops, src/linking) ends the same way and at the
 * same time — it is the same kind of peer verdict and must not outlive it (audited
 * linking.sweeps.peer_stop_cleared).
 * `receivedBefore` (a re-proofing: when its proof began): only the verdicts whose signal was received
 * before then end; one received while the proof ran is not answered by it and stays in force.
 */
export async function clearPeerLevels(
  db: Queryable,
  customerId: string,
  by: string,
  receivedBefore?: Date,
): Promise<number> {
  const before = receivedBefore ?? null;
  const stops = await db.query<{ peer_id: string }>(
    `UPDATE sweep_peer_stops SET cleared_at = now(), cleared_by = $2
     WHERE customer_id = $1 AND cleared_at IS NULL
       AND ($3::timestamptz IS NULL OR COALESCE(received_at, stopped_at) < $3) RETURNING peer_id`,
    [customerId, by, before],
  );
  if (stops.rowCount > 0)
    await recordAudit(db, {
      type: 'linking.sweeps.peer_stop_cleared',
      outcome: 'info',
      actor: by,
      customerId,
      data: { by, peers: [...new Set(stops.rows.map((x) => x.peer_id))] },
    });
  const r = await db.query<{ peer_id: string; level: string }>(
    `UPDATE peer_risk_levels SET ended_at = now(), ended_by = $2
     WHERE customer_id = $1 AND ${LIVE}
       AND ($3::timestamptz IS NULL OR COALESCE(received_at, raised_at) < $3) RETURNING peer_id, level`,
    [customerId, by, before],
  );
  if (r.rowCount > 0)
    await recordAudit(db, {
      type: 'risk.peer.cleared',
      outcome: 'info',
      actor: by,
      customerId,
      data: { by, cleared: r.rows.map((x) => ({ peer: x.peer_id, level: x.level })) },
    });
  return r.rowCount;
}

/** The peers' verdicts in force for the customer (stops, levels, the lock until re-proofing), as received. */
export async function peerVerdictsInForce(
  db: Queryable,
  customerId: string,
): Promise<Array<{ verdict: string; peer: string | null; level: string | null; receivedAt: string | null }>> {
  const r = await db.query<{
    verdict: string;
    peer: string | null;
    level: string | null;
    received_at: Date | null;
  }>(
    `SELECT 'sweep_stop' AS verdict, peer_id AS peer, NULL AS level, COALESCE(received_at, stopped_at) AS received_at
     FROM sweep_peer_stops WHERE customer_id = $1 AND cleared_at IS NULL
     UNION ALL
     SELECT 'peer_level', peer_id, level, COALESCE(received_at, raised_at)
     FROM peer_risk_levels WHERE customer_id = $1 AND ${LIVE}
     UNION ALL
     SELECT 'reproofing_required', NULL, NULL, COALESCE(reproofing_required_at, locked_at)
     FROM account_lockouts WHERE customer_id = $1 AND reproofing_required
     ORDER BY received_at`,
    [customerId],
  );
  return r.rows.map((x) => ({
    verdict: x.verdict,
    peer: x.peer,
    level: x.level,
    receivedAt: x.received_at ? new Date(x.received_at).toISOString() : null,
  }));
}

/** Marks peer levels whose time is up as ended, audited per customer (the hub's sweeper). */
export async function expirePeerLevels(db: Queryable, limit = 1000): Promise<number> {
  const r = await db.query<{ customer_id: string; peer_id: string; level: string }>(
    `UPDATE peer_risk_levels SET ended_at = expires_at, ended_by = 'expired'
     WHERE id IN (SELECT id FROM peer_risk_levels WHERE ended_at IS NULL AND expires_at <= now()
                  ORDER BY expires_at LIMIT $1 FOR UPDATE SKIP LOCKED)
     RETURNING customer_id, peer_id, level`,
    [limit],
  );
  const byCustomer = new Map<string, Array<{ peer: string; level: string }>>();
  for (const x of r.rows)
    byCustomer.set(x.customer_id, [
      ...(byCustomer.get(x.customer_id) ?? []),
      { peer: x.peer_id, level: x.level },
    ]);
  for (const [customerId, expired] of byCustomer)
    await recordAudit(db, {
      type: 'risk.peer.expired',
      outcome: 'info',
      actor: 'system',
      customerId,
      data: { expired },
    });
  return r.rowCount;
}
