-- A re-proofing answers only the peers' verdicts received before its proof began
-- (docs/reproofing-settles.md): a verdict received while the proof ran, already applied, stays in force.
-- When each applied verdict was received (ssf_action_outbox.created_at of the action that applied it);
-- rows from before this migration have none, and count as received when they were applied
-- (stopped_at, raised_at, locked_at).
ALTER TABLE sweep_peer_stops ADD COLUMN received_at timestamptz;
ALTER TABLE peer_risk_levels ADD COLUMN received_at timestamptz;
-- The latest peer demand for re-proofing (require_reproofing) that set account_lockouts.reproofing_required.
ALTER TABLE account_lockouts ADD COLUMN reproofing_required_at timestamptz;
