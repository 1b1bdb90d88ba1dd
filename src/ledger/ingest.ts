/**
 * Ingestion of institution data: one batch of balances, holding snapshots and transactions, all or
 * nothing, idempotent under the institution's Idempotency-Key.
 */
import { createHash, randomBytes } from 'node:crypto';
import type { z } from 'zod';
import { recordAudit } from '../audit/index.ts';
import type { Db, Queryable } from '../db/index.ts';
import {
  type BalanceInput,
  batchSchema,
  DEFAULT_CREDIT_DEBIT,
  type HoldingSnapshotInput,
  type ParsedBatch,
  type PositionInput,
  type TransactionInput,
} from './schema.ts';

export type IngestErrorCode =
  | 'ERR_INGEST_INVALID'
  | 'ERR_INGEST_IDEMPOTENCY_CONFLICT'
  | 'ERR_INGEST_IDEMPOTENCY_KEY'
  | 'ERR_INGEST_INSTITUTION';

/** One refused record (or the batch itself when `section` is absent) and why. */
export interface IngestIssue {
  /** Where, e.g. `transactions[12].amount` (empty for the batch as a whole). */
  path: string;
  section?: 'balances' | 'holdings' | 'transactions';
  /** Index of the record within its section. */
  index?: number;
  reason: string;
}

export class IngestError extends Error {
  override name = 'IngestError';
  readonly code: IngestErrorCode;
  /** For ERR_INGEST_INVALID: every problem found, by record (at most MAX_ISSUES). */
  readonly issues: IngestIssue[];
  constructor(code: IngestErrorCode, message: string, issues: IngestIssue[] = []) {
    super(message);
    this.code = code;
    this.issues = issues;
  }
}

export interface IngestResult {
  batchId: string;
  institutionId: string;
  idempotencyKey: string;
  acceptedAt: string;
  /** applied + stale = received; a stale snapshot is older than what is stored and was skipped. */
  balances: { received: number; applied: number; stale: number };
  holdings: { received: number; applied: number; stale: number; positions: number };
  transactions: { received: number; inserted: number; updated: number };
}

export interface IngestOutcome {
  result: IngestResult;
  /** True when the key had been used with the same batch: nothing was written this time. */
  replayed: boolean;
}

const MAX_ISSUES = 1000;
const IDEMPOTENCY_KEY = /^[\x21-\x7e]{1,255}$/;
const SECTIONS = ['balances', 'holdings', 'transactions'] as const;

/** JSON with object keys sorted at every level: equal batches hash equally whatever the key order. */
/** Nesting deeper than any valid batch; deeper input is refused instead of exhausting the stack. */
const MAX_DEPTH = 32;

export function canonicalJson(value: unknown, depth = 0): string {
  if (depth > MAX_DEPTH)
    throw new IngestError('ERR_INGEST_INVALID', 'the batch is nested too deeply', [
      { path: '', reason: `nesting deeper than ${MAX_DEPTH} levels` },
    ]);
  if (Array.isArray(value)) return `[${value.map((v) => canonicalJson(v ?? null, depth + 1)).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v, depth + 1)}`).join(',')}}`;
  }
  return JSON.stringify(value) ?? 'null';
}

function issueAt(path: readonly PropertyKey[], reason: string): IngestIssue {
  let text = '';
  for (const p of path) text += typeof p === 'number' ? `[${p}]` : text ? `.${String(p)}` : String(p);
  const section = SECTIONS.find((s) => s === path[0]);
  const index = typeof path[1] === 'number' ? path[1] : undefined;
  return { path: text, ...(section ? { section } : {}), ...(index !== undefined ? { index } : {}), reason };
}

function zodIssues(error: z.ZodError): IngestIssue[] {
  return error.issues.map((i) => issueAt(i.path, i.message));
}

/** "the isin + tax wrapper" a position is keyed by within its account. */
function positionKey(p: PositionInput): string {
  const security = p.isin ?? `local:${p.localCode}`;
  return `${security}/${p.taxCategory}${p.nisaFrame ? `/${p.nisaFrame}` : ''}`;
}

const holdingId = (accountId: string, key: string) =>
  `hld_${createHash('sha256').update(`${accountId}\0${key}`).digest('base64url').slice(0, 22)}`;

/** Problems only visible across records: the same thing twice in one batch. */
function duplicateIssues(batch: ParsedBatch): IngestIssue[] {
  const issues: IngestIssue[] = [];
  const seen = new Map<string, number>();
  const once = (key: string, path: (string | number)[], what: string) => {
    const first = seen.get(key);
    if (first === undefined) seen.set(key, path[1] as number);
    else issues.push(issueAt(path, `${what} already at index ${first}`));
  };
  batch.balances?.forEach((b, i) => {
    once(`b\0${b.accountId}\0${b.currency}`, ['balances', i], 'the same account and currency is');
  });
  batch.holdings?.forEach((h, i) => {
    once(`h\0${h.accountId}`, ['holdings', i], 'a snapshot of the same account is');
    const keys = new Set<string>();
    h.positions.forEach((p, j) => {
      const key = positionKey(p);
      if (keys.has(key))
        issues.push(issueAt(['holdings', i, 'positions', j], 'the same security and tax category twice'));
      keys.add(key);
    });
  });
  batch.transactions?.forEach((t, i) => {
    once(`t\0${t.accountId}\0${t.externalId}`, ['transactions', i], 'the same account and externalId is');
  });
  return issues;
}

/** Every record naming an account that is not this institution's. */
async function accountIssues(
  tx: Queryable,
  institutionId: string,
  batch: ParsedBatch,
): Promise<IngestIssue[]> {
  const named = new Set<string>();
  for (const s of SECTIONS) for (const r of batch[s] ?? []) named.add(r.accountId);
  const res = await tx.query<{ id: string }>(
    'SELECT id FROM accounts WHERE id = ANY($1::text[]) AND institution_id = $2',
    [[...named], institutionId],
  );
  const known = new Set(res.rows.map((r) => r.id));
  const issues: IngestIssue[] = [];
  for (const s of SECTIONS)
    (batch[s] ?? []).forEach((r, i) => {
      if (!known.has(r.accountId))
        issues.push(issueAt([s, i, 'accountId'], 'no such account at this institution'));
    });
  return issues;
}

async function writeBalances(tx: Queryable, balances: BalanceInput[]): Promise<number> {
  if (!balances.length) return 0;
  const col = <K extends keyof BalanceInput>(k: K) => balances.map((b) => b[k]);
  const res = await tx.query(
    `INSERT INTO ledger_balances AS b (account_id, currency, cash, buying_power, withdrawable, as_of)
     SELECT * FROM unnest($1::text[], $2::text[], $3::numeric[], $4::numeric[], $5::numeric[], $6::timestamptz[])
     ON CONFLICT (account_id, currency) DO UPDATE SET cash = EXCLUDED.cash, buying_power = EXCLUDED.buying_power,
       withdrawable = EXCLUDED.withdrawable, as_of = EXCLUDED.as_of, updated_at = now()
       WHERE b.as_of <= EXCLUDED.as_of
     RETURNING 1`,
    [col('accountId'), col('currency'), col('cash'), col('buyingPower'), col('withdrawable'), col('asOf')],
  );
  return res.rowCount;
}

async function writeHoldings(
  tx: Queryable,
  snapshots: HoldingSnapshotInput[],
): Promise<{ applied: number; positions: number }> {
  if (!snapshots.length) return { applied: 0, positions: 0 };
  const accepted = await tx.query<{ account_id: string }>(
    `INSERT INTO ledger_holding_snapshots AS s (account_id, as_of)
     SELECT * FROM unnest($1::text[], $2::timestamptz[])
     ON CONFLICT (account_id) DO UPDATE SET as_of = EXCLUDED.as_of, updated_at = now()
       WHERE s.as_of <= EXCLUDED.as_of
     RETURNING account_id`,
    [snapshots.map((s) => s.accountId), snapshots.map((s) => s.asOf)],
  );
  const fresh = new Set(accepted.rows.map((r) => r.account_id));
  if (!fresh.size) return { applied: 0, positions: 0 };
  await tx.query('DELETE FROM ledger_holdings WHERE account_id = ANY($1::text[])', [[...fresh]]);
  const rows = snapshots
    .filter((s) => fresh.has(s.accountId))
    .flatMap((s) => s.positions.map((p) => ({ accountId: s.accountId, key: positionKey(p), p })));
  if (rows.length) {
    const col = <K extends keyof PositionInput>(k: K) => rows.map((r) => r.p[k] ?? null);
    await tx.query(
      `INSERT INTO ledger_holdings (account_id, position_key, id, isin, local_code, name, asset_class, tax_category,
         nisa_frame, quantity, average_cost, market_price, market_value, unrealised_pl, currency, price_as_of)
       SELECT account_id, position_key, id, isin, local_code, name, asset_class, tax_category, nisa_frame,
              quantity, average_cost, market_price, coalesce(mv, quantity * market_price),
              coalesce(pl, coalesce(mv, quantity * market_price) - quantity * average_cost), currency, price_as_of
       FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
                   $9::text[], $10::numeric[], $11::numeric[], $12::numeric[], $13::numeric[], $14::numeric[],
                   $15::text[], $16::timestamptz[])
         AS x (account_id, position_key, id, isin, local_code, name, asset_class, tax_category, nisa_frame,
               quantity, average_cost, market_price, mv, pl, currency, price_as_of)`,
      [
        rows.map((r) => r.accountId),
        rows.map((r) => r.key),
        rows.map((r) => holdingId(r.accountId, r.key)),
        col('isin'),
        col('localCode'),
        col('name'),
        col('assetClass'),
        col('taxCategory'),
        col('nisaFrame'),
        col('quantity'),
        col('averageCost'),
        col('marketPrice'),
        col('marketValue'),
        col('unrealisedPl'),
        col('currency'),
        col('priceAsOf'),
      ],
    );
  }
  return { applied: fresh.size, positions: rows.length };
}

async function writeTransactions(
  tx: Queryable,
  transactions: TransactionInput[],
): Promise<{ inserted: number; updated: number }> {
  if (!transactions.length) return { inserted: 0, updated: 0 };
  const col = <K extends keyof TransactionInput>(k: K) => transactions.map((t) => t[k] ?? null);
  const res = await tx.query<{ inserted: boolean }>(
    `INSERT INTO ledger_transactions AS t (id, account_id, external_id, booked_at, value_date, type, credit_debit,
       amount, currency, description, isin, local_code, security_name, quantity, price, tax_category)
     SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::date[], $6::text[], $7::text[],
                          $8::numeric[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[],
                          $14::numeric[], $15::numeric[], $16::text[])
     ON CONFLICT (account_id, external_id) DO UPDATE SET booked_at = EXCLUDED.booked_at,
       value_date = EXCLUDED.value_date, type = EXCLUDED.type, credit_debit = EXCLUDED.credit_debit,
       amount = EXCLUDED.amount, currency = EXCLUDED.currency, description = EXCLUDED.description,
       isin = EXCLUDED.isin, local_code = EXCLUDED.local_code, security_name = EXCLUDED.security_name,
       quantity = EXCLUDED.quantity, price = EXCLUDED.price, tax_category = EXCLUDED.tax_category, updated_at = now()
     RETURNING (xmax = 0) AS inserted`,
    [
      transactions.map(() => `txn_${randomBytes(12).toString('hex')}`),
      col('accountId'),
      col('externalId'),
      col('bookedAt'),
      col('valueDate'),
      col('type'),
      transactions.map((t) => t.creditDebitIndicator ?? DEFAULT_CREDIT_DEBIT[t.type]),
      col('amount'),
      col('currency'),
      col('description'),
      transactions.map((t) => t.security?.isin ?? null),
      transactions.map((t) => t.security?.localCode ?? null),
      transactions.map((t) => t.security?.name ?? null),
      col('quantity'),
      col('price'),
      col('taxCategory'),
    ],
  );
  const inserted = res.rows.filter((r) => r.inserted).length;
  return { inserted, updated: res.rows.length - inserted };
}

/** The stored outcome under a key, if any: a replay with the same body, or a conflict. */
function replayOrConflict(
  row: { request_hash: string; result: IngestResult } | undefined,
  hash: string,
): IngestOutcome | undefined {
  if (!row) return undefined;
  if (row.request_hash !== hash)
    throw new IngestError(
      'ERR_INGEST_IDEMPOTENCY_CONFLICT',
      'this Idempotency-Key was already used with a different batch',
    );
  return { result: row.result, replayed: true };
}

async function storedUnder(
  q: Queryable,
  institutionId: string,
  key: string,
): Promise<{ request_hash: string; result: IngestResult } | undefined> {
  const res = await q.query<{ request_hash: string; result: IngestResult }>(
    'SELECT request_hash, result FROM ledger_ingestions WHERE institution_id = $1 AND idempotency_key = $2',
    [institutionId, key],
  );
  return res.rows[0];
}

async function apply(
  tx: Queryable,
  institutionId: string,
  key: string,
  hash: string,
  batch: ParsedBatch,
): Promise<IngestOutcome> {
  // Before the key is claimed, so that a refused batch leaves no trace even inside a caller's transaction.
  const issues = await accountIssues(tx, institutionId, batch);
  if (issues.length)
    throw new IngestError(
      'ERR_INGEST_INVALID',
      'the batch was refused: nothing was stored',
      issues.slice(0, MAX_ISSUES),
    );
  const batchId = `ing_${randomBytes(12).toString('hex')}`;
  // Claims the key first: a concurrent batch under the same key waits here until this one ends,
  // then finds it stored (replay or conflict) or, if this one rolled back, claims it itself.
  const claimed = await tx.query(
    `INSERT INTO ledger_ingestions (institution_id, idempotency_key, request_hash, batch_id, result)
     VALUES ($1, $2, $3, $4, 'null') ON CONFLICT (institution_id, idempotency_key) DO NOTHING RETURNING 1`,
    [institutionId, key, hash, batchId],
  );
  if (claimed.rowCount !== 1) return replayOrConflict(await storedUnder(tx, institutionId, key), hash)!;

  const balances = batch.balances ?? [];
  const holdings = batch.holdings ?? [];
  const transactions = batch.transactions ?? [];
  const appliedBalances = await writeBalances(tx, balances);
  const appliedHoldings = await writeHoldings(tx, holdings);
  const written = await writeTransactions(tx, transactions);
  const accepted = await tx.query<{ now: Date }>('SELECT now() AS now');
  const result: IngestResult = {
    batchId,
    institutionId,
    idempotencyKey: key,
    acceptedAt: new Date(accepted.rows[0]!.now).toISOString(),
    balances: {
      received: balances.length,
      applied: appliedBalances,
      stale: balances.length - appliedBalances,
    },
    holdings: {
      received: holdings.length,
      applied: appliedHoldings.applied,
      stale: holdings.length - appliedHoldings.applied,
      positions: appliedHoldings.positions,
    },
    transactions: { received: transactions.length, ...written },
  };
  await tx.query(
    'UPDATE ledger_ingestions SET result = $3 WHERE institution_id = $1 AND idempotency_key = $2',
    [institutionId, key, JSON.stringify(result)],
  );
  await recordAudit(tx, {
    type: 'ledger.batch.accepted',
    outcome: 'success',
    actor: `institution:${institutionId}`,
    data: {
      batchId,
      balances: result.balances,
      holdings: result.holdings,
      transactions: result.transactions,
    },
  });
  return { result, replayed: false };
}

/**
 * Ingests one batch for `institutionId`, all or nothing:
 * - the same `idempotencyKey` with the same batch (by canonical JSON) returns the first result and
 *   writes nothing; with another batch it fails with ERR_INGEST_IDEMPOTENCY_CONFLICT;
 * - any invalid record (shape, values, an account that is not the institution's, a duplicate within
 *   the batch) fails the whole batch with ERR_INGEST_INVALID listing every problem by index, and
 *   nothing is stored — the key stays free, so the corrected batch can be sent under it.
 * `db` may be a Db (a transaction is opened) or a Queryable already inside a transaction.
 */
export async function ingestBatch(
  db: Db | Queryable,
  institutionId: string,
  batch: unknown,
  idempotencyKey: string,
): Promise<IngestOutcome> {
  if (!IDEMPOTENCY_KEY.test(idempotencyKey))
    throw new IngestError(
      'ERR_INGEST_IDEMPOTENCY_KEY',
      'the Idempotency-Key must be 1–255 printable ASCII characters',
    );
  const hash = createHash('sha256').update(canonicalJson(batch)).digest('hex');
  const known = await db.query<{ known: boolean; request_hash: string | null; result: IngestResult | null }>(
    `SELECT EXISTS (SELECT 1 FROM institutions WHERE id = $1) AS known, i.request_hash, i.result
     FROM (SELECT 1) AS one
     LEFT JOIN ledger_ingestions i ON i.institution_id = $1 AND i.idempotency_key = $2`,
    [institutionId, idempotencyKey],
  );
  const head = known.rows[0]!;
  if (!head.known) throw new IngestError('ERR_INGEST_INSTITUTION', 'no such institution');
  const stored =
    head.request_hash === null ? undefined : { request_hash: head.request_hash, result: head.result! };
  const replay = replayOrConflict(stored, hash);
  if (replay) return replay;

  try {
    const parsed = batchSchema.safeParse(batch);
    if (!parsed.success)
      throw new IngestError(
        'ERR_INGEST_INVALID',
        'the batch was refused: nothing was stored',
        zodIssues(parsed.error).slice(0, MAX_ISSUES),
      );
    const duplicates = duplicateIssues(parsed.data);
    if (duplicates.length)
      throw new IngestError(
        'ERR_INGEST_INVALID',
        'the batch was refused: nothing was stored',
        duplicates.slice(0, MAX_ISSUES),
      );
    const run = (tx: Queryable) => apply(tx, institutionId, idempotencyKey, hash, parsed.data);
    return 'transaction' in db ? await db.transaction(run) : await run(db);
  } catch (err) {
    if (err instanceof IngestError && err.code === 'ERR_INGEST_INVALID')
      await recordAudit(db, {
        type: 'ledger.batch.rejected',
        outcome: 'failure',
        actor: `institution:${institutionId}`,
        data: { issues: err.issues.length, first: err.issues.slice(0, 5) },
      });
    throw err;
  }
}
