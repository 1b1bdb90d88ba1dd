-- Shared Signals security review (issue 7, item 4): a consented shared identifier names one customer
-- towards a peer. Before, two customers could both consent to share the same e-mail with one peer,
-- and a SET from that peer naming it acted on whichever row the database returned first.
--
-- Identifiers already shared by several customers with one peer are ambiguous: the consent is
-- withdrawn on all of them (each customer is named to that peer by the pairwise identifier again,
-- and may consent again once it is one customer's), recorded in the audit log for the operator.
WITH dup AS (
  SELECT peer_id, shared_subject FROM ssf_subject_links
  WHERE consented_at IS NOT NULL AND shared_subject IS NOT NULL
  GROUP BY peer_id, shared_subject HAVING count(*) > 1
), cleared AS (
  UPDATE ssf_subject_links l SET shared_subject = NULL, consent_ref = NULL, consented_at = NULL
  FROM dup WHERE l.peer_id = dup.peer_id AND l.shared_subject = dup.shared_subject AND l.consented_at IS NOT NULL
  RETURNING l.peer_id, l.customer_id
)
INSERT INTO audit_events (type, outcome, actor, customer_id, data)
SELECT 'ssf.subject.consent_withdrawn', 'info', 'system', customer_id,
       jsonb_build_object('peerId', peer_id, 'reason', 'identifier shared by several customers')
FROM cleared;

CREATE UNIQUE INDEX ssf_subject_links_shared ON ssf_subject_links (peer_id, shared_subject)
  WHERE consented_at IS NOT NULL;

-- Item 5: a per-peer circuit breaker on what received SETs do. Beyond signals.circuitBreaker
-- (default 100 SETs acting on customers per 10 minutes) the breaker opens and stays open until an
-- operator releases or drops what it held (`kakehashi ssf held | release | drop`): a compromised
-- peer cannot act on every linked customer at once. The row is also the per-peer lock that makes
-- concurrent receiving transactions count one after the other.
CREATE TABLE ssf_peer_breakers (
  peer_id       text        PRIMARY KEY,
  opened_at     timestamptz,
  -- SETs that had acted within the window when it opened.
  opened_count  integer,
  closed_at     timestamptz,
  closed_by     text
);

-- The SETs whose actions were held while a peer's breaker was open: the actions as configured when
-- the SET came, the event (for forward and the consumers' details). Released (acted on) or dropped.
CREATE TABLE ssf_held_sets (
  id           bigserial   PRIMARY KEY,
  peer_id      text        NOT NULL,
  jti          text        NOT NULL,
  txn          text,
  event_type   text        NOT NULL,
  customer_id  text        NOT NULL,
  event        jsonb       NOT NULL,
  actions      text[]      NOT NULL,
  held_at      timestamptz NOT NULL DEFAULT now(),
  resolved_at  timestamptz,
  -- released | dropped
  resolution   text        CHECK (resolution IN ('released', 'dropped')),
  resolved_by  text,
  UNIQUE (peer_id, jti)
);
CREATE INDEX ssf_held_sets_pending ON ssf_held_sets (peer_id, id) WHERE resolved_at IS NULL;

-- The breaker counts a peer's acted SETs within the window.
CREATE INDEX ssf_received_peer_at ON ssf_received (peer_id, received_at);
