-- risk_events_source and risk_events_range (0013) indexed every sign-in by source and network range;
-- since 0022 the facts query counts failures per source and range through the failure-only partial
-- indexes, and nothing else looks sign-ins up by source or range (forensics, the console and the
-- retention sweep go by customer or time). Two fewer index entries to write per risk event.
DROP INDEX IF EXISTS risk_events_source;
DROP INDEX IF EXISTS risk_events_range;
