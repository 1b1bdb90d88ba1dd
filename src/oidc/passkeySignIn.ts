/**
 * Signing in with a passkey over HTTP, wherever it happens (an OIDC interaction or the customer's
 * security page): source throttling, failure counting, the account lock that admits known devices
 * (FSA comment 83), the device cookie. One place, so every sign-in path gets the same protection.
 */
import type { Context } from 'koa';
import { recordAudit } from '../audit/index.ts';
import {
  type AlternativeLogin,
  type AuthnContext,
  AuthnError,
  checkEnrollmentTicket,
  finishPasskeyAuthentication,
  type PasskeyLogin,
  type RequestMeta,
  signInWithTotp,
} from '../authn/index.ts';
import type { Db } from '../db/index.ts';
import { HttpError } from '../http/index.ts';
import {
  type AccountLock,
  assessOperation,
  deviceHashOf,
  type LoginAssessment,
  lockAndDevice,
  observeRequest,
  type RiskEngine,
  recordAuthFailure,
  recordAuthSuccess,
  recordLoginFailure,
  releaseAccountAttempt,
  rememberDevice,
  signInGate,
  sourceKey,
  sourceRetryAfter,
  type ThrottlePolicy,
  takeAccountAttempt,
} from '../risk/index.ts';
import { languageOf, type Messages, messages } from '../web/index.ts';
import { deviceSummary, notifyCustomer } from './securityNotices.ts';

export interface SignInDeps {
  db: Db;
  authn: AuthnContext;
  throttle: ThrottlePolicy;
  /** Risk rules applied to every verified sign-in (absent: throttle and lock only). */
  risk?: RiskEngine | undefined;
}

/** A long-lived cookie naming this browser; its hash is stored per customer after a sign-in. */
/** The long-lived cookie naming this browser for known-device checks (only its hash is stored). */
export const DEVICE_COOKIE = 'kkh_device';
const DEVICE_COOKIE_DAYS = 400;
/** Failures attributable to an account: a registered passkey that failed verification. */
const ACCOUNT_FAILURES = new Set(['ERR_WEBAUTHN_VERIFICATION', 'ERR_PASSKEY_COUNTER']);
const TICKET_GUESSES = new Set(['ERR_TICKET_INVALID', 'ERR_TICKET_MALFORMED']);

export function requestMeta(ctx: Context, ceremonyId?: string): RequestMeta {
  // Behind a proxy the socket's port is the proxy's; only a directly connected client's is worth keeping.
  const port = ctx.app.proxy ? undefined : ctx.req.socket.remotePort;
  return { ip: ctx.ip, port, userAgent: ctx.get('user-agent'), interactionId: ceremonyId };
}

/** 429 while the request's source is slowed down after failures. */
export async function refuseThrottledSource(deps: SignInDeps, ctx: Context): Promise<string> {
  const source = sourceKey(ctx.ip);
  const wait = await sourceRetryAfter(deps.db, source);
  if (wait > 0)
    throw new HttpError(
      429,
      'access_denied',
      messages(languageOf(ctx)).refused.throttled(wait),
      'ERR_THROTTLED',
      wait,
    );
  return source;
}

/** Verifies a passkey assertion for the ceremony `ceremonyId` and applies every sign-in rule. */
export async function signInWithPasskey(
  deps: SignInDeps,
  ctx: Context,
  input: { ceremonyId: string; response: unknown },
): Promise<PasskeyLogin> {
  const meta = requestMeta(ctx, input.ceremonyId);
  const source = await refuseThrottledSource(deps, ctx);
  let result: PasskeyLogin;
  try {
    result = await finishPasskeyAuthentication(
      deps.authn,
      { interactionId: input.ceremonyId, response: input.response as never },
      meta,
    );
  } catch (err) {
    if (err instanceof AuthnError) {
      const customerId = ACCOUNT_FAILURES.has(err.code) ? err.customerId : undefined;
      await failed(deps, { source, customerId }, { ...meta, reason: err.code });
      await riskFailure(deps, ctx, meta, {
        method: 'passkey',
        reason: err.code,
        customerId: err.customerId,
        credentialId: credentialIdOf(input.response),
      });
    }
    throw err;
  }
  await admit(deps, ctx, result.customerId, meta, 'passkey', {
    credentialId: result.credentialId,
    backedUp: result.backedUp,
  });
  return result;
}

/**
 * Signs an exempted customer in with customer number + TOTP code (not phishing-resistant; only
 * with an operator's exemption), under the same throttle and lock rules as passkeys.
 */
export async function signInWithAlternativeMfa(
  deps: SignInDeps,
  ctx: Context,
  input: { ceremonyId: string; customerNumber: string; code: string },
): Promise<AlternativeLogin> {
  const meta = requestMeta(ctx, input.ceremonyId);
  const source = await refuseThrottledSource(deps, ctx);
  let result: AlternativeLogin;
  // A code can be guessed, so each attempt takes its slot against the account before the code is
  // checked (takeAccountAttempt, atomic): parallel guesses cannot outrun the lock, and a locked
  // account answers the same whether the code was right or not. A known device passes (FSA 83).
  let attemptCounted = false;
  let slotOf: string | undefined;
  const beforeCheck = async (customerId: string) => {
    attemptCounted = await takeAccountAttempt(deps.db, customerId, deps.throttle);
    if (attemptCounted) {
      slotOf = customerId;
      return;
    }
    const { lock, known } = await lockAndDevice(
      deps.db,
      customerId,
      deviceHashOf(ctx.cookies.get(DEVICE_COOKIE, { signed: false })),
    );
    if (known && !lock.reproofingRequired) return;
    // Unchecked, but still a guess from this source: it slows the source down.
    await recordAuthFailure(deps.db, { source }, { ...meta, reason: 'ERR_ACCOUNT_LOCKED' }, deps.throttle);
    await refuseLocked(deps, ctx, customerId, meta, 'totp', lock);
  };
  try {
    result = await signInWithTotp(
      deps.authn,
      { customerNumber: input.customerNumber, code: input.code },
      meta,
      beforeCheck,
    );
  } catch (err) {
    if (err instanceof AuthnError && err.code === 'ERR_TOTP_INVALID') {
      await failed(
        deps,
        { source, customerId: err.customerId, attemptCounted },
        { ...meta, reason: err.code },
      );
      await riskFailure(deps, ctx, meta, { method: 'totp', reason: err.code, customerId: err.customerId });
    } else if (slotOf) await releaseAccountAttempt(deps.db, slotOf);
    throw err;
  }
  try {
    await admit(deps, ctx, result.customerId, meta, 'totp');
  } catch (err) {
    // A right code refused for another reason (lock, risk rules) was no guess: its slot is given back.
    if (slotOf) await releaseAccountAttempt(deps.db, slotOf);
    throw err;
  }
  return result;
}

/**
 * After a verified credential: a locked account still admits its owner from a browser they already
 * signed in with (FSA comment 83); anyone else waits for the lock to end or re-proves their
 * identity. Then the run of failures ends and this browser becomes a known device.
 */
async function admit(
  deps: SignInDeps,
  ctx: Context,
  customerId: string,
  meta: RequestMeta,
  method: 'passkey' | 'totp',
  credential: { credentialId?: string; backedUp?: boolean } = {},
): Promise<void> {
  const device = ctx.cookies.get(DEVICE_COOKIE, { signed: false });
  // The lock, the device and the risk facts in one statement.
  const gate = await signInGate(deps.risk, deps.db, {
    customerId,
    method,
    credentialId: credential.credentialId,
    backedUp: credential.backedUp,
    ip: meta.ip,
    port: meta.port,
    userAgent: meta.userAgent,
    deviceHash: deviceHashOf(device),
  });
  const { lock, known } = gate;
  // A lock a peer's takeover signal set (re-proofing required) admits no device, known or not.
  const refused = lock.locked && (!known || lock.reproofingRequired);
  // Refusals in the language of the page that asked (its script shows error_description).
  const t = messages(languageOf(ctx));
  if (!refused && deps.risk) await applyRiskRules(deps, t, customerId, await gate.assess());
  if (refused) await refuseLocked(deps, ctx, customerId, meta, method, lock, credential.credentialId);
  // None pending (the common case): no statement. One recorded after the gate read stays counted.
  if (gate.failuresPending) await recordAuthSuccess(deps.db, customerId);
  const token = await rememberDevice(deps.db, customerId, device, ctx.get('user-agent'));
  await notifyCustomer(deps.db, {
    customerId,
    kind: known ? 'login' : 'new_device',
    data: { method, device: deviceSummary(meta.userAgent) },
    ...(meta.interactionId ? { dedupeKey: `login:${meta.interactionId}` } : {}),
  });
  ctx.cookies.set(DEVICE_COOKIE, token, {
    httpOnly: true,
    secure: true,
    sameSite: 'lax',
    signed: false,
    overwrite: true,
    maxAge: DEVICE_COOKIE_DAYS * 24 * 3600 * 1000,
  });
}

/** Refuses a sign-in against a locked account (403 ERR_ACCOUNT_LOCKED), audited and in the forensic record. */
async function refuseLocked(
  deps: SignInDeps,
  ctx: Context,
  customerId: string,
  meta: RequestMeta,
  method: 'passkey' | 'totp',
  lock: AccountLock,
  credentialId?: string,
): Promise<never> {
  await recordAudit(deps.db, {
    type: 'risk.account.locked.refused',
    outcome: 'failure',
    customerId,
    ...meta,
    data: { lockedUntil: lock.lockedUntil?.toISOString() },
  });
  await riskFailure(deps, ctx, meta, { method, reason: 'ERR_ACCOUNT_LOCKED', customerId, credentialId });
  const t = messages(languageOf(ctx));
  throw new HttpError(
    403,
    'access_denied',
    lock.reproofingRequired ? t.refused.lockedForProofing : t.refused.locked,
    'ERR_ACCOUNT_LOCKED',
  );
}

/**
 * The configured rules on a verified sign-in (JSDA IV.5.(2)): a block is refused and the customer
 * told (no link in the text); a step-up is refused with what the customer can do about it.
 */
async function applyRiskRules(
  deps: SignInDeps,
  t: Messages,
  customerId: string,
  assessed: LoginAssessment,
): Promise<void> {
  if (assessed.decision === 'block')
    await refuseBlocked(deps, customerId, 'risk_block', t.refused.riskBlocked);
  if (assessed.decision === 'step_up')
    throw new HttpError(403, 'access_denied', t.refused.riskStepUp, 'ERR_RISK_STEP_UP');
}

/**
 * An important operation by a signed-in customer (security page, bank links): observed for post-login
 * changes of network or browser, recorded with its risk decision, and — when `sensitive` (it adds
 * exposure, e.g. a new passkey, a contact change, declared travel) — refused on step-up or block.
 * Protective operations (revoking a consent, ending sessions, unlinking a bank) are recorded but never
 * refused.
 */
export async function guardOperation(
  deps: Pick<SignInDeps, 'db' | 'risk'>,
  ctx: Context,
  o: { customerId: string; sessionUid: string; operation: string; sensitive: boolean },
): Promise<void> {
  if (!deps.risk) return;
  const meta = requestMeta(ctx);
  const sessionKey = `session:${o.sessionUid}`;
  await observeRequest(deps.risk, deps.db, {
    trackingId: sessionKey,
    sessionKey,
    customerId: o.customerId,
    ip: meta.ip,
    port: meta.port,
    userAgent: meta.userAgent,
  });
  const assessed = await assessOperation(deps.risk, deps.db, {
    customerId: o.customerId,
    operation: o.operation,
    sensitive: o.sensitive,
    sessionKey,
    ip: meta.ip,
    port: meta.port,
    userAgent: meta.userAgent,
  });
  if (!o.sensitive || assessed.decision === 'allow') return;
  const t = messages(languageOf(ctx));
  if (assessed.decision === 'block')
    await refuseBlocked(deps, o.customerId, 'suspicious_activity', t.refused.operationBlocked);
  throw new HttpError(403, 'login_required', t.refused.operationStepUp, 'ERR_RISK_STEP_UP');
}

/** Tells the customer (no link in the text) and refuses with ERR_RISK_BLOCKED. */
async function refuseBlocked(
  deps: Pick<SignInDeps, 'db'>,
  customerId: string,
  reason: 'risk_block' | 'suspicious_activity',
  message: string,
): Promise<never> {
  await notifyCustomer(deps.db, {
    customerId,
    kind: 'security_alert',
    data: { reason, action: reason === 'risk_block' ? 'login_blocked' : 'none' },
  });
  throw new HttpError(403, 'access_denied', message, 'ERR_RISK_BLOCKED');
}

/** A failed sign-in in the risk record (velocity, credential stuffing, forensics). */
async function riskFailure(
  deps: SignInDeps,
  ctx: Context,
  meta: RequestMeta,
  f: { method: string; reason: string; customerId?: string | undefined; credentialId?: string | undefined },
): Promise<void> {
  if (!deps.risk) return;
  await recordLoginFailure(deps.risk, deps.db, {
    ...f,
    ip: meta.ip,
    port: meta.port,
    userAgent: meta.userAgent,
    deviceHash: deviceHashOf(ctx.cookies.get(DEVICE_COOKIE, { signed: false })),
  });
}

/** The credential id an assertion names (for the record), if it names one sensibly. */
function credentialIdOf(response: unknown): string | undefined {
  const id = (response as { id?: unknown } | null)?.id;
  return typeof id === 'string' && id.length > 0 && id.length <= 1024 ? id : undefined;
}

/** Counts a failure; tells the customer when it locked their account. */
async function failed(
  deps: SignInDeps,
  who: { source: string; customerId: string | undefined; attemptCounted?: boolean },
  meta: RequestMeta & { reason: string },
): Promise<void> {
  const outcome = await recordAuthFailure(deps.db, who, meta, deps.throttle);
  if (outcome.accountLockedNow && who.customerId)
    await notifyCustomer(deps.db, {
      customerId: who.customerId,
      kind: 'account_locked',
      data: { reason: 'failed_attempts' },
    });
}

/** Checks an enrollment ticket; guessing slows the guesser's network down (the ticket lock protects the customer). */
export async function checkTicketThrottled(
  deps: SignInDeps,
  ctx: Context,
  input: { ceremonyId: string; customerNumber: string; ticket: string },
): Promise<{ customerId: string; ticketId: string }> {
  const meta = requestMeta(ctx, input.ceremonyId);
  const source = await refuseThrottledSource(deps, ctx);
  try {
    return await checkEnrollmentTicket(
      deps.authn,
      { customerNumber: input.customerNumber, ticket: input.ticket },
      meta,
    );
  } catch (err) {
    if (err instanceof AuthnError && TICKET_GUESSES.has(err.code))
      await recordAuthFailure(deps.db, { source }, { ...meta, reason: err.code }, deps.throttle);
    throw err;
  }
}
