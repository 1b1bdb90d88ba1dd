/**
 * Exemptions from phishing-resistant MFA and the alternative MFA they allow (TOTP, RFC 6238).
 *
 * An operator grants an exemption, with a reason, to a customer who has no device able to hold a
 * passkey (JSDA IV.1.(2)①; FSA comments 76–79). The customer then sets up a TOTP authenticator app
 * with a one-time enrollment ticket and signs in with customer number + code. Such a sign-in is
 * NOT phishing-resistant and says so: acr `otp`, amr `otp`. The exemption rate over all customers
 * (解除率) is reported to management.
 */
import { randomBytes } from 'node:crypto';
import * as OTPAuth from 'otpauth';
import { recordAudit } from '../audit/index.ts';
import { type Db, lockCustomer, type Queryable } from '../db/index.ts';
import { decryptAtRest, encryptAtRest } from '../keys/index.ts';
import type { AuthnContext, RequestMeta } from './context.ts';
import { AuthnError } from './errors.ts';

/** acr of a sign-in with the alternative MFA: not `phr`, so relying parties can tell. */
export const ALTERNATIVE_MFA_ACR = 'otp';
const PERIOD = 30;

export interface Exemption {
  id: string;
  customerId: string;
  reason: string;
  grantedBy: string;
  grantedAt: Date;
}

export async function grantExemption(
  db: Queryable,
  input: { customerId: string; reason: string; grantedBy: string },
): Promise<Exemption> {
  const reason = input.reason.trim();
  if (reason.length < 5) throw new TypeError('an exemption needs a reason (at least 5 characters)');
  const id = `exm_${randomBytes(10).toString('hex')}`;
  const res = await db.query<{ granted_at: Date }>(
    `INSERT INTO mfa_exemptions (id, customer_id, reason, granted_by)
     SELECT $1, id, $3, $4 FROM customers WHERE id = $2
     ON CONFLICT (customer_id) WHERE ended_at IS NULL DO NOTHING
     RETURNING granted_at`,
    [id, input.customerId, reason, input.grantedBy],
  );
  if (!res.rows[0]) {
    const open = await activeExemption(db, input.customerId);
    if (open) return open;
    throw new AuthnError('ERR_CUSTOMER_UNKNOWN');
  }
  await recordAudit(db, {
    type: 'authn.exemption.granted',
    outcome: 'info',
    actor: input.grantedBy,
    customerId: input.customerId,
    data: { exemptionId: id, reason },
  });
  return {
    id,
    customerId: input.customerId,
    reason,
    grantedBy: input.grantedBy,
    grantedAt: res.rows[0].granted_at,
  };
}

/**
 * Ends the open exemption; the customer's TOTP credential goes with it. One transaction under the
 * customer's row lock (the lock money decisions take before they read the exemption, see
 * src/db/customerLock.ts): a decision either finishes first or sees the exemption ended, and
 * the end, the credential's removal and the audit record are written together or not at all.
 */
export async function endExemption(db: Db, customerId: string, endedBy: string): Promise<boolean> {
  return db.transaction(async (tx) => {
    await lockCustomer(tx, customerId);
    const res = await tx.query(
      'UPDATE mfa_exemptions SET ended_at = now(), ended_by = $2 WHERE customer_id = $1 AND ended_at IS NULL',
      [customerId, endedBy],
    );
    if (res.rowCount > 0) {
      await tx.query('DELETE FROM totp_credentials WHERE customer_id = $1', [customerId]);
      await recordAudit(tx, { type: 'authn.exemption.ended', outcome: 'info', actor: endedBy, customerId });
    }
    return res.rowCount > 0;
  });
}

export async function activeExemption(db: Queryable, customerId: string): Promise<Exemption | undefined> {
  const res = await db.query<{ id: string; reason: string; granted_by: string; granted_at: Date }>(
    'SELECT id, reason, granted_by, granted_at FROM mfa_exemptions WHERE customer_id = $1 AND ended_at IS NULL',
    [customerId],
  );
  const r = res.rows[0];
  return r && { id: r.id, customerId, reason: r.reason, grantedBy: r.granted_by, grantedAt: r.granted_at };
}

export interface ExemptionReport {
  customers: number;
  exempted: number;
  /** exempted / customers (解除率), 0 when there are no customers. */
  rate: number;
}

/** The exemption rate over all active customers (解除率, FSA comments 76–79). */
export async function exemptionReport(db: Queryable): Promise<ExemptionReport> {
  const res = await db.query<{ customers: number; exempted: number }>(
    `SELECT (SELECT count(*) FROM customers WHERE status <> 'frozen')::int AS customers,
            (SELECT count(DISTINCT e.customer_id) FROM mfa_exemptions e JOIN customers c ON c.id = e.customer_id
             WHERE e.ended_at IS NULL AND c.status <> 'frozen')::int AS exempted`,
  );
  const { customers = 0, exempted = 0 } = res.rows[0] ?? {};
  return { customers, exempted, rate: customers ? exempted / customers : 0 };
}

function totpFor(secretBase32: string, label: string, issuer: string): OTPAuth.TOTP {
  return new OTPAuth.TOTP({
    issuer,
    label,
    algorithm: 'SHA1',
    digits: 6,
    period: PERIOD,
    secret: OTPAuth.Secret.fromBase32(secretBase32),
  });
}

function kekOf(ctx: AuthnContext): Buffer {
  if (!ctx.kek) throw new Error('the authn context has no key-encryption key (needed for TOTP secrets)');
  return ctx.kek;
}

/**
 * Starts TOTP set-up for an exempted customer holding a checked enrollment ticket: a new secret
 * (stored encrypted, unconfirmed) and the otpauth URI for the authenticator app. Shown once.
 */
export async function startTotpSetup(
  ctx: AuthnContext,
  input: { customerId: string; ticketId: string; interactionId: string },
): Promise<{ secret: string; uri: string }> {
  if (!(await activeExemption(ctx.db, input.customerId))) throw new AuthnError('ERR_NOT_EXEMPT');
  const customer = await ctx.db.query<{ customer_number: string }>(
    'SELECT customer_number FROM customers WHERE id = $1',
    [input.customerId],
  );
  const secret = new OTPAuth.Secret({ size: 20 }).base32;
  await ctx.db.query(
    `INSERT INTO totp_credentials (customer_id, secret_enc, ticket_id, interaction_id) VALUES ($1, $2, $3, $4)
     ON CONFLICT (customer_id) DO UPDATE SET secret_enc = EXCLUDED.secret_enc, ticket_id = EXCLUDED.ticket_id,
       interaction_id = EXCLUDED.interaction_id, confirmed_at = NULL, last_step = 0, created_at = now()`,
    [
      input.customerId,
      encryptAtRest(kekOf(ctx), secret, `totp:${input.customerId}`),
      input.ticketId,
      input.interactionId,
    ],
  );
  const uri = totpFor(secret, customer.rows[0]?.customer_number ?? input.customerId, ctx.rpName).toString();
  return { secret, uri };
}

/** Accepts `code` for the customer's TOTP secret, once per time step (no replay). Returns the step. */
async function acceptCode(
  ctx: AuthnContext,
  customerId: string,
  code: string,
  confirmed: boolean,
): Promise<number> {
  const res = await ctx.db.query<{ secret_enc: string; last_step: string | number }>(
    `SELECT secret_enc, last_step FROM totp_credentials
     WHERE customer_id = $1 AND (confirmed_at IS NOT NULL) = $2`,
    [customerId, confirmed],
  );
  const row = res.rows[0];
  if (!row || !/^\d{6}$/.test(code)) throw new AuthnError('ERR_TOTP_INVALID');
  const secret = decryptAtRest(kekOf(ctx), row.secret_enc, `totp:${customerId}`);
  const delta = totpFor(secret, customerId, ctx.rpName).validate({ token: code, window: 1 });
  if (delta === null) throw new AuthnError('ERR_TOTP_INVALID');
  const step = Math.floor(Date.now() / 1000 / PERIOD) + delta;
  // Atomic: a code (its time step) is good once, also against two concurrent requests.
  const won = await ctx.db.query(
    'UPDATE totp_credentials SET last_step = $2 WHERE customer_id = $1 AND last_step < $2 RETURNING 1',
    [customerId, step],
  );
  if (won.rowCount === 0) throw new AuthnError('ERR_TOTP_INVALID');
  return step;
}

/**
 * Confirms the set-up begun in `interactionId` with a first code; consumes the enrollment ticket
 * in the same step. Returns the customer and the ticket.
 */
export async function confirmTotpSetup(
  ctx: AuthnContext,
  input: { interactionId: string; code: string },
  meta?: RequestMeta,
): Promise<{ customerId: string; ticketId: string }> {
  const pending = await ctx.db.query<{ customer_id: string }>(
    'SELECT customer_id FROM totp_credentials WHERE interaction_id = $1 AND confirmed_at IS NULL',
    [input.interactionId],
  );
  const customerId = pending.rows[0]?.customer_id;
  if (!customerId) throw new AuthnError('ERR_WEBAUTHN_CHALLENGE');
  await acceptCode(ctx, customerId, input.code, false);
  const ticketId = await ctx.db.transaction(async (tx) => {
    const used = await tx.query<{ id: string }>(
      `UPDATE enrollment_tickets t SET used_at = now() FROM totp_credentials c
       WHERE c.customer_id = $1 AND t.id = c.ticket_id AND t.used_at IS NULL AND t.voided_at IS NULL AND t.expires_at > now()
       RETURNING t.id`,
      [customerId],
    );
    if (used.rowCount === 0) throw new AuthnError('ERR_TICKET_USED');
    await tx.query(
      'UPDATE totp_credentials SET confirmed_at = now(), interaction_id = NULL WHERE customer_id = $1',
      [customerId],
    );
    await recordAudit(tx, {
      type: 'authn.totp.registered',
      outcome: 'success',
      actor: `customer:${customerId}`,
      customerId,
      ...meta,
    });
    return used.rows[0]!.id;
  });
  return { customerId, ticketId };
}

/**
 * Checks a code of an exempted customer who is already signed in, for an operation approval
 * (src/linking/approvals): only while the exemption is open, once per time step (a code that signed
 * the customer in does not approve anything). Throws ERR_TOTP_INVALID.
 */
export async function checkTotpCode(
  ctx: AuthnContext,
  input: { customerId: string; code: string },
): Promise<AlternativeLogin> {
  if (!(await activeExemption(ctx.db, input.customerId))) throw new AuthnError('ERR_TOTP_INVALID');
  await acceptCode(ctx, input.customerId, input.code, true);
  return {
    customerId: input.customerId,
    acr: ALTERNATIVE_MFA_ACR,
    amr: ['otp'],
    authTime: Math.floor(Date.now() / 1000),
  };
}

/** Whether the customer has an open exemption and a confirmed TOTP authenticator. */
export async function hasTotpAlternative(db: Queryable, customerId: string): Promise<boolean> {
  const r = await db.query(
    `SELECT 1 FROM mfa_exemptions e JOIN totp_credentials c ON c.customer_id = e.customer_id
     WHERE e.customer_id = $1 AND e.ended_at IS NULL AND c.confirmed_at IS NOT NULL`,
    [customerId],
  );
  return r.rowCount === 1;
}

export interface AlternativeLogin {
  customerId: string;
  acr: typeof ALTERNATIVE_MFA_ACR;
  amr: string[];
  authTime: number;
}

/**
 * Signs an exempted customer in with customer number + TOTP code. Unknown numbers, customers
 * without an open exemption or a confirmed TOTP, and wrong codes all fail alike (ERR_TOTP_INVALID)
 * so a guesser learns nothing; `customerId` is set on the error when the number was known.
 * `beforeCheck` runs for an exempted customer before the code is looked at (the caller's lock check
 * and attempt slot, src/oidc/passkeySignIn.ts); what it throws ends the attempt unchecked.
 */
export async function signInWithTotp(
  ctx: AuthnContext,
  input: { customerNumber: string; code: string },
  meta?: RequestMeta,
  beforeCheck?: (customerId: string) => Promise<void>,
): Promise<AlternativeLogin> {
  const found = await ctx.db.query<{ id: string; status: string; exempt: boolean }>(
    `SELECT c.id, c.status, EXISTS (SELECT 1 FROM mfa_exemptions e WHERE e.customer_id = c.id AND e.ended_at IS NULL) AS exempt
     FROM customers c WHERE c.customer_number = $1`,
    [input.customerNumber],
  );
  const c = found.rows.length === 1 ? found.rows[0] : undefined;
  try {
    if (!c?.exempt) throw new AuthnError('ERR_TOTP_INVALID');
    await beforeCheck?.(c.id);
    await acceptCode(ctx, c.id, input.code, true);
    if (c.status !== 'active') throw new AuthnError('ERR_CUSTOMER_INACTIVE');
  } catch (err) {
    if (err instanceof AuthnError) {
      err.customerId = c?.exempt ? c.id : undefined;
      await recordAudit(ctx.db, {
        type: 'authn.totp.login',
        outcome: 'failure',
        customerId: c?.id,
        ...meta,
        data: { reason: err.code },
      });
    }
    throw err;
  }
  const result: AlternativeLogin = {
    customerId: c.id,
    acr: ALTERNATIVE_MFA_ACR,
    amr: ['otp'],
    authTime: Math.floor(Date.now() / 1000),
  };
  await recordAudit(ctx.db, {
    type: 'authn.totp.login',
    outcome: 'success',
    actor: `customer:${c.id}`,
    customerId: c.id,
    ...meta,
    data: { acr: result.acr, amr: result.amr },
  });
  return result;
}
