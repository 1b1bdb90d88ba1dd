-- Sweep safeguards (security review, issue 6).
--
-- 1. A peer's "suspend sweeps" signal (shared signals) stops every sweep of the customer, whatever
--    state each link is in and for links made afterwards, until the customer re-proves their identity
--    or an operator clears it (src/risk clearPeerLevels) — an institution resuming a link does not.
CREATE TABLE sweep_peer_stops (
  id          bigserial   PRIMARY KEY,
  customer_id text        NOT NULL REFERENCES customers (id),
  peer_id     text        NOT NULL,
  event_type  text        NOT NULL,
  stopped_at  timestamptz NOT NULL DEFAULT now(),
  -- reproofing or operator:<name>.
  cleared_at  timestamptz,
  cleared_by  text,
  CHECK ((cleared_at IS NULL) = (cleared_by IS NULL))
);
CREATE INDEX sweep_peer_stops_live ON sweep_peer_stops (customer_id) WHERE cleared_at IS NULL;

-- Links a peer suspended before this migration keep their stop under the new rule (recorded before
-- duplicates are removed below, so that a removed duplicate's stop still counts).
INSERT INTO sweep_peer_stops (customer_id, peer_id, event_type, stopped_at)
SELECT customer_id, substr(suspended_by, 6), 'migrated', COALESCE(min(suspended_at), now())
FROM bank_links WHERE status = 'suspended' AND suspended_by LIKE 'peer:%'
GROUP BY customer_id, substr(suspended_by, 6);

-- 2. One live link per brokerage account, bank and bank account — also when the bank asserted no
--    account (bank_account_masked NULL): NULLs were distinct under bank_links_live, so the same bank
--    could be linked again and again, each link with its own daily cap. Live duplicates that already
--    exist are resolved first: per (account, bank, mask) the oldest live link stays, the newer ones
--    are removed (removing a link only lowers what can be swept) and the removal is told to both
--    institutions' feeds.
WITH ranked AS (
  SELECT id, row_number() OVER (
           PARTITION BY account_id, bank_id, bank_account_masked ORDER BY created_at, id) AS n
  FROM bank_links
  WHERE status <> 'removed' AND bank_account_masked IS NULL
), removed AS (
  UPDATE bank_links l SET status = 'removed', removed_at = now(), updated_at = now()
  FROM ranked r WHERE l.id = r.id AND r.n > 1
  RETURNING l.id, l.brokerage_institution_id, l.bank_institution_id, l.bank_id
)
INSERT INTO institution_events (institution_id, type, link_id, data)
SELECT i, 'link.removed', id, jsonb_build_object('bankId', bank_id, 'by', 'duplicate')
FROM removed, LATERAL (VALUES (brokerage_institution_id), (bank_institution_id)) v (i)
WHERE i IS NOT NULL;

DROP INDEX bank_links_live;
CREATE UNIQUE INDEX bank_links_live ON bank_links (account_id, bank_id, bank_account_masked)
  NULLS NOT DISTINCT WHERE status <> 'removed';
