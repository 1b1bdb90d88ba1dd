-- Notifications (JSDA IV 1.(2)② and ④): the contact points customers registered, what they chose
-- to be told, and the outbox delivery workers drain. See src/notify/.

-- A contact point. The address is sealed with the key-encryption key (bound to the row id) and kept
-- masked for screens; address_hash (an HMAC of the normalised address) finds duplicates without
-- opening it. An address never changes in place: a new address is a new row and the old one is
-- marked removed, so what was queued for the old address (the change notice itself) still reaches it.
CREATE TABLE notify_channels (
  id              text        PRIMARY KEY,
  customer_id     text        NOT NULL REFERENCES customers (id),
  kind            text        NOT NULL CHECK (kind IN ('email', 'sms', 'push')),
  address_enc     text        NOT NULL,
  address_hash    text        NOT NULL,
  address_masked  text        NOT NULL,
  status          text        NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'removed')),
  created_at      timestamptz NOT NULL DEFAULT now(),
  removed_at      timestamptz
);
CREATE UNIQUE INDEX notify_channels_active_address ON notify_channels (customer_id, kind, address_hash)
  WHERE status = 'active';

-- The language notifications are written in. No row: Japanese.
CREATE TABLE notify_settings (
  customer_id  text        PRIMARY KEY REFERENCES customers (id),
  language     text        NOT NULL DEFAULT 'ja' CHECK (language IN ('ja', 'en')),
  updated_at   timestamptz NOT NULL DEFAULT now()
);

-- The customer's choice per notification kind. No row: on. Security-critical kinds ignore this table.
CREATE TABLE notify_preferences (
  customer_id  text        NOT NULL REFERENCES customers (id),
  kind         text        NOT NULL,
  enabled      boolean     NOT NULL,
  updated_at   timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (customer_id, kind)
);

-- One row per (notification, channel), written in the transaction of the event it reports.
-- A worker claims due rows with FOR UPDATE SKIP LOCKED by pushing next_attempt_at one lease ahead
-- and stamping claim_token; only the holder of the token may settle the row. A worker that dies
-- mid-send leaves the row to come due again when the lease ends (at-least-once; the Message-ID is
-- derived from the row, so receivers can drop the repeat). The body is rendered at delivery from
-- kind, language and data and never stored.
CREATE TABLE notify_outbox (
  id               bigserial   PRIMARY KEY,
  customer_id      text        NOT NULL,
  channel_id       text        NOT NULL REFERENCES notify_channels (id),
  channel_kind     text        NOT NULL,
  kind             text        NOT NULL,
  language         text        NOT NULL,
  data             jsonb       NOT NULL,
  occurred_at      timestamptz NOT NULL,
  dedupe_key       text,
  status           text        NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'dead')),
  attempts         integer     NOT NULL DEFAULT 0,
  next_attempt_at  timestamptz NOT NULL DEFAULT now(),
  claim_token      text,
  last_error       text,
  created_at       timestamptz NOT NULL DEFAULT now(),
  sent_at          timestamptz,
  dead_at          timestamptz,
  -- NULL keys never conflict: only requests that carry a dedupe key are deduplicated.
  UNIQUE (channel_id, kind, dedupe_key)
);
CREATE INDEX notify_outbox_due ON notify_outbox (next_attempt_at, id) WHERE status = 'pending';
CREATE INDEX notify_outbox_customer ON notify_outbox (customer_id, created_at);
CREATE INDEX notify_outbox_dead ON notify_outbox (dead_at) WHERE status = 'dead';
CREATE INDEX notify_outbox_sent ON notify_outbox (sent_at) WHERE status = 'sent';
