/**
 * The FAPI 2.0 conformance plan under vitest: one test per check and variant, against two in-process
 * hubs (PGlite, or TEST_DATABASE_URL) shared by every variant, so a failure names the variant and the
 * check. Every check must pass; a check that reports itself not applicable fails here, because the
 * in-process hubs are built so that every check applies. Each variant starts its preparations
 * (expiry, code reuse) when it starts and runs those checks last, so that their waits overlap the
 * other checks.
 */
import { afterAll, beforeAll, describe, it } from 'vitest';
import { type Check, VARIANTS, variantTag } from './lib/types.ts';
import {
  closeTargets,
  type PlanTargets,
  planFor,
  runningOrder,
  startLocalTargets,
  type VariantRun,
  variantRun,
} from './plan.ts';

let targets: PlanTargets | undefined;

beforeAll(async () => {
  targets = await startLocalTargets();
});
afterAll(() => closeTargets(targets));

for (const variant of VARIANTS) {
  describe(`variant ${variantTag(variant)}`, () => {
    let run: VariantRun | undefined;
    beforeAll(() => {
      if (!targets) throw new Error('the hubs did not start');
      run = variantRun(targets, variant);
      run.start();
    });

    const define = (check: Check, timeout?: number) =>
      it(
        `${check.id} — ${check.title} [${check.expect}]`,
        async () => {
          if (!run) throw new Error('the hubs did not start');
          const p = run.prepared(check);
          await check.run(run.contextFor(check), p === undefined ? undefined : await p);
        },
        timeout,
      );

    const ordered = runningOrder(planFor(variant));
    const groups = new Map<string, Check[]>();
    for (const check of ordered.filter((c) => !c.prepare))
      groups.set(check.group, [...(groups.get(check.group) ?? []), check]);
    for (const [group, inGroup] of groups)
      describe(group, () => {
        for (const check of inGroup) define(check);
      });
    const prepared = ordered.filter((c) => c.prepare);
    if (prepared.length)
      describe('Prepared at the start of the variant, checked last (expiry, code reuse)', () => {
        for (const check of prepared) define(check, 120_000);
      });
  });
}
