/**
 * A customer's daily limits (withdrawals, bank sweeps). Lowering takes effect at once; raising
 * needs a passkey sign-in within the last 5 minutes and waits for the policy's cool-off — so an
 * attacker inside a session cannot raise a limit and empty the account the same day. Both are
 * decided by the withdrawal-strength policy (raise_limit / lower_limit), audited and notified.
 */
import { recordAudit } from '../audit/index.ts';
import { type Db, lockCustomer, type Queryable } from '../db/index.ts';
import { enqueueNotification } from '../notify/index.ts';
import { type DecisionContext, decide } from './decide.ts';
import { LinkingError } from './errors.ts';
import type { PolicyDecision } from './policy/evaluatePolicy.ts';
import type { Policy } from './policy/parsePolicy.ts';

export const LIMIT_NAMES = ['withdrawal_daily', 'sweep_daily'] as const;
export type LimitName = (typeof LIMIT_NAMES)[number];
export type Limits = Record<LimitName, number>;

/** The largest limit a customer may set (yen). */
export const MAX_LIMIT = 1_000_000_000;

export interface PendingRaise {
  limit: LimitName;
  from: number;
  to: number;
  effectiveAt: Date;
}

export interface CustomerLimits {
  current: Limits;
  pending: PendingRaise[];
}

const JST_MS = 9 * 3_600_000;
/** Today's date in Japan (YYYY-MM-DD): daily limits restart at midnight JST. */
export const jstDay = (now = Date.now()) => new Date(now + JST_MS).toISOString().slice(0, 10);

/**
 * The customer's limits now, derived in the SELECT: a raise whose cool-off has ended counts as in
 * force, so a raise takes effect on time whether or not anything wrote it into customer_limits. A
 * read writes nothing — it runs on every withdrawal decision and every view of /account and the
 * console. Due raises are written into customer_limits, with the audit record `limits.raise.applied`,
 * by `applyDueLimitRaises`: in the periodic sweeper, and before any change of this customer's limits.
 */
export async function customerLimits(
  db: Queryable,
  customerId: string,
  defaults: Limits,
): Promise<CustomerLimits> {
  // One row at least (the left joins hang off a constant): the stored limits, then every raise not
  // yet written into them, whether still waiting (due = false) or already in force (due = true).
  const r = await db.query<{
    withdrawal_daily: string | null;
    sweep_daily: string | null;
    limit_name: LimitName | null;
    from_amount: string;
    to_amount: string;
    effective_at: Date;
    due: boolean;
  }>(
    `SELECT l.withdrawal_daily, l.sweep_daily, r.limit_name, r.from_amount, r.to_amount, r.effective_at,
            r.effective_at <= now() AS due
     FROM (VALUES (1)) AS one (x)
     LEFT JOIN customer_limits l ON l.customer_id = $1
     LEFT JOIN limit_raises r ON r.customer_id = $1 AND r.applied_at IS NULL AND r.cancelled_at IS NULL
     ORDER BY r.limit_name`,
    [customerId],
  );
  const stored = r.rows[0]!;
  const current: Limits =
    stored.withdrawal_daily === null || stored.sweep_daily === null
      ? { ...defaults }
      : { withdrawal_daily: Number(stored.withdrawal_daily), sweep_daily: Number(stored.sweep_daily) };
  const pending: PendingRaise[] = [];
  for (const row of r.rows) {
    if (row.limit_name === null) continue;
    if (row.due) current[row.limit_name] = Number(row.to_amount);
    else
      pending.push({
        limit: row.limit_name,
        from: Number(row.from_amount),
        to: Number(row.to_amount),
        effectiveAt: row.effective_at,
      });
  }
  return { current, pending };
}

/**
 * Writes raises whose cool-off has ended into customer_limits and records each in the audit log
 * (`limits.raise.applied`, with the moment it took effect) — of one customer, or of everyone (the
 * periodic sweeper, src/hub.ts). Reads do not need this (customerLimits derives the same limits); it
 * keeps the stored limits current, so that a change of a limit never starts from a stale one, and
 * gives forensics a record near the moment of effect (the request itself was audited as the policy's
 * raise_limit decision and told to the customer with its `effectiveAt`). Safe on many nodes at once:
 * each customer's raises are applied under that customer's row lock, and the claiming UPDATE …
 * RETURNING hands each raise to exactly one transaction; the audit records and limits are written in
 * that same transaction, so a raise is recorded once and never half-applied. Returns how many were
 * applied.
 */
export async function applyDueLimitRaises(
  db: Db,
  defaults: Limits,
  customerId?: string,
  batch = 500,
): Promise<number> {
  // Customer by customer, each under the customer's row lock taken first — the order every writer
  // of customer_limits follows (a limit change locks the customer, then applies its due raises):
  // claiming many customers' raises at once and writing their limits one by one deadlocked with a
  // customer lowering a limit meanwhile.
  let applied = 0;
  for (;;) {
    const due = await db.query<{ customer_id: string }>(
      `SELECT DISTINCT customer_id FROM limit_raises
       WHERE applied_at IS NULL AND cancelled_at IS NULL AND effective_at <= now()
         AND ($1::text IS NULL OR customer_id = $1)
       ORDER BY customer_id LIMIT $2`,
      [customerId ?? null, batch],
    );
    for (const { customer_id: id } of due.rows)
      applied += await db.transaction(async (tx) => {
        await lockCustomer(tx, id);
        return applyDueIn(tx, defaults, id, LIMIT_NAMES.length);
      });
    if (due.rowCount < batch) return applied;
  }
}

/** One batch of applyDueLimitRaises, inside the caller's transaction. */
async function applyDueIn(
  tx: Queryable,
  defaults: Limits,
  customerId: string | undefined,
  batch: number,
): Promise<number> {
  const due = await tx.query<{
    id: string;
    customer_id: string;
    limit_name: LimitName;
    from_amount: string;
    to_amount: string;
    effective_at: Date;
  }>(
    `UPDATE limit_raises SET applied_at = now()
     WHERE id IN (SELECT id FROM limit_raises
                  WHERE applied_at IS NULL AND cancelled_at IS NULL AND effective_at <= now()
                    AND ($1::text IS NULL OR customer_id = $1)
                  ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED)
       AND applied_at IS NULL AND cancelled_at IS NULL
     RETURNING id, customer_id, limit_name, from_amount, to_amount, effective_at`,
    [customerId ?? null, batch],
  );
  for (const d of due.rows) {
    await saveLimit(tx, d.customer_id, d.limit_name, Number(d.to_amount), defaults);
    await recordAudit(tx, {
      type: 'limits.raise.applied',
      outcome: 'success',
      actor: 'system',
      customerId: d.customer_id,
      data: {
        raiseId: d.id,
        limit: d.limit_name,
        from: Number(d.from_amount),
        to: Number(d.to_amount),
        effectiveAt: d.effective_at.toISOString(),
      },
    });
  }
  return due.rowCount;
}

/** Sets one limit; a customer without stored limits gets the defaults for the other. */
async function saveLimit(
  db: Queryable,
  customerId: string,
  limit: LimitName,
  amount: number,
  defaults: Limits,
): Promise<void> {
  const limits = { ...defaults, [limit]: amount };
  await db.query(
    `INSERT INTO customer_limits (customer_id, withdrawal_daily, sweep_daily) VALUES ($1, $2, $3)
     ON CONFLICT (customer_id) DO UPDATE SET
       withdrawal_daily = CASE WHEN $4 = 'withdrawal_daily' THEN EXCLUDED.withdrawal_daily
                               ELSE customer_limits.withdrawal_daily END,
       sweep_daily = CASE WHEN $4 = 'sweep_daily' THEN EXCLUDED.sweep_daily ELSE customer_limits.sweep_daily END,
       updated_at = now()`,
    [customerId, limits.withdrawal_daily, limits.sweep_daily, limit],
  );
}

export interface LimitChange {
  customerId: string;
  limit: LimitName;
  amount: number;
  /** How the customer is signed in now: acr and auth time (seconds since the epoch). */
  acr: string | undefined;
  authTime: number | undefined;
  frozen: boolean;
  actor: string;
  ip?: string | undefined;
}

export type LimitChangeResult =
  | { status: 'applied'; limits: CustomerLimits; decision: PolicyDecision }
  | { status: 'pending'; effectiveAt: Date; limits: CustomerLimits; decision: PolicyDecision };

const ACRS = new Set(['phrh', 'phr', 'otp']);

/**
 * Decides a raise (raise_limit: `acr` at `authTime`, seconds since the epoch) and, when allowed, makes
 * it with `apply` — in one transaction under the customer's lock, with the status read under it: a
 * freeze committed after the caller read `frozen` is seen, one in flight waits. A refusal is committed
 * (it stays in the audit log) and then thrown: LinkingError ERR_LIMIT_NEEDS_FRESH_PASSKEY /
 * ERR_LIMIT_DENIED. Raising a limit, switching a channel on and allowing a product are this decision.
 */
export async function raiseUnderLock<T>(
  db: Db,
  policy: Policy,
  who: { acr: string | undefined; authTime: number | undefined; frozen: boolean },
  context: DecisionContext,
  apply: (tx: Queryable, decision: PolicyDecision) => Promise<T>,
): Promise<{ decision: PolicyDecision; result: T }> {
  const authAgeSeconds =
    who.authTime === undefined ? Number.MAX_SAFE_INTEGER : Math.floor(Date.now() / 1000) - who.authTime;
  const acr = who.acr && ACRS.has(who.acr) ? (who.acr as 'phr' | 'phrh' | 'otp') : 'none';
  const outcome = await db.transaction(async (tx) => {
    await lockCustomer(tx, context.customerId);
    const status = await tx.query<{ status: string }>('SELECT status FROM customers WHERE id = $1', [
      context.customerId,
    ]);
    const frozen = who.frozen || status.rows[0]?.status === 'frozen';
    const decision = await decide(tx, policy, 'raise_limit', { acr, authAgeSeconds, frozen }, context);
    if (decision.decision !== 'allow') return { decision };
    return { decision, result: await apply(tx, decision) };
  });
  if (outcome.decision.decision === 'step_up') throw new LinkingError('ERR_LIMIT_NEEDS_FRESH_PASSKEY');
  if (!('result' in outcome)) throw new LinkingError('ERR_LIMIT_DENIED');
  return { decision: outcome.decision, result: outcome.result as T };
}

/**
 * Starts a change of one customer's limits: their changes wait for each other (the customer's row
 * lock), and raises that came due are written first — a lowering must not cancel a raise already in
 * force, nor a new raise replace one. `now()` is the transaction's start, so "due" and "waiting"
 * split the raises the same way in every statement of the change.
 */
async function beginLimitChange(tx: Queryable, customerId: string, defaults: Limits): Promise<void> {
  await lockCustomer(tx, customerId);
  await applyDueIn(tx, defaults, customerId, LIMIT_NAMES.length);
}

/** Cancels the raise of this limit still waiting, if any. */
async function cancelWaitingRaise(tx: Queryable, customerId: string, limit: LimitName): Promise<void> {
  await tx.query(
    `UPDATE limit_raises SET cancelled_at = now()
     WHERE customer_id = $1 AND limit_name = $2 AND applied_at IS NULL AND cancelled_at IS NULL`,
    [customerId, limit],
  );
}

/** Lowers at once or schedules a raise, as the policy decides. Throws LinkingError otherwise. */
export async function changeLimit(
  db: Db,
  policy: Policy,
  defaults: Limits,
  change: LimitChange,
): Promise<LimitChangeResult> {
  if (!Number.isSafeInteger(change.amount) || change.amount < 0 || change.amount > MAX_LIMIT)
    throw new LinkingError('ERR_LIMIT_INVALID');
  const before = await customerLimits(db, change.customerId, defaults);
  const from = before.current[change.limit];
  const context = {
    customerId: change.customerId,
    actor: change.actor,
    ip: change.ip,
    subject: { limit: change.limit, from, to: change.amount },
  };
  if (change.amount <= from) {
    // The decision, the change and its notice stand or fall together (a refusal is committed too).
    const decision = await db.transaction(async (tx) => {
      await beginLimitChange(tx, change.customerId, defaults);
      const decision = await decide(tx, policy, 'lower_limit', {}, context);
      if (decision.decision !== 'allow') return decision;
      await saveLimit(tx, change.customerId, change.limit, change.amount, defaults);
      // A raise still waiting would undo the lowering when its cool-off ends.
      await cancelWaitingRaise(tx, change.customerId, change.limit);
      if (change.amount !== from)
        await enqueueNotification(tx, {
          customerId: change.customerId,
          kind: 'limit_changed',
          data: { limit: change.limit, from, to: change.amount },
        });
      return decision;
    });
    if (decision.decision !== 'allow') throw new LinkingError('ERR_LIMIT_INVALID');
    return { status: 'applied', limits: await customerLimits(db, change.customerId, defaults), decision };
  }
  const { decision, result: effectiveAt } = await raiseUnderLock(
    db,
    policy,
    change,
    context,
    async (tx, d) => {
      await beginLimitChange(tx, change.customerId, defaults);
      await cancelWaitingRaise(tx, change.customerId, change.limit);
      const r = await tx.query<{ effective_at: Date }>(
        `INSERT INTO limit_raises (customer_id, limit_name, from_amount, to_amount, effective_at)
       VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5)) RETURNING effective_at`,
        [change.customerId, change.limit, from, change.amount, d.obligations.coolOffSeconds ?? 0],
      );
      const at = r.rows[0]!.effective_at;
      await enqueueNotification(tx, {
        customerId: change.customerId,
        kind: 'limit_changed',
        data: { limit: change.limit, from, to: change.amount, effectiveAt: at.toISOString() },
      });
      return at;
    },
  );
  return {
    status: 'pending',
    effectiveAt,
    limits: await customerLimits(db, change.customerId, defaults),
    decision,
  };
}

/** Yen withdrawn (allowed) today in Japan. */
export async function withdrawnToday(db: Queryable, customerId: string): Promise<number> {
  const r = await db.query<{ amount: string }>(
    'SELECT amount FROM withdrawal_usage WHERE customer_id = $1 AND day = $2',
    [customerId, jstDay()],
  );
  return Number(r.rows[0]?.amount ?? 0);
}

/** Counts an allowed withdrawal against today's limit. */
export async function recordWithdrawal(db: Queryable, customerId: string, amount: number): Promise<void> {
  await db.query(
    `INSERT INTO withdrawal_usage (customer_id, day, amount) VALUES ($1, $2, $3)
     ON CONFLICT (customer_id, day) DO UPDATE SET amount = withdrawal_usage.amount + EXCLUDED.amount`,
    [customerId, jstDay(), amount],
  );
}
