/**
 * The approval step of an authorization request that carries a withdrawal or withdrawal-account
 * change in `authorization_details` (RFC 9396): a prompt after login, a page showing the details,
 * and a passkey ceremony whose challenge commits to them. Approving records the approval, grants
 * exactly those details (plus openid) to the brokerage, and ties the approval to that grant so the
 * decision endpoint can spend it once.
 */
import Router from '@koa/router';
import type { Context } from 'koa';
import type Provider from 'oidc-provider';
import { interactionPolicy, errors as oidcErrors, type ResourceServer } from 'oidc-provider';
import { institutionIdOf } from '../../api/institution.ts';
import { recordAudit } from '../../audit/index.ts';
import { type AuthnContext, hasTotpAlternative } from '../../authn/index.ts';
import type { Db } from '../../db/index.ts';
import { HttpError, readBody } from '../../http/index.ts';
import { jsonEndpoint } from '../../oidc/jsonEndpoint.ts';
import { requestMeta } from '../../oidc/passkeySignIn.ts';
import type { ApprovalView } from '../../web/index.ts';
import { LinkingError } from '../errors.ts';
import {
  APPROVAL_TTL_SECONDS,
  attachApprovalToGrant,
  finishOperationApproval,
  finishTotpApproval,
  startOperationApproval,
} from './approvals.ts';
import {
  isOperationDetailType,
  maskAccountNumber,
  type OperationDetails,
  parseOperationDetails,
} from './operationDetails.ts';

type Details = Awaited<ReturnType<Provider['interactionDetails']>>;

/** The operation detail of a request's authorization_details (a JSON string), if it has one. */
export function operationDetailsOf(authorizationDetails: unknown): OperationDetails | undefined {
  if (typeof authorizationDetails !== 'string') return undefined;
  let list: unknown;
  try {
    list = JSON.parse(authorizationDetails);
  } catch {
    return undefined;
  }
  if (!Array.isArray(list)) return undefined;
  const detail = list.find((d) => isOperationDetailType((d as { type?: unknown } | null)?.type));
  if (!detail) return undefined;
  const parsed = parseOperationDetails(detail);
  return parsed.ok ? parsed.details : undefined;
}

/**
 * The resource (RFC 8707) of approval tokens: they are presented by the brokerage's institution to
 * the decision endpoint, and are good for nothing else (not the read API, not userinfo).
 */
export const approvalResource = (issuer: string) => `${issuer}/api/institution/approvals`;

/** What oidc-provider issues for the approval resource: only to a brokerage's relying party. */
export function approvalResourceServer(audience: string, client: unknown): ResourceServer {
  if (!institutionIdOf(client as Parameters<typeof institutionIdOf>[0])) throw new oidcErrors.InvalidTarget();
  return { scope: '', audience, accessTokenTTL: APPROVAL_TTL_SECONDS, accessTokenFormat: 'opaque' };
}

/**
 * The `approval` prompt: requested when the authorization request carries an operation detail and
 * this interaction has no approval yet. Placed after login (and notices), before consent.
 */
export function approvalPrompt(): interactionPolicy.Prompt {
  return new interactionPolicy.Prompt(
    { name: 'approval', requestable: false },
    new interactionPolicy.Check(
      'operation_approval_required',
      'the operation needs a passkey approval',
      (ctx) => {
        const params = ctx.oidc.params as { authorization_details?: unknown } | undefined;
        if (!params?.authorization_details || !ctx.oidc.session?.accountId)
          return interactionPolicy.Check.NO_NEED_TO_PROMPT;
        const result = ctx.oidc.result as { approval?: unknown } | undefined;
        if (result?.approval) return interactionPolicy.Check.NO_NEED_TO_PROMPT;
        return operationDetailsOf(params.authorization_details)
          ? interactionPolicy.Check.REQUEST_PROMPT
          : interactionPolicy.Check.NO_NEED_TO_PROMPT;
      },
    ),
  );
}

/** What the approval page shows for a pending interaction. */
export async function approvalView(db: Db, d: Details, clientName: string): Promise<ApprovalView> {
  const details = operationDetailsOf(d.params.authorization_details);
  const customerId = d.session?.accountId;
  if (!details || !customerId) throw new HttpError(400, 'invalid_request', 'no operation to approve');
  const source = await db.query<{ nickname: string; account_number: string }>(
    'SELECT nickname, account_number FROM accounts WHERE id = $1 AND customer_id = $2',
    [details.sourceAccountId, customerId],
  );
  const src = source.rows[0];
  if (!src) throw new HttpError(400, 'invalid_request', 'the account of this request is not yours');
  const account = details.type === 'withdrawal' ? details.destination : details.newAccount;
  return {
    kind: details.type,
    clientName,
    ...(details.type === 'withdrawal' ? { amount: Number(details.instructedAmount.amount) } : {}),
    sourceAccount: `${src.nickname} ${maskAccountNumber(src.account_number)}`,
    bankName: account.bankName,
    bankCode: account.bankCode,
    branchCode: account.branchCode,
    accountType: account.accountType,
    // What You See Is What You Sign: the account being registered in full (the customer must be able to
    // tell 1112223 from 9992223); a withdrawal goes to an account registered before, shown masked.
    accountShown:
      details.type === 'withdrawal_account_change'
        ? account.accountNumber
        : maskAccountNumber(account.accountNumber),
    holderName: account.holderName,
    oneTimeCode: await hasTotpAlternative(db, customerId),
  };
}

/**
 * A refused pushed request for an operation (invalid_authorization_details: malformed details, a
 * client that may not ask, two operations at once) is audited as `approval.request_refused`: who
 * asked for which kind of operation and why. oidc-provider emits the event after it answered, so
 * the record is written beside the answer, not before it.
 */
function auditRefusedOperationRequests(provider: Provider, db: Db): void {
  provider.on('pushed_authorization_request.error', (ctx, err) => {
    if ((err as { error?: unknown }).error !== 'invalid_authorization_details') return;
    let kinds: string[] = [];
    try {
      const list = JSON.parse(String(ctx.oidc?.params?.authorization_details ?? '[]')) as unknown;
      if (Array.isArray(list))
        kinds = list
          .map((d) => (d as { type?: unknown } | null)?.type)
          .filter((type): type is string => isOperationDetailType(type));
    } catch {
      return;
    }
    if (!kinds.length) return;
    recordAudit(db, {
      type: 'approval.request_refused',
      outcome: 'failure',
      actor: ctx.oidc?.client ? `client:${ctx.oidc.client.clientId}` : undefined,
      clientId: ctx.oidc?.client?.clientId,
      ip: ctx.ip,
      data: {
        kinds,
        reason: String((err as { error_description?: unknown }).error_description ?? '').slice(0, 300),
      },
    }).catch(() => {
      // The refusal was answered; a lost record must not become an unhandled rejection.
    });
  });
}

export interface ApprovalRoutesOptions {
  provider: Provider;
  db: Db;
  authn: AuthnContext;
  /** The browser's known-device hash (src/risk), for the policy's new-device fact. */
  deviceHashOf?: (ctx: Context) => string | undefined;
}

export function approvalRoutes({
  provider,
  db,
  authn,
  deviceHashOf = () => undefined,
}: ApprovalRoutesOptions) {
  const router = new Router({ prefix: '/interaction/:uid/approval' });
  auditRefusedOperationRequests(provider, db);

  async function pending(ctx: Context) {
    let d: Details;
    try {
      d = await provider.interactionDetails(ctx.req, ctx.res);
    } catch (err) {
      if (err instanceof oidcErrors.SessionNotFound)
        throw new HttpError(
          400,
          'invalid_request',
          'the approval has expired; start again from the application',
        );
      throw err;
    }
    if (d.uid !== ctx.params.uid) throw new HttpError(400, 'invalid_request', 'interaction mismatch');
    if (d.prompt.name !== 'approval') throw new HttpError(400, 'invalid_request', 'no approval is pending');
    const customerId = d.session?.accountId;
    const details = operationDetailsOf(d.params.authorization_details);
    if (!customerId || !details) throw new HttpError(400, 'invalid_request', 'no approval is pending');
    return { d, customerId, details };
  }

  router.post('/options', (ctx) =>
    jsonEndpoint(ctx, async () => {
      const { d, customerId, details } = await pending(ctx);
      return startOperationApproval(authn, { interactionId: d.uid, customerId, details });
    }),
  );

  /**
   * Ends the approval step: a grant of its own, so the approval token carries this one operation
   * and nothing from earlier grants, tied to the approval the decision endpoint will spend.
   */
  async function complete(
    d: Details,
    customerId: string,
    clientId: string,
    details: OperationDetails,
    approvalId: string,
  ) {
    const grant = new provider.Grant({ accountId: customerId, clientId });
    grant.addOIDCScope('openid');
    (grant as unknown as { addRar(detail: unknown): void }).addRar(details);
    const grantId = await grant.save();
    await attachApprovalToGrant(db, approvalId, grantId);
    d.result = { ...d.lastSubmission, approval: { approvalId }, consent: { grantId } };
    await d.save(d.exp - Math.floor(Date.now() / 1000));
    return { redirectTo: d.returnTo, approvalId };
  }

  const denied = (err: unknown) => {
    if (err instanceof LinkingError)
      return new HttpError(
        err.code === 'ERR_APPROVAL_TOTP_ATTEMPTS' ? 429 : 400,
        'access_denied',
        err.message,
        err.code,
      );
    return err;
  };

  router.post('/verify', (ctx) =>
    jsonEndpoint(ctx, async () => {
      const { d, customerId, details } = await pending(ctx);
      const body = await readBody(ctx, 'json');
      const clientId = String(d.params.client_id);
      let approval: Awaited<ReturnType<typeof finishOperationApproval>>;
      try {
        approval = await finishOperationApproval(
          authn,
          {
            interactionId: d.uid,
            customerId,
            clientId,
            details,
            response: body as unknown as Parameters<typeof finishOperationApproval>[1]['response'],
            deviceHash: deviceHashOf(ctx),
          },
          requestMeta(ctx),
        );
      } catch (err) {
        throw denied(err);
      }
      return complete(d, customerId, clientId, details, approval.id);
    }),
  );

  /** An exempted customer approves a withdrawal with a TOTP code (finishTotpApproval says how far that goes). */
  router.post('/totp', (ctx) =>
    jsonEndpoint(ctx, async () => {
      const { d, customerId, details } = await pending(ctx);
      const body = await readBody(ctx, 'json');
      const code = typeof body.code === 'string' ? body.code.trim() : '';
      const clientId = String(d.params.client_id);
      let approval: Awaited<ReturnType<typeof finishTotpApproval>>;
      try {
        approval = await finishTotpApproval(
          authn,
          { interactionId: d.uid, customerId, clientId, details, code, deviceHash: deviceHashOf(ctx) },
          requestMeta(ctx),
        );
      } catch (err) {
        throw denied(err);
      }
      return complete(d, customerId, clientId, details, approval.id);
    }),
  );
  return router;
}
