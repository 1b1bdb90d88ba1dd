-- 1. Per-bank redirect URIs for bank linking (security review, OAuth mix-up defence, RFC 9207 §1 /
-- RFC 9700 §4.4.2): each bank sends the customer back to /account/links/callback/<bankId>, and the
-- callback must arrive on the path of the bank its attempt was started with.
--
-- The redirect URI an attempt sent to its bank. NULL: started before this migration, on the one
-- shared path /account/links/callback, which is accepted only for such attempts (they expire within
-- linking.attemptTtl).
ALTER TABLE bank_link_attempts ADD COLUMN redirect_uri text;

-- 2. A client may use the account_information authorization details type only when its registration
-- allows it (security review): it lists the type in authorization_details_types, or it lists none
-- and its scope allows `accounts` (src/consent/authorizationDetails.ts settleClientDetailTypes).
-- Dynamic registration used to store oidc-provider's old default ["account_information"] with every
-- client, whatever its scope. Where such a client's registered scope lacks `accounts`, that stored
-- default goes, so the scope decides ([]). A client that had asked for exactly this list on purpose
-- registers it again (RFC 7592 update). Operator-added clients never stored the default.
UPDATE clients
SET metadata = metadata - 'authorization_details_types', updated_at = now()
WHERE metadata ? 'client_id_issued_at'
  AND metadata -> 'authorization_details_types' = '["account_information"]'::jsonb
  AND metadata ? 'scope'
  AND NOT ('accounts' = ANY (string_to_array(metadata ->> 'scope', ' ')));
