/**
 * The shape of an ingestion batch, validated with zod. The same schemas produce the JSON Schema of
 * the ingestion API in the OpenAPI document, so the document cannot drift from what is enforced.
 */
import { z } from 'zod';

/** Limits per batch: large enough for a day's trades of a big account, small enough for one transaction. */
export const BATCH_LIMITS = {
  balances: 1000,
  holdings: 1000,
  positionsPerSnapshot: 5000,
  transactions: 5000,
} as const;

/** A decimal number as a string: never a JSON number, which would go through binary floating point. */
const decimal = z
  .string()
  .regex(
    /^-?(0|[1-9]\d{0,17})(\.\d{1,8})?$/,
    'must be a decimal string such as "1234.5" (at most 8 decimals)',
  );
const nonNegative = decimal.regex(/^[^-]/, 'must not be negative');
const positive = nonNegative.refine((s) => /[1-9]/.test(s), 'must be greater than zero');

const currency = z.string().regex(/^[A-Z]{3}$/, 'must be an ISO 4217 code such as JPY');

/** Years 1900–2100 and offsets within ±14:00 (real ones; Postgres refuses beyond ±15:59). */
export function plausibleDateTime(s: string): boolean {
  const year = Number(s.slice(0, 4));
  const offset = /([+-])(\d{2}):\d{2}$/.exec(s);
  return year >= 1900 && year <= 2100 && (!offset || Number(offset[2]) <= 14);
}

/** RFC 3339 date-time with an offset, plausible (anything else is a typo, not a booking). */
const timestamp = z.iso.datetime({ offset: true }).refine(plausibleDateTime, 'year or offset out of range');
const date = z.iso.date().refine((s) => {
  const year = Number(s.slice(0, 4));
  return year >= 1900 && year <= 2100;
}, 'year out of range');

/** ISO 6166 with its check digit (letters count as two digits, then Luhn). */
export function isValidIsin(isin: string): boolean {
  if (!/^[A-Z]{2}[A-Z0-9]{9}\d$/.test(isin)) return false;
  const digits = [...isin].map((c) => (c >= 'A' ? String(c.charCodeAt(0) - 55) : c)).join('');
  let sum = 0;
  for (let i = 0; i < digits.length; i++) {
    let d = Number(digits[digits.length - 1 - i]);
    if (i % 2 === 1) {
      d *= 2;
      if (d > 9) d -= 9;
    }
    sum += d;
  }
  return sum % 10 === 0;
}

const isin = z
  .string()
  .regex(/^[A-Z]{2}[A-Z0-9]{9}\d$/, 'must be a 12-character ISIN')
  .refine(isValidIsin, 'ISIN check digit is wrong');
/** 証券コード: 4 characters (e.g. 7203, 130A) or a fund code (e.g. 0331418A). */
const localCode = z.string().regex(/^[0-9A-Z]{4,12}$/, 'must be 4–12 digits or capital letters');
// No control characters: Postgres text cannot hold NUL, and ids are shown to operators.
const accountId = z
  .string()
  .min(1)
  .max(64)
  .regex(/^[^\p{Cc}]+$/u, 'must not contain control characters');
const text = (max: number) =>
  z
    .string()
    .min(1)
    .max(max)
    .refine(
      (s) => ![...s].some((c) => c.charCodeAt(0) < 0x20 || c.charCodeAt(0) === 0x7f),
      'must not contain control characters',
    );

export const TAX_CATEGORIES = ['specific', 'general', 'nisa'] as const;
export const NISA_FRAMES = ['growth', 'tsumitate'] as const;
export const ASSET_CLASSES = ['equity', 'etf', 'reit', 'fund', 'bond', 'other'] as const;
export const TRANSACTION_TYPES = [
  'buy',
  'sell',
  'dividend',
  'deposit',
  'withdrawal',
  'fee',
  'tax',
  'interest',
] as const;
export type TransactionType = (typeof TRANSACTION_TYPES)[number];
/** The direction a transaction type moves cash when the institution does not say otherwise. */
export const DEFAULT_CREDIT_DEBIT: Record<TransactionType, 'credit' | 'debit'> = {
  buy: 'debit',
  sell: 'credit',
  dividend: 'credit',
  deposit: 'credit',
  withdrawal: 'debit',
  fee: 'debit',
  tax: 'debit',
  interest: 'credit',
};

export const balanceSchema = z
  .strictObject({
    accountId,
    currency,
    cash: decimal.describe('預り金 (may be negative: a margin debit)'),
    buyingPower: nonNegative.describe('買付余力'),
    withdrawable: nonNegative.describe('出金可能額'),
    asOf: timestamp,
  })
  .describe('The balance of one account in one currency at asOf.');

export const positionSchema = z
  .strictObject({
    isin: isin.optional(),
    localCode: localCode.optional(),
    name: text(200),
    assetClass: z.enum(ASSET_CLASSES),
    taxCategory: z.enum(TAX_CATEGORIES),
    nisaFrame: z.enum(NISA_FRAMES).optional(),
    quantity: positive,
    averageCost: nonNegative.optional().describe('Per unit; omit when unknown'),
    marketPrice: nonNegative,
    marketValue: decimal.optional().describe('Default: quantity × marketPrice'),
    unrealisedPl: decimal.optional().describe('Default: marketValue − quantity × averageCost'),
    currency,
    priceAsOf: timestamp.optional(),
  })
  .refine((p) => p.isin !== undefined || p.localCode !== undefined, {
    message: 'isin or localCode is required',
    path: ['isin'],
  })
  .refine((p) => p.nisaFrame === undefined || p.taxCategory === 'nisa', {
    message: 'nisaFrame is only for taxCategory nisa',
    path: ['nisaFrame'],
  });

export const holdingSnapshotSchema = z
  .strictObject({
    accountId,
    asOf: timestamp,
    positions: z.array(positionSchema).max(BATCH_LIMITS.positionsPerSnapshot),
  })
  .describe("Every position of one account at asOf: replaces the account's previous snapshot.");

const security = z.strictObject({
  isin: isin.optional(),
  localCode: localCode.optional(),
  name: text(200),
});

export const transactionSchema = z
  .strictObject({
    accountId,
    externalId: text(128).describe("The institution's stable id: a repeat updates the transaction"),
    bookedAt: timestamp,
    valueDate: date.optional().describe('受渡日 / settlement date'),
    type: z.enum(TRANSACTION_TYPES),
    creditDebitIndicator: z.enum(['credit', 'debit']).optional().describe('Default from type'),
    amount: nonNegative,
    currency,
    description: text(500),
    security: security.optional(),
    quantity: positive.optional(),
    price: nonNegative.optional(),
    taxCategory: z.enum(TAX_CATEGORIES).optional(),
  })
  .superRefine((t, ctx) => {
    const trade = t.type === 'buy' || t.type === 'sell';
    if ((trade || t.type === 'dividend') && !t.security)
      ctx.addIssue({ code: 'custom', path: ['security'], message: `a ${t.type} needs the security` });
    if (t.security && t.security.isin === undefined && t.security.localCode === undefined)
      ctx.addIssue({ code: 'custom', path: ['security', 'isin'], message: 'isin or localCode is required' });
    if (trade && (t.quantity === undefined || t.price === undefined))
      ctx.addIssue({ code: 'custom', path: ['quantity'], message: 'a trade needs quantity and price' });
    if (!trade && (t.quantity !== undefined || t.price !== undefined) && t.type !== 'dividend')
      ctx.addIssue({ code: 'custom', path: ['quantity'], message: `a ${t.type} has no quantity or price` });
  });

export const batchSchema = z
  .strictObject({
    balances: z.array(balanceSchema).max(BATCH_LIMITS.balances).optional(),
    holdings: z.array(holdingSnapshotSchema).max(BATCH_LIMITS.holdings).optional(),
    transactions: z.array(transactionSchema).max(BATCH_LIMITS.transactions).optional(),
  })
  .refine(
    (b) => (b.balances?.length ?? 0) + (b.holdings?.length ?? 0) + (b.transactions?.length ?? 0) > 0,
    'a batch needs at least one record',
  )
  .describe('One all-or-nothing ingestion batch.');

export type BalanceInput = z.output<typeof balanceSchema>;
export type PositionInput = z.output<typeof positionSchema>;
export type HoldingSnapshotInput = z.output<typeof holdingSnapshotSchema>;
export type TransactionInput = z.output<typeof transactionSchema>;
export type IngestBatch = z.input<typeof batchSchema>;
export type ParsedBatch = z.output<typeof batchSchema>;

/** JSON Schema (2020-12) of a batch as the ingestion API accepts it. */
export function batchJsonSchema(): Record<string, unknown> {
  const { $schema: _, ...schema } = z.toJSONSchema(batchSchema, { target: 'draft-2020-12', io: 'input' });
  return schema;
}
