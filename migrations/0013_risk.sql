-- Risk engine (JSDA IV.5, FSA comments 84–88): what happened at each sign-in and important
-- operation, with where it came from and the decision taken, kept for a configured retention;
-- customers' travel declarations; the current risk level per customer and per grant.

-- One row per sign-in attempt, operation or post-login observation (forensics, JSDA IV.5.(1)).
CREATE TABLE risk_events (
  id             bigserial   PRIMARY KEY,
  at             timestamptz NOT NULL DEFAULT now(),
  kind           text        NOT NULL CHECK (kind IN ('login', 'operation', 'request')),
  customer_id    text,
  -- What was attempted: passkey / totp for sign-ins, the operation's name otherwise.
  method         text        NOT NULL,
  result         text        NOT NULL CHECK (result IN ('success', 'failure', 'step_up', 'blocked', 'observed')),
  ip             text,
  port           integer,
  -- The throttling unit (IPv4 address, IPv6 /64) and its network range (IPv4 /24, IPv6 /48).
  source         text,
  source_range   text,
  country        text,
  asn            integer,
  user_agent     text,
  -- Hash of the device cookie (never the cookie itself) and the passkey used.
  device_hash    text,
  credential_id  text,
  backed_up      boolean,
  -- The session the event belongs to (grant:<id> / session:<uid>), for post-login events.
  session_key    text,
  client_id      text,
  decision       text        CHECK (decision IN ('allow', 'step_up', 'block')),
  score          integer,
  reasons        jsonb       NOT NULL DEFAULT '[]',
  rule_version   text,
  signals        jsonb       NOT NULL DEFAULT '{}'
);
CREATE INDEX risk_events_customer ON risk_events (customer_id, at);
CREATE INDEX risk_events_source ON risk_events (source, at) WHERE kind = 'login';
CREATE INDEX risk_events_range ON risk_events (source_range, at) WHERE kind = 'login';
CREATE INDEX risk_events_at ON risk_events (at);

-- Travel a customer declared in advance, so sign-ins from there are expected (FSA comment 88).
CREATE TABLE travel_declarations (
  id           bigserial   PRIMARY KEY,
  customer_id  text        NOT NULL REFERENCES customers (id),
  country      text        NOT NULL,
  starts_at    timestamptz NOT NULL,
  ends_at      timestamptz NOT NULL,
  declared_by  text        NOT NULL,
  created_at   timestamptz NOT NULL DEFAULT now(),
  CHECK (ends_at > starts_at)
);
CREATE INDEX travel_declarations_customer ON travel_declarations (customer_id, ends_at);

-- The customer's current risk level (changes go out as CAEP risk-level-change) and whether the
-- next sign-in is the first after an account recovery.
CREATE TABLE risk_levels (
  customer_id        text        PRIMARY KEY REFERENCES customers (id),
  level              text        NOT NULL CHECK (level IN ('LOW', 'MEDIUM', 'HIGH')),
  reasons            jsonb       NOT NULL DEFAULT '[]',
  recovered_at       timestamptz,
  recovery_login_due boolean     NOT NULL DEFAULT false,
  updated_at         timestamptz NOT NULL DEFAULT now()
);

-- Risk raised after sign-in, per session: `grant:<grant id>` for tokens a client holds,
-- `session:<session uid>` for the customer's own browser session.
CREATE TABLE session_risk (
  session_key  text        PRIMARY KEY,
  customer_id  text        NOT NULL,
  client_id    text,
  score        integer     NOT NULL,
  reasons      jsonb       NOT NULL DEFAULT '[]',
  updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX session_risk_customer ON session_risk (customer_id);
