/**
 * Bank–brokerage sweep links (issue 6, item 4). A signed-in customer starts a link at the hub,
 * signs in at the bank (src/federation), and the policy decides on what the bank asserted:
 * `create_sweep_link` with the hub session's acr, the bank's strength class, 名義一致 and the
 * customer's status. Unlinking is `lower_limit` (always at once). Institutions suspend and resume.
 * Every change and every refused link notifies the customer (critical kind `bank_link`) and both
 * institutions (institution_events, read with GET /api/institution/v1/events).
 */
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import * as client from 'openid-client';
import { recordAudit } from '../audit/index.ts';
import type { Config } from '../config/index.ts';
import { type Db, lockCustomer, type Queryable } from '../db/index.ts';
import {
  BANK_CALLBACK_PATH,
  type BankChecks,
  type BankConfig,
  type BankFederation,
  FederationError,
} from '../federation/index.ts';
import { decryptAtRest, encryptAtRest } from '../keys/index.ts';
import { enqueueNotification, type NotificationData } from '../notify/index.ts';
import { matchesRegisteredName } from '../proofing/index.ts';
import { bankStrength } from './bankStrength.ts';
import { channelDisabled } from './channels.ts';
import { decide } from './decide.ts';
import { LinkError } from './errors.ts';
import { customerLimits } from './limits.ts';
import type { PolicyDecision } from './policy/evaluatePolicy.ts';
import { ACR_FACT_VALUES, type FactsOf } from './policy/operations.ts';
import type { Policy } from './policy/parsePolicy.ts';

export interface LinkingDeps {
  db: Db;
  config: Config;
  policy: Policy;
  federation: BankFederation;
  /** Seals the PKCE verifier and nonce of an attempt. */
  kek: Buffer;
}

/** Where a request came from, for the audit log. */
export interface RequestMeta {
  ip?: string | undefined;
  port?: number | undefined;
  userAgent?: string | undefined;
}

export type LinkStatus = 'active' | 'suspended' | 'removed';

export interface BankLink {
  id: string;
  customerId: string;
  accountId: string;
  brokerageInstitutionId: string;
  bankId: string;
  bankInstitutionId: string | null;
  bankName: string;
  bankAccountMasked: string | null;
  holderName: string;
  bankStrength: string;
  capAmount: number;
  status: LinkStatus;
  policyVersion: string;
  decidedBy: string[];
  createdAt: string;
  updatedAt: string;
  suspendedAt: string | null;
  suspendedBy: string | null;
  removedAt: string | null;
}

export type RefusalReason = 'bank_strength' | 'name_mismatch' | 'frozen' | 'bank_error' | 'policy';

export type LinkOutcome =
  | { kind: 'linked'; link: BankLink; notice?: { en: string; ja: string } | undefined }
  /** The same bank account is already linked to this brokerage account. */
  | { kind: 'exists' }
  | { kind: 'refused'; reason: RefusalReason; reasons: Array<{ en: string; ja: string }> }
  /** The customer must sign in at the hub again with a passkey. */
  | { kind: 'step_up'; reasons: Array<{ en: string; ja: string }> };

interface LinkRow {
  id: string;
  customer_id: string;
  account_id: string;
  brokerage_institution_id: string;
  bank_id: string;
  bank_institution_id: string | null;
  bank_name: string;
  bank_account_masked: string | null;
  holder_name: string;
  bank_subject: string;
  bank_strength: string;
  cap_amount: string | number;
  status: LinkStatus;
  policy_version: string;
  decided_by: string[];
  created_at: string | Date;
  updated_at: string | Date;
  suspended_at: string | Date | null;
  suspended_by: string | null;
  removed_at: string | Date | null;
}

const iso = (v: string | Date) => new Date(v).toISOString();
const isoOrNull = (v: string | Date | null) => (v === null ? null : iso(v));

function toLink(r: LinkRow): BankLink {
  return {
    id: r.id,
    customerId: r.customer_id,
    accountId: r.account_id,
    brokerageInstitutionId: r.brokerage_institution_id,
    bankId: r.bank_id,
    bankInstitutionId: r.bank_institution_id,
    bankName: r.bank_name,
    bankAccountMasked: r.bank_account_masked,
    holderName: r.holder_name,
    bankStrength: r.bank_strength,
    capAmount: Number(r.cap_amount),
    status: r.status,
    policyVersion: r.policy_version,
    decidedBy: r.decided_by,
    createdAt: iso(r.created_at),
    updatedAt: iso(r.updated_at),
    suspendedAt: isoOrNull(r.suspended_at),
    suspendedBy: r.suspended_by,
    removedAt: isoOrNull(r.removed_at),
  };
}

const hashState = (state: string) =>
  createHash('sha256').update(`bank-link-state:${state}`).digest('base64url');

async function customerLanguage(db: Queryable, customerId: string): Promise<'ja' | 'en'> {
  const r = await db.query<{ language: string }>(
    'SELECT language FROM notify_settings WHERE customer_id = $1',
    [customerId],
  );
  return r.rows[0]?.language === 'en' ? 'en' : 'ja';
}

/** An event for a member institution's feed (GET /api/institution/v1/events). */
async function institutionEvent(
  db: Queryable,
  institutionId: string | null,
  type: string,
  linkId: string | null,
  data: Record<string, unknown>,
): Promise<void> {
  if (!institutionId) return;
  await db.query(
    `INSERT INTO institution_events (institution_id, type, link_id, data)
     SELECT id, $2, $3, $4::jsonb FROM institutions WHERE id = $1`,
    [institutionId, type, linkId, JSON.stringify(data)],
  );
}

/**
 * The events both institutions get about a link: the brokerage learns its customer number when
 * the customer is its own; the bank learns its own subject for the customer, never the hub's ids.
 */
async function tellInstitutions(
  db: Queryable,
  type: string,
  p: {
    linkId: string | null;
    customerId: string;
    accountId: string;
    brokerageInstitutionId: string;
    bankInstitutionId: string | null;
    bankSubject: string | undefined;
    data: Record<string, unknown>;
  },
): Promise<void> {
  const customer = await db.query<{ customer_number: string }>(
    'SELECT customer_number FROM customers WHERE id = $1 AND institution_id = $2',
    [p.customerId, p.brokerageInstitutionId],
  );
  await institutionEvent(db, p.brokerageInstitutionId, type, p.linkId, {
    ...p.data,
    accountId: p.accountId,
    customerNumber: customer.rows[0]?.customer_number ?? null,
  });
  if (p.bankSubject !== undefined && p.bankInstitutionId !== p.brokerageInstitutionId)
    await institutionEvent(db, p.bankInstitutionId, type, p.linkId, { ...p.data, subject: p.bankSubject });
}

async function notifyLink(
  db: Queryable,
  customerId: string,
  bank: { name: { ja: string; en: string } } | undefined,
  bankName: string,
  data: Omit<NotificationData<'bank_link'>, 'bankName'>,
  dedupeKey: string,
): Promise<void> {
  const name = bank ? bank.name[await customerLanguage(db, customerId)] : bankName;
  await enqueueNotification(db, {
    customerId,
    kind: 'bank_link',
    data: { ...data, bankName: name },
    dedupeKey,
  });
}

/** An audit record of something the customer did here. */
function auditCustomer(
  db: Queryable,
  input: { customerId: string; meta?: RequestMeta | undefined },
  type: string,
  outcome: 'success' | 'info' | 'failure',
  data: Record<string, unknown>,
): Promise<void> {
  return recordAudit(db, {
    type,
    outcome,
    actor: `customer:${input.customerId}`,
    customerId: input.customerId,
    ...input.meta,
    data,
  });
}

export interface StartLinkInput {
  customerId: string;
  /** The hub session's uid: the callback must come back in it. */
  sessionUid: string;
  /** acr of the hub session (phr, phrh, otp, …). */
  sessionAcr: string | undefined;
  /** When the customer signed in at the hub (epoch seconds). */
  sessionLoginTs: number | undefined;
  bankId: string;
  accountId: string;
  meta?: RequestMeta;
}

/** Records an attempt and returns the bank's authorization URL to send the customer to. */
export async function startBankLink(deps: LinkingDeps, input: StartLinkInput): Promise<URL> {
  const { db } = deps;
  const bank = deps.federation.bank(input.bankId);
  if (!bank) throw new LinkError('ERR_LINK_BANK', 'no such bank');
  const account = await db.query(
    "SELECT 1 FROM accounts WHERE id = $1 AND customer_id = $2 AND kind = 'securities' AND status = 'open'",
    [input.accountId, input.customerId],
  );
  if (account.rowCount !== 1) throw new LinkError('ERR_LINK_ACCOUNT', 'no such brokerage account');
  const checks: BankChecks = {
    state: client.randomState(),
    nonce: client.randomNonce(),
    codeVerifier: client.randomPKCECodeVerifier(),
  };
  const id = `lka_${randomBytes(12).toString('hex')}`;
  // A stale sign-in proves nothing about who is at the keyboard now: it counts as none.
  const fresh =
    input.sessionLoginTs !== undefined &&
    Date.now() / 1000 - input.sessionLoginTs <= deps.config.linking.signInMaxAgeSeconds;
  const acr =
    fresh && (ACR_FACT_VALUES as readonly string[]).includes(input.sessionAcr ?? '')
      ? input.sessionAcr!
      : 'none';
  let url: URL;
  try {
    url = await deps.federation.authorizationUrl(bank.id, checks);
  } catch (err) {
    if (!(err instanceof FederationError)) throw err;
    // The hub's own key is the hub's fault, not the bank's: said so to the customer and the operator.
    const ours = err.code === 'ERR_RP_KEY';
    await auditCustomer(
      db,
      input,
      ours ? 'linking.link.hub_unavailable' : 'linking.link.bank_unavailable',
      'failure',
      {
        bankId: bank.id,
        code: err.code,
        reason: err.message.slice(0, 200),
      },
    );
    throw ours
      ? new LinkError(
          'ERR_LINK_HUB_UNAVAILABLE',
          'bank linking is unavailable just now; please try again later',
        )
      : new LinkError('ERR_LINK_BANK_UNAVAILABLE', 'the bank cannot be reached just now');
  }
  await db.query(
    `INSERT INTO bank_link_attempts (id, state_hash, customer_id, session_uid, bank_id, account_id, secrets_enc, brokerage_acr, expires_at, redirect_uri)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now() + make_interval(secs => $9), $10)`,
    [
      id,
      hashState(checks.state),
      input.customerId,
      input.sessionUid,
      bank.id,
      input.accountId,
      encryptAtRest(deps.kek, JSON.stringify({ nonce: checks.nonce, codeVerifier: checks.codeVerifier }), id),
      acr,
      deps.config.linking.attemptTtl,
      deps.federation.redirectUriFor(bank.id),
    ],
  );
  await auditCustomer(db, input, 'linking.link.started', 'info', {
    attemptId: id,
    bankId: bank.id,
    accountId: input.accountId,
    brokerageAcr: acr,
  });
  return url;
}

interface AttemptRow {
  id: string;
  customer_id: string;
  session_uid: string;
  bank_id: string;
  account_id: string;
  secrets_enc: string;
  brokerage_acr: string;
  /** NULL for attempts started before migration 0038 (the shared callback path). */
  redirect_uri: string | null;
  expired: boolean;
  consumed: boolean;
}

const REFUSAL_BY_RULE: Record<string, RefusalReason> = {
  'link.bank-password-only': 'bank_strength',
  'link.name-mismatch': 'name_mismatch',
  'link.frozen': 'frozen',
};

export interface FinishLinkInput {
  /** The full callback URL as the browser requested it. */
  callbackUrl: URL;
  customerId: string;
  sessionUid: string;
  meta?: RequestMeta;
}

/**
 * Completes a link from the bank's callback. Throws LinkError for a callback that does not belong
 * here (state missing, unknown, replayed, expired, other session) — nothing changes then; every
 * answer of the bank, including errors and invalid responses, ends in an outcome.
 */
export async function finishBankLink(deps: LinkingDeps, input: FinishLinkInput): Promise<LinkOutcome> {
  const { db } = deps;
  const actor = `customer:${input.customerId}`;
  const refuseCallback = async (code: LinkError['code'], message: string): Promise<never> => {
    await auditCustomer(db, input, 'linking.callback.rejected', 'failure', { code });
    throw new LinkError(code, message);
  };
  const state = input.callbackUrl.searchParams.get('state');
  if (!state || state.length > 512)
    return refuseCallback('ERR_LINK_STATE', 'the bank’s answer carries no state');
  const found = await db.query<AttemptRow>(
    `SELECT id, customer_id, session_uid, bank_id, account_id, secrets_enc, brokerage_acr, redirect_uri,
            expires_at <= now() AS expired, consumed_at IS NOT NULL AS consumed
     FROM bank_link_attempts WHERE state_hash = $1`,
    [hashState(state)],
  );
  const attempt = found.rows[0];
  if (!attempt) return refuseCallback('ERR_LINK_STATE', 'the state is unknown or was altered');
  if (attempt.customer_id !== input.customerId || attempt.session_uid !== input.sessionUid)
    return refuseCallback('ERR_LINK_SESSION', 'this answer belongs to another sign-in');
  // OAuth mix-up: an answer must come back where its attempt's bank was told to send it; on another
  // bank's path it may be another bank's code, which must never reach this bank's token endpoint.
  const expectedPath = attempt.redirect_uri ? new URL(attempt.redirect_uri).pathname : BANK_CALLBACK_PATH;
  if (input.callbackUrl.pathname !== expectedPath)
    return refuseCallback(
      'ERR_LINK_WRONG_BANK',
      'this answer came back from another bank than the one started',
    );
  if (attempt.consumed) return refuseCallback('ERR_LINK_REPLAY', 'this answer was already used');
  if (attempt.expired) return refuseCallback('ERR_LINK_EXPIRED', 'the link took too long; start again');
  const consumed = await db.query(
    'UPDATE bank_link_attempts SET consumed_at = now() WHERE id = $1 AND consumed_at IS NULL',
    [attempt.id],
  );
  if (consumed.rowCount !== 1) return refuseCallback('ERR_LINK_REPLAY', 'this answer was already used');

  const bank = deps.federation.bank(attempt.bank_id);
  const account = await db.query<{ institution_id: string }>(
    'SELECT institution_id FROM accounts WHERE id = $1',
    [attempt.account_id],
  );
  const brokerageInstitutionId = account.rows[0]!.institution_id;
  const settle = (outcome: string) =>
    db.query('UPDATE bank_link_attempts SET outcome = $2 WHERE id = $1', [attempt.id, outcome]);

  const refused = async (
    reason: RefusalReason,
    reasons: Array<{ en: string; ja: string }>,
    bankSubject: string | undefined,
    accountMasked: string | undefined,
  ): Promise<LinkOutcome> => {
    await db.transaction(async (tx) => {
      await notifyLink(
        tx,
        input.customerId,
        bank,
        attempt.bank_id,
        { event: 'refused', reason, ...(accountMasked ? { accountMasked } : {}) },
        `bank-link-refused:${attempt.id}`,
      );
      await tellInstitutions(tx, 'link.refused', {
        linkId: null,
        customerId: input.customerId,
        accountId: attempt.account_id,
        brokerageInstitutionId,
        bankInstitutionId: bank?.institutionId ?? null,
        bankSubject,
        data: { bankId: attempt.bank_id, reason, bankAccountMasked: accountMasked ?? null },
      });
      await tx.query('UPDATE bank_link_attempts SET outcome = $2 WHERE id = $1', [
        attempt.id,
        `refused:${reason}`,
      ]);
    });
    return { kind: 'refused', reason, reasons };
  };

  if (!bank)
    return refused(
      'policy',
      [{ en: 'The bank is no longer offered.', ja: 'この銀行は現在ご利用いただけません。' }],
      undefined,
      undefined,
    );

  let checks: BankChecks;
  try {
    const sealed = JSON.parse(decryptAtRest(deps.kek, attempt.secrets_enc, attempt.id)) as Omit<
      BankChecks,
      'state'
    >;
    checks = { state, nonce: sealed.nonce, codeVerifier: sealed.codeVerifier };
  } catch {
    return refuseCallback('ERR_LINK_STATE', 'the attempt cannot be read');
  }

  let assertion: Awaited<ReturnType<BankFederation['complete']>>;
  try {
    assertion = await deps.federation.complete(bank.id, input.callbackUrl, checks);
  } catch (err) {
    if (!(err instanceof FederationError)) throw err;
    await auditCustomer(db, input, 'linking.link.bank_failed', 'failure', {
      attemptId: attempt.id,
      bankId: bank.id,
      code: err.code,
      ...(err.oauthError ? { oauthError: err.oauthError } : {}),
      reason: err.message.slice(0, 200),
    });
    return refused(
      'bank_error',
      [{ en: 'The sign-in at the bank was not completed.', ja: '銀行での認証が完了しませんでした。' }],
      undefined,
      undefined,
    );
  }

  const customer = await db.query<{ name_kanji: string; name_kana: string; status: string }>(
    'SELECT name_kanji, name_kana, status FROM customers WHERE id = $1',
    [input.customerId],
  );
  const c = customer.rows[0]!;
  const strength = bankStrength({ acr: assertion.acr, amr: assertion.amr }, bank.acrStrength);
  const nameMatches = matchesRegisteredName({ kanji: c.name_kanji, kana: c.name_kana }, assertion.names);
  const facts: FactsOf<'create_sweep_link'> = {
    brokerageAcr: attempt.brokerage_acr as FactsOf<'create_sweep_link'>['brokerageAcr'],
    bankStrength: strength,
    nameMatches,
    frozen: c.status === 'frozen',
  };
  const decision = await decide(db, deps.policy, 'create_sweep_link', facts, {
    customerId: input.customerId,
    actor,
    ip: input.meta?.ip,
    subject: {
      attemptId: attempt.id,
      bankId: bank.id,
      accountId: attempt.account_id,
      bankAccountMasked: assertion.accountMasked ?? null,
      bankAcr: assertion.acr ?? null,
      bankAmr: assertion.amr,
      // Which of the bank's advertised protections (PAR, JAR, DPoP) the exchange used.
      bankProtections: assertion.protections,
    },
  });

  if (decision.decision === 'step_up') {
    await settle('step_up');
    return { kind: 'step_up', reasons: decision.reasons };
  }
  if (decision.decision === 'deny') {
    const reason = decision.decidedBy.map((r) => REFUSAL_BY_RULE[r]).find(Boolean) ?? 'policy';
    return refused(reason, decision.reasons, assertion.subject, assertion.accountMasked);
  }

  const cap = decision.obligations.capAmount ?? deps.config.linking.defaultSweepCap;
  const reducedCap = decision.obligations.capAmount !== undefined;
  const holderName =
    assertion.names.find((n) => matchesRegisteredName({ kanji: c.name_kanji, kana: c.name_kana }, [n])) ??
    assertion.names[0] ??
    '';
  const linkId = `lnk_${randomUUID().replaceAll('-', '')}`;
  const link = await db.transaction(async (tx) => {
    const inserted = await tx.query<LinkRow>(
      `INSERT INTO bank_links (id, customer_id, account_id, brokerage_institution_id, bank_id, bank_institution_id,
         bank_name, bank_account_masked, holder_name, bank_subject, bank_strength, cap_amount, policy_version, decided_by)
       VALUES ($1, $2, $3, $4, $5, (SELECT id FROM institutions WHERE id = $6), $7, $8, $9, $10, $11, $12, $13, $14)
       ON CONFLICT DO NOTHING RETURNING *`,
      [
        linkId,
        input.customerId,
        attempt.account_id,
        brokerageInstitutionId,
        bank.id,
        bank.institutionId ?? null,
        bank.name.ja,
        assertion.accountMasked ?? null,
        holderName,
        assertion.subject,
        strength,
        cap,
        decision.policyVersion,
        decision.decidedBy,
      ],
    );
    const row = inserted.rows[0];
    if (!row) return undefined;
    await notifyLink(
      tx,
      input.customerId,
      bank,
      bank.name.ja,
      {
        event: 'linked',
        capAmount: cap,
        ...(assertion.accountMasked ? { accountMasked: assertion.accountMasked } : {}),
        ...(reducedCap ? { reducedCap: true } : {}),
      },
      `bank-link:${linkId}:linked`,
    );
    await tellInstitutions(tx, 'link.created', {
      linkId,
      customerId: input.customerId,
      accountId: attempt.account_id,
      brokerageInstitutionId,
      bankInstitutionId: row.bank_institution_id,
      bankSubject: assertion.subject,
      data: {
        bankId: bank.id,
        bankAccountMasked: row.bank_account_masked,
        bankStrength: strength,
        capAmount: cap,
      },
    });
    await auditCustomer(tx, input, 'linking.link.created', 'success', {
      linkId,
      attemptId: attempt.id,
      bankId: bank.id,
      bankStrength: strength,
      capAmount: cap,
    });
    await tx.query('UPDATE bank_link_attempts SET outcome = $2 WHERE id = $1', [
      attempt.id,
      `linked:${linkId}`,
    ]);
    return toLink(row);
  });
  if (!link) {
    await settle('exists');
    return { kind: 'exists' };
  }
  return { kind: 'linked', link, notice: decision.obligations.notice };
}

const LINK_COLUMNS = `id, customer_id, account_id, brokerage_institution_id, bank_id, bank_institution_id, bank_name,
  bank_account_masked, holder_name, bank_subject, bank_strength, cap_amount, status, policy_version, decided_by,
  created_at, updated_at, suspended_at, suspended_by, removed_at`;
/** The same columns of bank_links aliased `l`, for joins. */
const LINK_COLUMNS_L = LINK_COLUMNS.split(',')
  .map((c) => `l.${c.trim()}`)
  .join(', ');

/** The customer's links, newest first (removed ones too, for the record). */
export async function listBankLinks(db: Queryable, customerId: string): Promise<BankLink[]> {
  const r = await db.query<LinkRow>(
    `SELECT ${LINK_COLUMNS} FROM bank_links WHERE customer_id = $1 ORDER BY created_at DESC, id`,
    [customerId],
  );
  return r.rows.map(toLink);
}

async function lockLink(tx: Queryable, linkId: string): Promise<LinkRow | undefined> {
  const r = await tx.query<LinkRow>(`SELECT ${LINK_COLUMNS} FROM bank_links WHERE id = $1 FOR UPDATE`, [
    linkId,
  ]);
  return r.rows[0];
}

const bankOf = (config: Config, bankId: string): BankConfig | undefined =>
  config.linking.banks.find((b) => b.id === bankId);

/** The customer removes a link: `lower_limit`, never held back; at once, notified. */
export async function unlinkBankLink(
  deps: Pick<LinkingDeps, 'db' | 'config' | 'policy'>,
  input: { customerId: string; linkId: string; meta?: RequestMeta },
): Promise<BankLink> {
  const actor = `customer:${input.customerId}`;
  return deps.db.transaction(async (tx) => {
    const row = await lockLink(tx, input.linkId);
    if (!row || row.customer_id !== input.customerId || row.status === 'removed')
      throw new LinkError('ERR_LINK_NOT_FOUND', 'no such link');
    await decide(
      tx,
      deps.policy,
      'lower_limit',
      {},
      {
        customerId: input.customerId,
        actor,
        ip: input.meta?.ip,
        subject: { linkId: row.id, change: 'unlink' },
      },
    );
    const updated = await tx.query<LinkRow>(
      `UPDATE bank_links SET status = 'removed', removed_at = now(), updated_at = now() WHERE id = $1 RETURNING ${LINK_COLUMNS}`,
      [row.id],
    );
    await notifyLink(
      tx,
      row.customer_id,
      bankOf(deps.config, row.bank_id),
      row.bank_name,
      { event: 'unlinked', ...(row.bank_account_masked ? { accountMasked: row.bank_account_masked } : {}) },
      `bank-link:${row.id}:unlinked`,
    );
    await tellInstitutions(tx, 'link.removed', {
      linkId: row.id,
      customerId: row.customer_id,
      accountId: row.account_id,
      brokerageInstitutionId: row.brokerage_institution_id,
      bankInstitutionId: row.bank_institution_id,
      bankSubject: row.bank_subject,
      data: { bankId: row.bank_id, by: 'customer' },
    });
    await auditCustomer(tx, input, 'linking.link.removed', 'success', {
      linkId: row.id,
      bankId: row.bank_id,
    });
    return toLink(updated.rows[0]!);
  });
}

export interface SuspensionInput {
  linkId: string;
  /** The calling member institution. */
  institutionId: string;
  clientId: string;
  /** true: suspend; false: resume. */
  suspend: boolean;
  /** Free text for the audit log and the other institution (at most 200 characters). */
  reason?: string | undefined;
  meta?: RequestMeta;
}

/**
 * An institution suspends or resumes a link. Only the brokerage of the linked account and the
 * linked bank's institution see a link (anyone else: not found); only the institution that
 * suspended a link resumes it, so a bank's fraud stop cannot be lifted by the brokerage or the
 * other way round. While a peer's stop on the customer's sweeps stands (sweep_peer_stops), no
 * institution resumes any of the customer's links: only re-proofing or an operator ends that stop
 * (clearPeerLevels, src/risk); a link the peer suspended is then resumed by either institution.
 */
export async function setBankLinkSuspended(
  db: Db,
  config: Config,
  input: SuspensionInput,
): Promise<BankLink> {
  const by = `institution:${input.institutionId}`;
  return db.transaction(async (tx) => {
    const row = await lockLink(tx, input.linkId);
    if (
      !row ||
      (row.brokerage_institution_id !== input.institutionId &&
        row.bank_institution_id !== input.institutionId)
    )
      throw new LinkError('ERR_LINK_NOT_FOUND', 'no such link');
    if (row.status === 'removed') throw new LinkError('ERR_LINK_STATUS', 'the link was removed');
    if (input.suspend && row.status === 'suspended')
      throw new LinkError('ERR_LINK_STATUS', 'the link is already suspended');
    if (!input.suspend && row.status === 'active')
      throw new LinkError('ERR_LINK_STATUS', 'the link is not suspended');
    if (!input.suspend && (await sweepsPeerStopped(tx, row.customer_id)))
      throw new LinkError(
        'ERR_LINK_SUSPENDED_BY_OTHER',
        'a peer stopped this customer’s sweeps: only re-proofing or an operator lifts that stop',
      );
    // A link a peer suspended, once its stop is lifted, is resumed by either institution of the link;
    // an institution's stop only by itself.
    if (!input.suspend && row.suspended_by !== by && !row.suspended_by?.startsWith('peer:'))
      throw new LinkError(
        'ERR_LINK_SUSPENDED_BY_OTHER',
        'only the institution that suspended the link can resume it',
      );
    return changeSuspension(tx, config, row, {
      suspend: input.suspend,
      by,
      reason: input.reason,
      audit: { actor: `client:${input.clientId}`, clientId: input.clientId, ...input.meta },
    });
  });
}

/** Suspends or resumes one locked link: the row, the customer's notice, both feeds, the audit log. */
async function changeSuspension(
  tx: Queryable,
  config: Config,
  row: LinkRow,
  o: {
    suspend: boolean;
    /** `institution:<id>` or `peer:<id>`. */
    by: string;
    reason?: string | undefined;
    audit: { actor: string; clientId?: string | undefined } & RequestMeta;
  },
): Promise<BankLink> {
  const updated = o.suspend
    ? await tx.query<LinkRow>(
        `UPDATE bank_links SET status = 'suspended', suspended_at = now(), suspended_by = $2, updated_at = now()
         WHERE id = $1 RETURNING ${LINK_COLUMNS}`,
        [row.id, o.by],
      )
    : await tx.query<LinkRow>(
        `UPDATE bank_links SET status = 'active', suspended_at = NULL, suspended_by = NULL, updated_at = now()
         WHERE id = $1 RETURNING ${LINK_COLUMNS}`,
        [row.id],
      );
  const event = o.suspend ? 'suspended' : 'resumed';
  await notifyLink(
    tx,
    row.customer_id,
    bankOf(config, row.bank_id),
    row.bank_name,
    { event, ...(row.bank_account_masked ? { accountMasked: row.bank_account_masked } : {}) },
    `bank-link:${row.id}:${event}:${randomBytes(6).toString('hex')}`,
  );
  const reason = o.reason?.slice(0, 200);
  const by = o.by.replace(/^institution:/, '');
  await tellInstitutions(tx, `link.${event}`, {
    linkId: row.id,
    customerId: row.customer_id,
    accountId: row.account_id,
    brokerageInstitutionId: row.brokerage_institution_id,
    bankInstitutionId: row.bank_institution_id,
    bankSubject: row.bank_subject,
    data: { bankId: row.bank_id, by, ...(reason ? { reason } : {}) },
  });
  await recordAudit(tx, {
    type: `linking.link.${event}`,
    outcome: 'success',
    ...o.audit,
    customerId: row.customer_id,
    data: { linkId: row.id, by: o.by, ...(reason ? { reason } : {}) },
  });
  return toLink(updated.rows[0]!);
}

/** Whether a peer's stop on the customer's sweeps stands (not cleared by re-proofing or an operator). */
export async function sweepsPeerStopped(db: Queryable, customerId: string): Promise<boolean> {
  const r = await db.query(
    'SELECT 1 FROM sweep_peer_stops WHERE customer_id = $1 AND cleared_at IS NULL LIMIT 1',
    [customerId],
  );
  return r.rowCount > 0;
}

/**
 * The receiver side of Shared Signals asks for sweeps to stop (action `suspend_sweeps` in
 * ssf_action_outbox, e.g. a peer reported the account hijacked): the stop is recorded for the
 * customer (sweep_peer_stops: every sweep of the customer is refused, whatever state each link is
 * in, until re-proofing or an operator clears it) and every active link is suspended by `peer:<id>`.
 * Claims at most `limit` pending rows (SKIP LOCKED, any node); returns how many rows it claimed (a
 * full batch: more may wait) and how many links it suspended.
 */
export async function applySweepSuspensions(
  db: Db,
  config: Config,
  limit = 100,
): Promise<{ claimed: number; suspended: number }> {
  return db.transaction(async (tx) => {
    const claimed = await tx.query<{
      customer_id: string;
      peer_id: string;
      event_type: string;
      created_at: Date;
    }>(
      `UPDATE ssf_action_outbox SET processed_at = now()
       WHERE id IN (SELECT id FROM ssf_action_outbox WHERE action = 'suspend_sweeps' AND processed_at IS NULL
                    ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED)
       RETURNING customer_id, peer_id, event_type, created_at`,
      [limit],
    );
    let suspended = 0;
    for (const action of claimed.rows) {
      // When it was received: a re-proofing whose proof began before then does not lift it (src/risk).
      await tx.query(
        'INSERT INTO sweep_peer_stops (customer_id, peer_id, event_type, received_at) VALUES ($1, $2, $3, $4)',
        [action.customer_id, action.peer_id, action.event_type, action.created_at],
      );
      await recordAudit(tx, {
        type: 'linking.sweeps.peer_stopped',
        outcome: 'success',
        actor: `peer:${action.peer_id}`,
        customerId: action.customer_id,
        data: { peer: action.peer_id, eventType: action.event_type },
      });
      const links = await tx.query<LinkRow>(
        `SELECT ${LINK_COLUMNS} FROM bank_links WHERE customer_id = $1 AND status = 'active' ORDER BY id FOR UPDATE`,
        [action.customer_id],
      );
      for (const row of links.rows) {
        await changeSuspension(tx, config, row, {
          suspend: true,
          by: `peer:${action.peer_id}`,
          reason: `shared signal ${action.event_type.split('/').at(-1)}`,
          audit: { actor: `peer:${action.peer_id}` },
        });
        suspended++;
      }
    }
    return { claimed: claimed.rowCount, suspended };
  });
}

/** Deletes link attempts that expired more than a day ago (their outcome is in the audit log). */
export async function deleteExpiredLinkAttempts(db: Queryable, limit = 1000): Promise<number> {
  const r = await db.query(
    `DELETE FROM bank_link_attempts WHERE id IN (
       SELECT id FROM bank_link_attempts WHERE expires_at < now() - interval '1 day' ORDER BY expires_at LIMIT $1)`,
    [limit],
  );
  return r.rowCount;
}

/** The links an institution may see (its accounts' or its bank's), optionally of one customer number. */
export async function listInstitutionLinks(
  db: Queryable,
  institutionId: string,
  customerNumber?: string,
): Promise<BankLink[]> {
  const r = await db.query<LinkRow>(
    `SELECT ${LINK_COLUMNS_L}
     FROM bank_links l JOIN customers c ON c.id = l.customer_id
     WHERE (l.brokerage_institution_id = $1 OR l.bank_institution_id = $1)
       AND ($2::text IS NULL OR (c.institution_id = $1 AND c.customer_number = $2))
     ORDER BY l.created_at DESC, l.id LIMIT 200`,
    [institutionId, customerNumber ?? null],
  );
  return r.rows.map(toLink);
}

export interface InstitutionEvent {
  id: number;
  type: string;
  linkId: string | null;
  data: Record<string, unknown>;
  createdAt: string;
}

/** An institution's events after `after` (exclusive), oldest first. */
export async function listInstitutionEvents(
  db: Queryable,
  institutionId: string,
  after: number,
  limit: number,
): Promise<InstitutionEvent[]> {
  const r = await db.query<{
    id: string;
    type: string;
    link_id: string | null;
    data: Record<string, unknown>;
    created_at: string | Date;
  }>(
    `SELECT id::text AS id, type, link_id, data, created_at FROM institution_events
     WHERE institution_id = $1 AND id > $2 ORDER BY institution_events.id LIMIT $3`,
    [institutionId, after, limit],
  );
  return r.rows.map((e) => ({
    id: Number(e.id),
    type: e.type,
    linkId: e.link_id,
    data: e.data,
    createdAt: iso(e.created_at),
  }));
}

// --- sweeps: facts for the decision endpoint and the daily count ---------------------------------

const JST_MS = 9 * 3_600_000;
const DAY_MS = 86_400_000;
/** Start of today in Japan. */
const jstDayStart = (now = Date.now()) => new Date(now - ((now + JST_MS) % DAY_MS));
/** Days since the customer's last credential or contact change when there was none. */
export const NO_CREDENTIAL_CHANGE_DAYS = 36_500;

/** Audit types that are a credential or contact change (the policy pauses sweeps after one). */
const CREDENTIAL_CHANGE_AUDIT = [
  'authn.passkey.register',
  'authn.passkey.removed',
  'notify.channel.added',
  'notify.channel.replaced',
  'notify.channel.removed',
  'enrollment.ticket.used',
];

async function usedTodayOf(db: Queryable, linkId: string): Promise<number> {
  const r = await db.query<{ used: string }>(
    'SELECT COALESCE(sum(amount), 0)::text AS used FROM bank_link_sweeps WHERE link_id = $1 AND at >= $2',
    [linkId, jstDayStart()],
  );
  return Number(r.rows[0]!.used);
}

/** Today's allowed pulls over all the customer's links (removed ones too: they were swept today). */
async function customerUsedTodayOf(db: Queryable, customerId: string): Promise<number> {
  const r = await db.query<{ used: string }>(
    `SELECT COALESCE(sum(s.amount), 0)::text AS used
     FROM bank_links l JOIN bank_link_sweeps s ON s.link_id = l.id
     WHERE l.customer_id = $1 AND s.at >= $2`,
    [customerId, jstDayStart()],
  );
  return Number(r.rows[0]!.used);
}

export interface SweepPullInput {
  customerId: string;
  linkId: string;
  /** Whole yen. */
  amount: number;
  /**
   * The brokerage says the bank approved exactly this pull with a phishing-resistant method. It is
   * believed only for a link whose bank authenticates phishing-resistantly (bank_strength): an OTP
   * bank cannot give such an approval, so the claim counts as false there.
   */
  bankApprovalBound: boolean;
}

/** A link as a sweep decision reads it: the link, its customer's status and a peer's stop. */
interface SweepLinkRow extends LinkRow {
  customer_status: string;
  /** A peer's suspend_sweeps signal, pending or recorded and not cleared (sweep_peer_stops). */
  peer_stopped: boolean;
}

/**
 * The link a sweep is decided on, read once. `lock`: a row lock on the link (FOR NO KEY UPDATE, which
 * leaves rows referring to the link free to be written), so that parallel pulls on one link are
 * decided one after another, each seeing the pulls counted before it.
 */
async function sweepLink(
  db: Queryable,
  where: { linkId: string; customerId?: string; brokerageInstitutionId?: string },
  lock = false,
): Promise<SweepLinkRow | undefined> {
  // A peer's suspend_sweeps signal not yet applied (applySweepSuspensions) already counts; an applied
  // one stands until re-proofing or an operator clears it, whatever the link's own state.
  const r = await db.query<SweepLinkRow>(
    `SELECT ${LINK_COLUMNS_L}, c.status AS customer_status,
            EXISTS (SELECT 1 FROM ssf_action_outbox a WHERE a.customer_id = l.customer_id
                    AND a.action = 'suspend_sweeps' AND a.processed_at IS NULL)
            OR EXISTS (SELECT 1 FROM sweep_peer_stops p WHERE p.customer_id = l.customer_id
                       AND p.cleared_at IS NULL) AS peer_stopped
     FROM bank_links l JOIN customers c ON c.id = l.customer_id
     WHERE l.id = $1 AND ($2::text IS NULL OR l.customer_id = $2)
       AND ($3::text IS NULL OR l.brokerage_institution_id = $3)${lock ? ' FOR NO KEY UPDATE OF l' : ''}`,
    [where.linkId, where.customerId ?? null, where.brokerageInstitutionId ?? null],
  );
  return r.rows[0];
}

async function sweepFactsOf(
  db: Queryable,
  row: SweepLinkRow,
  input: Pick<SweepPullInput, 'amount' | 'bankApprovalBound'>,
  /** The customer's daily sweep limit now (customerLimits(…).current.sweep_daily). */
  customerSweepLimit: number,
): Promise<FactsOf<'sweep_pull'>> {
  const changed = await db.query<{ at: string | Date | null }>(
    `SELECT GREATEST(
       (SELECT max(created_at) FROM passkeys WHERE customer_id = $1),
       (SELECT max(GREATEST(created_at, COALESCE(removed_at, created_at))) FROM notify_channels WHERE customer_id = $1),
       (SELECT max(at) FROM audit_events WHERE customer_id = $1 AND type = ANY($2::text[]) AND outcome = 'success')
     ) AS at`,
    [row.customer_id, CREDENTIAL_CHANGE_AUDIT],
  );
  const at = changed.rows[0]?.at;
  const days =
    at === null || at === undefined
      ? NO_CREDENTIAL_CHANGE_DAYS
      : Math.max(0, Math.floor((Date.now() - new Date(at).getTime()) / DAY_MS));
  return {
    amount: input.amount,
    overDailyCap: (await usedTodayOf(db, row.id)) + input.amount > Number(row.cap_amount),
    overCustomerLimit: (await customerUsedTodayOf(db, row.customer_id)) + input.amount > customerSweepLimit,
    bankApprovalBound: input.bankApprovalBound && row.bank_strength === 'phishing_resistant',
    daysSinceCredentialChange: days,
    linkSuspended: row.status !== 'active' || row.peer_stopped,
    frozen: row.customer_status === 'frozen',
    channelDisabled: await channelDisabled(db, row.customer_id, 'sweeps'),
  };
}

/**
 * The facts `sweep_pull` is decided on: today's use (Japanese day) plus this amount against the
 * link's cap and, over all the customer's links, against the customer's daily sweep limit; whether
 * the bank's approval claim can be believed (only at a phishing-resistant bank); whether the link is
 * active (a suspended or removed link, or a peer's suspend_sweeps signal for the customer not cleared
 * by re-proofing or an operator, is `linkSuspended`), days since the last credential or
 * contact change (passkeys, contacts and their audit events), whether the customer is frozen or has
 * switched sweeps off. ERR_LINK_NOT_FOUND when the link is not the customer's. The decision endpoint
 * uses `decideSweepPull`, which derives the same facts inside its transaction.
 */
export async function sweepPullFacts(
  db: Db,
  config: Config,
  input: SweepPullInput,
): Promise<FactsOf<'sweep_pull'>> {
  const row = await sweepLink(db, { linkId: input.linkId, customerId: input.customerId });
  if (!row) throw new LinkError('ERR_LINK_NOT_FOUND', 'no such link');
  const limits = await customerLimits(db, row.customer_id, config.linking.defaultLimits);
  return sweepFactsOf(db, row, input, limits.current.sweep_daily);
}

export interface RecordSweepInput {
  linkId: string;
  /** Whole yen, > 0. */
  amount: number;
  /** The institution's reference for the pull: counted once however often it is recorded. */
  reference: string;
}

/**
 * Counts an allowed pull against the link's daily cap (call it in the transaction that records the
 * allow decision). Returns whether this reference was new and today's total after it.
 */
export async function recordSweep(
  db: Queryable,
  input: RecordSweepInput,
): Promise<{ recorded: boolean; usedToday: number }> {
  if (!Number.isSafeInteger(input.amount) || input.amount <= 0)
    throw new LinkError('ERR_LINK_STATUS', 'the amount must be a positive whole number of yen');
  const r = await db.query(
    `INSERT INTO bank_link_sweeps (link_id, amount, reference) VALUES ($1, $2, $3)
     ON CONFLICT (link_id, reference) DO NOTHING`,
    [input.linkId, input.amount, input.reference.slice(0, 200)],
  );
  return { recorded: r.rowCount === 1, usedToday: await usedTodayOf(db, input.linkId) };
}

export interface SweepDecisionInput {
  customerId: string;
  linkId: string;
  /** Whole yen. */
  amount: number;
  /** The institution's reference for the pull: counts and notices are made once per reference. */
  reference: string;
  /** The sweep_pull decision (from `decide`). */
  decision: Pick<PolicyDecision, 'decision' | 'decidedBy'>;
}

const SWEEP_OUTCOME = { allow: 'allowed', deny: 'refused', step_up: 'needs_bank_approval' } as const;

async function reportSweepOn(
  db: Queryable,
  config: Config,
  row: LinkRow,
  input: Omit<SweepDecisionInput, 'customerId'>,
): Promise<{ usedToday: number }> {
  const outcome = SWEEP_OUTCOME[input.decision.decision];
  const counted =
    input.decision.decision === 'allow' ? await recordSweep(db, { ...input, linkId: row.id }) : undefined;
  // A retried report of a counted pull tells no one again.
  if (counted && !counted.recorded) return { usedToday: counted.usedToday };
  const usedToday = counted?.usedToday ?? (await usedTodayOf(db, row.id));
  const bank = bankOf(config, row.bank_id);
  await enqueueNotification(db, {
    customerId: row.customer_id,
    kind: 'sweep',
    data: {
      outcome,
      amount: input.amount,
      bankName: bank ? bank.name[await customerLanguage(db, row.customer_id)] : row.bank_name,
      ...(row.bank_account_masked ? { accountMasked: row.bank_account_masked } : {}),
    },
    dedupeKey: `sweep:${row.id}:${input.reference.slice(0, 120)}:${outcome}`,
  });
  await tellInstitutions(db, `sweep.${outcome}`, {
    linkId: row.id,
    customerId: row.customer_id,
    accountId: row.account_id,
    brokerageInstitutionId: row.brokerage_institution_id,
    bankInstitutionId: row.bank_institution_id,
    bankSubject: row.bank_subject,
    data: {
      bankId: row.bank_id,
      amount: input.amount,
      reference: input.reference.slice(0, 200),
      decidedBy: input.decision.decidedBy,
    },
  });
  return { usedToday };
}

/**
 * After a sweep_pull decision: an allowed pull is counted against the link's cap (`recordSweep`),
 * and the customer (kind `sweep`) and both institutions (`sweep.allowed|refused|needs_bank_approval`)
 * are told — once per reference for an allowed pull (a retry changes nothing). Call it in the
 * transaction that records the decision. ERR_LINK_NOT_FOUND when the link is not the customer's.
 */
export async function reportSweepDecision(
  db: Queryable,
  config: Config,
  input: SweepDecisionInput,
): Promise<{ usedToday: number }> {
  const found = await db.query<LinkRow>(
    `SELECT ${LINK_COLUMNS} FROM bank_links WHERE id = $1 AND customer_id = $2`,
    [input.linkId, input.customerId],
  );
  const row = found.rows[0];
  if (!row) throw new LinkError('ERR_LINK_NOT_FOUND', 'no such link');
  return reportSweepOn(db, config, row, input);
}

export interface SweepPullRequest {
  /** The institution asking: only the brokerage the link pays into may. */
  brokerageInstitutionId: string;
  linkId: string;
  /** Whole yen. */
  amount: number;
  /** The brokerage's reference: one decision counted per reference. */
  reference: string;
  bankApprovalBound: boolean;
  /** Who asked, for the audit record: `client:<id>`. */
  actor: string;
  clientId?: string | undefined;
}

export type SweepPullOutcome =
  | { status: 'decided'; decision: PolicyDecision }
  /** No such link for this brokerage. */
  | { status: 'not_found' }
  /** An allowed pull was already counted under this reference. */
  | { status: 'reference_used' };

/**
 * A sweep pull decided for the decision endpoint, in one transaction: the customer's row locked
 * (parallel pulls on any of the customer's links are decided one after another, so together they
 * never pass the customer's daily sweep limit) and the link read once and locked (nor its cap), the
 * reference checked, the facts derived, the decision made and audited, an allow counted, the
 * customer and both institutions told. A failure anywhere leaves none of it written. The customer's
 * limit is read under the lock too: a limit lowered a moment before counts for this pull (a limit
 * change takes the same row lock).
 */
export async function decideSweepPull(
  db: Db,
  policy: Policy,
  config: Config,
  request: SweepPullRequest,
): Promise<SweepPullOutcome> {
  const { linkId, amount, reference } = request;
  const owner = await db.query<{ customer_id: string }>(
    'SELECT customer_id FROM bank_links WHERE id = $1 AND brokerage_institution_id = $2',
    [linkId, request.brokerageInstitutionId],
  );
  const customerId = owner.rows[0]?.customer_id;
  if (customerId === undefined) return { status: 'not_found' };
  return db.transaction(async (tx): Promise<SweepPullOutcome> => {
    // The customer's lock (src/db/customerLock.ts: freezes and channel or limit changes take it too),
    // taken before the link's.
    await lockCustomer(tx, customerId);
    const limits = await customerLimits(tx, customerId, config.linking.defaultLimits);
    const row = await sweepLink(tx, { linkId, brokerageInstitutionId: request.brokerageInstitutionId }, true);
    if (!row) return { status: 'not_found' };
    const seen = await tx.query('SELECT 1 FROM bank_link_sweeps WHERE link_id = $1 AND reference = $2', [
      linkId,
      reference,
    ]);
    if (seen.rowCount) return { status: 'reference_used' };
    const facts = await sweepFactsOf(tx, row, request, limits.current.sweep_daily);
    const decision = await decide(tx, policy, 'sweep_pull', facts, {
      customerId: row.customer_id,
      actor: request.actor,
      clientId: request.clientId,
      subject: { linkId, amount, reference },
    });
    await reportSweepOn(tx, config, row, { linkId, amount, reference, decision });
    return { status: 'decided', decision };
  });
}
