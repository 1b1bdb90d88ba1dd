/**
 * emitSecurityEvent: the hub's own security events become SSF events. The call only inserts a row
 * (in the caller's transaction when given one), so the event exists exactly when what caused it
 * was committed; the fan-out worker later signs one SET per receiving stream. Wakes this process's
 * worker, so delivery starts without waiting for its next poll.
 */
import { randomUUID } from 'node:crypto';
import type { Queryable } from '../db/index.ts';
import type { LocalizedText, SecurityEventInput } from './types.ts';
import { EVENT } from './vocabulary.ts';

type Listener = () => void;
const listeners = new Set<Listener>();

/** Called (in-process) whenever an event was queued; the worker subscribes. */
export function onSignalsQueued(listener: Listener): () => void {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

/** Wakes this node's workers; call it once the events are committed (Queryable.afterCommit). */
export function wakeSignals(): void {
  if (listeners.size)
    setImmediate(() => {
      for (const l of listeners) l();
    });
}

const localized = (v: string | LocalizedText | undefined): LocalizedText | undefined =>
  v === undefined ? undefined : typeof v === 'string' ? { en: v } : v;

const REASON_ADMIN: Partial<Record<SecurityEventInput['type'], string>> = {
  'credential-change': 'Credential changed at the hub',
  'session-revoked': 'Sessions revoked at the hub',
};

/** The event type URI and its event object (everything but the subject) for one input. */
export function eventClaims(input: SecurityEventInput): { type: string; claims: Record<string, unknown> } {
  const ts = Math.floor((input.occurredAt?.getTime() ?? Date.now()) / 1000);
  // CAEP's optional claims (event_timestamp, initiating_entity, reason_admin, reason_user).
  const caep = (extra: Record<string, unknown>): Record<string, unknown> => {
    const reasonAdmin =
      localized(input.reasonAdmin) ??
      (REASON_ADMIN[input.type] ? { en: REASON_ADMIN[input.type]! } : undefined);
    return strip({
      ...extra,
      initiating_entity: input.initiatingEntity,
      reason_admin: reasonAdmin,
      reason_user: localized(input.reasonUser),
      event_timestamp: ts,
    });
  };
  switch (input.type) {
    case 'credential-change':
      return {
        type: EVENT.credentialChange,
        claims: caep({
          credential_type: input.credentialType,
          change_type: input.changeType,
          friendly_name: input.friendlyName,
          fido2_aaguid: input.fido2Aaguid,
        }),
      };
    case 'session-revoked':
      return { type: EVENT.sessionRevoked, claims: caep({}) };
    case 'assurance-level-change':
      return {
        type: EVENT.assuranceLevelChange,
        claims: caep({
          namespace: input.namespace,
          current_level: input.currentLevel,
          previous_level: input.previousLevel,
          change_direction: input.changeDirection,
        }),
      };
    case 'risk-level-change':
      return {
        type: EVENT.riskLevelChange,
        claims: caep({
          principal: input.principal ?? 'USER',
          current_level: input.currentLevel,
          previous_level: input.previousLevel,
          risk_reason: input.riskReason,
        }),
      };
    case 'account-disabled':
      return { type: EVENT.accountDisabled, claims: strip({ reason: input.reason }) };
    case 'account-enabled':
      return { type: EVENT.accountEnabled, claims: {} };
    case 'credential-compromise':
      return {
        type: EVENT.credentialCompromise,
        claims: strip({
          credential_type: input.credentialType,
          event_timestamp: ts,
          reason_admin: localized(input.reasonAdmin),
          reason_user: localized(input.reasonUser),
        }),
      };
    case 'account-credential-change-required':
      return { type: EVENT.accountCredentialChangeRequired, claims: {} };
    case 'recovery-activated':
      return { type: EVENT.recoveryActivated, claims: {} };
    case 'identifier-changed':
      return { type: EVENT.identifierChanged, claims: strip({ 'new-value': input.newValue }) };
  }
}

function strip(o: Record<string, unknown>): Record<string, unknown> {
  for (const k of Object.keys(o)) if (o[k] === undefined) delete o[k];
  return o;
}

export interface EmittedEvent {
  eventId: string;
  txn: string;
}

/**
 * Queues a security event about a customer for every peer linked to the customer. Pass the
 * transaction that records the cause (e.g. the passkey insert) so both commit or neither does.
 */
export async function emitSecurityEvent(db: Queryable, input: SecurityEventInput): Promise<EmittedEvent> {
  const { type, claims } = eventClaims(input);
  const txn = input.txn ?? randomUUID();
  // identifier-changed names the old identifier itself; fan-out sends it only where it was shared.
  const payload =
    input.type === 'identifier-changed'
      ? { claims, subject: { format: input.format, [input.format]: input.oldValue } }
      : { claims };
  const res = await db.query<{ id: string }>(
    `WITH t AS (INSERT INTO ssf_txns (txn) VALUES ($1) ON CONFLICT DO NOTHING)
     INSERT INTO ssf_events (txn, event_type, customer_id, payload, occurred_at)
     VALUES ($1, $2, $3, $4::jsonb, COALESCE($5::timestamptz, now())) RETURNING id::text AS id`,
    [txn, type, input.customerId, JSON.stringify(payload), input.occurredAt?.toISOString() ?? null],
  );
  db.afterCommit(wakeSignals);
  return { eventId: res.rows[0]!.id, txn };
}

/** Queues a stream event (verification, stream-updated) for one stream only. */
export async function emitStreamEvent(
  db: Queryable,
  streamId: string,
  type: typeof EVENT.verification | typeof EVENT.streamUpdated,
  claims: Record<string, unknown>,
): Promise<void> {
  await db.query(
    `INSERT INTO ssf_events (txn, event_type, stream_id, payload) VALUES ($1, $2, $3, $4::jsonb)`,
    [randomUUID(), type, streamId, JSON.stringify({ claims })],
  );
  db.afterCommit(wakeSignals);
}
