/**
 * Append-only security event log. Everything security-relevant is recorded here: logins and
 * their failures, enrollment, ticket issuance and misuse, consents, token and API misuse.
 * Never put secrets (tickets, tokens, keys, assertions) into `data`.
 */
import type { Queryable } from '../db/index.ts';
import { countSecurityEvent } from '../metrics/index.ts';

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
  await db.query(`INSERT INTO audit_events ${AUDIT_COLUMNS} VALUES ${auditValues(1)}`, auditParams(event));
  // Inside a transaction the event exists only once it commits; a rolled-back one is not counted.
  db.afterCommit(() => countSecurityEvent(event.type, event.outcome));
}

/**
 * For a caller that writes an audit event inside a statement of its own (one round trip for a
 * decision and its record): `INSERT INTO audit_events ${AUDIT_COLUMNS} VALUES ${auditValues(n)}` with
 * auditParams(event) as parameters $n…, then `db.afterCommit(() => countAudited(event))`.
 */
export const AUDIT_COLUMNS =
  '(type, outcome, actor, customer_id, client_id, ip, port, user_agent, interaction_id, data)';
export const auditValues = (first: number): string =>
  `(${Array.from({ length: 10 }, (_, i) => `$${first + i}`).join(', ')})`;
export function auditParams(event: AuditEvent): unknown[] {
  return [
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
  ];
}
export const countAudited = (event: AuditEvent): void => countSecurityEvent(event.type, event.outcome);

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

export interface AuditExportRow {
  id: string;
  at: string;
  type: string;
  outcome: string;
  actor: string | null;
  clientId: string | null;
  ip: string | null;
  port: number | null;
  userAgent: string | null;
  interactionId: string | null;
  data: Record<string, unknown>;
}

/**
 * Everything recorded about one customer in [from, to), oldest first: for investigators and for
 * the customer's own request for their access history (JSDA IV.6.(3)②). Streams in pages so a long
 * history never sits in memory at once.
 */
export async function* exportCustomerAudit(
  db: Queryable,
  input: { customerId: string; from: Date; to: Date; pageSize?: number },
): AsyncGenerator<AuditExportRow> {
  let after = 0n;
  const size = input.pageSize ?? 1000;
  for (;;) {
    const res = await db.query<{
      id: string;
      at: Date;
      type: string;
      outcome: string;
      actor: string | null;
      client_id: string | null;
      ip: string | null;
      port: number | null;
      user_agent: string | null;
      interaction_id: string | null;
      data: Record<string, unknown>;
    }>(
      `SELECT id::text AS id, at, type, outcome, actor, client_id, ip, port, user_agent, interaction_id, data
       FROM audit_events WHERE customer_id = $1 AND at >= $2 AND at < $3 AND audit_events.id > $4::bigint
       ORDER BY audit_events.id LIMIT $5`,
      [input.customerId, input.from.toISOString(), input.to.toISOString(), after.toString(), size],
    );
    for (const r of res.rows) {
      yield {
        id: r.id,
        at: new Date(r.at).toISOString(),
        type: r.type,
        outcome: r.outcome,
        actor: r.actor,
        clientId: r.client_id,
        ip: r.ip,
        port: r.port,
        userAgent: r.user_agent,
        interactionId: r.interaction_id,
        data: r.data,
      };
    }
    if (res.rows.length < size) return;
    after = BigInt(res.rows.at(-1)!.id);
  }
}

export interface SecurityEventCounts {
  /** Accounts locked automatically after failed sign-ins. */
  locks: number;
  /** Sign-ins refused because the account was locked. */
  lockedRefusals: number;
  /** Failed sign-ins. */
  failures: number;
  /** Sign-ins that succeeded. */
  signIns: number;
}

/** Counts of security events in [from, to), for the management report. */
export async function countSecurityEvents(db: Queryable, from: Date, to: Date): Promise<SecurityEventCounts> {
  const res = await db.query<SecurityEventCounts>(
    `SELECT count(*) FILTER (WHERE type = 'risk.account.locked')::int AS locks,
            count(*) FILTER (WHERE type = 'risk.account.locked.refused')::int AS "lockedRefusals",
            count(*) FILTER (WHERE type = 'risk.auth.failure')::int AS failures,
            count(*) FILTER (WHERE type IN ('authn.passkey.login', 'authn.totp.login') AND outcome = 'success')::int AS "signIns"
     FROM audit_events WHERE at >= $1 AND at < $2`,
    [from.toISOString(), to.toISOString()],
  );
  return res.rows[0] ?? { locks: 0, lockedRefusals: 0, failures: 0, signIns: 0 };
}

export interface DailySecurityEvents {
  /** YYYY-MM-DD in Japan. */
  day: string;
  locks: number;
  /** Sign-ins and operations the risk rules blocked. */
  blocks: number;
  /** Customers frozen by an operator. */
  freezes: number;
}

/** Locks, risk blocks and freezes per Japanese day in [from, to) (management report over time). */
export async function securityEventsPerDay(
  db: Queryable,
  from: Date,
  to: Date,
): Promise<DailySecurityEvents[]> {
  const res = await db.query<DailySecurityEvents>(
    `SELECT to_char(at AT TIME ZONE 'Asia/Tokyo', 'YYYY-MM-DD') AS day,
            count(*) FILTER (WHERE type = 'risk.account.locked')::int AS locks,
            count(*) FILTER (WHERE type IN ('risk.login.block', 'risk.operation.block'))::int AS blocks,
            count(*) FILTER (WHERE type = 'console.customer.frozen')::int AS freezes
     FROM audit_events
     WHERE at >= $1 AND at < $2
       AND type IN ('risk.account.locked', 'risk.login.block', 'risk.operation.block', 'console.customer.frozen')
     GROUP BY 1 ORDER BY 1`,
    [from.toISOString(), to.toISOString()],
  );
  return res.rows;
}
