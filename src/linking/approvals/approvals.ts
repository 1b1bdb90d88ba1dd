/**
 * Operation-bound step-up (JSDA IV.1.(2)①; FSA comments 49–53): the customer approves one
 * withdrawal or withdrawal-account change with a fresh passkey assertion whose challenge commits
 * to exactly its details. The approval is stored with the assertion as evidence and is spent by
 * the one decision it authorises.
 */
import { randomUUID } from 'node:crypto';
import type {
  AuthenticationResponseJSON,
  PublicKeyCredentialRequestOptionsJSON,
} from '@simplewebauthn/server';
import { recordAudit } from '../../audit/index.ts';
import {
  type AlternativeLogin,
  type AuthnContext,
  AuthnError,
  checkTotpCode,
  clientChallenge,
  finishPasskeyAuthentication,
  type RequestMeta,
  startPasskeyAuthentication,
} from '../../authn/index.ts';
import type { Queryable } from '../../db/index.ts';
import { LinkingError, type LinkingErrorCode } from '../errors.ts';
import {
  approvalChallenge,
  challengeCommitsTo,
  detailsHash,
  type OperationDetails,
} from './operationDetails.ts';

/** An approval not spent within this time is void (the policy wants it fresher anyway). */
export const APPROVAL_TTL_SECONDS = 600;
/** A browser first seen this recently counts as a new device for the policy. */
const NEW_DEVICE_SECONDS = 24 * 3600;

export interface OperationApproval {
  id: string;
  customerId: string;
  clientId: string;
  details: OperationDetails;
  detailsHash: string;
  acr: string;
  amr: string[];
  approvedAt: Date;
  newDevice: boolean;
  credentialId: string;
}

/** What an approval step knows: the interaction, the signed-in customer, the client, the operation. */
interface ApprovalInput {
  interactionId: string;
  customerId: string;
  clientId: string;
  details: OperationDetails;
  /** Hash of the browser's device cookie value, when it has one (src/risk known devices). */
  deviceHash?: string | undefined;
}

/** Audits a refused approval and returns the error to throw; nothing else is stored. */
async function rejected(
  db: Queryable,
  input: ApprovalInput,
  meta: RequestMeta | undefined,
  reason: string,
  code: LinkingErrorCode,
  extra: Record<string, unknown> = {},
): Promise<LinkingError> {
  await auditRejection(db, input, meta, reason, extra);
  return new LinkingError(code);
}

async function auditRejection(
  db: Queryable,
  input: ApprovalInput,
  meta: RequestMeta | undefined,
  reason: string,
  extra: Record<string, unknown>,
): Promise<void> {
  await recordAudit(db, {
    type: 'approval.rejected',
    outcome: 'failure',
    customerId: input.customerId,
    clientId: input.clientId,
    ip: meta?.ip,
    interactionId: input.interactionId,
    data: { reason, kind: input.details.type, ...extra },
  });
}

export function startOperationApproval(
  authn: AuthnContext,
  input: { interactionId: string; customerId: string; details: OperationDetails },
): Promise<PublicKeyCredentialRequestOptionsJSON> {
  return startPasskeyAuthentication(authn, {
    interactionId: input.interactionId,
    approval: { customerId: input.customerId, challenge: approvalChallenge(input.details) },
  });
}

/**
 * Verifies the assertion (the challenge must commit to `details`, be this interaction's, unused,
 * and answered by one of the customer's passkeys) and stores the approval.
 */
export async function finishOperationApproval(
  authn: AuthnContext,
  input: ApprovalInput & { response: AuthenticationResponseJSON },
  meta?: RequestMeta,
): Promise<OperationApproval> {
  const challenge = clientChallenge(input.response);
  if (!challengeCommitsTo(challenge, input.details))
    throw await rejected(
      authn.db,
      input,
      meta,
      'challenge does not commit to the details',
      'ERR_APPROVAL_DETAILS',
    );
  const login = await finishPasskeyAuthentication(
    authn,
    { interactionId: input.interactionId, response: input.response, purpose: 'approval' },
    meta,
  );
  const r = input.response.response;
  return storeApproval(
    authn.db,
    input,
    login,
    {
      credentialId: login.credentialId,
      clientDataJSON: r.clientDataJSON,
      authenticatorData: r.authenticatorData,
      signature: r.signature,
    },
    meta,
  );
}

/** One-time codes a customer may try at approvals within this window (a correct one starts over). */
const TOTP_ATTEMPTS = { max: 5, windowSeconds: 15 * 60 };

/**
 * The approval of a customer exempted from passkeys (src/authn/exemptions.ts): a TOTP code entered
 * on the page that shows the details. The binding is the server's: the code is accepted only inside
 * this interaction, whose details the hub holds, and the approval stores their hash; unlike a passkey
 * the code itself commits to nothing, so the policy gives it a lower cap (withdrawal.exempted-*) and
 * never lets it register a new withdrawal account. Wrong codes are limited per customer.
 */
export async function finishTotpApproval(
  authn: AuthnContext,
  input: ApprovalInput & { code: string },
  meta?: RequestMeta,
): Promise<OperationApproval> {
  const refuse = (reason: string, code: LinkingErrorCode) =>
    rejected(authn.db, input, meta, reason, code, { method: 'totp' });
  if (input.details.type !== 'withdrawal')
    throw await refuse('one-time codes do not approve this operation', 'ERR_APPROVAL_NEEDS_PASSKEY');
  // A frozen (or closed) customer approves nothing, whatever was signed in before the freeze: the
  // same refusal as the passkey path's (finishPasskeyAuthentication), before any code is checked.
  const customer = await authn.db.query<{ status: string }>('SELECT status FROM customers WHERE id = $1', [
    input.customerId,
  ]);
  if (customer.rows[0]?.status !== 'active') {
    await auditRejection(authn.db, input, meta, 'customer not active', { method: 'totp' });
    throw new AuthnError('ERR_CUSTOMER_INACTIVE');
  }
  // The attempt takes its slot before the code is looked at (one atomic statement): of any number of
  // parallel guesses, at most TOTP_ATTEMPTS.max are checked in a window.
  const slot = await authn.db.query<{ attempts: number }>(
    `INSERT INTO approval_code_attempts AS a (customer_id, attempts, window_started) VALUES ($1, 1, now())
     ON CONFLICT (customer_id) DO UPDATE SET
       attempts = CASE WHEN a.window_started < now() - make_interval(secs => $2) THEN 1 ELSE a.attempts + 1 END,
       window_started = CASE WHEN a.window_started < now() - make_interval(secs => $2) THEN now()
                             ELSE a.window_started END
     RETURNING attempts`,
    [input.customerId, TOTP_ATTEMPTS.windowSeconds],
  );
  if ((slot.rows[0]?.attempts ?? 0) > TOTP_ATTEMPTS.max)
    throw await refuse('too many wrong codes', 'ERR_APPROVAL_TOTP_ATTEMPTS');
  let login: AlternativeLogin;
  try {
    login = await checkTotpCode(authn, { customerId: input.customerId, code: input.code });
  } catch (err) {
    if (err instanceof AuthnError) throw await refuse('wrong code', 'ERR_APPROVAL_TOTP');
    throw err;
  }
  await authn.db.query('DELETE FROM approval_code_attempts WHERE customer_id = $1', [input.customerId]);
  return storeApproval(
    authn.db,
    input,
    { ...login, credentialId: 'totp' },
    { method: 'totp', detailsHash: detailsHash(input.details).toString('base64url') },
    meta,
  );
}

/** Records an approval (passkey or TOTP) with its evidence, and audits it. */
async function storeApproval(
  db: Queryable,
  input: ApprovalInput,
  login: { customerId: string; acr: string; amr: string[]; authTime: number; credentialId: string },
  evidence: Record<string, unknown>,
  meta: RequestMeta | undefined,
): Promise<OperationApproval> {
  const seen = input.deviceHash
    ? await db.query<{ old: boolean }>(
        `SELECT created_at < now() - make_interval(secs => $3) AS old
         FROM known_devices WHERE device_hash = $1 AND customer_id = $2`,
        [input.deviceHash, login.customerId, NEW_DEVICE_SECONDS],
      )
    : undefined;
  const approval: OperationApproval = {
    id: `apr_${randomUUID()}`,
    customerId: login.customerId,
    clientId: input.clientId,
    details: input.details,
    detailsHash: detailsHash(input.details).toString('base64url'),
    acr: login.acr,
    amr: login.amr,
    approvedAt: new Date(login.authTime * 1000),
    newDevice: seen?.rows[0]?.old !== true,
    credentialId: login.credentialId,
  };
  await db.query(
    `INSERT INTO operation_approvals (id, customer_id, client_id, kind, details, details_hash, credential_id, acr,
       amr, evidence, new_device, interaction_id, approved_at, expires_at)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $13::timestamptz + make_interval(secs => $14))`,
    [
      approval.id,
      approval.customerId,
      approval.clientId,
      approval.details.type,
      JSON.stringify(approval.details),
      approval.detailsHash,
      approval.credentialId,
      approval.acr,
      approval.amr,
      JSON.stringify(evidence),
      approval.newDevice,
      input.interactionId,
      approval.approvedAt.toISOString(),
      APPROVAL_TTL_SECONDS,
    ],
  );
  await recordAudit(db, {
    type: 'approval.granted',
    outcome: 'success',
    actor: `customer:${approval.customerId}`,
    customerId: approval.customerId,
    clientId: approval.clientId,
    ip: meta?.ip,
    port: meta?.port,
    userAgent: meta?.userAgent,
    interactionId: input.interactionId,
    data: {
      approvalId: approval.id,
      kind: approval.details.type,
      detailsHash: approval.detailsHash,
      acr: approval.acr,
    },
  });
  return approval;
}

/** Ties an approval to the grant whose tokens the brokerage will present. */
export async function attachApprovalToGrant(
  db: Queryable,
  approvalId: string,
  grantId: string,
): Promise<void> {
  await db.query('UPDATE operation_approvals SET grant_id = $2 WHERE id = $1 AND grant_id IS NULL', [
    approvalId,
    grantId,
  ]);
}

interface ApprovalRow {
  id: string;
  customer_id: string;
  client_id: string;
  details: OperationDetails;
  details_hash: string;
  acr: string;
  amr: string[];
  approved_at: Date;
  new_device: boolean;
  credential_id: string;
  consumed_at: Date | null;
  expired: boolean;
}

const toApproval = (row: ApprovalRow): OperationApproval => ({
  id: row.id,
  customerId: row.customer_id,
  clientId: row.client_id,
  details: row.details,
  detailsHash: row.details_hash,
  acr: row.acr,
  amr: row.amr,
  approvedAt: row.approved_at,
  newDevice: row.new_device,
  credentialId: row.credential_id,
});

/**
 * The approval behind a grant if it can still be spent, without spending it (a decision reads the
 * customer's facts with it before the transaction that spends it). Throws ERR_APPROVAL_NOT_FOUND /
 * _USED / _EXPIRED.
 */
export async function findApproval(
  db: Queryable,
  grantId: string,
  kind: OperationDetails['type'],
): Promise<OperationApproval> {
  const found = await db.query<ApprovalRow>(
    'SELECT *, expires_at <= now() AS expired FROM operation_approvals WHERE grant_id = $1 AND kind = $2',
    [grantId, kind],
  );
  const f = found.rows[0];
  if (!f) throw new LinkingError('ERR_APPROVAL_NOT_FOUND');
  if (f.consumed_at) throw new LinkingError('ERR_APPROVAL_USED');
  if (f.expired) throw new LinkingError('ERR_APPROVAL_EXPIRED');
  return toApproval(f);
}

/**
 * Spends the approval behind a grant, atomically: of two decisions presenting it, one gets it. Run it
 * in the transaction that records the decision, so a decision that fails leaves it unspent.
 * Throws ERR_APPROVAL_NOT_FOUND / _USED / _EXPIRED.
 */
export async function consumeApproval(
  db: Queryable,
  grantId: string,
  kind: OperationDetails['type'],
): Promise<OperationApproval> {
  const spent = await db.query<ApprovalRow>(
    `UPDATE operation_approvals SET consumed_at = now()
     WHERE grant_id = $1 AND kind = $2 AND consumed_at IS NULL AND expires_at > now()
     RETURNING *, false AS expired`,
    [grantId, kind],
  );
  const row = spent.rows[0];
  if (row) return toApproval(row);
  await findApproval(db, grantId, kind);
  // Found and spendable now, yet not spent above: it changed in between; say it was used.
  throw new LinkingError('ERR_APPROVAL_USED');
}

/** Records what the spending decision was. */
export async function recordApprovalDecision(
  db: Queryable,
  approvalId: string,
  decision: string,
): Promise<void> {
  await db.query('UPDATE operation_approvals SET decision = $2 WHERE id = $1', [approvalId, decision]);
}
