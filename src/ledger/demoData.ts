/**
 * Demo ledger data, pushed through the ingestion path (ingestBatch) like an institution's data:
 * per account a JPY balance, a handful of Japanese stocks and ETFs, and about 50 transactions over
 * the last two years or so. Deterministic per account and day, so a repeat the same day is a replay.
 */
import { createHash } from 'node:crypto';
import type { Db, Queryable } from '../db/index.ts';
import { type IngestOutcome, ingestBatch } from './ingest.ts';
import type { BalanceInput, HoldingSnapshotInput, IngestBatch, TransactionInput } from './schema.ts';

interface Security {
  code: string;
  isin: string;
  name: string;
  assetClass: 'equity' | 'etf';
  /** A plausible recent price (JPY), the base for the demo's prices. */
  price: number;
  /** Annual dividend per share (JPY). */
  dividend: number;
}

const SECURITIES: Security[] = [
  {
    code: '7203',
    isin: 'JP3633400001',
    name: 'トヨタ自動車',
    assetClass: 'equity',
    price: 2900,
    dividend: 95,
  },
  {
    code: '6758',
    isin: 'JP3435000009',
    name: 'ソニーグループ',
    assetClass: 'equity',
    price: 4000,
    dividend: 25,
  },
  {
    code: '8306',
    isin: 'JP3902900004',
    name: '三菱UFJフィナンシャル・グループ',
    assetClass: 'equity',
    price: 2300,
    dividend: 64,
  },
  {
    code: '9432',
    isin: 'JP3735400008',
    name: '日本電信電話',
    assetClass: 'equity',
    price: 155,
    dividend: 5.3,
  },
  { code: '8058', isin: 'JP3898400001', name: '三菱商事', assetClass: 'equity', price: 3400, dividend: 110 },
  { code: '6501', isin: 'JP3788600009', name: '日立製作所', assetClass: 'equity', price: 4600, dividend: 44 },
  {
    code: '8591',
    isin: 'JP3200450009',
    name: 'オリックス',
    assetClass: 'equity',
    price: 3700,
    dividend: 120,
  },
  {
    code: '1306',
    isin: 'JP3027630007',
    name: 'NEXT FUNDS TOPIX連動型上場投信',
    assetClass: 'etf',
    price: 3300,
    dividend: 60,
  },
  {
    code: '1321',
    isin: 'JP3027650005',
    name: 'NEXT FUNDS 日経225連動型上場投信',
    assetClass: 'etf',
    price: 47000,
    dividend: 800,
  },
];

/** mulberry32: a small seeded PRNG, so the same account gets the same story. */
function prng(seed: string): () => number {
  let a = 0;
  for (const c of seed) a = (Math.imul(a, 31) + c.charCodeAt(0)) | 0;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const DAY_MS = 86_400_000;
const JST_MS = 9 * 3_600_000;

/** Today's date in Japan (YYYY-MM-DD). */
function jstToday(now: Date): string {
  return new Date(now.getTime() + JST_MS).toISOString().slice(0, 10);
}

/** `days` before the JST day `anchor`, at hh:mm JST, as RFC 3339 with +09:00. */
function jstAt(anchor: string, days: number, hh: number, mm: number): string {
  const d = new Date(Date.parse(`${anchor}T00:00:00Z`) - days * DAY_MS).toISOString().slice(0, 10);
  return `${d}T${String(hh).padStart(2, '0')}:${String(mm).padStart(2, '0')}:00+09:00`;
}

const yen = (n: number) => String(Math.round(n));
const price = (n: number) => (n < 1000 ? n.toFixed(1) : String(Math.round(n)));

/** The demo batch for some accounts (exported for tests that want the data without a database). */
export function demoBatch(
  accounts: Array<{ id: string; taxCategory: 'specific' | 'general' | 'nisa' | null }>,
  now = new Date(),
): IngestBatch {
  const anchor = jstToday(now);
  const asOf = `${anchor}T00:00:00+09:00`;
  const balances: BalanceInput[] = [];
  const holdings: HoldingSnapshotInput[] = [];
  const transactions: TransactionInput[] = [];

  for (const account of accounts) {
    const rnd = prng(account.id);
    const pick = <T>(xs: T[]) => xs[Math.floor(rnd() * xs.length)]!;
    const events: Array<Omit<TransactionInput, 'accountId' | 'externalId'>> = [];
    const tax = account.taxCategory ?? 'specific';

    // Savings deposits every 40 days or so; the oldest two lie beyond a two-year lookback.
    for (let m = 0; m < 20; m++)
      events.push({
        bookedAt: jstAt(anchor, 5 + m * 40, 9, 0),
        type: 'deposit',
        amount: yen(30_000 + Math.floor(rnd() * 8) * 10_000),
        currency: 'JPY',
        description: '入金 (積立)',
      });
    for (const days of [120, 400])
      events.push({
        bookedAt: jstAt(anchor, days, 14, 30),
        type: 'withdrawal',
        amount: yen(50_000 + Math.floor(rnd() * 5) * 10_000),
        currency: 'JPY',
        description: '出金',
      });

    // Five positions, each bought in two lots; one more stock bought and sold again.
    const shuffled = [...SECURITIES];
    for (let i = shuffled.length - 1; i > 0; i--) {
      const j = Math.floor(rnd() * (i + 1));
      [shuffled[i], shuffled[j]] = [shuffled[j]!, shuffled[i]!];
    }
    const held = shuffled.slice(0, 6);
    const positions: HoldingSnapshotInput['positions'] = [];
    held.forEach((s, i) => {
      const unit = s.assetClass === 'etf' && s.price > 10_000 ? 1 : s.price < 1000 ? 100 : 10;
      const lots = [unit * (1 + Math.floor(rnd() * 5)), unit * (1 + Math.floor(rnd() * 5))];
      let cost = 0;
      lots.forEach((q, lot) => {
        const p = s.price * (0.75 + rnd() * 0.3);
        cost += q * p;
        events.push({
          bookedAt: jstAt(anchor, 600 - i * 80 - lot * 35, 10, 5 + i),
          valueDate: jstAt(anchor, 598 - i * 80 - lot * 35, 0, 0).slice(0, 10),
          type: 'buy',
          amount: yen(q * Number(price(p))),
          currency: 'JPY',
          description: `${s.name} 買付`,
          security: { isin: s.isin, localCode: s.code, name: s.name },
          quantity: String(q),
          price: price(p),
          taxCategory: tax,
        });
      });
      const quantity = lots[0]! + lots[1]!;
      if (i === 5) {
        const p = s.price * (1.05 + rnd() * 0.1);
        events.push({
          bookedAt: jstAt(anchor, 90, 13, 45),
          valueDate: jstAt(anchor, 88, 0, 0).slice(0, 10),
          type: 'sell',
          amount: yen(quantity * Number(price(p))),
          currency: 'JPY',
          description: `${s.name} 売却`,
          security: { isin: s.isin, localCode: s.code, name: s.name },
          quantity: String(quantity),
          price: price(p),
          taxCategory: tax,
        });
        return;
      }
      const marketPrice = price(s.price * (0.95 + rnd() * 0.1));
      positions.push({
        isin: s.isin,
        localCode: s.code,
        name: s.name,
        assetClass: s.assetClass,
        taxCategory: tax,
        ...(tax === 'nisa' ? { nisaFrame: s.assetClass === 'etf' ? 'tsumitate' : 'growth' } : {}),
        quantity: String(quantity),
        averageCost: (cost / quantity).toFixed(2),
        marketPrice,
        currency: 'JPY',
        priceAsOf: asOf,
      } as HoldingSnapshotInput['positions'][number]);
      // Interim and year-end dividends; tax withheld outside NISA (20.315%).
      for (const days of [180, 360]) {
        const gross = Math.round((quantity * s.dividend) / 2);
        events.push({
          bookedAt: jstAt(anchor, days - i, 9, 30),
          type: 'dividend',
          amount: yen(gross),
          currency: 'JPY',
          description: `${s.name} 配当金`,
          security: { isin: s.isin, localCode: s.code, name: s.name },
          taxCategory: tax,
        });
        if (tax !== 'nisa')
          events.push({
            bookedAt: jstAt(anchor, days - i, 9, 31),
            type: 'tax',
            amount: yen(Math.floor(gross * 0.20315)),
            currency: 'JPY',
            description: `${s.name} 配当金 源泉徴収税`,
          });
      }
    });
    if (tax !== 'nisa')
      events.push({
        bookedAt: jstAt(anchor, 200, 0, 0),
        type: 'fee',
        amount: '330',
        currency: 'JPY',
        description: pick(['郵送料', '残高証明書発行手数料']),
      });
    events.push({
      bookedAt: jstAt(anchor, 30, 0, 0),
      type: 'interest',
      amount: String(1 + Math.floor(rnd() * 20)),
      currency: 'JPY',
      description: 'MRF 再投資',
    });

    events.sort((a, b) => Date.parse(a.bookedAt) - Date.parse(b.bookedAt));
    events.forEach((e, n) => {
      transactions.push({
        accountId: account.id,
        externalId: `demo-${String(n + 1).padStart(4, '0')}`,
        ...e,
      });
    });
    const cash = 50_000 + Math.floor(rnd() * 40) * 10_000;
    balances.push({
      accountId: account.id,
      currency: 'JPY',
      cash: yen(cash),
      buyingPower: yen(cash),
      withdrawable: yen(cash),
      asOf,
    });
    holdings.push({ accountId: account.id, asOf, positions });
  }
  return { balances, holdings, transactions };
}

/**
 * Pushes the demo ledger for `accountIds` (accounts of `institutionId`) through ingestBatch. Run it in
 * the demo seeding transaction or on its own; a second run the same day replays, a later day refreshes.
 */
export async function ingestDemoLedger(
  db: Db | Queryable,
  institutionId: string,
  accountIds: string[],
): Promise<IngestOutcome> {
  const res = await db.query<{ id: string; tax_category: 'specific' | 'general' | 'nisa' | null }>(
    'SELECT id, tax_category FROM accounts WHERE id = ANY($1::text[]) ORDER BY opened_on, id',
    [accountIds],
  );
  const now = new Date();
  const batch = demoBatch(
    res.rows.map((r) => ({ id: r.id, taxCategory: r.tax_category })),
    now,
  );
  const which = createHash('sha256')
    .update([...accountIds].sort().join(','))
    .digest('hex')
    .slice(0, 16);
  return ingestBatch(db, institutionId, batch, `demo-ledger-${jstToday(now)}-${which}`);
}
