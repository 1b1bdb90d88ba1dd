-- Channels a customer can switch off (JSDA IV.1.(2) and the security page, issue 4 item 8): third-party
-- read access, withdrawals, bank sweeps. Switching off applies at once; switching on needs a fresh passkey
-- sign-in and waits for the withdrawal-strength policy's cool-off (enable_at), like raising a limit.
CREATE TABLE customer_channels (
  customer_id  text        NOT NULL REFERENCES customers (id),
  channel      text        NOT NULL CHECK (channel IN ('aggregator_access', 'withdrawals', 'sweeps')),
  disabled     boolean     NOT NULL,
  -- A pending switch-on takes effect then (the row stays disabled until it is applied).
  enable_at    timestamptz,
  changed_at   timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (customer_id, channel)
);
