/**
 * What risk detection costs the walking skeleton (issue 8: "lowers the flows/s by less than 15%"):
 * runs the flow benchmark (test/bench/run.ts, flow phases only) with detection off
 * (BENCH_RISK=off: risk.enabled false) and on, alternating, and prints flows/s and the hub's CPU
 * per flow side by side with the drop.
 *
 *   node test/bench/risk-overhead.ts
 *
 * Environment: BENCH_RISK_ROUNDS (1: off then on; 2: off, on, on, off — drift cancels out), and every
 * BENCH_* setting of run.ts (BENCH_FLOW_CONCURRENCY, BENCH_DURATION_S, BENCH_DATABASE_URL, …), which
 * both runs share. The step-CPU table is skipped unless BENCH_STEP_CPU_FLOWS is set. Results:
 * results/risk-overhead-latest.json (BENCH_RISK_OUT overrides).
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { writeResults } from './lib/results.ts';
import { round } from './lib/stats.ts';

const ROOT = path.resolve(import.meta.dirname, '../..');
const MAX_DROP = 0.15;
const rounds = Number(process.env.BENCH_RISK_ROUNDS ?? 1);
if (!Number.isInteger(rounds) || rounds < 1 || rounds > 10) {
  console.error('BENCH_RISK_ROUNDS: an integer from 1 to 10');
  process.exit(2);
}

interface Phase {
  name: string;
  concurrency: number;
  operations: number;
  errors: number;
  perSecond: number;
  cpu: { hubMsPerOp: number | null; postgresMsPerOp: number | null };
}

const dir = mkdtempSync(path.join(tmpdir(), 'kakehashi-risk-overhead-'));
const runs: Array<{ risk: 'on' | 'off'; phases: Phase[] }> = [];
try {
  const order: Array<'on' | 'off'> = [];
  for (let r = 0; r < rounds; r++)
    order.push(...(r % 2 === 0 ? (['off', 'on'] as const) : (['on', 'off'] as const)));
  for (const [i, risk] of order.entries()) {
    const out = path.join(dir, `run-${i}-${risk}.json`);
    process.stderr.write(`\n=== run ${i + 1}/${order.length}: risk detection ${risk} ===\n`);
    const res = spawnSync(process.execPath, [path.join(ROOT, 'test/bench/run.ts')], {
      cwd: ROOT,
      stdio: ['ignore', 'ignore', 'inherit'],
      env: {
        ...process.env,
        BENCH_RISK: risk,
        BENCH_PHASES: 'flow',
        BENCH_STEP_CPU_FLOWS: process.env.BENCH_STEP_CPU_FLOWS ?? '0',
        BENCH_OUT: out,
      },
    });
    if (res.status !== 0) throw new Error(`the flow benchmark with risk ${risk} failed (exit ${res.status})`);
    const report = JSON.parse(readFileSync(out, 'utf8')) as { phases: Phase[] };
    runs.push({ risk, phases: report.phases });
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}

const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);
const names = [...new Set(runs.flatMap((r) => r.phases.map((p) => p.name)))];
const rows = names.map((name) => {
  const of = (risk: 'on' | 'off') =>
    runs.filter((r) => r.risk === risk).map((r) => r.phases.find((p) => p.name === name)!);
  const off = of('off');
  const on = of('on');
  const offRate = mean(off.map((p) => p.perSecond));
  const onRate = mean(on.map((p) => p.perSecond));
  const drop = offRate > 0 ? (offRate - onRate) / offRate : 0;
  const cpu = (ps: Phase[], k: 'hubMsPerOp' | 'postgresMsPerOp') => {
    const xs = ps.map((p) => p.cpu[k]).filter((x): x is number => x !== null);
    return xs.length ? round(mean(xs), 3) : null;
  };
  return {
    phase: name,
    flowsPerSecondOff: round(offRate),
    flowsPerSecondOn: round(onRate),
    drop: round(drop * 100, 1),
    hubCpuMsPerFlowOff: cpu(off, 'hubMsPerOp'),
    hubCpuMsPerFlowOn: cpu(on, 'hubMsPerOp'),
    postgresCpuMsPerFlowOff: cpu(off, 'postgresMsPerOp'),
    postgresCpuMsPerFlowOn: cpu(on, 'postgresMsPerOp'),
    flows: { off: off.reduce((a, p) => a + p.operations, 0), on: on.reduce((a, p) => a + p.operations, 0) },
    errors: [...off, ...on].reduce((a, p) => a + p.errors, 0),
    verdict: `${drop < MAX_DROP ? 'PASS' : 'MISS'} (drop < ${MAX_DROP * 100}%)`,
  };
});

const diff = (a: number | null, b: number | null) => (a === null || b === null ? '–' : `${round(b - a, 3)}`);
console.log(
  [
    '## Risk detection overhead (flow benchmark, detection off vs on)',
    '',
    `${rounds} round(s), order ${runs.map((r) => r.risk).join(', ')}; each run: test/bench/run.ts with BENCH_PHASES=flow.`,
    '',
    '| phase | flows/s off | flows/s on | drop | hub CPU ms/flow off → on (Δ) | PG CPU ms/flow off → on (Δ) | flows off / on | errors | target |',
    '|---|---:|---:|---:|---|---|---:|---:|---|',
    ...rows.map(
      (r) =>
        `| ${r.phase} | ${r.flowsPerSecondOff} | ${r.flowsPerSecondOn} | ${r.drop}% | ` +
        `${r.hubCpuMsPerFlowOff ?? '–'} → ${r.hubCpuMsPerFlowOn ?? '–'} (${diff(r.hubCpuMsPerFlowOff, r.hubCpuMsPerFlowOn)}) | ` +
        `${r.postgresCpuMsPerFlowOff ?? '–'} → ${r.postgresCpuMsPerFlowOn ?? '–'} (${diff(r.postgresCpuMsPerFlowOff, r.postgresCpuMsPerFlowOn)}) | ` +
        `${r.flows.off} / ${r.flows.on} | ${r.errors} | ${r.verdict} |`,
    ),
  ].join('\n'),
);
const out =
  process.env.BENCH_RISK_OUT ?? path.join(ROOT, 'test', 'bench', 'results', 'risk-overhead-latest.json');
writeResults(out, { when: new Date().toISOString(), rounds, rows });
console.log(`\nJSON: ${path.relative(process.cwd(), out)}`);
if (rows.some((r) => r.errors > 0)) process.exitCode = 1;
