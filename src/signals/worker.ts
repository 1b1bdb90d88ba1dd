/**
 * The background side of one node: fan-out, push delivery, upkeep, and the receiver's
 * subscriptions at peers (with a poll loop per poll subscription). Every part is safe to run on
 * any number of nodes at once (leases and SKIP LOCKED); stopping waits for pushes in flight.
 */
import { recordAudit } from '../audit/index.ts';
import type { PeerConfig } from '../config/index.ts';
import { countSsfDelivery } from '../metrics/index.ts';
import type { SignalsContext } from './context.ts';
import { claimStreams, deliverStream } from './delivery.ts';
import { onSignalsQueued, wakeSignals } from './emit.ts';
import { fanOutBatch } from './fanout.ts';
import { changeStreamStatus } from './ops.ts';
import { IAT_FUTURE_SKEW_SECONDS } from './receiver.ts';
import { activityResolutionSeconds } from './streams.ts';
import type { Subscriber } from './subscriber.ts';

const FANOUT_BATCH = 500;
const MAINTENANCE_EVERY_MS = 30_000;
const SUBSCRIBE_RETRY_MS = 30_000;

export interface SignalsWorker {
  /** Run a round now (tests and callers that just queued something). */
  kick(): void;
  /** Retry failed subscriptions at peers now (e.g. once a peer has registered our client). */
  resubscribe(): void;
  /** This node is woken by PostgreSQL NOTIFY (on PGlite, or until LISTEN works: polling only). */
  listening(): boolean;
  stop(): Promise<void>;
}

/** Notified at the commit of every new ssf_events row (trigger in migrations/0019). */
export const SIGNALS_CHANNEL = 'kakehashi_ssf';

export function startSignalsWorker(ctx: SignalsContext, subscriber: Subscriber): SignalsWorker {
  const active = new Set<Promise<unknown>>();
  // Deliveries read its size to take their share of the push slots (delivery.ts streamWidth).
  ctx.deliveries = active;
  let stopped = false;
  let running: Promise<void> | undefined;
  let again = false;
  let lastMaintenance = 0;

  async function round(): Promise<void> {
    // One fan-out batch, then pushing; a full batch means more is waiting: another round follows at
    // once, so fan-out and pushing overlap. Each stored chunk lets idle streams start.
    const { events } = await fanOutBatch(ctx, FANOUT_BATCH, () => {
      claimAndPush().catch((err: unknown) => ctx.logger.error({ err }, 'claiming streams failed'));
    });
    if (events === FANOUT_BATCH) again = true;
    await claimAndPush();
    if (Date.now() - lastMaintenance > MAINTENANCE_EVERY_MS) {
      lastMaintenance = Date.now();
      await maintain(ctx);
    }
  }

  let claiming: Promise<void> | undefined;
  function claimAndPush(): Promise<void> {
    claiming ??= claimOnce().finally(() => {
      claiming = undefined;
    });
    return claiming;
  }

  async function claimOnce(): Promise<void> {
    if (stopped) return;
    const free = ctx.signals.push.concurrentStreams - active.size;
    for (const stream of await claimStreams(ctx, free)) {
      const p = deliverStream(ctx, stream)
        .then(countSsfDelivery)
        .catch((err: unknown) =>
          ctx.logger.error({ err, streamId: stream.stream_id }, 'push delivery failed'),
        )
        .finally(() => {
          active.delete(p);
          kick();
        });
      active.add(p);
    }
  }

  function kick(): void {
    if (stopped) return;
    if (running) {
      again = true;
      return;
    }
    running = round()
      .catch((err: unknown) => ctx.logger.error({ err }, 'signals worker round failed'))
      .finally(() => {
        running = undefined;
        if (again) {
          again = false;
          setImmediate(kick);
        }
      });
  }

  const timer = setInterval(kick, ctx.signals.workerIntervalMs);
  timer.unref();
  const unsubscribe = onSignalsQueued(kick);
  // Events committed by other nodes (or other processes) wake this one without waiting for the poll.
  let unlisten: (() => Promise<void>) | undefined;
  const listening = ctx.db
    .listen?.(SIGNALS_CHANNEL, kick)
    .then((stop) => {
      unlisten = stop;
    })
    .catch((err: unknown) => ctx.logger.warn({ err }, 'LISTEN failed; the worker polls only'));

  // Receiver side: keep our streams at peers, and poll where we poll.
  const subscriptions = startSubscriptions(ctx, subscriber, () => stopped);
  kick();

  return {
    kick,
    resubscribe: () => subscriptions.wake(),
    listening: () => unlisten !== undefined,
    async stop() {
      stopped = true;
      clearInterval(timer);
      unsubscribe();
      await listening;
      await unlisten?.();
      await running;
      await Promise.allSettled([...active]);
      // Ends long polls at peers at once instead of waiting them out.
      ctx.agents.close();
      await subscriptions.stop();
    },
  };
}

/** Keeps a stream at every peer with `subscribe`; for poll streams runs a long-poll loop. */
function startSubscriptions(ctx: SignalsContext, subscriber: Subscriber, isStopped: () => boolean) {
  // Each wake() bumps the generation; a sleep ends when the generation it began in is over.
  let generation = 0;
  const interrupted = () => {
    const g = generation;
    return () => isStopped() || generation !== g;
  };
  const peers = ctx.signals.peers.filter(
    (p): p is PeerConfig & { subscribe: NonNullable<PeerConfig['subscribe']> } =>
      Boolean(p.subscribe && p.issuer),
  );
  const loops = peers.map(async (peer) => {
    let owed = { ack: [] as string[], setErrs: {} as Record<string, { err: string; description: string }> };
    let sub: Awaited<ReturnType<Subscriber['ensure']>> | undefined;
    while (!isStopped()) {
      // Taken before the attempt: a wake() while it runs (e.g. the operator just registered our
      // client at the peer) must end the sleep that follows a failure, not only a later one.
      const woken = interrupted();
      try {
        sub ??= await subscriber.ensure(peer);
        if (sub.deliveryMethod !== 'urn:ietf:rfc:8936') {
          // Push: nothing to do but check now and then that the peer still has our stream.
          await sleep(SUBSCRIBE_RETRY_MS * 10, woken);
          sub = undefined;
          continue;
        }
        const r = await subscriber.pollOnce(peer, sub, owed, { returnImmediately: false });
        owed = r.owed;
      } catch (err) {
        if (isStopped()) break;
        ctx.logger.warn({ err, peerId: peer.id }, 'subscription at peer failed; retrying');
        sub = undefined;
        await sleep(SUBSCRIBE_RETRY_MS, woken);
      }
    }
  });
  return {
    wake() {
      generation++;
    },
    async stop() {
      await Promise.allSettled(loops);
    },
  };
}

function sleep(ms: number, stopped: () => boolean): Promise<void> {
  return new Promise((resolve) => {
    const end = Date.now() + ms;
    const tick = () =>
      stopped() || Date.now() >= end ? resolve() : setTimeout(tick, Math.min(200, end - Date.now()));
    tick();
  });
}

/**
 * SSF 1.0 §8.1.1 inactivity_timeout: enabled streams whose receiver has not been active for
 * `inactivityTimeoutSeconds` are paused by the transmitter (stream-updated tells the receiver; its
 * SETs are held as for any pause). Rechecked under the row lock, so a call that just came in wins.
 */
export async function pauseInactiveStreams(ctx: SignalsContext): Promise<string[]> {
  // Receiver calls record their activity only once it is activityResolutionSeconds stale: a stream
  // counts as idle only when even its unrecorded activity would be older than the timeout.
  const idleFor = ctx.signals.inactivityTimeoutSeconds + activityResolutionSeconds(ctx.signals);
  const idle = `status = 'enabled' AND last_activity_at < now() - make_interval(secs => $1::double precision)`;
  const due = await ctx.db.query<{ stream_id: string }>(
    `SELECT stream_id FROM ssf_streams WHERE ${idle} ORDER BY last_activity_at LIMIT 100`,
    [idleFor],
  );
  const paused: string[] = [];
  for (const { stream_id } of due.rows) {
    const done = await ctx.db.transaction(async (tx) => {
      const still = await tx.query(
        `SELECT 1 FROM ssf_streams WHERE stream_id = $2 AND ${idle} FOR UPDATE SKIP LOCKED`,
        [idleFor, stream_id],
      );
      if (still.rowCount === 0) return false;
      await changeStreamStatus(tx, stream_id, 'paused', 'inactivity_timeout', 'system');
      return true;
    });
    if (done) paused.push(stream_id);
  }
  if (paused.length) {
    ctx.logger.info({ streams: paused }, 'streams paused after receiver inactivity');
    wakeSignals();
  }
  return paused;
}

/**
 * Upkeep: bound what paused streams hold (pausedHoldMax / pausedHoldSeconds), dead-letter SETs that
 * could not be delivered within deadAfterSeconds, and drop delivered SETs, fanned-out events and
 * received jtis past retentionSeconds. Each step is a bounded, idempotent statement.
 */
export async function maintain(ctx: SignalsContext): Promise<void> {
  const s = ctx.signals;
  await pauseInactiveStreams(ctx);
  const dropped = await ctx.db.query<{ stream_id: string; n: number }>(
    `WITH ranked AS (
       SELECT o.id, o.stream_id, o.created_at,
              row_number() OVER (PARTITION BY o.stream_id ORDER BY o.event_id DESC, o.id DESC) AS rn
       FROM ssf_outbox o JOIN ssf_streams st ON st.stream_id = o.stream_id
       WHERE st.status = 'paused' AND o.state = 'pending' AND NOT o.control),
     del AS (
       DELETE FROM ssf_outbox WHERE id IN (
         SELECT id FROM ranked WHERE rn > $1 OR created_at < now() - make_interval(secs => $2))
       RETURNING stream_id)
     SELECT stream_id, count(*)::int AS n FROM del GROUP BY stream_id`,
    [s.pausedHoldMax, s.pausedHoldSeconds],
  );
  for (const r of dropped.rows)
    await recordAudit(ctx.db, {
      type: 'ssf.stream.held_dropped',
      outcome: 'info',
      actor: 'system',
      data: {
        streamId: r.stream_id,
        dropped: r.n,
        holdMax: s.pausedHoldMax,
        holdSeconds: s.pausedHoldSeconds,
      },
    });
  const expired = await ctx.db.query<{ stream_id: string; n: number }>(
    `WITH upd AS (
       UPDATE ssf_outbox o SET state = 'failed', last_error = 'undeliverable within deadAfterSeconds'
       FROM ssf_streams st
       WHERE st.stream_id = o.stream_id AND st.status = 'enabled' AND o.state = 'pending'
         AND o.created_at < now() - make_interval(secs => $1)
       RETURNING o.stream_id)
     SELECT stream_id, count(*)::int AS n FROM upd GROUP BY stream_id`,
    [s.push.deadAfterSeconds],
  );
  for (const r of expired.rows)
    await recordAudit(ctx.db, {
      type: 'ssf.outbox.dead_lettered',
      outcome: 'failure',
      actor: 'system',
      data: { streamId: r.stream_id, count: r.n },
    });
  const keep = s.retentionSeconds;
  await ctx.db.query(
    `DELETE FROM ssf_outbox WHERE id IN (SELECT id FROM ssf_outbox WHERE state = 'delivered'
       AND delivered_at < now() - make_interval(secs => $1) LIMIT 10000)`,
    [keep],
  );
  await ctx.db.query(
    `DELETE FROM ssf_events WHERE id IN (SELECT id FROM ssf_events WHERE fanned_out_at < now() - make_interval(secs => $1) LIMIT 10000)`,
    [keep],
  );
  // A received jti is the only thing that tells a replay from a new SET: kept until the SET's iat is
  // too old for the receiver (iat may be up to IAT_FUTURE_SKEW_SECONDS after its receipt).
  await ctx.db.query(
    `DELETE FROM ssf_received WHERE (peer_id, jti) IN (SELECT peer_id, jti FROM ssf_received
       WHERE received_at < now() - make_interval(secs => $1) LIMIT 10000)`,
    [keep + IAT_FUTURE_SKEW_SECONDS],
  );
  await ctx.db.query(
    `DELETE FROM ssf_txns WHERE txn IN (SELECT txn FROM ssf_txns WHERE at < now() - make_interval(secs => $1) LIMIT 10000)`,
    [keep],
  );
  await ctx.db.query(
    `DELETE FROM ssf_verification_requests WHERE requested_at < now() - make_interval(secs => $1)`,
    [keep],
  );
}
