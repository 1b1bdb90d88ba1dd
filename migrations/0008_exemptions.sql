-- Exemptions from phishing-resistant MFA (JSDA IV.1.(2)①, FSA comments 76–79): granted by an
-- operator with a recorded reason, for customers without a capable device; they then sign in with
-- an alternative MFA (TOTP). The exemption rate over all customers (解除率) is reported.
CREATE TABLE mfa_exemptions (
  id          text        PRIMARY KEY,
  customer_id text        NOT NULL REFERENCES customers (id),
  reason      text        NOT NULL,
  granted_by  text        NOT NULL,
  granted_at  timestamptz NOT NULL DEFAULT now(),
  ended_at    timestamptz,
  ended_by    text
);
-- At most one open exemption per customer.
CREATE UNIQUE INDEX mfa_exemptions_open ON mfa_exemptions (customer_id) WHERE ended_at IS NULL;

-- TOTP secrets, encrypted with the key-encryption key; last_step blocks replay of a used code.
CREATE TABLE totp_credentials (
  customer_id   text        PRIMARY KEY REFERENCES customers (id),
  secret_enc    text        NOT NULL,
  created_at    timestamptz NOT NULL DEFAULT now(),
  confirmed_at  timestamptz,
  last_step     bigint      NOT NULL DEFAULT 0,
  -- Set-up in progress: the ticket it will consume and the interaction it belongs to.
  ticket_id     text        REFERENCES enrollment_tickets (id),
  interaction_id text
);
