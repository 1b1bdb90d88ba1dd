/**
 * Notifications to customers' registered channels (JSDA IV 1.(2)② and ④): login, new device,
 * passkey, lock, recovery, contact, consent, withdrawal and limit events, through a Postgres outbox
 * delivered at least once by workers on any number of nodes. No message carries a URL or a link
 * (JSDA IV 4.(6)); each tells the customer to open the app or website themselves.
 *
 * Other modules call enqueueNotification inside the transaction that records the event. The hub
 * creates one Notifier per node and starts it; the security page uses the settings functions.
 */
import { readFileSync } from 'node:fs';
import type { Db } from '../db/index.ts';
import { loadKeyEncryptionKey } from '../keys/index.ts';
import type { Logger } from '../log.ts';
import type { NotifyConfig } from './config.ts';
import { createSmtpTransport, type MailTransport } from './transport.ts';
import { type NotificationWorker, startNotificationWorker } from './worker.ts';

export { NOTIFY_AUDIT } from './audit.ts';
export {
  type AddEmailChannelInput,
  addEmailChannel,
  type ChangeMeta,
  type ChannelKind,
  type ChannelSummary,
  getNotificationSettings,
  type KindSetting,
  listChannels,
  maskEmail,
  type NotificationSettings,
  notificationCoverage,
  type RemoveChannelInput,
  removeChannel,
  type UpdateSettingsInput,
  updateNotificationSettings,
} from './channels.ts';
export { type NotifyConfig, type NotifyConfigInput, notifyConfigSchema } from './config.ts';
export { NotifyError, type NotifyErrorCode } from './errors.ts';
export {
  CRITICAL_KINDS,
  isCriticalKind,
  NOTIFICATION_KINDS,
  type NotificationData,
  type NotificationKind,
} from './kinds.ts';
export {
  type EnqueueResult,
  enqueueNotification,
  listCustomerNotifications,
  type NotificationRequest,
  type RequeueInput,
  requeueDeadNotifications,
  type SentNotification,
} from './outbox.ts';
export {
  findUrlLike,
  type Language,
  neutralize,
  type RenderedMessage,
  renderNotification,
} from './templates.ts';
export {
  createSmtpTransport,
  type MailMessage,
  type MailTransport,
  type SmtpTransportOptions,
} from './transport.ts';
export { type NotificationWorker, startNotificationWorker } from './worker.ts';

export interface Notifier {
  /** Starts this node's delivery worker (no-op when disabled or no relay is configured). */
  start(): void;
  /** Runs a delivery round soon. */
  kick(): void;
  /** Sends everything due now (tests, shutdown). */
  drain(): Promise<void>;
  /** Stops the worker after the round in flight and closes the relay connections. */
  stop(): Promise<void>;
}

export interface CreateNotifierOptions {
  config: { notify: NotifyConfig; keyEncryptionKey?: string | undefined; dataDir: string };
  db: Db;
  logger: Logger;
  /** Use this transport instead of the SMTP relay from the configuration. */
  transport?: MailTransport;
}

export function createNotifier(o: CreateNotifierOptions): Notifier {
  const cfg = o.config.notify;
  const logger = o.logger.child({ module: 'notify' });
  let worker: NotificationWorker | undefined;
  let transport: MailTransport | undefined;
  return {
    start() {
      if (!cfg.enabled || worker) return;
      if (!cfg.from || (!cfg.smtp && !o.transport)) {
        logger.warn('notify.smtp is not configured: notifications are queued but not sent');
        return;
      }
      transport =
        o.transport ??
        createSmtpTransport({
          ...cfg.smtp!,
          from: cfg.from,
          ca: cfg.smtp!.caFile ? readFileSync(cfg.smtp!.caFile, 'utf8') : undefined,
        });
      worker = startNotificationWorker({
        db: o.db,
        kek: loadKeyEncryptionKey(o.config),
        transport,
        logger,
        settings: cfg,
        messageIdDomain: cfg.from.address.slice(cfg.from.address.lastIndexOf('@') + 1),
        signalNotices: true,
      });
    },
    kick() {
      worker?.kick();
    },
    async drain() {
      await worker?.drain();
    },
    async stop() {
      await worker?.stop();
      worker = undefined;
      // A transport handed in belongs to the caller.
      if (!o.transport) transport?.close();
      transport = undefined;
    },
  };
}
