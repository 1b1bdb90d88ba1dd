/**
 * Running a proofing method: flows in proofing_flows (bound to one OIDC interaction, so to one
 * browser; answered once; expiring), one proofing_records row per answer, verified or refused,
 * and the audit log. A verified flow for enrollment or recovery carries a one-time enrollment
 * ticket nobody ever sees (or the customer's own, for the ticket method) which the passkey
 * registration consumes — the same guarantee as an operator's ticket: one passkey per proof.
 */
import { createHash, randomBytes } from 'node:crypto';
import { recordAudit } from '../audit/index.ts';
import type { RequestMeta } from '../authn/index.ts';
import type { Db, Queryable } from '../db/index.ts';
import { ProofingError } from './errors.ts';
import type {
  ProofingCustomer,
  ProofingFlow,
  ProofingMethod,
  ProofingMethodName,
  ProofingPurpose,
} from './method.ts';

export const PROOFING_AUDIT = {
  started: 'proofing.started',
  verified: 'proofing.verified',
  refused: 'proofing.refused',
  recovery: 'proofing.recovery.completed',
} as const;

/** How long the internal ticket of a verified flow lets the customer register their passkey. */
const PROOFED_TICKET_SECONDS = 900;

export function auditMeta(meta: RequestMeta | undefined) {
  return { ip: meta?.ip, port: meta?.port, userAgent: meta?.userAgent, interactionId: meta?.interactionId };
}

interface CustomerRow {
  id: string;
  name_kanji: string;
  name_kana: string;
  birth_date: string | null;
}

function toCustomer(r: CustomerRow | undefined): ProofingCustomer | null {
  return r ? { id: r.id, nameKanji: r.name_kanji, nameKana: r.name_kana, birthDate: r.birth_date } : null;
}

/**
 * The active customer bearing this customer number, or null (unknown, inactive, or the number
 * is ambiguous across institutions). The caller never tells the customer which.
 */
export async function customerByNumber(
  db: Queryable,
  customerNumber: string,
  purpose?: ProofingPurpose,
): Promise<ProofingCustomer | null> {
  const number = customerNumber.normalize('NFKC').trim().slice(0, 64);
  if (!number) return null;
  // A frozen customer may re-proof to unlock: the verified record is what lets an operator lift
  // the freeze (src/console, JSDA IV.6.(2)); it does not lift the freeze by itself.
  const { rows } = await db.query<CustomerRow>(
    `SELECT id, name_kanji, name_kana, birth_date::text AS birth_date FROM customers
     WHERE customer_number = $1 AND (status = 'active' OR (status = 'frozen' AND $2))`,
    [number, purpose === 'unlock'],
  );
  return rows.length === 1 ? toCustomer(rows[0]) : null;
}

export async function beginProofing<Start>(
  db: Db,
  method: ProofingMethod<Start, unknown>,
  input: { purpose: ProofingPurpose; interactionId: string; customer: ProofingCustomer | null },
  meta?: RequestMeta,
): Promise<{ flowId: string; expiresAt: Date; reply: Start }> {
  const flowId = `prf_${randomBytes(24).toString('base64url')}`;
  const { secret, reply } = await method.begin({
    id: flowId,
    method: method.name,
    purpose: input.purpose,
    interactionId: input.interactionId,
    customer: input.customer,
  });
  const res = await db.query<{ expires_at: Date }>(
    `INSERT INTO proofing_flows (id, method, purpose, interaction_id, customer_id, secret, expires_at)
     VALUES ($1, $2, $3, $4, $5, $6::jsonb, now() + make_interval(secs => $7)) RETURNING expires_at`,
    [
      flowId,
      method.name,
      input.purpose,
      input.interactionId,
      input.customer?.id ?? null,
      JSON.stringify(secret),
      method.ttlSeconds,
    ],
  );
  await recordAudit(db, {
    type: PROOFING_AUDIT.started,
    outcome: 'info',
    customerId: input.customer?.id,
    ...auditMeta(meta),
    data: { flowId, method: method.name, purpose: input.purpose },
  });
  return { flowId, expiresAt: new Date(res.rows[0]!.expires_at), reply };
}

interface FlowRow {
  id: string;
  method: ProofingMethodName;
  purpose: ProofingPurpose;
  interaction_id: string;
  customer_id: string | null;
  secret: Record<string, unknown>;
  expires_at: Date;
  name_kanji: string | null;
  name_kana: string | null;
  birth_date: string | null;
}

export interface ProofingResult {
  flowId: string;
  proofingId: string;
  customerId: string;
  purpose: ProofingPurpose;
  method: ProofingMethodName;
}

/** Spends an open flow of this method and interaction (one answer per flow): the flow, or undefined. */
async function spendFlow(
  db: Db,
  input: { flowId: string; method: ProofingMethodName; interactionId: string },
): Promise<ProofingFlow | undefined> {
  const { rows } = await db.query<FlowRow>(
    `WITH f AS (
       UPDATE proofing_flows SET answered_at = now(), secret = '{}'::jsonb
       WHERE id = $1 AND method = $2 AND interaction_id = $3
         AND answered_at IS NULL AND expires_at > now()
       RETURNING id, method, purpose, interaction_id, customer_id, expires_at,
                 (SELECT secret FROM proofing_flows WHERE id = $1) AS secret)
     SELECT f.*, c.name_kanji, c.name_kana, c.birth_date::text AS birth_date
     FROM f LEFT JOIN customers c ON c.id = f.customer_id`,
    [input.flowId, input.method, input.interactionId],
  );
  const row = rows[0];
  if (!row) return undefined;
  return {
    id: row.id,
    method: row.method,
    purpose: row.purpose,
    interactionId: row.interaction_id,
    customer: row.customer_id
      ? toCustomer({
          id: row.customer_id,
          name_kanji: row.name_kanji ?? '',
          name_kana: row.name_kana ?? '',
          birth_date: row.birth_date,
        })
      : null,
    secret: row.secret ?? {},
    expiresAt: new Date(row.expires_at),
  };
}

/** The refused record and audit event of a spent flow. */
async function recordRefusal(db: Db, flow: ProofingFlow, err: ProofingError, meta: RequestMeta | undefined) {
  const proofingId = `prr_${randomBytes(16).toString('base64url')}`;
  const flowMeta = { ...meta, interactionId: flow.interactionId };
  await db.transaction(async (tx) => {
    await insertRecord(tx, {
      id: proofingId,
      customerId: flow.customer?.id ?? null,
      method: flow.method,
      purpose: flow.purpose,
      interactionId: flow.interactionId,
      result: 'refused',
      reason: err.reason.slice(0, 200),
      evidence: err.evidence,
    });
    await recordAudit(tx, {
      type: PROOFING_AUDIT.refused,
      outcome: 'failure',
      customerId: flow.customer?.id,
      ...auditMeta(flowMeta),
      data: { proofingId, flowId: flow.id, method: flow.method, purpose: flow.purpose, reason: err.code },
    });
  });
}

/**
 * Answers a flow: spends it (one answer per flow, valid or not), lets the method verify, and
 * records the outcome. Only the interaction that started the flow may answer it: `interactionId`
 * is the one the browser's interaction cookie names, so a proof made in another browser (an
 * eKYC provider URL sent to someone else) never completes a flow here.
 */
export async function completeProofing<Answer>(
  db: Db,
  method: ProofingMethod<unknown, Answer>,
  input: { flowId: string; interactionId: string; answer: Answer },
  meta?: RequestMeta,
): Promise<ProofingResult> {
  const flow = await spendFlow(db, { ...input, method: method.name });
  if (!flow) throw new ProofingError('ERR_PROOFING_FLOW');
  const common = { method: method.name, purpose: flow.purpose, interactionId: flow.interactionId };
  const flowMeta = { ...meta, interactionId: flow.interactionId };
  try {
    const verified = await method.verify(flow, input.answer, flowMeta);
    if (flow.customer && verified.customerId !== flow.customer.id)
      throw new ProofingError('ERR_PROOFING_MISMATCH', { reason: 'other_customer' });
    const proofingId = `prr_${randomBytes(16).toString('base64url')}`;
    await db.transaction(async (tx) => {
      await insertRecord(tx, {
        id: proofingId,
        customerId: verified.customerId,
        ...common,
        result: 'verified',
        reason: null,
        evidence: verified.evidence,
      });
      const ticketId =
        verified.ticketId ??
        (flow.purpose === 'unlock' ? null : await mintTicket(tx, verified.customerId, method.name));
      await tx.query(
        'UPDATE proofing_flows SET proofing_id = $2, ticket_id = $3, customer_id = $4 WHERE id = $1',
        [flow.id, proofingId, ticketId, verified.customerId],
      );
      await recordAudit(tx, {
        type: PROOFING_AUDIT.verified,
        outcome: 'success',
        actor: `customer:${verified.customerId}`,
        customerId: verified.customerId,
        ...auditMeta(flowMeta),
        data: { proofingId, flowId: flow.id, method: method.name, purpose: flow.purpose },
      });
    });
    return {
      flowId: flow.id,
      proofingId,
      customerId: verified.customerId,
      purpose: flow.purpose,
      method: method.name,
    };
  } catch (err) {
    if (!(err instanceof ProofingError)) throw err;
    await recordRefusal(db, flow, err, meta);
    throw err;
  }
}

/**
 * Spends an open flow without letting anyone answer it, recorded as refused with `err` — e.g. an
 * eKYC provider's answer that arrived in a browser without the flow's interaction: whoever holds
 * that answer (the URL) can no longer use it. False when there was no such open flow.
 */
export async function refuseProofing(
  db: Db,
  input: { flowId: string; method: ProofingMethodName; interactionId: string },
  err: ProofingError,
  meta?: RequestMeta,
): Promise<boolean> {
  const flow = await spendFlow(db, input);
  if (!flow) return false;
  await recordRefusal(db, flow, err, meta);
  return true;
}

async function insertRecord(
  db: Queryable,
  r: {
    id: string;
    customerId: string | null;
    method: ProofingMethodName;
    purpose: ProofingPurpose;
    interactionId: string;
    result: 'verified' | 'refused';
    reason: string | null;
    evidence: Record<string, unknown>;
  },
): Promise<void> {
  await db.query(
    `INSERT INTO proofing_records (id, customer_id, method, purpose, result, reason, evidence, interaction_id)
     VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8)`,
    [
      r.id,
      r.customerId,
      r.method,
      r.purpose,
      r.result,
      r.reason,
      JSON.stringify(r.evidence),
      r.interactionId,
    ],
  );
}

/**
 * A one-time enrollment ticket whose secret nobody learns: the proof itself is the credential, and
 * the ticket only carries its single use into the passkey registration. Operator tickets stay open.
 */
async function mintTicket(db: Queryable, customerId: string, method: ProofingMethodName): Promise<string> {
  const ticketId = `etk_${randomBytes(16).toString('base64url')}`;
  await db.query(
    `INSERT INTO enrollment_tickets (id, customer_id, secret_hash, issued_by, expires_at)
     VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5))`,
    [
      ticketId,
      customerId,
      createHash('sha256').update(randomBytes(32)).digest('hex'),
      `proofing:${method}`,
      PROOFED_TICKET_SECONDS,
    ],
  );
  return ticketId;
}

export interface ProofedEnrollment {
  customerId: string;
  ticketId: string;
  purpose: ProofingPurpose;
  flowId: string;
}

/** The customer and ticket a verified flow of this interaction entitles to register a passkey. */
export async function proofedEnrollment(
  db: Queryable,
  input: { flowId: string; interactionId: string },
): Promise<ProofedEnrollment> {
  const { rows } = await db.query<{ customer_id: string; ticket_id: string; purpose: ProofingPurpose }>(
    `SELECT f.customer_id, f.ticket_id, f.purpose FROM proofing_flows f
     JOIN enrollment_tickets t ON t.id = f.ticket_id
     WHERE f.id = $1 AND f.interaction_id = $2 AND f.proofing_id IS NOT NULL
       AND t.used_at IS NULL AND t.voided_at IS NULL AND t.expires_at > now()`,
    [input.flowId, input.interactionId],
  );
  const row = rows[0];
  if (!row) throw new ProofingError('ERR_PROOFING_FLOW');
  return { customerId: row.customer_id, ticketId: row.ticket_id, purpose: row.purpose, flowId: input.flowId };
}

/** Removes flows that expired more than `graceSeconds` ago (their records stay). */
export async function deleteExpiredProofingFlows(db: Queryable, graceSeconds = 86_400): Promise<number> {
  const res = await db.query(
    `DELETE FROM proofing_flows WHERE expires_at < now() - make_interval(secs => $1)
       AND (ticket_id IS NULL OR ticket_id IN (SELECT id FROM enrollment_tickets WHERE used_at IS NOT NULL OR expires_at < now()))`,
    [graceSeconds],
  );
  return res.rowCount;
}

/**
 * The latest verified proofing of the customer for one of `purposes` after `after`, or undefined:
 * what the operator console requires before lifting a freeze (JSDA IV.6.(2)).
 */
export async function verifiedProofingSince(
  db: Queryable,
  customerId: string,
  purposes: ProofingPurpose[],
  after: Date,
): Promise<{ id: string; method: string; purpose: string; at: Date } | undefined> {
  const res = await db.query<{ id: string; method: string; purpose: string; created_at: Date }>(
    `SELECT id, method, purpose, created_at FROM proofing_records
     WHERE customer_id = $1 AND result = 'verified' AND purpose = ANY ($2::text[]) AND created_at > $3
     ORDER BY created_at DESC LIMIT 1`,
    [customerId, purposes, after],
  );
  const r = res.rows[0];
  return r ? { id: r.id, method: r.method, purpose: r.purpose, at: new Date(r.created_at) } : undefined;
}

/** A completed re-proofing: the proofing flow that verified it, or the enrollment ticket it consumed. */
export type ProofReference = { flowId: string } | { ticketId: string };

/**
 * When the proof behind a re-proofing began, as stored here (never a client's word): what it can
 * vouch for is only what the hub knew then (src/risk/reproofing.ts settles peer actions received
 * before it). A flow began when it was created; a ticket an operator issued, when it was issued (the
 * operator's identity check is the proof, and a ticket may travel for days); a ticket a verified flow
 * minted, when that flow began. Where a flow answered with an operator's ticket, the earlier of the
 * two. Undefined when neither is found.
 */
export async function proofBegan(db: Queryable, proof: ProofReference): Promise<Date | undefined> {
  const r =
    'flowId' in proof
      ? await db.query<{ began: Date | null }>(
          `SELECT least(f.created_at, CASE WHEN f.method = 'ticket' THEN t.created_at END) AS began
           FROM proofing_flows f LEFT JOIN enrollment_tickets t ON t.id = f.ticket_id WHERE f.id = $1`,
          [proof.flowId],
        )
      : await db.query<{ began: Date | null }>(
          // A ticket some flow of another method refers to is one that flow minted (mintTicket).
          `SELECT least(CASE WHEN bool_and(f.method IS NULL OR f.method = 'ticket') THEN t.created_at END,
                        min(f.created_at)) AS began
           FROM enrollment_tickets t LEFT JOIN proofing_flows f ON f.ticket_id = t.id
           WHERE t.id = $1 GROUP BY t.id, t.created_at`,
          [proof.ticketId],
        );
  const began = r.rows[0]?.began;
  return began ? new Date(began) : undefined;
}
