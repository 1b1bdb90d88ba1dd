-- What a consent covers beyond its accounts (issue 5: RFC 9396 authorization_details), and when the
-- client last read with it (the customer's dashboard). data_types NULL = the defaults of the
-- `accounts` scope (balances, holdings, transactions); lookback_days NULL = api.transactionLookbackDays.
ALTER TABLE consents ADD COLUMN IF NOT EXISTS data_types text[];
ALTER TABLE consents ADD COLUMN IF NOT EXISTS lookback_days integer;
-- Updated by the read statements at most once a minute per consent (src/api/reads.ts).
ALTER TABLE consents ADD COLUMN IF NOT EXISTS last_used_at timestamptz;
-- The grant management endpoint and the dashboard look consents up by client as well.
CREATE INDEX IF NOT EXISTS consents_client ON consents (client_id);
