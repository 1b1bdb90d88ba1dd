/**
 * Passkey (WebAuthn) ceremonies, server side. Every challenge is stored in webauthn_challenges
 * (its primary key is the challenge itself), bound to one interaction and purpose, lives five
 * minutes and is consumed by the first response that presents it, valid or not.
 */
import { randomBytes } from 'node:crypto';
import {
  type AuthenticationResponseJSON,
  type AuthenticatorTransport,
  generateAuthenticationOptions,
  generateRegistrationOptions,
  type PublicKeyCredentialCreationOptionsJSON,
  type PublicKeyCredentialRequestOptionsJSON,
  type RegistrationResponseJSON,
  verifyAuthenticationResponse,
  verifyRegistrationResponse,
} from '@simplewebauthn/server';
import { recordAudit } from '../audit/index.ts';
import type { Queryable } from '../db/index.ts';
import { emitSecurityEvent } from '../signals/index.ts';
import { authenticatorModel } from './aaguids.ts';
import { attestationVerified, NO_ATTESTATION } from './attestation.ts';
import { AUTHN_AUDIT, type AuthnContext, type RequestMeta } from './context.ts';
import { AuthnError } from './errors.ts';

const CHALLENGE_TTL_SECONDS = 300;
/** ES256, RS256, EdDSA. */
const SUPPORTED_ALGORITHM_IDS = [-7, -257, -8];

type DeviceType = 'singleDevice' | 'multiDevice';

function b64url(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString('base64url');
}

function fromB64url(s: string): Uint8Array<ArrayBuffer> {
  return new Uint8Array(Buffer.from(s, 'base64url'));
}

/** The challenge the client signed, read from clientDataJSON (verification proper comes later). */
export function clientChallenge(response: unknown): string {
  const raw = (response as { response?: { clientDataJSON?: unknown } } | null)?.response?.clientDataJSON;
  if (typeof raw === 'string' && raw.length <= 8192) {
    try {
      const challenge = (
        JSON.parse(Buffer.from(raw, 'base64url').toString('utf8')) as { challenge?: unknown }
      ).challenge;
      if (typeof challenge === 'string' && challenge.length > 0 && challenge.length <= 256) return challenge;
    } catch {
      // fall through: not JSON
    }
  }
  throw new AuthnError('ERR_WEBAUTHN_VERIFICATION', { cause: new Error('malformed clientDataJSON') });
}

function credentialIdOf(response: unknown): string {
  const id = (response as { id?: unknown } | null)?.id;
  if (typeof id === 'string' && id.length > 0 && id.length <= 1024) return id;
  throw new AuthnError('ERR_WEBAUTHN_VERIFICATION', { cause: new Error('missing credential id') });
}

/** Signature counter from authenticatorData (bytes 33–36, big-endian), or undefined when malformed. */
function signCounterOf(response: AuthenticationResponseJSON): number | undefined {
  const raw = response.response?.authenticatorData;
  if (typeof raw !== 'string') return undefined;
  const data = Buffer.from(raw, 'base64url');
  return data.length >= 37 ? data.readUInt32BE(33) : undefined;
}

function passkeyName(name: string | undefined): string {
  const clean = (name ?? '')
    .normalize('NFKC')
    .replace(/[\p{Cc}\p{Cf}]/gu, '')
    .trim();
  return clean ? Array.from(clean).slice(0, 64).join('') : `Passkey ${new Date().toISOString().slice(0, 10)}`;
}

function verificationError(err: unknown): AuthnError {
  return err instanceof AuthnError ? err : new AuthnError('ERR_WEBAUTHN_VERIFICATION', { cause: err });
}

/** A short, non-secret reason for the audit log. */
function failureDetail(err: AuthnError): string | undefined {
  const cause = err.cause;
  return cause instanceof Error ? cause.message.slice(0, 300) : undefined;
}

async function storeChallenge(
  db: Queryable,
  c: {
    challenge: string;
    purpose: 'registration' | 'authentication' | 'approval';
    interactionId: string;
    customerId?: string;
    ticketId?: string;
  },
): Promise<void> {
  await db.query(
    `INSERT INTO webauthn_challenges (id, purpose, interaction_id, customer_id, ticket_id, challenge, expires_at)
     VALUES ($1, $2, $3, $4, $5, $1, now() + make_interval(secs => $6))`,
    [
      c.challenge,
      c.purpose,
      c.interactionId,
      c.customerId ?? null,
      c.ticketId ?? null,
      CHALLENGE_TTL_SECONDS,
    ],
  );
}

function ticketProblem(t: { used: boolean; voided: boolean; expired: boolean; locked: boolean }): AuthnError {
  if (t.used) return new AuthnError('ERR_TICKET_USED');
  if (t.voided) return new AuthnError(t.locked ? 'ERR_TICKET_LOCKED' : 'ERR_TICKET_VOIDED');
  if (t.expired) return new AuthnError('ERR_TICKET_EXPIRED');
  return new AuthnError('ERR_TICKET_INVALID');
}

interface RegistrationStartRow {
  customer_number: string;
  name_kanji: string;
  status: string;
  user_handle: string | null;
  ticket_id: string | null;
  ticket_used: boolean | null;
  ticket_voided: boolean | null;
  ticket_expired: boolean | null;
  failed_attempts: number;
  /** Every passkey, disabled ones too: the authenticator must not register them again. */
  passkeys: Array<{ id: string; transports: string[] }>;
  usable_passkey: boolean;
}

/**
 * Registration options for enrolling a passkey under a checked enrollment ticket. The ticket is
 * re-checked here and bound to the challenge; it is consumed only when the passkey is stored.
 */
export async function startPasskeyRegistration(
  ctx: AuthnContext,
  input: { customerId: string; ticketId: string; interactionId: string },
): Promise<PublicKeyCredentialCreationOptionsJSON> {
  return startRegistration(ctx, input);
}

/**
 * Registration options for ANOTHER passkey of a customer who has just authenticated with a current
 * one (the caller checks that it was a passkey sign-in, and how recently: FSA comments 45–46).
 * Without a ticket; the customer must already have a usable (not disabled) passkey, so this can
 * never be a first enrollment nor a recovery without proofing.
 */
export async function startAdditionalPasskeyRegistration(
  ctx: AuthnContext,
  input: { customerId: string; interactionId: string },
): Promise<PublicKeyCredentialCreationOptionsJSON> {
  return startRegistration(ctx, { ...input, ticketId: null });
}

async function startRegistration(
  ctx: AuthnContext,
  input: { customerId: string; ticketId: string | null; interactionId: string },
): Promise<PublicKeyCredentialCreationOptionsJSON> {
  // One round trip: the customer, the ticket, existing passkeys, and the user handle (created once,
  // only for an active customer holding an open ticket).
  const { rows } = await ctx.db.query<RegistrationStartRow>(
    `WITH h AS (
       INSERT INTO passkey_user_handles (customer_id, user_handle)
       SELECT c.id, $3 FROM customers c JOIN enrollment_tickets t ON t.id = $2 AND t.customer_id = c.id
       WHERE c.id = $1 AND c.status = 'active' AND t.used_at IS NULL AND t.voided_at IS NULL AND t.expires_at > now()
       ON CONFLICT (customer_id) DO NOTHING
       RETURNING user_handle
     )
     SELECT c.customer_number, c.name_kanji, c.status,
            COALESCE((SELECT user_handle FROM h),
                     (SELECT user_handle FROM passkey_user_handles WHERE customer_id = c.id)) AS user_handle,
            t.id AS ticket_id, t.used_at IS NOT NULL AS ticket_used, t.voided_at IS NOT NULL AS ticket_voided,
            t.expires_at <= now() AS ticket_expired, COALESCE(f.failed_attempts, 0) AS failed_attempts,
            (SELECT COALESCE(json_agg(json_build_object('id', p.credential_id, 'transports', p.transports)), '[]'::json)
             FROM passkeys p WHERE p.customer_id = c.id) AS passkeys,
            EXISTS (SELECT 1 FROM passkeys p WHERE p.customer_id = c.id AND p.disabled_at IS NULL) AS usable_passkey
     FROM customers c
     LEFT JOIN enrollment_tickets t ON t.id = $2 AND t.customer_id = c.id
     LEFT JOIN enrollment_failures f ON f.customer_id = c.id
     WHERE c.id = $1`,
    [input.customerId, input.ticketId, randomBytes(32).toString('base64url')],
  );
  const row = rows[0];
  if (!row) throw new AuthnError('ERR_CUSTOMER_UNKNOWN');
  if (row.status !== 'active') throw new AuthnError('ERR_CUSTOMER_INACTIVE');
  if (input.ticketId === null) {
    // A disabled passkey (e.g. a cloned authenticator) does not count: it cannot sign in either.
    if (!row.usable_passkey) throw new AuthnError('ERR_PASSKEY_UNKNOWN');
  } else if (!row.ticket_id || row.ticket_used || row.ticket_voided || row.ticket_expired)
    throw ticketProblem({
      used: !!row.ticket_used,
      voided: !!row.ticket_voided,
      expired: !!row.ticket_expired,
      locked: row.failed_attempts >= ctx.maxFailedAttempts,
    });
  if (!row.user_handle) throw new Error('passkey user handle missing after upsert');

  const options = await generateRegistrationOptions({
    rpName: ctx.rpName,
    rpID: ctx.rpId,
    userName: row.customer_number,
    userDisplayName: row.name_kanji,
    userID: fromB64url(row.user_handle),
    timeout: CHALLENGE_TTL_SECONDS * 1000,
    // Asked for only when a policy will judge it: attestation can identify the authenticator model.
    attestationType: (ctx.attestation ?? NO_ATTESTATION).mode === 'direct' ? 'direct' : 'none',
    excludeCredentials: row.passkeys.map((p) => ({ id: p.id, transports: p.transports })),
    authenticatorSelection: {
      residentKey: 'required',
      requireResidentKey: true,
      userVerification: 'required',
    },
    supportedAlgorithmIDs: SUPPORTED_ALGORITHM_IDS,
  });
  await storeChallenge(ctx.db, {
    challenge: options.challenge,
    purpose: 'registration',
    interactionId: input.interactionId,
    customerId: input.customerId,
    ...(input.ticketId ? { ticketId: input.ticketId } : {}),
  });
  return options;
}

/**
 * Verifies the registration response and, in one transaction, consumes the challenge and the
 * ticket and stores the passkey. Any failure stores nothing and leaves the ticket unused (unless
 * the failure is that it was used); the challenge is spent either way.
 */
export async function finishPasskeyRegistration(
  ctx: AuthnContext,
  input: {
    interactionId: string;
    response: RegistrationResponseJSON;
    passkeyName?: string | undefined;
    /** Runs inside the registration's transaction once the passkey is stored (e.g. a recovery). */
    onRegistered?: (tx: Queryable, registered: { customerId: string; credentialId: string }) => Promise<void>;
  },
  meta?: RequestMeta,
): Promise<{
  customerId: string;
  credentialId: string;
  /** The enrollment ticket it consumed, if any. */
  ticketId?: string;
}> {
  let challenge: string | undefined;
  let customerId: string | undefined;
  let ticketId: string | undefined;
  try {
    challenge = clientChallenge(input.response);
    const found = await ctx.db.query<{
      customer_id: string | null;
      ticket_id: string | null;
      status: string | null;
    }>(
      `SELECT ch.customer_id, ch.ticket_id, c.status FROM webauthn_challenges ch
       LEFT JOIN customers c ON c.id = ch.customer_id
       WHERE ch.id = $1 AND ch.interaction_id = $2 AND ch.purpose = 'registration'
         AND ch.used_at IS NULL AND ch.expires_at > now()`,
      [challenge, input.interactionId],
    );
    const ch = found.rows[0];
    if (!ch?.customer_id) throw new AuthnError('ERR_WEBAUTHN_CHALLENGE');
    customerId = ch.customer_id;
    ticketId = ch.ticket_id ?? undefined;
    if (ch.status !== 'active') throw new AuthnError('ERR_CUSTOMER_INACTIVE');

    const verification = await verifyRegistrationResponse({
      response: input.response,
      expectedChallenge: challenge,
      expectedOrigin: ctx.origin,
      expectedRPID: ctx.rpId,
      requireUserPresence: true,
      requireUserVerification: true,
      supportedAlgorithmIDs: SUPPORTED_ALGORITHM_IDS,
    }).catch((err: unknown) => {
      throw verificationError(err);
    });
    if (!verification.verified) throw new AuthnError('ERR_WEBAUTHN_VERIFICATION');
    const info = verification.registrationInfo;
    const credentialId = info.credential.id;
    const attestation = attestationVerified(ctx.attestation ?? NO_ATTESTATION, info);
    const name = passkeyName(input.passkeyName);
    const cid = customerId;
    const tid = ticketId;
    const chal = challenge;

    await ctx.db.transaction(async (tx) => {
      const spent = await tx.query(
        `UPDATE webauthn_challenges SET used_at = now()
         WHERE id = $1 AND used_at IS NULL AND expires_at > now() RETURNING id`,
        [chal],
      );
      if (spent.rowCount === 0) throw new AuthnError('ERR_WEBAUTHN_CHALLENGE');
      // The atomic check-and-set that makes the ticket single-use under concurrency (an additional
      // passkey of an authenticated customer has no ticket).
      const used =
        tid === undefined
          ? { rowCount: 1 }
          : await tx.query(
              `UPDATE enrollment_tickets SET used_at = now()
         WHERE id = $1 AND customer_id = $2 AND used_at IS NULL AND voided_at IS NULL AND expires_at > now()
         RETURNING id`,
              [tid, cid],
            );
      if (used.rowCount === 0) {
        const t = await tx.query<{ used: boolean; voided: boolean; expired: boolean; locked: boolean }>(
          `SELECT t.used_at IS NOT NULL AS used, t.voided_at IS NOT NULL AS voided, t.expires_at <= now() AS expired,
                  COALESCE(f.failed_attempts, 0) >= $2 AS locked
           FROM enrollment_tickets t LEFT JOIN enrollment_failures f ON f.customer_id = t.customer_id
           WHERE t.id = $1`,
          [tid, ctx.maxFailedAttempts],
        );
        throw ticketProblem(t.rows[0] ?? { used: false, voided: false, expired: false, locked: false });
      }
      const stored = await tx.query(
        `INSERT INTO passkeys (credential_id, customer_id, public_key, counter, transports, device_type, backed_up, aaguid, name,
                               attestation_verified)
         VALUES ($1, $2, $3, $4, $5::text[], $6, $7, $8, $9, $10)
         ON CONFLICT (credential_id) DO NOTHING RETURNING credential_id`,
        [
          credentialId,
          cid,
          b64url(info.credential.publicKey),
          info.credential.counter,
          info.credential.transports ?? [],
          info.credentialDeviceType,
          info.credentialBackedUp,
          info.aaguid,
          name,
          attestation.verified,
        ],
      );
      if (stored.rowCount === 0)
        throw new AuthnError('ERR_WEBAUTHN_VERIFICATION', {
          cause: new Error('credential already registered'),
        });
      await tx.query('DELETE FROM enrollment_failures WHERE customer_id = $1', [cid]);
      const common = {
        outcome: 'success' as const,
        actor: `customer:${cid}`,
        customerId: cid,
        ip: meta?.ip,
        port: meta?.port,
        userAgent: meta?.userAgent,
        interactionId: input.interactionId,
      };
      if (tid !== undefined)
        await recordAudit(tx, { ...common, type: AUTHN_AUDIT.ticketUsed, data: { ticketId: tid } });
      await recordAudit(tx, {
        ...common,
        type: AUTHN_AUDIT.passkeyRegister,
        data: {
          credentialId,
          ticketId: tid,
          aaguid: info.aaguid,
          deviceType: info.credentialDeviceType,
          backedUp: info.credentialBackedUp,
          attestation: { fmt: info.fmt, verified: attestation.verified, reason: attestation.reason },
        },
      });
      // Peers that share this customer learn of the new credential (CAEP credential-change).
      await emitSecurityEvent(tx, {
        type: 'credential-change',
        customerId: cid,
        credentialType: (info.credential.transports ?? []).includes('internal')
          ? 'fido2-platform'
          : 'fido2-roaming',
        changeType: 'create',
        fido2Aaguid: info.aaguid,
        initiatingEntity: 'user',
        reasonAdmin: 'passkey registered',
      });
      await input.onRegistered?.(tx, { customerId: cid, credentialId });
    });
    return { customerId: cid, credentialId, ...(tid !== undefined ? { ticketId: tid } : {}) };
  } catch (err) {
    if (challenge && !(err instanceof AuthnError && err.code === 'ERR_WEBAUTHN_CHALLENGE')) {
      // Spend the challenge: one attempt per challenge, even when the transaction rolled back.
      await ctx.db
        .query('UPDATE webauthn_challenges SET used_at = now() WHERE id = $1 AND used_at IS NULL', [
          challenge,
        ])
        .catch(() => {});
    }
    if (err instanceof AuthnError) {
      await recordAudit(ctx.db, {
        type: AUTHN_AUDIT.passkeyRegister,
        outcome: 'failure',
        customerId,
        ip: meta?.ip,
        port: meta?.port,
        userAgent: meta?.userAgent,
        interactionId: input.interactionId,
        data: { reason: err.code, detail: failureDetail(err), ticketId },
      });
    }
    throw err;
  }
}

/** Whether the customer has a passkey that can sign in (not disabled). */
export async function hasUsablePasskey(db: Queryable, customerId: string): Promise<boolean> {
  const res = await db.query(
    'SELECT 1 FROM passkeys WHERE customer_id = $1 AND disabled_at IS NULL LIMIT 1',
    [customerId],
  );
  return res.rowCount === 1;
}

/**
 * Options for a passkey login: discoverable credentials only (empty allowCredentials). With
 * `approval`, options for approving one operation instead: the signed-in customer's own passkeys,
 * and a challenge the caller built to commit to the operation (see src/linking/approvals).
 */
export async function startPasskeyAuthentication(
  ctx: AuthnContext,
  input: { interactionId: string; approval?: { customerId: string; challenge: Uint8Array<ArrayBuffer> } },
): Promise<PublicKeyCredentialRequestOptionsJSON> {
  const allowCredentials = input.approval
    ? (
        await ctx.db.query<{ credential_id: string; transports: string[] }>(
          'SELECT credential_id, transports FROM passkeys WHERE customer_id = $1 AND disabled_at IS NULL',
          [input.approval.customerId],
        )
      ).rows.map((r) => ({ id: r.credential_id, transports: r.transports as AuthenticatorTransport[] }))
    : [];
  const options = await generateAuthenticationOptions({
    rpID: ctx.rpId,
    allowCredentials,
    userVerification: 'required',
    timeout: CHALLENGE_TTL_SECONDS * 1000,
    ...(input.approval ? { challenge: input.approval.challenge } : {}),
  });
  await storeChallenge(ctx.db, {
    challenge: options.challenge,
    purpose: input.approval ? 'approval' : 'authentication',
    interactionId: input.interactionId,
    ...(input.approval ? { customerId: input.approval.customerId } : {}),
  });
  return options;
}

export interface PasskeyLogin {
  customerId: string;
  credentialId: string;
  /** `phrh` only for a device-bound key whose attestation was verified under the policy. */
  acr: 'phr' | 'phrh';
  /** RFC 8176 */
  amr: string[];
  /** Seconds since the epoch. */
  authTime: number;
  deviceType: DeviceType;
  backedUp: boolean;
}

interface LoginRow {
  challenge: string | null;
  challenge_customer_id: string | null;
  customer_id: string | null;
  public_key: string | null;
  counter: string | number | null;
  transports: string[] | null;
  device_type: DeviceType | null;
  attestation_verified: boolean | null;
  status: string | null;
  user_handle: string | null;
  disabled: boolean | null;
}

/** Counter regressions within this many seconds of the passkey's last use are crossed ceremonies, not clones. */
const CONCURRENT_USE_SECONDS = 10;

export async function finishPasskeyAuthentication(
  ctx: AuthnContext,
  input: {
    interactionId: string;
    response: AuthenticationResponseJSON;
    /** An operation approval (started with `approval`): only the customer it was started for may answer. */
    purpose?: 'authentication' | 'approval';
  },
  meta?: RequestMeta,
): Promise<PasskeyLogin> {
  const purpose = input.purpose ?? 'authentication';
  let customerId: string | undefined;
  let credentialId: string | undefined;
  try {
    const challenge = clientChallenge(input.response);
    credentialId = credentialIdOf(input.response);
    // One round trip: spend the challenge (only if it is this interaction's, unused and unexpired)
    // and load the passkey with its owner.
    const { rows } = await ctx.db.query<LoginRow>(
      `WITH ch AS (
         UPDATE webauthn_challenges SET used_at = now()
         WHERE id = $1 AND interaction_id = $2 AND purpose = $4 AND used_at IS NULL AND expires_at > now()
         RETURNING challenge, customer_id
       )
       SELECT (SELECT challenge FROM ch) AS challenge, (SELECT customer_id FROM ch) AS challenge_customer_id,
              p.customer_id, p.public_key, p.counter, p.transports,
              p.device_type, p.attestation_verified, p.disabled_at IS NOT NULL AS disabled, c.status, h.user_handle
       FROM (SELECT 1) AS one
       LEFT JOIN passkeys p ON p.credential_id = $3
       LEFT JOIN customers c ON c.id = p.customer_id
       LEFT JOIN passkey_user_handles h ON h.customer_id = p.customer_id`,
      [challenge, input.interactionId, credentialId, purpose],
    );
    const row = rows[0];
    if (!row?.challenge) throw new AuthnError('ERR_WEBAUTHN_CHALLENGE');
    if (!row.customer_id || !row.public_key || !row.device_type) throw new AuthnError('ERR_PASSKEY_UNKNOWN');
    // An approval is the signed-in customer's: another customer's passkey is not one of theirs.
    if (purpose === 'approval' && row.challenge_customer_id !== row.customer_id)
      throw new AuthnError('ERR_PASSKEY_UNKNOWN');
    customerId = row.customer_id;
    if (row.disabled) throw new AuthnError('ERR_PASSKEY_DISABLED');
    const storedCounter = Number(row.counter ?? 0);

    const newCounter = signCounterOf(input.response);
    if (newCounter === undefined)
      throw new AuthnError('ERR_WEBAUTHN_VERIFICATION', { cause: new Error('malformed authenticatorData') });
    // A counter that does not move forward means a cloned authenticator or a replayed assertion.
    if ((newCounter > 0 || storedCounter > 0) && newCounter <= storedCounter) {
      // A signature counter going backwards means two authenticators hold this key: a cloned
      // authenticator. The passkey is disabled until the customer removes it or re-proofs — unless
      // it was used moments ago, when two of the customer's own ceremonies merely crossed.
      const disabled = await ctx.db.query(
        `UPDATE passkeys SET disabled_at = now(), disabled_reason = 'clone_suspected'
         WHERE credential_id = $1 AND disabled_at IS NULL
           AND (last_used_at IS NULL OR last_used_at < now() - make_interval(secs => $2))`,
        [credentialId, CONCURRENT_USE_SECONDS],
      );
      if (disabled.rowCount === 1) {
        await recordAudit(ctx.db, {
          type: AUTHN_AUDIT.passkeyCloneSuspected,
          outcome: 'failure',
          customerId,
          data: { credentialId, storedCounter, newCounter },
        });
        await emitSecurityEvent(ctx.db, {
          type: 'credential-compromise',
          customerId,
          credentialType: 'fido2-roaming',
          reasonAdmin: 'signature counter went backwards: cloned authenticator suspected',
        });
      }
      throw new AuthnError('ERR_PASSKEY_COUNTER', {
        cause: new Error(`counter ${newCounter} not above stored ${storedCounter}`),
      });
    }

    const verification = await verifyAuthenticationResponse({
      response: input.response,
      expectedChallenge: challenge,
      expectedOrigin: ctx.origin,
      expectedRPID: ctx.rpId,
      requireUserVerification: true,
      credential: {
        id: credentialId,
        publicKey: fromB64url(row.public_key),
        counter: storedCounter,
        transports: row.transports ?? [],
      },
    }).catch((err: unknown) => {
      throw verificationError(err);
    });
    if (!verification.verified)
      throw new AuthnError('ERR_WEBAUTHN_VERIFICATION', { cause: new Error('signature invalid') });
    const info = verification.authenticationInfo;
    const userHandle = input.response.response.userHandle;
    if (userHandle && userHandle !== row.user_handle)
      throw new AuthnError('ERR_WEBAUTHN_VERIFICATION', { cause: new Error('user handle does not match') });
    // Backup eligibility is fixed when the credential is created; a change means another authenticator.
    if (info.credentialDeviceType !== row.device_type)
      throw new AuthnError('ERR_WEBAUTHN_VERIFICATION', { cause: new Error('backup eligibility changed') });
    if (row.status !== 'active') throw new AuthnError('ERR_CUSTOMER_INACTIVE');

    // Conditional update: two concurrent assertions with the same counter cannot both pass.
    const updated = await ctx.db.query(
      `UPDATE passkeys SET counter = $2::bigint, backed_up = $3, last_used_at = now()
       WHERE credential_id = $1 AND (counter < $2::bigint OR (counter = 0 AND $2::bigint = 0))
       RETURNING credential_id`,
      [credentialId, info.newCounter, info.credentialBackedUp],
    );
    if (updated.rowCount === 0)
      throw new AuthnError('ERR_PASSKEY_COUNTER', { cause: new Error('counter moved concurrently') });

    const deviceType = row.device_type;
    const deviceBound = deviceType === 'singleDevice' && !info.credentialBackedUp;
    const result: PasskeyLogin = {
      customerId,
      credentialId,
      acr: deviceBound && row.attestation_verified ? 'phrh' : 'phr',
      amr: ['pop', 'user', 'mfa', deviceBound ? 'hwk' : 'swk'],
      authTime: Math.floor(Date.now() / 1000),
      deviceType,
      backedUp: info.credentialBackedUp,
    };
    await recordAudit(ctx.db, {
      type: AUTHN_AUDIT.passkeyLogin,
      outcome: 'success',
      actor: `customer:${customerId}`,
      customerId,
      ip: meta?.ip,
      port: meta?.port,
      userAgent: meta?.userAgent,
      interactionId: input.interactionId,
      data: {
        credentialId,
        deviceType,
        backedUp: info.credentialBackedUp,
        acr: result.acr,
        amr: result.amr,
      },
    });
    return result;
  } catch (err) {
    if (!(err instanceof AuthnError)) throw err;
    err.customerId ??= customerId;
    await recordAudit(ctx.db, {
      type: AUTHN_AUDIT.passkeyLogin,
      outcome: 'failure',
      customerId,
      ip: meta?.ip,
      port: meta?.port,
      userAgent: meta?.userAgent,
      interactionId: input.interactionId,
      data: { reason: err.code, detail: failureDetail(err), credentialId },
    });
    throw err;
  }
}

export interface PasskeySummary {
  credentialId: string;
  name: string;
  createdAt: Date;
  lastUsedAt: Date | null;
  deviceType: DeviceType;
  backedUp: boolean;
  /** Synced passkeys can be used on the customer's other devices; device-bound ones cannot. */
  synced: boolean;
  /** Authenticator model where the AAGUID is a known one. */
  model: string | undefined;
  disabledAt: Date | null;
  disabledReason: string | null;
}

export async function listPasskeys(db: Queryable, customerId: string): Promise<PasskeySummary[]> {
  const { rows } = await db.query<{
    credential_id: string;
    name: string;
    created_at: Date;
    last_used_at: Date | null;
    device_type: DeviceType;
    backed_up: boolean;
    aaguid: string;
    disabled_at: Date | null;
    disabled_reason: string | null;
  }>(
    `SELECT credential_id, name, created_at, last_used_at, device_type, backed_up, aaguid, disabled_at, disabled_reason
     FROM passkeys WHERE customer_id = $1 ORDER BY created_at, credential_id`,
    [customerId],
  );
  return rows.map((r) => ({
    credentialId: r.credential_id,
    name: r.name,
    createdAt: new Date(r.created_at),
    lastUsedAt: r.last_used_at ? new Date(r.last_used_at) : null,
    deviceType: r.device_type,
    backedUp: r.backed_up,
    synced: r.device_type === 'multiDevice',
    model: authenticatorModel(r.aaguid),
    disabledAt: r.disabled_at ? new Date(r.disabled_at) : null,
    disabledReason: r.disabled_reason,
  }));
}

/** Renames one of the customer's passkeys; false when it is not theirs. Audited. */
export async function renamePasskey(
  db: Queryable,
  input: { customerId: string; credentialId: string; name: string },
  meta?: RequestMeta,
): Promise<boolean> {
  const name = passkeyName(input.name);
  const res = await db.query('UPDATE passkeys SET name = $3 WHERE credential_id = $1 AND customer_id = $2', [
    input.credentialId,
    input.customerId,
    name,
  ]);
  if (res.rowCount === 1)
    await recordAudit(db, {
      type: AUTHN_AUDIT.passkeyRenamed,
      outcome: 'success',
      actor: `customer:${input.customerId}`,
      customerId: input.customerId,
      ip: meta?.ip,
      port: meta?.port,
      userAgent: meta?.userAgent,
      data: { credentialId: input.credentialId },
    });
  return res.rowCount === 1;
}

/**
 * Removes one of the customer's passkeys, never the last usable one (the customer would be left
 * with no way to sign in but re-proofing). False when it is not theirs. Audited.
 */
export async function removePasskey(
  db: Queryable,
  input: { customerId: string; credentialId: string },
  meta?: RequestMeta,
): Promise<boolean> {
  // One statement, so two concurrent removals cannot leave the customer without a usable passkey.
  const res = await db.query<{
    found: number;
    removed: number;
    usable_left: number;
    transports: string[] | null;
  }>(
    `WITH target AS (SELECT credential_id, disabled_at, transports FROM passkeys WHERE credential_id = $1 AND customer_id = $2),
     others AS (SELECT count(*)::int AS n FROM passkeys
                WHERE customer_id = $2 AND credential_id <> $1 AND disabled_at IS NULL),
     del AS (DELETE FROM passkeys p USING target, others
             WHERE p.credential_id = target.credential_id AND (others.n > 0 OR target.disabled_at IS NOT NULL)
             RETURNING 1)
     SELECT (SELECT count(*) FROM target)::int AS found, (SELECT count(*) FROM del)::int AS removed,
            (SELECT n FROM others) AS usable_left, (SELECT transports FROM target) AS transports`,
    [input.credentialId, input.customerId],
  );
  const row = res.rows[0];
  if (!row?.found) return false;
  if (row.removed === 0) throw new AuthnError('ERR_PASSKEY_LAST');
  await recordAudit(db, {
    type: AUTHN_AUDIT.passkeyRemoved,
    outcome: 'success',
    actor: `customer:${input.customerId}`,
    customerId: input.customerId,
    ip: meta?.ip,
    port: meta?.port,
    userAgent: meta?.userAgent,
    data: { credentialId: input.credentialId },
  });
  await emitSecurityEvent(db, {
    type: 'credential-change',
    customerId: input.customerId,
    credentialType: row.transports?.includes('internal') ? 'fido2-platform' : 'fido2-roaming',
    changeType: 'delete',
    initiatingEntity: 'user',
    reasonAdmin: 'passkey removed',
  });
  return true;
}

/** Deletes challenges that expired more than `graceSeconds` ago (for a periodic sweep). */
export async function deleteExpiredChallenges(db: Queryable, graceSeconds = 3600): Promise<number> {
  const res = await db.query(
    'DELETE FROM webauthn_challenges WHERE expires_at < now() - make_interval(secs => $1)',
    [graceSeconds],
  );
  return res.rowCount;
}

/** Active customers with at least one usable passkey, over all active customers (management report). */
export async function passkeyAdoption(
  db: Queryable,
): Promise<{ customers: number; withPasskey: number; rate: number }> {
  const res = await db.query<{ customers: number; with_passkey: number }>(
    `SELECT count(*)::int AS customers,
            count(*) FILTER (WHERE EXISTS (SELECT 1 FROM passkeys p WHERE p.customer_id = c.id AND p.disabled_at IS NULL))::int
              AS with_passkey
     FROM customers c WHERE c.status <> 'frozen'`,
  );
  const { customers = 0, with_passkey = 0 } = res.rows[0] ?? {};
  return { customers, withPasskey: with_passkey, rate: customers ? with_passkey / customers : 0 };
}
