/**
 * Initial access tokens (RFC 7591 §3): the operator issues one per client to be registered
 * (`kakehashi clients iat create`). The value is shown once; only its SHA-256 is stored. A
 * registration claims the token atomically, so two concurrent registrations cannot share it, and
 * gives it back when the registration is refused.
 */
import { createHash, randomBytes } from 'node:crypto';
import { recordAudit } from '../audit/index.ts';
import type { Queryable } from '../db/index.ts';

export const INITIAL_ACCESS_TOKEN_PREFIX = 'kiat_';

const hash = (value: string) => createHash('sha256').update(value).digest('base64url');

export interface IssuedInitialAccessToken {
  /** The bearer value: print it once, never store or log it. */
  value: string;
  expiresAt: Date;
}

export async function createInitialAccessToken(
  db: Queryable,
  ttlSeconds: number,
  actor: string,
): Promise<IssuedInitialAccessToken> {
  const value = `${INITIAL_ACCESS_TOKEN_PREFIX}${randomBytes(32).toString('base64url')}`;
  const res = await db.query<{ expires_at: Date }>(
    `INSERT INTO registration_initial_access_tokens (token_hash, created_by, expires_at)
     VALUES ($1, $2, now() + $3::float8 * interval '1 second') RETURNING expires_at`,
    [hash(value), actor, ttlSeconds],
  );
  const expiresAt = res.rows[0]!.expires_at;
  await recordAudit(db, {
    type: 'registration.iat.created',
    outcome: 'success',
    actor,
    data: { expiresAt: expiresAt.toISOString(), ref: reference(value) },
  });
  return { value, expiresAt };
}

/** A short, non-secret reference to a token for the audit log (first 8 characters of its hash). */
export const reference = (value: string) => hash(value).slice(0, 8);

/** Takes an unused, unexpired token for one registration; false when there is none such. */
export async function claimInitialAccessToken(db: Queryable, value: string): Promise<boolean> {
  const res = await db.query(
    `UPDATE registration_initial_access_tokens SET used_at = now()
     WHERE token_hash = $1 AND used_at IS NULL AND expires_at > now()`,
    [hash(value)],
  );
  return res.rowCount === 1;
}

/** The registration went through: the token stays used and names the client. */
export async function completeInitialAccessToken(db: Queryable, value: string, clientId: string) {
  await db.query('UPDATE registration_initial_access_tokens SET client_id = $2 WHERE token_hash = $1', [
    hash(value),
    clientId,
  ]);
}

/** The registration was refused: the token may be used again (until it expires). */
export async function releaseInitialAccessToken(db: Queryable, value: string) {
  await db.query(
    'UPDATE registration_initial_access_tokens SET used_at = NULL WHERE token_hash = $1 AND client_id IS NULL',
    [hash(value)],
  );
}
