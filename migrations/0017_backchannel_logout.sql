-- OpenID Connect Back-Channel Logout to every relying party a customer is signed in to (issue 6):
-- whenever a live session row goes away — sign-out, "end this session", "end all", recovery, a peer's
-- signal — one row per client of the session is queued here by the trigger below, and the hub delivers
-- a logout token to each client that registered a backchannel_logout_uri (src/oidc/backchannelLogout.ts).
CREATE TABLE backchannel_logouts (
  id            bigserial   PRIMARY KEY,
  client_id     text        NOT NULL,
  account_id    text        NOT NULL,
  sid           text        NOT NULL,
  created_at    timestamptz NOT NULL DEFAULT now(),
  attempts      int         NOT NULL DEFAULT 0,
  -- A short delay: oidc-provider re-saves a session under a new id at every sign-in (same sids); the
  -- worker skips a row whose sid still lives in a session.
  next_at       timestamptz NOT NULL DEFAULT now() + interval '1 second',
  -- delivered, skipped (no logout URI, or oidc-provider's end_session already told the client), or dead.
  outcome       text        CHECK (outcome IN ('delivered', 'skipped', 'dead')),
  done_at       timestamptz,
  last_error    text
);
CREATE INDEX backchannel_logouts_pending ON backchannel_logouts (next_at) WHERE done_at IS NULL;
CREATE INDEX backchannel_logouts_sid ON backchannel_logouts (client_id, sid);

CREATE FUNCTION queue_backchannel_logouts() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  -- Expired sessions swept away are not logouts.
  IF OLD.model = 'Session' AND (OLD.expires_at IS NULL OR OLD.expires_at > now())
     AND OLD.payload ? 'authorizations' AND OLD.payload ? 'accountId' THEN
    INSERT INTO backchannel_logouts (client_id, account_id, sid)
    SELECT a.key, OLD.payload ->> 'accountId', a.value ->> 'sid'
    FROM jsonb_each(OLD.payload -> 'authorizations') AS a
    WHERE a.value ? 'sid';
  END IF;
  RETURN OLD;
END;
$$;

CREATE TRIGGER oidc_sessions_logout AFTER DELETE ON oidc_payloads
  FOR EACH ROW WHEN (OLD.model = 'Session') EXECUTE FUNCTION queue_backchannel_logouts();
