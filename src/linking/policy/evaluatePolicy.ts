/**
 * One engine for every withdrawal-strength decision: all rules of the operation whose conditions
 * hold are collected; the strictest decision among them wins (deny over step-up over allow), or the
 * operation's default when none matched. The result names every matched rule with its reason, so a
 * decision can be explained to the customer, the institution and an auditor alike.
 */

import { type FactKind, type FactsOf, OPERATIONS, type Operation } from './operations.ts';
import { type Condition, type Decision, type Obligations, type Policy, PolicyError } from './parsePolicy.ts';

const STRICTNESS: Record<Decision, number> = { allow: 0, step_up: 1, deny: 2 };

export interface MatchedRule {
  id: string;
  decision: Decision;
  reason: { en: string; ja: string };
}

export interface PolicyDecision {
  operation: Operation;
  decision: Decision;
  policyVersion: string;
  /** The rules that decided (those with the winning decision), or `<operation>.default`. */
  decidedBy: string[];
  /** Every rule that matched, in policy order. */
  matched: MatchedRule[];
  /** Reasons of the deciding rules, in English and Japanese. */
  reasons: Array<{ en: string; ja: string }>;
  /** Obligations of the deciding rules, merged (the stricter value wins). */
  obligations: Obligations;
}

function holds(c: Condition, value: unknown): boolean {
  switch (c.kind) {
    case 'boolean':
      return value === c.equals;
    case 'number':
      return (
        typeof value === 'number' &&
        (c.lt === undefined || value < c.lt) &&
        (c.lte === undefined || value <= c.lte) &&
        (c.gt === undefined || value > c.gt) &&
        (c.gte === undefined || value >= c.gte)
      );
    case 'enum':
      return c.in.includes(value as string) !== c.negate;
  }
}

function checkFacts(operation: Operation, facts: Record<string, unknown>): void {
  for (const [name, kind] of Object.entries(OPERATIONS[operation] as Record<string, FactKind>)) {
    const v = facts[name];
    const ok =
      kind.kind === 'boolean'
        ? typeof v === 'boolean'
        : kind.kind === 'number'
          ? typeof v === 'number' && Number.isFinite(v)
          : kind.values.includes(v as string);
    if (!ok)
      throw new PolicyError(
        'ERR_POLICY_FACTS',
        `${operation}: fact ${name} is missing or not a ${kind.kind}`,
      );
  }
}

/** Stricter wins: smaller caps and ages, longer cool-offs, all parties notified. */
function merge(into: Obligations, o: Obligations): Obligations {
  const out: Obligations = { ...into };
  if (o.capAmount !== undefined) out.capAmount = Math.min(o.capAmount, out.capAmount ?? Infinity);
  if (o.coolOffSeconds !== undefined)
    out.coolOffSeconds = Math.max(o.coolOffSeconds, out.coolOffSeconds ?? 0);
  if (o.notify) out.notify = [...new Set([...(out.notify ?? []), ...o.notify])];
  if (o.notice && !out.notice) out.notice = o.notice;
  if (o.stepUp)
    out.stepUp = out.stepUp
      ? {
          acrValues: out.stepUp.acrValues.filter((a) => o.stepUp!.acrValues.includes(a)),
          maxAgeSeconds: Math.min(out.stepUp.maxAgeSeconds, o.stepUp.maxAgeSeconds),
          byBank: out.stepUp.byBank || o.stepUp.byBank,
        }
      : o.stepUp;
  return out;
}

export function evaluatePolicy<O extends Operation>(
  policy: Policy,
  operation: O,
  facts: FactsOf<O>,
): PolicyDecision {
  const given = facts as Record<string, unknown>;
  checkFacts(operation, given);
  const entry = policy.operations[operation];
  const matched = entry.rules.filter((r) => r.conditions.every((c) => holds(c, given[c.fact])));
  if (!matched.length)
    return {
      operation,
      decision: entry.default,
      policyVersion: policy.version,
      decidedBy: [`${operation}.default`],
      matched: [],
      reasons: [entry.defaultReason],
      obligations: {},
    };
  const decision = matched.reduce<Decision>(
    (d, r) => (STRICTNESS[r.decision] > STRICTNESS[d] ? r.decision : d),
    'allow',
  );
  const deciding = matched.filter((r) => r.decision === decision);
  return {
    operation,
    decision,
    policyVersion: policy.version,
    decidedBy: deciding.map((r) => r.id),
    matched: matched.map((r) => ({ id: r.id, decision: r.decision, reason: r.reason })),
    reasons: deciding.map((r) => r.reason),
    obligations: deciding.reduce<Obligations>((o, r) => merge(o, r.obligations), {}),
  };
}
