/**
 * The SSF conformance plan under vitest: one test per check of conformance/ssf/plan.ts, against
 * an in-process hub (PGlite, or TEST_DATABASE_URL) and the plan's fake peer institutions. Checks
 * share one hub and run in plan order.
 */
import { afterAll, beforeAll, describe, it } from 'vitest';
import {
  createSsfContext,
  SSF_CHECKS,
  type SsfCheckContext,
  type SsfTarget,
  startSsfTarget,
} from './ssf/plan.ts';
import type { SsfCheck } from './ssf/types.ts';

let target: SsfTarget | undefined;
let ctx: SsfCheckContext | undefined;

beforeAll(async () => {
  target = await startSsfTarget();
  ctx = await createSsfContext(target);
});
afterAll(() => target?.close());

const groups = new Map<string, SsfCheck[]>();
for (const check of SSF_CHECKS) groups.set(check.group, [...(groups.get(check.group) ?? []), check]);
for (const [group, checks] of groups)
  describe(group, () => {
    for (const check of checks)
      it(`${check.id} — ${check.title} [${check.expect}]`, async () => {
        if (!ctx) throw new Error('the hub did not start');
        await check.run(ctx);
      });
  });
