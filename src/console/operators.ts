/**
 * Operators: institution staff, not customers. Their own table, passkeys and sessions; an
 * operator is added by the CLI with a role and enrolls a passkey with a one-time ticket printed
 * once. WebAuthn challenges share webauthn_challenges with the customers' ceremonies (no customer,
 * an interaction id of their own), so the sweep and single use apply to them too.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import {
  type AuthenticationResponseJSON,
  generateRegistrationOptions,
  type PublicKeyCredentialCreationOptionsJSON,
  type RegistrationResponseJSON,
  verifyAuthenticationResponse,
  verifyRegistrationResponse,
} from '@simplewebauthn/server';
import { recordAudit } from '../audit/index.ts';
import { type AuthnContext, clientChallenge, type RequestMeta } from '../authn/index.ts';
import type { Db, Queryable } from '../db/index.ts';
import { ConsoleError } from './errors.ts';

export const ROLES = ['viewer', 'operator', 'admin'] as const;
export type Role = (typeof ROLES)[number];
const RANK: Record<Role, number> = { viewer: 0, operator: 1, admin: 2 };
export const hasRole = (have: Role, need: Role) => RANK[have] >= RANK[need];

/** Operator enrollment tickets live a day: handed over in person or by phone, then used at once. */
export const OPERATOR_TICKET_SECONDS = 24 * 3600;
/** A console session lasts one working day at most. */
export const CONSOLE_SESSION_SECONDS = 8 * 3600;
const CHALLENGE_SECONDS = 300;
const SUPPORTED_ALGORITHM_IDS = [-7, -257, -8];
const NAME = /^[a-z0-9][a-z0-9._-]{1,39}$/;

export interface Operator {
  id: string;
  name: string;
  role: Role;
  status: 'active' | 'disabled';
  createdAt: Date;
  passkeys: number;
}

const sha256 = (s: string) => createHash('sha256').update(s).digest('hex');

function normalizeSecret(input: unknown): string | undefined {
  if (typeof input !== 'string' || input.length > 100) return undefined;
  const s = input.normalize('NFKC').replace(/[\s-]/g, '').replace(/^OPK/i, '').toLowerCase();
  return /^[0-9a-f]{32}$/.test(s) ? s : undefined;
}

/** Adds an operator and returns its one-time enrollment ticket (shown once, only its hash kept). */
export async function addOperator(
  db: Db,
  input: { name: string; role: Role; by: string },
): Promise<{ operatorId: string; ticket: string; expiresAt: Date }> {
  if (!NAME.test(input.name)) throw new ConsoleError('ERR_OPERATOR_NAME');
  if (!ROLES.includes(input.role)) throw new ConsoleError('ERR_OPERATOR_ROLE');
  const operatorId = `opr_${randomBytes(12).toString('base64url')}`;
  return db.transaction(async (tx) => {
    const created = await tx.query(
      `INSERT INTO operators (id, name, role, created_by, user_handle) VALUES ($1, $2, $3, $4, $5)
       ON CONFLICT (name) DO NOTHING RETURNING id`,
      [operatorId, input.name, input.role, input.by, randomBytes(32).toString('base64url')],
    );
    if (created.rowCount === 0) throw new ConsoleError('ERR_OPERATOR_EXISTS');
    const t = await issueTicket(tx, operatorId, input.by);
    await recordAudit(tx, {
      type: 'console.operator.added',
      outcome: 'success',
      actor: input.by,
      data: { operator: input.name, role: input.role, ticketId: t.ticketId },
    });
    return { operatorId, ticket: t.ticket, expiresAt: t.expiresAt };
  });
}

/** A new ticket for an existing operator (a lost device); older open tickets stop working. */
export async function reissueOperatorTicket(
  db: Db,
  name: string,
  by: string,
): Promise<{ ticket: string; expiresAt: Date }> {
  return db.transaction(async (tx) => {
    const op = await tx.query<{ id: string }>(
      "SELECT id FROM operators WHERE name = $1 AND status = 'active'",
      [name],
    );
    if (!op.rows[0]) throw new ConsoleError('ERR_OPERATOR_UNKNOWN');
    const t = await issueTicket(tx, op.rows[0].id, by);
    await recordAudit(tx, {
      type: 'console.operator.ticket_issued',
      outcome: 'success',
      actor: by,
      data: { operator: name, ticketId: t.ticketId },
    });
    return t;
  });
}

async function issueTicket(tx: Queryable, operatorId: string, by: string) {
  const secret = randomBytes(16).toString('hex');
  const ticketId = `otk_${randomBytes(12).toString('base64url')}`;
  await tx.query(
    'UPDATE operator_enrollment_tickets SET voided_at = now() WHERE operator_id = $1 AND used_at IS NULL AND voided_at IS NULL',
    [operatorId],
  );
  const row = await tx.query<{ expires_at: Date }>(
    `INSERT INTO operator_enrollment_tickets (id, operator_id, secret_hash, issued_by, expires_at)
     VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5)) RETURNING expires_at`,
    [ticketId, operatorId, sha256(secret), by, OPERATOR_TICKET_SECONDS],
  );
  const ticket = `OPK-${secret.match(/.{8}/g)!.join('-')}`;
  return { ticketId, ticket, expiresAt: new Date(row.rows[0]!.expires_at) };
}

export async function listOperators(db: Queryable): Promise<Operator[]> {
  const res = await db.query<{
    id: string;
    name: string;
    role: Role;
    status: 'active' | 'disabled';
    created_at: Date;
    passkeys: number;
  }>(
    `SELECT o.id, o.name, o.role, o.status, o.created_at,
            (SELECT count(*) FROM operator_passkeys p WHERE p.operator_id = o.id)::int AS passkeys
     FROM operators o ORDER BY o.name`,
  );
  return res.rows.map((r) => ({
    id: r.id,
    name: r.name,
    role: r.role,
    status: r.status,
    createdAt: new Date(r.created_at),
    passkeys: r.passkeys,
  }));
}

/** Disables an operator: their sessions end at once and their tickets and passkeys stop working. */
export async function disableOperator(db: Db, name: string, by: string): Promise<boolean> {
  return db.transaction(async (tx) => {
    const res = await tx.query<{ id: string }>(
      `UPDATE operators SET status = 'disabled', disabled_at = now(), disabled_by = $2
       WHERE name = $1 AND status = 'active' RETURNING id`,
      [name, by],
    );
    const id = res.rows[0]?.id;
    if (!id) return false;
    await tx.query('DELETE FROM operator_sessions WHERE operator_id = $1', [id]);
    await tx.query(
      'UPDATE operator_enrollment_tickets SET voided_at = now() WHERE operator_id = $1 AND used_at IS NULL AND voided_at IS NULL',
      [id],
    );
    await recordAudit(tx, {
      type: 'console.operator.disabled',
      outcome: 'success',
      actor: by,
      data: { operator: name },
    });
    return true;
  });
}

async function storeChallenge(db: Queryable, challenge: string, purpose: string, interactionId: string) {
  await db.query(
    `INSERT INTO webauthn_challenges (id, purpose, interaction_id, challenge, expires_at)
     VALUES ($1, $2, $3, $1, now() + make_interval(secs => $4))`,
    [challenge, purpose, interactionId, CHALLENGE_SECONDS],
  );
}

/**
 * Registration options for the operator holding this ticket. The ticket is checked (not spent)
 * and its id bound to the challenge through the interaction id, so the response can only enroll
 * the operator the ticket was issued for.
 */
export async function startOperatorEnrollment(
  authn: AuthnContext,
  input: { name: string; ticket: string; ceremonyId: string },
  meta: RequestMeta,
): Promise<PublicKeyCredentialCreationOptionsJSON> {
  const secret = normalizeSecret(input.ticket);
  const found = secret
    ? await authn.db.query<{ ticket_id: string; name: string; user_handle: string; secret_hash: string }>(
        `SELECT t.id AS ticket_id, o.name, o.user_handle, t.secret_hash FROM operator_enrollment_tickets t
         JOIN operators o ON o.id = t.operator_id
         WHERE t.secret_hash = $1 AND t.used_at IS NULL AND t.voided_at IS NULL AND t.expires_at > now()
           AND o.status = 'active'`,
        [sha256(secret)],
      )
    : undefined;
  const row = found?.rows[0];
  // The name must match too; compared in constant time like the hash lookup it accompanies.
  const nameOk =
    row !== undefined &&
    Buffer.byteLength(row.name) === Buffer.byteLength(input.name) &&
    timingSafeEqual(Buffer.from(row.name), Buffer.from(input.name));
  if (!row || !nameOk) {
    await recordAudit(authn.db, {
      type: 'console.operator.ticket_rejected',
      outcome: 'failure',
      ...meta,
      data: { operator: String(input.name).slice(0, 40) },
    });
    throw new ConsoleError('ERR_OPERATOR_TICKET');
  }
  const options = await generateRegistrationOptions({
    rpName: `${authn.rpName} console`,
    rpID: authn.rpId,
    userName: row.name,
    userDisplayName: row.name,
    userID: new Uint8Array(Buffer.from(row.user_handle, 'base64url')),
    timeout: CHALLENGE_SECONDS * 1000,
    attestationType: 'none',
    authenticatorSelection: {
      residentKey: 'required',
      requireResidentKey: true,
      userVerification: 'required',
    },
    supportedAlgorithmIDs: SUPPORTED_ALGORITHM_IDS,
  });
  await storeChallenge(authn.db, options.challenge, 'registration', `${input.ceremonyId}|${row.ticket_id}`);
  return options;
}

/** Verifies the registration, spends challenge and ticket and stores the passkey, in one transaction. */
export async function finishOperatorEnrollment(
  authn: AuthnContext,
  input: { ceremonyId: string; response: RegistrationResponseJSON },
  meta: RequestMeta,
): Promise<{ operator: string }> {
  const challenge = safeChallenge(input.response);
  const ch = await authn.db.query<{ interaction_id: string }>(
    `SELECT interaction_id FROM webauthn_challenges
     WHERE id = $1 AND purpose = 'registration' AND customer_id IS NULL AND used_at IS NULL AND expires_at > now()`,
    [challenge],
  );
  const bound = ch.rows[0]?.interaction_id;
  if (!bound?.startsWith(`${input.ceremonyId}|`)) throw new ConsoleError('ERR_WEBAUTHN');
  const ticketId = bound.slice(input.ceremonyId.length + 1);
  const verification = await verifyRegistrationResponse({
    response: input.response,
    expectedChallenge: challenge,
    expectedOrigin: authn.origin,
    expectedRPID: authn.rpId,
    requireUserVerification: true,
    supportedAlgorithmIDs: SUPPORTED_ALGORITHM_IDS,
  }).catch(() => ({ verified: false as const, registrationInfo: undefined }));
  if (!verification.verified || !verification.registrationInfo) throw new ConsoleError('ERR_WEBAUTHN');
  const info = verification.registrationInfo;
  return authn.db.transaction(async (tx) => {
    const spent = await tx.query(
      'UPDATE webauthn_challenges SET used_at = now() WHERE id = $1 AND used_at IS NULL RETURNING id',
      [challenge],
    );
    if (spent.rowCount === 0) throw new ConsoleError('ERR_WEBAUTHN');
    const used = await tx.query<{ operator_id: string; name: string }>(
      `UPDATE operator_enrollment_tickets t SET used_at = now() FROM operators o
       WHERE t.id = $1 AND o.id = t.operator_id AND o.status = 'active'
         AND t.used_at IS NULL AND t.voided_at IS NULL AND t.expires_at > now()
       RETURNING t.operator_id, o.name`,
      [ticketId],
    );
    const op = used.rows[0];
    if (!op) throw new ConsoleError('ERR_OPERATOR_TICKET');
    await tx.query(
      `INSERT INTO operator_passkeys (credential_id, operator_id, public_key, counter, transports, device_type, backed_up)
       VALUES ($1, $2, $3, $4, $5::text[], $6, $7)`,
      [
        info.credential.id,
        op.operator_id,
        Buffer.from(info.credential.publicKey).toString('base64url'),
        info.credential.counter,
        info.credential.transports ?? [],
        info.credentialDeviceType,
        info.credentialBackedUp,
      ],
    );
    await recordAudit(tx, {
      type: 'console.operator.passkey_registered',
      outcome: 'success',
      actor: `operator:${op.name}`,
      ...meta,
      data: { credentialId: info.credential.id, ticketId },
    });
    return { operator: op.name };
  });
}

function safeChallenge(response: unknown): string {
  try {
    return clientChallenge(response);
  } catch {
    throw new ConsoleError('ERR_WEBAUTHN');
  }
}

/** Verifies an operator's passkey assertion for a challenge started under `ceremonyId`. */
export async function finishOperatorLogin(
  authn: AuthnContext,
  input: { ceremonyId: string; response: AuthenticationResponseJSON },
  meta: RequestMeta,
): Promise<{ operatorId: string; name: string; role: Role }> {
  const credentialId = typeof input.response?.id === 'string' ? input.response.id.slice(0, 1024) : '';
  let name: string | undefined;
  try {
    const challenge = safeChallenge(input.response);
    const { rows } = await authn.db.query<{
      challenge: string | null;
      operator_id: string | null;
      name: string | null;
      role: Role | null;
      status: string | null;
      public_key: string | null;
      counter: string | number | null;
      transports: string[] | null;
    }>(
      `WITH ch AS (
         UPDATE webauthn_challenges SET used_at = now()
         WHERE id = $1 AND interaction_id = $2 AND purpose = 'authentication' AND used_at IS NULL AND expires_at > now()
         RETURNING challenge)
       SELECT (SELECT challenge FROM ch) AS challenge, p.operator_id, o.name, o.role, o.status, p.public_key,
              p.counter, p.transports
       FROM (SELECT 1) AS one
       LEFT JOIN operator_passkeys p ON p.credential_id = $3
       LEFT JOIN operators o ON o.id = p.operator_id`,
      [challenge, input.ceremonyId, credentialId],
    );
    const row = rows[0];
    if (!row?.challenge || !row.operator_id || !row.public_key) throw new ConsoleError('ERR_WEBAUTHN');
    name = row.name ?? undefined;
    const stored = Number(row.counter ?? 0);
    const verification = await verifyAuthenticationResponse({
      response: input.response,
      expectedChallenge: challenge,
      expectedOrigin: authn.origin,
      expectedRPID: authn.rpId,
      requireUserVerification: true,
      credential: {
        id: credentialId,
        publicKey: new Uint8Array(Buffer.from(row.public_key, 'base64url')),
        counter: stored,
        transports: (row.transports ?? []) as never,
      },
    }).catch(() => ({ verified: false as const, authenticationInfo: undefined }));
    if (!verification.verified || !verification.authenticationInfo) throw new ConsoleError('ERR_WEBAUTHN');
    if (row.status !== 'active') throw new ConsoleError('ERR_OPERATOR_DISABLED');
    const next = verification.authenticationInfo.newCounter;
    const updated = await authn.db.query(
      `UPDATE operator_passkeys SET counter = $2::bigint, last_used_at = now()
       WHERE credential_id = $1 AND (counter < $2::bigint OR (counter = 0 AND $2::bigint = 0)) RETURNING 1`,
      [credentialId, next],
    );
    if (updated.rowCount === 0) throw new ConsoleError('ERR_WEBAUTHN');
    await recordAudit(authn.db, {
      type: 'console.login',
      outcome: 'success',
      actor: `operator:${row.name}`,
      ...meta,
      data: { credentialId },
    });
    return { operatorId: row.operator_id, name: row.name!, role: row.role! };
  } catch (err) {
    if (err instanceof ConsoleError)
      await recordAudit(authn.db, {
        type: 'console.login',
        outcome: 'failure',
        ...(name ? { actor: `operator:${name}` } : {}),
        ...meta,
        data: { reason: err.code, credentialId },
      });
    throw err;
  }
}

/** A new console session; returns the secret for the cookie (the table keeps its hash). */
export async function createOperatorSession(
  db: Queryable,
  operatorId: string,
  meta: RequestMeta,
): Promise<string> {
  const secret = randomBytes(32).toString('base64url');
  await db.query(
    `INSERT INTO operator_sessions (id_hash, operator_id, expires_at, ip, user_agent)
     VALUES ($1, $2, now() + make_interval(secs => $3), $4, $5)`,
    [
      sha256(secret),
      operatorId,
      CONSOLE_SESSION_SECONDS,
      meta.ip ?? null,
      meta.userAgent?.slice(0, 512) ?? null,
    ],
  );
  return secret;
}

export interface OperatorSession {
  /** The cookie secret (CSRF tokens derive from it; never logged). */
  jti: string;
  operatorId: string;
  name: string;
  role: Role;
}

/** The active operator behind a session cookie, or undefined. */
export async function operatorSession(
  db: Queryable,
  secret: string | undefined,
): Promise<OperatorSession | undefined> {
  if (!secret || !/^[A-Za-z0-9_-]{43}$/.test(secret)) return undefined;
  const res = await db.query<{ operator_id: string; name: string; role: Role }>(
    `SELECT s.operator_id, o.name, o.role FROM operator_sessions s JOIN operators o ON o.id = s.operator_id
     WHERE s.id_hash = $1 AND s.expires_at > now() AND o.status = 'active'`,
    [sha256(secret)],
  );
  const r = res.rows[0];
  return r ? { jti: secret, operatorId: r.operator_id, name: r.name, role: r.role } : undefined;
}

export async function endOperatorSession(db: Queryable, secret: string): Promise<void> {
  await db.query('DELETE FROM operator_sessions WHERE id_hash = $1', [sha256(secret)]);
}
