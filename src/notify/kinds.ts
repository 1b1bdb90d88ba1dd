/**
 * The notifications the hub sends, and the data each one carries. Data is validated when it is
 * queued (a wrong field fails the caller's transaction, not a delivery hours later) and again when
 * it is rendered. Free text is limited to what a customer needs to recognise the event; everything
 * else is an enumerated value the templates turn into fixed wording.
 */
import { z } from 'zod';
import { PRODUCTS } from '../linking/productCatalogue.ts';
import { NotifyError } from './errors.ts';

export const NOTIFICATION_KINDS = [
  'login',
  'new_device',
  'passkey_added',
  'passkey_removed',
  'account_locked',
  'account_unlocked',
  'recovery',
  'contact_changed',
  'consent_granted',
  'consent_revoked',
  'withdrawal_requested',
  'withdrawal_account_changed',
  'limit_changed',
  'security_alert',
  'bank_link',
  'sweep',
  'channel_changed',
  'products_changed',
  'travel_declared',
] as const;

export type NotificationKind = (typeof NOTIFICATION_KINDS)[number];

/**
 * Security-critical kinds reach every active channel whatever the customer chose: they are how a
 * customer learns that someone else took over the account (JSDA IV 1.(2)② and ④).
 */
export const CRITICAL_KINDS: ReadonlySet<NotificationKind> = new Set<NotificationKind>([
  'account_locked',
  'recovery',
  'contact_changed',
  'passkey_added',
  'passkey_removed',
  'withdrawal_account_changed',
  'security_alert',
  'bank_link',
  'channel_changed',
  'products_changed',
  // A declaration quiets the abroad/new-country risk rules for its period: an intruder would use it.
  'travel_declared',
]);

export function isCriticalKind(kind: NotificationKind): boolean {
  return CRITICAL_KINDS.has(kind);
}

export function isNotificationKind(value: unknown): value is NotificationKind {
  return typeof value === 'string' && (NOTIFICATION_KINDS as readonly string[]).includes(value);
}

/**
 * Free text (device, passkey or app names): shown shortened and neutralised, never as given. Cut
 * rather than refused: such text often comes from someone else (a user agent, an app's registered
 * name), and it must not be able to fail the caller's transaction or suppress a notice.
 */
const text = z.string().transform((s) => s.trim().slice(0, 200));
/** Whole yen: a decimal point in a body would read like part of a host name to a strict checker. */
const yen = z.number().int().min(0).max(1e15);
const instant = z.iso.datetime({ offset: true });

const where = {
  /** Authentication method used. */
  method: z.enum(['passkey', 'totp', 'recovery_code']).optional(),
  /** Browser and OS, as derived from the user agent (e.g. "Chrome on Windows"). */
  device: text.optional(),
  /** Coarse location (prefecture or country), never an address or coordinates. */
  location: text.optional(),
};

export const DATA_SCHEMAS = {
  login: z.strictObject(where),
  new_device: z.strictObject(where),
  passkey_added: z.strictObject({
    passkeyName: text.optional(),
    /** Synced (backed up to a cloud account) or bound to one device. */
    synced: z.boolean().optional(),
  }),
  passkey_removed: z.strictObject({ passkeyName: text.optional() }),
  account_locked: z.strictObject({
    reason: z.enum(['failed_attempts', 'operator', 'security']).default('failed_attempts'),
  }),
  account_unlocked: z.strictObject({}),
  recovery: z.strictObject({
    /** How identity was proven again. */
    method: z.enum(['ticket', 'ekyc', 'jpki']).optional(),
  }),
  contact_changed: z.strictObject({
    field: z.enum(['email', 'phone', 'postal_address', 'name']),
    change: z.enum(['added', 'changed', 'removed']).default('changed'),
  }),
  consent_granted: z.strictObject({ clientName: text, expiresAt: instant.optional() }),
  consent_revoked: z.strictObject({
    clientName: text,
    by: z.enum(['customer', 'client', 'operator', 'expiry']).optional(),
  }),
  withdrawal_requested: z.strictObject({
    amount: yen,
    /** Masked destination as the customer knows it, e.g. "かけはし銀行 普通 ****567". */
    destination: text.optional(),
  }),
  withdrawal_account_changed: z.strictObject({
    bankName: text.optional(),
    accountMasked: text.optional(),
    /** Withdrawals to the new account are held until then (cool-off). */
    holdUntil: instant.optional(),
  }),
  limit_changed: z.strictObject({
    limit: z.enum(['withdrawal_daily', 'sweep_daily', 'order_daily']),
    from: yen.optional(),
    to: yen,
    /** A raise waits for its cool-off: the new limit applies from then. */
    effectiveAt: instant.optional(),
  }),
  security_alert: z.strictObject({
    reason: z.enum(['risk_block', 'peer_signal', 'credential_compromise', 'suspicious_activity']),
    /** What the hub already did about it. */
    action: z.enum(['none', 'login_blocked', 'sessions_ended', 'account_frozen']).default('none'),
  }),
  /** A bank account was linked for sweeps, unlinked, suspended, resumed, or a link was refused (src/linking). */
  bank_link: z.strictObject({
    event: z.enum(['linked', 'unlinked', 'suspended', 'resumed', 'refused']),
    bankName: text,
    accountMasked: text.optional(),
    /** Daily sweep cap of the link. */
    capAmount: yen.optional(),
    /** The bank authenticates with one-time codes: the reduced cap and its reason are explained. */
    reducedCap: z.boolean().optional(),
    /** Why a link was refused. */
    reason: z.enum(['bank_strength', 'name_mismatch', 'frozen', 'bank_error', 'policy']).optional(),
  }),
  /** A sweep (money pulled from a linked bank account at a purchase) was decided (src/linking). */
  sweep: z.strictObject({
    outcome: z.enum(['allowed', 'refused', 'needs_bank_approval']),
    amount: yen,
    bankName: text,
    accountMasked: text.optional(),
  }),
  /** A channel (third-party access, withdrawals, sweeps) was switched off, or will be on from effectiveAt. */
  channel_changed: z.strictObject({
    channel: z.enum(['aggregator_access', 'withdrawals', 'sweeps']),
    enabled: z.boolean(),
    effectiveAt: instant.optional(),
  }),
  /** A product was blocked for trading, or will be allowed from effectiveAt (src/linking/products.ts). */
  products_changed: z.strictObject({
    product: z.enum(PRODUCTS),
    allowed: z.boolean(),
    effectiveAt: instant.optional(),
  }),
  /** Travel was declared on the security page: sign-ins from that country in that period are expected. */
  travel_declared: z.strictObject({
    /** ISO 3166-1 alpha-2. */
    country: z.string().regex(/^[A-Z]{2}$/),
    /** First and last day of the trip (Japan time). */
    from: z.iso.date(),
    to: z.iso.date(),
  }),
} satisfies Record<NotificationKind, z.ZodType>;

/** What a caller passes for each kind. */
export type NotificationData<K extends NotificationKind> = z.input<(typeof DATA_SCHEMAS)[K]>;
/** The validated form templates receive. */
export type ParsedNotificationData<K extends NotificationKind> = z.output<(typeof DATA_SCHEMAS)[K]>;

export function parseNotificationData<K extends NotificationKind>(
  kind: K,
  data: unknown,
): ParsedNotificationData<K> {
  if (!isNotificationKind(kind)) throw new NotifyError('ERR_NOTIFY_KIND', 'unknown notification kind');
  const parsed = DATA_SCHEMAS[kind].safeParse(data ?? {});
  if (!parsed.success) {
    // Field paths only: the values may be personal data.
    const fields = parsed.error.issues.map((i) => i.path.join('.') || '(root)').join(', ');
    throw new NotifyError('ERR_NOTIFY_DATA', `invalid data for notification ${kind}: ${fields}`);
  }
  return parsed.data as ParsedNotificationData<K>;
}
