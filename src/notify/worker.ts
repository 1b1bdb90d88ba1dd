/**
 * Delivery worker: claims due outbox rows (FOR UPDATE SKIP LOCKED, so any number of workers on any
 * number of nodes share the queue without sending a row twice), renders and sends each, and
 * settles it: sent; retried later with exponential backoff and jitter; or dead-lettered after
 * maxAttempts (or at once when retrying cannot help) with an audit event.
 *
 * Delivery is at-least-once: a worker that dies (or stalls past the lease) between sending and
 * settling leaves the row to come due again, and it is sent again with the same Message-ID
 * (derived from the row), which receivers and support staff can use to recognise the repeat.
 * Logs carry row ids, kinds and errors with addresses masked — never a body or an address.
 */
import { randomUUID } from 'node:crypto';
import { recordAudit } from '../audit/index.ts';
import type { Db } from '../db/index.ts';
import type { Logger } from '../log.ts';
import { NOTIFY_AUDIT } from './audit.ts';
import { maskEmail, openAddress } from './channels.ts';
import type { NotifyConfig } from './config.ts';
import { NotifyError } from './errors.ts';
import type { NotificationKind } from './kinds.ts';
import { onNotificationsQueued } from './outbox.ts';
import { takeSignalNotices } from './signalNotices.ts';
import { type Language, renderNotification } from './templates.ts';
import type { MailTransport } from './transport.ts';

const MAINTENANCE_EVERY_MS = 10 * 60_000;

export type WorkerSettings = Pick<
  NotifyConfig,
  | 'workerIntervalMs'
  | 'batchSize'
  | 'concurrency'
  | 'maxAttempts'
  | 'retryBaseMs'
  | 'retryMaxMs'
  | 'leaseSeconds'
  | 'retentionDays'
>;

export interface NotificationWorkerOptions {
  db: Db;
  /** Opens the sealed addresses. */
  kek: Buffer;
  transport: MailTransport;
  logger: Logger;
  settings: WorkerSettings;
  /** Right-hand side of Message-IDs: the sender's domain. */
  messageIdDomain: string;
  /** Also turn shared-signal `notify` actions into security alerts (see signalNotices.ts). */
  signalNotices?: boolean | undefined;
}

export interface NotificationWorker {
  /** Runs a round soon (the worker is also woken in-process when something is queued). */
  kick(): void;
  /** Sends everything that is due now, round after round, and resolves when nothing is. */
  drain(): Promise<void>;
  /** Stops polling and waits for the round in flight. */
  stop(): Promise<void>;
}

interface ClaimedRow {
  id: string;
  customer_id: string;
  channel_id: string;
  kind: NotificationKind;
  language: Language;
  data: unknown;
  occurred_at: Date;
  attempts: number;
  created_at: Date;
  address_enc: string;
  name_kanji: string;
  name_ja: string;
  name_en: string;
}

type Outcome = { kind: 'sent' } | { kind: 'failed'; error: string; permanent: boolean };

function messageIdFor(row: { id: string; created_at: Date }, domain: string): string {
  return `<notify.${row.id}.${row.created_at.getTime()}@${domain}>`;
}

/** An error for logs and the row: code, SMTP reply code, message with any e-mail address masked. */
function describeError(err: unknown): { error: string; permanent: boolean } {
  const e = err as { code?: unknown; responseCode?: unknown; command?: unknown; message?: unknown };
  const code = typeof e?.code === 'string' ? e.code : 'ERROR';
  const reply = typeof e?.responseCode === 'number' ? e.responseCode : undefined;
  const message = (typeof e?.message === 'string' ? e.message : String(err)).replace(
    /[^\s<>"'(),;:]+@[^\s<>"'(),;:]+/g,
    (m) => maskEmail(m),
  );
  // Retrying cannot help when the relay refuses the recipient for good (5xx to RCPT TO), or when
  // the row itself cannot be turned into a message; everything else (relay down, 4xx, sender or
  // authentication trouble that an operator can fix) is retried.
  const permanent =
    (code === 'EENVELOPE' && reply !== undefined && reply >= 500 && e.command === 'RCPT TO') ||
    (err instanceof NotifyError &&
      ['ERR_NOTIFY_DATA', 'ERR_NOTIFY_KIND', 'ERR_NOTIFY_SEALED'].includes(err.code));
  return { error: `${code}${reply ? ` ${reply}` : ''}: ${message}`.slice(0, 300), permanent };
}

function backoffMs(s: WorkerSettings, attempts: number): number {
  const ceiling = Math.min(s.retryMaxMs, s.retryBaseMs * 2 ** Math.min(attempts - 1, 30));
  // "Equal jitter": spread out, but never sooner than half the ceiling.
  return Math.round(ceiling / 2 + Math.random() * (ceiling / 2));
}

async function pool<T>(items: T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(limit, items.length) }, async () => {
      while (next < items.length) await fn(items[next++]!);
    }),
  );
}

export function startNotificationWorker(o: NotificationWorkerOptions): NotificationWorker {
  const s = o.settings;
  const logger = o.logger;
  let stopped = false;
  let chain: Promise<unknown> = Promise.resolve();
  let queued = false;
  let lastMaintenance = 0;

  /** Rounds run one at a time per worker; concurrency comes from the pool inside a round. */
  function serial<T>(fn: () => Promise<T>): Promise<T> {
    const p = chain.then(fn, fn);
    chain = p.catch(() => undefined);
    return p;
  }

  async function claim(token: string): Promise<ClaimedRow[]> {
    const res = await o.db.query<ClaimedRow>(
      `WITH claimed AS (
         UPDATE notify_outbox o SET attempts = o.attempts + 1, claim_token = $2,
                next_attempt_at = now() + make_interval(secs => $3)
         WHERE o.id IN (SELECT id FROM notify_outbox
                        WHERE status = 'pending' AND channel_kind = 'email' AND next_attempt_at <= now()
                        ORDER BY next_attempt_at, id LIMIT $1 FOR UPDATE SKIP LOCKED)
         RETURNING o.id, o.customer_id, o.channel_id, o.kind, o.language, o.data, o.occurred_at, o.attempts,
                   o.created_at)
       SELECT c.id::text AS id, c.customer_id, c.channel_id, c.kind, c.language, c.data, c.occurred_at,
              c.attempts, c.created_at, ch.address_enc, cu.name_kanji, i.name_ja, i.name_en
       FROM claimed c
       JOIN notify_channels ch ON ch.id = c.channel_id
       JOIN customers cu ON cu.id = c.customer_id
       JOIN institutions i ON i.id = cu.institution_id
       ORDER BY c.id`,
      [s.batchSize, token, s.leaseSeconds],
    );
    return res.rows;
  }

  async function deliver(row: ClaimedRow): Promise<Outcome> {
    try {
      const to = openAddress(o.kek, row.channel_id, row.address_enc);
      const message = renderNotification(row.kind, row.language, row.data, {
        customerName: row.name_kanji,
        institutionName: row.language === 'en' ? row.name_en : row.name_ja,
        occurredAt: new Date(row.occurred_at),
      });
      await o.transport.send({
        to,
        ...message,
        language: row.language,
        messageId: messageIdFor(row, o.messageIdDomain),
      });
      return { kind: 'sent' };
    } catch (err) {
      return { kind: 'failed', ...describeError(err) };
    }
  }

  async function settle(row: ClaimedRow, token: string, outcome: Outcome): Promise<void> {
    const log = { outboxId: row.id, kind: row.kind, attempts: row.attempts };
    if (outcome.kind === 'sent') {
      const done = await o.db.query(
        `UPDATE notify_outbox SET status = 'sent', sent_at = now(), claim_token = NULL, last_error = NULL
         WHERE id = $1 AND claim_token = $2`,
        [row.id, token],
      );
      if (done.rowCount === 0)
        logger.warn(log, 'notification sent after its lease ended; it may be sent twice');
      else logger.debug(log, 'notification sent');
      return;
    }
    if (outcome.permanent || row.attempts >= s.maxAttempts) {
      await o.db.transaction(async (tx) => {
        const dead = await tx.query(
          `UPDATE notify_outbox SET status = 'dead', dead_at = now(), claim_token = NULL, last_error = $3
           WHERE id = $1 AND claim_token = $2`,
          [row.id, token, outcome.error],
        );
        if (dead.rowCount === 0) return;
        await recordAudit(tx, {
          type: NOTIFY_AUDIT.deadLettered,
          outcome: 'failure',
          actor: 'system',
          customerId: row.customer_id,
          data: {
            outboxId: row.id,
            kind: row.kind,
            channelId: row.channel_id,
            attempts: row.attempts,
            permanent: outcome.permanent,
            error: outcome.error,
          },
        });
        logger.error({ ...log, error: outcome.error }, 'notification dead-lettered');
      });
      return;
    }
    const delay = backoffMs(s, row.attempts);
    await o.db.query(
      `UPDATE notify_outbox SET next_attempt_at = now() + make_interval(secs => $3::float8 / 1000),
         claim_token = NULL, last_error = $4
       WHERE id = $1 AND claim_token = $2`,
      [row.id, token, delay, outcome.error],
    );
    logger.warn({ ...log, error: outcome.error, retryInMs: delay }, 'notification not sent; will retry');
  }

  /** One claim-send-settle pass; returns how many rows it claimed. */
  async function round(): Promise<number> {
    const token = randomUUID();
    const rows = await claim(token);
    await pool(rows, s.concurrency, async (row) => {
      const outcome = await deliver(row);
      await settle(row, token, outcome).catch((err: unknown) =>
        // The row stays claimed and comes due again when its lease ends.
        logger.error({ err, outboxId: row.id }, 'settling a notification failed'),
      );
    });
    return rows.length;
  }

  async function maintain(): Promise<void> {
    if (Date.now() - lastMaintenance < MAINTENANCE_EVERY_MS) return;
    lastMaintenance = Date.now();
    await o.db.query(
      `DELETE FROM notify_outbox WHERE id IN (
         SELECT id FROM notify_outbox
         WHERE (status = 'sent' AND sent_at < now() - make_interval(days => $1))
            OR (status = 'dead' AND dead_at < now() - make_interval(days => $1))
         LIMIT 10000)`,
      [s.retentionDays],
    );
  }

  async function notices(): Promise<void> {
    try {
      if (o.signalNotices) while (!stopped && (await takeSignalNotices(o.db)) >= 100);
    } catch (err) {
      // Mail that is already queued goes out regardless.
      logger.error({ err }, 'taking shared-signal notices failed');
    }
  }

  function kick(): void {
    if (stopped || queued) return;
    queued = true;
    serial(async () => {
      queued = false;
      await notices();
      while (!stopped && (await round()) >= s.batchSize);
      if (!stopped) await maintain();
    }).catch((err: unknown) => logger.error({ err }, 'notification worker round failed'));
  }

  const timer = setInterval(kick, s.workerIntervalMs);
  timer.unref();
  const unsubscribe = onNotificationsQueued(kick);
  kick();

  return {
    kick,
    async drain() {
      await serial(notices);
      while (!stopped && (await serial(round)) > 0);
    },
    async stop() {
      stopped = true;
      clearInterval(timer);
      unsubscribe();
      await chain;
    },
  };
}
