/**
 * The local SSF conformance plan: the checks of ../shared/conformance/ssf-checklist.md, transmitter
 * and receiver, push and poll, run against an in-process hub whose peers are the plan's fake
 * institutions (lib/peerServer.ts). `conformance/run.ts --ssf` prints the table; `ssf.test.ts`
 * runs the same checks under vitest, one test per check.
 */
import type { CheckResult } from '../plan.ts';
import { formatTable, summary } from '../plan.ts';
import { receiverChecks } from './checks/receiver.ts';
import { transmitterChecks } from './checks/transmitter.ts';
import { createSsfContext, type SsfCheckContext, type SsfTarget, startSsfTarget } from './lib/context.ts';
import type { SsfCheck } from './types.ts';

export const SSF_CHECKS: readonly SsfCheck[] = (() => {
  const all = [...transmitterChecks, ...receiverChecks];
  const seen = new Set<string>();
  for (const c of all) {
    if (seen.has(c.id)) throw new Error(`duplicate SSF check id ${c.id}`);
    seen.add(c.id);
  }
  return all;
})();

export { createSsfContext, type SsfCheckContext, type SsfTarget, startSsfTarget };

export interface SsfCheckResult {
  check: SsfCheck;
  outcome: 'pass' | 'fail';
  ms: number;
  detail?: string;
}

export async function runSsfCheck(check: SsfCheck, ctx: SsfCheckContext): Promise<SsfCheckResult> {
  const started = performance.now();
  try {
    await check.run(ctx);
    return { check, outcome: 'pass', ms: performance.now() - started };
  } catch (err) {
    const detail = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
    return { check, outcome: 'fail', ms: performance.now() - started, detail };
  }
}

export async function runSsfPlan(
  target: SsfTarget,
  o: { onResult?: (r: SsfCheckResult) => void } = {},
): Promise<SsfCheckResult[]> {
  const ctx = await createSsfContext(target);
  const results: SsfCheckResult[] = [];
  for (const check of SSF_CHECKS) {
    const r = await runSsfCheck(check, ctx);
    results.push(r);
    o.onResult?.(r);
  }
  return results;
}

/** The FAPI plan's table layout (the result shapes agree on everything the table prints). */
export const formatSsfTable = (results: SsfCheckResult[]) => formatTable(results as unknown as CheckResult[]);
export const ssfSummary = (results: SsfCheckResult[]) => summary(results as unknown as CheckResult[]);
