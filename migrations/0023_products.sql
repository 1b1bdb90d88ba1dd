-- Products a customer allows trading in (issue 6 item 3; JSDA IV.1.(2) BP②: product and amount caps).
-- No row: the configured default (linking.defaultProducts). Blocking applies at once; allowing needs a
-- fresh passkey sign-in and waits for the withdrawal-strength policy's cool-off (allow_at), like raising
-- a limit. The catalogue is fixed in src/linking/products.ts; the CHECK keeps the two in step.
CREATE TABLE customer_products (
  customer_id  text        NOT NULL REFERENCES customers (id),
  product      text        NOT NULL CHECK (product IN ('domestic_equity', 'foreign_equity', 'investment_trust',
                             'bonds', 'margin', 'derivatives', 'fx')),
  allowed      boolean     NOT NULL,
  -- A pending allow takes effect then (the row stays not allowed until it is applied).
  allow_at     timestamptz,
  changed_at   timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (customer_id, product)
);
