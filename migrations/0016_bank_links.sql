-- Bank–brokerage sweep links (issue 6, item 4): the hub signs the customer in at their bank as an
-- OpenID relying party, reads how strongly the bank authenticates funds movement and the account
-- holder's name, and links the bank account to a brokerage account under the withdrawal-strength
-- policy. See src/linking/ and src/federation/.

-- One attempt to link: created when the customer is sent to the bank, consumed by the callback.
-- The state is stored hashed; the PKCE verifier and nonce are sealed with the KEK (bound to the row).
CREATE TABLE bank_link_attempts (
  id                 text        PRIMARY KEY,
  state_hash         text        NOT NULL UNIQUE,
  customer_id        text        NOT NULL REFERENCES customers (id),
  -- The hub session (uid) that started the attempt: the callback must arrive in the same session.
  session_uid        text        NOT NULL,
  bank_id            text        NOT NULL,
  account_id         text        NOT NULL REFERENCES accounts (id),
  secrets_enc        text        NOT NULL,
  brokerage_acr      text        NOT NULL,
  created_at         timestamptz NOT NULL DEFAULT now(),
  expires_at         timestamptz NOT NULL,
  consumed_at        timestamptz,
  outcome            text
);
CREATE INDEX bank_link_attempts_expiry ON bank_link_attempts (expires_at);

CREATE TABLE bank_links (
  id                       text        PRIMARY KEY,
  customer_id              text        NOT NULL REFERENCES customers (id),
  -- The brokerage account sweeps pay into, and its institution.
  account_id               text        NOT NULL REFERENCES accounts (id),
  brokerage_institution_id text        NOT NULL REFERENCES institutions (id),
  -- The configured bank (linking.banks[].id) and, when configured, its member institution.
  bank_id                  text        NOT NULL,
  bank_institution_id      text        REFERENCES institutions (id),
  bank_name                text        NOT NULL,
  -- Only ever masked: "001 普通 ****567".
  bank_account_masked      text,
  holder_name              text        NOT NULL,
  -- The bank's subject for the customer: how the bank's institution recognises them in events.
  bank_subject             text        NOT NULL,
  bank_strength            text        NOT NULL CHECK (bank_strength IN ('phishing_resistant', 'otp', 'password', 'unknown')),
  -- Daily sweep cap in yen.
  cap_amount               bigint      NOT NULL CHECK (cap_amount >= 0),
  status                   text        NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended', 'removed')),
  -- The policy decision that made the link: version and deciding rules.
  policy_version           text        NOT NULL,
  decided_by               text[]      NOT NULL,
  created_at               timestamptz NOT NULL DEFAULT now(),
  updated_at               timestamptz NOT NULL DEFAULT now(),
  suspended_at             timestamptz,
  suspended_by             text,
  removed_at               timestamptz
);
CREATE INDEX bank_links_customer ON bank_links (customer_id, created_at);
-- One live link per brokerage account and bank account.
CREATE UNIQUE INDEX bank_links_live ON bank_links (account_id, bank_id, bank_account_masked)
  WHERE status <> 'removed';

-- Sweeps the decision endpoint allowed, counted against the link's daily cap (Japanese day).
CREATE TABLE bank_link_sweeps (
  id          bigserial   PRIMARY KEY,
  link_id     text        NOT NULL REFERENCES bank_links (id),
  amount      bigint      NOT NULL CHECK (amount > 0),
  -- Idempotency: the institution's reference for the pull (one count per reference).
  reference   text        NOT NULL,
  at          timestamptz NOT NULL DEFAULT now(),
  UNIQUE (link_id, reference)
);
CREATE INDEX bank_link_sweeps_day ON bank_link_sweeps (link_id, at);

-- Events for member institutions, read with GET /api/institution/v1/events?after=<id> (poll).
CREATE TABLE institution_events (
  id              bigserial   PRIMARY KEY,
  institution_id  text        NOT NULL REFERENCES institutions (id),
  type            text        NOT NULL,
  link_id         text,
  data            jsonb       NOT NULL DEFAULT '{}',
  created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX institution_events_feed ON institution_events (institution_id, id);
