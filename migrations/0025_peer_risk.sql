-- Risk levels that peer institutions raised through shared signals (raise_risk, require_step_up).
-- They stand beside the engine's own level (risk_levels.level), which the engine's next decision
-- rewrites, until they expire (risk.peerRiskTtlSeconds), the customer re-proves their identity or an
-- operator clears them; the customer's effective level is the higher of the two. Ended rows stay for
-- the record (ended_by: expired, reproofing or operator:<name>) until the forensics retention.
CREATE TABLE peer_risk_levels (
  id          bigserial   PRIMARY KEY,
  customer_id text        NOT NULL REFERENCES customers (id),
  peer_id     text        NOT NULL,
  level       text        NOT NULL CHECK (level IN ('MEDIUM', 'HIGH')),
  -- peer:<peer id>:<event name>, as in the engine's reasons.
  reason      text        NOT NULL,
  event_type  text        NOT NULL,
  jti         text,
  txn         text,
  raised_at   timestamptz NOT NULL DEFAULT now(),
  expires_at  timestamptz NOT NULL,
  ended_at    timestamptz,
  ended_by    text,
  CHECK (expires_at > raised_at),
  CHECK ((ended_at IS NULL) = (ended_by IS NULL))
);
CREATE INDEX peer_risk_levels_live ON peer_risk_levels (customer_id) WHERE ended_at IS NULL;
CREATE INDEX peer_risk_levels_expiry ON peer_risk_levels (expires_at) WHERE ended_at IS NULL;
