-- Institution data (src/ledger/): what member institutions push about their customers' accounts —
-- balances, holdings and transactions — and the record of every accepted ingestion batch. Amounts
-- are exact NUMERIC (never floating point); the API hands them out as decimal strings.
-- Also the resource server's count of unattended calls per consent and day (src/api/).

-- The latest balance per account and currency; an older snapshot never overwrites a newer one.
CREATE TABLE ledger_balances (
  account_id    text        NOT NULL REFERENCES accounts (id),
  currency      text        NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
  -- 預り金: may be negative (a margin debit).
  cash          numeric     NOT NULL,
  -- 買付余力
  buying_power  numeric     NOT NULL CHECK (buying_power >= 0),
  -- 出金可能額
  withdrawable  numeric     NOT NULL CHECK (withdrawable >= 0),
  as_of         timestamptz NOT NULL,
  updated_at    timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (account_id, currency)
);

-- Holdings arrive as a whole snapshot per account: the positions of the newest snapshot replace the
-- previous ones, and an account can be known to hold nothing.
CREATE TABLE ledger_holding_snapshots (
  account_id  text        PRIMARY KEY REFERENCES accounts (id),
  as_of       timestamptz NOT NULL,
  updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE ledger_holdings (
  account_id     text        NOT NULL REFERENCES ledger_holding_snapshots (account_id),
  -- The security and the tax wrapper it is held in (ISIN, else local code); the API's keyset order.
  position_key   text        NOT NULL,
  -- Stable across snapshots (derived from account and position_key).
  id             text        NOT NULL UNIQUE,
  isin           text,
  local_code     text,
  name           text        NOT NULL,
  asset_class    text        NOT NULL CHECK (asset_class IN ('equity', 'etf', 'reit', 'fund', 'bond', 'other')),
  -- 特定 / 一般 / NISA (with its 成長投資枠 or つみたて投資枠 frame when known).
  tax_category   text        NOT NULL CHECK (tax_category IN ('specific', 'general', 'nisa')),
  nisa_frame     text        CHECK (nisa_frame IN ('growth', 'tsumitate')),
  quantity       numeric     NOT NULL CHECK (quantity > 0),
  -- Per unit; null when the institution does not know it (e.g. shares transferred in).
  average_cost   numeric     CHECK (average_cost >= 0),
  market_price   numeric     NOT NULL CHECK (market_price >= 0),
  market_value   numeric     NOT NULL,
  unrealised_pl  numeric,
  currency       text        NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
  price_as_of    timestamptz,
  PRIMARY KEY (account_id, position_key),
  CHECK (isin IS NOT NULL OR local_code IS NOT NULL)
);

CREATE TABLE ledger_transactions (
  -- The hub's stable id (what the API shows); external_id is the institution's.
  id             text        PRIMARY KEY,
  account_id     text        NOT NULL REFERENCES accounts (id),
  external_id    text        NOT NULL,
  booked_at      timestamptz NOT NULL,
  value_date     date,
  type           text        NOT NULL CHECK (type IN ('buy', 'sell', 'dividend', 'deposit', 'withdrawal', 'fee', 'tax', 'interest')),
  credit_debit   text        NOT NULL CHECK (credit_debit IN ('credit', 'debit')),
  amount         numeric     NOT NULL CHECK (amount >= 0),
  currency       text        NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
  description    text        NOT NULL,
  isin           text,
  local_code     text,
  security_name  text,
  quantity       numeric,
  price          numeric,
  tax_category   text        CHECK (tax_category IN ('specific', 'general', 'nisa')),
  created_at     timestamptz NOT NULL DEFAULT now(),
  updated_at     timestamptz NOT NULL DEFAULT now(),
  UNIQUE (account_id, external_id)
);
-- Keyset pagination: (booked_at, id) within an account, in either direction.
CREATE INDEX ledger_transactions_page ON ledger_transactions (account_id, booked_at, id);

-- Every accepted batch under its Idempotency-Key: a repeat with the same body gets the stored
-- result, a repeat with another body is refused. Rejected batches leave nothing here.
CREATE TABLE ledger_ingestions (
  institution_id   text        NOT NULL REFERENCES institutions (id),
  idempotency_key  text        NOT NULL,
  -- SHA-256 (hex) of the canonical JSON of the batch.
  request_hash     text        NOT NULL,
  batch_id         text        NOT NULL UNIQUE,
  result           jsonb       NOT NULL,
  created_at       timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (institution_id, idempotency_key)
);

-- Unattended API calls (no x-fapi-customer-ip-address) per consent and Japanese calendar day,
-- counted by one atomic upsert so that every node shares the limit.
CREATE TABLE api_unattended_calls (
  grant_id  text     NOT NULL,
  day       date     NOT NULL,
  calls     integer  NOT NULL,
  PRIMARY KEY (grant_id, day)
);
CREATE INDEX api_unattended_calls_day ON api_unattended_calls (day);
