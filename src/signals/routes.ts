/**
 * The SSF HTTP surface.
 *
 *   GET  /.well-known/ssf-configuration[/<issuer path>]   transmitter metadata (SSF 1.0 §7)
 *   GET  /ssf/jwks                                        SET signing keys
 *   GET  /ssf/client-jwks                                 the key the hub authenticates with at peers
 *   POST|GET|PATCH|PUT|DELETE /ssf/stream                 stream configuration (§8.1.1)
 *   GET|POST /ssf/status                                  stream status (§8.1.2)
 *   POST /ssf/subjects/add, /ssf/subjects/remove          subjects (§8.1.3)
 *   POST /ssf/verify                                      verification (§8.1.4)
 *   POST /ssf/poll/<stream_id>                            poll delivery (RFC 8936)
 *   POST /ssf/receive/<peer_id>                           push receiver (RFC 8935)
 *
 * Management and poll errors are OAuth-shaped `{error, error_description}`; push receiver errors
 * are RFC 8935 `{err, description}`. Client mistakes are always 4xx.
 */
import Router from '@koa/router';
import type { Context } from 'koa';
import type Provider from 'oidc-provider';
import { recordAudit } from '../audit/index.ts';
import { recordSampledAudit } from '../audit/sampled.ts';
import type { Queryable } from '../db/index.ts';
import { createAuthenticator, type SsfState } from './auth.ts';
import type { SignalsContext } from './context.ts';
import { emitStreamEvent } from './emit.ts';
import { ManagementError, SetRejected } from './errors.ts';
import type { PeerMetadata } from './peerMetadata.ts';
import { poll } from './poll.ts';
import { authorizationMatches, processSet, verifySet } from './receiver.ts';
import {
  checkTransmitterSupplied,
  createStream,
  deleteStream,
  findStream,
  listStreams,
  lockStream,
  parseReceiverSupplied,
  recordStreamSubject,
  setStatus,
  streamJson,
  updateStream,
} from './streams.ts';
import { isSubjectId, resolveSubject } from './subjects.ts';
import { EVENT, POLL, PUSH, SET_CONTENT_TYPE } from './vocabulary.ts';

const MAX_BODY = 64 * 1024;

/** The body as text, bounded; a body that is too large is a 413. */
async function readText(ctx: Context, limit = MAX_BODY): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of ctx.req) {
    size += (chunk as Buffer).length;
    if (size > limit) throw new ManagementError(413, 'invalid_request', 'request body too large');
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks).toString('utf8');
}

/** A JSON object body (the content type may be absent, but if present must be JSON). */
async function readJson(ctx: Context): Promise<Record<string, unknown>> {
  const type = ctx.request.type;
  if (type && type !== 'application/json' && !type.endsWith('+json'))
    throw new ManagementError(415, 'invalid_request', 'expected application/json');
  const text = await readText(ctx);
  try {
    const v: unknown = JSON.parse(text);
    if (v && typeof v === 'object' && !Array.isArray(v)) return v as Record<string, unknown>;
  } catch {
    // fall through
  }
  throw new ManagementError(400, 'invalid_request', 'the request body is not a JSON object');
}

function streamIdOf(value: unknown): string {
  if (typeof value !== 'string' || value.length === 0 || value.length > 128)
    throw new ManagementError(400, 'invalid_request', 'stream_id is required');
  return value;
}

const notFound = () => new ManagementError(404, 'not_found', 'no such stream for this receiver');

export interface SignalsRoutesOptions {
  ctx: SignalsContext;
  provider: Provider;
  metadata: PeerMetadata;
  enabled: boolean;
}

export function signalsRoutes({ ctx, provider, metadata, enabled }: SignalsRoutesOptions): Router {
  const router = new Router();
  if (!enabled) return router;
  const auth = createAuthenticator(ctx, provider);
  const issuerPath = new URL(ctx.issuer).pathname.replace(/\/$/, '');
  const base = `${ctx.issuer}/ssf`;

  // Written in the transaction of the change it records: both exist, or neither.
  /**
   * A push endpoint as the audit log keeps it: without its query (a receiver may have put a token
   * there; the stream row keeps it). Credentials in the user part and fragments are refused anyway.
   */
  const auditedEndpoint = (endpoint: string | null | undefined) => {
    if (!endpoint) return undefined;
    try {
      const u = new URL(endpoint);
      return `${u.protocol}//${u.host}${u.pathname}${u.search ? '?…' : ''}`;
    } catch {
      return '(unparsable)';
    }
  };
  const audit = (q: Queryable, c: Context, type: string, clientId: string, data: Record<string, unknown>) =>
    recordAudit(q, {
      type,
      outcome: 'success',
      actor: `client:${clientId}`,
      clientId,
      ip: c.ip,
      userAgent: c.get('user-agent') || undefined,
      interactionId: c.state.interactionId as string | undefined,
      data,
    });

  // Every SSF response is uncacheable; management errors get their OAuth shape here.
  router.use(['/ssf', '/.well-known/ssf-configuration'], async (c, next) => {
    c.set('cache-control', 'no-store');
    try {
      await next();
    } catch (err) {
      if (err instanceof ManagementError) {
        c.status = err.status;
        if (err.challenge) c.set('www-authenticate', err.challenge);
        if (err.retryAfterSeconds !== undefined) c.set('retry-after', String(err.retryAfterSeconds));
        c.body = { error: err.error, error_description: err.message };
        if (err.status === 401 || err.status === 403) {
          // Without a live token anyone can cause this as fast as they can send requests: sampled
          // (docs/audit-sampling.md). A caller with one is named and always recorded.
          const clientId = (c.state as SsfState).ssfTokenClient;
          const event = {
            type: 'ssf.management.rejected',
            outcome: 'failure' as const,
            ...(clientId ? { actor: `client:${clientId}`, clientId } : {}),
            ip: c.ip,
            data: { path: c.path, method: c.method, error: err.error, reason: err.message },
          };
          await (clientId ? recordAudit(ctx.db, event) : recordSampledAudit(ctx.db, event));
        }
        return;
      }
      throw err;
    }
  });

  router.get(`/.well-known/ssf-configuration${issuerPath}`, (c) => {
    // SSF 1.0 §7.1 and CAEP interop §2.3: every endpoint, both delivery methods, OAuth; no empty arrays.
    c.body = {
      spec_version: '1_0',
      issuer: ctx.issuer,
      jwks_uri: `${base}/jwks`,
      delivery_methods_supported: [PUSH, POLL],
      configuration_endpoint: `${base}/stream`,
      status_endpoint: `${base}/status`,
      add_subject_endpoint: `${base}/subjects/add`,
      remove_subject_endpoint: `${base}/subjects/remove`,
      verification_endpoint: `${base}/verify`,
      authorization_schemes: [{ spec_urn: 'urn:ietf:rfc:6749' }],
      default_subjects: 'ALL',
    };
  });
  router.get('/ssf/jwks', (c) => {
    c.set('cache-control', 'public, max-age=300');
    c.type = 'application/jwk-set+json';
    c.body = ctx.keys.setJwks;
  });
  router.get('/ssf/client-jwks', (c) => {
    c.set('cache-control', 'public, max-age=300');
    c.type = 'application/jwk-set+json';
    c.body = ctx.keys.clientJwks;
  });

  // ---- stream configuration -------------------------------------------------------------------
  router.post('/ssf/stream', async (c) => {
    const caller = await auth.authenticate(c, 'ssf.manage');
    const input = parseReceiverSupplied(await readJson(c));
    const row = await ctx.db.transaction(async (tx) => {
      const row = await createStream(ctx, tx, caller.peer, caller.clientId, input);
      await audit(tx, c, 'ssf.stream.created', caller.clientId, {
        streamId: row.stream_id,
        peerId: caller.peer.id,
        delivery: row.delivery_method,
        endpoint: row.delivery_method === PUSH ? auditedEndpoint(row.endpoint_url) : undefined,
        eventsDelivered: row.events_delivered.length,
      });
      return row;
    });
    c.status = 201;
    c.body = streamJson(ctx, row);
  });

  router.get('/ssf/stream', async (c) => {
    const caller = await auth.authenticate(c, 'ssf.read');
    const id = c.query.stream_id;
    if (id === undefined) {
      c.body = (await listStreams(ctx, caller.clientId)).map((r) => streamJson(ctx, r));
      return;
    }
    const row = await findStream(ctx, caller.clientId, streamIdOf(id));
    if (!row) throw notFound();
    c.body = streamJson(ctx, row);
  });

  const update = (replace: boolean) => async (c: Context) => {
    const caller = await auth.authenticate(c, 'ssf.manage');
    const body = await readJson(c);
    const id = streamIdOf(body.stream_id);
    const input = parseReceiverSupplied(body);
    const updated = await ctx.db.transaction(async (tx) => {
      const row = await lockStream(tx, caller.clientId, id);
      if (!row) throw notFound();
      checkTransmitterSupplied(ctx, row, body);
      const updated = await updateStream(ctx, tx, caller.peer, row, input, replace);
      await audit(tx, c, replace ? 'ssf.stream.replaced' : 'ssf.stream.updated', caller.clientId, {
        streamId: row.stream_id,
        delivery: updated.delivery_method,
        endpoint: updated.delivery_method === PUSH ? auditedEndpoint(updated.endpoint_url) : undefined,
      });
      return updated;
    });
    c.body = streamJson(ctx, updated);
  };
  router.patch('/ssf/stream', update(false));
  router.put('/ssf/stream', update(true));

  router.delete('/ssf/stream', async (c) => {
    const caller = await auth.authenticate(c, 'ssf.manage');
    const id = streamIdOf(c.query.stream_id);
    await ctx.db.transaction(async (tx) => {
      if (!(await deleteStream(tx, caller.clientId, id))) throw notFound();
      await audit(tx, c, 'ssf.stream.deleted', caller.clientId, { streamId: id });
    });
    c.status = 204;
  });

  // ---- status ---------------------------------------------------------------------------------
  router.get('/ssf/status', async (c) => {
    const caller = await auth.authenticate(c, 'ssf.read');
    const row = await findStream(ctx, caller.clientId, streamIdOf(c.query.stream_id));
    if (!row) throw notFound();
    c.body = {
      stream_id: row.stream_id,
      status: row.status,
      ...(row.status_reason ? { reason: row.status_reason } : {}),
    };
  });

  router.post('/ssf/status', async (c) => {
    const caller = await auth.authenticate(c, 'ssf.manage');
    const body = await readJson(c);
    const id = streamIdOf(body.stream_id);
    const status = body.status;
    if (status !== 'enabled' && status !== 'paused' && status !== 'disabled')
      throw new ManagementError(400, 'invalid_request', 'status must be enabled, paused or disabled');
    if (body.reason !== undefined && typeof body.reason !== 'string')
      throw new ManagementError(400, 'invalid_request', 'reason must be a string');
    const reason = typeof body.reason === 'string' ? body.reason.slice(0, 256) : null;
    await ctx.db.transaction(async (tx) => {
      const row = await lockStream(tx, caller.clientId, id);
      if (!row) throw notFound();
      if (row.operator_hold)
        throw new ManagementError(
          403,
          'access_denied',
          'the transmitter’s operator set this stream’s status; only the operator can change it',
        );
      const change = await setStatus(tx, row.stream_id, status, reason);
      if (!change) throw notFound();
      await audit(tx, c, 'ssf.stream.status', caller.clientId, {
        streamId: row.stream_id,
        from: change.previous,
        to: status,
        reason,
        dropped: change.dropped,
      });
    });
    c.body = { stream_id: id, status, ...(reason ? { reason } : {}) };
  });

  // ---- subjects -------------------------------------------------------------------------------
  const subjects = (included: boolean) => async (c: Context) => {
    const caller = await auth.authenticate(c, 'ssf.manage');
    const body = await readJson(c);
    const id = streamIdOf(body.stream_id);
    const subject = body.subject;
    if (!isSubjectId(subject))
      throw new ManagementError(400, 'invalid_request', 'subject is not a subject identifier');
    if (body.verified !== undefined && typeof body.verified !== 'boolean')
      throw new ManagementError(400, 'invalid_request', 'verified must be a boolean');
    const verified = body.verified;
    await ctx.db.transaction(async (tx) => {
      const row = await lockStream(tx, caller.clientId, id);
      if (!row) throw notFound();
      // Whether we know the subject is never revealed (SSF 1.0 §9.1, subject probing): same answer either way.
      const customerId = await resolveSubject(tx, caller.peer.id, subject, ctx.issuer);
      await recordStreamSubject(ctx, tx, row.stream_id, subject, customerId, included, verified);
      await recordAudit(tx, {
        type: included ? 'ssf.subject.added' : 'ssf.subject.removed',
        outcome: 'success',
        actor: `client:${caller.clientId}`,
        clientId: caller.clientId,
        customerId,
        ip: c.ip,
        data: { streamId: row.stream_id, format: subject.format, known: customerId !== undefined },
      });
    });
    // SSF 1.0 §8.1.3.2 answers an add with 200 (empty), a remove with 204.
    c.status = included ? 200 : 204;
  };
  router.post('/ssf/subjects/add', subjects(true));
  router.post('/ssf/subjects/remove', subjects(false));

  // ---- verification ---------------------------------------------------------------------------
  router.post('/ssf/verify', async (c) => {
    const caller = await auth.authenticate(c, 'ssf.manage');
    const body = await readJson(c);
    const id = streamIdOf(body.stream_id);
    const state = body.state;
    if (state !== undefined && (typeof state !== 'string' || state.length > 1024))
      throw new ManagementError(400, 'invalid_request', 'state must be a string of at most 1024 characters');
    await ctx.db.transaction(async (tx) => {
      const row = await lockStream(tx, caller.clientId, id);
      if (!row) throw notFound();
      const ok = await tx.query(
        `UPDATE ssf_streams SET last_verification_at = now()
       WHERE stream_id = $1 AND (last_verification_at IS NULL OR last_verification_at <= now() - make_interval(secs => $2))
       RETURNING stream_id`,
        [row.stream_id, ctx.signals.minVerificationIntervalSeconds],
      );
      if (ok.rowCount === 0)
        throw new ManagementError(
          429,
          'slow_down',
          'verification requested more often than min_verification_interval',
          undefined,
          ctx.signals.minVerificationIntervalSeconds,
        );
      await emitStreamEvent(tx, row.stream_id, EVENT.verification, state === undefined ? {} : { state });
      await audit(tx, c, 'ssf.stream.verification_requested', caller.clientId, { streamId: row.stream_id });
    });
    c.status = 204;
  });

  // ---- poll delivery --------------------------------------------------------------------------
  router.post('/ssf/poll/:streamId', async (c) => {
    const caller = await auth.authenticate(c, 'ssf.manage');
    const row = await findStream(ctx, caller.clientId, c.params.streamId!);
    if (!row || row.delivery_method !== POLL) throw notFound();
    const body = await readJson(c);
    // The response closing before it was written: the client went (a waiting poll stops at once).
    const gone = new AbortController();
    const onClose = () => gone.abort();
    c.res.once('close', onClose);
    try {
      c.body = await poll(ctx, row, body, gone.signal);
    } finally {
      c.res.off('close', onClose);
    }
  });

  // ---- push receiver --------------------------------------------------------------------------
  router.post('/ssf/receive/:peerId', async (c) => {
    c.set('cache-control', 'no-store');
    const reject = (err: SetRejected) => {
      c.status = err.status;
      if (err.status === 401) c.set('www-authenticate', 'Bearer');
      c.body = { err: err.err, description: err.message };
    };
    const peer = ctx.peers.byId.get(c.params.peerId!);
    if (!peer?.issuer) {
      c.status = 404;
      c.body = { err: 'invalid_request', description: 'no such receiver endpoint' };
      return;
    }
    let authenticated = false;
    try {
      const sub = await ctx.db.query<{ push_auth_hash: string | null; delivery_method: string }>(
        'SELECT push_auth_hash, delivery_method FROM ssf_subscriptions WHERE peer_id = $1',
        [peer.id],
      );
      // Only a push subscription has a credential we handed out: without one (no subscription, or a
      // poll one) nothing authenticates, and nothing unauthenticated reaches the SET checks (which
      // may fetch the peer's JWKS). One answer for every case, so the endpoint tells nothing.
      const row = sub.rows[0];
      const expected = row?.delivery_method === PUSH ? row.push_auth_hash : null;
      if (!authorizationMatches(c.get('authorization') || undefined, expected))
        throw new SetRejected('authentication_failed', 'missing or wrong Authorization', 401);
      authenticated = true;
      if (c.request.type !== SET_CONTENT_TYPE)
        throw new SetRejected('invalid_request', `Content-Type must be ${SET_CONTENT_TYPE}`);
      let text: string;
      try {
        text = await readText(c);
      } catch {
        throw new SetRejected('invalid_request', 'request body too large', 413);
      }
      const set = await verifySet(ctx, metadata, peer, text);
      const result = await processSet(ctx, peer, set, 'push');
      if (result.duplicate) ctx.logger.debug({ peerId: peer.id, jti: set.jti }, 'duplicate SET');
      c.status = 202;
      // RFC 8935 §2.2: 202 with no content (an empty string keeps koa from writing "Accepted").
      c.body = '';
    } catch (err) {
      if (!(err instanceof SetRejected)) throw err;
      const event = {
        type: 'ssf.set.rejected',
        outcome: 'failure' as const,
        actor: `peer:${peer.id}`,
        ip: c.ip,
        data: { err: err.err, reason: err.message, via: 'push' },
      };
      // Before the push credential matched, the caller is anyone (sampled); after, it is the peer.
      await (authenticated ? recordAudit(ctx.db, event) : recordSampledAudit(ctx.db, event));
      reject(err);
    }
  });

  return router;
}
