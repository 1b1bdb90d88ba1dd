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
