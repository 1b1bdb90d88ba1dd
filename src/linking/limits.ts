/**
 * A customer's daily limits (withdrawals, bank sweeps). Lowering takes effect at once; raising
 * needs a passkey sign-in within the last 5 minutes and waits for the policy's cool-off — so an
 * attacker inside a session cannot raise a limit and empty the account the same day. Both are
 * decided by the withdrawal-strength policy (raise_limit / lower_limit), audited and notified.
 */
import { recordAudit } from '../audit/index.ts';
import type { Db, Queryable } from '../db/index.ts';
import { notifyCustomer } from '../oidc/securityNotices.ts';
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
 * The customer's limits now: due raises are applied first (in one transaction), so a raise takes
 * effect when its cool-off ends even if no sweeper ran.
 */
export async function customerLimits(db: Db, customerId: string, defaults: Limits): Promise<CustomerLimits> {
  return db.transaction(async (tx) => {
    const due = await tx.query<{ limit_name: LimitName; to_amount: string }>(
      `UPDATE limit_raises SET applied_at = now()
       WHERE customer_id = $1 AND applied_at IS NULL AND cancelled_at IS NULL AND effective_at <= now()
       RETURNING limit_name, to_amount`,
      [customerId],
    );
    const row = await tx.query<{ withdrawal_daily: string; sweep_daily: string }>(
      'SELECT withdrawal_daily, sweep_daily FROM customer_limits WHERE customer_id = $1 FOR UPDATE',
      [customerId],
    );
    const current: Limits = row.rows[0]
      ? {
          withdrawal_daily: Number(row.rows[0].withdrawal_daily),
          sweep_daily: Number(row.rows[0].sweep_daily),
        }
      : { ...defaults };
    if (due.rowCount) {
      for (const d of due.rows) current[d.limit_name] = Number(d.to_amount);
      await saveLimits(tx, customerId, current);
      await recordAudit(tx, {
        type: 'limits.raise.applied',
        outcome: 'success',
        actor: 'system',
        customerId,
        data: { applied: due.rows.map((d) => ({ limit: d.limit_name, to: Number(d.to_amount) })) },
      });
    }
    const pending = await tx.query<{
      limit_name: LimitName;
      from_amount: string;
      to_amount: string;
      effective_at: Date;
    }>(
      `SELECT limit_name, from_amount, to_amount, effective_at FROM limit_raises
       WHERE customer_id = $1 AND applied_at IS NULL AND cancelled_at IS NULL ORDER BY limit_name`,
      [customerId],
    );
    return {
      current,
      pending: pending.rows.map((p) => ({
        limit: p.limit_name,
        from: Number(p.from_amount),
        to: Number(p.to_amount),
        effectiveAt: p.effective_at,
      })),
    };
  });
}

async function saveLimits(db: Queryable, customerId: string, limits: Limits): Promise<void> {
  await db.query(
    `INSERT INTO customer_limits (customer_id, withdrawal_daily, sweep_daily) VALUES ($1, $2, $3)
     ON CONFLICT (customer_id) DO UPDATE SET withdrawal_daily = EXCLUDED.withdrawal_daily,
       sweep_daily = EXCLUDED.sweep_daily, updated_at = now()`,
    [customerId, limits.withdrawal_daily, limits.sweep_daily],
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
 * The policy's raise_limit decision for a customer signed in with `acr` at `authTime` (seconds since
 * the epoch): allowed (with its cool-off), or LinkingError ERR_LIMIT_NEEDS_FRESH_PASSKEY / ERR_LIMIT_DENIED.
 * Raising a limit and switching a channel on are the same decision.
 */
export async function decideRaise(
  db: Queryable,
  policy: Policy,
  who: { acr: string | undefined; authTime: number | undefined; frozen: boolean },
  context: DecisionContext,
): Promise<PolicyDecision> {
  const authAgeSeconds =
    who.authTime === undefined ? Number.MAX_SAFE_INTEGER : Math.floor(Date.now() / 1000) - who.authTime;
  const acr = who.acr && ACRS.has(who.acr) ? (who.acr as 'phr' | 'phrh' | 'otp') : 'none';
  const decision = await decide(
    db,
    policy,
    'raise_limit',
    { acr, authAgeSeconds, frozen: who.frozen },
    context,
  );
  if (decision.decision === 'step_up') throw new LinkingError('ERR_LIMIT_NEEDS_FRESH_PASSKEY');
  if (decision.decision === 'deny') throw new LinkingError('ERR_LIMIT_DENIED');
  return decision;
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
    const decision = await decide(db, policy, 'lower_limit', {}, context);
    if (decision.decision !== 'allow') throw new LinkingError('ERR_LIMIT_INVALID');
    await db.transaction(async (tx) => {
      await saveLimits(tx, change.customerId, { ...before.current, [change.limit]: change.amount });
      // A raise still waiting would undo the lowering when its cool-off ends.
      await tx.query(
        `UPDATE limit_raises SET cancelled_at = now()
         WHERE customer_id = $1 AND limit_name = $2 AND applied_at IS NULL AND cancelled_at IS NULL`,
        [change.customerId, change.limit],
      );
    });
    if (change.amount !== from)
      await notifyCustomer(db, {
        customerId: change.customerId,
        kind: 'limit_changed',
        data: { limit: change.limit, from, to: change.amount },
      });
    return { status: 'applied', limits: await customerLimits(db, change.customerId, defaults), decision };
  }
  const decision = await decideRaise(db, policy, change, context);
  const coolOff = decision.obligations.coolOffSeconds ?? 0;
  const effectiveAt = await db.transaction(async (tx) => {
    await tx.query(
      `UPDATE limit_raises SET cancelled_at = now()
       WHERE customer_id = $1 AND limit_name = $2 AND applied_at IS NULL AND cancelled_at IS NULL`,
      [change.customerId, change.limit],
    );
    const r = await tx.query<{ effective_at: Date }>(
      `INSERT INTO limit_raises (customer_id, limit_name, from_amount, to_amount, effective_at)
       VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5)) RETURNING effective_at`,
      [change.customerId, change.limit, from, change.amount, coolOff],
    );
    return r.rows[0]!.effective_at;
  });
  await notifyCustomer(db, {
    customerId: change.customerId,
    kind: 'limit_changed',
    data: { limit: change.limit, from, to: change.amount, effectiveAt: effectiveAt.toISOString() },
  });
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
