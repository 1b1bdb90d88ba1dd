/**
 * Streams the hub transmits on: validation of the receiver-supplied configuration (SSF 1.0 §8.1.1),
 * storage, and the JSON a receiver sees. A stream belongs to the OAuth client that created it;
 * another client is told it does not exist.
 */
import { randomBytes } from 'node:crypto';
import { z } from 'zod';
import type { PeerConfig } from '../config/index.ts';
import type { Queryable } from '../db/index.ts';
import { encryptAtRest } from '../keys/index.ts';
import type { SignalsContext } from './context.ts';
import { namesNonPublicHost } from './egress.ts';
import { ManagementError } from './errors.ts';
import { canonicalJson } from './subjects.ts';
import type { SubjectId } from './types.ts';
import { type DeliveryMethod, POLL, PUSH, TRANSMITTED_EVENTS } from './vocabulary.ts';

export interface StreamRow {
  stream_id: string;
  peer_id: string;
  client_id: string;
  aud: string;
  delivery_method: DeliveryMethod;
  endpoint_url: string;
  authorization_header_enc: string | null;
  events_requested: string[] | null;
  events_delivered: string[];
  description: string | null;
  status: 'enabled' | 'paused' | 'disabled';
  status_reason: string | null;
  signing_alg: 'RS256' | 'ES256';
  /** The status was set by the hub's operator: the receiver may not change it (setStatus). */
  operator_hold: boolean;
  /** Only as claimed for pushing (claimStreams). */
  consecutive_failures?: number;
}

export const STREAM_COLUMNS = `stream_id, peer_id, client_id, aud, delivery_method, endpoint_url, authorization_header_enc,
  events_requested, events_delivered, description, status, status_reason, signing_alg, operator_hold`;

const MAX_DESCRIPTION = 1024;

const deliverySchema = z.looseObject({
  method: z.enum([PUSH, POLL]),
  endpoint_url: z.string().max(2048).optional(),
  authorization_header: z.string().min(1).max(4096).optional(),
});

/** Receiver-supplied properties; anything else a receiver sends is ignored or checked separately. */
const receiverSchema = z.looseObject({
  events_requested: z.array(z.string().min(1).max(512)).max(100).optional(),
  delivery: deliverySchema.optional(),
  description: z.string().optional(),
});

export type ReceiverSupplied = z.output<typeof receiverSchema>;

export function parseReceiverSupplied(body: Record<string, unknown>): ReceiverSupplied {
  const parsed = receiverSchema.safeParse(body);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new ManagementError(400, 'invalid_request', `${issue.path.join('.') || 'body'}: ${issue.message}`);
  }
  return parsed.data;
}

const LOOPBACK = new Set(['127.0.0.1', '[::1]', 'localhost']);

/**
 * Whether pushes to this URL are held to public addresses: not when the configuration allows private
 * ones, nor for loopback http the configuration allows, nor at origins the operator listed for the peer.
 */
export function pushGuarded(
  ctx: Pick<SignalsContext, 'signals'>,
  peer: Pick<PeerConfig, 'endpointOrigins'> | undefined,
  url: URL,
): boolean {
  const push = ctx.signals.push;
  if (push.allowPrivateAddresses || peer?.endpointOrigins) return false;
  return !(push.allowLoopbackHttp && url.protocol === 'http:' && LOOPBACK.has(url.hostname));
}

/**
 * A push endpoint must be https (or loopback http when configured), without credentials or fragment,
 * and at a public address unless configured otherwise (pushGuarded).
 */
export function checkPushEndpoint(ctx: SignalsContext, peer: PeerConfig, value: string | undefined): string {
  if (!value)
    throw new ManagementError(400, 'invalid_request', 'delivery.endpoint_url is required for push delivery');
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new ManagementError(400, 'invalid_request', 'delivery.endpoint_url is not an absolute URL');
  }
  const httpAllowed =
    ctx.signals.push.allowLoopbackHttp && url.protocol === 'http:' && LOOPBACK.has(url.hostname);
  if (url.protocol !== 'https:' && !httpAllowed)
    throw new ManagementError(400, 'invalid_request', 'delivery.endpoint_url must use https');
  if (url.username || url.password || url.hash)
    throw new ManagementError(
      400,
      'invalid_request',
      'delivery.endpoint_url must not carry credentials or a fragment',
    );
  if (peer.endpointOrigins && !peer.endpointOrigins.some((o) => new URL(o).origin === url.origin))
    throw new ManagementError(
      400,
      'invalid_request',
      'delivery.endpoint_url is not at an origin registered for this receiver',
    );
  if (pushGuarded(ctx, peer, url) && namesNonPublicHost(url))
    throw new ManagementError(400, 'invalid_request', 'delivery.endpoint_url must be at a public address');
  return url.href;
}

const deliveredFor = (requested: string[] | null | undefined) =>
  requested ? TRANSMITTED_EVENTS.filter((e) => requested.includes(e)) : [...TRANSMITTED_EVENTS];

export const pollEndpoint = (issuer: string, streamId: string) => `${issuer}/ssf/poll/${streamId}`;

/** The stream configuration as the receiver sees it (never the authorization header it gave us). */
export function streamJson(ctx: SignalsContext, row: StreamRow): Record<string, unknown> {
  const out: Record<string, unknown> = {
    stream_id: row.stream_id,
    iss: ctx.issuer,
    aud: row.aud,
    delivery: { method: row.delivery_method, endpoint_url: row.endpoint_url },
    events_supported: [...TRANSMITTED_EVENTS],
  };
  if (row.events_requested) out.events_requested = row.events_requested;
  out.events_delivered = row.events_delivered;
  if (row.description !== null) out.description = row.description;
  if (ctx.signals.minVerificationIntervalSeconds > 0)
    out.min_verification_interval = ctx.signals.minVerificationIntervalSeconds;
  out.inactivity_timeout = ctx.signals.inactivityTimeoutSeconds;
  return out;
}

export function audienceFor(peer: PeerConfig): string {
  return peer.audience ?? peer.issuer ?? peer.clientId ?? peer.id;
}

interface Delivery {
  method: DeliveryMethod;
  endpointUrl: string;
  authorizationHeaderEnc: string | null;
}

function deliveryFor(
  ctx: SignalsContext,
  peer: PeerConfig,
  streamId: string,
  d: ReceiverSupplied['delivery'],
): Delivery {
  // No delivery: the receiver asked for poll (SSF 1.0 §8.1.1.1).
  if (!d || d.method === POLL)
    return { method: POLL, endpointUrl: pollEndpoint(ctx.issuer, streamId), authorizationHeaderEnc: null };
  const endpointUrl = checkPushEndpoint(ctx, peer, d.endpoint_url);
  return {
    method: PUSH,
    endpointUrl,
    authorizationHeaderEnc: d.authorization_header
      ? encryptAtRest(ctx.kek, d.authorization_header, `ssf-push-auth:${streamId}`)
      : null,
  };
}

export async function createStream(
  ctx: SignalsContext,
  q: Queryable,
  peer: PeerConfig,
  clientId: string,
  input: ReceiverSupplied,
): Promise<StreamRow> {
  // Creations by one receiver count one after the other (in the caller's transaction): two at once
  // cannot both see room for one more stream.
  await q.query('SELECT pg_advisory_xact_lock(hashtext($1))', [`ssf-streams:${clientId}`]);
  const count = await q.query<{ n: number; held: boolean }>(
    'SELECT count(*)::int AS n, coalesce(bool_or(operator_hold), false) AS held FROM ssf_streams WHERE client_id = $1',
    [clientId],
  );
  // A new stream would carry what the operator stopped on the held one (setStatus: byOperator).
  if (count.rows[0]?.held) throw operatorHeld();
  if ((count.rows[0]?.n ?? 0) >= ctx.signals.maxStreamsPerReceiver)
    throw new ManagementError(
      409,
      'invalid_request',
      'this receiver already has the maximum number of streams',
    );
  const streamId = randomBytes(16).toString('hex');
  const d = deliveryFor(ctx, peer, streamId, input.delivery);
  const res = await q.query<StreamRow>(
    `INSERT INTO ssf_streams (stream_id, peer_id, client_id, aud, delivery_method, endpoint_url, authorization_header_enc,
       events_requested, events_delivered, description, signing_alg)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8::text[], $9::text[], $10, $11) RETURNING ${STREAM_COLUMNS}`,
    [
      streamId,
      peer.id,
      clientId,
      audienceFor(peer),
      d.method,
      d.endpointUrl,
      d.authorizationHeaderEnc,
      input.events_requested ?? null,
      deliveredFor(input.events_requested),
      input.description?.slice(0, MAX_DESCRIPTION) ?? null,
      peer.setSigningAlg ?? ctx.signals.setSigningAlg,
    ],
  );
  return res.rows[0]!;
}

/**
 * How stale a stream's `last_activity_at` may get before a receiver's call writes it again: a tenth of
 * the inactivity timeout, at most a minute. Polls and management calls then mostly only read the row;
 * the inactivity check (worker.ts) allows for this lag, so a receiver active within the timeout is
 * never paused (an idle stream is paused at most this much later).
 */
export function activityResolutionSeconds(signals: { inactivityTimeoutSeconds: number }): number {
  return Math.min(60, signals.inactivityTimeoutSeconds / 10);
}

/** The statement's part that records receiver activity, when the recorded one is stale ($n: resolution). */
const touchStale = (n: number) =>
  `UPDATE ssf_streams SET last_activity_at = now()
   WHERE last_activity_at < now() - make_interval(secs => $${n}::double precision)`;

type ActivityContext = Pick<SignalsContext, 'db' | 'signals'>;

/**
 * The receiver's stream, for a call of the receiver that names it: that call is receiver activity
 * (SSF 1.0 §8.1.1 inactivity_timeout), so it restarts the stream's inactivity counter — written only
 * when the recorded activity is older than activityResolutionSeconds (one statement either way).
 */
export async function findStream(
  ctx: ActivityContext,
  clientId: string,
  streamId: string,
): Promise<StreamRow | undefined> {
  // The SELECT sees the row as it was before the touch; the touch changes no column it returns.
  const res = await ctx.db.query<StreamRow>(
    `WITH touched AS (${touchStale(3)} AND stream_id = $1 AND client_id = $2)
     SELECT ${STREAM_COLUMNS} FROM ssf_streams WHERE stream_id = $1 AND client_id = $2`,
    [streamId, clientId, activityResolutionSeconds(ctx.signals)],
  );
  return res.rows[0];
}

/**
 * The receiver's stream, locked for a change in the caller's transaction (a concurrent change or
 * delete waits, or finds it gone): a call that changes the stream is receiver activity too.
 */
export async function lockStream(
  q: Queryable,
  clientId: string,
  streamId: string,
): Promise<StreamRow | undefined> {
  const res = await q.query<StreamRow>(
    `UPDATE ssf_streams SET last_activity_at = now() WHERE stream_id = $1 AND client_id = $2
     RETURNING ${STREAM_COLUMNS}`,
    [streamId, clientId],
  );
  return res.rows[0];
}

/** The receiver's streams (a call naming them all: activity on each, as for findStream). */
export async function listStreams(ctx: ActivityContext, clientId: string): Promise<StreamRow[]> {
  const res = await ctx.db.query<StreamRow>(
    `WITH touched AS (${touchStale(2)} AND client_id = $1)
     SELECT ${STREAM_COLUMNS} FROM ssf_streams WHERE client_id = $1 ORDER BY created_at, stream_id`,
    [clientId, activityResolutionSeconds(ctx.signals)],
  );
  return res.rows;
}

const sameSet = (a: readonly string[], b: readonly string[]) =>
  a.length === b.length && a.every((x) => b.includes(x)) && b.every((x) => a.includes(x));

/** PATCH/PUT: transmitter-supplied properties may be sent back, but only with their current values. */
export function checkTransmitterSupplied(
  ctx: SignalsContext,
  row: StreamRow,
  body: Record<string, unknown>,
): void {
  const bad = (what: string) =>
    new ManagementError(400, 'invalid_request', `${what} does not match the stream`);
  if (body.iss !== undefined && body.iss !== ctx.issuer) throw bad('iss');
  if (body.aud !== undefined) {
    const aud = body.aud;
    const ok = aud === row.aud || (Array.isArray(aud) && aud.length === 1 && aud[0] === row.aud);
    if (!ok) throw bad('aud');
  }
  const arr = (v: unknown) => Array.isArray(v) && v.every((x) => typeof x === 'string');
  if (
    body.events_supported !== undefined &&
    !(arr(body.events_supported) && sameSet(body.events_supported as string[], TRANSMITTED_EVENTS))
  )
    throw bad('events_supported');
  if (
    body.events_delivered !== undefined &&
    !(arr(body.events_delivered) && sameSet(body.events_delivered as string[], row.events_delivered))
  )
    throw bad('events_delivered');
  if (
    body.min_verification_interval !== undefined &&
    body.min_verification_interval !== ctx.signals.minVerificationIntervalSeconds
  )
    throw bad('min_verification_interval');
  if (
    body.inactivity_timeout !== undefined &&
    body.inactivity_timeout !== ctx.signals.inactivityTimeoutSeconds
  )
    throw bad('inactivity_timeout');
}

/** PATCH (replace = false: absent properties stay) or PUT (replace = true: absent properties go). */
export async function updateStream(
  ctx: SignalsContext,
  q: Queryable,
  peer: PeerConfig,
  row: StreamRow,
  input: ReceiverSupplied,
  replace: boolean,
): Promise<StreamRow> {
  const has = (k: keyof ReceiverSupplied) => input[k] !== undefined;
  const requested = has('events_requested') ? input.events_requested! : replace ? null : row.events_requested;
  let method = row.delivery_method;
  let endpointUrl = row.endpoint_url;
  let authEnc = row.authorization_header_enc;
  if (has('delivery') || replace) {
    const d = deliveryFor(ctx, peer, row.stream_id, input.delivery);
    method = d.method;
    endpointUrl = d.endpointUrl;
    // A push delivery without a new header keeps the old one only on PATCH of the same endpoint.
    authEnc =
      d.authorizationHeaderEnc ??
      (!replace && d.method === PUSH && row.delivery_method === PUSH && d.endpointUrl === row.endpoint_url
        ? row.authorization_header_enc
        : null);
  }
  const description = has('description')
    ? input.description!.slice(0, MAX_DESCRIPTION)
    : replace
      ? null
      : row.description;
  const res = await q.query<StreamRow>(
    `UPDATE ssf_streams SET events_requested = $2::text[], events_delivered = $3::text[], delivery_method = $4,
       endpoint_url = $5, authorization_header_enc = $6, description = $7, updated_at = now(),
       next_attempt_at = CASE WHEN endpoint_url IS DISTINCT FROM $5 THEN now() ELSE next_attempt_at END,
       consecutive_failures = CASE WHEN endpoint_url IS DISTINCT FROM $5 THEN 0 ELSE consecutive_failures END
     WHERE stream_id = $1 RETURNING ${STREAM_COLUMNS}`,
    [row.stream_id, requested, deliveredFor(requested), method, endpointUrl, authEnc, description],
  );
  return res.rows[0]!;
}

/**
 * Deletes the receiver's stream; false when it has none of that id. One the operator paused or
 * disabled is not the receiver's to delete (403, as for its status): deleting and creating anew
 * would lift the hold.
 */
export async function deleteStream(q: Queryable, clientId: string, streamId: string): Promise<boolean> {
  const res = await q.query(
    'DELETE FROM ssf_streams WHERE stream_id = $1 AND client_id = $2 AND NOT operator_hold',
    [streamId, clientId],
  );
  if (res.rowCount > 0) return true;
  const held = await q.query('SELECT 1 FROM ssf_streams WHERE stream_id = $1 AND client_id = $2', [
    streamId,
    clientId,
  ]);
  if (held.rowCount > 0) throw operatorHeld();
  return false;
}

/** The receiver may not lift, or sidestep, a status the hub's operator set (SSF 1.0 §8.1.2.2). */
const operatorHeld = () =>
  new ManagementError(
    403,
    'access_denied',
    'the transmitter’s operator paused or disabled a stream of this receiver; only the operator can lift that',
  );

export interface StatusChange {
  status: StreamRow['status'];
  reason: string | null;
  previous: StreamRow['status'];
  /** SETs dropped because the stream was disabled. */
  dropped: number;
}

/**
 * Sets a stream's status. Disabling drops what was held (SSF 1.0 §8.1.2: a disabled stream keeps
 * nothing); pausing keeps pending SETs until the stream is enabled again. `byOperator`: a pause or
 * disable holds against the receiver until an operator enables the stream.
 */
export async function setStatus(
  q: Queryable,
  streamId: string,
  status: StreamRow['status'],
  reason: string | null,
  byOperator = false,
): Promise<StatusChange | undefined> {
  const res = await q.query<{ previous: StreamRow['status'] }>(
    `WITH old AS (SELECT status FROM ssf_streams WHERE stream_id = $1 FOR UPDATE)
     UPDATE ssf_streams s SET status = $2, status_reason = $3, updated_at = now(),
       operator_hold = ($4 AND $2 <> 'enabled'),
       next_attempt_at = CASE WHEN $2 = 'enabled' THEN now() ELSE s.next_attempt_at END,
       consecutive_failures = CASE WHEN $2 = 'enabled' THEN 0 ELSE s.consecutive_failures END
     FROM old WHERE s.stream_id = $1 RETURNING old.status AS previous`,
    [streamId, status, reason, byOperator],
  );
  const previous = res.rows[0]?.previous;
  if (!previous) return undefined;
  let dropped = 0;
  if (status === 'disabled') {
    const del = await q.query(
      `DELETE FROM ssf_outbox WHERE stream_id = $1 AND state = 'pending' AND NOT control`,
      [streamId],
    );
    dropped = del.rowCount;
  }
  return { status, reason, previous, dropped };
}

/**
 * Records a subject the receiver added (included) or removed, under the stream's lock (lockStream):
 * a new one only while the stream holds fewer than maxSubjectsPerStream (409 beyond).
 */
export async function recordStreamSubject(
  ctx: Pick<SignalsContext, 'signals'>,
  q: Queryable,
  streamId: string,
  subject: SubjectId,
  customerId: string | undefined,
  included: boolean,
  verified: boolean | undefined,
): Promise<void> {
  const key = canonicalJson(subject);
  const held = await q.query<{ n: number; known: boolean }>(
    `SELECT count(*)::int AS n, coalesce(bool_or(subject_key = $2), false) AS known
     FROM ssf_stream_subjects WHERE stream_id = $1`,
    [streamId, key],
  );
  const { n, known } = held.rows[0] ?? { n: 0, known: false };
  if (!known && n >= ctx.signals.maxSubjectsPerStream)
    throw new ManagementError(
      409,
      'invalid_request',
      'this stream already has the maximum number of subjects',
    );
  await q.query(
    `INSERT INTO ssf_stream_subjects (stream_id, subject_key, subject, customer_id, included, verified)
     VALUES ($1, $2, $3::jsonb, $4, $5, $6)
     ON CONFLICT (stream_id, subject_key) DO UPDATE SET included = EXCLUDED.included, verified = EXCLUDED.verified,
       customer_id = EXCLUDED.customer_id, updated_at = now()`,
    [streamId, key, JSON.stringify(subject), customerId ?? null, included, verified ?? null],
  );
}
