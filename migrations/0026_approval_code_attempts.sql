-- One-time-code approvals by customers exempted from passkeys (src/linking/approvals/approvals.ts):
-- each attempt takes a slot in the customer's window before the code is checked, in one atomic
-- statement, so parallel guesses cannot get past the limit; a correct code frees the row.
CREATE TABLE approval_code_attempts (
  customer_id     text        PRIMARY KEY REFERENCES customers (id),
  attempts        integer     NOT NULL,
  window_started  timestamptz NOT NULL
);
