-- Throttling of failed authentication (JSDA IV.1.(2)③) that attackers cannot turn into a lock-out
-- of the owner (FSA comment 83): per-source progressive delays, per-account lock for unknown
-- devices only, and the devices a customer already signed in from.

-- Failures per source (an IPv4 address or an IPv6 /64) in a sliding window.
CREATE TABLE auth_source_failures (
  source           text        PRIMARY KEY,
  failures         integer     NOT NULL,
  window_started   timestamptz NOT NULL,
  last_failure_at  timestamptz NOT NULL,
  blocked_until    timestamptz
);
CREATE INDEX auth_source_failures_last ON auth_source_failures (last_failure_at);

-- Consecutive failures per customer; locked_until set once the threshold is reached.
CREATE TABLE account_lockouts (
  customer_id          text        PRIMARY KEY REFERENCES customers (id),
  consecutive_failures integer     NOT NULL DEFAULT 0,
  last_failure_at      timestamptz,
  locked_at            timestamptz,
  locked_until         timestamptz
);

-- Browsers a customer signed in from successfully; only a hash of the device cookie is kept.
CREATE TABLE known_devices (
  device_hash   text        NOT NULL,
  customer_id   text        NOT NULL REFERENCES customers (id),
  created_at    timestamptz NOT NULL DEFAULT now(),
  last_used_at  timestamptz NOT NULL DEFAULT now(),
  user_agent    text,
  PRIMARY KEY (device_hash, customer_id)
);
CREATE INDEX known_devices_customer ON known_devices (customer_id);
