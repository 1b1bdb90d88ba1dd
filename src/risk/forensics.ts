/**
 * Forensics (JSDA IV.5.(1), IV.6.(3)②): the record of sign-ins, operations and post-login
 * observations for one customer and period, oldest first, for investigators and for the
 * customer's own request. Also the customer-side inputs to detection: declared travel (FSA
 * comment 88) and the first sign-in after a recovery.
 */
import { z } from 'zod';
import { recordAudit } from '../audit/index.ts';
import type { Queryable } from '../db/index.ts';

export interface ForensicsRow {
  id: string;
  at: string;
  kind: string;
  customerId: string | null;
  method: string;
  result: string;
  ip: string | null;
  port: number | null;
  source: string | null;
  sourceRange: string | null;
  country: string | null;
  asn: number | null;
  userAgent: string | null;
  deviceHash: string | null;
  credentialId: string | null;
  backedUp: boolean | null;
  sessionKey: string | null;
  clientId: string | null;
  decision: string | null;
  score: number | null;
  reasons: Array<{ rule: string; score: number; explain: string }>;
  ruleVersion: string | null;
  signals: Record<string, unknown>;
}

/** Streams in pages so a long history never sits in memory at once. */
export async function* exportCustomerForensics(
  db: Queryable,
  input: { customerId: string; from: Date; to: Date; pageSize?: number },
): AsyncGenerator<ForensicsRow> {
  let after = '0';
  const size = input.pageSize ?? 1000;
  for (;;) {
    const res = await db.query<ForensicsRow & { at: Date }>(
      `SELECT id::text AS id, at, kind, customer_id AS "customerId", method, result, ip, port, source,
              source_range AS "sourceRange", country, asn, user_agent AS "userAgent", device_hash AS "deviceHash",
              credential_id AS "credentialId", backed_up AS "backedUp", session_key AS "sessionKey",
              client_id AS "clientId", decision, score, reasons, rule_version AS "ruleVersion", signals
       FROM risk_events WHERE customer_id = $1 AND at >= $2 AND at < $3 AND id > $4::bigint
       ORDER BY id LIMIT $5`,
      [input.customerId, input.from.toISOString(), input.to.toISOString(), after, size],
    );
    for (const r of res.rows) yield { ...r, at: new Date(r.at).toISOString() };
    if (res.rows.length < size) return;
    after = res.rows.at(-1)!.id;
  }
}

export class TravelError extends Error {
  override name = 'TravelError';
  readonly code = 'ERR_TRAVEL_INVALID';
}

const travelSchema = z
  .strictObject({
    customerId: z.string().min(1),
    country: z.string().regex(/^[A-Z]{2}$/, 'country must be an ISO 3166-1 alpha-2 code such as US'),
    from: z.date(),
    to: z.date(),
    declaredBy: z.string().min(1),
  })
  .refine((t) => t.to > t.from, { message: 'to must be after from', path: ['to'] })
  .refine((t) => t.to.getTime() - t.from.getTime() <= 366 * 24 * 3600 * 1000, {
    message: 'a declaration covers at most a year',
    path: ['to'],
  });

/** A customer's declared travel: sign-ins from that country in that period are expected. Audited. */
export async function declareTravel(
  db: Queryable,
  input: z.input<typeof travelSchema>,
): Promise<{ id: string }> {
  const parsed = travelSchema.safeParse(input);
  if (!parsed.success) {
    const i = parsed.error.issues[0]!;
    throw new TravelError(`${i.path.join('.') || 'travel'}: ${i.message}`);
  }
  const t = parsed.data;
  const res = await db.query<{ id: string }>(
    `INSERT INTO travel_declarations (customer_id, country, starts_at, ends_at, declared_by)
     VALUES ($1, $2, $3, $4, $5) RETURNING id::text AS id`,
    [t.customerId, t.country, t.from.toISOString(), t.to.toISOString(), t.declaredBy],
  );
  await recordAudit(db, {
    type: 'risk.travel.declared',
    outcome: 'info',
    actor: t.declaredBy,
    customerId: t.customerId,
    data: { country: t.country, from: t.from.toISOString(), to: t.to.toISOString() },
  });
  return { id: res.rows[0]!.id };
}

/**
 * Hook for the account-recovery flow: call it (in the recovery's transaction) once a customer
 * recovered access; the next successful sign-in carries the `firstLoginAfterRecovery` signal.
 */
export async function noteAccountRecovered(db: Queryable, customerId: string): Promise<void> {
  await db.query(
    `INSERT INTO risk_levels AS r (customer_id, level, recovered_at, recovery_login_due) VALUES ($1, 'LOW', now(), true)
     ON CONFLICT (customer_id) DO UPDATE SET recovered_at = now(), recovery_login_due = true, updated_at = now()`,
    [customerId],
  );
}
