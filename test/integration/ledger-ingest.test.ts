/**
 * Institution data ingestion on a real database (PGlite, or PostgreSQL with TEST_DATABASE_URL):
 * validation by record, all-or-nothing batches, Idempotency-Key semantics, snapshots and exact
 * decimal amounts.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { Db } from '../../src/db/index.ts';
import {
  canonicalJson,
  demoBatch,
  IngestError,
  type IngestIssue,
  ingestBatch,
  ingestDemoLedger,
  isValidIsin,
} from '../../src/ledger/index.ts';
import { type TestDb, testDb } from '../support/db.ts';

let t: TestDb;
let db: Db;
const INST = 'inst_a';
const DAY = 86_400_000;
const iso = (ms: number) => new Date(ms).toISOString();
let seq = 0;
const key = () => `key-${++seq}`;

beforeAll(async () => {
  t = await testDb();
  db = t.db;
  await db.query(`INSERT INTO institutions (id, kind, name_ja, name_en) VALUES
    ('inst_a', 'brokerage', 'A証券', 'A Securities'), ('inst_b', 'brokerage', 'B証券', 'B Securities')`);
  await db.query(`INSERT INTO customers (id, institution_id, customer_number, name_kanji, name_kana) VALUES
    ('cus_a', 'inst_a', '1', '山田 太郎', 'ヤマダ タロウ'), ('cus_b', 'inst_b', '1', '佐藤 花子', 'サトウ ハナコ')`);
  await db.query(`INSERT INTO accounts (id, customer_id, institution_id, kind, tax_category, branch_code, account_number, nickname, opened_on) VALUES
    ('acc_1', 'cus_a', 'inst_a', 'securities', 'specific', '001', '1111111', '特定', '2020-01-06'),
    ('acc_2', 'cus_a', 'inst_a', 'securities', 'nisa', '001', '2222222', 'NISA', '2024-01-04'),
    ('acc_b', 'cus_b', 'inst_b', 'securities', 'general', '001', '3333333', '一般', '2021-01-06')`);
});
afterAll(() => t?.close());

async function count(table: string): Promise<number> {
  return (await db.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${table}`)).rows[0]!.n;
}

async function counts() {
  return {
    balances: await count('ledger_balances'),
    positions: await count('ledger_holdings'),
    transactions: await count('ledger_transactions'),
    ingestions: await count('ledger_ingestions'),
  };
}

const txn = (over: Record<string, unknown> = {}) => ({
  accountId: 'acc_1',
  externalId: `ext-${++seq}`,
  bookedAt: '2025-06-02T10:15:00.123456+09:00',
  type: 'deposit',
  amount: '100000',
  currency: 'JPY',
  description: '入金',
  ...over,
});

const position = (over: Record<string, unknown> = {}) => ({
  isin: 'JP3633400001',
  localCode: '7203',
  name: 'トヨタ自動車',
  assetClass: 'equity',
  taxCategory: 'specific',
  quantity: '100',
  averageCost: '2500.5',
  marketPrice: '2890',
  currency: 'JPY',
  ...over,
});

async function rejection(batch: unknown, k = key()): Promise<IngestError> {
  const err = await ingestBatch(db, INST, batch, k).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(IngestError);
  return err as IngestError;
}

describe('validation', () => {
  it('checks ISIN check digits', () => {
    expect(isValidIsin('JP3633400001')).toBe(true);
    expect(isValidIsin('JP3633400002')).toBe(false);
    expect(isValidIsin('US0378331005')).toBe(true);
    expect(isValidIsin('jp3633400001')).toBe(false);
  });

  it('refuses the whole batch, naming every bad record by index and reason', async () => {
    const before = await counts();
    const err = await rejection({
      balances: [
        {
          accountId: 'acc_1',
          currency: 'JPY',
          cash: '1',
          buyingPower: '1',
          withdrawable: '1',
          asOf: iso(Date.now()),
        },
        {
          accountId: 'acc_1',
          currency: 'yen',
          cash: 1.5,
          buyingPower: '-1',
          withdrawable: '1',
          asOf: 'today',
        },
      ],
      holdings: [
        {
          accountId: 'acc_2',
          asOf: iso(Date.now()),
          positions: [
            position({ taxCategory: 'nisa', nisaFrame: 'growth' }),
            position({ isin: 'JP3633400002' }),
            position({ nisaFrame: 'growth' }),
            position({ isin: undefined, localCode: undefined }),
          ],
        },
      ],
      transactions: [
        txn(),
        txn({ amount: '-5' }),
        txn({ type: 'buy' }),
        txn({ bookedAt: '2024-02-30T00:00:00Z' }),
        txn({ extra: true }),
        txn({ amount: '1e5' }),
        txn(),
        txn({ bookedAt: '2025-01-01T00:00:00-23:59' }),
      ],
    });
    expect(err.code).toBe('ERR_INGEST_INVALID');
    const at = (path: string) => err.issues.filter((i) => i.path.startsWith(path));
    expect(at('balances[0]')).toEqual([]);
    expect(at('balances[1]').map((i) => i.path)).toEqual(
      expect.arrayContaining([
        'balances[1].currency',
        'balances[1].cash',
        'balances[1].buyingPower',
        'balances[1].asOf',
      ]),
    );
    expect(at('balances[1].cash')[0]!.reason).toMatch(/string/);
    expect(at('holdings[0].positions[0]')).toEqual([]);
    expect(at('holdings[0].positions[1]')[0]!.reason).toMatch(/check digit/);
    expect(at('holdings[0].positions[2]')[0]!.reason).toMatch(/nisaFrame/);
    expect(at('holdings[0].positions[3]')[0]!.reason).toMatch(/isin or localCode/);
    expect(at('transactions[0]')).toEqual([]);
    expect(at('transactions[1]')[0]).toMatchObject({
      section: 'transactions',
      index: 1,
      path: 'transactions[1].amount',
      reason: 'must not be negative',
    });
    expect(at('transactions[2]').map((i) => i.reason)).toEqual(
      expect.arrayContaining(['a buy needs the security', 'a trade needs quantity and price']),
    );
    expect(at('transactions[3]')[0]!.path).toBe('transactions[3].bookedAt');
    expect(at('transactions[4]')[0]!.reason).toMatch(/extra/);
    expect(at('transactions[5]')[0]!.path).toBe('transactions[5].amount');
    expect(at('transactions[6]')).toEqual([]);
    expect(at('transactions[7]')[0]!.reason).toMatch(/offset/);
    expect(await counts()).toEqual(before);
  });

  it('refuses records of accounts that are not the institution’s, and duplicates within a batch', async () => {
    const before = await counts();
    const dup = txn();
    const err = await rejection({
      balances: [
        {
          accountId: 'acc_1',
          currency: 'JPY',
          cash: '1',
          buyingPower: '1',
          withdrawable: '1',
          asOf: iso(Date.now()),
        },
      ],
      transactions: [txn(), txn({ accountId: 'acc_b' }), txn({ accountId: 'acc_nope' }), dup, dup],
    });
    expect(err.issues).toEqual([
      {
        path: 'transactions[4]',
        section: 'transactions',
        index: 4,
        reason: expect.stringMatching(/index 3/),
      },
    ]);
    const err2 = await rejection({
      balances: [
        {
          accountId: 'acc_1',
          currency: 'JPY',
          cash: '1',
          buyingPower: '1',
          withdrawable: '1',
          asOf: iso(Date.now()),
        },
      ],
      transactions: [txn(), txn({ accountId: 'acc_b' }), txn({ accountId: 'acc_nope' })],
    });
    expect(err2.issues).toEqual<IngestIssue[]>([
      {
        path: 'transactions[1].accountId',
        section: 'transactions',
        index: 1,
        reason: 'no such account at this institution',
      },
      {
        path: 'transactions[2].accountId',
        section: 'transactions',
        index: 2,
        reason: 'no such account at this institution',
      },
    ]);
    expect(await counts()).toEqual(before);
    const audit = await db.query<{ data: { issues: number } }>(
      "SELECT data FROM audit_events WHERE type = 'ledger.batch.rejected' ORDER BY id DESC LIMIT 1",
    );
    expect(audit.rows[0]!.data.issues).toBe(2);
  });

  it('refuses an empty batch, a non-object, a bad key and an unknown institution', async () => {
    expect((await rejection({})).issues[0]).toMatchObject({
      path: '',
      reason: 'a batch needs at least one record',
    });
    expect((await rejection([1, 2])).issues[0]!.path).toBe('');
    expect((await rejection({ transactions: [txn()] }, '')).code).toBe('ERR_INGEST_IDEMPOTENCY_KEY');
    expect((await rejection({ transactions: [txn()] }, 'with space')).code).toBe(
      'ERR_INGEST_IDEMPOTENCY_KEY',
    );
    const unknown = await ingestBatch(db, 'inst_nope', { transactions: [txn()] }, key()).catch(
      (e: unknown) => e,
    );
    expect((unknown as IngestError).code).toBe('ERR_INGEST_INSTITUTION');
  });

  it('refuses a NUL in an account id and absurd nesting as invalid, not as a crash', async () => {
    const nul = await rejection({ transactions: [txn({ accountId: 'acc\u0000x' })] });
    expect(nul.code).toBe('ERR_INGEST_INVALID');
    expect(nul.issues[0]!.reason).toMatch(/control characters/);
    let deep: unknown = 1;
    for (let i = 0; i < 100_000; i++) deep = [deep];
    const nested = await rejection({ transactions: [txn()], extra: deep });
    expect(nested.code).toBe('ERR_INGEST_INVALID');
  });
});

describe('storage', () => {
  it('stores exact decimals, computes market value and P/L, and defaults the direction', async () => {
    const big = txn({ amount: '123456789012345678.12345678' });
    const sell = txn({
      type: 'sell',
      amount: '289000',
      security: { isin: 'JP3633400001', name: 'トヨタ自動車' },
      quantity: '100',
      price: '2890',
    });
    const refund = txn({
      type: 'fee',
      amount: '330',
      creditDebitIndicator: 'credit',
      description: '手数料返金',
    });
    const { result } = await ingestBatch(
      db,
      INST,
      {
        balances: [
          {
            accountId: 'acc_1',
            currency: 'USD',
            cash: '0.00000001',
            buyingPower: '0.1',
            withdrawable: '0.2',
            asOf: iso(Date.now()),
          },
        ],
        holdings: [{ accountId: 'acc_1', asOf: iso(Date.now()), positions: [position()] }],
        transactions: [big, sell, refund],
      },
      key(),
    );
    expect(result.transactions).toEqual({ received: 3, inserted: 3, updated: 0 });
    const b = await db.query<{ cash: string; buying_power: string }>(
      "SELECT cash::text, buying_power::text FROM ledger_balances WHERE account_id = 'acc_1' AND currency = 'USD'",
    );
    expect(b.rows[0]).toEqual({ cash: '0.00000001', buying_power: '0.1' });
    const h = await db.query(
      "SELECT market_value::text AS mv, unrealised_pl::text AS pl FROM ledger_holdings WHERE account_id = 'acc_1'",
    );
    expect(h.rows).toEqual([{ mv: '289000', pl: '38950.0' }]);
    const tx = await db.query<{ amount: string; type: string; credit_debit: string }>(
      'SELECT t.amount::text, t.type, t.credit_debit FROM ledger_transactions t WHERE t.external_id = ANY($1::text[]) ORDER BY t.amount',
      [[big.externalId, sell.externalId, refund.externalId]],
    );
    expect(tx.rows).toEqual([
      { amount: '330', type: 'fee', credit_debit: 'credit' },
      { amount: '289000', type: 'sell', credit_debit: 'credit' },
      { amount: '123456789012345678.12345678', type: 'deposit', credit_debit: 'credit' },
    ]);
  });

  it('updates a transaction sent again under its externalId, keeping its id', async () => {
    const first = txn({ amount: '1000' });
    await ingestBatch(db, INST, { transactions: [first] }, key());
    const before = await db.query<{ id: string }>(
      'SELECT id FROM ledger_transactions WHERE external_id = $1',
      [first.externalId],
    );
    const { result } = await ingestBatch(db, INST, { transactions: [{ ...first, amount: '1100' }] }, key());
    expect(result.transactions).toEqual({ received: 1, inserted: 0, updated: 1 });
    const after = await db.query<{ id: string; amount: string }>(
      'SELECT id, amount::text FROM ledger_transactions WHERE external_id = $1',
      [first.externalId],
    );
    expect(after.rows).toEqual([{ id: before.rows[0]!.id, amount: '1100' }]);
  });

  it('replaces holdings by snapshot, keeps holding ids, and ignores older snapshots and balances', async () => {
    const now = Date.now();
    const snap = (at: number, positions: unknown[]) => ({
      holdings: [{ accountId: 'acc_2', asOf: iso(at), positions }],
    });
    await ingestBatch(
      db,
      INST,
      snap(now - 2 * DAY, [
        position({ taxCategory: 'nisa', nisaFrame: 'growth' }),
        position({ isin: 'JP3435000009', localCode: '6758', name: 'ソニーグループ', taxCategory: 'nisa' }),
      ]),
      key(),
    );
    const ids = async () =>
      (
        await db.query<{ id: string; quantity: string }>(
          "SELECT id, quantity::text FROM ledger_holdings WHERE account_id = 'acc_2' ORDER BY position_key",
        )
      ).rows;
    const first = await ids();
    expect(first).toHaveLength(2);
    const toyota = await db.query<{ id: string }>(
      "SELECT id FROM ledger_holdings WHERE account_id = 'acc_2' AND position_key = 'JP3633400001/nisa/growth'",
    );
    const { result } = await ingestBatch(
      db,
      INST,
      snap(now - DAY, [position({ taxCategory: 'nisa', nisaFrame: 'growth', quantity: '200' })]),
      key(),
    );
    expect(result.holdings).toEqual({ received: 1, applied: 1, stale: 0, positions: 1 });
    const second = await ids();
    expect(second).toEqual([{ id: toyota.rows[0]!.id, quantity: '200' }]);
    const stale = await ingestBatch(db, INST, snap(now - 3 * DAY, []), key());
    expect(stale.result.holdings).toMatchObject({ applied: 0, stale: 1 });
    expect(await ids()).toEqual(second);
    await ingestBatch(db, INST, snap(now, []), key());
    expect(await ids()).toEqual([]);

    const balance = (at: number, cash: string) => ({
      balances: [
        { accountId: 'acc_2', currency: 'JPY', cash, buyingPower: cash, withdrawable: cash, asOf: iso(at) },
      ],
    });
    await ingestBatch(db, INST, balance(now, '500'), key());
    const older = await ingestBatch(db, INST, balance(now - DAY, '400'), key());
    expect(older.result.balances).toEqual({ received: 1, applied: 0, stale: 1 });
    const cash = await db.query("SELECT cash::text FROM ledger_balances WHERE account_id = 'acc_2'");
    expect(cash.rows).toEqual([{ cash: '500' }]);
  });
});

describe('idempotency', () => {
  beforeEach(() => {
    seq += 1000;
  });

  it('returns the first result for the same key and body (whatever the key order) and writes nothing', async () => {
    const k = key();
    const batch = { transactions: [txn(), txn()] };
    const first = await ingestBatch(db, INST, batch, k);
    expect(first.replayed).toBe(false);
    const before = await counts();
    const reordered = {
      transactions: batch.transactions.map((x) => Object.fromEntries(Object.entries(x).reverse())),
    };
    expect(canonicalJson(reordered)).toBe(canonicalJson(batch));
    const again = await ingestBatch(db, INST, reordered, k);
    expect(again).toEqual({ result: first.result, replayed: true });
    expect(await counts()).toEqual(before);
    const accepted = await db.query(
      "SELECT 1 FROM audit_events WHERE type = 'ledger.batch.accepted' AND data->>'batchId' = $1",
      [first.result.batchId],
    );
    expect(accepted.rowCount).toBe(1);
  });

  it('refuses the same key with another body, and leaves the first batch as it was', async () => {
    const k = key();
    const t1 = txn({ amount: '1' });
    await ingestBatch(db, INST, { transactions: [t1] }, k);
    const before = await counts();
    const err = await rejection({ transactions: [{ ...t1, amount: '2' }] }, k);
    expect(err.code).toBe('ERR_INGEST_IDEMPOTENCY_CONFLICT');
    expect(await counts()).toEqual(before);
    // Keys are per institution: another institution may use the same one.
    const other = await ingestBatch(db, 'inst_b', { transactions: [txn({ accountId: 'acc_b' })] }, k);
    expect(other.replayed).toBe(false);
  });

  it('leaves the key free after a refused batch, so the corrected batch can use it', async () => {
    const k = key();
    const bad = txn({ amount: 'lots' });
    expect((await rejection({ transactions: [bad] }, k)).code).toBe('ERR_INGEST_INVALID');
    const ok = await ingestBatch(db, INST, { transactions: [{ ...bad, amount: '10' }] }, k);
    expect(ok.replayed).toBe(false);
  });

  it('applies concurrent requests with one key once', async () => {
    const k = key();
    const batch = { transactions: Array.from({ length: 50 }, () => txn()) };
    const before = await counts();
    const outcomes = await Promise.all([1, 2, 3, 4].map(() => ingestBatch(db, INST, batch, k)));
    expect(outcomes.filter((o) => !o.replayed)).toHaveLength(1);
    expect(new Set(outcomes.map((o) => o.result.batchId)).size).toBe(1);
    const after = await counts();
    expect(after.transactions - before.transactions).toBe(50);
    expect(after.ingestions - before.ingestions).toBe(1);
  });

  it('runs inside a caller’s transaction and disappears with its rollback', async () => {
    const before = await counts();
    await expect(
      db.transaction(async (tx) => {
        await ingestBatch(tx, INST, { transactions: [txn()] }, key());
        throw new Error('caller gives up');
      }),
    ).rejects.toThrow('caller gives up');
    expect(await counts()).toEqual(before);
  });
});

describe('demo data', () => {
  it('comes in through ingestBatch: a balance, holdings and about 50 transactions per account', async () => {
    const batch = demoBatch([
      { id: 'acc_1', taxCategory: 'specific' },
      { id: 'acc_2', taxCategory: 'nisa' },
    ]);
    for (const id of ['acc_1', 'acc_2']) {
      const n = batch.transactions!.filter((x) => x.accountId === id).length;
      expect(n).toBeGreaterThanOrEqual(40);
      expect(n).toBeLessThanOrEqual(60);
    }
    expect(batch.holdings!.every((h) => h.positions.length >= 4)).toBe(true);
    const first = await ingestDemoLedger(db, INST, ['acc_1', 'acc_2']);
    expect(first.replayed).toBe(false);
    expect(first.result.transactions.received).toBe(batch.transactions!.length);
    expect((await ingestDemoLedger(db, INST, ['acc_1', 'acc_2'])).replayed).toBe(true);
    const nisa = await db.query<{ tax_category: string; nisa_frame: string }>(
      "SELECT DISTINCT tax_category, nisa_frame FROM ledger_holdings WHERE account_id = 'acc_2'",
    );
    expect(nisa.rows.every((r) => r.tax_category === 'nisa' && r.nisa_frame !== null)).toBe(true);
  });
});
