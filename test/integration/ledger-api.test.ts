import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PasskeyUser } from '../../conformance/lib/login.ts';
import { DEMO_CLIENT_ID, DEMO_INSTITUTION_ID } from '../../src/demo/seed.ts';
import { demoBatch, ingestBatch, ingestDemoLedger } from '../../src/ledger/index.ts';
import { demoCustomer } from '../support/customer.ts';
import { startTestHub, type TestHub } from '../support/hub.ts';
import { dpopProofMaker } from '../support/institution.ts';
import { type OpenApiValidator, openApiValidator } from '../support/openapi.ts';
import { demoRp, redeem, startAuthorization } from '../support/rp.ts';

let t: TestHub;
let user: PasskeyUser;
let oas: OpenApiValidator;
let demoAccounts: string[];
const ACC3 = 'acc_test_third';
const OTHER = 'acc_test_other_customer';
const DAY = 86_400_000;
const CUSTOMER_IP = { 'x-fapi-customer-ip-address': '203.0.113.7' };
/** When acc3's test data was made (five of its transactions share the instant ingestedAt − 10 days). */
let ingestedAt: number;

interface Session {
  token: string;
  grantId: string;
  proof(method: string, url: string): string;
}

// biome-ignore lint/suspicious/noExplicitAny: response bodies are checked against the OpenAPI document
type Body = any;

const iso = (ms: number) => new Date(ms).toISOString();

/** A customer consent for the accounts `pick` chooses, and a DPoP-bound access token for it. */
async function consent(pick: (offered: string[]) => string[]): Promise<Session> {
  const keys = (await crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, [
    'sign',
    'verify',
  ])) as CryptoKeyPair;
  const rp = await demoRp(t, { dpopKey: keys });
  const auth = await startAuthorization(rp, 'openid accounts');
  const callback = await user.login(auth.url, { accounts: pick });
  const tokens = await redeem(rp, auth, callback);
  const grant = await t.hub.db.query<{ grant_id: string }>(
    'SELECT grant_id FROM consents WHERE client_id = $1 ORDER BY created_at DESC LIMIT 1',
    [DEMO_CLIENT_ID],
  );
  return {
    token: tokens.access_token,
    grantId: grant.rows[0]!.grant_id,
    proof: await dpopProofMaker(keys, tokens.access_token),
  };
}

/** One API call; the response is validated against the OpenAPI document. */
async function call(
  s: Session,
  path: string,
  o: { method?: string; headers?: Record<string, string>; present?: boolean; proof?: string } = {},
): Promise<{ res: Response; body: Body }> {
  const url = path.startsWith('https:') ? path : `${t.issuer}${path}`;
  const method = o.method ?? 'GET';
  const res = await t.fetch(url, {
    method,
    headers: {
      authorization: `DPoP ${s.token}`,
      dpop: o.proof ?? s.proof(method, url),
      ...(o.present === false ? {} : CUSTOMER_IP),
      ...o.headers,
    },
  });
  const text = await res.text();
  const body = text ? JSON.parse(text) : undefined;
  if (new URL(url).pathname !== '/api/v1/unknown')
    oas.check(res.status === 405 ? 'GET' : method, url, res.status, body);
  if (res.status >= 400) {
    expect(body.error.status).toBe(res.status);
    expect(body.meta.interactionId).toBe(res.headers.get('x-fapi-interaction-id'));
  }
  return { res, body };
}

/** Follows links.next from `path` to the end; returns every item and the pages' sizes. */
async function walk(s: Session, path: string): Promise<{ items: Body[]; pages: Body[] }> {
  const pages: Body[] = [];
  let next: string | undefined = `${t.issuer}${path}`;
  while (next) {
    const { res, body } = await call(s, next);
    expect(res.status).toBe(200);
    pages.push(body);
    next = body.links.next;
    expect(pages.length).toBeLessThan(100);
  }
  return { items: pages.flatMap((p) => p.data), pages };
}

/** Transaction ids the API should list for these accounts within `days` of lookback, newest first. */
async function expectedTransactions(accounts: string[], days = 730): Promise<string[]> {
  const res = await t.hub.db.query<{ id: string }>(
    `SELECT id FROM ledger_transactions WHERE account_id = ANY($1::text[]) AND booked_at >= now() - make_interval(days => $2)
     ORDER BY booked_at DESC, id DESC`,
    [accounts, days],
  );
  return res.rows.map((r) => r.id);
}

function acc3Batch(now: number) {
  const transactions = [];
  for (let i = 0; i < 250; i++) {
    // Five share one booking time (keyset ties), the rest spread over ~700 days with microseconds.
    const at =
      i < 5
        ? iso(now - 10 * DAY)
        : `${iso(now - (i * 700 * DAY) / 250 - 3600_000).slice(0, 19)}.${String(i).padStart(6, '0')}Z`;
    transactions.push({
      accountId: ACC3,
      externalId: `t3-${i}`,
      bookedAt: at,
      type: i % 3 === 0 ? 'deposit' : 'fee',
      amount: `${1000 + i}.5`,
      currency: 'JPY',
      description: `テスト ${i}`,
    });
  }
  for (let i = 0; i < 10; i++)
    transactions.push({
      accountId: ACC3,
      externalId: `t3-old-${i}`,
      bookedAt: iso(now - (800 + i * 10) * DAY),
      type: 'deposit',
      amount: '1',
      currency: 'JPY',
      description: 'older than the lookback',
    });
  return {
    balances: [
      {
        accountId: ACC3,
        currency: 'JPY',
        cash: '-1200.50',
        buyingPower: '0',
        withdrawable: '0',
        asOf: iso(now - DAY),
      },
      {
        accountId: ACC3,
        currency: 'USD',
        cash: '1234.56',
        buyingPower: '1234.56',
        withdrawable: '1000',
        asOf: iso(now - DAY),
      },
    ],
    holdings: [
      {
        accountId: ACC3,
        asOf: iso(now - DAY),
        positions: [
          ['JP3633400001', '7203', 'トヨタ自動車'],
          ['JP3435000009', '6758', 'ソニーグループ'],
          ['JP3902900004', '8306', '三菱UFJフィナンシャル・グループ'],
          ['JP3735400008', '9432', '日本電信電話'],
          ['JP3898400001', '8058', '三菱商事'],
          ['JP3788600009', '6501', '日立製作所'],
          ['JP3027630007', '1306', 'NEXT FUNDS TOPIX連動型上場投信'],
        ].map(([isin, localCode, name], i) => ({
          isin,
          localCode,
          name,
          assetClass: i === 6 ? 'etf' : 'equity',
          taxCategory: 'general',
          quantity: String(100 * (i + 1)),
          averageCost: '1000.25',
          marketPrice: '1100',
          currency: 'JPY',
        })),
      },
    ],
    transactions,
  };
}

beforeAll(async () => {
  t = await startTestHub();
  // Columns the consent model may grow; added before any statement on consents is prepared.
  await t.hub.db.exec(`ALTER TABLE consents ADD COLUMN IF NOT EXISTS lookback_days integer;
    ALTER TABLE consents ADD COLUMN IF NOT EXISTS data_types text[];`);
  const customerId = t.hub.demo!.customerId;
  demoAccounts = (
    await t.hub.db.query<{ id: string }>(
      'SELECT id FROM accounts WHERE customer_id = $1 ORDER BY opened_on',
      [customerId],
    )
  ).rows.map((r) => r.id);
  await t.hub.db.query(
    `INSERT INTO accounts (id, customer_id, institution_id, kind, tax_category, branch_code, account_number, nickname, opened_on)
     VALUES ($1, $2, $3, 'securities', 'general', '002', '5551234', '一般口座', '2025-01-06')`,
    [ACC3, customerId, DEMO_INSTITUTION_ID],
  );
  await t.hub.db.query(
    `INSERT INTO customers (id, institution_id, customer_number, name_kanji, name_kana) VALUES ('cus_test_other', $1, '10000099', '他人 花子', 'タニン ハナコ')`,
    [DEMO_INSTITUTION_ID],
  );
  await t.hub.db.query(
    `INSERT INTO accounts (id, customer_id, institution_id, kind, tax_category, branch_code, account_number, nickname, opened_on)
     VALUES ($1, 'cus_test_other', $2, 'securities', 'specific', '001', '9990001', '他人の口座', '2020-01-06')`,
    [OTHER, DEMO_INSTITUTION_ID],
  );
  await ingestDemoLedger(t.hub.db, DEMO_INSTITUTION_ID, [...demoAccounts, OTHER]);
  ingestedAt = Date.now();
  await ingestBatch(t.hub.db, DEMO_INSTITUTION_ID, acc3Batch(ingestedAt), 'test-acc3');
  user = demoCustomer(t);
  const doc = await (await t.fetch(`${t.issuer}/api/openapi.json`)).json();
  oas = openApiValidator(doc as Record<string, unknown>);
});
afterAll(() => t?.close());

describe('the OpenAPI document', () => {
  it('is served as OpenAPI 3.1 and describes the read and ingestion operations', async () => {
    const res = await t.fetch(`${t.issuer}/api/openapi.json`);
    expect(res.status).toBe(200);
    const doc = (await res.json()) as { openapi: string; servers: Array<{ url: string }> };
    expect(doc.openapi).toBe('3.1.0');
    expect(doc.servers[0]!.url).toBe(t.issuer);
    expect(oas.operations()).toEqual(
      expect.arrayContaining([
        'GET /api/v1/accounts',
        'GET /api/v1/accounts/{accountId}',
        'GET /api/v1/accounts/{accountId}/balances',
        'GET /api/v1/accounts/{accountId}/holdings',
        'GET /api/v1/accounts/{accountId}/transactions',
        'GET /api/v1/balances',
        'GET /api/v1/holdings',
        'GET /api/v1/transactions',
        'POST /api/institution/v1/batches',
      ]),
    );
  });

  it('accepts the batches ingestBatch accepts and describes its result', async () => {
    const batch = demoBatch([{ id: 'acc_x', taxCategory: 'nisa' }]);
    oas.checkSchema('IngestBatch', batch);
    expect(() => oas.checkSchema('IngestBatch', { transactions: [{ amount: 1 }] })).toThrow(/does not match/);
    const balance = { accountId: OTHER, currency: 'EUR', cash: '1', buyingPower: '1', withdrawable: '1' };
    const { result } = await ingestBatch(
      t.hub.db,
      DEMO_INSTITUTION_ID,
      { balances: [{ ...balance, asOf: iso(Date.now() - 2 * DAY) }] },
      'test-shape',
    );
    oas.checkSchema('IngestResult', result);
  });
});

describe('accounts', () => {
  let s: Session;
  beforeAll(async () => {
    s = await consent((offered) => offered.filter((id) => id !== demoAccounts[1]));
  });

  it('lists exactly the consented accounts with masked numbers', async () => {
    const { res, body } = await call(s, '/api/v1/accounts');
    expect(res.status).toBe(200);
    expect(body.data.map((a: Body) => a.accountId)).toEqual([demoAccounts[0], ACC3]);
    expect(body.data[1]).toMatchObject({ accountNumberMasked: '****234', taxCategory: 'general' });
    expect(body.data[1]).not.toHaveProperty('accountNumber');
    expect(body.meta.totalRecords).toBe(2);
  });

  it('reads one consented account', async () => {
    const { res, body } = await call(s, `/api/v1/accounts/${ACC3}`);
    expect(res.status).toBe(200);
    expect(body.data).toMatchObject({ accountId: ACC3, accountNumberMasked: '****234', branchCode: '002' });
  });

  it('answers 404 alike for an unconsented, another customer’s or an unknown account', async () => {
    const bodies = [];
    for (const id of [demoAccounts[1]!, OTHER, 'acc_does_not_exist', 'x'.repeat(300)]) {
      for (const sub of ['', '/balances', '/holdings', '/transactions']) {
        const { res, body } = await call(s, `/api/v1/accounts/${id}${sub}`);
        expect(res.status).toBe(404);
        bodies.push({ ...body.error });
      }
    }
    // Nothing tells the accounts apart: no hint that one exists.
    expect(new Set(bodies.map((b) => JSON.stringify(b))).size).toBe(1);
    expect(bodies[0]).toEqual({ status: 404, code: 'not_found', message: 'no such account' });
  });

  it('shows the full number only when the consent covers account details', async () => {
    const d = await consent((offered) => offered);
    await t.hub.db.query(
      "UPDATE consents SET data_types = ARRAY['balances', 'account_details'] WHERE grant_id = $1",
      [d.grantId],
    );
    const list = await call(d, '/api/v1/accounts');
    expect(list.body.data.find((a: Body) => a.accountId === ACC3).accountNumber).toBe('5551234');
    expect((await call(d, '/api/v1/accounts/acc_test_third/balances')).res.status).toBe(200);
    for (const path of [
      '/api/v1/holdings',
      `/api/v1/accounts/${ACC3}/transactions`,
      '/api/v1/transactions',
    ]) {
      const { res, body } = await call(d, path);
      expect(res.status).toBe(403);
      expect(body.error.code).toBe('consent_insufficient');
    }
  });
});

describe('balances and holdings', () => {
  let s: Session;
  beforeAll(async () => {
    s = await consent((offered) => offered.filter((id) => id !== demoAccounts[1]));
  });

  it('gives balances per currency as decimal strings, for one account and for all consented ones', async () => {
    const one = await call(s, `/api/v1/accounts/${ACC3}/balances`);
    expect(one.res.status).toBe(200);
    expect(one.body.data).toEqual([
      expect.objectContaining({ currency: 'JPY', cash: { amount: '-1200.50', currency: 'JPY' } }),
      expect.objectContaining({
        currency: 'USD',
        buyingPower: { amount: '1234.56', currency: 'USD' },
        withdrawable: { amount: '1000', currency: 'USD' },
      }),
    ]);
    const all = await call(s, '/api/v1/balances');
    expect(new Set(all.body.data.map((b: Body) => b.accountId))).toEqual(new Set([demoAccounts[0], ACC3]));
    expect(all.body.meta.totalRecords).toBe(3);
  });

  it('gives holdings with computed value and P/L, paged without gaps or duplicates', async () => {
    const first = await call(s, `/api/v1/accounts/${ACC3}/holdings?pageSize=3`);
    expect(first.body.meta.totalRecords).toBe(7);
    const toyota = (await walk(s, `/api/v1/accounts/${ACC3}/holdings?pageSize=3`)).items.find(
      (h: Body) => h.localCode === '7203',
    );
    expect(toyota).toMatchObject({
      isin: 'JP3633400001',
      name: 'トヨタ自動車',
      taxCategory: 'general',
      quantity: '100',
      averageCost: { amount: '1000.25', currency: 'JPY' },
      marketValue: { amount: '110000', currency: 'JPY' },
      unrealisedPl: { amount: '9975.00', currency: 'JPY' },
    });
    const { items, pages } = await walk(s, '/api/v1/holdings?pageSize=3');
    const expected = await t.hub.db.query<{ id: string }>(
      'SELECT id FROM ledger_holdings WHERE account_id = ANY($1::text[]) ORDER BY account_id, position_key',
      [[demoAccounts[0], ACC3]],
    );
    expect(items.map((h: Body) => h.holdingId)).toEqual(expected.rows.map((r) => r.id));
    expect(pages[0].links.prev).toBeUndefined();
    // prev from the second page is the first page again.
    const back = await call(s, pages[1].links.prev);
    expect(back.body.data).toEqual(pages[0].data);
  });
});

describe('transactions', () => {
  let s: Session;
  beforeAll(async () => {
    s = await consent((offered) => offered.filter((id) => id !== demoAccounts[1]));
  });

  it('pages through one account newest first, within the lookback, without gaps or duplicates', async () => {
    const { items, pages } = await walk(s, `/api/v1/accounts/${ACC3}/transactions`);
    expect(pages.map((p) => p.data.length)).toEqual([100, 100, 50]);
    expect(items.map((x: Body) => x.transactionId)).toEqual(await expectedTransactions([ACC3]));
    expect(items.every((x: Body) => x.description !== 'older than the lookback')).toBe(true);
    const lookback = Date.parse(pages[0].meta.firstAvailableDateTime);
    expect(Math.abs(lookback - (Date.now() - 730 * DAY))).toBeLessThan(60_000);
    expect(items[0]).toMatchObject({ accountId: ACC3, amount: { currency: 'JPY' }, security: null });
    expect(items.some((x: Body) => /\.\d{6}Z$/.test(x.bookingDateTime))).toBe(true);
    expect(pages[0].links.first).toBe(`${t.issuer}/api/v1/accounts/${ACC3}/transactions`);
    // Following prev from the last page gives the middle page back.
    const back = await call(s, pages[2].links.prev);
    expect(back.body.data).toEqual(pages[1].data);
    expect(back.body.links.next).toBe(pages[1].links.next);
  });

  it('merges the consented accounts in the bulk list', async () => {
    const { items } = await walk(s, '/api/v1/transactions?pageSize=37');
    expect(items.map((x: Body) => x.transactionId)).toEqual(
      await expectedTransactions([demoAccounts[0]!, ACC3]),
    );
  });

  it('filters by booking date-time, never beyond the lookback', async () => {
    const from = iso(Date.now() - 100 * DAY);
    const to = iso(Date.now() - 20 * DAY);
    const q = `fromBookingDateTime=${encodeURIComponent(from)}&toBookingDateTime=${encodeURIComponent(to)}&pageSize=10`;
    const { items, pages } = await walk(s, `/api/v1/accounts/${ACC3}/transactions?${q}`);
    expect(items.length).toBeGreaterThan(10);
    for (const x of items) {
      expect(Date.parse(x.bookingDateTime)).toBeGreaterThanOrEqual(Date.parse(from));
      expect(Date.parse(x.bookingDateTime)).toBeLessThanOrEqual(Date.parse(to));
    }
    // The cursor carries the filters, both ways.
    expect(pages[1].links.first).toContain('fromBookingDateTime=');
    const back = await call(s, pages.at(-1).links.prev);
    expect(back.body.data).toEqual(pages.at(-2).data);
    // Both bounds are inclusive, to the microsecond.
    const tie = encodeURIComponent(iso(ingestedAt - 10 * DAY));
    const ties = await walk(
      s,
      `/api/v1/accounts/${ACC3}/transactions?fromBookingDateTime=${tie}&toBookingDateTime=${tie}&pageSize=2`,
    );
    expect(ties.items.map((x: Body) => x.description).sort()).toEqual([
      'テスト 0',
      'テスト 1',
      'テスト 2',
      'テスト 3',
      'テスト 4',
    ]);
    expect(ties.pages).toHaveLength(3);
    const ancient = await walk(s, `/api/v1/accounts/${ACC3}/transactions?fromBookingDateTime=2000-01-01`);
    expect(ancient.items).toHaveLength(250);
  });

  it('applies a lookback the consent carries', async () => {
    const d = await consent((offered) => offered);
    await t.hub.db.query('UPDATE consents SET lookback_days = 90 WHERE grant_id = $1', [d.grantId]);
    const { items, pages } = await walk(
      d,
      `/api/v1/accounts/${ACC3}/transactions?fromBookingDateTime=2000-01-01`,
    );
    expect(items.map((x: Body) => x.transactionId)).toEqual(await expectedTransactions([ACC3], 90));
    expect(Math.abs(Date.parse(pages[0].meta.firstAvailableDateTime) - (Date.now() - 90 * DAY))).toBeLessThan(
      60_000,
    );
  });

  it('stays consistent when transactions arrive while a client pages', async () => {
    const first = await call(s, `/api/v1/accounts/${ACC3}/transactions?pageSize=50`);
    const seen = first.body.data.map((x: Body) => x.transactionId);
    const before = await expectedTransactions([ACC3]);
    const boundary = Date.parse(first.body.data.at(-1).bookingDateTime);
    const added = (externalId: string, at: number) => ({
      accountId: ACC3,
      externalId,
      bookedAt: iso(at),
      type: 'deposit',
      amount: '5',
      currency: 'JPY',
      description: 'arrived while paging',
    });
    await ingestBatch(
      t.hub.db,
      DEMO_INSTITUTION_ID,
      { transactions: [added('late-new', Date.now()), added('late-old', boundary - 5 * DAY)] },
      'test-late-arrivals',
    );
    let next = first.body.links.next;
    while (next) {
      const { body } = await call(s, next);
      seen.push(...body.data.map((x: Body) => x.transactionId));
      next = body.links.next;
    }
    expect(new Set(seen).size).toBe(seen.length);
    for (const id of before) expect(seen).toContain(id);
    const late = await t.hub.db.query<{ external_id: string; id: string }>(
      "SELECT external_id, id FROM ledger_transactions WHERE external_id LIKE 'late-%'",
    );
    const byExt = Object.fromEntries(late.rows.map((r) => [r.external_id, r.id]));
    // Behind the cursor: not seen on later pages; ahead of it: seen.
    expect(seen).not.toContain(byExt['late-new']);
    expect(seen).toContain(byExt['late-old']);
  });
});

describe('client mistakes', () => {
  let s: Session;
  beforeAll(async () => {
    s = await consent((offered) => offered);
  });

  it.each([
    ['fromBookingDateTime=yesterday', 'fromBookingDateTime'],
    ['toBookingDateTime=2024-02-30', 'toBookingDateTime'],
    ['fromBookingDateTime=2024-01-01T00:00:00', 'fromBookingDateTime'],
    ['toBookingDateTime=2024-01-01T00:00:00-23:59', 'toBookingDateTime'],
    ['fromBookingDateTime=2024-03-01&toBookingDateTime=2024-02-01', 'after'],
    ['pageSize=0', 'pageSize'],
    ['pageSize=501', 'pageSize'],
    ['pageSize=ten', 'pageSize'],
    ['pageSize=1&pageSize=2', 'once'],
    ['cursor=garbage', 'cursor'],
  ])('%s is a 400 in the envelope', async (query, hint) => {
    const { res, body } = await call(s, `/api/v1/transactions?${query}`);
    expect(res.status).toBe(400);
    expect(body.error.code).toBe('invalid_request');
    expect(body.error.message).toContain(hint);
  });

  it('refuses a tampered cursor, one from another list and one with repeated filters', async () => {
    const page = await call(s, `/api/v1/accounts/${ACC3}/transactions?pageSize=5`);
    const cursor = new URL(page.body.links.next).searchParams.get('cursor')!;
    const [payload, tag] = cursor.split('.') as [string, string];
    const state = JSON.parse(Buffer.from(payload, 'base64url').toString());
    state.k[0] = '2000-01-01T00:00:00.000000Z';
    const forged = `${Buffer.from(JSON.stringify(state)).toString('base64url')}.${tag}`;
    for (const url of [
      `/api/v1/accounts/${ACC3}/transactions?cursor=${forged}`,
      `/api/v1/accounts/${demoAccounts[0]}/transactions?cursor=${cursor}`,
      `/api/v1/transactions?cursor=${cursor}`,
      `/api/v1/accounts/${ACC3}/holdings?cursor=${cursor}`,
      `/api/v1/accounts/${ACC3}/transactions?cursor=${cursor}&fromBookingDateTime=2024-01-01`,
    ]) {
      const { res, body } = await call(s, url);
      expect(res.status, url).toBe(400);
      expect(body.error.code).toBe('invalid_request');
    }
    // Another consent of the same client cannot use it either.
    const other = await consent((offered) => offered);
    expect((await call(other, `/api/v1/accounts/${ACC3}/transactions?cursor=${cursor}`)).res.status).toBe(
      400,
    );
    expect((await call(s, `/api/v1/accounts/${ACC3}/transactions?cursor=${cursor}`)).res.status).toBe(200);
  });

  it('refuses a malformed x-fapi-customer-ip-address', async () => {
    const { res } = await call(s, '/api/v1/balances', { headers: { 'x-fapi-customer-ip-address': 'nope' } });
    expect(res.status).toBe(400);
  });

  it('changes nothing: every other method is 405 with Allow, unknown paths 404', async () => {
    for (const method of ['POST', 'PUT', 'PATCH', 'DELETE']) {
      for (const path of ['/api/v1/accounts', `/api/v1/accounts/${ACC3}`, '/api/v1/transactions']) {
        const { res, body } = await call(s, path, { method });
        expect(res.status, `${method} ${path}`).toBe(405);
        expect(res.headers.get('allow')).toBe('GET, HEAD');
        expect(body.error.code).toBe('method_not_allowed');
      }
    }
    const { res, body } = await call(s, '/api/v1/unknown');
    expect(res.status).toBe(404);
    expect(body.error.code).toBe('not_found');
  });

  it('rejects a replayed DPoP proof on a read', async () => {
    const url = `${t.issuer}/api/v1/accounts/${ACC3}/balances`;
    const proof = s.proof('GET', url);
    expect((await call(s, url, { proof })).res.status).toBe(200);
    const again = await call(s, url, { proof });
    expect(again.res.status).toBe(401);
    expect(again.body.error.code).toBe('invalid_token');
  });

  it('answers 403 once the consent is revoked', async () => {
    const d = await consent((offered) => offered);
    expect((await call(d, '/api/v1/holdings')).res.status).toBe(200);
    await t.hub.db.query(
      "UPDATE consents SET revoked_at = now(), revoked_by = 'customer' WHERE grant_id = $1",
      [d.grantId],
    );
    const { res, body } = await call(d, '/api/v1/holdings');
    expect(res.status).toBe(403);
    expect(body.error.code).toBe('consent_inactive');
  });
});

describe('conditional reads', () => {
  it('answers 304 to If-None-Match with the current ETag, 200 once the data changed', async () => {
    const s = await consent((offered) => offered);
    const path = `/api/v1/accounts/${ACC3}/balances`;
    const first = await call(s, path);
    const etag = first.res.headers.get('etag')!;
    expect(etag).toMatch(/^"[\w-]+"$/);
    const same = await call(s, path, { headers: { 'if-none-match': `W/"nope", ${etag}` } });
    expect(same.res.status).toBe(304);
    expect(same.body).toBeUndefined();
    expect(same.res.headers.get('etag')).toBe(etag);
    await ingestBatch(
      t.hub.db,
      DEMO_INSTITUTION_ID,
      {
        balances: [
          {
            accountId: ACC3,
            currency: 'JPY',
            cash: '5',
            buyingPower: '5',
            withdrawable: '5',
            asOf: iso(Date.now()),
          },
        ],
      },
      'test-etag-change',
    );
    const changed = await call(s, path, { headers: { 'if-none-match': etag } });
    expect(changed.res.status).toBe(200);
    expect(changed.res.headers.get('etag')).not.toBe(etag);
    // The list's ETag does not depend on the interaction id.
    const a = await call(s, '/api/v1/accounts');
    const b = await call(s, '/api/v1/accounts');
    expect(a.res.headers.get('etag')).toBe(b.res.headers.get('etag'));
  });
});

describe('unattended calls', () => {
  it('allows 4 a day per consent without the customer, then 429 with Retry-After; the list is not counted', async () => {
    const s = await consent((offered) => offered);
    for (let i = 0; i < 3; i++)
      expect((await call(s, '/api/v1/accounts', { present: false })).res.status).toBe(200);
    const paths = [
      '/api/v1/balances',
      '/api/v1/holdings',
      '/api/v1/transactions',
      `/api/v1/accounts/${ACC3}`,
    ];
    for (const path of paths) expect((await call(s, path, { present: false })).res.status).toBe(200);
    const limited = await call(s, '/api/v1/balances', { present: false });
    expect(limited.res.status).toBe(429);
    expect(limited.body.error.code).toBe('too_many_requests');
    const retryAfter = Number(limited.res.headers.get('retry-after'));
    expect(Number.isInteger(retryAfter) && retryAfter > 0 && retryAfter <= 86_400).toBe(true);
    // With the customer present the same consent still reads.
    expect((await call(s, '/api/v1/balances')).res.status).toBe(200);
    const audit = await t.hub.db.query("SELECT 1 FROM audit_events WHERE type = 'api.unattended.limited'");
    expect(audit.rowCount).toBeGreaterThan(0);
  });

  it('counts atomically: of 8 concurrent unattended calls exactly 4 succeed', async () => {
    const s = await consent((offered) => offered);
    const results = await Promise.all(
      Array.from({ length: 8 }, () => call(s, '/api/v1/balances', { present: false })),
    );
    const statuses = results.map((r) => r.res.status).sort();
    expect(statuses).toEqual([200, 200, 200, 200, 429, 429, 429, 429]);
  });

  it('takes the limit from the client metadata when it sets one', async () => {
    await t.hub.db.query(
      `UPDATE clients SET metadata = metadata || '{"unattended_calls_per_day": 1}' WHERE client_id = $1`,
      [DEMO_CLIENT_ID],
    );
    try {
      const s = await consent((offered) => offered);
      expect((await call(s, '/api/v1/balances', { present: false })).res.status).toBe(200);
      expect((await call(s, '/api/v1/balances', { present: false })).res.status).toBe(429);
    } finally {
      await t.hub.db.query(
        `UPDATE clients SET metadata = metadata - 'unattended_calls_per_day' WHERE client_id = $1`,
        [DEMO_CLIENT_ID],
      );
    }
  });
});

describe('coverage', () => {
  it('validated a 200 of every read operation against the document', () => {
    for (const op of oas.operations().filter((o) => o.startsWith('GET /api/v1')))
      expect(oas.checked, op).toContain(`${op} 200`);
  });
});
