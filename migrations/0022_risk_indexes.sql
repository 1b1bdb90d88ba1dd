-- The sign-in risk facts (src/risk/store.ts loginFacts) count failures per source and network range
-- and read the customer's own successful sign-ins: indexes for exactly those, so a busy source (a
-- company NAT, a load test) costs no more per sign-in than a quiet one.
CREATE INDEX risk_events_failures_source ON risk_events (source, at) WHERE kind = 'login' AND result = 'failure';
CREATE INDEX risk_events_failures_range ON risk_events (source_range, at) WHERE kind = 'login' AND result = 'failure';
CREATE INDEX risk_events_logins_customer ON risk_events (customer_id, result, at) WHERE kind = 'login';
