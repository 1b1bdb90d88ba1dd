/**
 * Every withdrawal-strength decision goes through here: evaluated by the one engine and recorded
 * in the audit log with the policy version, the facts, the deciding rules and the reasons.
 */
import { recordAudit } from '../audit/index.ts';
import type { Queryable } from '../db/index.ts';
import { evaluatePolicy, type PolicyDecision } from './policy/evaluatePolicy.ts';
import type { FactsOf, Operation } from './policy/operations.ts';
import type { Policy } from './policy/parsePolicy.ts';

export interface DecisionContext {
  customerId: string;
  /** Who asked: `client:<id>` (an institution), `customer:<id>`, `operator:<name>`. */
  actor: string;
  clientId?: string | undefined;
  ip?: string | undefined;
  /** What the decision was about (amounts, masked accounts, link ids): never secrets. */
  subject?: Record<string, unknown>;
}

export async function decide<O extends Operation>(
  db: Queryable,
  policy: Policy,
  operation: O,
  facts: FactsOf<O>,
  context: DecisionContext,
): Promise<PolicyDecision> {
  const decision = evaluatePolicy(policy, operation, facts);
  await recordAudit(db, {
    type: `policy.${operation}.${decision.decision}`,
    outcome: decision.decision === 'deny' ? 'failure' : decision.decision === 'allow' ? 'success' : 'info',
    actor: context.actor,
    customerId: context.customerId,
    clientId: context.clientId,
    ip: context.ip,
    data: {
      policyVersion: decision.policyVersion,
      decidedBy: decision.decidedBy,
      matched: decision.matched.map((m) => m.id),
      facts,
      ...(context.subject ? { subject: context.subject } : {}),
    },
  });
  return decision;
}
