/**
 * The OpenAPI 3.1 description of the aggregator read API (/api/v1) and of the institution
 * ingestion API, served at /api/openapi.json. Tests validate real responses against it; the
 * ingestion request schema is generated from the zod schema that enforces it.
 */
import { batchJsonSchema, TRANSACTION_TYPES } from '../ledger/index.ts';
import { LINKS_SCOPE_DESCRIPTION, linkingOpenApi } from '../linking/openapi.ts';

const ref = (name: string) => ({ $ref: `#/components/schemas/${name}` });
const nullable = (schema: Record<string, unknown>) => ({ oneOf: [schema, { type: 'null' }] });
const str = (extra: Record<string, unknown> = {}) => ({ type: 'string', ...extra });
const nullableStr = (extra: Record<string, unknown> = {}) => ({ type: ['string', 'null'], ...extra });
const DECIMAL = '^-?(0|[1-9][0-9]*)(\\.[0-9]+)?$';
const dateTime = { type: 'string', format: 'date-time' };

const object = (properties: Record<string, unknown>, required: string[] = Object.keys(properties)) => ({
  type: 'object',
  properties,
  required,
  additionalProperties: false,
});

const list = (item: string, meta: string) =>
  object({ data: { type: 'array', items: ref(item) }, links: ref('PageLinks'), meta: ref(meta) });

const jsonContent = (schema: unknown) => ({ 'application/json': { schema } });

const headers = {
  'x-fapi-interaction-id': { $ref: '#/components/headers/InteractionId' },
};
const readHeaders = { ...headers, ETag: { $ref: '#/components/headers/ETag' } };

const errorResponses = (...statuses: number[]) =>
  Object.fromEntries(statuses.map((s) => [String(s), { $ref: `#/components/responses/E${s}` }]));

const readOperation = (o: {
  operationId: string;
  summary: string;
  description?: string;
  schema: unknown;
  parameters?: unknown[];
  account?: boolean;
  counted?: boolean;
}) => ({
  get: {
    operationId: o.operationId,
    summary: o.summary,
    ...(o.description ? { description: o.description } : {}),
    tags: ['read'],
    security: [{ dpop: [] }],
    parameters: [
      ...(o.account ? [{ $ref: '#/components/parameters/AccountId' }] : []),
      ...(o.parameters ?? []),
      { $ref: '#/components/parameters/InteractionId' },
      { $ref: '#/components/parameters/CustomerIpAddress' },
      { $ref: '#/components/parameters/IfNoneMatch' },
      { $ref: '#/components/parameters/DPoP' },
    ],
    responses: {
      '200': { description: 'OK', headers: readHeaders, content: jsonContent(o.schema) },
      '304': { description: 'Not modified (If-None-Match matched the ETag)', headers: readHeaders },
      ...errorResponses(
        400,
        401,
        403,
        ...(o.account ? [404] : []),
        405,
        ...(o.counted === false ? [] : [429]),
      ),
    },
  },
});

const paging = [{ $ref: '#/components/parameters/PageSize' }, { $ref: '#/components/parameters/Cursor' }];
const bookingFilters = [
  { $ref: '#/components/parameters/FromBookingDateTime' },
  { $ref: '#/components/parameters/ToBookingDateTime' },
];

const ERROR_STATUSES: Record<number, string> = {
  400: 'A malformed parameter, cursor, header or body, or no Idempotency-Key (invalid_request)',
  401: 'No, or an invalid, expired, revoked or not DPoP-bound token, or a bad DPoP proof (with WWW-Authenticate)',
  403: 'The token lacks the scope, its consent is inactive or does not cover this data (type or lookback window), the customer switched third-party access off (channel_disabled), or the client is not a known member institution',
  404: 'No such account among the consented ones (also for accounts of other customers)',
  405: 'Another method than the resource allows (Allow says which)',
  409: 'The Idempotency-Key was used with another batch, an approval or a sweep reference was already used, or a link is in another state',
  413: 'The body is larger than the limit (the connection is closed)',
  415: 'The body is not application/json',
  422: 'The batch was refused; nothing was stored',
  410: 'The approval has expired',
  429: 'The daily limit of unattended calls for this consent is reached',
};

/** GET and DELETE /grants/{grantId}: OAuth error bodies; an unknown or foreign grant is 404 invalid_grant_id. */
function grantManagementPaths() {
  const oauthError = (description: string) => ({ description, content: jsonContent(ref('OAuthError')) });
  const common = {
    tags: ['grants'],
    security: [{ dpop: [] }],
    parameters: [
      { name: 'grantId', in: 'path', required: true, schema: str() },
      { $ref: '#/components/parameters/DPoP' },
    ],
  };
  const errors = {
    '401': oauthError('No, or an invalid, expired, revoked or not DPoP-bound token, or a bad DPoP proof'),
    '403': oauthError(
      'The token lacks grant_management_query / grant_management_revoke (insufficient_scope)',
    ),
    '404': oauthError('No such grant of this client (invalid_grant_id)'),
    '405': oauthError('Another method than GET or DELETE'),
  };
  return {
    get: {
      ...common,
      operationId: 'queryGrant',
      summary: 'What the grant holds: scopes, authorization details, expiry, last use',
      responses: { '200': { description: 'OK', content: jsonContent(ref('Grant')) }, ...errors },
    },
    delete: {
      ...common,
      operationId: 'revokeGrant',
      summary: 'Revoke the grant: its access and refresh tokens stop at once',
      responses: { '204': { description: 'Revoked' }, ...errors },
    },
  };
}

export function openApiDocument(issuer: string): Record<string, unknown> {
  const batch = batchJsonSchema();
  const links = linkingOpenApi();
  return {
    openapi: '3.1.0',
    info: {
      title: 'Kakehashi aggregator and institution API',
      version: '1.0.0',
      description:
        'Read-only, consented, sender-constrained access to the accounts, balances, holdings and ' +
        'transactions a customer chose (/api/v1), and the ingestion of that data by member ' +
        'institutions. Amounts are decimal strings with their currency, never JSON numbers. Every ' +
        'response carries x-fapi-interaction-id (echoed, or generated). Errors use one envelope ' +
        '(ErrorEnvelope). Lists are paged with opaque, tamper-evident cursors in links.next/prev; ' +
        'transactions are ordered newest first by (bookingDateTime, transactionId), holdings by ' +
        'account and security. Calls without x-fapi-customer-ip-address are unattended and limited ' +
        'per consent and Japanese calendar day (default 4; the accounts list is not counted).',
    },
    servers: [{ url: issuer }],
    tags: [
      { name: 'read', description: 'Aggregator reads (DPoP-bound access token, scope accounts)' },
      { name: 'ingestion', description: 'Member institutions pushing data (client credentials)' },
      {
        name: 'links',
        description: 'Member institutions and bank links (client credentials, institution:links)',
      },
      {
        name: 'grants',
        description:
          'FAPI Grant Management: the owning client queries or revokes a grant (DPoP-bound token with ' +
          'grant_management_query / grant_management_revoke); errors are OAuth errors, not the envelope',
      },
    ],
    paths: {
      ...links.paths,
      '/api/v1/accounts': readOperation({
        operationId: 'listAccounts',
        summary: 'The consented accounts',
        schema: object({
          data: { type: 'array', items: ref('Account') },
          links: ref('SelfLinks'),
          meta: ref('CountMeta'),
        }),
        counted: false,
      }),
      '/api/v1/accounts/{accountId}': readOperation({
        operationId: 'getAccount',
        summary: 'One consented account',
        schema: object({ data: ref('Account'), links: ref('SelfLinks'), meta: ref('Meta') }),
        account: true,
      }),
      '/api/v1/accounts/{accountId}/balances': readOperation({
        operationId: 'getAccountBalances',
        summary: 'Balances of one account, per currency',
        schema: object({
          data: { type: 'array', items: ref('Balance') },
          links: ref('SelfLinks'),
          meta: ref('CountMeta'),
        }),
        account: true,
      }),
      '/api/v1/accounts/{accountId}/holdings': readOperation({
        operationId: 'getAccountHoldings',
        summary: 'Positions of one account',
        schema: list('Holding', 'CountMeta'),
        parameters: paging,
        account: true,
      }),
      '/api/v1/accounts/{accountId}/transactions': readOperation({
        operationId: 'getAccountTransactions',
        summary: 'Transactions of one account, newest first, within the consented lookback',
        schema: list('Transaction', 'TransactionsMeta'),
        parameters: [...bookingFilters, ...paging],
        account: true,
      }),
      '/api/v1/balances': readOperation({
        operationId: 'listBalances',
        summary: 'Balances of every consented account',
        schema: object({
          data: { type: 'array', items: ref('Balance') },
          links: ref('SelfLinks'),
          meta: ref('CountMeta'),
        }),
      }),
      '/api/v1/holdings': readOperation({
        operationId: 'listHoldings',
        summary: 'Positions of every consented account',
        schema: list('Holding', 'CountMeta'),
        parameters: paging,
      }),
      '/api/v1/transactions': readOperation({
        operationId: 'listTransactions',
        summary: 'Transactions of every consented account, newest first',
        schema: list('Transaction', 'TransactionsMeta'),
        parameters: [...bookingFilters, ...paging],
      }),
      '/api/institution/v1/batches': {
        post: {
          operationId: 'ingestBatch',
          summary: 'Push balances, holding snapshots and transactions (all or nothing)',
          description:
            'For member institutions: a client whose metadata names its institution_id gets a ' +
            'client-credentials token (private_key_jwt, DPoP-bound, scope institution:ingest, resource ' +
            `${issuer}/api/institution) and sends it with a DPoP proof. Records may only name the ` +
            "institution's own accounts. A repeat with the same Idempotency-Key and the same batch " +
            'returns the first result (200, Idempotent-Replayed: true) and writes nothing; the same key ' +
            'with another batch is 409. A refused batch (422) stores nothing and leaves the key unused. ' +
            'Bodies larger than 4 MiB are 413.',
          'x-kakehashi-status': 'served',
          tags: ['ingestion'],
          security: [{ institution: ['institution:ingest'] }],
          parameters: [
            {
              name: 'Idempotency-Key',
              in: 'header',
              required: true,
              schema: str({ pattern: '^[\\x21-\\x7e]{1,255}$' }),
            },
            { $ref: '#/components/parameters/InteractionId' },
            { $ref: '#/components/parameters/DPoP' },
          ],
          requestBody: { required: true, content: jsonContent(ref('IngestBatch')) },
          responses: {
            '201': { description: 'Accepted and stored', headers, content: jsonContent(ref('IngestResult')) },
            '200': {
              description: 'A replay of an accepted batch',
              headers: {
                ...headers,
                'Idempotent-Replayed': { schema: { type: 'string', enum: ['true'] } },
              },
              content: jsonContent(ref('IngestResult')),
            },
            '422': {
              description: ERROR_STATUSES[422],
              headers,
              content: jsonContent(ref('IngestRejection')),
            },
            ...errorResponses(400, 401, 403, 405, 409, 413, 415),
          },
        },
      },
      '/grants/{grantId}': grantManagementPaths(),
      '/api/openapi.json': {
        get: {
          operationId: 'getOpenApi',
          summary: 'This document',
          responses: { '200': { description: 'OK', content: jsonContent({ type: 'object' }) } },
        },
      },
    },
    components: {
      securitySchemes: {
        dpop: {
          type: 'http',
          scheme: 'DPoP',
          description:
            'An access token from this hub bound to a DPoP key (RFC 9449), with a fresh proof for every call (htm, htu, ath, jti).',
        },
        institution: {
          type: 'oauth2',
          flows: {
            clientCredentials: {
              tokenUrl: `${issuer}/token`,
              scopes: {
                'institution:ingest': "Push the institution's account data",
                'institution:links': LINKS_SCOPE_DESCRIPTION,
              },
            },
          },
        },
      },
      headers: {
        InteractionId: {
          description: 'The x-fapi-interaction-id of the request, or one generated (UUID)',
          schema: str({ format: 'uuid' }),
        },
        ETag: { description: 'Strong validator of the representation', schema: str() },
        RetryAfter: {
          description: 'Seconds until the limit resets',
          schema: { type: 'integer', minimum: 1 },
        },
      },
      parameters: {
        AccountId: { name: 'accountId', in: 'path', required: true, schema: str({ maxLength: 64 }) },
        PageSize: {
          name: 'pageSize',
          in: 'query',
          schema: { type: 'integer', minimum: 1, maximum: 500, default: 100 },
        },
        Cursor: {
          name: 'cursor',
          in: 'query',
          description: 'From links.next / links.prev only; it carries the filters and the page size.',
          schema: str(),
        },
        FromBookingDateTime: {
          name: 'fromBookingDateTime',
          in: 'query',
          description:
            'Inclusive. RFC 3339 with an offset, or a date (its start in Japan). Earlier than the consented lookback reads from the lookback (meta.firstAvailableDateTime).',
          schema: str(),
        },
        ToBookingDateTime: {
          name: 'toBookingDateTime',
          in: 'query',
          description: 'Inclusive. RFC 3339 with an offset, or a date (its end in Japan).',
          schema: str(),
        },
        InteractionId: {
          name: 'x-fapi-interaction-id',
          in: 'header',
          schema: str({ format: 'uuid' }),
        },
        CustomerIpAddress: {
          name: 'x-fapi-customer-ip-address',
          in: 'header',
          description: 'The customer is present (their IP address); absent: an unattended call.',
          schema: str(),
        },
        IfNoneMatch: { name: 'If-None-Match', in: 'header', schema: str() },
        DPoP: { name: 'DPoP', in: 'header', required: true, schema: str() },
      },
      responses: Object.fromEntries(
        Object.entries(ERROR_STATUSES).map(([status, description]) => [
          `E${status}`,
          {
            description,
            headers:
              status === '429'
                ? { ...headers, 'Retry-After': { $ref: '#/components/headers/RetryAfter' } }
                : status === '405'
                  ? { ...headers, Allow: { schema: str() } }
                  : headers,
            content: jsonContent(ref('ErrorEnvelope')),
          },
        ]),
      ),
      schemas: {
        ...links.schemas,
        Money: object({
          amount: str({ pattern: DECIMAL, description: 'Decimal string, never a JSON number' }),
          currency: str({ pattern: '^[A-Z]{3}$' }),
        }),
        Account: object(
          {
            accountId: str(),
            kind: str({ enum: ['securities', 'deposit'] }),
            taxCategory: nullableStr({ enum: ['specific', 'general', 'nisa', null] }),
            institution: object({
              id: str(),
              name: object({ ja: str(), en: str() }),
            }),
            nickname: str(),
            branchCode: str(),
            accountNumberMasked: str({ pattern: '^\\*{0,64}.{0,3}$' }),
            accountNumber: str({ description: 'Only when the consent covers account details' }),
            currency: str({ pattern: '^[A-Z]{3}$' }),
            status: str({ enum: ['open', 'closed'] }),
            openedOn: str({ format: 'date' }),
          },
          [
            'accountId',
            'kind',
            'taxCategory',
            'institution',
            'nickname',
            'branchCode',
            'accountNumberMasked',
            'currency',
            'status',
            'openedOn',
          ],
        ),
        Balance: object({
          accountId: str(),
          currency: str({ pattern: '^[A-Z]{3}$' }),
          cash: { ...ref('Money'), description: '預り金' },
          buyingPower: { ...ref('Money'), description: '買付余力' },
          withdrawable: { ...ref('Money'), description: '出金可能額' },
          asOf: dateTime,
        }),
        Holding: object({
          holdingId: str({ description: 'Stable across snapshots' }),
          accountId: str(),
          isin: nullableStr({ pattern: '^[A-Z]{2}[A-Z0-9]{9}[0-9]$' }),
          localCode: nullableStr(),
          name: str(),
          assetClass: str({ enum: ['equity', 'etf', 'reit', 'fund', 'bond', 'other'] }),
          taxCategory: str({ enum: ['specific', 'general', 'nisa'] }),
          nisaFrame: nullableStr({ enum: ['growth', 'tsumitate', null] }),
          quantity: str({ pattern: DECIMAL }),
          averageCost: { ...nullable(ref('Money')), description: 'Per unit' },
          marketPrice: ref('Money'),
          marketValue: ref('Money'),
          unrealisedPl: nullable(ref('Money')),
          priceAsOf: { type: ['string', 'null'], format: 'date-time' },
          asOf: { ...dateTime, description: 'Time of the snapshot this position belongs to' },
        }),
        Transaction: object({
          transactionId: str(),
          accountId: str(),
          bookingDateTime: dateTime,
          valueDate: { type: ['string', 'null'], format: 'date' },
          type: str({ enum: [...TRANSACTION_TYPES] }),
          creditDebitIndicator: str({ enum: ['credit', 'debit'] }),
          amount: ref('Money'),
          description: str(),
          security: nullable(
            object({
              isin: nullableStr(),
              localCode: nullableStr(),
              name: nullableStr(),
            }),
          ),
          quantity: nullableStr({ pattern: DECIMAL }),
          price: nullable(ref('Money')),
          taxCategory: nullableStr({ enum: ['specific', 'general', 'nisa', null] }),
        }),
        SelfLinks: object({ self: str({ format: 'uri' }) }),
        PageLinks: object(
          {
            self: str({ format: 'uri' }),
            first: str({ format: 'uri' }),
            next: str({ format: 'uri' }),
            prev: str({ format: 'uri' }),
          },
          ['self', 'first'],
        ),
        Meta: object({ interactionId: str() }),
        CountMeta: object({ totalRecords: { type: 'integer', minimum: 0 }, interactionId: str() }),
        TransactionsMeta: object({
          firstAvailableDateTime: {
            ...dateTime,
            description: 'Start of the consented lookback: nothing older is returned',
          },
          interactionId: str(),
        }),
        ErrorEnvelope: object({
          error: object({
            status: { type: 'integer' },
            code: str({
              description:
                'invalid_request, unauthorized, invalid_token, invalid_dpop_proof, insufficient_scope, consent_inactive, consent_insufficient, consent_lookback_exceeded, channel_disabled, approval_used, approval_foreign, sweep_reference_used, not_found, method_not_allowed, too_many_requests, access_denied, unknown_institution, idempotency_conflict, payload_too_large, unsupported_media_type, …',
            }),
            message: str(),
          }),
          meta: object({ interactionId: str() }),
        }),
        IngestBatch: batch,
        IngestResult: object({
          batchId: str(),
          institutionId: str(),
          idempotencyKey: str(),
          acceptedAt: dateTime,
          balances: object({
            received: { type: 'integer' },
            applied: { type: 'integer' },
            stale: { type: 'integer' },
          }),
          holdings: object({
            received: { type: 'integer' },
            applied: { type: 'integer' },
            stale: { type: 'integer' },
            positions: { type: 'integer' },
          }),
          transactions: object({
            received: { type: 'integer' },
            inserted: { type: 'integer' },
            updated: { type: 'integer' },
          }),
        }),
        Grant: object(
          {
            scopes: {
              type: 'array',
              items: object({ scope: str(), resource: { type: 'array', items: str() } }, ['scope']),
            },
            claims: { type: 'array', items: str() },
            authorization_details: { type: 'array', items: ref('AccountInformationGrant') },
            created_at: dateTime,
            expires_at: dateTime,
            last_used_at: nullable(dateTime),
          },
          ['scopes'],
        ),
        AccountInformationGrant: object(
          {
            type: str({ const: 'account_information' }),
            locations: { type: 'array', items: str() },
            data_types: {
              type: 'array',
              items: str({ enum: ['account_details', 'balances', 'holdings', 'transactions'] }),
            },
            transaction_lookback_days: { type: 'integer', minimum: 1 },
            expires_at: dateTime,
            accounts: { type: 'array', items: str() },
          },
          ['type', 'locations', 'data_types', 'expires_at', 'accounts'],
        ),
        OAuthError: object({ error: str(), error_description: str() }, ['error']),
        IngestRejection: object({
          error: object({
            status: { type: 'integer', const: 422 },
            code: str({ const: 'invalid_batch' }),
            message: str(),
            issues: {
              type: 'array',
              items: object(
                {
                  path: str({ description: 'e.g. transactions[12].amount' }),
                  section: str({ enum: ['balances', 'holdings', 'transactions'] }),
                  index: { type: 'integer', minimum: 0 },
                  reason: str(),
                },
                ['path', 'reason'],
              ),
            },
          }),
          meta: object({ interactionId: str() }),
        }),
      },
    },
  };
}
