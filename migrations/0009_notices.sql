-- Important notices the customer must acknowledge before continuing (JSDA IV.7.(2)④), e.g. a
-- warning about a phishing campaign or a change in how withdrawals are confirmed.
CREATE TABLE notices (
  id            text        PRIMARY KEY,
  title_ja      text        NOT NULL,
  title_en      text        NOT NULL,
  body_ja       text        NOT NULL,
  body_en       text        NOT NULL,
  published_by  text        NOT NULL,
  published_at  timestamptz NOT NULL DEFAULT now(),
  withdrawn_at  timestamptz
);

CREATE TABLE notice_acknowledgements (
  notice_id        text        NOT NULL REFERENCES notices (id),
  customer_id      text        NOT NULL REFERENCES customers (id),
  acknowledged_at  timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (notice_id, customer_id)
);
