/**
 * Post-login change detection in memory: the first network (IPv4 /24, IPv6 /48; the same AS
 * counts as the same network when known) and user agent of each token or session, and its calls
 * per minute. Bounded: past `max` entries the oldest is forgotten.
 *
 * Alone (the replay CLI) the tracker takes a token's first request as its baseline. In the hub the
 * baseline is shared by every node (src/risk/baselines.ts): the engine claims it in the database
 * and `adopt`s what is stored before the node's first `observe` of that token; the changes `observe`
 * finds are then claimed there too before they raise risk (docs/post-login-baselines.md).
 */
import { type GeoLookup, networkRange } from './geo.ts';
import { evaluate, type RiskDecision, type RuleSet, type Signals } from './rules.ts';

/** The first network and user agent of a token or session: what later requests are compared with. */
export interface Baseline {
  range: string | undefined;
  asn: number | undefined;
  userAgent: string;
}

export interface TrackedRequest {
  trackingId: string;
  ip?: string | undefined;
  userAgent?: string | undefined;
  at?: Date | undefined;
}

interface Tracked extends Baseline {
  /** Networks / user agents already reported, so each change raises risk once. */
  reported: Set<string>;
  minute: number;
  calls: number;
  burstReported: boolean;
}

/** What one request showed: its signals and the changes (`net:<range>`, `ua:<agent>`) new to this node. */
export interface Observed {
  signals: Signals;
  changes: string[];
}

export class RequestTracker {
  private readonly entries = new Map<string, Tracked>();
  private readonly max: number;
  private readonly geo: GeoLookup;

  constructor(geo: GeoLookup, max: number) {
    this.geo = geo;
    this.max = max;
  }

  /** The baseline this request would set (network range, AS, user agent as compared). */
  baselineOf(r: TrackedRequest): Baseline {
    return { range: networkRange(r.ip), asn: this.geo.locate(r.ip).asn, userAgent: userAgentOf(r) };
  }

  has(trackingId: string): boolean {
    return this.entries.has(trackingId);
  }

  /** Takes a baseline (claimed elsewhere, e.g. the database) unless this node already tracks the id. */
  adopt(trackingId: string, b: Baseline): void {
    if (this.entries.has(trackingId)) return;
    if (this.entries.size >= this.max) {
      const oldest = this.entries.keys().next().value;
      if (oldest !== undefined) this.entries.delete(oldest);
    }
    this.entries.set(trackingId, {
      range: b.range,
      asn: b.asn,
      userAgent: b.userAgent,
      reported: new Set(),
      minute: 0,
      calls: 0,
      burstReported: false,
    });
  }

  /**
   * Counts one request and compares it with the baseline (this request's own when none is known);
   * a change is returned once per node — the caller may still drop it (another node reported it).
   */
  observe(r: TrackedRequest): Observed {
    const minute = Math.floor((r.at?.getTime() ?? Date.now()) / 60_000);
    if (!this.entries.has(r.trackingId)) this.adopt(r.trackingId, this.baselineOf(r));
    const t = this.entries.get(r.trackingId)!;
    if (t.minute !== minute) {
      t.minute = minute;
      t.calls = 0;
      t.burstReported = false;
    }
    t.calls++;
    const changes: string[] = [];
    const range = networkRange(r.ip);
    if (range !== t.range) {
      // Another address of the same AS (a mobile carrier's pool) is not another network.
      const asn = this.geo.locate(r.ip).asn;
      const item = `net:${range}`;
      if (!(asn !== undefined && asn === t.asn) && !t.reported.has(item)) {
        t.reported.add(item);
        changes.push(item);
      }
    }
    const userAgent = userAgentOf(r);
    const uaItem = `ua:${userAgent}`;
    if (userAgent !== t.userAgent && !t.reported.has(uaItem)) {
      t.reported.add(uaItem);
      changes.push(uaItem);
    }
    return {
      signals: {
        networkChanged: changes.some((c) => c.startsWith('net:')),
        userAgentChanged: changes.some((c) => c.startsWith('ua:')),
        apiCallsPerMinute: t.calls,
      },
      changes,
    };
  }

  /** Forgets that these changes were reported (their record failed): the next request tries again. */
  unreport(trackingId: string, changes: string[]): void {
    const t = this.entries.get(trackingId);
    for (const c of changes) t?.reported.delete(c);
  }

  /**
   * Decides on observed signals: the decision when worth recording (a change, or the first scored
   * burst of the minute for this id), else undefined.
   */
  decide(rules: RuleSet, trackingId: string, signals: Signals): RiskDecision | undefined {
    const decision = evaluate(rules, signals);
    if (decision.score === 0 && decision.decision === 'allow') return undefined;
    if (!signals.networkChanged && !signals.userAgentChanged) {
      // Nothing changed but the rules still scored: a burst of calls, reported once a minute.
      const t = this.entries.get(trackingId);
      if (!t || t.burstReported) return undefined;
      t.burstReported = true;
    }
    return decision;
  }

  /**
   * Notes one request against this node's own memory; returns the signals and decision when
   * something is worth recording (a new network or user agent, or the first scored burst of a
   * minute), else undefined.
   */
  note(rules: RuleSet, r: TrackedRequest): { signals: Signals; decision: RiskDecision } | undefined {
    const { signals } = this.observe(r);
    const decision = this.decide(rules, r.trackingId, signals);
    return decision && { signals, decision };
  }

  get size(): number {
    return this.entries.size;
  }
}

function userAgentOf(r: TrackedRequest): string {
  return (r.userAgent ?? '').slice(0, 256);
}
