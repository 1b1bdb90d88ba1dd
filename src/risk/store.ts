/** The risk module's tables: events (forensics), travel declarations, levels, session risk. */
import { AUDIT_COLUMNS, type AuditEvent, auditParams, auditValues, countAudited } from '../audit/index.ts';
import type { Queryable } from '../db/index.ts';
import { countRiskDecision } from '../metrics/index.ts';
import { deleteExpiredBaselines } from './baselines.ts';
import { expirePeerLevels, higherLevel, livePeerLevels, type PeerRiskLevel } from './peerLevels.ts';
import type { RiskReason } from './rules.ts';
import type { LoginFacts } from './signals.ts';
import {
  type AccountLock,
  failuresPendingColumn,
  type LockRow,
  lockColumns,
  lockedWhere,
  lockOf,
} from './throttle.ts';

export interface RiskEventRow {
  kind: 'login' | 'operation' | 'request';
  customerId?: string | undefined;
  method: string;
  result: 'success' | 'failure' | 'step_up' | 'blocked' | 'observed';
  ip?: string | undefined;
  port?: number | undefined;
  source?: string | undefined;
  sourceRange?: string | undefined;
  country?: string | undefined;
  asn?: number | undefined;
  userAgent?: string | undefined;
  deviceHash?: string | undefined;
  credentialId?: string | undefined;
  backedUp?: boolean | undefined;
  sessionKey?: string | undefined;
  clientId?: string | undefined;
  decision?: 'allow' | 'step_up' | 'block' | undefined;
  score?: number | undefined;
  reasons?: RiskReason[] | undefined;
  ruleVersion?: string | undefined;
  signals?: Record<string, unknown> | undefined;
}

const INSERT_RISK_EVENT = `INSERT INTO risk_events (kind, customer_id, method, result, ip, port, source, source_range,
     country, asn, user_agent, device_hash, credential_id, backed_up, session_key, client_id, decision, score, reasons,
     rule_version, signals)
   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19::jsonb, $20, $21::jsonb)`;

export async function insertRiskEvent(db: Queryable, e: RiskEventRow): Promise<void> {
  await db.query(INSERT_RISK_EVENT, riskEventParams(e));
  countRiskDecision(e.kind, e.decision);
}

/**
 * Records a decision that leaves the customer's level where it is — so there is no risk-level-change
 * to announce — in one statement: the event, the audit of a step-up or block, and the level's reasons
 * (and the end of the first-login-after-recovery watch) when they differ. The level row is written
 * only while it still holds `level`; answers false when it held another one by then (a concurrent
 * decision or a peer's signal): the caller then settles the level in a transaction of its own.
 */
export async function recordAtStoredLevel(
  db: Queryable,
  e: RiskEventRow,
  o: { level: RiskLevel; reasons: string[]; clearRecovery: boolean; audit?: AuditEvent | undefined },
): Promise<boolean> {
  const audit = o.audit
    ? `, au AS (INSERT INTO audit_events ${AUDIT_COLUMNS} VALUES ${auditValues(25)})`
    : '';
  const res = await db.query<{ level: RiskLevel | null }>(
    `WITH ev AS (${INSERT_RISK_EVENT}),
     old AS (SELECT level FROM risk_levels WHERE customer_id = $2 FOR UPDATE),
     lv AS (UPDATE risk_levels r SET reasons = $23::jsonb, updated_at = now(),
              recovery_login_due = CASE WHEN $24::boolean THEN false ELSE r.recovery_login_due END
            WHERE r.customer_id = $2 AND (SELECT count(*) FROM old) >= 0 AND r.level = $22::text
              AND (r.reasons <> $23::jsonb OR ($24::boolean AND r.recovery_login_due)))${audit}
     SELECT (SELECT level FROM old) AS level`,
    [
      ...riskEventParams(e),
      o.level,
      JSON.stringify(o.reasons),
      o.clearRecovery,
      ...(o.audit ? auditParams(o.audit) : []),
    ],
  );
  const event = o.audit;
  db.afterCommit(() => {
    countRiskDecision(e.kind, e.decision);
    if (event) countAudited(event);
  });
  return res.rows[0]?.level === o.level;
}

/** The INSERT's parameters (the JSON encoding included: the detection benchmark times it). */
export function riskEventParams(e: RiskEventRow): unknown[] {
  return [
    e.kind,
    e.customerId ?? null,
    e.method,
    e.result,
    e.ip ?? null,
    e.port ?? null,
    e.source ?? null,
    e.sourceRange ?? null,
    e.country ?? null,
    e.asn ?? null,
    e.userAgent?.slice(0, 512) ?? null,
    e.deviceHash ?? null,
    e.credentialId ?? null,
    e.backedUp ?? null,
    e.sessionKey ?? null,
    e.clientId ?? null,
    e.decision ?? null,
    e.score ?? null,
    JSON.stringify(e.reasons ?? []),
    e.ruleVersion ?? null,
    JSON.stringify(e.signals ?? {}),
  ];
}

/**
 * Everything LoginFacts needs in one round trip, and the customer's stored level (so that a sign-in
 * that changes nothing need not write it). Only failures are counted per source and range, so
 * those scans read failures alone (partial indexes, migration 0022) however busy a source is; the
 * customer's own successful sign-ins are read through EXISTS and two newest-first lookups (`mine`
 * is inlined, not materialised) that stop at the first row they need: the latest sign-in (whether
 * there was one, and where and when it was) and the latest with this credential (whether it was
 * seen, and its backup state then) — one index descent each instead of one per column.
 */
type FactsQuery = {
  customerId: string;
  credentialId: string | undefined;
  source: string;
  sourceRange: string | undefined;
  country: string | undefined;
  asn: number | undefined;
  windowSeconds: number;
};

interface FactsRow {
  fa: number;
  fs: number;
  fr: number;
  as_: number;
  ar: number;
  before: boolean;
  seen_country: boolean;
  seen_asn: boolean;
  seen_cred: boolean;
  last_country: string | null;
  last_ip: string | null;
  last_at: Date | null;
  last_backed_up: boolean | null;
  travel: boolean;
  recovery_due: boolean | null;
  stored_level: RiskLevel | null;
  stored_reasons: string[] | null;
}

export type StoredLoginFacts = LoginFacts & { stored: { level: RiskLevel; reasons: string[] } | undefined };

/**
 * The facts statement; `gate`: the sign-in gate's form (signInGate, engine.ts), which reads in the same
 * round trip the account lock and whether the browser's device token is known ($8: its hash) — what a
 * verified sign-in reads anyway, so detection adds no round trip of its own.
 */
function factsSql(gate: boolean): string {
  const lock = gate
    ? `,
       ${lockColumns('lk')},
       EXISTS (SELECT 1 FROM known_devices WHERE device_hash = $8 AND customer_id = $1) AS known,
       ${failuresPendingColumn}`
    : '';
  const lockJoin = gate
    ? `\n     LEFT JOIN account_lockouts lk ON lk.customer_id = $1 AND ${lockedWhere('lk')}`
    : '';
  return `WITH since AS (SELECT now() - make_interval(secs => $7) AS t),
     mine AS NOT MATERIALIZED (SELECT country, asn, ip, credential_id, backed_up, at FROM risk_events
              WHERE customer_id = $1 AND kind = 'login' AND result = 'success'),
     src AS (SELECT customer_id, credential_id, result FROM risk_events, since
             WHERE kind = 'login' AND result = 'failure' AND source = $3 AND at > since.t),
     rng AS (SELECT customer_id, credential_id, result FROM risk_events, since
             WHERE kind = 'login' AND result = 'failure' AND source_range = $4 AND at > since.t)
     SELECT
       (SELECT count(*) FROM risk_events, since WHERE customer_id = $1 AND kind = 'login' AND result = 'failure' AND at > since.t)::int AS fa,
       (SELECT count(*) FROM src WHERE result = 'failure')::int AS fs,
       (SELECT count(*) FROM rng WHERE result = 'failure')::int AS fr,
       (SELECT count(DISTINCT COALESCE(customer_id, 'cred:' || credential_id)) FROM src WHERE result = 'failure')::int AS as_,
       (SELECT count(DISTINCT COALESCE(customer_id, 'cred:' || credential_id)) FROM rng WHERE result = 'failure')::int AS ar,
       last.at IS NOT NULL AS before,
       EXISTS (SELECT 1 FROM mine WHERE country = $5) AS seen_country,
       EXISTS (SELECT 1 FROM mine WHERE asn = $6::int) AS seen_asn,
       cred.at IS NOT NULL AS seen_cred,
       last.country AS last_country, last.ip AS last_ip, last.at AS last_at,
       cred.backed_up AS last_backed_up,
       EXISTS (SELECT 1 FROM travel_declarations WHERE customer_id = $1 AND country = $5
               AND starts_at <= now() AND ends_at > now()) AS travel,
       lv.recovery_login_due AS recovery_due, lv.level AS stored_level, lv.reasons AS stored_reasons${lock}
     FROM (SELECT 1) AS one
     LEFT JOIN LATERAL (SELECT country, ip, at FROM mine ORDER BY at DESC LIMIT 1) AS last ON true
     LEFT JOIN LATERAL (SELECT backed_up, at FROM mine WHERE credential_id = $2 ORDER BY at DESC LIMIT 1) AS cred ON true
     LEFT JOIN risk_levels lv ON lv.customer_id = $1${lockJoin}`;
}
const LOGIN_FACTS_SQL = factsSql(false);
const SIGN_IN_FACTS_SQL = factsSql(true);

const factsParams = (q: FactsQuery) => [
  q.customerId,
  q.credentialId ?? null,
  q.source,
  q.sourceRange ?? null,
  q.country ?? null,
  q.asn ?? null,
  q.windowSeconds,
];

export async function loginFacts(db: Queryable, q: FactsQuery): Promise<StoredLoginFacts> {
  const res = await db.query<FactsRow>(LOGIN_FACTS_SQL, factsParams(q));
  return factsOf(res.rows[0]!);
}

/** loginFacts with the account lock and the known-device check in the same statement. */
export async function signInFacts(
  db: Queryable,
  q: FactsQuery,
  deviceHash: string | undefined,
): Promise<{ facts: StoredLoginFacts; lock: AccountLock; known: boolean; failuresPending: boolean }> {
  const res = await db.query<FactsRow & LockRow & { known: boolean; failures_pending: boolean }>(
    SIGN_IN_FACTS_SQL,
    [...factsParams(q), deviceHash ?? null],
  );
  const r = res.rows[0]!;
  return {
    facts: factsOf(r),
    lock: lockOf(r),
    known: deviceHash !== undefined && r.known,
    failuresPending: r.failures_pending,
  };
}

function factsOf(r: FactsRow): StoredLoginFacts {
  return {
    failuresPerAccount: r.fa,
    failuresPerSource: r.fs,
    failuresPerRange: r.fr,
    failedAccountsPerSource: r.as_,
    failedAccountsPerRange: r.ar,
    signedInBefore: r.before,
    seenCountry: r.seen_country,
    seenNetwork: r.seen_asn,
    seenCredential: r.seen_cred,
    lastSuccess: r.last_at
      ? { country: r.last_country, ip: r.last_ip ?? undefined, at: new Date(r.last_at) }
      : undefined,
    lastBackedUp: r.last_backed_up ?? undefined,
    travelDeclared: r.travel,
    recoveryLoginDue: r.recovery_due ?? false,
    stored: r.stored_level ? { level: r.stored_level, reasons: r.stored_reasons ?? [] } : undefined,
  };
}

export type RiskLevel = 'LOW' | 'MEDIUM' | 'HIGH';

/**
 * Sets the customer's level (and the reasons of the decision behind it); returns the previous one
 * when it changed. One statement: the row is locked (ordering concurrent changes inside the
 * caller's transaction) and only written when something differs — the common sign-in, same level
 * and reasons as last time, writes nothing.
 */
export async function setRiskLevel(
  db: Queryable,
  customerId: string,
  level: RiskLevel,
  reasons: string[],
  opts: { clearRecovery?: boolean } = {},
): Promise<{ changed: boolean; previous: RiskLevel | undefined }> {
  const res = await db.query<{ previous: RiskLevel | null }>(
    // The WHERE makes `old` run (and lock) before the upsert; read only in RETURNING it would run
    // after it and no longer see the row this statement updated.
    `WITH old AS (SELECT level FROM risk_levels WHERE customer_id = $1 FOR UPDATE)
     INSERT INTO risk_levels AS r (customer_id, level, reasons)
     SELECT $1, $2, $3::jsonb WHERE (SELECT count(*) FROM old) >= 0
     ON CONFLICT (customer_id) DO UPDATE SET level = EXCLUDED.level, reasons = EXCLUDED.reasons, updated_at = now(),
       recovery_login_due = CASE WHEN $4 THEN false ELSE r.recovery_login_due END
     WHERE r.level <> EXCLUDED.level OR r.reasons <> EXCLUDED.reasons OR ($4 AND r.recovery_login_due)
     RETURNING (SELECT level FROM old) AS previous`,
    [customerId, level, JSON.stringify(reasons), opts.clearRecovery ?? false],
  );
  // No row back: the stored level and reasons were already these.
  if (res.rows.length === 0) return { changed: false, previous: level };
  const previous = res.rows[0]!.previous ?? undefined;
  return { changed: (previous ?? 'LOW') !== level, previous };
}

/** Adds to a session's post-login risk; returns the new total. */
export async function raiseSessionRisk(
  db: Queryable,
  s: {
    sessionKey: string;
    customerId: string;
    clientId?: string | undefined;
    score: number;
    reasons: string[];
  },
): Promise<number> {
  const res = await db.query<{ score: number }>(
    `INSERT INTO session_risk AS s (session_key, customer_id, client_id, score, reasons) VALUES ($1, $2, $3, $4, $5::jsonb)
     ON CONFLICT (session_key) DO UPDATE SET score = s.score + EXCLUDED.score,
       reasons = s.reasons || EXCLUDED.reasons, updated_at = now()
     RETURNING score`,
    [s.sessionKey, s.customerId, s.clientId ?? null, s.score, JSON.stringify(s.reasons)],
  );
  return res.rows[0]!.score;
}

export async function sessionRisk(db: Queryable, sessionKey: string): Promise<number> {
  const res = await db.query<{ score: number }>('SELECT score FROM session_risk WHERE session_key = $1', [
    sessionKey,
  ]);
  return res.rows[0]?.score ?? 0;
}

/**
 * The hub's sweeper for risk data: deletes forensics rows older than the retention and post-login
 * baselines past their tokens' and sessions' lifetime (a batch at a time), and ends peer-raised
 * levels that expired.
 */
export async function deleteExpiredRiskEvents(
  db: Queryable,
  retentionDays: number,
  o: {
    limit?: number;
    /**
     * Post-login baselines (src/risk/baselines.ts) go once older than this — the longest token or
     * session lifetime — unless the browser session they track is still live, and once older than the
     * retention in any case; the retention alone when not given.
     */
    baselineMaxAgeSeconds?: number;
    /**
     * Batches of `limit` per table in one call while each comes back full (default 1). The hub's
     * sweeper drains: baselines are written for every new token and events for every sign-in, far
     * more than one batch per sweep interval at production rates.
     */
    batches?: number;
  } = {},
): Promise<number> {
  const limit = o.limit ?? 5000;
  const drain = async (batch: () => Promise<number>) => {
    let total = 0;
    for (let i = 0; i < (o.batches ?? 1); i++) {
      const n = await batch();
      total += n;
      if (n < limit) break;
    }
    return total;
  };
  const baselineAge = {
    lifetimeSeconds: o.baselineMaxAgeSeconds ?? Number.POSITIVE_INFINITY,
    retentionSeconds: retentionDays * 86_400,
  };
  const baselines = await drain(() => deleteExpiredBaselines(db, baselineAge, limit));
  const events = await drain(
    async () =>
      (
        await db.query(
          `DELETE FROM risk_events WHERE id IN (
             SELECT id FROM risk_events WHERE at < now() - make_interval(days => $1) ORDER BY at LIMIT $2)`,
          [retentionDays, limit],
        )
      ).rowCount,
  );
  const sessions = await db.query(
    'DELETE FROM session_risk WHERE updated_at < now() - make_interval(days => $1)',
    [retentionDays],
  );
  const travel = await db.query(
    'DELETE FROM travel_declarations WHERE ends_at < now() - make_interval(days => $1)',
    [retentionDays],
  );
  // Peer levels whose time is up end now (audited); ended ones go with the retention.
  const expired = await expirePeerLevels(db);
  const peer = await db.query(
    'DELETE FROM peer_risk_levels WHERE ended_at < now() - make_interval(days => $1)',
    [retentionDays],
  );
  return baselines + events + sessions.rowCount + travel.rowCount + expired + peer.rowCount;
}

export interface CustomerRiskView {
  /** Effective: the higher of the engine's level and the live peer levels. */
  level: RiskLevel;
  /** The engine's own level (its latest decision) and that decision's reasons. */
  engineLevel: RiskLevel;
  reasons: string[];
  updatedAt: Date | null;
  /** Levels peer institutions raised that still stand. */
  peerLevels: PeerRiskLevel[];
  events: Array<{
    at: Date;
    kind: string;
    method: string;
    result: string;
    decision: string | null;
    score: number | null;
    reasons: unknown[];
    ip: string | null;
    country: string | null;
    userAgent: string | null;
  }>;
}

/** The customer's current level and latest risk events with their reasons (operator console). */
export async function customerRisk(db: Queryable, customerId: string, limit = 20): Promise<CustomerRiskView> {
  const [level, events, peerLevels] = await Promise.all([
    db.query<{ level: RiskLevel; reasons: string[]; updated_at: Date }>(
      'SELECT level, reasons, updated_at FROM risk_levels WHERE customer_id = $1',
      [customerId],
    ),
    db.query<Omit<CustomerRiskView['events'][number], 'userAgent'> & { user_agent: string | null }>(
      `SELECT at, kind, method, result, decision, score, reasons, ip, country, user_agent FROM risk_events
       WHERE customer_id = $1 ORDER BY at DESC, id DESC LIMIT $2`,
      [customerId, limit],
    ),
    livePeerLevels(db, customerId),
  ]);
  const l = level.rows[0];
  const engineLevel = l?.level ?? 'LOW';
  return {
    level: peerLevels.reduce<RiskLevel>((max, p) => higherLevel(max, p.level), engineLevel),
    engineLevel,
    peerLevels,
    reasons: l?.reasons ?? [],
    updatedAt: l ? new Date(l.updated_at) : null,
    events: events.rows.map(({ user_agent, ...e }) => ({
      ...e,
      at: new Date(e.at),
      userAgent: user_agent,
    })),
  };
}
