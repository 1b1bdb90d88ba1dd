/**
 * The OpenAPI 3.1 description of the bank-link institution endpoints, merged into the hub's
 * document by src/api/openapi.ts. References the document's shared components (error responses,
 * headers, parameters) by name.
 */
import { PRODUCTS } from './productCatalogue.ts';

const ref = (name: string) => ({ $ref: `#/components/schemas/${name}` });
const errors = (...statuses: number[]) =>
  Object.fromEntries(statuses.map((s) => [String(s), { $ref: `#/components/responses/E${s}` }]));
const json = (schema: unknown) => ({ 'application/json': { schema } });
const headers = { 'x-fapi-interaction-id': { $ref: '#/components/headers/InteractionId' } };
const common = [{ $ref: '#/components/parameters/InteractionId' }, { $ref: '#/components/parameters/DPoP' }];
const str = (extra: Record<string, unknown> = {}) => ({ type: 'string', ...extra });
const nullableStr = { type: ['string', 'null'] };
const object = (properties: Record<string, unknown>, required: string[] = Object.keys(properties)) => ({
  type: 'object',
  properties,
  required,
  additionalProperties: false,
});

export const LINKS_SCOPE_DESCRIPTION =
  "Suspend and resume bank links of the institution's accounts or bank, read them and their events";

const security = [{ institution: ['institution:links'] }];
const linkId = { name: 'linkId', in: 'path', required: true, schema: str({ pattern: '^lnk_[0-9a-f]{32}$' }) };

const suspension = (suspend: boolean) => ({
  post: {
    operationId: suspend ? 'suspendBankLink' : 'resumeBankLink',
    summary: suspend
      ? 'Suspend a bank link (sweeps from it stop at once)'
      : 'Resume a bank link you suspended',
    description:
      'Only the brokerage of the linked account and the linked bank’s institution see a link (others: 404). ' +
      'A link is resumed only by the institution that suspended it (409 otherwise); a suspension caused by ' +
      'a peer’s Shared Signals event by either institution of the link.',
    'x-kakehashi-status': 'served',
    tags: ['links'],
    security,
    parameters: [linkId, ...common],
    ...(suspend
      ? {
          requestBody: {
            required: false,
            content: json(object({ reason: str({ maxLength: 200 }) }, [])),
          },
        }
      : {}),
    responses: {
      '200': {
        description: 'The link as it is now',
        headers,
        content: json(object({ data: ref('BankLink'), meta: object({ interactionId: str() }) })),
      },
      ...errors(400, 401, 403, 404, 405, 409),
    },
  },
});

/** A GET returning `{ data: [item], meta }`, with one optional query parameter. */
const listGet = (o: {
  operationId: string;
  summary: string;
  description?: string;
  query: { name: string; description?: string; schema: unknown };
  item: string;
  meta: Record<string, unknown>;
}) => ({
  get: {
    operationId: o.operationId,
    summary: o.summary,
    ...(o.description ? { description: o.description } : {}),
    'x-kakehashi-status': 'served',
    tags: ['links'],
    security,
    parameters: [{ in: 'query', required: false, ...o.query }, ...common],
    responses: {
      '200': {
        description: 'OK',
        headers,
        content: json(object({ data: { type: 'array', items: ref(o.item) }, meta: object(o.meta) })),
      },
      ...errors(400, 401, 403, 405),
    },
  },
});

const bankAccount = object({
  bankCode: str({ pattern: '^[0-9]{4}$' }),
  bankName: str({ maxLength: 60 }),
  branchCode: str({ pattern: '^[0-9]{3}$' }),
  accountType: str({ enum: ['ordinary', 'current', 'savings'] }),
  accountNumber: str({ pattern: '^[0-9]{7}$' }),
  holderName: str({ maxLength: 60 }),
});

/** POST /api/institution/v1/decisions (src/linking/decisionsApi.ts). */
const decisions = {
  post: {
    operationId: 'decideOperation',
    summary:
      'Ask for the withdrawal-strength policy’s decision before a withdrawal, a withdrawal-account change, a sweep pull or an order (trade)',
    description:
      'Withdrawal and account change: the customer’s approval token (from the approval flow with ' +
      'authorization_details) is spent once; the details must be exactly the approved ones. Sweep pull: ' +
      'the brokerage of the link asks, one decision per reference. Trade: the brokerage of the account asks ' +
      'before an order in a product; the customer’s allowed products decide (unknown account: 404). Every ' +
      'decision is audited.',
    'x-kakehashi-status': 'served',
    tags: ['links'],
    security: [{ institution: ['institution:decisions'] }],
    parameters: common,
    requestBody: {
      required: true,
      content: json({
        oneOf: [
          object({
            operation: str({ enum: ['withdrawal', 'change_withdrawal_account'] }),
            approvalToken: str(),
            details: {
              oneOf: [
                object({
                  type: str({ const: 'withdrawal' }),
                  instructedAmount: object({
                    amount: str({ pattern: '^[1-9][0-9]{0,11}$' }),
                    currency: str({ const: 'JPY' }),
                  }),
                  sourceAccountId: str(),
                  destination: bankAccount,
                }),
                object({
                  type: str({ const: 'withdrawal_account_change' }),
                  sourceAccountId: str(),
                  newAccount: bankAccount,
                }),
              ],
            },
          }),
          object(
            {
              operation: str({ const: 'sweep_pull' }),
              linkId: str(),
              amount: { type: 'integer', minimum: 1 },
              reference: str({ maxLength: 128 }),
              bankApprovalBound: { type: 'boolean' },
            },
            ['operation', 'linkId', 'amount', 'reference'],
          ),
          object(
            {
              operation: str({ const: 'trade' }),
              accountId: str({ maxLength: 128 }),
              product: str({ enum: [...PRODUCTS] }),
              reference: str({ maxLength: 128 }),
            },
            ['operation', 'accountId', 'product'],
          ),
        ],
      }),
    },
    responses: {
      '200': {
        description: 'The decision with the rules that made it and their reasons',
        headers,
        content: json(
          object(
            {
              operation: str(),
              decision: str({ enum: ['allow', 'step_up', 'deny'] }),
              decidedBy: { type: 'array', items: str() },
              reasons: { type: 'array', items: object({ en: str(), ja: str() }) },
              matched: { type: 'array', items: object({ id: str(), decision: str() }) },
              obligations: { type: 'object' },
              policyVersion: str(),
              approvalId: str(),
              holdUntil: str({ format: 'date-time' }),
              allowAt: str({ format: 'date-time' }),
            },
            ['operation', 'decision', 'decidedBy', 'reasons', 'matched', 'obligations', 'policyVersion'],
          ),
        ),
      },
      ...errors(400, 401, 403, 404, 405, 409, 410, 415),
    },
  },
};

export function linkingOpenApi(): { paths: Record<string, unknown>; schemas: Record<string, unknown> } {
  return {
    paths: {
      '/api/institution/v1/decisions': decisions,
      '/api/institution/v1/links/{linkId}/suspend': suspension(true),
      '/api/institution/v1/links/{linkId}/resume': suspension(false),
      '/api/institution/v1/links': listGet({
        operationId: 'listBankLinks',
        summary: 'Bank links of the institution’s accounts or bank, newest first (at most 200)',
        query: { name: 'customer', description: 'One of the institution’s customer numbers', schema: str() },
        item: 'BankLink',
        meta: { totalRecords: { type: 'integer' } },
      }),
      '/api/institution/v1/events': listGet({
        operationId: 'listInstitutionEvents',
        summary: 'The institution’s event feed (poll): bank links and sweep decisions',
        description:
          'Pass the last meta.next as `after` to read on; 100 events per page, oldest first. The brokerage’s ' +
          'events carry accountId and its customerNumber, the bank’s its own subject for the customer.',
        query: { name: 'after', schema: str({ pattern: '^[0-9]+$' }) },
        item: 'InstitutionEvent',
        meta: { next: { type: 'integer' } },
      }),
    },
    schemas: {
      BankLink: object({
        linkId: str(),
        accountId: str(),
        brokerageInstitutionId: str(),
        bankId: str(),
        bankInstitutionId: nullableStr,
        bankAccountMasked: nullableStr,
        bankStrength: str({ enum: ['phishing_resistant', 'otp', 'password', 'unknown'] }),
        capAmount: { type: 'integer', minimum: 0 },
        status: str({ enum: ['active', 'suspended', 'removed'] }),
        suspendedBy: nullableStr,
        createdAt: str({ format: 'date-time' }),
        updatedAt: str({ format: 'date-time' }),
      }),
      InstitutionEvent: object({
        id: { type: 'integer' },
        type: str({
          enum: [
            'link.created',
            'link.refused',
            'link.removed',
            'link.suspended',
            'link.resumed',
            'sweep.allowed',
            'sweep.refused',
            'sweep.needs_bank_approval',
          ],
        }),
        linkId: nullableStr,
        data: { type: 'object' },
        createdAt: str({ format: 'date-time' }),
      }),
    },
  };
}
