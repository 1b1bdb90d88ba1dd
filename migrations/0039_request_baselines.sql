-- Post-login change detection (src/risk/tracker.ts) shared by every node: the first network and user
-- agent of a token (its jti) or session (session:<uid>), claimed by whichever node sees it first,
-- and the changes already reported, so that each change raises the session's risk once in the hub,
-- not once per node. A node reads its baseline once and keeps it in memory; the sweeper deletes rows
-- older than the longest token or session lifetime (or the forensics retention, if shorter).
CREATE TABLE request_baselines (
  tracking_id text        NOT NULL,
  -- 'baseline' for the first network and user agent; 'net:<range>' or 'ua:<user agent>' for a
  -- change already reported (those rows leave the other columns NULL).
  item        text        NOT NULL,
  -- IPv4 /24 or IPv6 /48 (src/risk/geo.ts networkRange); NULL when the address was unknown.
  network     text,
  asn         integer,
  user_agent  text,
  created_at  timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tracking_id, item)
);
CREATE INDEX request_baselines_created ON request_baselines (created_at);
