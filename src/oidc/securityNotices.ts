/**
 * Notifications of security events the sign-in and security pages cause (JSDA IV.1.(2)②): login,
 * new device, passkey added/removed, lock/unlock, consent. A failure to queue one must not fail the
 * customer's action: it is audited instead (and critical kinds without a channel are audited by
 * the notify module itself).
 */
import { recordAudit } from '../audit/index.ts';
import type { Queryable } from '../db/index.ts';
import type { NotificationKind } from '../notify/index.ts';
import { enqueueNotification, type NotificationRequest } from '../notify/index.ts';

export async function notifyCustomer<K extends NotificationKind>(
  db: Queryable,
  request: NotificationRequest<K>,
): Promise<void> {
  try {
    await enqueueNotification(db, request);
  } catch (err) {
    await recordAudit(db, {
      type: 'notify.enqueue_failed',
      outcome: 'failure',
      actor: 'system',
      customerId: request.customerId,
      data: { kind: request.kind, error: (err as Error).message.slice(0, 200) },
    }).catch(() => {});
  }
}

/** "Chrome on Windows": enough for the customer to recognise the device, nothing identifying. */
export function deviceSummary(userAgent: string | undefined): string | undefined {
  if (!userAgent) return undefined;
  const browser = /Edg\//.test(userAgent)
    ? 'Edge'
    : /Firefox\//.test(userAgent)
      ? 'Firefox'
      : /Chrome\//.test(userAgent)
        ? 'Chrome'
        : /Safari\//.test(userAgent)
          ? 'Safari'
          : undefined;
  const os = /Windows/.test(userAgent)
    ? 'Windows'
    : /iPhone|iPad/.test(userAgent)
      ? 'iOS'
      : /Android/.test(userAgent)
        ? 'Android'
        : /Mac OS X/.test(userAgent)
          ? 'macOS'
          : /Linux/.test(userAgent)
            ? 'Linux'
            : undefined;
  if (!browser && !os) return undefined;
  return [browser, os].filter(Boolean).join(' on ');
}
