/**
 * Replays a recorded event stream (JSON lines: a forensics export, or hand-written scenarios)
 * through a rule set, offline: the history the hub would have queried is rebuilt in memory as the
 * stream goes, so velocity windows, new countries and impossible travel behave as in the hub.
 *
 * Lines: sign-in attempts `{"at","customerId","ip","result":"success"|"failure", …}` (the
 * forensics export's fields; `country`/`asn` win over the IP data), and the inputs customers give:
 * `{"kind":"travel","customerId","country","from","to"}`, `{"kind":"recovery","customerId"}`; and
 * post-login requests `{"kind":"request","at","sessionKey","ip","userAgent"}`, whose session risk
 * adds up as in the hub. Operations in an export are skipped.
 */
import { z } from 'zod';
import type { GeoLookup } from './geo.ts';
import { networkRange } from './geo.ts';
import { evaluate, type RuleSet } from './rules.ts';
import { deriveLoginSignals, MemoryHistory, type SignalSettings } from './signals.ts';
import { sourceKey } from './throttle.ts';
import { RequestTracker } from './tracker.ts';

const when = z.iso.datetime({ offset: true }).transform((s) => new Date(s));

const loginLine = z.object({
  kind: z.literal('login').default('login'),
  at: when,
  customerId: z.string().min(1).nullish(),
  ip: z.string().min(1).nullish(),
  method: z.string().default('passkey'),
  // A recorded step_up / blocked attempt had a verified credential: it is decided again.
  result: z.enum(['success', 'failure', 'step_up', 'blocked']),
  credentialId: z.string().nullish(),
  backedUp: z.boolean().nullish(),
  deviceHash: z.string().nullish(),
  country: z
    .string()
    .regex(/^[A-Z]{2}$/)
    .nullish(),
  asn: z.number().int().nullish(),
  decision: z.enum(['allow', 'step_up', 'block']).nullish(),
});
const travelLine = z.object({
  kind: z.literal('travel'),
  customerId: z.string().min(1),
  country: z.string().regex(/^[A-Z]{2}$/),
  from: when,
  to: when,
});
const recoveryLine = z.object({ kind: z.literal('recovery'), customerId: z.string().min(1) });
const requestLine = z.object({
  kind: z.literal('request'),
  at: when,
  sessionKey: z.string().min(1),
  customerId: z.string().min(1).nullish(),
  ip: z.string().min(1).nullish(),
  userAgent: z.string().nullish(),
});
const otherLine = z.object({ kind: z.literal('operation') });
/** The schema for a line, by its kind (a union's error would not say which field is wrong). */
const LINES: Record<string, z.ZodType<ReplayLine>> = {
  travel: travelLine,
  recovery: recoveryLine,
  request: requestLine,
  operation: otherLine,
};
type ReplayLine =
  | z.output<typeof travelLine>
  | z.output<typeof recoveryLine>
  | z.output<typeof requestLine>
  | z.output<typeof otherLine>
  | z.output<typeof loginLine>;
const schemaOf = (json: unknown): z.ZodType<ReplayLine> => {
  const kind = (json as { kind?: unknown } | null)?.kind;
  return (typeof kind === 'string' && Object.hasOwn(LINES, kind) ? LINES[kind] : undefined) ?? loginLine;
};

export class ReplayError extends Error {
  override name = 'ReplayError';
  readonly code = 'ERR_REPLAY_INPUT';
}

export interface ReplayedDecision {
  line: number;
  at: string;
  customerId: string | null;
  ip: string | null;
  country: string | null;
  result: 'failure' | 'decided' | 'observed';
  decision?: 'allow' | 'step_up' | 'block';
  score?: number;
  reasons?: string[];
  ruleVersion?: string;
  /** The decision recorded in the input, when it differs from the replayed one. */
  recordedDecision?: string;
}

export function* replay(
  text: string,
  o: { rules: RuleSet; geo: GeoLookup; settings: SignalSettings; windowSeconds: number },
): Generator<ReplayedDecision> {
  const history = new MemoryHistory(o.windowSeconds);
  const tracker = new RequestTracker(o.geo, 1_000_000);
  const sessionScores = new Map<string, number>();
  let n = 0;
  for (const raw of text.split('\n')) {
    n++;
    if (!raw.trim()) continue;
    let json: unknown;
    try {
      json = JSON.parse(raw);
    } catch {
      throw new ReplayError(`line ${n}: not JSON`);
    }
    const parsed = schemaOf(json).safeParse(json);
    if (!parsed.success) {
      const i = parsed.error.issues[0]!;
      throw new ReplayError(`line ${n}: ${i.path.join('.') || '(line)'}: ${i.message}`);
    }
    const e = parsed.data;
    if (e.kind === 'travel') {
      history.travel.push({ customerId: e.customerId, country: e.country, from: e.from, to: e.to });
      continue;
    }
    if (e.kind === 'recovery') {
      history.recoveryDue.add(e.customerId);
      continue;
    }
    if (e.kind === 'request') {
      const noted = tracker.note(o.rules, {
        trackingId: e.sessionKey,
        ip: e.ip ?? undefined,
        userAgent: e.userAgent ?? undefined,
        at: e.at,
      });
      const total = (sessionScores.get(e.sessionKey) ?? 0) + (noted?.decision.score ?? 0);
      sessionScores.set(e.sessionKey, total);
      yield {
        line: n,
        at: e.at.toISOString(),
        customerId: e.customerId ?? null,
        ip: e.ip ?? null,
        country: o.geo.locate(e.ip ?? undefined).country ?? null,
        result: 'observed',
        decision: noted?.decision.decision ?? 'allow',
        score: total,
        reasons: noted?.decision.reasons.map((r) => r.rule) ?? [],
        ruleVersion: o.rules.version,
      };
      continue;
    }
    if (e.kind !== 'login') continue;
    const ip = e.ip ?? undefined;
    const located = o.geo.locate(ip);
    const country = e.country ?? located.country;
    // A recorded country the data does not agree with: that country's centroid.
    const place = country === located.country ? located.place : o.geo.centroid(country);
    const where = { country, asn: e.asn ?? located.asn, place };
    const entry = {
      at: e.at,
      customerId: e.customerId ?? undefined,
      credentialId: e.credentialId ?? undefined,
      source: sourceKey(ip),
      sourceRange: networkRange(ip),
      country: where.country,
      asn: where.asn,
      place,
      backedUp: e.backedUp ?? undefined,
      deviceHash: e.deviceHash ?? undefined,
    };
    const base = {
      line: n,
      at: e.at.toISOString(),
      customerId: e.customerId ?? null,
      ip: ip ?? null,
      country: where.country ?? null,
    };
    if (e.result === 'failure' || !e.customerId) {
      history.add({ ...entry, result: 'failure' });
      yield { ...base, result: 'failure' };
      continue;
    }
    const signals = deriveLoginSignals(
      history.facts(entry),
      {
        customerId: e.customerId,
        method: e.method,
        credentialId: entry.credentialId,
        backedUp: entry.backedUp,
        ip,
        knownDevice: history.knownDevice(e.customerId, entry.deviceHash),
        at: e.at,
      },
      where,
      o.settings,
    );
    const d = evaluate(o.rules, signals);
    history.add({
      ...entry,
      result: d.decision === 'allow' ? 'success' : d.decision === 'step_up' ? 'step_up' : 'blocked',
    });
    yield {
      ...base,
      result: 'decided',
      decision: d.decision,
      score: d.score,
      reasons: d.reasons.map((r) => r.rule),
      ruleVersion: d.ruleVersion,
      ...(e.decision && e.decision !== d.decision ? { recordedDecision: e.decision } : {}),
    };
  }
}
