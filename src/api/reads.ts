/**
 * The read statements of the resource server. Each read is ONE statement: it records the DPoP
 * proof's jti (replay check), checks the consent, counts an unattended call against the daily limit
 * (atomically, shared by every node) and reads the page — so a read costs one round trip (the
 * access token's payload is cached in memory; its liveness is checked here). A header part (h) says what the checks found; the page rows follow,
 * left-joined onto it so that the header arrives even when the page is empty.
 *
 * Prelude parameters: $1 grant_id, $2 client_id, $3 customer_id, $4 jti hash (NULL for a
 * certificate-bound token, which has no proof to record), $5 jti expiry,
 * $6 count as unattended (boolean), $7 default unattended limit, $8 account id or NULL for all
 * consented accounts, $9 the access token's id (checked still stored, unexpired, its Grant alive:
 * nothing is recorded or counted for a token that is not).
 *
 * The consent's "last used" time (the customer's dashboard) is set by the same statement, at most
 * once a minute per consent: other reads in that minute only test the timestamp, and take no lock.
 *
 * The consent's own data types and transaction lookback come from its columns `data_types text[]`
 * and `lookback_days integer` (migration 0010); NULL means the consent covers balances, holdings
 * and transactions (identifiers masked) and the configured default lookback applies.
 */

/** ISO 8601 UTC with microseconds: exact for keyset keys (a JS Date would round to ms). */
const iso = (col: string) => `to_char(${col} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')`;

const PRELUDE = `WITH live AS (
  SELECT 1 FROM oidc_payloads p
  WHERE p.model = 'AccessToken' AND p.id = $9 AND (p.expires_at IS NULL OR p.expires_at > now())
    AND EXISTS (SELECT 1 FROM oidc_payloads g WHERE g.model = 'Grant' AND g.id = $1)),
c AS (
  SELECT c.customer_id, c.account_ids, c.data_types, c.lookback_days FROM consents c
  WHERE c.grant_id = $1 AND c.client_id = $2 AND c.customer_id = $3 AND c.revoked_at IS NULL AND c.expires_at > now()
    AND EXISTS (SELECT 1 FROM live)),
seen AS (
  INSERT INTO dpop_seen (jti_hash, expires_at) SELECT $4::text, $5::timestamptz
  WHERE $4::text IS NOT NULL AND EXISTS (SELECT 1 FROM live)
  ON CONFLICT (jti_hash) DO NOTHING RETURNING 1),
touch AS (
  UPDATE consents SET last_used_at = now()
  WHERE grant_id = $1 AND EXISTS (SELECT 1 FROM c) AND (EXISTS (SELECT 1 FROM seen) OR $4::text IS NULL)
    AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')
  RETURNING 1),
lim AS (
  SELECT coalesce((SELECT CASE WHEN jsonb_typeof(metadata -> 'unattended_calls_per_day') = 'number'
      THEN least(greatest(floor((metadata ->> 'unattended_calls_per_day')::numeric), 0), 1000000)::int END
    FROM clients WHERE client_id = $2), $7::int) AS calls),
usage AS (
  INSERT INTO api_unattended_calls AS u (grant_id, day, calls)
  SELECT $1, (now() AT TIME ZONE 'Asia/Tokyo')::date, 1 FROM c, lim
  WHERE $6::boolean AND lim.calls > 0 AND ($4::text IS NULL OR EXISTS (SELECT 1 FROM seen))
  ON CONFLICT (grant_id, day) DO UPDATE SET calls = u.calls + 1 WHERE u.calls < (SELECT calls FROM lim)
  RETURNING calls),
accts AS (
  SELECT a.* FROM c JOIN accounts a ON a.id = ANY (c.account_ids) AND a.customer_id = c.customer_id
  WHERE $8::text IS NULL OR a.id = $8),
h AS (
  SELECT (SELECT count(*) FROM live)::int AS token_live,
         (SELECT count(*) FROM clients WHERE client_id = $2 AND enabled)::int AS client_enabled,
         (CASE WHEN $4::text IS NULL THEN 1 ELSE (SELECT count(*) FROM seen) END)::int AS fresh, (SELECT count(*) FROM c)::int AS active,
         (SELECT count(*) FROM usage)::int AS counted, (SELECT count(*) FROM accts)::int AS accounts,
         (SELECT count(*) FROM customer_channels WHERE customer_id = $3 AND channel = 'aggregator_access'
            AND disabled AND (enable_at IS NULL OR enable_at > now()))::int AS channel_disabled,
         (SELECT data_types FROM c) AS data_types)`;

export interface Head {
  /**
   * 1 while the access token is stored, unexpired and its Grant exists: the API may hold a token's
   * (immutable) payload in memory, and this is what makes a revocation count at the next call anyway.
   */
  token_live: number;
  /** 1 while the client is enabled (an operator's disabling takes effect with the next call). */
  client_enabled: number;
  /** 1 when the DPoP proof's jti was new (always 1 without a proof: certificate-bound tokens). */
  fresh: number;
  /** 1 when the consent is active. */
  active: number;
  /** 1 when this call was counted as unattended (0 = over the limit, or not unattended). */
  counted: number;
  /** Consented accounts matching the account filter. */
  accounts: number;
  /** 1 when the customer has switched third-party access off (src/linking/channels.ts). */
  channel_disabled: number;
  /** The consent's data types, when the consent has them. */
  data_types: string[] | null;
}

export interface AccountRow {
  id: string;
  kind: string;
  tax_category: string | null;
  branch_code: string;
  account_number: string;
  nickname: string;
  currency: string;
  status: string;
  opened_on: string;
  institution_id: string;
  name_ja: string;
  name_en: string;
}

export const ACCOUNTS_SQL = `${PRELUDE}
SELECT h.*, x.* FROM h LEFT JOIN (
  SELECT a.id, a.kind, a.tax_category, a.branch_code, a.account_number, a.nickname, a.currency, a.status,
         to_char(a.opened_on, 'YYYY-MM-DD') AS opened_on, a.institution_id, i.name_ja, i.name_en
  FROM accts a JOIN institutions i ON i.id = a.institution_id) x ON true
ORDER BY x.opened_on, x.id`;

export interface BalanceRow {
  account_id: string;
  currency: string;
  cash: string;
  buying_power: string;
  withdrawable: string;
  as_of: string;
}

export const BALANCES_SQL = `${PRELUDE}
SELECT h.*, x.* FROM h LEFT JOIN (
  SELECT b.account_id, b.currency, b.cash::text AS cash, b.buying_power::text AS buying_power,
         b.withdrawable::text AS withdrawable, ${iso('b.as_of')} AS as_of
  FROM accts a JOIN ledger_balances b ON b.account_id = a.id) x ON true
ORDER BY x.account_id, x.currency`;

export interface HoldingRow {
  account_id: string;
  position_key: string;
  id: string;
  isin: string | null;
  local_code: string | null;
  name: string;
  asset_class: string;
  tax_category: string;
  nisa_frame: string | null;
  quantity: string;
  average_cost: string | null;
  market_price: string;
  market_value: string;
  unrealised_pl: string | null;
  currency: string;
  price_as_of: string | null;
  as_of: string;
  total: number;
}

/** Keyset over (account_id, position_key): $10, $11 the boundary key, $12 the row limit. */
const holdingsSql = (dir: 'next' | 'prev') => `${PRELUDE}
SELECT h.*, (SELECT count(*) FROM accts a2 JOIN ledger_holdings p2 ON p2.account_id = a2.id)::int AS total, x.*
FROM h LEFT JOIN (
  SELECT p.account_id, p.position_key, p.id, p.isin, p.local_code, p.name, p.asset_class, p.tax_category,
         p.nisa_frame, p.quantity::text AS quantity, p.average_cost::text AS average_cost,
         p.market_price::text AS market_price, p.market_value::text AS market_value,
         p.unrealised_pl::text AS unrealised_pl, p.currency, ${iso('p.price_as_of')} AS price_as_of,
         ${iso('s.as_of')} AS as_of
  FROM accts a JOIN ledger_holding_snapshots s ON s.account_id = a.id JOIN ledger_holdings p ON p.account_id = a.id
  WHERE (p.account_id, p.position_key) ${dir === 'next' ? '>' : '<'} ($10::text, $11::text)
  ORDER BY p.account_id ${dir === 'next' ? 'ASC' : 'DESC'}, p.position_key ${dir === 'next' ? 'ASC' : 'DESC'}
  LIMIT $12) x ON true
ORDER BY x.account_id ${dir === 'next' ? 'ASC' : 'DESC'}, x.position_key ${dir === 'next' ? 'ASC' : 'DESC'}`;

export const HOLDINGS_SQL = { next: holdingsSql('next'), prev: holdingsSql('prev') };

export interface TransactionRow {
  id: string;
  account_id: string;
  booked: string;
  value_date: string | null;
  type: string;
  credit_debit: string;
  amount: string;
  currency: string;
  description: string;
  isin: string | null;
  local_code: string | null;
  security_name: string | null;
  quantity: string | null;
  price: string | null;
  tax_category: string | null;
  lookback_from: string;
}

/**
 * Transactions newest first, keyset (booked_at, id). $10 the default lookback in days, $11 from, $12
 * to (inclusive bounds), $13, $14 the boundary key (('infinity', '') for a first page), $15 the row
 * limit. Per account an index range scan of at most $15 rows (LATERAL), then the accounts' pages are
 * merged: the cost of a page does not grow with its depth.
 *
 * Each scan has exactly ONE bound where it starts: given two (say booked_at <= to and the cursor's
 * row comparison) Postgres cannot tell which is tighter and may start at the wrong one, walking the
 * index from there (measured: 20+ ms at depth). So a first page folds `to` into the row bound, a
 * cursor page needs no `to` (its key lies within the range), and a prev page checks the lower bound
 * after its scan.
 */
const transactionsSql = (dir: 'next' | 'prev') => {
  const order = dir === 'next' ? 'DESC' : 'ASC';
  const range =
    dir === 'next'
      ? `t.booked_at >= greatest($11::timestamptz, lb.lookback_from)
      AND (t.booked_at, t.id) < (CASE WHEN $14::text = '' THEN $12::timestamptz + interval '1 microsecond'
                                      ELSE $13::timestamptz END, $14::text)`
      : `(t.booked_at, t.id) > ($13::timestamptz, $14::text) AND t.booked_at <= $12::timestamptz`;
  return `${PRELUDE},
lb AS (
  SELECT now() - make_interval(days => coalesce((SELECT least(greatest(lookback_days, 0), 36500) FROM c), $10::int)) AS lookback_from)
SELECT h.*, ${iso('lb.lookback_from')} AS lookback_from, x.* FROM h CROSS JOIN lb LEFT JOIN (
  SELECT r.id, r.account_id, r.booked, r.value_date, r.type, r.credit_debit, r.amount, r.currency, r.description,
         r.isin, r.local_code, r.security_name, r.quantity, r.price, r.tax_category
  FROM accts a CROSS JOIN lb CROSS JOIN LATERAL (
    SELECT t.id, t.account_id, t.booked_at, ${iso('t.booked_at')} AS booked, to_char(t.value_date, 'YYYY-MM-DD') AS value_date,
           t.type, t.credit_debit, t.amount::text AS amount, t.currency, t.description, t.isin, t.local_code,
           t.security_name, t.quantity::text AS quantity, t.price::text AS price, t.tax_category
    FROM ledger_transactions t
    WHERE t.account_id = a.id AND ${range}
    ORDER BY t.booked_at ${order}, t.id ${order} LIMIT $15) r
  ${dir === 'prev' ? 'WHERE r.booked_at >= greatest($11::timestamptz, lb.lookback_from)' : ''}
  ORDER BY r.booked_at ${order}, r.id ${order} LIMIT $15) x ON true
-- booked is fixed-width ISO 8601 UTC: its text order is its time order.
ORDER BY x.booked COLLATE "C" ${order}, x.id ${order}`;
};

export const TRANSACTIONS_SQL = { next: transactionsSql('next'), prev: transactionsSql('prev') };

/** Counts of days before yesterday (Japan) are no longer needed by anyone. */
export const DELETE_OLD_USAGE_SQL = `DELETE FROM api_unattended_calls WHERE (grant_id, day) IN (
  SELECT grant_id, day FROM api_unattended_calls WHERE day < (now() AT TIME ZONE 'Asia/Tokyo')::date - 1 LIMIT $1)`;
