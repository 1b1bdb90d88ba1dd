/**
 * Append-only security event log. Everything security-relevant is recorded here: logins and
 * their failures, enrollment, ticket issuance and misuse, consents, token and API misuse.
 * Never put secrets (tickets, tokens, keys, assertions) into `data`.
 */
import type { Queryable } from '../db/index.ts';

export interface AuditEvent {
  /** Dotted name, e.g. `authn.passkey.login`, `enrollment.ticket.rejected`. */
  type: string;
  outcome: 'success' | 'failure' | 'info';
  /** Who did it: `customer:<id>`, `client:<id>`, `operator:<name>`, `system`. */
  actor?: string | undefined;
  customerId?: string | undefined;
  clientId?: string | undefined;
  ip?: string | undefined;
  port?: number | undefined;
  userAgent?: string | undefined;
  interactionId?: string | undefined;
  data?: Record<string, unknown> | undefined;
}

export async function recordAudit(db: Queryable, event: AuditEvent): Promise<void> {
  await db.query(
    `INSERT INTO audit_events (type, outcome, actor, customer_id, client_id, ip, port, user_agent, interaction_id, data)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
    [
      event.type,
      event.outcome,
      event.actor ?? null,
      event.customerId ?? null,
      event.clientId ?? null,
      event.ip ?? null,
      event.port ?? null,
      event.userAgent?.slice(0, 512) ?? null,
      event.interactionId ?? null,
      JSON.stringify(event.data ?? {}),
    ],
  );
}

export interface AuditRow {
  id: string;
  at: Date;
  type: string;
  outcome: string;
  actor: string | null;
  customer_id: string | null;
  client_id: string | null;
  ip: string | null;
  port: number | null;
  user_agent: string | null;
  data: Record<string, unknown>;
}

/** Most recent first. */
export async function listAudit(
  db: Queryable,
  filter: { customerId?: string; type?: string; typePrefixes?: string[]; limit?: number } = {},
): Promise<AuditRow[]> {
  const res = await db.query<AuditRow>(
    `SELECT id::text AS id, at, type, outcome, actor, customer_id, client_id, ip, port, user_agent, data FROM audit_events
     WHERE ($1::text IS NULL OR customer_id = $1) AND ($2::text IS NULL OR type = $2)
       AND ($4::text[] IS NULL OR split_part(type, '.', 1) = ANY ($4::text[]))
     ORDER BY audit_events.id DESC LIMIT $3`,
    [filter.customerId ?? null, filter.type ?? null, filter.limit ?? 100, filter.typePrefixes ?? null],
  );
  return res.rows;
}
