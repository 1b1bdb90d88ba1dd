-- Shared Signals, the parts after issue 7's first round:
-- 1. A peer's require_reproofing signal locks the account until the customer re-proofs (src/risk/
--    peerActions.ts): unlike a lock after failed sign-ins it also refuses known devices, and it has no
--    end time (locked_until = 'infinity'). Re-proofing (purpose unlock) or an operator lifts it.
ALTER TABLE account_lockouts ADD COLUMN reproofing_required boolean NOT NULL DEFAULT false;

-- 2. SSF 1.0 §8.1.1 inactivity_timeout: the last eligible receiver activity on a stream (management
--    calls naming it; polls). A stream idle for signals.inactivityTimeoutSeconds is paused.
ALTER TABLE ssf_streams ADD COLUMN last_activity_at timestamptz NOT NULL DEFAULT now();

-- 3. Wake-up of the outbox workers on every node: a new ssf_events row (an event of this hub, a
--    forwarded one, a stream event) notifies channel kakehashi_ssf at commit. Workers on PostgreSQL
--    LISTEN to it (src/signals/worker.ts) and start fanning out at once instead of at their next
--    poll; PGlite workers keep polling. One notification per statement, folded per transaction.
CREATE FUNCTION ssf_events_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('kakehashi_ssf', '');
  RETURN NULL;
END
$$;
CREATE TRIGGER ssf_events_notify AFTER INSERT ON ssf_events
  FOR EACH STATEMENT EXECUTE FUNCTION ssf_events_notify();
