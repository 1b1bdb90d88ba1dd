/**
 * Declarative, versioned risk rules: each rule names the signals it looks at, the score it adds
 * and optionally the decision it forces, and says in words why. The engine adds up the scores of
 * the rules that match; the decision is the stricter of the thresholds' verdict on the total and
 * any decision a matching rule forces. The rule set's version is kept with every decision.
 */
import { readFileSync } from 'node:fs';
import { z } from 'zod';

export const DECISIONS = ['allow', 'step_up', 'block'] as const;
export type Decision = (typeof DECISIONS)[number];

/** Signal values: flags and counts. A signal that was not measured is absent (never matches). */
export type Signals = Record<string, boolean | number | string | undefined>;

const condition = z.union([
  z.boolean(),
  z.string(),
  z
    .strictObject({ gte: z.number().optional(), lte: z.number().optional(), not: z.string().optional() })
    .refine((c) => c.gte !== undefined || c.lte !== undefined || c.not !== undefined, 'gte, lte or not'),
]);

const ruleSchema = z.strictObject({
  /** Stable name, kept in reasons. */
  id: z.string().regex(/^[a-z0-9][a-z0-9-]{0,63}$/),
  /** Signal → condition; every condition must hold. true/false/"JP": equals; {gte, lte, not}. */
  when: z.record(z.string().min(1), condition).refine((w) => Object.keys(w).length > 0, 'empty when'),
  score: z.number().int().min(0).max(1000).default(0),
  decision: z.enum(DECISIONS).optional(),
  /**
   * What the rule means, for operators and investigators. `{signal}` is replaced by that signal's
   * value in the reason kept with a decision (e.g. `{travelKm}`).
   */
  explain: z.string().min(1),
});

export const ruleSetSchema = z
  .strictObject({
    /** Changes whenever a rule or threshold changes; kept with each decision. */
    version: z.string().min(1).max(64),
    thresholds: z
      .strictObject({
        /** Total score from which a second factor is required. */
        stepUp: z.number().int().min(1),
        /** Total score from which the attempt is refused. */
        block: z.number().int().min(1),
      })
      .refine((t) => t.block >= t.stepUp, { message: 'block must not be below stepUp', path: ['block'] }),
    rules: z.array(ruleSchema),
  })
  .superRefine((s, ctx) => {
    const seen = new Set<string>();
    s.rules.forEach((r, i) => {
      if (seen.has(r.id)) ctx.addIssue({ code: 'custom', path: ['rules', i, 'id'], message: 'duplicate id' });
      seen.add(r.id);
    });
  });

export type RuleSet = z.output<typeof ruleSetSchema>;
export type RuleSetInput = z.input<typeof ruleSetSchema>;
export type Rule = RuleSet['rules'][number];

export interface RiskReason {
  rule: string;
  score: number;
  explain: string;
}

export interface RiskDecision {
  decision: Decision;
  score: number;
  reasons: RiskReason[];
  ruleVersion: string;
}

export class RiskRulesError extends Error {
  override name = 'RiskRulesError';
  readonly code = 'ERR_RISK_RULES';
}

/** Validates a rule set; the error names the key at fault. */
export function parseRuleSet(input: unknown, source = 'risk rules'): RuleSet {
  const parsed = ruleSetSchema.safeParse(input);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new RiskRulesError(`${source}: ${issue.path.join('.') || '(root)'}: ${issue.message}`);
  }
  return parsed.data;
}

export function loadRuleSet(file: string): RuleSet {
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    throw new RiskRulesError(`${file}: ${(err as Error).message}`);
  }
  return parseRuleSet(raw, file);
}

function holds(value: Signals[string], c: z.output<typeof condition>): boolean {
  if (value === undefined) return false;
  if (typeof c === 'boolean' || typeof c === 'string') return value === c;
  if (c.not !== undefined && value === c.not) return false;
  if (c.gte !== undefined && !(typeof value === 'number' && value >= c.gte)) return false;
  if (c.lte !== undefined && !(typeof value === 'number' && value <= c.lte)) return false;
  return true;
}

const RANK: Record<Decision, number> = { allow: 0, step_up: 1, block: 2 };

export function stricter(a: Decision, b: Decision): Decision {
  return RANK[a] >= RANK[b] ? a : b;
}

/** The explanation with `{signal}` placeholders filled in (left as written when unmeasured). */
function explained(text: string, signals: Signals): string {
  if (!text.includes('{')) return text;
  return text.replace(/\{([A-Za-z][A-Za-z0-9]*)\}/g, (all, name: string) => {
    const v = signals[name];
    return v === undefined ? all : String(v);
  });
}

/** Applies the rule set to one set of signals. Pure: the same inputs give the same decision. */
export function evaluate(rules: RuleSet, signals: Signals): RiskDecision {
  let score = 0;
  let forced: Decision = 'allow';
  const reasons: RiskReason[] = [];
  for (const rule of rules.rules) {
    if (!Object.entries(rule.when).every(([name, c]) => holds(signals[name], c))) continue;
    score += rule.score;
    if (rule.decision) forced = stricter(forced, rule.decision);
    reasons.push({ rule: rule.id, score: rule.score, explain: explained(rule.explain, signals) });
  }
  const byScore: Decision =
    score >= rules.thresholds.block ? 'block' : score >= rules.thresholds.stepUp ? 'step_up' : 'allow';
  return { decision: stricter(forced, byScore), score, reasons, ruleVersion: rules.version };
}

/** The CAEP risk level a decision or score corresponds to. */
export function levelOf(rules: RuleSet, d: { decision: Decision; score: number }): 'LOW' | 'MEDIUM' | 'HIGH' {
  if (d.decision === 'block' || d.score >= rules.thresholds.block) return 'HIGH';
  if (d.decision === 'step_up' || d.score >= rules.thresholds.stepUp) return 'MEDIUM';
  return 'LOW';
}
