-- Four eyes on the console actions that hand out a way into a customer's account (issue 8, operator
-- console; a security review: one `operator` could issue an enrollment ticket for any customer, see
-- it, and enroll a passkey of their own). An enrollment ticket for a customer who already holds a
-- credential, and every MFA exemption, are requested by one operator and carried out only when a
-- different operator with the admin role approves (src/console/requests.ts).
CREATE TABLE console_requests (
  id            text        PRIMARY KEY,
  kind          text        NOT NULL CHECK (kind IN ('enrollment_ticket', 'exemption_grant')),
  customer_id   text        NOT NULL REFERENCES customers (id),
  reason        text        NOT NULL,
  requested_by  text        NOT NULL,
  requested_at  timestamptz NOT NULL DEFAULT now(),
  expires_at    timestamptz NOT NULL,
  status        text        NOT NULL DEFAULT 'pending'
                CHECK (status IN ('pending', 'approved', 'rejected', 'expired')),
  decided_by    text,
  decided_at    timestamptz
);
-- One open request per customer and kind.
CREATE UNIQUE INDEX console_requests_pending ON console_requests (customer_id, kind) WHERE status = 'pending';
CREATE INDEX console_requests_status ON console_requests (status, requested_at);
