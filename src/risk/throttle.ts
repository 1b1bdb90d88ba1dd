/**
 * Failed-authentication throttling and account lock.
 *
 * - A failing SOURCE (IPv4 address, IPv6 /64) is slowed down progressively: after `freeFailures`
 *   failures in the window, each further failure doubles the wait (capped), and requests from it are
 *   refused until the wait is over.
 * - Consecutive failures against one ACCOUNT lock it automatically (JSDA IV.1.(2)③) for
 *   `lockSeconds`, or until the customer re-proofs their identity or an operator unlocks it.
 * - The lock applies to devices the customer has never signed in from. A browser that already
 *   completed a sign-in for this customer (a known device) still gets in, so that someone hammering
 *   an account from elsewhere cannot keep its owner out (FSA comment 83).
 */
import { createHash, randomBytes } from 'node:crypto';
import { isIP } from 'node:net';
import { recordAudit } from '../audit/index.ts';
import type { Queryable } from '../db/index.ts';

export interface ThrottlePolicy {
  source: {
    /** Failures in the window before any delay applies. */
    freeFailures: number;
    windowSeconds: number;
    baseDelaySeconds: number;
    maxDelaySeconds: number;
  };
  account: {
    /** Consecutive failures that lock the account. */
    lockAfter: number;
    lockSeconds: number;
  };
}

export const DEFAULT_THROTTLE_POLICY: ThrottlePolicy = {
  source: { freeFailures: 5, windowSeconds: 900, baseDelaySeconds: 2, maxDelaySeconds: 900 },
  account: { lockAfter: 10, lockSeconds: 24 * 3600 },
};

/** The unit a source is throttled by: an IPv4 address, or the /64 of an IPv6 address. */
export function sourceKey(ip: string | undefined): string {
  if (!ip) return 'unknown';
  const v4mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip);
  if (v4mapped) return v4mapped[1]!;
  if (isIP(ip) !== 6) return ip;
  // Expand "::" and keep the first four hextets.
  const [head = '', tail = ''] = ip.toLowerCase().split('::');
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const full = ip.includes('::') ? [...h, ...Array(8 - h.length - t.length).fill('0'), ...t] : h;
  return `${full
    .slice(0, 4)
    .map((x) => x.replace(/^0+(?=.)/, ''))
    .join(':')}::/64`;
}

/** Seconds the source must still wait, 0 when it may try. */
export async function sourceRetryAfter(db: Queryable, source: string): Promise<number> {
  const res = await db.query<{ wait: number }>(
    `SELECT ceil(extract(epoch FROM blocked_until - now()))::int AS wait FROM auth_source_failures
     WHERE source = $1 AND blocked_until > now()`,
    [source],
  );
  return res.rows[0]?.wait ?? 0;
}

export interface FailureOutcome {
  /** Seconds the source now has to wait before its next try (0: none). */
  sourceRetryAfter: number;
  /** The account became locked by this failure. */
  accountLockedNow: boolean;
}

export interface FailureMeta {
  ip?: string | undefined;
  port?: number | undefined;
  userAgent?: string | undefined;
  interactionId?: string | undefined;
  reason: string;
}

/**
 * Takes an attempt slot against an account BEFORE its secret is checked (one-time codes, which can
 * be guessed): counted as a failure in advance, in one atomic statement, so of any number of
 * parallel guesses at most `lockAfter` are ever checked before the lock; a success resets the count
 * (recordAuthSuccess), a failure then only locks (recordAuthFailure with `attemptCounted`). Refused
 * (false) while the account is locked or its slots are taken. A lock that has run out gives one
 * slot: the count stays at the limit, so the next failure locks again at once.
 */
export async function takeAccountAttempt(
  db: Queryable,
  customerId: string,
  policy: ThrottlePolicy = DEFAULT_THROTTLE_POLICY,
): Promise<boolean> {
  const res = await db.query(
    `INSERT INTO account_lockouts AS l (customer_id, consecutive_failures) VALUES ($1, 1)
     ON CONFLICT (customer_id) DO UPDATE SET
       consecutive_failures = CASE WHEN l.locked_until <= now() THEN greatest(l.consecutive_failures, $2)
                                   ELSE l.consecutive_failures + 1 END,
       locked_until = CASE WHEN l.locked_until <= now() THEN NULL ELSE l.locked_until END
     WHERE NOT l.reproofing_required AND (l.locked_until IS NULL OR l.locked_until <= now())
       AND (l.consecutive_failures < $2 OR l.locked_until <= now())
     RETURNING 1`,
    [customerId, policy.account.lockAfter],
  );
  return res.rowCount === 1;
}

/**
 * Gives back a slot whose attempt turned out not to be a wrong secret (a right code refused for
 * another reason: the customer is frozen, the risk rules or the lock refused it), so such attempts
 * cannot fill the slots without ever locking. An applied lock stays.
 */
export async function releaseAccountAttempt(db: Queryable, customerId: string): Promise<void> {
  await db.query(
    `UPDATE account_lockouts SET consecutive_failures = greatest(consecutive_failures - 1, 0)
     WHERE customer_id = $1 AND consecutive_failures > 0`,
    [customerId],
  );
}

/**
 * Records one failed authentication from `source`, against `customerId` when the failure could be
 * attributed to an account (a registered passkey that failed verification, a wrong code). Atomic per
 * row, so concurrent failures are all counted. With `attemptCounted` the account's count was taken
 * before the check (takeAccountAttempt): only the lock is applied here, once.
 */
export async function recordAuthFailure(
  db: Queryable,
  input: { source: string; customerId?: string | undefined; attemptCounted?: boolean },
  meta: FailureMeta,
  policy: ThrottlePolicy = DEFAULT_THROTTLE_POLICY,
): Promise<FailureOutcome> {
  const s = policy.source;
  // A window older than windowSeconds starts over; past the free failures the delay doubles each time.
  const src = await db.query<{ wait: number }>(
    `INSERT INTO auth_source_failures AS f (source, failures, window_started, last_failure_at)
     VALUES ($1, 1, now(), now())
     ON CONFLICT (source) DO UPDATE SET
       failures = CASE WHEN f.window_started < now() - make_interval(secs => $2) THEN 1 ELSE f.failures + 1 END,
       window_started = CASE WHEN f.window_started < now() - make_interval(secs => $2) THEN now() ELSE f.window_started END,
       last_failure_at = now()
     RETURNING CASE WHEN failures > $3
       THEN least($5::float8, $4::float8 * power(2, failures - $3 - 1))::int ELSE 0 END AS wait`,
    [input.source, s.windowSeconds, s.freeFailures, s.baseDelaySeconds, s.maxDelaySeconds],
  );
  const wait = src.rows[0]?.wait ?? 0;
  if (wait > 0) {
    await db.query(
      `UPDATE auth_source_failures SET blocked_until = now() + make_interval(secs => $2) WHERE source = $1`,
      [input.source, wait],
    );
  }
  let lockedNow = false;
  if (input.customerId && input.attemptCounted) {
    // The slot already counted this failure. The row lock makes exactly one of concurrent failures
    // at the limit the one that locks (the others re-read locked_until and match nothing).
    const acc = await db.query<{ locked_now: boolean; failures: number }>(
      `WITH prev AS (
         SELECT customer_id, consecutive_failures >= $2 AND (locked_until IS NULL OR locked_until <= now()) AS lock
         FROM account_lockouts WHERE customer_id = $1 FOR UPDATE
       )
       UPDATE account_lockouts l SET last_failure_at = now(),
         locked_at = CASE WHEN prev.lock THEN now() ELSE l.locked_at END,
         locked_until = CASE WHEN prev.lock THEN now() + make_interval(secs => $3) ELSE l.locked_until END
       FROM prev WHERE l.customer_id = prev.customer_id
       RETURNING l.consecutive_failures AS failures, prev.lock AS locked_now`,
      [input.customerId, policy.account.lockAfter, policy.account.lockSeconds],
    );
    lockedNow = acc.rows[0]?.locked_now ?? false;
    if (lockedNow) await auditLock(db, input.customerId, acc.rows[0]?.failures, meta, policy);
  } else if (input.customerId) {
    const acc = await db.query<{ locked_now: boolean; failures: number }>(
      `INSERT INTO account_lockouts AS l (customer_id, consecutive_failures, last_failure_at)
       VALUES ($1, 1, now())
       ON CONFLICT (customer_id) DO UPDATE SET consecutive_failures = l.consecutive_failures + 1, last_failure_at = now()
       RETURNING consecutive_failures AS failures,
         (consecutive_failures >= $2 AND (locked_until IS NULL OR locked_until <= now())) AS locked_now`,
      [input.customerId, policy.account.lockAfter],
    );
    lockedNow = acc.rows[0]?.locked_now ?? false;
    if (lockedNow) {
      await db.query(
        `UPDATE account_lockouts SET locked_at = now(), locked_until = now() + make_interval(secs => $2)
         WHERE customer_id = $1`,
        [input.customerId, policy.account.lockSeconds],
      );
      await auditLock(db, input.customerId, acc.rows[0]?.failures, meta, policy);
    }
  }
  await recordAudit(db, {
    type: 'risk.auth.failure',
    outcome: 'failure',
    customerId: input.customerId,
    ip: meta.ip,
    port: meta.port,
    userAgent: meta.userAgent,
    interactionId: meta.interactionId,
    data: { source: input.source, reason: meta.reason, sourceRetryAfter: wait },
  });
  return { sourceRetryAfter: wait, accountLockedNow: lockedNow };
}

function auditLock(
  db: Queryable,
  customerId: string,
  failures: number | undefined,
  meta: FailureMeta,
  policy: ThrottlePolicy,
) {
  return recordAudit(db, {
    type: 'risk.account.locked',
    outcome: 'info',
    actor: 'system',
    customerId,
    ip: meta.ip,
    userAgent: meta.userAgent,
    interactionId: meta.interactionId,
    data: { consecutiveFailures: failures, lockSeconds: policy.account.lockSeconds, reason: meta.reason },
  });
}

export interface AccountLock {
  locked: boolean;
  /** Null while locked: no end (re-proofing required). */
  lockedUntil: Date | null;
  /**
   * A peer institution saw the account taken over (shared signal require_reproofing): only
   * re-proofing or an operator lifts the lock, and known devices are refused too.
   */
  reproofingRequired: boolean;
}

/** The lock's columns over account_lockouts under `alias` (store.ts's gate statement reads them too). */
export const lockColumns = (alias: string) =>
  `CASE WHEN ${alias}.reproofing_required THEN NULL ELSE ${alias}.locked_until END AS locked_until, ${alias}.reproofing_required, ${alias}.customer_id IS NOT NULL AS locked`;
/** The join condition that keeps only a lock in force. */
export const lockedWhere = (alias: string) =>
  `(${alias}.locked_until > now() OR ${alias}.reproofing_required)`;
export interface LockRow {
  locked_until: Date | null;
  reproofing_required: boolean | null;
  locked: boolean;
}
export const lockOf = (row: LockRow): AccountLock => ({
  locked: row.locked,
  lockedUntil: row.locked_until ?? null,
  reproofingRequired: row.reproofing_required ?? false,
});

export async function accountLock(db: Queryable, customerId: string): Promise<AccountLock> {
  const res = await db.query<LockRow>(
    `SELECT ${lockColumns('a')} FROM (SELECT 1) AS one
     LEFT JOIN account_lockouts a ON a.customer_id = $1 AND ${lockedWhere('a')}`,
    [customerId],
  );
  return lockOf(res.rows[0]!);
}

/**
 * Whether the customer ($1) has failures a success must reset (recordAuthSuccess): read with the lock,
 * so that the common sign-in, with none, skips that statement.
 */
export const failuresPendingColumn = `EXISTS (SELECT 1 FROM account_lockouts
  WHERE customer_id = $1 AND consecutive_failures > 0) AS failures_pending`;

/** The account lock, whether a device hash is known for the customer and failures are pending, in one statement. */
export async function lockAndDevice(
  db: Queryable,
  customerId: string,
  hash: string | undefined,
): Promise<{ lock: AccountLock; known: boolean; failuresPending: boolean }> {
  const res = await db.query<LockRow & { known: boolean; failures_pending: boolean }>(
    `SELECT ${lockColumns('a')},
            EXISTS (SELECT 1 FROM known_devices WHERE device_hash = $2 AND customer_id = $1) AS known,
            ${failuresPendingColumn}
     FROM (SELECT 1) AS one
     LEFT JOIN account_lockouts a ON a.customer_id = $1 AND ${lockedWhere('a')}`,
    [customerId, hash ?? null],
  );
  const r = res.rows[0]!;
  return { lock: lockOf(r), known: hash !== undefined && r.known, failuresPending: r.failures_pending };
}

/** Ends the run of failures after a verified sign-in (call it when the gate saw failures pending). */
export async function recordAuthSuccess(db: Queryable, customerId: string): Promise<void> {
  await db.query(
    'UPDATE account_lockouts SET consecutive_failures = 0 WHERE customer_id = $1 AND consecutive_failures > 0',
    [customerId],
  );
}

/**
 * An operator lifts a lock. Audited; returns whether a lock was lifted. A re-proofing lifts it
 * through clearAfterReproofing (reproofing.ts), which also ends what peers raised.
 */
export async function unlockAccount(
  db: Queryable,
  customerId: string,
  by: `operator:${string}`,
): Promise<boolean> {
  return liftLock(db, customerId, by);
}

/**
 * Lifts a lock (`by`: 'reproofing' or `operator:<name>`), audited; whether a lock was lifted — only
 * when one was in force at that moment: counted failures alone, or a lock whose time had run out, are
 * reset silently (nothing to tell the customer "unlocked" about). `receivedBefore` (a re-proofing:
 * when its proof began): a peer's demand for re-proofing received at or after it is not answered by
 * this proof and keeps the account locked.
 */
export async function liftLock(
  db: Queryable,
  customerId: string,
  by: string,
  receivedBefore?: Date,
): Promise<boolean> {
  const kept =
    'COALESCE(l.reproofing_required AND COALESCE(l.reproofing_required_at, l.locked_at) >= $2, false)';
  // Whether a lock was in force is read from the row as it was (RETURNING shows it as updated); the
  // row lock makes a concurrent lift wait and then see this one's result.
  const res = await db.query<{ kept: boolean; in_force: boolean }>(
    `WITH prev AS (
       SELECT customer_id, COALESCE(${lockedWhere('a')}, false) AS in_force FROM account_lockouts a
       WHERE customer_id = $1 FOR UPDATE
     )
     UPDATE account_lockouts l SET consecutive_failures = 0,
       locked_until = CASE WHEN ${kept} THEN l.locked_until END, reproofing_required = ${kept}
     FROM prev WHERE l.customer_id = prev.customer_id
       AND (l.locked_until IS NOT NULL OR l.consecutive_failures > 0 OR l.reproofing_required)
     RETURNING l.reproofing_required AS kept, prev.in_force`,
    [customerId, receivedBefore ?? null],
  );
  const row = res.rows[0];
  const lifted = row?.in_force === true && !row.kept;
  if (lifted)
    await recordAudit(db, {
      type: 'risk.account.unlocked',
      outcome: 'info',
      actor: by,
      customerId,
      data: { by },
    });
  return lifted;
}

/** What known_devices keeps of a browser's device cookie. */
export const deviceHash = (token: string) => createHash('sha256').update(token).digest('base64url');

/**
 * Remembers this browser as one the customer signed in from. Returns the device token to keep in
 * the browser's cookie (the one passed in when the browser already had one).
 */
export async function rememberDevice(
  db: Queryable,
  customerId: string,
  existingToken: string | undefined,
  userAgent: string | undefined,
): Promise<string> {
  const token =
    existingToken && /^[A-Za-z0-9_-]{43}$/.test(existingToken)
      ? existingToken
      : randomBytes(32).toString('base64url');
  await db.query(
    `INSERT INTO known_devices (device_hash, customer_id, user_agent) VALUES ($1, $2, $3)
     ON CONFLICT (device_hash, customer_id) DO UPDATE SET last_used_at = now(), user_agent = EXCLUDED.user_agent`,
    [deviceHash(token), customerId, userAgent?.slice(0, 256) ?? null],
  );
  return token;
}

export async function isKnownDevice(
  db: Queryable,
  customerId: string,
  token: string | undefined,
): Promise<boolean> {
  if (!token) return false;
  const res = await db.query('SELECT 1 FROM known_devices WHERE device_hash = $1 AND customer_id = $2', [
    deviceHash(token),
    customerId,
  ]);
  return res.rowCount === 1;
}
