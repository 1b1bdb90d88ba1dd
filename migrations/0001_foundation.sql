-- Foundation: oidc-provider storage, key material, customers and accounts, passkeys,
-- enrollment tickets, consents, audit log, DPoP replay cache.

-- Every oidc-provider model (Session, Grant, AccessToken, AuthorizationCode, …) in one table.
-- consumed_at is set by an atomic check-and-set (see src/oidc/adapter.ts).
CREATE TABLE oidc_payloads (
  model       text        NOT NULL,
  id          text        NOT NULL,
  payload     jsonb       NOT NULL,
  grant_id    text,
  uid         text,
  user_code   text,
  expires_at  timestamptz,
  consumed_at timestamptz,
  PRIMARY KEY (model, id)
);
CREATE INDEX oidc_payloads_grant_id ON oidc_payloads (grant_id) WHERE grant_id IS NOT NULL;
CREATE INDEX oidc_payloads_uid ON oidc_payloads (model, uid) WHERE uid IS NOT NULL;
CREATE INDEX oidc_payloads_user_code ON oidc_payloads (model, user_code) WHERE user_code IS NOT NULL;
CREATE INDEX oidc_payloads_expires_at ON oidc_payloads (expires_at) WHERE expires_at IS NOT NULL;

-- Signing keys. Private halves are encrypted with the key-encryption key (never stored plain).
CREATE TABLE signing_keys (
  kid              text        PRIMARY KEY,
  alg              text        NOT NULL,
  public_jwk       jsonb       NOT NULL,
  private_jwk_enc  text        NOT NULL,
  status           text        NOT NULL CHECK (status IN ('next', 'current', 'previous', 'retired')),
  created_at       timestamptz NOT NULL DEFAULT now(),
  activated_at     timestamptz,
  retired_at       timestamptz
);

-- Shared symmetric secrets (cookie keys, DPoP nonce secret, …), encrypted at rest.
CREATE TABLE secrets (
  name        text        PRIMARY KEY,
  value_enc   text        NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE institutions (
  id          text        PRIMARY KEY,
  kind        text        NOT NULL CHECK (kind IN ('brokerage', 'bank')),
  name_ja     text        NOT NULL,
  name_en     text        NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE customers (
  id              text        PRIMARY KEY,
  institution_id  text        NOT NULL REFERENCES institutions (id),
  -- The number printed on the customer's documents; what they type at enrollment.
  customer_number text        NOT NULL,
  name_kanji      text        NOT NULL,
  name_kana       text        NOT NULL,
  birth_date      date,
  status          text        NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'locked', 'frozen')),
  created_at      timestamptz NOT NULL DEFAULT now(),
  UNIQUE (institution_id, customer_number)
);

CREATE TABLE accounts (
  id              text        PRIMARY KEY,
  customer_id     text        NOT NULL REFERENCES customers (id),
  institution_id  text        NOT NULL REFERENCES institutions (id),
  -- securities: a brokerage trading account; deposit: a bank account.
  kind            text        NOT NULL CHECK (kind IN ('securities', 'deposit')),
  -- 特定 (specific), 一般 (general), NISA; null for bank accounts.
  tax_category    text        CHECK (tax_category IN ('specific', 'general', 'nisa')),
  branch_code     text        NOT NULL,
  account_number  text        NOT NULL,
  nickname        text        NOT NULL,
  currency        text        NOT NULL DEFAULT 'JPY',
  status          text        NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'closed')),
  opened_on       date        NOT NULL,
  created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX accounts_customer ON accounts (customer_id);

-- Registered OAuth clients. metadata is oidc-provider client metadata.
CREATE TABLE clients (
  client_id   text        PRIMARY KEY,
  metadata    jsonb       NOT NULL,
  enabled     boolean     NOT NULL DEFAULT true,
  created_at  timestamptz NOT NULL DEFAULT now(),
  updated_at  timestamptz NOT NULL DEFAULT now()
);

-- One-time enrollment tickets issued after KYC; only a hash of the secret is kept.
CREATE TABLE enrollment_tickets (
  id           text        PRIMARY KEY,
  customer_id  text        NOT NULL REFERENCES customers (id),
  secret_hash  text        NOT NULL,
  issued_by    text        NOT NULL,
  created_at   timestamptz NOT NULL DEFAULT now(),
  expires_at   timestamptz NOT NULL,
  used_at      timestamptz,
  voided_at    timestamptz,
  void_reason  text
);
CREATE INDEX enrollment_tickets_customer ON enrollment_tickets (customer_id);

-- Failed ticket guesses per customer; past the limit every open ticket is voided.
CREATE TABLE enrollment_failures (
  customer_id      text        PRIMARY KEY REFERENCES customers (id),
  failed_attempts  integer     NOT NULL DEFAULT 0,
  last_failed_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE passkeys (
  credential_id  text        PRIMARY KEY,
  customer_id    text        NOT NULL REFERENCES customers (id),
  public_key     text        NOT NULL,
  counter        bigint      NOT NULL DEFAULT 0,
  transports     text[]      NOT NULL DEFAULT '{}',
  device_type    text        NOT NULL CHECK (device_type IN ('singleDevice', 'multiDevice')),
  backed_up      boolean     NOT NULL,
  aaguid         text        NOT NULL,
  name           text        NOT NULL,
  created_at     timestamptz NOT NULL DEFAULT now(),
  last_used_at   timestamptz
);
CREATE INDEX passkeys_customer ON passkeys (customer_id);

-- Outstanding WebAuthn challenges, each bound to one interaction and purpose, single use.
CREATE TABLE webauthn_challenges (
  id              text        PRIMARY KEY,
  purpose         text        NOT NULL CHECK (purpose IN ('registration', 'authentication')),
  -- The oidc-provider interaction (or other ceremony) the challenge belongs to.
  interaction_id  text        NOT NULL,
  customer_id     text        REFERENCES customers (id),
  -- Registration under an enrollment ticket: the ticket is consumed when the passkey is stored.
  ticket_id       text        REFERENCES enrollment_tickets (id),
  challenge       text        NOT NULL,
  expires_at   timestamptz NOT NULL,
  used_at      timestamptz
);

-- What the customer chose on the consent page, per oidc-provider grant.
CREATE TABLE consents (
  grant_id     text        PRIMARY KEY,
  customer_id  text        NOT NULL REFERENCES customers (id),
  client_id    text        NOT NULL,
  scopes       text[]      NOT NULL,
  account_ids  text[]      NOT NULL,
  created_at   timestamptz NOT NULL DEFAULT now(),
  expires_at   timestamptz NOT NULL,
  revoked_at   timestamptz,
  revoked_by   text,
  revoke_reason text
);
CREATE INDEX consents_customer ON consents (customer_id);

-- Append-only security event log (forensics). Never updated or deleted by the hub.
CREATE TABLE audit_events (
  id              bigserial   PRIMARY KEY,
  at              timestamptz NOT NULL DEFAULT now(),
  type            text        NOT NULL,
  outcome         text        NOT NULL CHECK (outcome IN ('success', 'failure', 'info')),
  actor           text,
  customer_id     text,
  client_id       text,
  ip              text,
  port            integer,
  user_agent      text,
  interaction_id  text,
  data            jsonb       NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_events_customer ON audit_events (customer_id, at) WHERE customer_id IS NOT NULL;
CREATE INDEX audit_events_type ON audit_events (type, at);

-- DPoP proof jti values seen by the resource server, kept until the proof could no longer be fresh.
CREATE TABLE dpop_seen (
  jti_hash    text        PRIMARY KEY,
  expires_at  timestamptz NOT NULL
);
CREATE INDEX dpop_seen_expires ON dpop_seen (expires_at);
