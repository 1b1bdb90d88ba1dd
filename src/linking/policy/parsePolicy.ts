/**
 * The withdrawal-strength policy document (config/withdrawal-policy.json) and its validation.
 *
 *   { "version": "…", "operations": { "<operation>": { "default": "deny", "rules": [
 *       { "id": "withdrawal.allow", "when": { "acr": { "in": ["phr", "phrh"] }, "authAgeSeconds": { "lte": 300 } },
 *         "decision": "allow", "reason": { "en": "…", "ja": "…" }, "obligations": { … } } ] } } }
 *
 * Every operation must be listed (an operator sees every decision the hub can take); a rule's
 * conditions all hold for it to match (write two rules for "or").
 */
import { z } from 'zod';
import { type FactKind, OPERATION_NAMES, OPERATIONS, type Operation } from './operations.ts';

export const DECISIONS = ['allow', 'step_up', 'deny'] as const;
export type Decision = (typeof DECISIONS)[number];

export class PolicyError extends Error {
  override name = 'PolicyError';
  readonly code: 'ERR_POLICY_INVALID' | 'ERR_POLICY_FACTS';
  constructor(code: PolicyError['code'], message: string) {
    super(message);
    this.code = code;
  }
}

const text = z.object({ en: z.string().min(1), ja: z.string().min(1) }).strict();
const range = z
  .object({ lt: z.number(), lte: z.number(), gt: z.number(), gte: z.number() })
  .partial()
  .strict()
  .refine((r) => Object.keys(r).length > 0, 'a range needs at least one of lt, lte, gt, gte');
const oneOf = z
  .object({ in: z.array(z.string()).min(1), notIn: z.array(z.string()).min(1) })
  .partial()
  .strict()
  .refine((r) => (r.in === undefined) !== (r.notIn === undefined), 'give exactly one of in, notIn');

export const NOTIFY_PARTIES = ['customer', 'brokerage', 'bank'] as const;

const obligations = z
  .object({
    /** What a step-up must bring: an operation-bound approval with this acr, at most this old. */
    stepUp: z
      .object({
        acrValues: z.array(z.string().min(1)).min(1),
        maxAgeSeconds: z.number().int().min(0),
        /** By the bank (sweeps) instead of the hub's own passkey approval. */
        byBank: z.boolean().default(false),
      })
      .strict(),
    /** The operation is allowed up to this amount a day (yen). */
    capAmount: z.number().int().min(0),
    /** Hold the effect (a raised limit, a new withdrawal account) for this long. */
    coolOffSeconds: z.number().int().min(0),
    notify: z.array(z.enum(NOTIFY_PARTIES)).min(1),
    /** A notice the customer is shown (no URL; see src/notify). */
    notice: text,
  })
  .partial()
  .strict();
export type Obligations = z.output<typeof obligations>;

const rule = z
  .object({
    id: z.string().regex(/^[a-z][a-z0-9_.-]{0,79}$/, 'ids are lower-case words joined by . _ -'),
    when: z.record(z.string(), z.unknown()).default({}),
    decision: z.enum(DECISIONS),
    reason: text,
    obligations: obligations.optional(),
  })
  .strict();

const operationPolicy = z
  .object({
    /** When no rule matches. */
    default: z.enum(DECISIONS),
    defaultReason: text,
    rules: z.array(rule),
  })
  .strict();

const documentSchema = z
  .object({
    $comment: z.string().optional(),
    version: z.string().min(1),
    operations: z.record(z.string(), z.unknown()),
  })
  .strict();

export type Condition =
  | { fact: string; kind: 'boolean'; equals: boolean }
  | { fact: string; kind: 'number'; lt?: number; lte?: number; gt?: number; gte?: number }
  | { fact: string; kind: 'enum'; in: string[]; negate: boolean };

export interface Rule {
  id: string;
  conditions: Condition[];
  decision: Decision;
  reason: { en: string; ja: string };
  obligations: Obligations;
}

export interface Policy {
  version: string;
  operations: Record<
    Operation,
    { default: Decision; defaultReason: { en: string; ja: string }; rules: Rule[] }
  >;
}

function condition(where: string, fact: string, kind: FactKind, value: unknown): Condition {
  const fail = (problem: string) => new PolicyError('ERR_POLICY_INVALID', `${where}.${fact}: ${problem}`);
  if (kind.kind === 'boolean') {
    if (typeof value !== 'boolean') throw fail('expected true or false');
    return { fact, kind: 'boolean', equals: value };
  }
  if (kind.kind === 'number') {
    if (typeof value === 'number') return { fact, kind: 'number', gte: value, lte: value };
    const r = range.safeParse(value);
    if (!r.success) throw fail(`expected a number or { lt, lte, gt, gte } (${r.error.issues[0]?.message})`);
    return { fact, kind: 'number', ...r.data };
  }
  const known = (v: string) => {
    if (!kind.values.includes(v)) throw fail(`"${v}" is not one of ${kind.values.join(', ')}`);
    return v;
  };
  if (typeof value === 'string') return { fact, kind: 'enum', in: [known(value)], negate: false };
  const r = oneOf.safeParse(value);
  if (!r.success)
    throw fail(`expected a value or { in: […] } / { notIn: […] } (${r.error.issues[0]?.message})`);
  const list = (r.data.in ?? r.data.notIn)!.map(known);
  return { fact, kind: 'enum', in: list, negate: r.data.notIn !== undefined };
}

/** Validates a policy document; a PolicyError names the first problem by its path. */
export function parsePolicy(input: unknown): Policy {
  const doc = documentSchema.safeParse(input);
  if (!doc.success) {
    const i = doc.error.issues[0]!;
    throw new PolicyError('ERR_POLICY_INVALID', `${i.path.join('.') || '(root)'}: ${i.message}`);
  }
  for (const name of Object.keys(doc.data.operations))
    if (!OPERATION_NAMES.includes(name as Operation))
      throw new PolicyError(
        'ERR_POLICY_INVALID',
        `operations.${name}: unknown operation (known: ${OPERATION_NAMES.join(', ')})`,
      );
  const operations = {} as Policy['operations'];
  for (const op of OPERATION_NAMES) {
    if (doc.data.operations[op] === undefined)
      throw new PolicyError(
        'ERR_POLICY_INVALID',
        `operations.${op}: missing (every operation must be decided)`,
      );
    const parsed = operationPolicy.safeParse(doc.data.operations[op]);
    if (!parsed.success) {
      const i = parsed.error.issues[0]!;
      throw new PolicyError('ERR_POLICY_INVALID', `operations.${op}.${i.path.join('.')}: ${i.message}`);
    }
    const entry = parsed.data;
    const facts = OPERATIONS[op] as Record<string, FactKind>;
    const ids = new Set<string>();
    operations[op] = {
      default: entry.default,
      defaultReason: entry.defaultReason,
      rules: entry.rules.map((r, i) => {
        const where = `operations.${op}.rules[${i}]`;
        if (ids.has(r.id))
          throw new PolicyError('ERR_POLICY_INVALID', `${where}.id: "${r.id}" is used twice`);
        ids.add(r.id);
        const conditions = Object.entries(r.when).map(([fact, value]) => {
          const kind = facts[fact];
          if (!kind)
            throw new PolicyError(
              'ERR_POLICY_INVALID',
              `${where}.when.${fact}: ${op} has no such fact (facts: ${Object.keys(facts).join(', ') || 'none'})`,
            );
          return condition(`${where}.when`, fact, kind, value);
        });
        return {
          id: r.id,
          conditions,
          decision: r.decision,
          reason: r.reason,
          obligations: r.obligations ?? {},
        };
      }),
    };
  }
  return { version: doc.data.version, operations };
}
