-- Operator console (JSDA IV.6): institution staff who sign in with their own passkeys, and the
-- record of customer freezes (who froze, why, and the re-proofing that lifted it).

CREATE TABLE operators (
  id           text        PRIMARY KEY,
  name         text        NOT NULL UNIQUE,
  role         text        NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
  status       text        NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled')),
  created_by   text        NOT NULL,
  created_at   timestamptz NOT NULL DEFAULT now(),
  disabled_at  timestamptz,
  disabled_by  text,
  -- Opaque WebAuthn user handle (never the name).
  user_handle  text        NOT NULL UNIQUE
);

-- One-time tickets an operator redeems to enroll a passkey; only a SHA-256 of the secret is kept.
CREATE TABLE operator_enrollment_tickets (
  id           text        PRIMARY KEY,
  operator_id  text        NOT NULL REFERENCES operators (id),
  secret_hash  text        NOT NULL UNIQUE,
  issued_by    text        NOT NULL,
  expires_at   timestamptz NOT NULL,
  used_at      timestamptz,
  voided_at    timestamptz
);

CREATE TABLE operator_passkeys (
  credential_id text        PRIMARY KEY,
  operator_id   text        NOT NULL REFERENCES operators (id),
  public_key    text        NOT NULL,
  counter       bigint      NOT NULL DEFAULT 0,
  transports    text[]      NOT NULL DEFAULT '{}',
  device_type   text        NOT NULL CHECK (device_type IN ('singleDevice', 'multiDevice')),
  backed_up     boolean     NOT NULL,
  created_at    timestamptz NOT NULL DEFAULT now(),
  last_used_at  timestamptz
);
CREATE INDEX operator_passkeys_operator ON operator_passkeys (operator_id);

-- Console sessions: the cookie holds a random secret, the table its SHA-256.
CREATE TABLE operator_sessions (
  id_hash      text        PRIMARY KEY,
  operator_id  text        NOT NULL REFERENCES operators (id),
  created_at   timestamptz NOT NULL DEFAULT now(),
  expires_at   timestamptz NOT NULL,
  ip           text,
  user_agent   text
);
CREATE INDEX operator_sessions_operator ON operator_sessions (operator_id);
CREATE INDEX operator_sessions_expires ON operator_sessions (expires_at);

-- Every freeze of a customer; the open one has unfrozen_at NULL. Unfreezing names the proofing
-- record (src/proofing) that re-established the customer's identity after the freeze.
CREATE TABLE customer_freezes (
  id             bigserial   PRIMARY KEY,
  customer_id    text        NOT NULL REFERENCES customers (id),
  frozen_at      timestamptz NOT NULL DEFAULT now(),
  frozen_by      text        NOT NULL,
  reason         text        NOT NULL,
  unfrozen_at    timestamptz,
  unfrozen_by    text,
  proofing_id    text
);
CREATE UNIQUE INDEX customer_freezes_open ON customer_freezes (customer_id) WHERE unfrozen_at IS NULL;
CREATE INDEX customer_freezes_at ON customer_freezes (frozen_at);
