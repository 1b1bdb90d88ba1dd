/**
 * Push delivery (RFC 8935) from the outbox.
 *
 * A node claims whole streams (a lease on the stream row, taken with `FOR UPDATE SKIP LOCKED`),
 * so per stream one node pushes at a time and SETs about one subject leave in the order they were
 * generated; different subjects go in parallel over the peer's keep-alive connections. A transport
 * error, timeout, 5xx, 401/403/404 or 429 backs the whole stream off (exponential, with jitter) and
 * leaves its SETs pending: nothing is lost while a receiver is down, however long, until
 * `deadAfterSeconds`. A 400 naming an RFC 8935 error rejects that one SET: it goes to the dead-letter
 * view and the stream moves on. A node that dies mid-batch leaves its lease to expire; the SETs it
 * had in flight are pushed again (at-least-once; receivers deduplicate by jti).
 */
import { recordAudit } from '../audit/index.ts';
import { decryptAtRest } from '../keys/index.ts';
import type { SignalsContext } from './context.ts';
import { assertPublicDestination, publicOnlyLookup } from './egress.ts';
import { parseJsonObject } from './http.ts';
import { pushGuarded, type StreamRow } from './streams.ts';
import { PUSH, SET_CONTENT_TYPE } from './vocabulary.ts';

interface OutboxRow {
  id: string;
  jti: string;
  subject_key: string;
  set_jwt: string;
  control: boolean;
}

/** While pushing a batch, how often the stream's row is read again (status, endpoint, existence). */
const RECHECK_MS = 250;

type Outcome =
  | { kind: 'delivered' }
  | { kind: 'rejected'; error: string }
  | { kind: 'retry'; error: string; retryAfterMs?: number };

/** Claims up to `limit` streams with pushable SETs for this node. */
export async function claimStreams(ctx: SignalsContext, limit: number): Promise<StreamRow[]> {
  if (limit <= 0) return [];
  const res = await ctx.db.query<StreamRow>(
    `UPDATE ssf_streams s SET lease_owner = $2, lease_until = now() + make_interval(secs => $3)
     WHERE s.stream_id IN (
       SELECT c.stream_id FROM ssf_streams c
       WHERE c.delivery_method = $4 AND c.next_attempt_at <= now()
         AND (c.lease_until IS NULL OR c.lease_until < now())
         AND EXISTS (SELECT 1 FROM ssf_outbox o WHERE o.stream_id = c.stream_id AND o.state = 'pending'
                     AND (o.control OR c.status = 'enabled'))
       ORDER BY c.next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED)
     RETURNING s.stream_id, s.peer_id, s.client_id, s.aud, s.delivery_method, s.endpoint_url, s.authorization_header_enc,
       s.events_requested, s.events_delivered, s.description, s.status, s.status_reason, s.signing_alg, s.operator_hold,
       s.consecutive_failures`,
    [limit, ctx.nodeId, ctx.signals.push.leaseSeconds, PUSH],
  );
  return res.rows;
}

function backoffMs(ctx: SignalsContext, failures: number): number {
  const { retryBaseMs, retryMaxMs } = ctx.signals.push;
  const ceiling = Math.min(retryMaxMs, retryBaseMs * 2 ** Math.min(failures - 1, 30));
  // "Equal jitter": at least half the ceiling, so retries spread out but never hammer.
  return Math.round(ceiling / 2 + Math.random() * (ceiling / 2));
}

/**
 * Pushes one SET. Never throws: every outcome is classified.
 */
async function pushOne(
  ctx: SignalsContext,
  stream: StreamRow,
  authorization: string | undefined,
  row: OutboxRow,
): Promise<Outcome> {
  const peer = ctx.peers.byId.get(stream.peer_id);
  await ctx.pushSlots.acquire();
  try {
    const url = new URL(stream.endpoint_url);
    // The receiver chose this URL: it must not reach into the hub's own network, whatever its name
    // resolves to now (a stream configured before, or a DNS record changed since).
    const guarded = pushGuarded(ctx, peer, url);
    if (guarded) assertPublicDestination(url);
    const res = await ctx.agents.request(url, ctx.agents.agent(peer), {
      method: 'POST',
      headers: {
        'content-type': SET_CONTENT_TYPE,
        accept: 'application/json',
        ...(authorization ? { authorization } : {}),
      },
      body: row.set_jwt,
      timeoutMs: ctx.signals.push.timeoutMs,
      deadlineMs: ctx.signals.push.timeoutMs,
      maxBodyBytes: 16 * 1024,
      ...(guarded ? { lookup: publicOnlyLookup } : {}),
    });
    if (res.status >= 200 && res.status < 300) return { kind: 'delivered' };
    const body = parseJsonObject(res.body);
    const err = typeof body?.err === 'string' ? body.err.slice(0, 64) : undefined;
    const description = typeof body?.description === 'string' ? body.description.slice(0, 200) : '';
    // The SET itself was refused: retrying the same bytes cannot help.
    if (res.status === 400 && err && err !== 'authentication_failed' && err !== 'access_denied')
      return { kind: 'rejected', error: `${err}${description ? `: ${description}` : ''}` };
    if (res.status === 400 && !err) return { kind: 'rejected', error: `HTTP 400 ${res.body.slice(0, 120)}` };
    const retryAfter = Number(res.headers['retry-after']);
    return {
      kind: 'retry',
      error: `HTTP ${res.status}${err ? ` ${err}` : ''}`,
      ...((res.status === 429 || res.status === 503) && Number.isFinite(retryAfter) && retryAfter > 0
        ? { retryAfterMs: Math.min(retryAfter * 1000, ctx.signals.push.retryMaxMs) }
        : {}),
    };
  } catch (err) {
    return { kind: 'retry', error: `transport: ${(err as Error).message}`.slice(0, 200) };
  } finally {
    ctx.pushSlots.release();
  }
}

/** Runs fns with at most `limit` in flight. */
async function pool<T>(items: T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const workers = Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) await fn(items[next++]!);
  });
  await Promise.all(workers);
}

/**
 * Records push outcomes as they come, in small batches (every 256 SETs or 250 ms), so a slow
 * receiver's progress is kept as it goes and a crash repeats little.
 */
class Recorder {
  readonly #ctx: SignalsContext;
  #delivered: string[] = [];
  #rejected: { id: string; error: string }[] = [];
  #last = Date.now();
  #writing: Promise<void> = Promise.resolve();
  #failed: unknown;
  #deliveredTotal = 0;
  readonly #rejectedErrors: string[] = [];

  constructor(ctx: SignalsContext) {
    this.#ctx = ctx;
  }

  add(id: string, outcome: Exclude<Outcome, { kind: 'retry' }>): void {
    if (outcome.kind === 'delivered') this.#delivered.push(id);
    else this.#rejected.push({ id, error: outcome.error });
    if (this.#delivered.length + this.#rejected.length >= 256 || Date.now() - this.#last >= 250)
      this.#flush();
  }

  #flush(): void {
    const delivered = this.#delivered;
    const rejected = this.#rejected;
    this.#delivered = [];
    this.#rejected = [];
    this.#last = Date.now();
    if (!delivered.length && !rejected.length) return;
    this.#deliveredTotal += delivered.length;
    for (const r of rejected) this.#rejectedErrors.push(r.error);
    this.#writing = this.#writing.then(async () => {
      try {
        if (delivered.length)
          await this.#ctx.db.query(
            `UPDATE ssf_outbox SET state = 'delivered', delivered_at = now(), attempts = attempts + 1, served_until = NULL
             WHERE id = ANY ($1::bigint[])`,
            [delivered],
          );
        if (rejected.length)
          await this.#ctx.db.query(
            `UPDATE ssf_outbox o SET state = 'failed', attempts = attempts + 1, last_error = r.error
             FROM unnest($1::bigint[], $2::text[]) AS r(id, error) WHERE o.id = r.id`,
            [rejected.map((r) => r.id), rejected.map((r) => r.error)],
          );
      } catch (err) {
        this.#failed ??= err;
      }
    });
  }

  /** Writes what is left; rethrows a failed write (the SETs then stay pending and go again). */
  async finish(): Promise<{ delivered: number; rejected: string[] }> {
    this.#flush();
    await this.#writing;
    if (this.#failed) throw this.#failed;
    return { delivered: this.#deliveredTotal, rejected: this.#rejectedErrors };
  }
}

/**
 * How many of a stream's SETs are pushed at once: at most `concurrencyPerStream`, never more than half
 * the node's push slots, and about the stream's share of them while `active` streams are delivered.
 */
export function streamWidth(
  push: { concurrencyPerStream: number; maxInFlight: number },
  active: number,
): number {
  return Math.max(
    1,
    Math.min(
      push.concurrencyPerStream,
      Math.floor(push.maxInFlight / 2),
      Math.ceil(push.maxInFlight / Math.max(1, active)),
    ),
  );
}

export interface StreamDeliveryResult {
  delivered: number;
  rejected: number;
  retrying: boolean;
}

/**
 * Delivers a claimed stream's pending SETs, batch by batch, until none is left, the stream stops
 * being enabled, or the receiver fails; then gives the lease up.
 */
export async function deliverStream(ctx: SignalsContext, claimed: StreamRow): Promise<StreamDeliveryResult> {
  const result: StreamDeliveryResult = { delivered: 0, rejected: 0, retrying: false };
  const authorization = claimed.authorization_header_enc
    ? decryptAtRest(ctx.kek, claimed.authorization_header_enc, `ssf-push-auth:${claimed.stream_id}`)
    : undefined;
  let stream = claimed;
  // No stream ever holds more than half the node's push slots, and a receiver that failed last time
  // (e.g. timeouts: slow or hung) is first probed with one SET alone: a slow receiver cannot keep the
  // slots the others need. While many streams are delivered at once, each gets about its share of the
  // slots: no more connections to a receiver than its pushes can use (each is a TLS handshake).
  const width = () => streamWidth(ctx.signals.push, ctx.deliveries.size);
  let probe = Boolean(claimed.consecutive_failures);
  // A pause, disable, delete or new endpoint may land while a batch is being pushed (a batch to a slow
  // receiver lasts long): the row is read again every RECHECK_MS, and pushes that it no longer allows
  // stop (their SETs stay pending; the next claim sees the stream as it is then).
  let gone = false;
  let lastLook = Date.now();
  let looking: Promise<void> | undefined;
  const mayPush = async (row: OutboxRow): Promise<boolean> => {
    if (!gone && Date.now() - lastLook >= RECHECK_MS) {
      looking ??= ctx.db
        .query<{ status: StreamRow['status']; endpoint_url: string }>(
          'SELECT status, endpoint_url FROM ssf_streams WHERE stream_id = $1',
          [stream.stream_id],
        )
        .then((r) => {
          const now = r.rows[0];
          if (!now || now.endpoint_url !== claimed.endpoint_url) gone = true;
          else stream = { ...stream, status: now.status };
          lastLook = Date.now();
        })
        .finally(() => {
          looking = undefined;
        });
      await looking;
    }
    return !gone && (row.control || stream.status === 'enabled');
  };
  try {
    for (;;) {
      const batch = await ctx.db.query<OutboxRow>(
        `SELECT id::text AS id, jti, subject_key, set_jwt, control FROM ssf_outbox
         WHERE stream_id = $1 AND state = 'pending' AND (control OR $2)
         ORDER BY event_id, id LIMIT $3`,
        [stream.stream_id, stream.status === 'enabled', ctx.signals.push.batchSize],
      );
      if (batch.rowCount === 0) break;

      // One chain per subject, in order; chains run in parallel. A chain stops at its first failure.
      const chains = new Map<string, OutboxRow[]>();
      for (const r of batch.rows) {
        const chain = chains.get(r.subject_key);
        if (chain) chain.push(r);
        else chains.set(r.subject_key, [r]);
      }
      const recorder = new Recorder(ctx);
      let retry: { error: string; retryAfterMs?: number } | undefined;
      const todo = [...chains.values()];
      if (probe) {
        probe = false;
        const first = todo[0]!.shift()!;
        const outcome = await pushOne(ctx, stream, authorization, first);
        if (outcome.kind === 'retry') retry = outcome;
        else recorder.add(first.id, outcome);
      }
      await pool(todo, width(), async (chain) => {
        for (const row of chain) {
          if (retry || !(await mayPush(row))) return;
          const outcome = await pushOne(ctx, stream, authorization, row);
          if (outcome.kind === 'retry') {
            retry ??= outcome;
            return;
          }
          recorder.add(row.id, outcome);
        }
      });
      const { delivered, rejected } = await recorder.finish();
      if (rejected.length) {
        ctx.logger.warn(
          { streamId: stream.stream_id, rejected: rejected.length, first: rejected[0] },
          'receiver rejected SETs',
        );
        await recordAudit(ctx.db, {
          type: 'ssf.push.rejected',
          outcome: 'failure',
          actor: 'system',
          clientId: stream.client_id,
          data: {
            streamId: stream.stream_id,
            count: rejected.length,
            errors: [...new Set(rejected)].slice(0, 5),
          },
        });
      }
      result.delivered += delivered;
      result.rejected += rejected.length;
      if (gone) break;

      if (retry) {
        const failures = await ctx.db.query<{ consecutive_failures: number }>(
          `UPDATE ssf_streams SET consecutive_failures = consecutive_failures + 1, last_error = $2
           WHERE stream_id = $1 RETURNING consecutive_failures`,
          [stream.stream_id, retry.error],
        );
        const n = failures.rows[0]?.consecutive_failures ?? 1;
        const delay = Math.max(retry.retryAfterMs ?? 0, backoffMs(ctx, n));
        await ctx.db.query(
          `UPDATE ssf_streams SET next_attempt_at = now() + make_interval(secs => $2::float8 / 1000) WHERE stream_id = $1`,
          [stream.stream_id, delay],
        );
        ctx.logger.info(
          { streamId: stream.stream_id, error: retry.error, failures: n, retryInMs: delay },
          'push failed; backing off',
        );
        result.retrying = true;
        break;
      }
      // Still ours and still enabled? (A pause, disable, delete or lost lease stops us between batches.)
      const renewed = await ctx.db.query<{ status: StreamRow['status'] }>(
        `UPDATE ssf_streams SET lease_until = now() + make_interval(secs => $3), consecutive_failures = 0, last_error = NULL
         WHERE stream_id = $1 AND lease_owner = $2 RETURNING status`,
        [stream.stream_id, ctx.nodeId, ctx.signals.push.leaseSeconds],
      );
      const status = renewed.rows[0]?.status;
      if (!status) break;
      stream = { ...stream, status };
    }
  } finally {
    await ctx.db
      .query(
        'UPDATE ssf_streams SET lease_owner = NULL, lease_until = NULL WHERE stream_id = $1 AND lease_owner = $2',
        [stream.stream_id, ctx.nodeId],
      )
      .catch((err: unknown) =>
        ctx.logger.warn({ err, streamId: stream.stream_id }, 'could not release stream lease'),
      );
  }
  return result;
}
