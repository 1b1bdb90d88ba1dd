/**
 * Sampling of noise-prone audit events: refusals of requests that present no live credential
 * (an anonymous call, an unknown token, a wrong push secret). Anyone on the internet can cause
 * those as fast as they can send requests, so writing each one would let them grow the append-only
 * log, load the database and drown real security events.
 *
 * Per (event type, source network — sourceKey: an IPv4 address or an IPv6 /64), the first `limit`
 * events of a `windowSeconds` window are written as before; the rest are only counted, and when the
 * window ends one `<type>.suppressed` row records how many were dropped (first and last time, the
 * last address, one sample of what they were), so nothing is lost silently. Prometheus counts every
 * event, written or not.
 *
 * The counts live in memory, per node, on purpose: a counter in the database would cost a write per
 * request, which is exactly what the attacker must not get. Memory is bounded: at most `maxSources`
 * (type, source) entries, least recently seen evicted first (an evicted entry's pending count is
 * written at once). Refusals of callers who presented a live credential (a token the hub issued,
 * the push secret) name a principal and are written with recordAudit, never sampled.
 */
import type { Queryable } from '../db/index.ts';
import { countSecurityEvent } from '../metrics/index.ts';
import { sourceKey } from '../risk/throttle.ts';
import { type AuditEvent, recordAudit } from './index.ts';

export interface AuditSampling {
  /** Events written per (type, source) and window. */
  limit: number;
  windowSeconds: number;
  /** (type, source) entries kept in memory at most. */
  maxSources: number;
}

export const DEFAULT_AUDIT_SAMPLING: AuditSampling = { limit: 5, windowSeconds: 60, maxSources: 10_000 };

/** The sample of dropped events a summary carries is left out beyond this size (JSON characters). */
const MAX_SAMPLE_CHARS = 1024;

export interface AuditSamplerOptions extends Partial<AuditSampling> {
  /** Milliseconds since the epoch (tests). */
  now?: () => number;
  /** Write summaries by a timer when windows end (default true; tests call flush themselves). */
  autoFlush?: boolean;
  /** A summary that could not be written (the database is down): reported, not thrown. */
  onError?: (err: unknown) => void;
}

export interface AuditSampler {
  /** Writes the event, or counts it when its (type, source) already had `limit` in this window. */
  record(event: AuditEvent): Promise<void>;
  /**
   * Writes the summaries of windows that have ended — with `all`, of the current windows too (their
   * counts then start over); returns how many were written.
   */
  flush(o?: { all?: boolean }): Promise<number>;
  /** flush({ all: true }) and stop the timer (a node stopping). */
  close(): Promise<void>;
  /** (type, source) entries held. */
  readonly size: number;
}

interface Entry {
  type: string;
  outcome: AuditEvent['outcome'];
  source: string;
  windowStart: number;
  written: number;
  suppressed: number;
  firstAt: number;
  lastAt: number;
  lastIp: string | undefined;
  sample: Record<string, unknown> | undefined;
}

export function createAuditSampler(db: Queryable, options: AuditSamplerOptions = {}): AuditSampler {
  const { limit, windowSeconds, maxSources } = { ...DEFAULT_AUDIT_SAMPLING, ...stripUndefined(options) };
  const windowMs = windowSeconds * 1000;
  const now = options.now ?? Date.now;
  const autoFlush = options.autoFlush ?? true;
  const onError = options.onError ?? (() => {});
  // A Map iterates in insertion order: re-inserting on use keeps the least recently seen first.
  const entries = new Map<string, Entry>();
  let timer: NodeJS.Timeout | undefined;

  function summary(e: Entry): AuditEvent {
    return {
      type: `${e.type}.suppressed`,
      outcome: e.outcome,
      ip: e.lastIp,
      data: {
        source: e.source,
        suppressed: e.suppressed,
        written: e.written,
        windowStart: new Date(e.windowStart).toISOString(),
        windowSeconds,
        firstSuppressedAt: new Date(e.firstAt).toISOString(),
        lastSuppressedAt: new Date(e.lastAt).toISOString(),
        ...(e.sample ? { sample: e.sample } : { sampleOmitted: true }),
      },
    };
  }

  /** Takes the entry's pending count (synchronously, so no count is written twice) and writes it. */
  async function writeSummary(e: Entry): Promise<boolean> {
    if (e.suppressed === 0) return false;
    const event = summary(e);
    e.suppressed = 0;
    e.sample = undefined;
    try {
      await recordAudit(db, event);
      return true;
    } catch (err) {
      onError(err);
      return false;
    }
  }

  /**
   * Wakes at the end of the earliest window with a pending count. A window opened later ends later,
   * so a timer already set is never too late for a new one.
   */
  function schedule(): void {
    if (!autoFlush || timer) return;
    let end = Number.POSITIVE_INFINITY;
    for (const e of entries.values()) if (e.suppressed > 0) end = Math.min(end, e.windowStart + windowMs);
    if (end === Number.POSITIVE_INFINITY) return;
    timer = setTimeout(
      () => {
        timer = undefined;
        void flush().finally(schedule);
      },
      Math.max(0, end - now()),
    );
    timer.unref();
  }

  async function flush(o: { all?: boolean } = {}): Promise<number> {
    const t = now();
    const due: Entry[] = [];
    for (const [key, e] of entries)
      if (o.all || t - e.windowStart >= windowMs) {
        entries.delete(key);
        due.push(e);
      }
    let written = 0;
    for (const e of due) if (await writeSummary(e)) written++;
    return written;
  }

  return {
    get size() {
      return entries.size;
    },
    async record(event) {
      const source = sourceKey(event.ip);
      const key = `${event.type}\u0000${source}`;
      const t = now();
      let e = entries.get(key);
      if (e) entries.delete(key);
      let ended: Entry | undefined;
      if (e && t - e.windowStart >= windowMs) {
        ended = e;
        e = undefined;
      }
      e ??= {
        type: event.type,
        outcome: event.outcome,
        source,
        windowStart: t,
        written: 0,
        suppressed: 0,
        firstAt: t,
        lastAt: t,
        lastIp: undefined,
        sample: undefined,
      };
      entries.set(key, e);
      let evicted: Entry | undefined;
      if (entries.size > maxSources) {
        const [oldestKey, oldest] = entries.entries().next().value as [string, Entry];
        entries.delete(oldestKey);
        evicted = oldest;
      }
      if (e.written < limit) {
        e.written++;
        await recordAudit(db, event);
      } else {
        if (e.suppressed === 0) {
          e.firstAt = t;
          const json = JSON.stringify(event.data ?? {});
          e.sample = json.length <= MAX_SAMPLE_CHARS ? (event.data ?? {}) : undefined;
        }
        e.suppressed++;
        e.lastAt = t;
        e.lastIp = event.ip;
        // Metrics still see every event; only the row is spared.
        countSecurityEvent(event.type, event.outcome);
        schedule();
      }
      if (ended) await writeSummary(ended);
      if (evicted) await writeSummary(evicted);
    },
    flush,
    async close() {
      if (timer) clearTimeout(timer);
      timer = undefined;
      await flush({ all: true });
    },
  };
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

// One sampler per database handle (per hub node): the request handlers that write noise-prone events
// reach it through the handle they already hold, and the hub sets it up and closes it (hub.ts).
const samplers = new WeakMap<object, AuditSampler>();

/**
 * Sets up the sampler of this database handle (at hub start). Two nodes in one process on one handle
 * (tests) share nothing: the later one's sampler is the one used; each node stops its own.
 */
export function startAuditSampling(db: Queryable, options: AuditSamplerOptions = {}): AuditSampler {
  const sampler = createAuditSampler(db, options);
  samplers.set(db, sampler);
  return sampler;
}

/**
 * Records a noise-prone event (a refusal of a caller with no live credential) through the sampler
 * of `db` — one with the defaults when the hub set none up.
 */
export function recordSampledAudit(db: Queryable, event: AuditEvent): Promise<void> {
  let sampler = samplers.get(db);
  if (!sampler) {
    sampler = createAuditSampler(db);
    samplers.set(db, sampler);
  }
  return sampler.record(event);
}

/** Writes the sampler's pending summaries and forgets it (at hub stop, before the database closes). */
export async function stopAuditSampling(db: Queryable, sampler: AuditSampler): Promise<void> {
  if (samplers.get(db) === sampler) samplers.delete(db);
  await sampler.close();
}
