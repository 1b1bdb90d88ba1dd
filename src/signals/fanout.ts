/**
 * Fan-out: turns queued events (ssf_events) into one signed SET per receiving stream (ssf_outbox).
 *
 * A batch of events is claimed with `FOR UPDATE SKIP LOCKED` and a short lease, so any number of
 * nodes share the work and a node that dies mid-batch only delays it by the lease. The SETs are
 * signed outside any transaction (on the thread pool) and stored in chunks; `UNIQUE (event_id,
 * stream_id)` makes a batch retried after a crash harmless.
 */
import { randomUUID } from 'node:crypto';
import type { SignalsContext } from './context.ts';
import { encodeHeader, type SetAlg, signEncoded } from './jws.ts';
import { outgoingSubject } from './subjects.ts';
import type { SubjectId } from './types.ts';
import { EVENT, SET_TYPE } from './vocabulary.ts';

interface Target {
  event_id: string;
  txn: string;
  event_type: string;
  customer_id: string | null;
  event_stream_id: string | null;
  payload: { claims: Record<string, unknown>; subject?: SubjectId };
  stream_id: string;
  aud: string;
  signing_alg: SetAlg;
  pairwise_sub: string | null;
  shared_subject: SubjectId | null;
  consented_at: Date | null;
}

const CLAIM_LEASE_SECONDS = 60;

/**
 * Every (event, stream) pair a batch of events should produce. Stream events go to their stream
 * (stream-updated even when disabled: it announces that). Customer events go to every stream whose
 * peer is linked to the customer, that delivers the type, is not disabled, did not remove the
 * subject, and is not the peer the event came from. In event order, so that chunks stored one after
 * the other never put a later event of a subject ahead of an earlier one.
 */
const TARGETS_SQL = `
  SELECT * FROM (
  SELECT e.id::text AS event_id, e.txn, e.event_type, e.customer_id, e.stream_id AS event_stream_id, e.payload,
         s.stream_id, s.aud, s.signing_alg, NULL AS pairwise_sub, NULL::jsonb AS shared_subject, NULL::timestamptz AS consented_at
  FROM ssf_events e JOIN ssf_streams s ON s.stream_id = e.stream_id
  WHERE e.id = ANY ($1::bigint[]) AND (s.status <> 'disabled' OR e.event_type = $2)
  UNION ALL
  SELECT e.id::text, e.txn, e.event_type, e.customer_id, NULL, e.payload,
         s.stream_id, s.aud, s.signing_alg, l.pairwise_sub, l.shared_subject, l.consented_at
  FROM ssf_events e
  JOIN ssf_subject_links l ON l.customer_id = e.customer_id
  JOIN ssf_streams s ON s.peer_id = l.peer_id
  WHERE e.id = ANY ($1::bigint[]) AND e.stream_id IS NULL
    AND s.status <> 'disabled' AND e.event_type = ANY (s.events_delivered)
    AND s.peer_id IS DISTINCT FROM e.origin_peer
    AND (e.event_type <> $3 OR (l.consented_at IS NOT NULL AND l.shared_subject = e.payload -> 'subject'))
    AND NOT EXISTS (SELECT 1 FROM ssf_stream_subjects ss
                    WHERE ss.stream_id = s.stream_id AND ss.customer_id = e.customer_id AND NOT ss.included)
  ) t ORDER BY event_id::bigint, stream_id`;

/** SETs signed and stored per statement: bounds memory and lets pushing start before a big fan-out ends. */
const CHUNK = 1000;

/**
 * Fans out one batch of events; returns how many events it handled (0 when nothing was waiting).
 * SETs are stored chunk by chunk (a crash between chunks is harmless: the events stay unfinished,
 * are claimed again after the lease, and `ON CONFLICT` keeps what was stored), then the events are
 * marked done.
 */
export async function fanOutBatch(
  ctx: SignalsContext,
  limit = 500,
  onChunk?: () => void,
): Promise<{ events: number; sets: number }> {
  const claimed = await ctx.db.query<{ id: string }>(
    `UPDATE ssf_events SET claimed_until = now() + make_interval(secs => $2)
     WHERE id IN (SELECT id FROM ssf_events
                  WHERE fanned_out_at IS NULL AND (claimed_until IS NULL OR claimed_until < now())
                  ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED)
     RETURNING id::text AS id`,
    [limit, CLAIM_LEASE_SECONDS],
  );
  if (claimed.rowCount === 0) return { events: 0, sets: 0 };
  const ids = claimed.rows.map((r) => r.id);
  const targets = (
    await ctx.db.query<Target>(TARGETS_SQL, [ids, EVENT.streamUpdated, EVENT.identifierChanged])
  ).rows;

  const headers: Record<SetAlg, string> = {
    RS256: encodeHeader({ typ: SET_TYPE, alg: 'RS256', kid: ctx.keys.set.RS256.kid }),
    ES256: encodeHeader({ typ: SET_TYPE, alg: 'ES256', kid: ctx.keys.set.ES256.kid }),
  };
  const iat = Math.floor(Date.now() / 1000);
  const build = async (t: Target) => {
    const jti = randomUUID();
    let subId: SubjectId;
    let subjectKey: string;
    if (t.event_stream_id) {
      // Stream events name the stream itself (SSF 1.0 §8.1.4.1, §8.1.5).
      subId = { format: 'opaque', id: t.stream_id };
      subjectKey = `stream:${t.stream_id}`;
    } else {
      subId =
        t.event_type === EVENT.identifierChanged && t.payload.subject
          ? t.payload.subject
          : outgoingSubject(ctx.issuer, {
              pairwiseSub: t.pairwise_sub!,
              sharedSubject: t.shared_subject,
              consentedAt: t.consented_at,
            });
      subjectKey = `customer:${t.customer_id}`;
    }
    // RFC 8417 + SSF 1.0 §4.1: one event, sub_id (never sub), no exp.
    const claims = {
      iss: ctx.issuer,
      jti,
      iat,
      aud: t.aud,
      txn: t.txn,
      sub_id: subId,
      events: { [t.event_type]: t.payload.claims },
    };
    const set = await signEncoded(headers[t.signing_alg], claims, ctx.keys.set[t.signing_alg]);
    return {
      streamId: t.stream_id,
      eventId: t.event_id,
      jti,
      subjectKey,
      set,
      control: t.event_type === EVENT.streamUpdated,
    };
  };

  for (let i = 0; i < targets.length; i += CHUNK) {
    const rows = await Promise.all(targets.slice(i, i + CHUNK).map(build));
    await ctx.db.query(
      `INSERT INTO ssf_outbox (stream_id, event_id, jti, subject_key, set_jwt, control)
       SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::boolean[])
       ON CONFLICT (event_id, stream_id) DO NOTHING`,
      [
        rows.map((r) => r.streamId),
        rows.map((r) => r.eventId),
        rows.map((r) => r.jti),
        rows.map((r) => r.subjectKey),
        rows.map((r) => r.set),
        rows.map((r) => r.control),
      ],
    );
    ctx.longPolls.wake(rows.map((r) => r.streamId));
    onChunk?.();
  }
  await ctx.db.query(
    'UPDATE ssf_events SET fanned_out_at = now(), claimed_until = NULL WHERE id = ANY ($1::bigint[])',
    [ids],
  );
  return { events: ids.length, sets: targets.length };
}
