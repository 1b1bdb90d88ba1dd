/**
 * `POST /api/institution/v1/decisions`: a brokerage asks the hub before it executes a withdrawal,
 * registers a new withdrawal account, pulls a sweep or executes an order in a product (`trade`). It sends the operation, the customer's approval token (the
 * access token of the approval flow, whose grant carries the passkey approval) and the operation's
 * details; the hub spends the approval, derives the facts, and answers with the policy's decision
 * and its reasons. Caller: a member institution's client with `institution:decisions`.
 *
 *   → { "operation": "withdrawal", "approvalToken": "…", "details": { "type": "withdrawal", … } }
 *   ← { "decision": "allow" | "step_up" | "deny", "decidedBy": […], "reasons": [{ "en", "ja" }], … }
 */
import Router from '@koa/router';
import type { Context } from 'koa';
import type Provider from 'oidc-provider';
import { errors as oidcErrors } from 'oidc-provider';
import { z } from 'zod';
import { createDbReplayStore } from '../api/dpop.ts';
import { sendApiError } from '../api/errors.ts';
import {
  ApiError,
  createInstitutionAuthenticator,
  DECISIONS_SCOPE,
  type InstitutionCaller,
  institutionIdOf,
} from '../api/index.ts';
import { activeExemption } from '../authn/index.ts';
import type { Config } from '../config/index.ts';
import { type Db, lockCustomer, type Queryable } from '../db/index.ts';
import { BodyError, readBody } from '../http/index.ts';
import { enqueueNotification } from '../notify/index.ts';
import { notifyCustomer } from '../oidc/securityNotices.ts';
import { namesMatch } from '../proofing/index.ts';
import { effectiveRiskLevel } from '../risk/index.ts';
import {
  consumeApproval,
  findApproval,
  type OperationApproval,
  recordApprovalDecision,
} from './approvals/approvals.ts';
import {
  detailsHash,
  maskAccountNumber,
  type OperationDetails,
  parseOperationDetails,
  type WithdrawalAccountChangeDetails,
  type WithdrawalDetails,
} from './approvals/operationDetails.ts';
import { decideSweepPull } from './bankLinks.ts';
import { channelDisabled } from './channels.ts';
import { decide } from './decide.ts';
import { LinkingError } from './errors.ts';
import { customerLimits, type Limits, recordWithdrawal, withdrawnToday } from './limits.ts';
import type { PolicyDecision } from './policy/evaluatePolicy.ts';
import type { Policy } from './policy/parsePolicy.ts';
import { PRODUCTS, type Product, productStates } from './products.ts';
import { activeWithdrawalAccount, replaceWithdrawalAccount, sameBankAccount } from './withdrawalAccounts.ts';

export interface DecisionRoutesOptions {
  provider: Provider;
  db: Db;
  config: Config;
  policy: Policy;
  defaultLimits: Limits;
  /** Products a customer who chose none allows; default: config linking.defaultProducts. */
  defaultProducts?: readonly Product[];
  /** The customer's current risk level; default: what the risk engine keeps (src/risk), low when none. */
  riskLevel?: (customerId: string) => Promise<'low' | 'medium' | 'high'>;
}

const request = z.strictObject({
  operation: z.enum(['withdrawal', 'change_withdrawal_account']),
  approvalToken: z.string().min(1).max(4096),
  details: z.unknown(),
});

/** A pull from a linked bank account at a purchase: the link, the amount and the brokerage's reference. */
const sweepRequest = z.strictObject({
  operation: z.literal('sweep_pull'),
  linkId: z.string().min(1).max(128),
  amount: z.number().int().min(1).max(999_999_999_999),
  /** Idempotency: one decision (and one count against the cap) per reference. */
  reference: z.string().regex(/^[\x21-\x7e]{1,128}$/, '1–128 printable ASCII characters'),
  /** The bank approved this amount with a phishing-resistant method (what the policy wants above the cap). */
  bankApprovalBound: z.boolean().default(false),
});

/** An order in a product, asked by the brokerage of the customer's account before it executes it. */
const tradeRequest = z.strictObject({
  operation: z.literal('trade'),
  /** The brokerage account (accounts.id) the order is for: it names the customer. */
  accountId: z.string().min(1).max(128),
  product: z.enum(PRODUCTS),
  /** The brokerage's order reference, kept in the audit log. */
  reference: z
    .string()
    .regex(/^[\x21-\x7e]{1,128}$/, '1–128 printable ASCII characters')
    .optional(),
});

const DETAIL_TYPE = {
  withdrawal: 'withdrawal',
  change_withdrawal_account: 'withdrawal_account_change',
} as const;

const APPROVAL_ERRORS: Record<string, [number, string]> = {
  ERR_APPROVAL_NOT_FOUND: [404, 'approval_not_found'],
  ERR_APPROVAL_USED: [409, 'approval_used'],
  ERR_APPROVAL_EXPIRED: [410, 'approval_expired'],
};

/** An approval presented with a decision request, read and not yet spent (`spend`, in the decision). */
interface Presented {
  grantId: string;
  approval: OperationApproval;
}

interface CustomerRow {
  name_kana: string;
  status: string;
  locked: boolean;
}

export function decisionRoutes({
  provider,
  db,
  config,
  policy,
  defaultLimits,
  defaultProducts = config.linking.defaultProducts,
  // Effective: the engine's level or a higher one a peer institution raised (src/risk/peerLevels.ts).
  riskLevel = async (customerId) =>
    (await effectiveRiskLevel(db, customerId)).level.toLowerCase() as 'low' | 'medium' | 'high',
}: DecisionRoutesOptions): Router {
  const router = new Router({ prefix: '/api/institution/v1/decisions' });
  const authenticate = createInstitutionAuthenticator({
    provider,
    db,
    config,
    replay: createDbReplayStore(db),
  });

  /**
   * The approval behind the token, still spendable (read, not spent: `spend` spends it in the
   * decision's transaction); only the institution whose brokerage asked for it may spend it.
   */
  async function approvalBehind(caller: InstitutionCaller, token: string, kind: OperationDetails['type']) {
    const at = await provider.AccessToken.find(token).catch(() => undefined);
    if (!at || at.isExpired || !at.grantId)
      throw new ApiError(400, 'invalid_approval', 'the approval token is invalid, expired or revoked');
    const client = await provider.Client.find(at.clientId!).catch((err: unknown) => {
      if (err instanceof oidcErrors.OIDCProviderError) return undefined;
      throw err;
    });
    if (!client || institutionIdOf(client) !== caller.institutionId)
      throw new ApiError(403, 'approval_foreign', 'the approval was given to another institution');
    const grantId = at.grantId;
    return { grantId, approval: await approvalError(() => findApproval(db, grantId, kind)) };
  }

  /** Spends the approval in the decision's transaction: a decision that fails leaves it unspent. */
  const spend = (tx: Queryable, grantId: string, kind: OperationDetails['type']) =>
    approvalError(() => consumeApproval(tx, grantId, kind));

  /** An approval that cannot be spent, in the API's words. */
  async function approvalError<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      if (!(err instanceof LinkingError) || !APPROVAL_ERRORS[err.code]) throw err;
      const [status, code] = APPROVAL_ERRORS[err.code]!;
      throw new ApiError(status, code, err.message);
    }
  }

  /** Status, lock and name of the customer: read under the customer's lock (`lockCustomer`). */
  async function customerFacts(tx: Queryable, customerId: string) {
    const r = await tx.query<CustomerRow>(
      `SELECT c.name_kana, c.status,
              c.status = 'locked' OR EXISTS (SELECT 1 FROM account_lockouts l WHERE l.customer_id = c.id
                AND l.locked_until > now()) AS locked
       FROM customers c WHERE c.id = $1`,
      [customerId],
    );
    return r.rows[0]!;
  }

  async function sourceAccountOk(
    tx: Queryable,
    caller: InstitutionCaller,
    customerId: string,
    accountId: string,
  ) {
    const r = await tx.query(
      `SELECT 1 FROM accounts WHERE id = $1 AND customer_id = $2 AND institution_id = $3 AND status = 'open'`,
      [accountId, customerId, caller.institutionId],
    );
    return r.rowCount === 1;
  }

  const ageOf = (a: OperationApproval) =>
    Math.max(0, Math.floor((Date.now() - a.approvedAt.getTime()) / 1000));
  const acrOf = (a: OperationApproval) => (['phrh', 'phr', 'otp'].includes(a.acr) ? a.acr : 'none') as 'phr';
  const bound = (a: OperationApproval, d: OperationDetails) =>
    a.details.type === d.type && detailsHash(d).toString('base64url') === a.detailsHash;

  async function withdrawal(caller: InstitutionCaller, presented: Presented, d: WithdrawalDetails) {
    const customerId = presented.approval.customerId;
    // The risk engine's level does not wait for the customer's lock (src/risk); read it first.
    const risk = await riskLevel(customerId);
    // Spent, decided, counted and told in one transaction: a failure leaves the approval unspent and
    // nothing recorded, so the brokerage can ask again. Everything the decision reads that a change
    // can replace — status, the withdrawals switch, limits, today's total, the withdrawal account,
    // the exemption, the source account — is read after the customer's lock: a freeze, a switch-off
    // or a lowered limit (which take the lock too) either commits before and is seen, or waits for
    // this decision. Withdrawals of one customer wait for each other, so today's total holds every
    // withdrawal allowed before: together they never pass the limit. One connection: reads in turn.
    return db.transaction(async (tx) => {
      await lockCustomer(tx, customerId);
      const approval = await spend(tx, presented.grantId, 'withdrawal');
      const customer = await customerFacts(tx, customerId);
      const account = await activeWithdrawalAccount(tx, customerId);
      const limits = await customerLimits(tx, customerId, defaultLimits);
      const withdrawalsOff = await channelDisabled(tx, customerId, 'withdrawals');
      const exemption = await activeExemption(tx, customerId);
      const sourceOk = await sourceAccountOk(tx, caller, customerId, d.sourceAccountId);
      const used = await withdrawnToday(tx, customerId);
      const amount = Number(d.instructedAmount.amount);
      const registered = account !== undefined && sameBankAccount(account, d.destination);
      const decision = await decide(
        tx,
        policy,
        'withdrawal',
        {
          acr: acrOf(approval),
          authAgeSeconds: ageOf(approval),
          detailsBound: bound(approval, d) && sourceOk,
          destinationNameMatches:
            namesMatch(d.destination.holderName, customer.name_kana) &&
            (!account || namesMatch(d.destination.holderName, account.holderName)),
          destinationRegistered: registered,
          destinationInCoolOff: registered && account!.holdUntil.getTime() > Date.now(),
          amount,
          overDailyCap: used + amount > limits.current.withdrawal_daily,
          dailyTotal: used + amount,
          newDevice: approval.newDevice,
          riskLevel: risk,
          frozen: customer.status === 'frozen',
          channelDisabled: withdrawalsOff,
          exempted: exemption !== undefined,
        },
        {
          customerId,
          actor: `client:${caller.clientId}`,
          clientId: caller.clientId,
          subject: {
            approvalId: approval.id,
            amount,
            destination: `${d.destination.bankCode}-${d.destination.branchCode} ${maskAccountNumber(d.destination.accountNumber)}`,
          },
        },
      );
      if (decision.decision === 'allow') {
        await recordWithdrawal(tx, customerId, amount);
        await enqueueNotification(tx, {
          customerId,
          kind: 'withdrawal_requested',
          data: {
            amount,
            destination: `${d.destination.bankName} ${maskAccountNumber(d.destination.accountNumber)}`,
          },
          dedupeKey: `withdrawal:${approval.id}`,
        });
      }
      await recordApprovalDecision(tx, approval.id, decision.decision);
      return { approval, decision };
    });
  }

  async function accountChange(
    caller: InstitutionCaller,
    presented: Presented,
    d: WithdrawalAccountChangeDetails,
  ) {
    const customerId = presented.approval.customerId;
    // Spent, decided, registered and told in one transaction: a failure leaves the approval unspent,
    // the old account active and nothing recorded or told. Status and lock are read under the
    // customer's lock (a freeze waits or is seen); changes of one customer's account (and their
    // withdrawals) wait for each other on it.
    return db.transaction(async (tx) => {
      await lockCustomer(tx, customerId);
      const approval = await spend(tx, presented.grantId, 'withdrawal_account_change');
      const customer = await customerFacts(tx, customerId);
      const sourceOk = await sourceAccountOk(tx, caller, customerId, d.sourceAccountId);
      const decision = await decide(
        tx,
        policy,
        'change_withdrawal_account',
        {
          acr: acrOf(approval),
          authAgeSeconds: ageOf(approval),
          detailsBound: bound(approval, d) && sourceOk,
          nameMatches: namesMatch(d.newAccount.holderName, customer.name_kana),
          accountLocked: customer.locked,
          frozen: customer.status === 'frozen',
        },
        {
          customerId,
          actor: `client:${caller.clientId}`,
          clientId: caller.clientId,
          subject: {
            approvalId: approval.id,
            account: `${d.newAccount.bankCode}-${d.newAccount.branchCode} ${maskAccountNumber(d.newAccount.accountNumber)}`,
          },
        },
      );
      await recordApprovalDecision(tx, approval.id, decision.decision);
      if (decision.decision !== 'allow') return { approval, decision };
      const registered = await replaceWithdrawalAccount(
        tx,
        customerId,
        d.newAccount,
        decision.obligations.coolOffSeconds ?? 0,
      );
      // A security-critical kind: every active channel hears of it, whatever the customer chose.
      await enqueueNotification(tx, {
        customerId,
        kind: 'withdrawal_account_changed',
        data: {
          bankName: d.newAccount.bankName,
          accountMasked: maskAccountNumber(d.newAccount.accountNumber),
          holdUntil: registered.holdUntil.toISOString(),
        },
        dedupeKey: `withdrawal-account:${registered.id}`,
      });
      return { approval, decision, holdUntil: registered.holdUntil };
    });
  }

  /**
   * A sweep pull, asked by the brokerage the link pays into: decided, counted and reported in one
   * transaction (decideSweepPull, src/linking/bankLinks.ts), one counted decision per reference.
   */
  async function sweep(ctx: Context, caller: InstitutionCaller, body: unknown) {
    const parsed = sweepRequest.safeParse(body);
    if (!parsed.success) {
      const i = parsed.error.issues[0]!;
      throw new ApiError(400, 'invalid_request', `${i.path.join('.') || 'body'}: ${i.message}`);
    }
    const { linkId, amount, reference, bankApprovalBound } = parsed.data;
    const outcome = await decideSweepPull(db, policy, config, {
      linkId,
      amount,
      reference,
      bankApprovalBound,
      brokerageInstitutionId: caller.institutionId,
      actor: `client:${caller.clientId}`,
      clientId: caller.clientId,
    });
    if (outcome.status === 'not_found')
      throw new ApiError(404, 'not_found', 'no such link for this institution');
    if (outcome.status === 'reference_used')
      throw new ApiError(409, 'sweep_reference_used', 'this reference was already decided and counted');
    answer(ctx, outcome.decision, {});
  }

  /**
   * An order in a product, asked by the brokerage of the account: the customer's allowed products
   * (src/linking/products.ts), risk and freeze decide. A refusal the policy wants told reaches the
   * customer as a security alert (an order they may not have placed).
   */
  async function trade(ctx: Context, caller: InstitutionCaller, body: unknown) {
    const parsed = tradeRequest.safeParse(body);
    if (!parsed.success) {
      const i = parsed.error.issues[0]!;
      throw new ApiError(400, 'invalid_request', `${i.path.join('.') || 'body'}: ${i.message}`);
    }
    const { accountId, product, reference } = parsed.data;
    const account = await db.query<{ customer_id: string }>(
      "SELECT customer_id FROM accounts WHERE id = $1 AND institution_id = $2 AND status = 'open'",
      [accountId, caller.institutionId],
    );
    const customerId = account.rows[0]?.customer_id;
    if (!customerId) throw new ApiError(404, 'not_found', 'no such open account at this institution');
    const risk = await riskLevel(customerId);
    // Decided under the customer's lock (shared: trades do not wait for each other), so a freeze or
    // a blocked product either is seen or waits for the decision.
    const { state, decision } = await db.transaction(async (tx) => {
      await lockCustomer(tx, customerId, 'shared');
      const state = (await productStates(tx, customerId, defaultProducts)).find(
        (p) => p.product === product,
      )!;
      const customer = await customerFacts(tx, customerId);
      const decision = await decide(
        tx,
        policy,
        'trade',
        {
          product,
          productAllowed: state.allowed,
          productPending: state.allowAt !== null,
          riskLevel: risk,
          frozen: customer.status === 'frozen',
        },
        {
          customerId,
          actor: `client:${caller.clientId}`,
          clientId: caller.clientId,
          subject: { accountId, product, ...(reference ? { reference } : {}) },
        },
      );
      return { state, decision };
    });
    // After the decision's commit: a notice that cannot be queued is audited, not fatal (the order is refused).
    if (decision.decision === 'deny' && decision.obligations.notify?.includes('customer'))
      await notifyCustomer(db, {
        customerId,
        kind: 'security_alert',
        data: { reason: 'suspicious_activity', action: 'none' },
        ...(reference ? { dedupeKey: `trade:${caller.institutionId}:${reference}` } : {}),
      });
    answer(ctx, decision, state.allowAt ? { allowAt: state.allowAt } : {});
  }

  /** The decision as the endpoint tells it: rules, reasons, obligations, policy version. */
  function answer(ctx: Context, decision: PolicyDecision, extra: object) {
    ctx.set('cache-control', 'no-store');
    ctx.body = {
      operation: decision.operation,
      decision: decision.decision,
      decidedBy: decision.decidedBy,
      reasons: decision.reasons,
      matched: decision.matched.map((m) => ({ id: m.id, decision: m.decision })),
      obligations: decision.obligations,
      policyVersion: decision.policyVersion,
      ...extra,
    };
  }

  router.post('/', async (ctx) => {
    try {
      const caller = await authenticate(ctx, DECISIONS_SCOPE);
      let body: unknown;
      try {
        body = await readBody(ctx, 'json');
      } catch (err) {
        if (!(err instanceof BodyError)) throw err;
        throw new ApiError(
          err.status,
          err.status === 415 ? 'unsupported_media_type' : 'invalid_request',
          err.message,
        );
      }
      const asked = (body as { operation?: unknown } | null)?.operation;
      if (asked === 'sweep_pull') {
        await sweep(ctx, caller, body);
        return;
      }
      if (asked === 'trade') {
        await trade(ctx, caller, body);
        return;
      }
      const parsed = request.safeParse(body);
      if (!parsed.success) {
        const i = parsed.error.issues[0]!;
        throw new ApiError(400, 'invalid_request', `${i.path.join('.') || 'body'}: ${i.message}`);
      }
      const { operation, approvalToken } = parsed.data;
      const details = parseOperationDetails(parsed.data.details);
      if (!details.ok) throw new ApiError(400, 'invalid_details', details.problem);
      if (details.details.type !== DETAIL_TYPE[operation])
        throw new ApiError(400, 'invalid_details', `details of type ${DETAIL_TYPE[operation]} are expected`);
      const presented = await approvalBehind(caller, approvalToken, DETAIL_TYPE[operation]);
      const outcome =
        details.details.type === 'withdrawal'
          ? await withdrawal(caller, presented, details.details)
          : await accountChange(caller, presented, details.details);
      answer(ctx, outcome.decision, {
        approvalId: outcome.approval.id,
        ...('holdUntil' in outcome ? { holdUntil: outcome.holdUntil } : {}),
      });
    } catch (err) {
      if (!(err instanceof ApiError)) throw err;
      sendApiError(ctx, err);
    }
  });
  router.all('/', (ctx) => {
    ctx.set('allow', 'POST');
    sendApiError(ctx, new ApiError(405, 'method_not_allowed', `${ctx.method} is not allowed here; use POST`));
  });
  return router;
}
