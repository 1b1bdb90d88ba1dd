-- Shared Signals, the parts after issue 7's first round:
-- 1. A peer's require_reproofing signal locks the account until the customer re-proofs (src/risk/
--    peerActions.ts): unlike a lock after failed sign-ins it also refuses known devices, and it has no
--    end time (locked_until = 'infinity'). Re-proofing (purpose unlock) or an operator lifts it.
ALTER TABLE account_lockouts ADD COLUMN reproofing_required boolean NOT NULL DEFAULT false;

-- 2. SSF 1.0 §8.1.1 inactivity_timeout: the last eligible receiver activity on a stream (management
--    calls naming it; polls). A stream idle for signals.inactivityTimeoutSeconds is paused.
ALTER TABLE ssf_streams ADD COLUMN last_activity_at timestamptz NOT NULL DEFAULT now();
-- For the operator view (kakehashi ssf streams): when the stream last delivered anything.
ALTER TABLE ssf_streams ADD COLUMN last_delivery_at timestamptz;
