/**
 * Operator-side functions: registering a peer's OAuth client, transmitter-initiated status changes
 * (which announce themselves with stream-updated), the dead-letter view, peers' circuit breakers
 * (release or drop what they held), and revoking a customer's sessions for any cause.
 */
import { recordAudit } from '../audit/index.ts';
import type { Db, Queryable } from '../db/index.ts';
import { type RevokedCustomerSessions, revokeCustomerSessions as revokeInAdapter } from '../oidc/adapter.ts';
import { causeHandled, executeActions } from './actions.ts';
import { emitStreamEvent } from './emit.ts';
import { type StatusChange, setStatus } from './streams.ts';
import { EVENT } from './vocabulary.ts';

export interface PeerClientInput {
  clientId: string;
  /** The peer's public keys for private_key_jwt, inline… */
  jwks?: { keys: Record<string, unknown>[] };
  /** …or where to fetch them (e.g. the peer hub's /ssf/client-jwks). */
  jwksUri?: string;
  /** Sender-constrained tokens (default true). False only for peers that cannot do DPoP. */
  dpop?: boolean;
  scopes?: ('ssf.manage' | 'ssf.read')[];
  name?: string;
}

/**
 * Registers (or replaces) the OAuth client a peer uses to manage its streams here: client
 * credentials only, private_key_jwt, no redirect URIs. The peer must also be configured in
 * `signals.peers` with this clientId.
 */
export async function registerPeerClient(db: Queryable, input: PeerClientInput): Promise<void> {
  if (!input.jwks === !input.jwksUri) throw new TypeError('give exactly one of jwks and jwksUri');
  const metadata = {
    client_id: input.clientId,
    client_name: input.name ?? input.clientId,
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
    scope: (input.scopes ?? ['ssf.manage', 'ssf.read']).join(' '),
    token_endpoint_auth_method: 'private_key_jwt',
    token_endpoint_auth_signing_alg: 'ES256',
    dpop_bound_access_tokens: input.dpop ?? true,
    ...(input.jwks ? { jwks: input.jwks } : { jwks_uri: input.jwksUri }),
  };
  await db.query(
    `INSERT INTO clients (client_id, metadata) VALUES ($1, $2::jsonb)
     ON CONFLICT (client_id) DO UPDATE SET metadata = EXCLUDED.metadata, enabled = true, updated_at = now()`,
    [input.clientId, JSON.stringify(metadata)],
  );
  await recordAudit(db, {
    type: 'ssf.peer_client.registered',
    outcome: 'success',
    actor: 'system',
    clientId: input.clientId,
    data: { scopes: metadata.scope, dpop: metadata.dpop_bound_access_tokens },
  });
}

/**
 * The transmitter changes a stream's status on its own (operator, policy). SSF 1.0 §8.1.5: the
 * receiver is told with stream-updated — before the stream stops, or upon re-enabling; the event
 * is delivered even though the stream is paused or disabled. An operator's pause or disable holds:
 * the receiver cannot lift it (setStatus); the hub's own (actor `system`, e.g. inactivity) does not.
 */
export async function changeStreamStatus(
  db: Queryable,
  streamId: string,
  status: 'enabled' | 'paused' | 'disabled',
  reason: string | null,
  actor: string,
): Promise<StatusChange | undefined> {
  const change = await setStatus(db, streamId, status, reason, actor !== 'system');
  if (!change) return undefined;
  if (change.previous !== status)
    await emitStreamEvent(db, streamId, EVENT.streamUpdated, reason ? { status, reason } : { status });
  await recordAudit(db, {
    type: 'ssf.stream.status',
    outcome: 'success',
    actor,
    data: {
      streamId,
      from: change.previous,
      to: status,
      reason,
      dropped: change.dropped,
      initiatedBy: 'transmitter',
    },
  });
  return change;
}

export interface DeadLetter {
  id: string;
  streamId: string;
  jti: string;
  eventId: string;
  attempts: number;
  lastError: string | null;
  createdAt: Date;
}

/** SETs a receiver refused or that could not be delivered in time, newest first. */
export async function listDeadLetters(
  db: Queryable,
  filter: { streamId?: string; limit?: number } = {},
): Promise<DeadLetter[]> {
  const res = await db.query<{
    id: string;
    stream_id: string;
    jti: string;
    event_id: string;
    attempts: number;
    last_error: string | null;
    created_at: Date;
  }>(
    `SELECT id::text AS id, stream_id, jti, event_id::text AS event_id, attempts, last_error, created_at FROM ssf_outbox
     WHERE state = 'failed' AND ($1::text IS NULL OR stream_id = $1) ORDER BY id DESC LIMIT $2`,
    [filter.streamId ?? null, filter.limit ?? 100],
  );
  return res.rows.map((r) => ({
    id: r.id,
    streamId: r.stream_id,
    jti: r.jti,
    eventId: r.event_id,
    attempts: r.attempts,
    lastError: r.last_error,
    createdAt: r.created_at,
  }));
}

/** Puts dead letters back in line (same SET, same jti: a receiver that did get it deduplicates). */
export async function requeueDeadLetters(
  db: Queryable,
  streamId: string,
  actor: string,
  ids?: string[],
): Promise<number> {
  const res = await db.query(
    `UPDATE ssf_outbox SET state = 'pending', last_error = NULL, served_until = NULL, created_at = now()
     WHERE state = 'failed' AND stream_id = $1 AND ($2::bigint[] IS NULL OR id = ANY ($2::bigint[]))`,
    [streamId, ids ?? null],
  );
  await db.query(
    'UPDATE ssf_streams SET next_attempt_at = now(), consecutive_failures = 0 WHERE stream_id = $1',
    [streamId],
  );
  await recordAudit(db, {
    type: 'ssf.outbox.requeued',
    outcome: 'success',
    actor,
    data: { streamId, count: res.rowCount },
  });
  return res.rowCount;
}

/**
 * Ends every session and revokes every grant and token of a customer (takeover, freeze). Recorded
 * in the audit log with who asked and why.
 */
export async function revokeCustomerSessions(
  db: Queryable,
  customerId: string,
  why: { actor: string; reason: string },
): Promise<RevokedCustomerSessions> {
  const revoked = await revokeInAdapter(db, customerId);
  await recordAudit(db, {
    type: 'session.revoked_all',
    outcome: 'success',
    actor: why.actor,
    customerId,
    data: { reason: why.reason, ...revoked },
  });
  return revoked;
}

export interface PeerBreaker {
  peerId: string;
  openedAt: Date | null;
  openedCount: number | null;
  closedAt: Date | null;
  closedBy: string | null;
  /** SETs whose actions wait for an operator. */
  held: number;
}

/** Peers whose breaker opened at least once, or that have SETs held. */
export async function listPeerBreakers(db: Queryable): Promise<PeerBreaker[]> {
  const res = await db.query<{
    peer_id: string;
    opened_at: Date | null;
    opened_count: number | null;
    closed_at: Date | null;
    closed_by: string | null;
    held: number;
  }>(
    `SELECT b.peer_id, b.opened_at, b.opened_count, b.closed_at, b.closed_by,
            (SELECT count(*) FROM ssf_held_sets h WHERE h.peer_id = b.peer_id AND h.resolved_at IS NULL)::int AS held
     FROM ssf_peer_breakers b WHERE b.opened_at IS NOT NULL OR b.closed_at IS NOT NULL
       OR EXISTS (SELECT 1 FROM ssf_held_sets h WHERE h.peer_id = b.peer_id AND h.resolved_at IS NULL)
     ORDER BY b.peer_id`,
  );
  return res.rows.map((r) => ({
    peerId: r.peer_id,
    openedAt: r.opened_at,
    openedCount: r.opened_count,
    closedAt: r.closed_at,
    closedBy: r.closed_by,
    held: r.held,
  }));
}

/**
 * An operator ends a peer's open circuit breaker: `release` runs the held SETs' actions in the order
 * they came (as they would have run, a cause already handled meanwhile excepted), `drop` discards
 * them. Either way the breaker closes and counting starts again. Returns how many SETs were resolved,
 * or undefined when the peer has no breaker.
 */
export async function resolvePeerBreaker(
  db: Db,
  peerId: string,
  how: 'release' | 'drop',
  actor: string,
): Promise<number | undefined> {
  return db.transaction(async (tx) => {
    const breaker = await tx.query(
      'UPDATE ssf_peer_breakers SET opened_at = NULL, closed_at = now(), closed_by = $2 WHERE peer_id = $1',
      [peerId, actor],
    );
    if (breaker.rowCount === 0) return undefined;
    const held = await tx.query<{
      id: string;
      jti: string;
      txn: string | null;
      event_type: string;
      customer_id: string;
      event: Record<string, unknown>;
      actions: string[];
    }>(
      `SELECT id::text AS id, jti, txn, event_type, customer_id, event, actions FROM ssf_held_sets
       WHERE peer_id = $1 AND resolved_at IS NULL ORDER BY id FOR UPDATE`,
      [peerId],
    );
    for (const h of held.rows) {
      if (how === 'release') {
        const set = { jti: h.jti, txn: h.txn ?? undefined, eventType: h.event_type, event: h.event };
        const done = (await causeHandled(tx, peerId, set, h.customer_id))
          ? []
          : await executeActions(tx, peerId, set, h.customer_id, h.actions);
        await tx.query('UPDATE ssf_received SET actions = $3::text[] WHERE peer_id = $1 AND jti = $2', [
          peerId,
          h.jti,
          done,
        ]);
      }
      await tx.query(
        `UPDATE ssf_held_sets SET resolved_at = now(), resolution = $2, resolved_by = $3 WHERE id = $1`,
        [h.id, how === 'release' ? 'released' : 'dropped', actor],
      );
    }
    await recordAudit(tx, {
      type: 'ssf.peer.circuit_closed',
      outcome: 'success',
      actor,
      data: { peerId, [how === 'release' ? 'released' : 'dropped']: held.rows.length },
    });
    return held.rows.length;
  });
}
