/**
 * The effective policy as text for operators (`kakehashi policy show`): per operation its facts,
 * its rules in order with conditions, decision, reason and obligations, and the default.
 */

import { OPERATION_NAMES, OPERATIONS } from './operations.ts';
import type { Condition, Policy } from './parsePolicy.ts';

export function describeCondition(c: Condition): string {
  if (c.kind === 'boolean') return `${c.fact} = ${c.equals}`;
  if (c.kind === 'enum') return `${c.fact} ${c.negate ? 'not in' : 'in'} {${c.in.join(', ')}}`;
  if (c.gte !== undefined && c.gte === c.lte) return `${c.fact} = ${c.gte}`;
  const parts: string[] = [];
  if (c.gt !== undefined) parts.push(`> ${c.gt}`);
  if (c.gte !== undefined) parts.push(`≥ ${c.gte}`);
  if (c.lt !== undefined) parts.push(`< ${c.lt}`);
  if (c.lte !== undefined) parts.push(`≤ ${c.lte}`);
  return `${c.fact} ${parts.join(' and ')}`;
}

export function describePolicy(policy: Policy, lang: 'en' | 'ja' = 'en'): string {
  const out = [`withdrawal-strength policy ${policy.version} (deny > step_up > allow; no match → default)`];
  for (const op of OPERATION_NAMES) {
    const entry = policy.operations[op];
    const facts = Object.keys(OPERATIONS[op]);
    out.push('', `${op}${facts.length ? `  [facts: ${facts.join(', ')}]` : ''}`);
    for (const r of entry.rules) {
      const when = r.conditions.length ? r.conditions.map(describeCondition).join(' and ') : 'always';
      out.push(`  ${r.decision.padEnd(7)} ${r.id}: when ${when}`, `          ${r.reason[lang]}`);
      const o = r.obligations;
      if (Object.keys(o).length) out.push(`          obligations: ${JSON.stringify(o)}`);
    }
    out.push(`  ${entry.default.padEnd(7)} (default) ${entry.defaultReason[lang]}`);
  }
  return out.join('\n');
}
