/**
 * The resource server: read APIs for aggregators under /api/v1, and the OpenAPI document at
 * /api/openapi.json. Every read needs an access token the hub issued, bound to a DPoP key whose
 * proof accompanies the call, and the consent behind the token must cover what is read. Nothing
 * under /api/v1 changes anything: every other method is 405.
 */
import { createHash } from 'node:crypto';
import { isIP } from 'node:net';
import Router from '@koa/router';
import type { Context } from 'koa';
import type Provider from 'oidc-provider';
import { recordAudit } from '../audit/index.ts';
import type { Config } from '../config/index.ts';
import { ACCOUNT_INFORMATION, type DataType } from '../consent/authorizationDetails.ts';
import type { Db, Queryable } from '../db/index.ts';
import { CookieSigner } from '../http/index.ts';
import { mtlsFor } from '../mtls/index.ts';
import { FAPI_ALGS } from '../oidc/provider.ts';
import { observeRequest, riskEngineFor } from '../risk/index.ts';
import { createAccessTokenCache, type FoundAccessToken } from './accessTokenCache.ts';
import { createAccessTokenCheck } from './accessTokenCheck.ts';
import { type Cursor, createCursorCodec, type MacSigner } from './cursor.ts';
import { dpopSeenKey } from './dpop.ts';
import { ApiError, dpopChallenge, invalidTokenError, sendApiError, unknownTokenError } from './errors.ts';
import { ingestHandler } from './ingest.ts';
import { openApiDocument } from './openapi.ts';
import { bookingBound, PAGE_SIZE_DEFAULT, pageSize, single } from './params.ts';
import {
  ACCOUNTS_SQL,
  type AccountRow,
  BALANCES_SQL,
  type BalanceRow,
  DELETE_OLD_USAGE_SQL,
  type Head,
  HOLDINGS_SQL,
  type HoldingRow,
  TRANSACTIONS_SQL,
  type TransactionRow,
} from './reads.ts';

export {
  type AccessTokenCheck,
  type CheckedAccessToken,
  createAccessTokenCheck,
} from './accessTokenCheck.ts';
export { createDbReplayStore, deleteExpiredDpopProofs } from './dpop.ts';
export {
  ApiError,
  dpopChallenge,
  insufficientScopeError,
  invalidTokenError,
  presentedAccessToken,
  sendApiError,
  unknownTokenError,
} from './errors.ts';
export {
  createInstitutionAuthenticator,
  DECISIONS_SCOPE,
  INGEST_SCOPE,
  INSTITUTION_ID_METADATA,
  INSTITUTION_SCOPES,
  type InstitutionAuthenticator,
  type InstitutionCaller,
  type InstitutionTrace,
  institutionIdOf,
  institutionResource,
  LINKS_SCOPE,
} from './institution.ts';
export { CertificateBindingError, checkSenderConstraint, DpopError } from './senderConstraint.ts';

/** Unattended calls per consent and Japanese calendar day, unless the client's metadata sets its own. */
/** acr values whose tokens may read account data. */
export const PHISHING_RESISTANT_ACR = ['phr', 'phrh'];

export const DEFAULT_UNATTENDED_CALLS_PER_DAY = 4;
/** How far back transactions can be read when the consent sets no lookback. */
export const DEFAULT_TRANSACTION_LOOKBACK_DAYS = 730;
/** What a consent may cover: see src/consent/authorizationDetails.ts. */
export { DATA_TYPES } from '../consent/authorizationDetails.ts';

export interface ApiRoutesOptions {
  provider: Provider;
  db: Db;
  config: Config;
  /**
   * Calls without x-fapi-customer-ip-address allowed per consent and day (Japan); a client's
   * metadata `unattended_calls_per_day` overrides it. Default 4.
   */
  unattendedCallsPerDay?: number;
  /** Transaction lookback (days) for consents that carry none. Default 730. */
  transactionLookbackDays?: number;
}

interface Authorized {
  /** The access token's id, whose liveness the read's statement checks. */
  tokenId: string;
  /** The presented token value, forgotten by the cache when the statement finds it dead. */
  tokenValue: string;
  /** The Authorization scheme it came with (lower-cased), for the challenge of a dead token. */
  scheme: string;
  customerId: string;
  clientId: string;
  grantId: string;
  /** The proof's jti, to be recorded by the read's own statement (one round trip per read); none for mTLS. */
  proofSeen: { key: string; expiresAt: Date } | undefined;
}

const mask = (n: string) => `${'*'.repeat(Math.max(0, n.length - 3))}${n.slice(-3)}`;
/** `…:00.000000Z` → `…:00Z`, `…:00.500000Z` → `…:00.5Z`. */
const trimIso = (s: string) => s.replace(/\.?0+Z$/, 'Z');
const isoOrNull = (s: string | null) => (s === null ? null : trimIso(s));
const money = (amount: string, currency: string) => ({ amount, currency });
const ACCOUNT_ID = /^[\x21-\x7e]{1,64}$/;
const JST_MS = 9 * 3_600_000;
const DAY_MS = 86_400_000;

/** Seconds until the next day starts in Japan, when the unattended count starts again. */
function secondsToNextJstDay(now = Date.now()): number {
  return Math.max(1, Math.ceil((DAY_MS - ((now + JST_MS) % DAY_MS)) / 1000));
}

/** RFC 9110 If-None-Match: weak comparison against our one current tag. */
function notModified(ifNoneMatch: string, etag: string): boolean {
  if (!ifNoneMatch) return false;
  if (ifNoneMatch.trim() === '*') return true;
  const opaque = etag.replace(/^W\//, '');
  return ifNoneMatch.split(',').some((t) => t.trim().replace(/^W\//, '') === opaque);
}

interface ReadOptions {
  sql: string;
  params?: unknown[];
  accountId: string | null;
  dataType?: DataType;
  /** Counted against the unattended limit (every read but the accounts list). */
  counted: boolean;
}

interface ReadResult<R> {
  head: Head;
  rows: R[];
  /** The consent covers account details: identifiers are shown unmasked. */
  details: boolean;
}

interface Payload {
  data: unknown;
  links: Record<string, string>;
  meta: Record<string, unknown>;
}

function toAccount(a: AccountRow, details: boolean) {
  return {
    accountId: a.id,
    kind: a.kind,
    taxCategory: a.tax_category,
    institution: { id: a.institution_id, name: { ja: a.name_ja, en: a.name_en } },
    nickname: a.nickname,
    branchCode: a.branch_code,
    accountNumberMasked: mask(a.account_number),
    ...(details ? { accountNumber: a.account_number } : {}),
    currency: a.currency,
    status: a.status,
    openedOn: a.opened_on,
  };
}

const toBalance = (b: BalanceRow) => ({
  accountId: b.account_id,
  currency: b.currency,
  cash: money(b.cash, b.currency),
  buyingPower: money(b.buying_power, b.currency),
  withdrawable: money(b.withdrawable, b.currency),
  asOf: trimIso(b.as_of),
});

const toHolding = (h: HoldingRow) => ({
  holdingId: h.id,
  accountId: h.account_id,
  isin: h.isin,
  localCode: h.local_code,
  name: h.name,
  assetClass: h.asset_class,
  taxCategory: h.tax_category,
  nisaFrame: h.nisa_frame,
  quantity: h.quantity,
  averageCost: h.average_cost === null ? null : money(h.average_cost, h.currency),
  marketPrice: money(h.market_price, h.currency),
  marketValue: money(h.market_value, h.currency),
  unrealisedPl: h.unrealised_pl === null ? null : money(h.unrealised_pl, h.currency),
  priceAsOf: isoOrNull(h.price_as_of),
  asOf: trimIso(h.as_of),
});

const toTransaction = (t: TransactionRow) => ({
  transactionId: t.id,
  accountId: t.account_id,
  bookingDateTime: trimIso(t.booked),
  valueDate: t.value_date,
  type: t.type,
  creditDebitIndicator: t.credit_debit,
  amount: money(t.amount, t.currency),
  description: t.description,
  security:
    t.isin === null && t.local_code === null && t.security_name === null
      ? null
      : { isin: t.isin, localCode: t.local_code, name: t.security_name },
  quantity: t.quantity,
  price: t.price === null ? null : money(t.price, t.currency),
  taxCategory: t.tax_category,
});

/** The provider's cookie signer (a CookieSigner in this hub), or one over plain keys. */
function macSigner(keys: unknown): MacSigner {
  const k = keys as Partial<MacSigner> | undefined;
  if (typeof k?.sign === 'function' && typeof k.verify === 'function') return k as MacSigner;
  if (Array.isArray(keys) && keys.length) return new CookieSigner(keys as string[]);
  throw new Error('the provider has no cookie keys to sign cursors with');
}

/** Deletes unattended-call counts of past days (at most `limit` rows per call). */
export async function deleteOldUnattendedCounts(db: Queryable, limit = 1000): Promise<number> {
  return (await db.query(DELETE_OLD_USAGE_SQL, [limit])).rowCount;
}

export function apiRoutes({
  provider,
  db,
  config,
  unattendedCallsPerDay = DEFAULT_UNATTENDED_CALLS_PER_DAY,
  transactionLookbackDays = DEFAULT_TRANSACTION_LOOKBACK_DAYS,
}: ApiRoutesOptions): Router {
  const router = new Router({ prefix: '/api' });
  const risk = riskEngineFor(config);
  const mtls = mtlsFor(config);
  const cursors = createCursorCodec(macSigner(provider.keys));
  const openApi = openApiDocument(config.issuer);
  const accessTokens = createAccessTokenCache(
    (value) => provider.AccessToken.find(value) as Promise<FoundAccessToken | undefined>,
  );
  const base = `${config.issuer}/api/v1`;
  const tokenCheck = createAccessTokenCheck({
    db,
    config,
    mtls,
    algs: FAPI_ALGS,
    find: (value) => accessTokens.get(value),
    audit: 'api',
    // An RFC 9396 account_information detail grants what the accounts scope grants (src/consent).
    alsoGrants: (token, scope) =>
      scope === 'accounts' &&
      Array.isArray(token.rar) &&
      (token.rar as Array<{ type?: unknown }>).some((d) => d.type === ACCOUNT_INFORMATION),
  });
  const { invalid, rejectProof } = tokenCheck;
  const badRequest = (message: string) => new ApiError(400, 'invalid_request', message);
  const notFound = () => new ApiError(404, 'not_found', 'no such account');

  /**
   * Authenticates the call: a DPoP-bound access token with a valid proof for this exact request, or a
   * certificate-bound one (RFC 8705) over a connection presenting that certificate.
   */
  async function authorize(ctx: Context, scope: string): Promise<Authorized> {
    // Every other check first; a DPoP jti is recorded atomically by the read's statement.
    let proofSeen: Authorized['proofSeen'];
    const replay = {
      async remember(jtiKey: string, expiresAt: Date) {
        proofSeen = { key: dpopSeenKey(jtiKey), expiresAt };
        return true;
      },
    };
    const { token, scheme, value } = await tokenCheck.check(ctx, scope, replay);
    if (!token.grantId || !token.accountId) throw invalid('the access token has no consent');
    // FSA comments 51/69: aggregated data is reached through a phishing-resistant sign-in. A token
    // from the alternative MFA (or of unknown provenance) gets an RFC 9470 step-up challenge.
    const acr = token.acr;
    if (!acr || !PHISHING_RESISTANT_ACR.includes(acr))
      throw new ApiError(
        401,
        'insufficient_user_authentication',
        'this data needs a phishing-resistant sign-in (a passkey)',
        `${dpopChallenge('insufficient_user_authentication', 'a phishing-resistant sign-in is required', FAPI_ALGS)}, acr_values="${PHISHING_RESISTANT_ACR.join(' ')}"`,
      );
    // Post-login detection: free unless the token's network or client software changed.
    await observeRequest(risk, db, {
      trackingId: token.jti,
      sessionKey: `grant:${token.grantId}`,
      customerId: token.accountId,
      clientId: token.clientId,
      ip: ctx.ip,
      userAgent: ctx.get('user-agent'),
    });
    return {
      tokenId: token.jti,
      tokenValue: value,
      scheme,
      customerId: token.accountId,
      clientId: token.clientId!,
      grantId: token.grantId,
      proofSeen,
    };
  }

  /**
   * Runs one read statement (see reads.ts) for an authorized call, then applies what its header
   * found, in this order: replayed proof 401, inactive consent 403, unattended limit 429, data type
   * not consented 403, account not consented (or not the customer's, or not existing) 404.
   */
  async function runRead<R>(ctx: Context, auth: Authorized, o: ReadOptions): Promise<ReadResult<R>> {
    const customerIp = ctx.get('x-fapi-customer-ip-address');
    if (customerIp && !isIP(customerIp.trim()))
      throw badRequest('x-fapi-customer-ip-address must be an IP address');
    const unattended = o.counted && !customerIp;
    const res = await db.query<Head & R>(o.sql, [
      auth.grantId,
      auth.clientId,
      auth.customerId,
      auth.proofSeen?.key ?? null,
      auth.proofSeen?.expiresAt.toISOString() ?? null,
      unattended,
      unattendedCallsPerDay,
      o.accountId,
      auth.tokenId,
      ...(o.params ?? []),
    ]);
    const head = res.rows[0]!;
    if (head.token_live !== 1) {
      accessTokens.forget(auth.tokenValue);
      throw unknownTokenError(auth.scheme, FAPI_ALGS);
    }
    if (head.client_enabled !== 1)
      throw invalidTokenError(auth.scheme, 'the client has been disabled', FAPI_ALGS);
    if (head.fresh !== 1) throw await rejectProof(ctx, auth, 'DPoP proof replayed');
    if (head.active !== 1)
      throw new ApiError(403, 'consent_inactive', 'the consent behind this token was revoked or has expired');
    if (head.channel_disabled === 1)
      throw new ApiError(
        403,
        'channel_disabled',
        'the customer has switched off access by connected services',
      );
    if (unattended && head.counted !== 1) {
      await recordAudit(db, {
        type: 'api.unattended.limited',
        outcome: 'failure',
        clientId: auth.clientId,
        customerId: auth.customerId,
        ip: ctx.ip,
        data: { grantId: auth.grantId, path: ctx.path },
      });
      ctx.set('retry-after', String(secondsToNextJstDay()));
      throw new ApiError(
        429,
        'too_many_requests',
        'the daily limit of calls without the customer present is reached for this consent',
      );
    }
    const types = head.data_types;
    if (o.dataType && types && !types.includes(o.dataType))
      throw new ApiError(403, 'consent_insufficient', `the consent does not cover ${o.dataType}`);
    if (o.accountId !== null && head.accounts === 0) throw notFound();
    // Identifiers stay masked unless the consent names account details explicitly.
    return { head, rows: res.rows, details: types?.includes('account_details') ?? false };
  }

  const read = async <R>(ctx: Context, o: ReadOptions) =>
    runRead<R>(ctx, await authorize(ctx, 'accounts'), o);

  /**
   * Sends the payload with a strong ETag over everything but the interaction id; 304 when it matches.
   * The JSON is serialized and UTF-8 encoded once: a page of 100 transactions is ~35 kB.
   */
  function respond(ctx: Context, p: Payload): void {
    const json = Buffer.from(JSON.stringify({ data: p.data, links: p.links, meta: p.meta }));
    const etag = `"${createHash('sha256').update(json).digest('base64url').slice(0, 32)}"`;
    ctx.set('etag', etag);
    if (notModified(ctx.get('if-none-match'), etag)) {
      ctx.status = 304;
      return;
    }
    // `json` ends with the closing braces of meta and of the whole object: the id goes before them.
    const id = `${Object.keys(p.meta).length ? ',' : ''}"interactionId":${JSON.stringify(ctx.state.interactionId ?? null)}}}`;
    ctx.type = 'application/json; charset=utf-8';
    ctx.body = Buffer.concat([json.subarray(0, json.length - 2), Buffer.from(id)]);
  }

  const accountParam = (ctx: Context): string => {
    const id = ctx.params.accountId ?? '';
    if (!ACCOUNT_ID.test(id)) throw notFound();
    return id;
  };

  /** The cursor of this request, checked against where it is used. */
  function cursorOf(ctx: Context, resource: Cursor['r'], grantId: string, accountId: string | null) {
    const token = single(ctx, 'cursor');
    if (token === undefined) return undefined;
    const c = cursors.decode(token);
    if (!c || c.r !== resource || c.a !== accountId || c.g !== grantId)
      throw badRequest('the cursor is invalid or belongs to another list');
    return c;
  }

  const href = (path: string, params: Record<string, string | undefined>) => {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) if (v !== undefined) q.set(k, v);
    const s = q.toString();
    return `${base}${path}${s ? `?${s}` : ''}`;
  };

  // --- accounts -------------------------------------------------------------------------------

  async function listAccounts(ctx: Context) {
    // The list is how a client learns what it may read: not counted against the unattended limit.
    const { rows, details } = await read<AccountRow>(ctx, {
      sql: ACCOUNTS_SQL,
      accountId: null,
      counted: false,
    });
    const accounts = rows.filter((r) => r.id !== null);
    respond(ctx, {
      data: accounts.map((a) => toAccount(a, details)),
      links: { self: `${base}/accounts` },
      meta: { totalRecords: accounts.length },
    });
  }

  async function getAccount(ctx: Context) {
    const accountId = accountParam(ctx);
    const { rows, details } = await read<AccountRow>(ctx, { sql: ACCOUNTS_SQL, accountId, counted: true });
    respond(ctx, {
      data: toAccount(rows[0]!, details),
      links: { self: `${base}/accounts/${encodeURIComponent(accountId)}` },
      meta: {},
    });
  }

  // --- balances -------------------------------------------------------------------------------

  async function balances(ctx: Context, accountId: string | null) {
    const { rows } = await read<BalanceRow>(ctx, {
      sql: BALANCES_SQL,
      accountId,
      dataType: 'balances',
      counted: true,
    });
    const data = rows.filter((r) => r.account_id !== null).map(toBalance);
    const path = accountId === null ? '/balances' : `/accounts/${encodeURIComponent(accountId)}/balances`;
    respond(ctx, { data, links: { self: `${base}${path}` }, meta: { totalRecords: data.length } });
  }

  // --- holdings and transactions: keyset pages -------------------------------------------------

  /**
   * Reads one page. The cursor is checked once the token's grant is known; `plan` turns the cursor
   * (or its absence) into the statement's parameters.
   */
  async function readPage<R>(
    ctx: Context,
    o: {
      resource: Cursor['r'];
      accountId: string | null;
      plan: (cursor: Cursor | undefined) => { sql: Record<'next' | 'prev', string>; params: unknown[] };
      firstKey: [string, string];
      key: (r: R) => [string, string] | undefined;
    },
  ) {
    const sizeParam = ctx.query.pageSize === undefined ? undefined : pageSize(ctx);
    const auth = await authorize(ctx, 'accounts');
    const cursor = cursorOf(ctx, o.resource, auth.grantId, o.accountId);
    const size = sizeParam ?? cursor?.n ?? pageSize(ctx);
    const dir = cursor?.d ?? 'next';
    const { sql, params } = o.plan(cursor);
    const result = await runRead<R>(ctx, auth, {
      sql: sql[dir],
      params: [...params, ...(cursor?.k ?? o.firstKey), size + 1],
      accountId: o.accountId,
      dataType: o.resource,
      counted: true,
    });
    // The statement returns rows after the boundary in its scan order (reverse list order for prev).
    const found = result.rows.filter((r) => o.key(r) !== undefined);
    const more = found.length > size;
    const rows = found.slice(0, size);
    if (dir === 'prev') rows.reverse();
    const first = rows.length ? o.key(rows[0]!) : undefined;
    const last = rows.length ? o.key(rows.at(-1)!) : undefined;
    return {
      head: result.head,
      firstRow: result.rows[0]!,
      rows,
      size,
      grantId: auth.grantId,
      next: dir === 'next' ? (more ? last : undefined) : last,
      prev: dir === 'next' ? (cursor ? first : undefined) : more ? first : undefined,
    };
  }

  /** links.first/next/prev of a page. */
  function pageLinks(
    ctx: Context,
    path: string,
    page: { size: number; grantId: string; next?: [string, string]; prev?: [string, string] },
    o: { resource: Cursor['r']; accountId: string | null; filters?: { f?: string; t?: string } },
  ): Record<string, string> {
    const f = o.filters?.f;
    const t = o.filters?.t;
    const link = (d: 'next' | 'prev', k: [string, string]) =>
      href(path, {
        cursor: cursors.encode({
          v: 1,
          r: o.resource,
          g: page.grantId,
          a: o.accountId,
          d,
          k,
          n: page.size,
          ...(f !== undefined ? { f } : {}),
          ...(t !== undefined ? { t } : {}),
        }),
      });
    return {
      self: `${config.issuer}${ctx.originalUrl}`,
      first: href(path, {
        fromBookingDateTime: f,
        toBookingDateTime: t,
        pageSize: page.size === PAGE_SIZE_DEFAULT ? undefined : String(page.size),
      }),
      ...(page.next ? { next: link('next', page.next) } : {}),
      ...(page.prev ? { prev: link('prev', page.prev) } : {}),
    };
  }

  async function holdings(ctx: Context, accountId: string | null) {
    const path = accountId === null ? '/holdings' : `/accounts/${encodeURIComponent(accountId)}/holdings`;
    const page = await readPage<HoldingRow>(ctx, {
      resource: 'holdings',
      accountId,
      plan: () => ({ sql: HOLDINGS_SQL, params: [] }),
      firstKey: ['', ''],
      key: (r) => (r.position_key === null ? undefined : [r.account_id, r.position_key]),
    });
    respond(ctx, {
      data: page.rows.map(toHolding),
      links: pageLinks(ctx, path, page, { resource: 'holdings', accountId }),
      meta: { totalRecords: page.firstRow.total },
    });
  }

  async function transactions(ctx: Context, accountId: string | null) {
    const path =
      accountId === null ? '/transactions' : `/accounts/${encodeURIComponent(accountId)}/transactions`;
    let from = bookingBound(ctx, 'fromBookingDateTime', 'from');
    let to = bookingBound(ctx, 'toBookingDateTime', 'to');
    const page = await readPage<TransactionRow>(ctx, {
      resource: 'transactions',
      accountId,
      plan: (cursor) => {
        if (cursor) {
          if (from !== undefined || to !== undefined)
            throw badRequest('a cursor carries its filters: do not repeat them');
          from = cursor.f;
          to = cursor.t;
        }
        if (from !== undefined && to !== undefined && Date.parse(from) > Date.parse(to))
          throw badRequest('fromBookingDateTime is after toBookingDateTime');
        return {
          sql: TRANSACTIONS_SQL,
          params: [transactionLookbackDays, from ?? '-infinity', to ?? 'infinity'],
        };
      },
      firstKey: ['infinity', ''],
      key: (r) => (r.id === null ? undefined : [r.booked, r.id]),
    });
    // A window wholly before the consent's lookback start asks for what the customer did not share;
    // one that overlaps it is cut at the start (meta.firstAvailableDateTime).
    if (to !== undefined && Date.parse(to) < Date.parse(page.firstRow.lookback_from))
      throw new ApiError(
        403,
        'consent_lookback_exceeded',
        `the consent covers transactions from ${trimIso(page.firstRow.lookback_from)} only`,
      );
    respond(ctx, {
      data: page.rows.map(toTransaction),
      links: pageLinks(ctx, path, page, {
        resource: 'transactions',
        accountId,
        filters: { ...(from !== undefined ? { f: from } : {}), ...(to !== undefined ? { t: to } : {}) },
      }),
      meta: { firstAvailableDateTime: trimIso(page.firstRow.lookback_from) },
    });
  }

  // --- routing --------------------------------------------------------------------------------

  router.use(async (ctx, next) => {
    ctx.set('cache-control', 'no-store');
    try {
      await next();
    } catch (err) {
      if (!(err instanceof ApiError)) throw err;
      sendApiError(ctx, err);
    }
  });

  router.get('/openapi.json', (ctx) => {
    ctx.body = openApi;
  });

  const reads: Array<[string, (ctx: Context) => Promise<void>]> = [
    ['/v1/accounts', listAccounts],
    ['/v1/accounts/:accountId', getAccount],
    ['/v1/accounts/:accountId/balances', (ctx) => balances(ctx, accountParam(ctx))],
    ['/v1/accounts/:accountId/holdings', (ctx) => holdings(ctx, accountParam(ctx))],
    ['/v1/accounts/:accountId/transactions', (ctx) => transactions(ctx, accountParam(ctx))],
    ['/v1/balances', (ctx) => balances(ctx, null)],
    ['/v1/holdings', (ctx) => holdings(ctx, null)],
    ['/v1/transactions', (ctx) => transactions(ctx, null)],
  ];
  for (const [path, handler] of reads) {
    router.get(path, handler);
    // Read consents change nothing: any other method on a read resource is refused.
    router.all(path, (ctx) => {
      ctx.set('allow', 'GET, HEAD');
      throw new ApiError(405, 'method_not_allowed', `${ctx.method} is not allowed here; use GET`);
    });
  }
  router.post('/institution/v1/batches', ingestHandler({ provider, db, config }));
  router.all('/institution/v1/batches', (ctx) => {
    ctx.set('allow', 'POST');
    throw new ApiError(405, 'method_not_allowed', `${ctx.method} is not allowed here; use POST`);
  });
  router.all('/{*rest}', () => {
    throw new ApiError(404, 'not_found', 'no such resource');
  });
  return router;
}
