/**
 * Four eyes on the console actions that hand out a way into a customer's account. One operator
 * could otherwise issue an enrollment ticket for any customer, read it off the page and enroll a
 * passkey of their own; and an MFA exemption lowers how a customer signs in. So:
 *
 * - an enrollment ticket for a customer who already holds a credential (any passkey, disabled ones
 *   included, or a confirmed authenticator app) — a recovery, not an onboarding — and every MFA
 *   exemption are *requested* by an operator, with a reason;
 * - a different operator with the admin role approves (the action is then carried out, and a ticket
 *   shown to the approver alone) or rejects it, within REQUEST_TTL_SECONDS;
 * - each step is audited with both names. A first ticket for a customer with no credential at all
 *   stays a one-person action (onboarding), as does ending an exemption (it protects).
 *
 * Deciding is one conditional UPDATE: of two admins approving at once exactly one carries it out.
 */
import { randomBytes } from 'node:crypto';
import { recordAudit } from '../audit/index.ts';
import type { Queryable } from '../db/index.ts';
import { ConsoleError } from './errors.ts';

export type RequestKind = 'enrollment_ticket' | 'exemption_grant';

export const REQUEST_TTL_SECONDS = 24 * 3600;

export interface ConsoleRequest {
  id: string;
  kind: RequestKind;
  customerId: string;
  customerNumber: string;
  reason: string;
  requestedBy: string;
  requestedAt: Date;
  expiresAt: Date;
}

interface RequestRow {
  id: string;
  kind: RequestKind;
  customer_id: string;
  customer_number: string;
  reason: string;
  requested_by: string;
  requested_at: Date;
  expires_at: Date;
}

const toRequest = (r: RequestRow): ConsoleRequest => ({
  id: r.id,
  kind: r.kind,
  customerId: r.customer_id,
  customerNumber: r.customer_number,
  reason: r.reason,
  requestedBy: r.requested_by,
  requestedAt: new Date(r.requested_at),
  expiresAt: new Date(r.expires_at),
});

/** Whether the customer already holds a credential (then a new ticket is a recovery: four eyes). */
export async function holdsCredential(db: Queryable, customerId: string): Promise<boolean> {
  const r = await db.query<{ holds: boolean }>(
    `SELECT EXISTS (SELECT 1 FROM passkeys WHERE customer_id = $1)
         OR EXISTS (SELECT 1 FROM totp_credentials WHERE customer_id = $1 AND confirmed_at IS NOT NULL) AS holds`,
    [customerId],
  );
  return r.rows[0]?.holds === true;
}

/** Files a request (one open per customer and kind; an expired one is closed first). */
export async function fileRequest(
  db: Queryable,
  input: { kind: RequestKind; customerId: string; reason: string; requestedBy: string },
): Promise<{ id: string; created: boolean }> {
  const reason = input.reason.trim();
  if (reason.length < 5 || reason.length > 500) throw new ConsoleError('ERR_REASON_REQUIRED');
  await db.query(
    `UPDATE console_requests SET status = 'expired'
     WHERE customer_id = $1 AND kind = $2 AND status = 'pending' AND expires_at <= now()`,
    [input.customerId, input.kind],
  );
  const id = `creq_${randomBytes(12).toString('hex')}`;
  const r = await db.query<{ id: string }>(
    `INSERT INTO console_requests (id, kind, customer_id, reason, requested_by, expires_at)
     VALUES ($1, $2, $3, $4, $5, now() + make_interval(secs => $6))
     ON CONFLICT (customer_id, kind) WHERE status = 'pending' DO NOTHING RETURNING id`,
    [id, input.kind, input.customerId, reason, input.requestedBy, REQUEST_TTL_SECONDS],
  );
  if (!r.rows[0]) {
    const open = await db.query<{ id: string }>(
      "SELECT id FROM console_requests WHERE customer_id = $1 AND kind = $2 AND status = 'pending'",
      [input.customerId, input.kind],
    );
    return { id: open.rows[0]!.id, created: false };
  }
  await recordAudit(db, {
    type: 'console.request.filed',
    outcome: 'info',
    actor: input.requestedBy,
    customerId: input.customerId,
    data: { requestId: id, kind: input.kind, reason },
  });
  return { id, created: true };
}

/** Open requests, oldest first (all customers, or one). */
export async function pendingRequests(db: Queryable, customerId?: string): Promise<ConsoleRequest[]> {
  const r = await db.query<RequestRow>(
    `SELECT q.id, q.kind, q.customer_id, c.customer_number, q.reason, q.requested_by, q.requested_at, q.expires_at
     FROM console_requests q JOIN customers c ON c.id = q.customer_id
     WHERE q.status = 'pending' AND q.expires_at > now() AND ($1::text IS NULL OR q.customer_id = $1)
     ORDER BY q.requested_at, q.id LIMIT 200`,
    [customerId ?? null],
  );
  return r.rows.map(toRequest);
}

/**
 * Decides an open, unexpired request as `decidedBy` (an admin other than the requester). Resolves
 * with the request when this call decided it; ERR_REQUEST_UNKNOWN when it is not open (decided,
 * expired, unknown), ERR_REQUEST_OWN when the decider filed it.
 */
export async function decideRequest(
  db: Queryable,
  input: { id: string; approve: boolean; decidedBy: string },
): Promise<ConsoleRequest> {
  const r = await db.query<RequestRow>(
    `UPDATE console_requests q SET status = $2, decided_by = $3, decided_at = now()
     FROM customers c
     WHERE q.id = $1 AND c.id = q.customer_id AND q.status = 'pending' AND q.expires_at > now()
       AND q.requested_by <> $3
     RETURNING q.id, q.kind, q.customer_id, c.customer_number, q.reason, q.requested_by, q.requested_at, q.expires_at`,
    [input.id, input.approve ? 'approved' : 'rejected', input.decidedBy],
  );
  const row = r.rows[0];
  if (!row) {
    const own = await db.query(
      "SELECT 1 FROM console_requests WHERE id = $1 AND status = 'pending' AND expires_at > now() AND requested_by = $2",
      [input.id, input.decidedBy],
    );
    throw new ConsoleError(own.rowCount ? 'ERR_REQUEST_OWN' : 'ERR_REQUEST_UNKNOWN');
  }
  const request = toRequest(row);
  await recordAudit(db, {
    type: input.approve ? 'console.request.approved' : 'console.request.rejected',
    outcome: 'info',
    actor: input.decidedBy,
    customerId: request.customerId,
    data: {
      requestId: request.id,
      kind: request.kind,
      requestedBy: request.requestedBy,
      reason: request.reason,
    },
  });
  return request;
}
