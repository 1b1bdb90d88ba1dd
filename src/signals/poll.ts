/**
 * Poll delivery (RFC 8936), transmitter side. One request acknowledges (`ack`), reports errors
 * (`setErrs`), and takes up to `maxEvents` SETs; with `returnImmediately` false it waits up to
 * `longPollSeconds` for some to arrive. SETs handed out are reserved for `pollRedeliverySeconds`
 * and handed out again if not acknowledged by then (a lost response loses nothing). While the
 * stream is paused or disabled nothing is handed out except stream-updated events.
 *
 * A waiting long poll holds no database connection: it looks once, then sleeps until this node's
 * fan-out stores a SET for its stream (LongPolls.wake) or, for SETs stored by other nodes and
 * reservations that ran out, until a recheck (signals.longPollRecheckMs, default a second later);
 * it stops when the client goes. How many
 * wait at once is bounded per receiver and per node (signals.maxLongPollsPerReceiver, maxLongPolls):
 * beyond, a long poll is answered 429 before anything in it is acted on.
 */
import { z } from 'zod';
import { recordAudit } from '../audit/index.ts';
import type { SignalsContext } from './context.ts';
import { ManagementError } from './errors.ts';
import type { StreamRow } from './streams.ts';

const MAX_EVENTS = 1000;
const DEFAULT_MAX_EVENTS = 100;

const pollSchema = z.looseObject({
  maxEvents: z.number().int().min(0).max(MAX_EVENTS).optional(),
  returnImmediately: z.boolean().optional(),
  ack: z.array(z.string().min(1).max(256)).max(MAX_EVENTS).optional(),
  setErrs: z
    .record(
      z.string().min(1).max(256),
      z.looseObject({ err: z.string().min(1).max(64), description: z.string().max(1024).optional() }),
    )
    .optional(),
});

export interface PollResponse {
  sets: Record<string, string>;
  moreAvailable?: boolean;
}

/**
 * This node's waiting long polls: how many each receiver has (bounded), and how to wake those of a
 * stream when SETs for it were stored.
 */
export class LongPolls {
  readonly #perClient = new Map<string, number>();
  readonly #waiters = new Map<string, Set<() => void>>();
  #total = 0;

  /** Takes a waiting slot for the receiver, or says there is none. */
  enter(clientId: string, limits: { perReceiver: number; total: number }): boolean {
    const mine = this.#perClient.get(clientId) ?? 0;
    if (mine >= limits.perReceiver || this.#total >= limits.total) return false;
    this.#perClient.set(clientId, mine + 1);
    this.#total++;
    return true;
  }

  leave(clientId: string): void {
    const mine = (this.#perClient.get(clientId) ?? 1) - 1;
    if (mine > 0) this.#perClient.set(clientId, mine);
    else this.#perClient.delete(clientId);
    this.#total--;
  }

  get waiting(): number {
    return this.#total;
  }

  /** Resolves at the next wake of the stream (taken before looking, so no wake is missed). */
  next(streamId: string): { woken: Promise<void>; cancel: () => void } {
    let resolve!: () => void;
    const woken = new Promise<void>((r) => {
      resolve = r;
    });
    let set = this.#waiters.get(streamId);
    if (!set) {
      set = new Set();
      this.#waiters.set(streamId, set);
    }
    set.add(resolve);
    const cancel = () => {
      set.delete(resolve);
      if (set.size === 0 && this.#waiters.get(streamId) === set) this.#waiters.delete(streamId);
    };
    return { woken, cancel };
  }

  /** SETs for these streams were stored: their waiting polls look again. */
  wake(streamIds: Iterable<string>): void {
    for (const id of new Set(streamIds)) for (const resolve of this.#waiters.get(id) ?? []) resolve();
  }
}

const sleep = (ms: number, signal: AbortSignal) =>
  new Promise<void>((resolve) => {
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done, { once: true });
  });

export async function poll(
  ctx: SignalsContext,
  stream: StreamRow,
  body: Record<string, unknown>,
  clientGone: AbortSignal,
): Promise<PollResponse> {
  const parsed = pollSchema.safeParse(body);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new ManagementError(400, 'invalid_request', `${issue.path.join('.') || 'body'}: ${issue.message}`);
  }
  const req = parsed.data;
  if (req.setErrs && Object.keys(req.setErrs).length > MAX_EVENTS)
    throw new ManagementError(400, 'invalid_request', 'setErrs: too many entries');
  const maxEvents = req.maxEvents ?? DEFAULT_MAX_EVENTS;
  // RFC 8936 §2.4: returnImmediately defaults to false (a long poll).
  const waits = req.returnImmediately !== true && maxEvents > 0 && ctx.signals.longPollSeconds > 0;
  if (
    waits &&
    !ctx.longPolls.enter(stream.client_id, {
      perReceiver: ctx.signals.maxLongPollsPerReceiver,
      total: ctx.signals.maxLongPolls,
    })
  )
    throw new ManagementError(
      429,
      'slow_down',
      'too many long polls waiting; poll again later',
      undefined,
      1,
    );
  try {
    await acknowledge(ctx, stream, req);
    if (maxEvents === 0) return { sets: {} };
    const deadline = Date.now() + (waits ? ctx.signals.longPollSeconds * 1000 : 0);
    for (;;) {
      const wake = ctx.longPolls.next(stream.stream_id);
      try {
        const served = await serve(ctx, stream.stream_id, maxEvents);
        const left = deadline - Date.now();
        if (served.length > 0 || left <= 0 || clientGone.aborted)
          return respond(ctx, stream.stream_id, served);
        await Promise.race([wake.woken, sleep(Math.min(ctx.signals.longPollRecheckMs, left), clientGone)]);
      } finally {
        wake.cancel();
      }
    }
  } finally {
    if (waits) ctx.longPolls.leave(stream.client_id);
  }
}

/** `ack` and `setErrs`: only SETs of this stream still pending are touched. */
async function acknowledge(
  ctx: SignalsContext,
  stream: StreamRow,
  req: z.output<typeof pollSchema>,
): Promise<void> {
  if (req.ack?.length)
    await ctx.db.query(
      `UPDATE ssf_outbox SET state = 'delivered', delivered_at = now(), served_until = NULL
       WHERE stream_id = $1 AND jti = ANY ($2::text[]) AND state = 'pending'`,
      [stream.stream_id, req.ack],
    );
  if (req.setErrs && Object.keys(req.setErrs).length) {
    const entries = Object.entries(req.setErrs);
    const failed = await ctx.db.query<{ jti: string }>(
      `UPDATE ssf_outbox o SET state = 'failed', last_error = e.error, served_until = NULL
       FROM unnest($2::text[], $3::text[]) AS e(jti, error)
       WHERE o.stream_id = $1 AND o.jti = e.jti AND o.state = 'pending' RETURNING o.jti`,
      [
        stream.stream_id,
        entries.map(([jti]) => jti),
        entries.map(([, e]) => `${e.err}${e.description ? `: ${e.description}` : ''}`.slice(0, 300)),
      ],
    );
    if (failed.rowCount)
      await recordAudit(ctx.db, {
        type: 'ssf.poll.set_errors',
        outcome: 'failure',
        actor: `client:${stream.client_id}`,
        clientId: stream.client_id,
        data: {
          streamId: stream.stream_id,
          errors: entries.slice(0, 20).map(([jti, e]) => ({ jti, err: e.err })),
        },
      });
  }
}

/** Whether the stream hands out held SETs now (only stream-updated ones while not enabled). */
const ENABLED = `COALESCE((SELECT status = 'enabled' FROM ssf_streams WHERE stream_id = $1), false)`;

interface Served {
  jti: string;
  set_jwt: string;
  event_id: string;
  id: string;
}

/** Reserves up to maxEvents SETs for this poll (one statement). */
async function serve(ctx: SignalsContext, streamId: string, maxEvents: number): Promise<Served[]> {
  const served = await ctx.db.query<Served>(
    `UPDATE ssf_outbox SET served_until = now() + make_interval(secs => $3)
     WHERE id IN (SELECT id FROM ssf_outbox
                  WHERE stream_id = $1 AND state = 'pending' AND (control OR ${ENABLED})
                    AND (served_until IS NULL OR served_until < now())
                  ORDER BY event_id, id LIMIT $2 FOR UPDATE SKIP LOCKED)
     RETURNING jti, set_jwt, event_id::text AS event_id, id::text AS id`,
    [streamId, maxEvents, ctx.signals.pollRedeliverySeconds],
  );
  return served.rows;
}

async function respond(ctx: SignalsContext, streamId: string, served: Served[]): Promise<PollResponse> {
  const rows = served.sort(
    (a, b) => Number(BigInt(a.event_id) - BigInt(b.event_id)) || Number(BigInt(a.id) - BigInt(b.id)),
  );
  const sets: Record<string, string> = {};
  for (const r of rows) sets[r.jti] = r.set_jwt;
  const more = await ctx.db.query(
    `SELECT 1 FROM ssf_outbox WHERE stream_id = $1 AND state = 'pending' AND (control OR ${ENABLED})
       AND (served_until IS NULL OR served_until < now()) LIMIT 1`,
    [streamId],
  );
  return more.rowCount > 0 ? { sets, moreAvailable: true } : { sets };
}
