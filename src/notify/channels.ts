/**
 * A customer's contact points (channels) and notification settings.
 *
 * Addresses are sealed with the key-encryption key (AES-256-GCM, bound to the channel id) and kept
 * masked for screens (JSDA IV 1.(2)④); an HMAC of the normalised address finds duplicates without
 * opening anything. An address never changes in place: replacing one adds a channel and removes the
 * old one in the same transaction, after the change notice was queued for both — the old contact
 * is the one that must hear about it.
 */
import { createHmac, hkdfSync, randomBytes } from 'node:crypto';
import { z } from 'zod';
import { recordAudit } from '../audit/index.ts';
import type { Queryable } from '../db/index.ts';
import { decryptAtRest, encryptAtRest } from '../keys/index.ts';
import { NOTIFY_AUDIT } from './audit.ts';
import { NotifyError } from './errors.ts';
import { CRITICAL_KINDS, NOTIFICATION_KINDS, type NotificationKind } from './kinds.ts';
import { enqueueNotification } from './outbox.ts';
import { LANGUAGES, type Language } from './templates.ts';

export type ChannelKind = 'email' | 'sms' | 'push';

export interface ChannelSummary {
  id: string;
  kind: ChannelKind;
  /** For screens, e.g. `t***@e******.jp`. */
  masked: string;
  createdAt: Date;
}

/** Who changed something and from where, for the audit log. */
export interface ChangeMeta {
  /** `customer:<id>`, `operator:<name>`, `system`. */
  actor: string;
  ip?: string | undefined;
  port?: number | undefined;
  userAgent?: string | undefined;
  interactionId?: string | undefined;
}

/**
 * `taro@example.jp` → `t***@e******.jp`: the first character of the local part, the first of the
 * domain, and the top-level domain; the local part's length is hidden.
 */
export function maskEmail(address: string): string {
  const at = address.lastIndexOf('@');
  if (at < 1 || at === address.length - 1) return '***';
  const local = [...address.slice(0, at)];
  const domain = address.slice(at + 1);
  const dot = domain.lastIndexOf('.');
  const host = [...(dot > 0 ? domain.slice(0, dot) : domain)];
  const tld = dot > 0 ? domain.slice(dot) : '';
  return `${local[0]}***@${host[0]}${'*'.repeat(Math.max(1, host.length - 1))}${tld}`;
}

const emailSchema = z.email().max(254);

/** Trims and lower-cases the domain (local parts are case-sensitive in principle, domains never). */
function normalizeEmail(raw: string): string {
  const trimmed = raw.trim();
  const parsed = emailSchema.safeParse(trimmed);
  if (!parsed.success) throw new NotifyError('ERR_NOTIFY_ADDRESS', 'not a valid e-mail address');
  const at = trimmed.lastIndexOf('@');
  return `${trimmed.slice(0, at)}@${trimmed.slice(at + 1).toLowerCase()}`;
}

const hashKeys = new WeakMap<Buffer, Buffer>();
function addressHash(kek: Buffer, kind: ChannelKind, address: string): string {
  let key = hashKeys.get(kek);
  if (!key) {
    key = Buffer.from(hkdfSync('sha256', kek, Buffer.alloc(0), 'kakehashi notify address hash', 32));
    hashKeys.set(kek, key);
  }
  // Case-insensitive: taro@ and Taro@ are one mailbox at every provider a customer will use.
  return createHmac('sha256', key).update(`${kind}:${address.toLowerCase()}`).digest('base64url');
}

const sealContext = (channelId: string) => `notify-channel:${channelId}`;

export function sealAddress(kek: Buffer, channelId: string, address: string): string {
  return encryptAtRest(kek, address, sealContext(channelId));
}

export function openAddress(kek: Buffer, channelId: string, sealed: string): string {
  try {
    return decryptAtRest(kek, sealed, sealContext(channelId));
  } catch (err) {
    throw new NotifyError('ERR_NOTIFY_SEALED', 'the stored address of a channel does not open', {
      cause: err,
    });
  }
}

interface ChannelRow {
  id: string;
  kind: ChannelKind;
  address_masked: string;
  created_at: Date;
}

const toSummary = (r: ChannelRow): ChannelSummary => ({
  id: r.id,
  kind: r.kind,
  masked: r.address_masked,
  createdAt: r.created_at,
});

export async function listChannels(db: Queryable, customerId: string): Promise<ChannelSummary[]> {
  const res = await db.query<ChannelRow>(
    `SELECT id, kind, address_masked, created_at FROM notify_channels
     WHERE customer_id = $1 AND status = 'active' ORDER BY created_at, id`,
    [customerId],
  );
  return res.rows.map(toSummary);
}

function auditMeta(meta: ChangeMeta) {
  return {
    actor: meta.actor,
    ip: meta.ip,
    port: meta.port,
    userAgent: meta.userAgent,
    interactionId: meta.interactionId,
  };
}

export interface AddEmailChannelInput extends ChangeMeta {
  customerId: string;
  address: string;
  /** The channel this address replaces (a change of e-mail address); absent: an additional address. */
  replaces?: string | undefined;
  occurredAt?: Date | undefined;
}

/**
 * Registers an e-mail address as a channel and tells every active channel — the replaced one and
 * the new one included — that the contact data changed (a security-critical notice; not sent for a
 * customer's first channel, where there is no one else to tell). Call inside the
 * transaction that authorised the change (fresh passkey, JSDA IV 1.(2)④), so the change and its
 * notice commit together. Throws ERR_NOTIFY_ADDRESS, ERR_NOTIFY_DUPLICATE,
 * ERR_NOTIFY_CHANNEL_UNKNOWN (replaces names no active channel of the customer).
 */
export async function addEmailChannel(
  tx: Queryable,
  kek: Buffer,
  input: AddEmailChannelInput,
): Promise<ChannelSummary> {
  const address = normalizeEmail(input.address);
  const existing = await tx.query<{ id: string }>(
    `SELECT id FROM notify_channels WHERE customer_id = $1 AND status = 'active' ORDER BY id FOR UPDATE`,
    [input.customerId],
  );
  if (input.replaces && !existing.rows.some((r) => r.id === input.replaces))
    throw new NotifyError('ERR_NOTIFY_CHANNEL_UNKNOWN', 'no such channel');
  const id = `ch_${randomBytes(12).toString('base64url')}`;
  const masked = maskEmail(address);
  // ON CONFLICT instead of catching a unique violation: a failed statement would abort the
  // caller's transaction on PostgreSQL.
  const inserted = await tx.query<ChannelRow>(
    `INSERT INTO notify_channels (id, customer_id, kind, address_enc, address_hash, address_masked)
     VALUES ($1, $2, 'email', $3, $4, $5)
     ON CONFLICT (customer_id, kind, address_hash) WHERE status = 'active' DO NOTHING
     RETURNING id, kind, address_masked, created_at`,
    [id, input.customerId, sealAddress(kek, id, address), addressHash(kek, 'email', address), masked],
  );
  const row = inserted.rows[0];
  if (!row) throw new NotifyError('ERR_NOTIFY_DUPLICATE', 'this address is already registered');
  // The first contact point (from the institution's records at onboarding) has nobody to warn.
  if (existing.rowCount > 0)
    await enqueueNotification(tx, {
      customerId: input.customerId,
      kind: 'contact_changed',
      data: { field: 'email', change: input.replaces ? 'changed' : 'added' },
      occurredAt: input.occurredAt,
    });
  if (input.replaces)
    await tx.query(`UPDATE notify_channels SET status = 'removed', removed_at = now() WHERE id = $1`, [
      input.replaces,
    ]);
  await recordAudit(tx, {
    ...auditMeta(input),
    type: input.replaces ? NOTIFY_AUDIT.channelReplaced : NOTIFY_AUDIT.channelAdded,
    outcome: 'success',
    customerId: input.customerId,
    data: { channelId: id, kind: 'email', masked, replaces: input.replaces },
  });
  return toSummary(row);
}

export interface RemoveChannelInput extends ChangeMeta {
  customerId: string;
  channelId: string;
  occurredAt?: Date | undefined;
}

/**
 * Removes a channel after queueing the change notice to every active channel, the removed one
 * included. The last active channel cannot be removed (ERR_NOTIFY_LAST_CHANNEL): security notices
 * must reach the customer somewhere.
 */
export async function removeChannel(tx: Queryable, input: RemoveChannelInput): Promise<void> {
  const active = await tx.query<{ id: string; kind: ChannelKind; address_masked: string }>(
    `SELECT id, kind, address_masked FROM notify_channels WHERE customer_id = $1 AND status = 'active'
     ORDER BY id FOR UPDATE`,
    [input.customerId],
  );
  const target = active.rows.find((r) => r.id === input.channelId);
  if (!target) throw new NotifyError('ERR_NOTIFY_CHANNEL_UNKNOWN', 'no such channel');
  if (active.rowCount === 1)
    throw new NotifyError('ERR_NOTIFY_LAST_CHANNEL', 'the last notification channel cannot be removed');
  if (target.kind !== 'push')
    await enqueueNotification(tx, {
      customerId: input.customerId,
      kind: 'contact_changed',
      data: { field: target.kind === 'sms' ? 'phone' : 'email', change: 'removed' },
      occurredAt: input.occurredAt,
    });
  await tx.query(`UPDATE notify_channels SET status = 'removed', removed_at = now() WHERE id = $1`, [
    target.id,
  ]);
  await recordAudit(tx, {
    ...auditMeta(input),
    type: NOTIFY_AUDIT.channelRemoved,
    outcome: 'success',
    customerId: input.customerId,
    data: { channelId: target.id, kind: target.kind, masked: target.address_masked },
  });
}

export interface KindSetting {
  kind: NotificationKind;
  /** Security-critical: always on, the customer cannot switch it off. */
  critical: boolean;
  enabled: boolean;
}

/** What the security page shows and edits. */
export interface NotificationSettings {
  language: Language;
  channels: ChannelSummary[];
  kinds: KindSetting[];
}

export async function getNotificationSettings(
  db: Queryable,
  customerId: string,
): Promise<NotificationSettings> {
  const [settings, prefs, channels] = [
    await db.query<{ language: Language }>('SELECT language FROM notify_settings WHERE customer_id = $1', [
      customerId,
    ]),
    await db.query<{ kind: string; enabled: boolean }>(
      'SELECT kind, enabled FROM notify_preferences WHERE customer_id = $1',
      [customerId],
    ),
    await listChannels(db, customerId),
  ];
  const chosen = new Map(prefs.rows.map((r) => [r.kind, r.enabled]));
  return {
    language: settings.rows[0]?.language ?? 'ja',
    channels,
    kinds: NOTIFICATION_KINDS.map((kind) => {
      const critical = CRITICAL_KINDS.has(kind);
      return { kind, critical, enabled: critical || (chosen.get(kind) ?? true) };
    }),
  };
}

export interface UpdateSettingsInput extends ChangeMeta {
  customerId: string;
  language?: Language | undefined;
  /** Kinds to switch on (true) or off (false); switching a critical kind off is refused. */
  kinds?: Partial<Record<NotificationKind, boolean>> | undefined;
}

/**
 * Changes the language and per-kind choices. Refuses (ERR_NOTIFY_CRITICAL, before writing anything)
 * to switch a security-critical kind off and ERR_NOTIFY_KIND for unknown kinds. What actually
 * changed goes to the audit log; returns the settings afterwards.
 */
export async function updateNotificationSettings(
  tx: Queryable,
  input: UpdateSettingsInput,
): Promise<NotificationSettings> {
  const requested = Object.entries(input.kinds ?? {}) as [string, boolean | undefined][];
  for (const [kind, enabled] of requested) {
    if (!(NOTIFICATION_KINDS as readonly string[]).includes(kind))
      throw new NotifyError('ERR_NOTIFY_KIND', 'unknown notification kind');
    if (enabled === false && CRITICAL_KINDS.has(kind as NotificationKind))
      throw new NotifyError('ERR_NOTIFY_CRITICAL', `security notifications (${kind}) cannot be switched off`);
  }
  if (input.language !== undefined && !LANGUAGES.includes(input.language))
    throw new NotifyError('ERR_NOTIFY_DATA', 'unsupported language');

  const before = await getNotificationSettings(tx, input.customerId);
  const changes: Record<string, { from: unknown; to: unknown }> = {};
  if (input.language !== undefined && input.language !== before.language) {
    await tx.query(
      `INSERT INTO notify_settings (customer_id, language) VALUES ($1, $2)
       ON CONFLICT (customer_id) DO UPDATE SET language = EXCLUDED.language, updated_at = now()`,
      [input.customerId, input.language],
    );
    changes.language = { from: before.language, to: input.language };
  }
  for (const [kind, enabled] of requested) {
    const current = before.kinds.find((k) => k.kind === kind)!;
    if (enabled === undefined || current.critical || current.enabled === enabled) continue;
    await tx.query(
      `INSERT INTO notify_preferences (customer_id, kind, enabled) VALUES ($1, $2, $3)
       ON CONFLICT (customer_id, kind) DO UPDATE SET enabled = EXCLUDED.enabled, updated_at = now()`,
      [input.customerId, kind, enabled],
    );
    changes[kind] = { from: current.enabled, to: enabled };
  }
  if (Object.keys(changes).length === 0) return before;
  await recordAudit(tx, {
    ...auditMeta(input),
    type: NOTIFY_AUDIT.settingsChanged,
    outcome: 'success',
    customerId: input.customerId,
    data: { changes },
  });
  return getNotificationSettings(tx, input.customerId);
}

/** Active customers with at least one active notification channel (management report). */
export async function notificationCoverage(
  db: Queryable,
): Promise<{ customers: number; reachable: number; rate: number }> {
  const res = await db.query<{ customers: number; reachable: number }>(
    `SELECT count(*)::int AS customers,
            count(*) FILTER (WHERE EXISTS (SELECT 1 FROM notify_channels n WHERE n.customer_id = c.id AND n.status = 'active'))::int
              AS reachable
     FROM customers c WHERE c.status <> 'frozen'`,
  );
  const { customers = 0, reachable = 0 } = res.rows[0] ?? {};
  return { customers, reachable, rate: customers ? reachable / customers : 0 };
}
