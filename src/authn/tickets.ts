/**
 * One-time enrollment tickets: issued by an operator after KYC, delivered out of band, redeemed
 * once to enroll the customer's first passkey. Only a SHA-256 of the secret is stored: the secret
 * carries 100 random bits, so a fast hash is enough (nothing to brute-force offline).
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { recordAudit } from '../audit/index.ts';
import type { Queryable } from '../db/index.ts';
import { AUTHN_AUDIT, type AuthnContext, type RequestMeta } from './context.ts';
import { AuthnError } from './errors.ts';

/** Crockford base32: no I, L, O, U, so nothing is mistaken for 1, 0 or a word. */
const ALPHABET = '0123456789ABCDEFGHJKMNPQRSTVWXYZ';
const SECRET_LENGTH = 20; // 20 × 5 bits = 100 bits
const PREFIX = 'KKH';

export const VOID_REASON = {
  superseded: 'superseded by a newer ticket',
  tooManyFailures: 'too many failed attempts',
} as const;

function generateSecret(): string {
  // 32 divides 256, so the low 5 bits of each random byte are uniform.
  return Array.from(randomBytes(SECRET_LENGTH), (b) => ALPHABET[b & 31]).join('');
}

function formatTicket(secret: string): string {
  return `${PREFIX}-${secret.match(/.{5}/g)!.join('-')}`;
}

/**
 * The canonical secret (20 upper-case Crockford characters, no prefix) or undefined when the input
 * cannot be a ticket. Accepts any case, spaces and dashes (also full-width ones, via NFKC), with or
 * without the KKH prefix, and the Crockford look-alikes I/L for 1 and O for 0.
 */
export function normalizeTicket(input: string): string | undefined {
  if (typeof input !== 'string' || input.length > 100) return undefined;
  let s = input
    .normalize('NFKC')
    .toUpperCase()
    .replace(/[\s\-_‐‑‒–—―−ー]/g, '');
  if (s.length === PREFIX.length + SECRET_LENGTH && s.startsWith(PREFIX)) s = s.slice(PREFIX.length);
  s = s.replace(/[IL]/g, '1').replace(/O/g, '0');
  return /^[0-9A-HJKMNP-TV-Z]{20}$/.test(s) ? s : undefined;
}

function hashSecret(secret: string): Buffer {
  return createHash('sha256').update(secret).digest();
}

function normalizeCustomerNumber(input: string): string {
  return typeof input === 'string' ? input.normalize('NFKC').trim().slice(0, 64) : '';
}

function auditMeta(meta: RequestMeta | undefined) {
  return { ip: meta?.ip, port: meta?.port, userAgent: meta?.userAgent, interactionId: meta?.interactionId };
}

/**
 * Issues a customer's one-time enrollment ticket; a refusal (AuthnError) is audited. `within`: the
 * caller's transaction, so that what authorised the issuance (a console approval) commits with the
 * ticket or not at all — the caller then audits a refusal with auditTicketRefusal after its rollback
 * (a record written inside would be rolled back with it).
 */
export async function issueEnrollmentTicket(
  ctx: AuthnContext,
  input: { customerId: string; issuedBy: string },
  meta?: RequestMeta,
  options: { within?: Queryable } = {},
): Promise<{ ticket: string; ticketId: string; expiresAt: Date }> {
  const secret = generateSecret();
  const ticketId = `etk_${randomBytes(16).toString('base64url')}`;
  const actor = `operator:${input.issuedBy}`;
  const inTransaction = <T>(fn: (tx: Queryable) => Promise<T>) =>
    options.within ? fn(options.within) : ctx.db.transaction(fn);
  try {
    return await inTransaction(async (tx) => {
      // Row lock: issuance and a concurrent lock-out of the same customer take turns.
      const customer = await tx.query<{ status: string }>(
        'SELECT status FROM customers WHERE id = $1 FOR NO KEY UPDATE',
        [input.customerId],
      );
      const status = customer.rows[0]?.status;
      if (!status) throw new AuthnError('ERR_CUSTOMER_UNKNOWN');
      if (status !== 'active') throw new AuthnError('ERR_CUSTOMER_INACTIVE');
      // One open ticket per customer: older letters stop working. A new ticket also lifts a lock-out.
      const superseded = await tx.query(
        `UPDATE enrollment_tickets SET voided_at = now(), void_reason = $2
         WHERE customer_id = $1 AND used_at IS NULL AND voided_at IS NULL AND expires_at > now()`,
        [input.customerId, VOID_REASON.superseded],
      );
      await tx.query('DELETE FROM enrollment_failures WHERE customer_id = $1', [input.customerId]);
      const inserted = await tx.query<{ expires_at: Date }>(
        `INSERT INTO enrollment_tickets (id, customer_id, secret_hash, issued_by, expires_at)
         VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5)) RETURNING expires_at`,
        [
          ticketId,
          input.customerId,
          hashSecret(secret).toString('hex'),
          input.issuedBy,
          ctx.ticketTtlSeconds,
        ],
      );
      const expiresAt = new Date(inserted.rows[0]!.expires_at);
      await recordAudit(tx, {
        type: AUTHN_AUDIT.ticketIssued,
        outcome: 'success',
        actor,
        customerId: input.customerId,
        ...auditMeta(meta),
        data: { ticketId, expiresAt: expiresAt.toISOString(), supersededTickets: superseded.rowCount },
      });
      return { ticket: formatTicket(secret), ticketId, expiresAt };
    });
  } catch (err) {
    if (err instanceof AuthnError && !options.within) await auditTicketRefusal(ctx.db, input, err, meta);
    throw err;
  }
}

/** The audit record of a refused ticket issuance. */
export async function auditTicketRefusal(
  db: Queryable,
  input: { customerId: string; issuedBy: string },
  err: AuthnError,
  meta?: RequestMeta,
): Promise<void> {
  await recordAudit(db, {
    type: AUTHN_AUDIT.ticketIssued,
    outcome: 'failure',
    actor: `operator:${input.issuedBy}`,
    customerId: err.code === 'ERR_CUSTOMER_UNKNOWN' ? undefined : input.customerId,
    ...auditMeta(meta),
    data: { reason: err.code, requestedCustomerId: input.customerId },
  });
}

interface CandidateRow {
  customer_id: string;
  status: string;
  failed_attempts: number;
  ticket_id: string | null;
  secret_hash: string | null;
  used: boolean | null;
  voided: boolean | null;
  expired: boolean | null;
}

/**
 * Checks a customer number and ticket without consuming the ticket; wrong tickets count against
 * the customer. `institutionId` scopes the customer number (it is unique per institution); without
 * it the number is looked up across all institutions, the ticket decides which customer is meant,
 * and a wrong ticket counts against every customer bearing that number.
 * An unknown customer number gives the same ERR_TICKET_INVALID as a wrong ticket.
 */
export async function checkEnrollmentTicket(
  ctx: AuthnContext,
  input: { customerNumber: string; ticket: string; institutionId?: string | undefined },
  meta?: RequestMeta,
): Promise<{ customerId: string; ticketId: string }> {
  const reject = async (
    code: AuthnError['code'],
    customerId: string | undefined,
    data: Record<string, unknown>,
  ) => {
    await recordAudit(ctx.db, {
      type: AUTHN_AUDIT.ticketRejected,
      outcome: 'failure',
      customerId,
      ...auditMeta(meta),
      data: { reason: code, ...data },
    });
    return new AuthnError(code);
  };
  const customerNumber = normalizeCustomerNumber(input.customerNumber);
  const secret = normalizeTicket(input.ticket);
  // A malformed input cannot be anyone's ticket: not counted as a guess, says nothing about the customer.
  if (!secret) throw await reject('ERR_TICKET_MALFORMED', undefined, { customerNumber });

  const { rows } = await ctx.db.query<CandidateRow>(
    `SELECT c.id AS customer_id, c.status, COALESCE(f.failed_attempts, 0) AS failed_attempts,
            t.id AS ticket_id, t.secret_hash, t.used_at IS NOT NULL AS used, t.voided_at IS NOT NULL AS voided,
            t.expires_at <= now() AS expired
     FROM customers c
     LEFT JOIN enrollment_failures f ON f.customer_id = c.id
     LEFT JOIN enrollment_tickets t ON t.customer_id = c.id
     WHERE c.customer_number = $1 AND ($2::text IS NULL OR c.institution_id = $2)`,
    [customerNumber, input.institutionId ?? null],
  );
  if (rows.length === 0)
    throw await reject('ERR_TICKET_INVALID', undefined, { customerNumber, cause: 'customer_unknown' });

  const presented = hashSecret(secret);
  let match: CandidateRow | undefined;
  for (const row of rows) {
    if (!row.secret_hash) continue;
    const stored = Buffer.from(row.secret_hash, 'hex');
    if (stored.length === presented.length && timingSafeEqual(stored, presented)) match = row;
  }

  if (match) {
    const ticketId = match.ticket_id!;
    const customerId = match.customer_id;
    // Past the limit even the right ticket fails (it was voided) until an operator issues a new one.
    if (match.failed_attempts >= ctx.maxFailedAttempts)
      throw await reject('ERR_TICKET_LOCKED', customerId, { ticketId });
    if (match.used) throw await reject('ERR_TICKET_USED', customerId, { ticketId });
    if (match.voided) throw await reject('ERR_TICKET_VOIDED', customerId, { ticketId });
    if (match.expired) throw await reject('ERR_TICKET_EXPIRED', customerId, { ticketId });
    if (match.status !== 'active') throw await reject('ERR_CUSTOMER_INACTIVE', customerId, { ticketId });
    if (match.failed_attempts > 0)
      await ctx.db.query('DELETE FROM enrollment_failures WHERE customer_id = $1', [customerId]);
    await recordAudit(ctx.db, {
      type: AUTHN_AUDIT.ticketAccepted,
      outcome: 'success',
      actor: `customer:${customerId}`,
      customerId,
      ...auditMeta(meta),
      data: { ticketId },
    });
    return { customerId, ticketId };
  }

  // A wrong ticket: one more failure for each customer bearing this number.
  const candidates = new Map(rows.map((r) => [r.customer_id, r.failed_attempts]));
  let locked = 0;
  for (const [customerId, failedBefore] of candidates) {
    if (failedBefore >= ctx.maxFailedAttempts) {
      locked++;
      await reject('ERR_TICKET_LOCKED', customerId, { customerNumber });
      continue;
    }
    const { failedAttempts, voided } = await countFailure(ctx.db, customerId, ctx.maxFailedAttempts);
    if (failedAttempts >= ctx.maxFailedAttempts) {
      locked++;
      await recordAudit(ctx.db, {
        type: AUTHN_AUDIT.ticketLocked,
        outcome: 'failure',
        customerId,
        ...auditMeta(meta),
        data: { failedAttempts, voidedTickets: voided, reason: VOID_REASON.tooManyFailures },
      });
    } else {
      await reject('ERR_TICKET_INVALID', customerId, { customerNumber, failedAttempts });
    }
  }
  throw new AuthnError(locked === candidates.size ? 'ERR_TICKET_LOCKED' : 'ERR_TICKET_INVALID');
}

/**
 * Counts one failure and, when that reaches the limit, voids every open ticket of the customer —
 * in one statement, so concurrent guesses cannot slip past the limit.
 */
async function countFailure(
  db: Queryable,
  customerId: string,
  max: number,
): Promise<{ failedAttempts: number; voided: number }> {
  const res = await db.query<{ failed_attempts: number; voided: number }>(
    `WITH f AS (
       INSERT INTO enrollment_failures (customer_id, failed_attempts, last_failed_at) VALUES ($1, 1, now())
       ON CONFLICT (customer_id) DO UPDATE
         SET failed_attempts = enrollment_failures.failed_attempts + 1, last_failed_at = now()
       RETURNING failed_attempts
     ), v AS (
       UPDATE enrollment_tickets SET voided_at = now(), void_reason = $3
       WHERE customer_id = $1 AND used_at IS NULL AND voided_at IS NULL AND (SELECT failed_attempts FROM f) >= $2
       RETURNING id
     )
     SELECT (SELECT failed_attempts FROM f) AS failed_attempts, (SELECT count(*) FROM v)::int AS voided`,
    [customerId, max, VOID_REASON.tooManyFailures],
  );
  const row = res.rows[0]!;
  return { failedAttempts: Number(row.failed_attempts), voided: Number(row.voided) };
}
