/**
 * The receiver: SETs from configured peers, pushed (RFC 8935) or polled (RFC 8936).
 *
 * Order of checks: the push's Authorization header (the value we gave the peer when we created the
 * stream), then the SET: compact JWS, `typ` secevent+jwt, an asymmetric algorithm, a key of the
 * peer's JWKS (refetched once for an unknown kid), the signature, `iss` = the peer's issuer, `aud`
 * naming us, `jti`, `iat`, one event, `sub_id`. Then, in one transaction, the jti is recorded — a
 * jti seen before ends there with success and no side effect — and the event's actions run.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { compactVerify, decodeProtectedHeader, errors as joseErrors } from 'jose';
import { recordAudit } from '../audit/index.ts';
import type { PeerConfig } from '../config/index.ts';
import { runActions } from './actions.ts';
import type { SignalsContext } from './context.ts';
import { SetRejected } from './errors.ts';
import type { PeerMetadata } from './peerMetadata.ts';
import { isSubjectId, resolveSubject } from './subjects.ts';
import type { SubjectId } from './types.ts';
import { EVENT, SET_TYPE } from './vocabulary.ts';

const ALLOWED_ALGS = ['RS256', 'PS256', 'ES256', 'EdDSA'];
const MAX_SET_BYTES = 64 * 1024;
/**
 * A SET may have been issued a little in our future (clock skew), not more. The upkeep keeps each
 * received jti this much longer than `retentionSeconds` (src/signals/worker.ts): a SET passes the iat
 * checks until iat + retention ≤ its receipt + skew + retention, so its dedupe row outlives that.
 */
export const IAT_FUTURE_SKEW_SECONDS = 300;

export interface VerifiedSet {
  jti: string;
  iss: string;
  txn: string | undefined;
  subId: SubjectId;
  eventType: string;
  event: Record<string, unknown>;
  claims: Record<string, unknown>;
}

export const sha256 = (s: string) => createHash('sha256').update(s).digest();

/**
 * Constant-time check of a push's Authorization header against the hash we stored. No stored hash
 * (a poll subscription, or none) means we never handed out a credential: nothing matches.
 */
export function authorizationMatches(header: string | undefined, expectedHash: string | null): boolean {
  if (!expectedHash || !header) return false;
  return timingSafeEqual(sha256(header), Buffer.from(expectedHash, 'hex'));
}

export async function verifySet(
  ctx: SignalsContext,
  metadata: PeerMetadata,
  peer: PeerConfig,
  jws: string,
): Promise<VerifiedSet> {
  if (jws.length > MAX_SET_BYTES) throw new SetRejected('invalid_request', 'SET too large');
  const compact = jws.trim();
  if (!/^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/.test(compact))
    throw new SetRejected('invalid_request', 'the body is not a compact JWS');
  let header: ReturnType<typeof decodeProtectedHeader>;
  try {
    header = decodeProtectedHeader(compact);
  } catch {
    throw new SetRejected('invalid_request', 'the JWS header is not valid JSON');
  }
  const typ = typeof header.typ === 'string' ? header.typ.toLowerCase() : undefined;
  if (typ !== SET_TYPE && typ !== `application/${SET_TYPE}`)
    throw new SetRejected('invalid_request', 'typ must be secevent+jwt');
  if (typeof header.alg !== 'string' || !ALLOWED_ALGS.includes(header.alg))
    throw new SetRejected('invalid_request', 'alg not accepted');
  const alg = header.alg;
  let key: Awaited<ReturnType<PeerMetadata['key']>>;
  try {
    key = await metadata.key(peer, typeof header.kid === 'string' ? header.kid : undefined, alg);
  } catch (err) {
    ctx.logger.warn({ err, peerId: peer.id }, 'could not fetch the peer JWKS');
    // Our side cannot check the signature now: a 5xx-like refusal would make the peer retry, but
    // RFC 8935 has no code for it; invalid_key tells the peer's operators where to look.
    throw new SetRejected('invalid_key', 'the transmitter JWKS could not be retrieved');
  }
  if (!key) throw new SetRejected('invalid_key', 'no key of the transmitter matches the SET');
  let payload: Uint8Array;
  try {
    ({ payload } = await compactVerify(compact, key, { algorithms: [alg] }));
  } catch (err) {
    if (err instanceof joseErrors.JOSEError)
      throw new SetRejected('invalid_key', 'the SET signature does not verify');
    throw err;
  }
  let claims: Record<string, unknown>;
  try {
    const parsed: unknown = JSON.parse(new TextDecoder().decode(payload));
    if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) throw new Error('not an object');
    claims = parsed as Record<string, unknown>;
  } catch {
    throw new SetRejected('invalid_request', 'the SET payload is not a JSON object');
  }

  if (claims.iss !== peer.issuer)
    throw new SetRejected('invalid_issuer', 'iss is not the transmitter this endpoint receives from');
  const aud = claims.aud;
  const audiences = Array.isArray(aud) ? aud : [aud];
  const expected = [ctx.issuer, ...(await subscriptionAudiences(ctx, peer.id))];
  if (!audiences.some((a) => typeof a === 'string' && expected.includes(a)))
    throw new SetRejected('invalid_audience', 'aud does not name this receiver');
  const { jti, iat, txn, events, sub_id: subId } = claims;
  if (typeof jti !== 'string' || jti.length === 0 || jti.length > 256)
    throw new SetRejected('invalid_request', 'jti missing or invalid');
  if (typeof iat !== 'number' || !Number.isFinite(iat))
    throw new SetRejected('invalid_request', 'iat missing or invalid');
  if (iat > Date.now() / 1000 + IAT_FUTURE_SKEW_SECONDS)
    throw new SetRejected('invalid_request', 'iat is in the future');
  // Received jtis are kept for retentionSeconds; an older SET could no longer be told from a replay.
  if (iat < Date.now() / 1000 - ctx.signals.retentionSeconds)
    throw new SetRejected('invalid_request', 'the SET is too old');
  if (txn !== undefined && (typeof txn !== 'string' || txn.length > 256))
    throw new SetRejected('invalid_request', 'txn invalid');
  if (!events || typeof events !== 'object' || Array.isArray(events))
    throw new SetRejected('invalid_request', 'events missing');
  const entries = Object.entries(events as Record<string, unknown>);
  // SSF 1.0 §4.2.1: one event (more only as alternative URIs of the same one; we act on the first).
  if (entries.length === 0) throw new SetRejected('invalid_request', 'events is empty');
  const [eventType, event] = entries[0]!;
  if (!event || typeof event !== 'object' || Array.isArray(event))
    throw new SetRejected('invalid_request', 'the event is not a JSON object');
  if (!isSubjectId(subId)) throw new SetRejected('invalid_request', 'sub_id missing or invalid');
  return {
    jti,
    iss: claims.iss as string,
    txn: txn as string | undefined,
    subId,
    eventType,
    event: event as Record<string, unknown>,
    claims,
  };
}

/** Besides our issuer, the `aud` a peer's transmitter assigned to our stream there. */
async function subscriptionAudiences(ctx: SignalsContext, peerId: string): Promise<string[]> {
  const res = await ctx.db.query<{ aud: string | null }>(
    'SELECT aud FROM ssf_subscriptions WHERE peer_id = $1',
    [peerId],
  );
  return res.rows.flatMap((r) => (r.aud ? [r.aud] : []));
}

export interface ProcessResult {
  duplicate: boolean;
  customerId: string | undefined;
  actions: string[];
}

/**
 * Records and acts on a verified SET, exactly once per (peer, jti). Verification and stream-updated
 * events update the subscription; others resolve their subject and run the configured actions.
 */
export async function processSet(
  ctx: SignalsContext,
  peer: PeerConfig,
  set: VerifiedSet,
  via: 'push' | 'poll',
): Promise<ProcessResult> {
  if (set.eventType === EVENT.verification) await checkVerification(ctx, peer, set);
  return ctx.db.transaction(async (tx) => {
    const customerId =
      set.eventType === EVENT.verification || set.eventType === EVENT.streamUpdated
        ? undefined
        : await resolveSubject(tx, peer.id, set.subId, ctx.issuer);
    const inserted = await tx.query(
      `INSERT INTO ssf_received (peer_id, jti, event_type, txn, customer_id) VALUES ($1, $2, $3, $4, $5)
       ON CONFLICT (peer_id, jti) DO NOTHING`,
      [peer.id, set.jti, set.eventType, set.txn ?? null, customerId ?? null],
    );
    if (inserted.rowCount === 0) {
      // At-least-once delivery makes repeats normal; recorded so a replaying peer is visible.
      await recordAudit(tx, {
        type: 'ssf.set.duplicate',
        outcome: 'info',
        actor: `peer:${peer.id}`,
        customerId,
        data: { jti: set.jti, txn: set.txn, eventType: set.eventType, via },
      });
      return { duplicate: true, customerId, actions: [] };
    }

    let actions: string[] = [];
    if (set.eventType === EVENT.verification) {
      const state = typeof set.event.state === 'string' ? set.event.state : undefined;
      if (state)
        await tx.query(
          'UPDATE ssf_verification_requests SET confirmed_at = now() WHERE state = $1 AND peer_id = $2',
          [state, peer.id],
        );
      await tx.query('UPDATE ssf_subscriptions SET verified_at = now() WHERE peer_id = $1', [peer.id]);
    } else if (set.eventType === EVENT.streamUpdated) {
      const status = typeof set.event.status === 'string' ? set.event.status.slice(0, 32) : null;
      await tx.query('UPDATE ssf_subscriptions SET status = $2, updated_at = now() WHERE peer_id = $1', [
        peer.id,
        status,
      ]);
    } else if (customerId) {
      actions = await runActions(ctx, tx, peer, set, customerId);
      await tx.query('UPDATE ssf_received SET actions = $3::text[] WHERE peer_id = $1 AND jti = $2', [
        peer.id,
        set.jti,
        actions,
      ]);
    }
    await recordAudit(tx, {
      type: 'ssf.set.received',
      outcome: 'success',
      actor: `peer:${peer.id}`,
      customerId,
      data: {
        jti: set.jti,
        txn: set.txn,
        eventType: set.eventType,
        via,
        subjectKnown: customerId !== undefined,
        actions,
        ...(set.eventType === EVENT.streamUpdated
          ? { status: set.event.status, reason: set.event.reason }
          : {}),
      },
    });
    return { duplicate: false, customerId, actions };
  });
}

/**
 * SSF 1.0 §8.1.4.1: a verification event names our stream at the peer, and carries either no state
 * (the transmitter's own initiative) or a state we asked for.
 */
async function checkVerification(ctx: SignalsContext, peer: PeerConfig, set: VerifiedSet): Promise<void> {
  const sub = await ctx.db.query<{ stream_id: string }>(
    'SELECT stream_id FROM ssf_subscriptions WHERE peer_id = $1',
    [peer.id],
  );
  const streamId = sub.rows[0]?.stream_id;
  if (set.subId.format !== 'opaque' || (streamId !== undefined && set.subId.id !== streamId))
    throw new SetRejected('invalid_request', 'a verification event must name the stream (opaque stream_id)');
  const state = set.event.state;
  if (state === undefined) return;
  if (typeof state !== 'string') throw new SetRejected('invalid_state', 'state is not a string');
  const known = await ctx.db.query(
    'SELECT 1 FROM ssf_verification_requests WHERE state = $1 AND peer_id = $2',
    [state, peer.id],
  );
  if (known.rowCount === 0)
    throw new SetRejected('invalid_state', 'state does not match a verification request');
}
