-- Shared Signals (SSF 1.0): the hub as transmitter (streams, subjects, event outbox) and as
-- receiver (subscriptions at peers, received jtis, actions for later modules). See src/signals/.

-- SET signing keys and the key the hub authenticates with at peers (client assertions). Kept apart
-- from the OP's keys: interop streams need RS256, which the FAPI provider must never use.
CREATE TABLE ssf_keys (
  kid              text        PRIMARY KEY,
  purpose          text        NOT NULL CHECK (purpose IN ('set', 'client')),
  alg              text        NOT NULL,
  public_jwk       jsonb       NOT NULL,
  private_jwk_enc  text        NOT NULL,
  status           text        NOT NULL CHECK (status IN ('current', 'previous', 'retired')),
  created_at       timestamptz NOT NULL DEFAULT now()
);

-- Streams this hub transmits on. client_id is the receiver as its access tokens name it.
CREATE TABLE ssf_streams (
  stream_id                 text        PRIMARY KEY,
  peer_id                   text        NOT NULL,
  client_id                 text        NOT NULL,
  aud                       text        NOT NULL,
  delivery_method           text        NOT NULL CHECK (delivery_method IN ('urn:ietf:rfc:8935', 'urn:ietf:rfc:8936')),
  -- push: the receiver's URL; poll: ours.
  endpoint_url              text        NOT NULL,
  -- The Authorization header value the receiver asked us to send, sealed with the key-encryption key.
  authorization_header_enc  text,
  events_requested          text[],
  events_delivered          text[]      NOT NULL,
  description               text,
  status                    text        NOT NULL DEFAULT 'enabled' CHECK (status IN ('enabled', 'paused', 'disabled')),
  status_reason             text,
  signing_alg               text        NOT NULL,
  created_at                timestamptz NOT NULL DEFAULT now(),
  updated_at                timestamptz NOT NULL DEFAULT now(),
  last_verification_at      timestamptz,
  -- Push scheduling: one node works a stream at a time (lease); failures back the stream off.
  lease_owner               text,
  lease_until               timestamptz,
  next_attempt_at           timestamptz NOT NULL DEFAULT now(),
  consecutive_failures      integer     NOT NULL DEFAULT 0,
  last_error                text
);
CREATE INDEX ssf_streams_client ON ssf_streams (client_id);
CREATE INDEX ssf_streams_peer ON ssf_streams (peer_id);

-- Subjects a receiver added or removed. Streams include every subject the peer has a relationship
-- with (default_subjects ALL); a removal excludes one, an add re-includes it.
CREATE TABLE ssf_stream_subjects (
  stream_id    text        NOT NULL REFERENCES ssf_streams (stream_id) ON DELETE CASCADE,
  subject_key  text        NOT NULL,
  subject      jsonb       NOT NULL,
  -- The customer the subject names for this stream's peer, when it names one.
  customer_id  text,
  included     boolean     NOT NULL,
  verified     boolean,
  updated_at   timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (stream_id, subject_key)
);
CREATE INDEX ssf_stream_subjects_customer ON ssf_stream_subjects (customer_id, stream_id) WHERE customer_id IS NOT NULL;

-- A customer's relationship with a peer and the identifiers used with it. Events about a customer
-- go only to peers listed here. Towards the peer the customer is `pairwise_sub` (opaque, per peer),
-- unless the customer consented to share `shared_subject` (e.g. an e-mail address) with it.
CREATE TABLE ssf_subject_links (
  peer_id           text        NOT NULL,
  customer_id       text        NOT NULL REFERENCES customers (id),
  pairwise_sub      text        NOT NULL,
  -- How the peer names the customer in SETs it sends us (learnt when the accounts were linked).
  peer_subject      jsonb,
  peer_subject_key  text,
  shared_subject    jsonb,
  consent_ref       text,
  consented_at      timestamptz,
  created_at        timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (peer_id, customer_id),
  UNIQUE (peer_id, pairwise_sub),
  UNIQUE (peer_id, peer_subject_key)
);
CREATE INDEX ssf_subject_links_customer ON ssf_subject_links (customer_id);

-- Security events the hub emits, written in the transaction of whatever caused them; a worker
-- fans each out to the streams that should carry it (ssf_outbox). stream_id is set for stream
-- events (verification, stream-updated); origin_peer for events forwarded from a peer.
CREATE TABLE ssf_events (
  id             bigserial   PRIMARY KEY,
  txn            text        NOT NULL,
  event_type     text        NOT NULL,
  customer_id    text,
  stream_id      text,
  payload        jsonb       NOT NULL,
  origin_peer    text,
  occurred_at    timestamptz NOT NULL DEFAULT now(),
  claimed_until  timestamptz,
  fanned_out_at  timestamptz
);
CREATE INDEX ssf_events_pending ON ssf_events (id) WHERE fanned_out_at IS NULL;

-- Every txn emitted or forwarded by this hub: a txn seen before is never forwarded again (no loops).
CREATE TABLE ssf_txns (
  txn      text        PRIMARY KEY,
  at       timestamptz NOT NULL DEFAULT now()
);

-- One signed SET per (event, stream). state: pending (to deliver, or held while paused),
-- delivered (pushed and answered 202, or acknowledged by a poll), failed (dead letter).
-- control rows (stream-updated) bypass the pause, which they announce.
CREATE TABLE ssf_outbox (
  id            bigserial   PRIMARY KEY,
  stream_id     text        NOT NULL REFERENCES ssf_streams (stream_id) ON DELETE CASCADE,
  event_id      bigint      NOT NULL,
  jti           text        NOT NULL UNIQUE,
  subject_key   text        NOT NULL,
  set_jwt       text        NOT NULL,
  control       boolean     NOT NULL DEFAULT false,
  state         text        NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'failed')),
  attempts      integer     NOT NULL DEFAULT 0,
  created_at    timestamptz NOT NULL DEFAULT now(),
  served_until  timestamptz,
  delivered_at  timestamptz,
  last_error    text,
  UNIQUE (event_id, stream_id)
);
CREATE INDEX ssf_outbox_pending ON ssf_outbox (stream_id, event_id, id) WHERE state = 'pending';
CREATE INDEX ssf_outbox_failed ON ssf_outbox (stream_id, id) WHERE state = 'failed';
CREATE INDEX ssf_outbox_delivered_at ON ssf_outbox (delivered_at) WHERE state = 'delivered';

-- Receiver: streams this hub holds at peers' transmitters.
CREATE TABLE ssf_subscriptions (
  peer_id            text        PRIMARY KEY,
  stream_id          text        NOT NULL,
  delivery_method    text        NOT NULL,
  -- The aud the peer's transmitter gave the stream (SETs must name it or our issuer).
  aud                text,
  -- SHA-256 of the Authorization header value the peer must send with pushes.
  push_auth_hash     text,
  poll_endpoint      text,
  status             text,
  created_at         timestamptz NOT NULL DEFAULT now(),
  updated_at         timestamptz NOT NULL DEFAULT now(),
  verified_at        timestamptz
);

-- Receiver: verification states we asked peers to echo.
CREATE TABLE ssf_verification_requests (
  state        text        PRIMARY KEY,
  peer_id      text        NOT NULL,
  stream_id    text        NOT NULL,
  requested_at timestamptz NOT NULL DEFAULT now(),
  confirmed_at timestamptz
);

-- Receiver: every SET accepted from a peer, by jti (a repeat is answered 202 and does nothing).
CREATE TABLE ssf_received (
  peer_id      text        NOT NULL,
  jti          text        NOT NULL,
  event_type   text        NOT NULL,
  txn          text,
  customer_id  text,
  actions      text[]      NOT NULL DEFAULT '{}',
  received_at  timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (peer_id, jti)
);
CREATE INDEX ssf_received_txn ON ssf_received (customer_id, txn, event_type) WHERE txn IS NOT NULL;
CREATE INDEX ssf_received_at ON ssf_received (received_at);

-- Receiver: actions for modules that do not exist yet (risk, step-up, re-proofing, sweeps, notify)
-- to pick up. Revocation and forwarding happen at once and are only recorded in audit_events.
CREATE TABLE ssf_action_outbox (
  id            bigserial   PRIMARY KEY,
  action        text        NOT NULL,
  customer_id   text        NOT NULL,
  peer_id       text        NOT NULL,
  jti           text        NOT NULL,
  txn           text,
  event_type    text        NOT NULL,
  detail        jsonb       NOT NULL DEFAULT '{}',
  created_at    timestamptz NOT NULL DEFAULT now(),
  processed_at  timestamptz
);
CREATE INDEX ssf_action_outbox_pending ON ssf_action_outbox (action, id) WHERE processed_at IS NULL;

-- revokeCustomerSessions (src/oidc/adapter.ts) finds a customer's sessions and grants by accountId
-- through oidc_payloads_account, which 0007_passkey_lifecycle.sql creates.
