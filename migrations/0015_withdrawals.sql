-- Withdrawals, withdrawal accounts, limits and operation-bound approvals (issue 6; src/linking).

-- A customer's limits. No row: the configured defaults (linking.defaultLimits). Lowering applies at
-- once; raising waits in limit_raises for its cool-off (withdrawal-strength policy, raise_limit).
CREATE TABLE customer_limits (
  customer_id       text        PRIMARY KEY REFERENCES customers (id),
  withdrawal_daily  bigint      NOT NULL CHECK (withdrawal_daily >= 0),
  sweep_daily       bigint      NOT NULL CHECK (sweep_daily >= 0),
  updated_at        timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE limit_raises (
  id            bigserial   PRIMARY KEY,
  customer_id   text        NOT NULL REFERENCES customers (id),
  limit_name    text        NOT NULL CHECK (limit_name IN ('withdrawal_daily', 'sweep_daily')),
  from_amount   bigint      NOT NULL,
  to_amount     bigint      NOT NULL CHECK (to_amount > from_amount),
  requested_at  timestamptz NOT NULL DEFAULT now(),
  effective_at  timestamptz NOT NULL,
  applied_at    timestamptz,
  cancelled_at  timestamptz
);
-- At most one raise of a limit waits at a time; a new request replaces it.
CREATE UNIQUE INDEX limit_raises_pending ON limit_raises (customer_id, limit_name)
  WHERE applied_at IS NULL AND cancelled_at IS NULL;

-- The bank account withdrawals are paid to. A new one is held for the cool-off before money goes to it.
CREATE TABLE withdrawal_accounts (
  id              text        PRIMARY KEY,
  customer_id     text        NOT NULL REFERENCES customers (id),
  bank_code       text        NOT NULL,
  bank_name       text,
  branch_code     text        NOT NULL,
  account_type    text        NOT NULL,
  account_number  text        NOT NULL,
  holder_name     text        NOT NULL,
  status          text        NOT NULL CHECK (status IN ('active', 'replaced')),
  registered_at   timestamptz NOT NULL DEFAULT now(),
  hold_until      timestamptz NOT NULL,
  replaced_at     timestamptz
);
CREATE UNIQUE INDEX withdrawal_accounts_active ON withdrawal_accounts (customer_id) WHERE status = 'active';

-- A passkey assertion whose WebAuthn challenge committed to exactly these details; spent by the one
-- decision it authorises.
CREATE TABLE operation_approvals (
  id             text        PRIMARY KEY,
  customer_id    text        NOT NULL REFERENCES customers (id),
  client_id      text        NOT NULL,
  kind           text        NOT NULL CHECK (kind IN ('withdrawal', 'withdrawal_account_change')),
  details        jsonb       NOT NULL,
  details_hash   text        NOT NULL,
  credential_id  text        NOT NULL,
  acr            text        NOT NULL,
  amr            text[]      NOT NULL,
  -- The assertion as evidence: anyone with the passkey's public key can check it commits to details_hash.
  evidence       jsonb       NOT NULL,
  -- The approving browser was first seen less than a day ago (or never).
  new_device     boolean     NOT NULL,
  interaction_id text        NOT NULL,
  approved_at    timestamptz NOT NULL DEFAULT now(),
  expires_at     timestamptz NOT NULL,
  grant_id       text,
  consumed_at    timestamptz,
  decision       text
);
CREATE INDEX operation_approvals_grant ON operation_approvals (grant_id) WHERE grant_id IS NOT NULL;
CREATE INDEX operation_approvals_customer ON operation_approvals (customer_id, approved_at);

-- Withdrawals allowed per customer and Japanese calendar day, against the daily limit.
CREATE TABLE withdrawal_usage (
  customer_id  text   NOT NULL REFERENCES customers (id),
  day          date   NOT NULL,
  amount       bigint NOT NULL,
  PRIMARY KEY (customer_id, day)
);

ALTER TABLE webauthn_challenges DROP CONSTRAINT webauthn_challenges_purpose_check;
ALTER TABLE webauthn_challenges ADD CONSTRAINT webauthn_challenges_purpose_check
  CHECK (purpose IN ('registration', 'authentication', 'approval'));
