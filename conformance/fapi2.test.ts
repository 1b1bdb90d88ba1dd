/**
 * The FAPI 2.0 conformance plan under vitest: one test per check, against two in-process hubs
 * (PGlite, or TEST_DATABASE_URL), so a failure names the check. Every check must pass; a check
 * that reports itself not applicable fails here, because the in-process hubs are built so that
 * every check applies. Checks with a preparation (expiry) come last, so that their waits overlap
 * the other checks.
 */
import { afterAll, beforeAll, describe, it } from 'vitest';
import type { CheckContext } from './lib/context.ts';
import type { Check } from './lib/types.ts';
import {
  closeTargets,
  contextsFor,
  DEFAULT_VARIANT,
  type PlanTargets,
  planFor,
  startLocalTargets,
  startPreparations,
} from './plan.ts';

const checks = planFor(DEFAULT_VARIANT);
let targets: PlanTargets | undefined;
let contextFor: ((check: Check) => CheckContext) | undefined;
let prepared = new Map<Check, Promise<unknown>>();

beforeAll(async () => {
  targets = await startLocalTargets();
  contextFor = contextsFor(targets, DEFAULT_VARIANT);
  prepared = startPreparations(checks, contextFor);
});
afterAll(() => closeTargets(targets));

function define(check: Check, timeout?: number) {
  it(
    `${check.id} — ${check.title} [${check.expect}]`,
    async () => {
      if (!contextFor) throw new Error('the hubs did not start');
      const p = prepared.get(check);
      await check.run(contextFor(check), p === undefined ? undefined : await p);
    },
    timeout,
  );
}

const groups = new Map<string, Check[]>();
for (const check of checks.filter((c) => !c.prepare))
  groups.set(check.group, [...(groups.get(check.group) ?? []), check]);
for (const [group, inGroup] of groups)
  describe(group, () => {
    for (const check of inGroup) define(check);
  });

// An expiry waits out the hub's lifetime (a request_uri lives 60 s in oidc-provider 9, whatever is configured).
describe('Expiry (prepared at the start, checked last)', () => {
  for (const check of checks.filter((c) => c.prepare)) define(check, 120_000);
});
