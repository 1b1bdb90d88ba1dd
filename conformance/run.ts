/**
 * `npm run conformance` — runs the local FAPI 2.0 plan under every variant and prints one pass/fail
 * table per variant, the failures again with their variant, and a summary line.
 *
 *   node conformance/run.ts
 *       starts two hubs in-process (a fresh checkout needs nothing else; TEST_DATABASE_URL puts
 *       them on a real PostgreSQL) and runs every check against them; then the SSF plan
 *       (conformance/ssf/, transmitter and receiver) against a third in-process hub.
 *
 *   node conformance/run.ts --issuer https://localhost:8443 --data ./data --ticket <TICKET>
 *       runs against a hub started with `npm start` (the private_key_jwt + DPoP variants only: the
 *       mTLS variants need clients the in-process hub registers): the demo client files and dev CA are read
 *       from the data directory, and the demo customer's passkey is enrolled with the ticket
 *       (`npm run kakehashi -- enroll-ticket 10000001`; each run needs a new one). Expiry checks
 *       then wait the hub's real lifetimes out (about two minutes); --code-ttl tells the plan a
 *       code lifetime other than 60 s.
 *
 * Exit code 0 when every check passed, 1 when one failed, 2 on a usage error.
 */
import { parseArgs } from 'node:util';
import { connectTarget } from './lib/target.ts';
import { VARIANTS, variantTag } from './lib/types.ts';
import {
  closeTargets,
  failureLines,
  formatTable,
  type PlanTargets,
  runPlan,
  startLocalTargets,
  summary,
  variantsFor,
} from './plan.ts';
import { runSsfSection } from './ssf/run.ts';

const USAGE = `usage: node conformance/run.ts [--issuer URL --data DIR --ticket TICKET [--customer NUMBER] [--code-ttl SECONDS]]`;

async function main(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      issuer: { type: 'string' },
      data: { type: 'string' },
      ticket: { type: 'string' },
      customer: { type: 'string' },
      'code-ttl': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  const external = values.issuer !== undefined || values.data !== undefined || values.ticket !== undefined;
  if (external && (!values.issuer || !values.data || !values.ticket)) {
    console.error(`--issuer, --data and --ticket go together\n${USAGE}`);
    return 2;
  }
  const codeTtl = values['code-ttl'] === undefined ? undefined : Number(values['code-ttl']);
  if (codeTtl !== undefined && !(Number.isInteger(codeTtl) && codeTtl > 0)) {
    console.error(`--code-ttl: expected a number of seconds\n${USAGE}`);
    return 2;
  }

  let targets: PlanTargets | undefined;
  try {
    if (external) {
      const target = await connectTarget({
        issuer: values.issuer!,
        dataDir: values.data!,
        ticket: values.ticket!,
        ...(values.customer ? { customerNumber: values.customer } : {}),
        ...(codeTtl ? { codeTtl } : {}),
      });
      targets = { main: target, shortLifetimes: target };
      console.log(`conformance: ${target.label}; expiry checks wait the hub's lifetimes out`);
    } else {
      targets = await startLocalTargets();
      console.log(
        `conformance: ${targets.main.label}, and ${targets.shortLifetimes.label} with short lifetimes`,
      );
    }
    const started = performance.now();
    const variants = variantsFor(targets);
    if (variants.length < VARIANTS.length)
      console.log(
        `conformance: ${VARIANTS.length - variants.length} mTLS variants not run (they need clients only an in-process hub registers)`,
      );
    const runs = await runPlan(targets, {
      variants,
      onResult: (r) => {
        if (process.stderr.isTTY) process.stderr.write(r.outcome === 'fail' ? 'F' : '.');
      },
    });
    if (process.stderr.isTTY) process.stderr.write('\n');
    for (const { variant, results } of runs) console.log(formatTable(results, variant));
    const all = runs.flatMap((r) => r.results);
    const { passed, failed, notApplicable } = summary(all);
    console.log('');
    for (const { variant, results } of runs) {
      const s = summary(results);
      console.log(
        `  ${variantTag(variant).padEnd(48)} ${s.passed}/${results.length} passed${s.failed ? `, ${s.failed} FAILED` : ''}${s.notApplicable ? `, ${s.notApplicable} n/a` : ''}`,
      );
    }
    for (const line of failureLines(runs)) console.log(line);
    console.log(`\n(${((performance.now() - started) / 1000).toFixed(1)} s)`);
    console.log(
      `conformance: ${runs.length} variants, ${all.length} checks: ${passed} passed, ${failed} failed${notApplicable ? `, ${notApplicable} not applicable` : ''}`,
    );
    // The SSF plan needs an in-process hub (it plays the peers and emits events); not for --issuer.
    const ssf = external ? { failed: 0 } : await runSsfSection();
    return failed === 0 && ssf.failed === 0 ? 0 : 1;
  } finally {
    await closeTargets(targets);
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err) => {
    console.error('conformance: could not run the plan:', err);
    process.exit(1);
  },
);
