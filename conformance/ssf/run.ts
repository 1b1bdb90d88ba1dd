/**
 * The SSF section of `npm run conformance`: starts an in-process hub with the plan's fake peers,
 * runs every SSF check, prints the table. Returns how many checks failed.
 */
import { formatSsfTable, runSsfPlan, ssfSummary, startSsfTarget } from './plan.ts';

export async function runSsfSection(): Promise<{ passed: number; failed: number }> {
  const target = await startSsfTarget();
  try {
    console.log(`\nconformance (SSF): ${target.label}`);
    const started = performance.now();
    const results = await runSsfPlan(target, {
      onResult: (r) => {
        if (process.stderr.isTTY) process.stderr.write(r.outcome === 'fail' ? 'F' : '.');
      },
    });
    if (process.stderr.isTTY) process.stderr.write('\n');
    console.log(formatSsfTable(results));
    const { passed, failed } = ssfSummary(results);
    console.log(`\n(${((performance.now() - started) / 1000).toFixed(1)} s)`);
    console.log(`conformance (SSF): ${passed} passed, ${failed} failed`);
    return { passed, failed };
  } finally {
    await target.close();
  }
}
