/**
 * The notification outbox. enqueueNotification only inserts rows — one per active channel of the
 * customer, unless the customer switched a non-critical kind off — in the caller's transaction,
 * so a notification exists exactly when the event it reports was committed. Workers deliver them.
 */
import { recordAudit } from '../audit/index.ts';
import type { Queryable } from '../db/index.ts';
import { NOTIFY_AUDIT } from './audit.ts';
import { NotifyError } from './errors.ts';
import {
  isCriticalKind,
  type NotificationData,
  type NotificationKind,
  parseNotificationData,
} from './kinds.ts';

type Listener = () => void;
const listeners = new Set<Listener>();

/** Called in-process whenever notifications were queued; workers subscribe. */
export function onNotificationsQueued(listener: Listener): () => void {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

function wake(): void {
  // Deferred: the caller's transaction usually commits right after this returns. A worker that
  // looks too early finds nothing and picks the rows up on its next interval.
  if (listeners.size)
    setImmediate(() => {
      for (const l of listeners) l();
    });
}

export interface NotificationRequest<K extends NotificationKind = NotificationKind> {
  customerId: string;
  kind: K;
  data: NotificationData<K>;
  /** When the event happened (shown in the message); default now. */
  occurredAt?: Date | undefined;
  /**
   * Makes queueing idempotent: a second request with the same kind and key queues nothing for a
   * channel that already has it (e.g. `login:<session id>`, `withdrawal:<request id>`). Kept as long
   * as the outbox row (`retentionDays`).
   */
  dedupeKey?: string | undefined;
}

export interface EnqueueResult {
  /** Outbox row ids, one per channel the notification was queued for. */
  outboxIds: string[];
}

/**
 * Queues a notification for every active channel of the customer. Pass the transaction that
 * records the event; validation errors (NotifyError ERR_NOTIFY_DATA / ERR_NOTIFY_KIND) are thrown
 * before anything is written. Security-critical kinds ignore the customer's opt-outs; when one
 * cannot go anywhere (no active channel) that fact goes to the audit log.
 */
export async function enqueueNotification<K extends NotificationKind>(
  tx: Queryable,
  request: NotificationRequest<K>,
): Promise<EnqueueResult> {
  const data = parseNotificationData(request.kind, request.data);
  if (request.dedupeKey !== undefined && (request.dedupeKey.length === 0 || request.dedupeKey.length > 200))
    throw new NotifyError('ERR_NOTIFY_DATA', 'dedupeKey must be 1 to 200 characters');
  const critical = isCriticalKind(request.kind);
  const res = await tx.query<{ id: string }>(
    `INSERT INTO notify_outbox (customer_id, channel_id, channel_kind, kind, language, data, occurred_at, dedupe_key)
     SELECT c.customer_id, c.id, c.kind, $2::text, COALESCE(s.language, 'ja'), $3::jsonb,
            COALESCE($4::timestamptz, now()), $5::text
     FROM notify_channels c LEFT JOIN notify_settings s ON s.customer_id = c.customer_id
     WHERE c.customer_id = $1 AND c.status = 'active'
       AND ($6::boolean OR NOT EXISTS (
         SELECT 1 FROM notify_preferences p WHERE p.customer_id = $1 AND p.kind = $2::text AND NOT p.enabled))
     ORDER BY c.created_at, c.id
     ON CONFLICT (channel_id, kind, dedupe_key) DO NOTHING
     RETURNING id::text AS id`,
    [
      request.customerId,
      request.kind,
      JSON.stringify(data),
      request.occurredAt?.toISOString() ?? null,
      request.dedupeKey ?? null,
      critical,
    ],
  );
  if (res.rowCount > 0) wake();
  else if (critical) {
    const channels = await tx.query(
      `SELECT 1 FROM notify_channels WHERE customer_id = $1 AND status = 'active' LIMIT 1`,
      [request.customerId],
    );
    if (channels.rowCount === 0)
      await recordAudit(tx, {
        type: NOTIFY_AUDIT.undeliverable,
        outcome: 'failure',
        actor: 'system',
        customerId: request.customerId,
        data: { kind: request.kind, reason: 'no active channel' },
      });
  }
  return { outboxIds: res.rows.map((r) => r.id) };
}

export interface RequeueInput {
  /** Outbox ids to requeue; absent: every dead notification (of `customerId`, when given). */
  ids?: string[] | undefined;
  customerId?: string | undefined;
  /** `operator:<name>` */
  actor: string;
}

/** Puts dead-lettered notifications back in the queue with fresh attempts (operator action). */
export async function requeueDeadNotifications(db: Queryable, input: RequeueInput): Promise<number> {
  const res = await db.query<{ id: string; customer_id: string }>(
    `UPDATE notify_outbox SET status = 'pending', attempts = 0, next_attempt_at = now(), claim_token = NULL,
       dead_at = NULL
     WHERE status = 'dead' AND ($1::bigint[] IS NULL OR id = ANY ($1::bigint[]))
       AND ($2::text IS NULL OR customer_id = $2)
     RETURNING id::text AS id, customer_id`,
    [input.ids ?? null, input.customerId ?? null],
  );
  if (res.rowCount > 0) {
    await recordAudit(db, {
      type: NOTIFY_AUDIT.requeued,
      outcome: 'info',
      actor: input.actor,
      customerId: input.customerId,
      data: { count: res.rowCount, ids: res.rows.map((r) => r.id).slice(0, 100) },
    });
    wake();
  }
  return res.rowCount;
}

export interface SentNotification {
  kind: string;
  channelKind: string;
  status: string;
  occurredAt: Date;
  sentAt: Date | null;
}

/** The customer's latest notifications and their delivery state (operator console); no bodies. */
export async function listCustomerNotifications(
  db: Queryable,
  customerId: string,
  limit = 30,
): Promise<SentNotification[]> {
  const res = await db.query<{
    kind: string;
    channel_kind: string;
    status: string;
    occurred_at: Date;
    sent_at: Date | null;
  }>(
    `SELECT kind, channel_kind, status, occurred_at, sent_at FROM notify_outbox
     WHERE customer_id = $1 ORDER BY id DESC LIMIT $2`,
    [customerId, limit],
  );
  return res.rows.map((r) => ({
    kind: r.kind,
    channelKind: r.channel_kind,
    status: r.status,
    occurredAt: new Date(r.occurred_at),
    sentAt: r.sent_at ? new Date(r.sent_at) : null,
  }));
}
