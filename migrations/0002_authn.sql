-- Passkeys: the WebAuthn user handle given to authenticators. A random value per customer, never
-- the customer id, so an authenticator (or anyone reading it) learns nothing about our records.
CREATE TABLE passkey_user_handles (
  customer_id  text        PRIMARY KEY REFERENCES customers (id),
  -- base64url of 32 random bytes
  user_handle  text        NOT NULL UNIQUE,
  created_at   timestamptz NOT NULL DEFAULT now()
);

-- webauthn_challenges.id is the challenge itself (base64url, 32 random bytes), so a response is
-- matched to its challenge by primary key; this index serves the expiry sweep.
CREATE INDEX webauthn_challenges_expires_at ON webauthn_challenges (expires_at);
