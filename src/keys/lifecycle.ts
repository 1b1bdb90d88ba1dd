/**
 * Signing-key lifecycle: next → current → previous → retired, shared by every node through the
 * signing_keys table (docs/key-rotation.md).
 *
 * - `rotateSigningKeys` adds a `next` key per algorithm; it is published at once and signs from
 *   `activated_at` (now + keys.activateAfterSeconds), when clients' JWKS caches know it.
 * - `advanceKeyLifecycle` (every node, every keys.pollSeconds) promotes due `next` keys (the current
 *   one becomes `previous`, scheduled to retire when everything it signed has expired), retires due
 *   `previous` keys (their private halves are erased) and, with keys.rotateEveryDays, rotates old keys.
 * - `watchSigningKeys` re-reads the keys when the table changed and hands the new material over.
 *
 * Times come from the database clock, so nodes with skewed clocks still agree.
 */
import { recordAudit } from '../audit/index.ts';
import type { Config } from '../config/index.ts';
import type { Db, Queryable } from '../db/index.ts';
import { encryptAtRest } from './atRest.ts';
import {
  KEYS_LOCK_ID,
  type KeyMaterial,
  loadKeyMaterial,
  newSigningKey,
  SIGNING_ALGS,
  type SigningAlg,
} from './material.ts';

/** oidc-provider's fixed lifetime of logout tokens and JARM responses (lib/models/id_token.js). */
const FIXED_JWT_LIFETIME_SECONDS = 120;

export interface KeyLifecycleSettings {
  /** Seconds a new key is published before it signs. */
  activateAfterSeconds: number;
  /** Seconds a replaced key stays published (the longest lifetime of what it signed, plus margins). */
  retainSeconds: number;
  /** Rotate automatically when a current key is this many days old. */
  rotateEveryDays: number | undefined;
}

/**
 * Everything the hub signs with these keys expires within max(idTokenTtl, 120 s): ID tokens, logout
 * tokens and JARM responses (120 s). Access tokens are opaque; signed introspection and userinfo
 * responses carry no exp and are consumed on receipt. Plus the clock tolerance verifiers allow, and
 * one poll interval (a node may sign with the old key until it has seen the promotion).
 */
export function keyLifecycleSettings(config: Config): KeyLifecycleSettings {
  return {
    activateAfterSeconds: config.keys.activateAfterSeconds,
    retainSeconds:
      Math.max(config.oidc.idTokenTtl, FIXED_JWT_LIFETIME_SECONDS) +
      config.oidc.clockToleranceSeconds +
      config.keys.pollSeconds,
    rotateEveryDays: config.keys.rotateEveryDays,
  };
}

export function isSigningAlg(value: string): value is SigningAlg {
  return (SIGNING_ALGS as readonly string[]).includes(value);
}

export interface RotationResult {
  alg: SigningAlg;
  kid: string;
  activatesAt: Date;
  /** False when a next key was already waiting: rotation is idempotent until it activates. */
  created: boolean;
}

async function insertNext(
  tx: Queryable,
  kek: Buffer,
  alg: SigningAlg,
  activateAfterSeconds: number,
): Promise<RotationResult> {
  const { privateJwk, publicJwk } = newSigningKey(alg);
  const res = await tx.query<{ activated_at: Date }>(
    `INSERT INTO signing_keys (kid, alg, public_jwk, private_jwk_enc, status, activated_at)
     VALUES ($1, $2, $3, $4, 'next', now() + make_interval(secs => $5))
     RETURNING activated_at`,
    [
      privateJwk.kid,
      alg,
      JSON.stringify(publicJwk),
      encryptAtRest(kek, JSON.stringify(privateJwk), privateJwk.kid),
      activateAfterSeconds,
    ],
  );
  return { alg, kid: privateJwk.kid, activatesAt: res.rows[0]!.activated_at, created: true };
}

/**
 * Adds a `next` key for each algorithm (all by default). A second call before activation returns the
 * waiting key instead of adding another. `activateAfterSeconds` 0 lets the next poll promote it.
 */
export async function rotateSigningKeys(
  db: Db,
  kek: Buffer,
  options: { algs?: readonly SigningAlg[]; activateAfterSeconds: number; actor: string },
): Promise<RotationResult[]> {
  const algs = options.algs?.length ? options.algs : SIGNING_ALGS;
  return db.transaction(async (tx) => {
    await tx.query('SELECT pg_advisory_xact_lock($1)', [KEYS_LOCK_ID]);
    const results: RotationResult[] = [];
    for (const alg of algs) {
      const waiting = await tx.query<{ kid: string; activated_at: Date }>(
        "SELECT kid, activated_at FROM signing_keys WHERE alg = $1 AND status = 'next'",
        [alg],
      );
      const row = waiting.rows[0];
      results.push(
        row
          ? { alg, kid: row.kid, activatesAt: row.activated_at, created: false }
          : await insertNext(tx, kek, alg, options.activateAfterSeconds),
      );
    }
    await recordAudit(tx, {
      type: 'keys.rotation_started',
      outcome: 'info',
      actor: options.actor,
      data: {
        keys: results.map(({ alg, kid, activatesAt, created }) => ({ alg, kid, activatesAt, created })),
      },
    });
    return results;
  });
}

export interface LifecycleChanges {
  promoted: { alg: string; kid: string; replaced: string | undefined }[];
  retired: { alg: string; kid: string }[];
  rotated: RotationResult[];
}

/** Promotes, retires and (on schedule) rotates what is due. Safe on every node at once. */
export async function advanceKeyLifecycle(
  db: Db,
  kek: Buffer,
  settings: KeyLifecycleSettings,
): Promise<LifecycleChanges> {
  const none: LifecycleChanges = { promoted: [], retired: [], rotated: [] };
  // Cheap check first, so that idle polls of many nodes do not queue on the advisory lock.
  const due = await db.query<{ due: boolean }>(dueQuery, [settings.rotateEveryDays ?? null]);
  if (!due.rows[0]?.due) return none;
  return db.transaction(async (tx) => {
    await tx.query('SELECT pg_advisory_xact_lock($1)', [KEYS_LOCK_ID]);
    const changes: LifecycleChanges = { promoted: [], retired: [], rotated: [] };
    const next = await tx.query<{ kid: string; alg: string }>(
      "SELECT kid, alg FROM signing_keys WHERE status = 'next' AND activated_at <= now() ORDER BY alg",
    );
    for (const { kid, alg } of next.rows) {
      const demoted = await tx.query<{ kid: string }>(
        `UPDATE signing_keys SET status = 'previous', retired_at = now() + make_interval(secs => $2)
         WHERE alg = $1 AND status = 'current' RETURNING kid`,
        [alg, settings.retainSeconds],
      );
      await tx.query("UPDATE signing_keys SET status = 'current', activated_at = now() WHERE kid = $1", [
        kid,
      ]);
      changes.promoted.push({ alg, kid, replaced: demoted.rows[0]?.kid });
    }
    // The private half of a retired key is erased: it never signs again, and only its public half
    // still verifies id_token_hints (see loadKeyMaterial).
    const retired = await tx.query<{ kid: string; alg: string }>(
      `UPDATE signing_keys SET status = 'retired', private_jwk_enc = ''
       WHERE status = 'previous' AND retired_at <= now() RETURNING kid, alg`,
    );
    changes.retired.push(...retired.rows);
    if (settings.rotateEveryDays !== undefined) {
      const old = await tx.query<{ alg: string }>(
        `SELECT c.alg FROM signing_keys c
         WHERE c.status = 'current' AND c.activated_at <= now() - make_interval(days => $1)
           AND NOT EXISTS (SELECT 1 FROM signing_keys n WHERE n.alg = c.alg AND n.status = 'next')`,
        [settings.rotateEveryDays],
      );
      for (const { alg } of old.rows)
        if (isSigningAlg(alg))
          changes.rotated.push(await insertNext(tx, kek, alg, settings.activateAfterSeconds));
    }
    if (changes.promoted.length || changes.retired.length || changes.rotated.length)
      await recordAudit(tx, {
        type: 'keys.lifecycle',
        outcome: 'info',
        actor: 'system',
        data: { ...changes },
      });
    return changes;
  });
}

const dueQuery = `SELECT
  EXISTS (SELECT 1 FROM signing_keys WHERE status = 'next' AND activated_at <= now())
  OR EXISTS (SELECT 1 FROM signing_keys WHERE status = 'previous' AND retired_at <= now())
  OR ($1::int IS NOT NULL AND EXISTS (
    SELECT 1 FROM signing_keys c
    WHERE c.status = 'current' AND c.activated_at <= now() - make_interval(days => $1::int)
      AND NOT EXISTS (SELECT 1 FROM signing_keys n WHERE n.alg = c.alg AND n.status = 'next'))) AS due`;

export interface SigningKeyInfo {
  kid: string;
  alg: string;
  status: 'next' | 'current' | 'previous' | 'retired';
  createdAt: Date;
  /** next: when it will sign; otherwise when it started to. */
  activatedAt: Date | null;
  /** previous: when it will leave the JWKS; retired: when it left. */
  retiredAt: Date | null;
}

export async function listSigningKeys(q: Queryable): Promise<SigningKeyInfo[]> {
  const res = await q.query<{
    kid: string;
    alg: string;
    status: SigningKeyInfo['status'];
    created_at: Date;
    activated_at: Date | null;
    retired_at: Date | null;
  }>(
    `SELECT kid, alg, status, created_at, activated_at, retired_at FROM signing_keys
     ORDER BY CASE status WHEN 'next' THEN 0 WHEN 'current' THEN 1 WHEN 'previous' THEN 2 ELSE 3 END,
              alg, created_at DESC`,
  );
  return res.rows.map((r) => ({
    kid: r.kid,
    alg: r.alg,
    status: r.status,
    createdAt: r.created_at,
    activatedAt: r.activated_at,
    retiredAt: r.retired_at,
  }));
}

/** Changes whenever a key is added or changes status: what a node compares to know it must reload. */
async function keysVersion(q: Queryable): Promise<string> {
  const res = await q.query<{ v: string | null }>(
    "SELECT string_agg(kid || ':' || status, ',' ORDER BY kid) AS v FROM signing_keys",
  );
  return res.rows[0]?.v ?? '';
}

export interface SigningKeyWatcher {
  /** Advances the lifecycle and reloads now if anything changed (tests; the CLI after a rotation). */
  refresh(): Promise<void>;
  stop(): void;
}

export interface WatchSigningKeysOptions {
  db: Db;
  kek: Buffer;
  config: Config;
  /** Gets the new material whenever the keys changed; must not throw. */
  onChange(material: KeyMaterial): void;
  onError(err: unknown): void;
  onLifecycle?(changes: LifecycleChanges): void;
}

/**
 * Every node polls (keys.pollSeconds): advances the lifecycle, and reloads its keys when the table
 * changed, whoever changed it (another node, the CLI). A failed poll keeps the keys it had.
 */
export function watchSigningKeys(o: WatchSigningKeysOptions): SigningKeyWatcher {
  const settings = keyLifecycleSettings(o.config);
  const loadOptions = { verifyRetiredForSeconds: o.config.oidc.sessionTtl };
  // Unknown at first: the first poll reloads once, so a change made between the node's first load
  // and this watcher's start is not missed.
  let version: string | undefined;
  let running: Promise<void> | undefined;
  const tick = async () => {
    const changes = await advanceKeyLifecycle(o.db, o.kek, settings);
    if (changes.promoted.length || changes.retired.length || changes.rotated.length) o.onLifecycle?.(changes);
    const now = await keysVersion(o.db);
    if (now === version) return;
    const material = await loadKeyMaterial(o.db, o.kek, loadOptions);
    version = now;
    o.onChange(material);
  };
  // One poll at a time: a slow database must not pile polls up.
  const refresh = () => {
    running ??= tick().finally(() => {
      running = undefined;
    });
    return running;
  };
  const timer = setInterval(() => {
    refresh().catch(o.onError);
  }, o.config.keys.pollSeconds * 1000);
  timer.unref();
  return {
    refresh,
    stop: () => clearInterval(timer),
  };
}
