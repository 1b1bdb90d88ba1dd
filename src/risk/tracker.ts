/**
 * Post-login change detection in memory: the first network (IPv4 /24, IPv6 /48; the same AS
 * counts as the same network when known) and user agent of each token or session, and its calls
 * per minute. Bounded: past `max` entries the oldest is forgotten.
 */
import { type GeoLookup, networkRange } from './geo.ts';
import { evaluate, type RiskDecision, type RuleSet, type Signals } from './rules.ts';

interface Tracked {
  range: string | undefined;
  asn: number | undefined;
  userAgent: string;
  /** Networks / user agents already reported, so each change raises risk once. */
  reported: Set<string>;
  minute: number;
  calls: number;
  burstReported: boolean;
}

export class RequestTracker {
  private readonly entries = new Map<string, Tracked>();
  private readonly max: number;
  private readonly geo: GeoLookup;

  constructor(geo: GeoLookup, max: number) {
    this.geo = geo;
    this.max = max;
  }

  /**
   * Notes one request; returns the signals and decision when something is worth recording
   * (a new network or user agent, or the first scored burst of a minute), else undefined.
   */
  note(
    rules: RuleSet,
    r: { trackingId: string; ip?: string | undefined; userAgent?: string | undefined; at?: Date | undefined },
  ): { signals: Signals; decision: RiskDecision } | undefined {
    const minute = Math.floor((r.at?.getTime() ?? Date.now()) / 60_000);
    const range = networkRange(r.ip);
    const userAgent = (r.userAgent ?? '').slice(0, 256);
    let t = this.entries.get(r.trackingId);
    if (!t) {
      t = {
        range,
        asn: this.geo.locate(r.ip).asn,
        userAgent,
        reported: new Set(),
        minute,
        calls: 0,
        burstReported: false,
      };
      if (this.entries.size >= this.max) {
        const oldest = this.entries.keys().next().value;
        if (oldest !== undefined) this.entries.delete(oldest);
      }
      this.entries.set(r.trackingId, t);
    }
    if (t.minute !== minute) {
      t.minute = minute;
      t.calls = 0;
      t.burstReported = false;
    }
    t.calls++;
    let networkChanged = false;
    if (range !== t.range) {
      // Another address of the same AS (a mobile carrier's pool) is not another network.
      const asn = this.geo.locate(r.ip).asn;
      networkChanged = !(asn !== undefined && asn === t.asn) && !t.reported.has(`net:${range}`);
      if (networkChanged) t.reported.add(`net:${range}`);
    }
    const userAgentChanged = userAgent !== t.userAgent && !t.reported.has(`ua:${userAgent}`);
    if (userAgentChanged) t.reported.add(`ua:${userAgent}`);
    const signals: Signals = { networkChanged, userAgentChanged, apiCallsPerMinute: t.calls };
    const decision = evaluate(rules, signals);
    if (decision.score === 0 && decision.decision === 'allow') return undefined;
    if (!networkChanged && !userAgentChanged) {
      // Nothing changed but the rules still scored: a burst of calls, reported once a minute.
      if (t.burstReported) return undefined;
      t.burstReported = true;
    }
    return { signals, decision };
  }

  get size(): number {
    return this.entries.size;
  }
}
