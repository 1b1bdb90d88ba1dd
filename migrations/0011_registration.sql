-- Dynamic client registration (RFC 7591): initial access tokens the operator issues. Only the
-- SHA-256 of a token is kept; the value is printed once. A token admits one registration.
CREATE TABLE registration_initial_access_tokens (
  token_hash  text        PRIMARY KEY,
  created_by  text        NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT now(),
  expires_at  timestamptz NOT NULL,
  -- Set while a registration holds the token and kept once it succeeded (cleared if it failed).
  used_at     timestamptz,
  client_id   text
);
CREATE INDEX registration_initial_access_tokens_expires_at ON registration_initial_access_tokens (expires_at);
