-- Passkey lifecycle: a passkey can be disabled (e.g. a suspected cloned authenticator) without
-- losing its history; sessions and grants are looked up by customer for the security page.
ALTER TABLE passkeys ADD COLUMN disabled_at timestamptz;
ALTER TABLE passkeys ADD COLUMN disabled_reason text;
CREATE INDEX oidc_payloads_account ON oidc_payloads ((payload ->> 'accountId')) WHERE model IN ('Session', 'Grant');
