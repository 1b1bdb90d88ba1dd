/**
 * `kakehashi ssf …`: the operator's view of the transmitter's streams and what they hold, and the
 * levers — status changes (announced to the receiver with stream-updated), requeueing dead letters,
 * a verification event; as receiver, peers' circuit breakers and the actions they held (release or
 * drop them). Every change is in the audit log with the operator's name. Works on the
 * database: running hubs pick the changes up (NOTIFY on PostgreSQL, else their next poll).
 */
import { recordAudit } from '../audit/index.ts';
import type { Db } from '../db/index.ts';
import { emitStreamEvent } from './emit.ts';
import {
  changeStreamStatus,
  listDeadLetters,
  listPeerBreakers,
  requeueDeadLetters,
  resolvePeerBreaker,
} from './ops.ts';
import { EVENT, PUSH } from './vocabulary.ts';

export const SSF_USAGE = `usage: ssf streams [--json]
       ssf stream <stream_id> pause|enable|disable [--reason "…"]
       ssf dead-letters [--stream <stream_id>] [--retry] [--json]
       ssf verify <stream_id>
       ssf held [--json]
       ssf release|drop <peer_id>`;

export interface SsfCliOptions {
  json?: boolean | undefined;
  retry?: boolean | undefined;
  stream?: string | undefined;
  reason?: string | undefined;
  operator: string;
}

export interface StreamOverview {
  streamId: string;
  peerId: string;
  status: string;
  statusReason: string | null;
  delivery: 'push' | 'poll';
  endpoint: string;
  /** SETs waiting to be delivered (held, while paused). */
  backlog: number;
  deadLetters: number;
  lastDeliveryAt: Date | null;
  lastError: string | null;
  consecutiveFailures: number;
  nextAttemptAt: Date;
  lastActivityAt: Date;
}

export async function streamOverview(db: Db): Promise<StreamOverview[]> {
  const res = await db.query<{
    stream_id: string;
    peer_id: string;
    status: string;
    status_reason: string | null;
    delivery_method: string;
    endpoint_url: string;
    backlog: number;
    dead: number;
    last_delivery_at: Date | null;
    last_error: string | null;
    consecutive_failures: number;
    next_attempt_at: Date;
    last_activity_at: Date;
  }>(
    `SELECT s.stream_id, s.peer_id, s.status, s.status_reason, s.delivery_method, s.endpoint_url, s.last_error,
            s.consecutive_failures, s.next_attempt_at, s.last_activity_at,
            (SELECT count(*) FROM ssf_outbox o WHERE o.stream_id = s.stream_id AND o.state = 'pending')::int AS backlog,
            (SELECT count(*) FROM ssf_outbox o WHERE o.stream_id = s.stream_id AND o.state = 'failed')::int AS dead,
            (SELECT max(delivered_at) FROM ssf_outbox o WHERE o.stream_id = s.stream_id) AS last_delivery_at
     FROM ssf_streams s ORDER BY s.peer_id, s.created_at, s.stream_id`,
  );
  const at = (d: Date | string) => new Date(d);
  return res.rows.map((r) => ({
    streamId: r.stream_id,
    peerId: r.peer_id,
    status: r.status,
    statusReason: r.status_reason,
    delivery: r.delivery_method === PUSH ? 'push' : 'poll',
    endpoint: r.endpoint_url,
    backlog: r.backlog,
    deadLetters: r.dead,
    lastDeliveryAt: r.last_delivery_at ? at(r.last_delivery_at) : null,
    lastError: r.last_error,
    consecutiveFailures: r.consecutive_failures,
    nextAttemptAt: at(r.next_attempt_at),
    lastActivityAt: at(r.last_activity_at),
  }));
}

const STATUS_OF: Record<string, 'enabled' | 'paused' | 'disabled'> = {
  pause: 'paused',
  enable: 'enabled',
  disable: 'disabled',
};

/** Runs one `ssf` subcommand; returns the exit code (2: usage or refused). */
export async function ssfCommand(db: Db, args: string[], o: SsfCliOptions): Promise<number> {
  const [sub, id, action] = args;
  if (sub === 'streams') {
    const streams = await streamOverview(db);
    if (o.json) {
      console.log(JSON.stringify(streams, null, 2));
      return 0;
    }
    console.log(
      'STREAM                                PEER             STATUS    METHOD  BACKLOG  DEAD  LAST DELIVERY             LAST ERROR',
    );
    for (const s of streams)
      console.log(
        [
          s.streamId.padEnd(37),
          s.peerId.padEnd(16),
          s.status.padEnd(9),
          s.delivery.padEnd(7),
          String(s.backlog).padStart(7),
          String(s.deadLetters).padStart(5),
          (s.lastDeliveryAt?.toISOString() ?? '-').padEnd(24),
          s.lastError ?? (s.statusReason ? `(${s.statusReason})` : '-'),
        ].join(' '),
      );
    return 0;
  }
  if (sub === 'stream' && id && action && STATUS_OF[action]) {
    const change = await db.transaction((tx) =>
      changeStreamStatus(tx, id, STATUS_OF[action]!, o.reason ?? null, o.operator),
    );
    if (!change) {
      console.error(`no stream ${id}`);
      return 2;
    }
    console.log(
      `stream ${id}: ${change.previous} -> ${change.status}${change.dropped ? ` (${change.dropped} held SETs dropped)` : ''}`,
    );
    return 0;
  }
  if (sub === 'dead-letters' && !id) {
    const dead = await listDeadLetters(db, { streamId: o.stream, limit: 1000 });
    if (o.retry) {
      let total = 0;
      for (const streamId of new Set(dead.map((d) => d.streamId)))
        total += await requeueDeadLetters(db, streamId, o.operator);
      console.log(`${total} dead letters requeued`);
      return 0;
    }
    if (o.json) console.log(JSON.stringify(dead, null, 2));
    else
      for (const d of dead)
        console.log(
          `${d.id.padStart(8)}  ${d.streamId}  ${d.jti}  attempts ${d.attempts}  ${d.createdAt.toISOString()}  ${d.lastError ?? ''}`,
        );
    if (!o.json) console.error(`${dead.length} dead letters`);
    return 0;
  }
  if (sub === 'verify' && id && !action) {
    const found = await db.transaction(async (tx) => {
      const s = await tx.query('UPDATE ssf_streams SET last_verification_at = now() WHERE stream_id = $1', [
        id,
      ]);
      if (s.rowCount === 0) return false;
      // Transmitter-initiated (SSF 1.0 §8.1.4.2): no state; delivered even to a paused stream.
      await emitStreamEvent(tx, id, EVENT.verification, {});
      await recordAudit(tx, {
        type: 'ssf.stream.verification_sent',
        outcome: 'success',
        actor: o.operator,
        data: { streamId: id, initiatedBy: 'transmitter' },
      });
      return true;
    });
    if (!found) {
      console.error(`no stream ${id}`);
      return 2;
    }
    console.log(`verification event queued for stream ${id}`);
    return 0;
  }
  if (sub === 'held' && !id) {
    const breakers = await listPeerBreakers(db);
    if (o.json) {
      console.log(JSON.stringify(breakers, null, 2));
      return 0;
    }
    console.log('PEER             BREAKER  HELD  OPENED                    AFTER  CLOSED BY');
    for (const b of breakers)
      console.log(
        [
          b.peerId.padEnd(16),
          (b.openedAt ? 'open' : 'closed').padEnd(8),
          String(b.held).padStart(4),
          (b.openedAt?.toISOString() ?? '-').padEnd(25),
          String(b.openedCount ?? '-').padStart(5),
          b.closedBy ?? '-',
        ].join(' '),
      );
    return 0;
  }
  if ((sub === 'release' || sub === 'drop') && id && !action) {
    const n = await resolvePeerBreaker(db, id, sub, o.operator);
    if (n === undefined) {
      console.error(`no circuit breaker for peer ${id}`);
      return 2;
    }
    console.log(`peer ${id}: ${n} held SETs ${sub === 'release' ? 'released' : 'dropped'}, breaker closed`);
    return 0;
  }
  console.error(SSF_USAGE);
  return 2;
}
