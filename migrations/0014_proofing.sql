-- Identity proofing (enrollment, recovery, unlock), recovery markers, attested passkeys.

-- One row per proofing attempt, successful or refused: the audit trail of who proved their identity
-- how and for what. `evidence` is a summary for investigators (the eKYC issuer and trust framework,
-- the certificate's issuer and serial, which fields matched); never a ticket, a token or a signature.
CREATE TABLE proofing_records (
  id             text        PRIMARY KEY,
  customer_id    text        REFERENCES customers (id),
  method         text        NOT NULL CHECK (method IN ('ticket', 'ekyc', 'jpki')),
  purpose        text        NOT NULL CHECK (purpose IN ('enrollment', 'recovery', 'unlock')),
  result         text        NOT NULL CHECK (result IN ('verified', 'refused')),
  reason         text,
  evidence       jsonb       NOT NULL DEFAULT '{}'::jsonb,
  interaction_id text,
  created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX proofing_records_customer ON proofing_records (customer_id, created_at);

-- A proofing flow in progress, bound to one OIDC interaction (so to one browser). Its id is the eKYC
-- `state` or names the JPKI challenge; `secret` holds the single-use material (PKCE verifier and
-- nonce, or the challenge) until the flow is answered. A verified flow carries an internal one-time
-- enrollment ticket the passkey registration consumes, exactly like an operator's ticket.
CREATE TABLE proofing_flows (
  id             text        PRIMARY KEY,
  method         text        NOT NULL CHECK (method IN ('ticket', 'ekyc', 'jpki')),
  purpose        text        NOT NULL CHECK (purpose IN ('enrollment', 'recovery', 'unlock')),
  interaction_id text        NOT NULL,
  customer_id    text        REFERENCES customers (id),
  secret         jsonb       NOT NULL DEFAULT '{}'::jsonb,
  proofing_id    text        REFERENCES proofing_records (id),
  ticket_id      text        REFERENCES enrollment_tickets (id),
  expires_at     timestamptz NOT NULL,
  answered_at    timestamptz,
  recovered_at   timestamptz,
  created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX proofing_flows_expires_at ON proofing_flows (expires_at);
CREATE INDEX proofing_flows_ticket ON proofing_flows (ticket_id) WHERE ticket_id IS NOT NULL;

-- Recovery after losing every passkey. first_login_at stays NULL until the risk engine has seen the
-- first sign-in after the recovery (see src/proofing/recovery.ts firstLoginAfterRecovery).
CREATE TABLE customer_recoveries (
  id               text        PRIMARY KEY,
  customer_id      text        NOT NULL REFERENCES customers (id),
  proofing_id      text        NOT NULL REFERENCES proofing_records (id),
  method           text        NOT NULL,
  credential_id    text        NOT NULL,
  revoked_passkeys integer     NOT NULL,
  recovered_at     timestamptz NOT NULL DEFAULT now(),
  first_login_at   timestamptz
);
CREATE INDEX customer_recoveries_customer ON customer_recoveries (customer_id, recovered_at);

-- Whether the passkey's attestation was verified under the configured attestation policy
-- (src/authn/attestation.ts): with a device-bound key this is what earns acr phrh.
ALTER TABLE passkeys ADD COLUMN attestation_verified boolean NOT NULL DEFAULT false;
