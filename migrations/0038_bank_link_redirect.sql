-- Per-bank redirect URIs for bank linking (security review, OAuth mix-up defence, RFC 9207 §1 /
-- RFC 9700 §4.4.2): each bank sends the customer back to /account/links/callback/<bankId>, and the
-- callback must arrive on the path of the bank its attempt was started with.
--
-- The redirect URI an attempt sent to its bank. NULL: started before this migration, on the one
-- shared path /account/links/callback, which is accepted only for such attempts (they expire within
-- linking.attemptTtl).
ALTER TABLE bank_link_attempts ADD COLUMN redirect_uri text;
