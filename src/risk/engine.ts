import { fileURLToPath } from 'node:url';
import { type AuditEvent, recordAudit } from '../audit/index.ts';
import type { Db, Queryable } from '../db/index.ts';
import { emitSecurityEvent } from '../signals/index.ts';
import { claimBaseline, claimChanges } from './baselines.ts';
import type { RiskConfig } from './config.ts';
import { createGeoLookup, type GeoLookup, type Location, networkRange } from './geo.ts';
import { evaluate, levelOf, loadRuleSet, type RiskDecision, type RuleSet, type Signals } from './rules.ts';
import { deriveLoginSignals, type LoginAttempt, type LoginFacts, type SignalSettings } from './signals.ts';
import {
  insertRiskEvent,
  loginFacts,
  type RiskEventRow,
  type RiskLevel,
  raiseSessionRisk,
  recordAtStoredLevel,
  type StoredLoginFacts,
  sessionRisk,
  setRiskLevel,
  signInFacts,
} from './store.ts';
import { type AccountLock, deviceHash, lockAndDevice, sourceKey } from './throttle.ts';
import { RequestTracker } from './tracker.ts';

/** The shipped rule set, also the default when `risk.rulesFile` is not set. */
export const DEFAULT_RULES_FILE = fileURLToPath(new URL('../../config/risk-rules.json', import.meta.url));

export interface RiskEngine {
  readonly config: RiskConfig;
  readonly rules: RuleSet;
  readonly geo: GeoLookup;
  readonly settings: SignalSettings;
  /**
   * First network and user agent per token or session as claimed in the database (shared by the
   * nodes), the changes this node saw, and calls per minute (this node only).
   */
  readonly tracked: RequestTracker;
}

export function createRiskEngine(config: RiskConfig, rules?: RuleSet): RiskEngine {
  const geo = createGeoLookup(config.geo, {
    cityKm: config.travel.cityAccuracyKm,
    countryKm: config.travel.countryAccuracyKm,
  });
  return {
    config,
    rules: rules ?? loadRuleSet(config.rulesFile ?? DEFAULT_RULES_FILE),
    geo,
    settings: signalSettings(config),
    tracked: new RequestTracker(geo, config.trackedTokens),
  };
}

/** What signal derivation needs from the configuration (the hub and the replay CLI alike). */
function signalSettings(config: RiskConfig): SignalSettings {
  return {
    homeCountry: config.homeCountry,
    hostingAsns: new Set(config.geo.hostingAsns),
    travel: {
      maxSpeedKmh: config.travel.maxSpeedKmh,
      toleranceKm: config.travel.toleranceKm,
      windowSeconds: config.impossibleTravelSeconds,
    },
  };
}

const engines = new WeakMap<object, RiskEngine>();

/** One engine per loaded configuration, shared by every router of the node. */
export function riskEngineFor(config: { risk: RiskConfig }): RiskEngine {
  let e = engines.get(config);
  if (!e) {
    e = createRiskEngine(config.risk);
    engines.set(config, e);
  }
  return e;
}

/**
 * Detection is mandatory (JSDA IV.5, FSA comments 84–88); `risk.enabled: false` exists only to
 * measure its cost. A node started that way says so at every start — a warning in the log and a
 * `risk.detection.disabled` audit event — so it cannot go unnoticed in production.
 */
export async function announceDetectionOff(
  db: Queryable,
  config: { risk: RiskConfig; issuer: string },
  logger: { warn(obj: object, msg: string): void },
): Promise<boolean> {
  if (config.risk.enabled) return false;
  logger.warn(
    { key: 'risk.enabled', issuer: config.issuer },
    'RISK DETECTION IS OFF (risk.enabled=false): sign-ins and operations are not assessed or recorded for forensics; only for benchmarks, never in production',
  );
  await recordAudit(db, {
    type: 'risk.detection.disabled',
    outcome: 'failure',
    actor: 'system',
    data: { key: 'risk.enabled', issuer: config.issuer },
  });
  return true;
}

/** known_devices' hash of a device cookie (one definition: throttle.ts), or undefined without one. */
export const deviceHashOf = (token: string | undefined): string | undefined =>
  token ? deviceHash(token) : undefined;

export interface RequestOrigin {
  ip?: string | undefined;
  port?: number | undefined;
  userAgent?: string | undefined;
}

function whereFrom(engine: RiskEngine, ip: string | undefined) {
  const loc: Location = engine.geo.locate(ip);
  return { loc, source: sourceKey(ip), sourceRange: networkRange(ip) };
}

/**
 * The customer's level follows the latest decision; a change goes out as CAEP risk-level-change
 * (to the peers the customer is linked with) in the same transaction as the event's record.
 */
async function applyLevel(
  engine: RiskEngine,
  db: Queryable,
  customerId: string,
  d: RiskDecision,
  opts: { clearRecovery?: boolean } = {},
): Promise<RiskLevel> {
  const level = levelOf(engine.rules, d);
  const reasons = d.reasons.map((r) => r.rule);
  const { changed, previous } = await setRiskLevel(db, customerId, level, reasons, opts);
  if (changed)
    await emitSecurityEvent(db, {
      type: 'risk-level-change',
      customerId,
      currentLevel: level,
      ...(previous ? { previousLevel: previous } : {}),
      riskReason: reasons.join(',') || 'none',
      principal: 'USER',
      initiatingEntity: 'system',
      reasonAdmin: `risk rules ${d.ruleVersion}: ${reasons.join(', ') || 'no rule matched'}`,
    });
  return level;
}

async function auditDecision(
  db: Queryable,
  type: string,
  customerId: string,
  o: RequestOrigin,
  d: RiskDecision,
) {
  const event = decisionAudit(type, customerId, o, d);
  if (event) await recordAudit(db, event);
}

/** The audit event of a decision: a step-up or a block is audited, an allow is not. */
function decisionAudit(
  type: string,
  customerId: string,
  o: RequestOrigin,
  d: RiskDecision,
): AuditEvent | undefined {
  if (d.decision === 'allow') return undefined;
  return {
    type,
    outcome: d.decision === 'block' ? 'failure' : 'info',
    actor: 'system',
    customerId,
    ip: o.ip,
    port: o.port,
    userAgent: o.userAgent,
    data: {
      // Which operation was held back or flagged (e.g. account.links.start), for investigators.
      ...('operation' in o ? { operation: o.operation } : {}),
      decision: d.decision,
      score: d.score,
      reasons: d.reasons.map((r) => r.rule),
      ruleVersion: d.ruleVersion,
    },
  };
}

/**
 * Where the previous sign-in was: its address located again (city data, when the operator has it),
 * unless the data now places that address in another country than was recorded; then the centroid.
 */
function placeOf(engine: RiskEngine, last: { country: string | null; ip?: string | undefined }) {
  const again = engine.geo.locate(last.ip);
  return again.country === (last.country ?? undefined) && again.place
    ? again.place
    : engine.geo.centroid(last.country ?? undefined);
}

/**
 * What a hub with detection off (risk.enabled false, for benchmarks) answers — or a sign-in gate
 * without an engine: allow, nothing recorded.
 */
const DETECTION_OFF = (engine: RiskEngine | undefined): LoginAssessment => ({
  decision: 'allow',
  score: 0,
  reasons: [],
  ruleVersion: engine?.rules.version ?? 'none',
  signals: {},
  level: 'LOW',
});

export interface LoginAssessment extends RiskDecision {
  signals: Signals;
  level: RiskLevel;
}

/** Where a sign-in comes from and what to ask the history about it (in-process, no I/O). */
export function loginQuery(engine: RiskEngine, attempt: LoginAttempt) {
  const { loc, source, sourceRange } = whereFrom(engine, attempt.ip);
  return {
    loc,
    facts: {
      customerId: attempt.customerId,
      credentialId: attempt.credentialId,
      source,
      sourceRange,
      country: loc.country,
      asn: loc.asn,
      windowSeconds: engine.config.velocityWindowSeconds,
    },
  };
}

/**
 * The in-process part of a sign-in decision, given the history's facts: signals, the rules'
 * decision and the forensic row to record. No I/O (the detection benchmark times exactly this).
 */
export function decideLogin(
  engine: RiskEngine,
  attempt: LoginAttempt,
  q: ReturnType<typeof loginQuery>,
  facts: LoginFacts,
): { signals: Signals; decision: RiskDecision; row: RiskEventRow } {
  if (facts.lastSuccess) facts.lastSuccess.place = placeOf(engine, facts.lastSuccess);
  const signals = deriveLoginSignals(facts, attempt, q.loc, engine.settings);
  const d = evaluate(engine.rules, signals);
  const row: RiskEventRow = {
    kind: 'login',
    customerId: attempt.customerId,
    method: attempt.method,
    result: d.decision === 'allow' ? 'success' : d.decision === 'step_up' ? 'step_up' : 'blocked',
    ip: attempt.ip,
    port: attempt.port,
    source: q.facts.source,
    sourceRange: q.facts.sourceRange,
    country: q.loc.country,
    asn: q.loc.asn,
    userAgent: attempt.userAgent,
    deviceHash: attempt.deviceHash,
    credentialId: attempt.credentialId,
    backedUp: attempt.backedUp,
    decision: d.decision,
    score: d.score,
    reasons: d.reasons,
    ruleVersion: d.ruleVersion,
    signals,
  };
  return { signals, decision: d, row };
}

/**
 * Decides on a sign-in whose credential was verified: gathers the facts (one query), applies
 * the rules, records the attempt with its decision and reasons, updates the customer's level.
 */
export async function assessLogin(
  engine: RiskEngine,
  db: Db,
  attempt: LoginAttempt,
): Promise<LoginAssessment> {
  if (!engine.config.enabled) return DETECTION_OFF(engine);
  const q = loginQuery(engine, attempt);
  return recordLogin(engine, db, attempt, q, await loginFacts(db, q.facts));
}

/**
 * What a verified sign-in is decided on, read in ONE statement: the account lock, whether this
 * browser's device token is known, and — detection on — the history's facts (so detection adds no
 * round trip of its own). `assess` then decides and records the sign-in as assessLogin does.
 */
export async function signInGate(
  engine: RiskEngine | undefined,
  db: Db,
  attempt: Omit<LoginAttempt, 'knownDevice'>,
): Promise<{
  lock: AccountLock;
  known: boolean;
  /** The customer has failures that the success must reset (recordAuthSuccess). */
  failuresPending: boolean;
  assess: () => Promise<LoginAssessment>;
}> {
  if (!engine?.config.enabled) {
    const read = await lockAndDevice(db, attempt.customerId, attempt.deviceHash);
    return { ...read, assess: async () => DETECTION_OFF(engine) };
  }
  const q = loginQuery(engine, { ...attempt, knownDevice: false });
  const { facts, ...read } = await signInFacts(db, q.facts, attempt.deviceHash);
  return {
    ...read,
    assess: () => recordLogin(engine, db, { ...attempt, knownDevice: read.known }, q, facts),
  };
}

/** Decides on a sign-in given its facts, and records it (the part of assessLogin after the facts). */
async function recordLogin(
  engine: RiskEngine,
  db: Db,
  attempt: LoginAttempt,
  q: ReturnType<typeof loginQuery>,
  facts: StoredLoginFacts,
): Promise<LoginAssessment> {
  const { signals, decision: d, row } = decideLogin(engine, attempt, q, facts);
  const level = levelOf(engine.rules, d);
  const clearRecovery = d.decision === 'allow';
  if (facts.stored?.level === level) {
    // The level stays: nothing to announce over Shared Signals, so no transaction is needed.
    const reasons = d.reasons.map((r) => r.rule);
    if (d.decision === 'allow' && !facts.recoveryLoginDue && reasons.join() === facts.stored.reasons.join()) {
      // The common sign-in: allowed, level and reasons as stored. The event is the only write.
      await insertRiskEvent(db, row);
      return { ...d, signals, level };
    }
    // Otherwise the event, the audit of a step-up or block and the new reasons in one statement.
    const audit = decisionAudit(`risk.login.${d.decision}`, attempt.customerId, attempt, d);
    if (await recordAtStoredLevel(db, row, { level, reasons, clearRecovery, audit }))
      return { ...d, signals, level };
    // The stored level changed since the facts were read: settle it (and announce it) below.
    const settled = await db.transaction((tx) =>
      applyLevel(engine, tx, attempt.customerId, d, { clearRecovery }),
    );
    return { ...d, signals, level: settled };
  }
  const settled = await db.transaction(async (tx) => {
    await insertRiskEvent(tx, row);
    await auditDecision(tx, `risk.login.${d.decision}`, attempt.customerId, attempt, d);
    return applyLevel(engine, tx, attempt.customerId, d, { clearRecovery });
  });
  return { ...d, signals, level: settled };
}

/** Records a failed sign-in (for velocity and forensics); no decision is taken on it. */
export async function recordLoginFailure(
  engine: RiskEngine,
  db: Queryable,
  f: RequestOrigin & {
    customerId?: string | undefined;
    credentialId?: string | undefined;
    method: string;
    reason: string;
    deviceHash?: string | undefined;
  },
): Promise<void> {
  if (!engine.config.enabled) return;
  const { loc, source, sourceRange } = whereFrom(engine, f.ip);
  await insertRiskEvent(db, {
    kind: 'login',
    customerId: f.customerId,
    method: f.method,
    result: 'failure',
    ip: f.ip,
    port: f.port,
    source,
    sourceRange,
    country: loc.country,
    asn: loc.asn,
    userAgent: f.userAgent,
    deviceHash: f.deviceHash,
    credentialId: f.credentialId,
    signals: { failure: f.reason },
  });
}

export interface OperationInput extends RequestOrigin {
  customerId: string;
  /** e.g. `passkey.remove`, `consent.revoke`, `withdrawal`. */
  operation: string;
  /** Counted towards the burst of sensitive operations. */
  sensitive: boolean;
  /** `session:<uid>` or `grant:<id>`: whose post-login risk applies. */
  sessionKey?: string | undefined;
  knownDevice?: boolean | undefined;
}

/** Decides on an important operation by a signed-in customer, and records it. */
export async function assessOperation(
  engine: RiskEngine,
  db: Db,
  op: OperationInput,
): Promise<LoginAssessment> {
  if (!engine.config.enabled) return DETECTION_OFF(engine);
  const { loc, source, sourceRange } = whereFrom(engine, op.ip);
  const res = await db.query<{ ops: number; travel: boolean; session: number | null }>(
    // Sensitive operations are counted per session: a fresh sign-in (a new session) starts over.
    `SELECT (SELECT count(*) FROM risk_events WHERE customer_id = $1 AND kind = 'operation' AND session_key = $3
               AND signals ->> 'sensitive' = 'true' AND at > now() - interval '1 hour')::int AS ops,
            EXISTS (SELECT 1 FROM travel_declarations WHERE customer_id = $1 AND country = $2
                    AND starts_at <= now() AND ends_at > now()) AS travel,
            (SELECT score FROM session_risk WHERE session_key = $3) AS session`,
    [op.customerId, loc.country ?? null, op.sessionKey ?? null],
  );
  const r = res.rows[0]!;
  const signals: Signals = {
    operation: op.operation,
    sensitive: op.sensitive,
    country: loc.country,
    asn: loc.asn,
    abroad: loc.country !== undefined && loc.country !== engine.settings.homeCountry,
    travelDeclared: r.travel,
    hostingSource: loc.asn !== undefined && engine.settings.hostingAsns.has(loc.asn),
    newDevice: op.knownDevice === undefined ? undefined : !op.knownDevice,
    sensitiveOpsPerHour: op.sensitive ? r.ops + 1 : r.ops,
    sessionScore: r.session ?? 0,
  };
  const d = evaluate(engine.rules, signals);
  const row: Parameters<typeof insertRiskEvent>[1] = {
    kind: 'operation',
    customerId: op.customerId,
    method: op.operation,
    // Only sensitive operations are held back; protective ones go ahead whatever the score.
    result:
      d.decision === 'allow' || !op.sensitive ? 'success' : d.decision === 'step_up' ? 'step_up' : 'blocked',
    ip: op.ip,
    port: op.port,
    source,
    sourceRange,
    country: loc.country,
    asn: loc.asn,
    userAgent: op.userAgent,
    sessionKey: op.sessionKey,
    decision: d.decision,
    score: d.score,
    reasons: d.reasons,
    ruleVersion: d.ruleVersion,
    signals,
  };
  // An allowed operation changes no level and audits nothing: the event is the only write.
  if (d.decision === 'allow') {
    await insertRiskEvent(db, row);
    return { ...d, signals, level: levelOf(engine.rules, d) };
  }
  const level = await db.transaction(async (tx) => {
    await insertRiskEvent(tx, row);
    await auditDecision(tx, `risk.operation.${d.decision}`, op.customerId, op, d);
    return op.sensitive ? applyLevel(engine, tx, op.customerId, d) : levelOf(engine.rules, d);
  });
  return { ...d, signals, level };
}

export interface ObservedRequest extends RequestOrigin {
  /** The token's or session's identity (the access token's jti, or `session:<uid>`). */
  trackingId: string;
  /** Where a raised risk is kept: `grant:<id>` or `session:<uid>`. */
  sessionKey: string;
  customerId: string;
  clientId?: string | undefined;
}

/**
 * Post-login detection on every read, cheaply: the first network (IPv4 /24, IPv6 /48, or the AS
 * when known) and user agent of a token are claimed in the database by the first node that sees it
 * (one statement per token and node), then compared in memory; only a change — or a burst of calls
 * — costs a transaction, which claims the change (so that it raises risk once in the hub, whichever
 * nodes see it) and raises the session's risk. Returns undefined (no work) in the common case, else
 * the promise of that work (its decision, or undefined when nothing was raised).
 */
export function observeRequest(
  engine: RiskEngine,
  db: Db,
  r: ObservedRequest,
): Promise<RiskDecision | undefined> | undefined {
  if (!engine.config.enabled) return undefined;
  if (!engine.tracked.has(r.trackingId)) return claimThenObserve(engine, db, r);
  return observeTracked(engine, db, r);
}

async function claimThenObserve(
  engine: RiskEngine,
  db: Db,
  r: ObservedRequest,
): Promise<RiskDecision | undefined> {
  const stored = await claimBaseline(db, r.trackingId, engine.tracked.baselineOf(r));
  engine.tracked.adopt(r.trackingId, stored);
  return observeTracked(engine, db, r);
}

function observeTracked(
  engine: RiskEngine,
  db: Db,
  r: ObservedRequest,
): Promise<RiskDecision | undefined> | undefined {
  const { signals, changes } = engine.tracked.observe(r);
  if (changes.length === 0) {
    const d = engine.tracked.decide(engine.rules, r.trackingId, signals);
    return d && db.transaction((tx) => recordObservation(engine, tx, r, signals, d));
  }
  return db
    .transaction(async (tx) => {
      // Only the changes no node reported yet count (rolled back with the rest if the record fails).
      const claimed = await claimChanges(tx, r.trackingId, changes);
      const fresh = {
        ...signals,
        networkChanged: changes.some((c) => c.startsWith('net:') && claimed.has(c)),
        userAgentChanged: changes.some((c) => c.startsWith('ua:') && claimed.has(c)),
      };
      const d = engine.tracked.decide(engine.rules, r.trackingId, fresh);
      return d && recordObservation(engine, tx, r, fresh, d);
    })
    .catch((err: unknown) => {
      engine.tracked.unreport(r.trackingId, changes);
      throw err;
    });
}

async function recordObservation(
  engine: RiskEngine,
  tx: Queryable,
  r: ObservedRequest,
  signals: Signals,
  d: RiskDecision,
): Promise<RiskDecision> {
  const { loc, source, sourceRange } = whereFrom(engine, r.ip);
  const total = await raiseSessionRisk(tx, {
    sessionKey: r.sessionKey,
    customerId: r.customerId,
    clientId: r.clientId,
    score: d.score,
    reasons: d.reasons.map((x) => x.rule),
  });
  await insertRiskEvent(tx, {
    kind: 'request',
    customerId: r.customerId,
    method: 'api',
    result: 'observed',
    ip: r.ip,
    port: r.port,
    source,
    sourceRange,
    country: loc.country,
    asn: loc.asn,
    userAgent: r.userAgent,
    sessionKey: r.sessionKey,
    clientId: r.clientId,
    decision: d.decision,
    score: d.score,
    reasons: d.reasons,
    ruleVersion: d.ruleVersion,
    signals: { ...signals, sessionScore: total },
  });
  await recordAudit(tx, {
    type: 'risk.session.raised',
    outcome: 'info',
    actor: 'system',
    customerId: r.customerId,
    clientId: r.clientId,
    ip: r.ip,
    userAgent: r.userAgent,
    data: { sessionKey: r.sessionKey, score: total, reasons: d.reasons.map((x) => x.rule) },
  });
  // The session's total decides the customer's level (one new network alone may not change it).
  const raised = { ...d, score: total };
  if (levelOf(engine.rules, raised) !== 'LOW') await applyLevel(engine, tx, r.customerId, raised);
  return { ...d, score: total };
}

export { sessionRisk };
