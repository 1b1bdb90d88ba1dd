/**
 * The measurement shared by the hub's benchmark (run.ts) and the floor of a flow (flowFloor.ts): the
 * settings both read from the environment, one measured phase (warm-up, window, latency, /proc CPU of
 * the server, Postgres and the generator, Postgres counters), sequential flows with CPU per step, and
 * the markdown of the per-step tables. The "hub" here is whatever server the driver talks to.
 */
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { log } from './cleanup.ts';
import {
  type Database,
  type HubProcess,
  machineCpuSeconds,
  memoryMiB,
  postgresBackends,
  postgresCpuSeconds,
  processCpuSeconds,
  resetPeakRss,
  threadCpuSeconds,
  threadRuntimeNs,
} from './env.ts';
import {
  discoverFlow,
  type FlowSettings,
  runFlow,
  STEPS,
  type Step,
  type StepTimes,
  type VirtualUser,
} from './flow.ts';
import { type Connection, connectionStats, type Target } from './http.ts';
import { type PerfSummary, startPerfRecord, summarizePerf } from './perf.ts';
import type { DbCounters, PgMonitor } from './pgstats.ts';
import { round, type Summary, summarize } from './stats.ts';

const ROOT = path.resolve(import.meta.dirname, '../../..');
const env = process.env;
export const envNumber = (name: string, dflt: number): number => (env[name] ? Number(env[name]) : dflt);
export const envFlag = (name: string, dflt: boolean): boolean =>
  env[name] === undefined ? dflt : /^(1|true|yes|on)$/i.test(env[name]);

/** Every phase: BENCH_WARMUP_S of warm-up, then BENCH_DURATION_S measured. */
export const PHASE_WINDOW = {
  warmupS: envNumber('BENCH_WARMUP_S', 3),
  durationS: envNumber('BENCH_DURATION_S', 15),
};

/** How the flows are driven: the same variables for the hub and for its floor. */
export const FLOW_DRIVE = {
  flowConcurrency: (env.BENCH_FLOW_CONCURRENCY ?? '1,10')
    .split(',')
    .map(Number)
    .filter((n) => n > 0),
  parDpop: (env.BENCH_PAR_DPOP ?? 'proof') === 'jkt' ? ('jkt' as const) : ('proof' as const),
  consentPage: envFlag('BENCH_CONSENT_PAGE', true),
  loginPage: envFlag('BENCH_LOGIN_PAGE', false),
  stepCpuFlows: envNumber('BENCH_STEP_CPU_FLOWS', 200),
};
export const FLOW_SCOPE = 'openid offline_access accounts';
/** Issue 2's targets on a 2-core machine. */
export const TARGETS = { flowsPerSecondAt10: 300, flowP99MsAt10: 100, apiReadsPerSecondAt50: 2500 };

/**
 * The driver's settings for the server at `target` (its discovery document, the aggregator of
 * <dataDir>/demo/aggregator-client.json) driven as FLOW_DRIVE says, and HTTP requests per flow.
 */
export async function discoverDrivenFlow(
  conn: Connection,
  target: Target,
  dataDir: string,
): Promise<{ flow: FlowSettings; requestsPerFlow: number }> {
  const flow = await discoverFlow(conn, target, dataDir, {
    scope: FLOW_SCOPE,
    consentPage: FLOW_DRIVE.consentPage,
    loginPage: FLOW_DRIVE.loginPage,
    parDpopProof: FLOW_DRIVE.parDpop === 'proof',
  });
  return { flow, requestsPerFlow: 8 + (FLOW_DRIVE.consentPage ? 1 : 0) + (FLOW_DRIVE.loginPage ? 1 : 0) };
}

/**
 * The database pool per worker process (BENCH_DB_POOL). With Postgres on the same two cores, few
 * connections did best (fewer backends competing for the cores, more statements per round trip):
 * 2 per worker with two workers, 4 with one (measured against 3, 5, 10, 20, 30).
 */
export const dbPoolFor = (workers: number): number => envNumber('BENCH_DB_POOL', workers > 1 ? 2 : 4);

/** Stop a phase early when this many operations failed in it: something is broken, not slow. */
const MAX_ERRORS = 50;

// ---------------------------------------------------------------------------------------------
// Measurement of one phase.

export interface Snapshot {
  wall: number;
  hub: number | undefined;
  hubMain: number | undefined;
  pg: number | undefined;
  gen: NodeJS.CpuUsage;
  elu: ReturnType<typeof performance.eventLoopUtilization>;
  machine: { busy: number; total: number };
  connections: number;
}

export interface PhaseResult {
  name: string;
  kind: 'flow' | 'api';
  concurrency: number;
  measuredSeconds: number;
  operations: number;
  errors: number;
  firstErrors: string[];
  /** TLS connections the generator opened during the window (0 when keep-alive held). */
  connectionsOpened: number;
  perSecond: number;
  /** HTTP requests per second the hub answered (operations × requests per operation). */
  httpRequestsPerSecond: number;
  latencyMs: Summary;
  stepsMs?: Record<string, Summary>;
  cpu: {
    hubMsPerOp: number | null;
    postgresMsPerOp: number | null;
    generatorMsPerOp: number;
    /** Average cores busy during the window. */
    hubCores: number | null;
    /** The hub's main (event-loop) thread alone: near 1 means the hub's JavaScript is the limit. */
    hubMainThreadCores: number | null;
    postgresCores: number | null;
    generatorCores: number;
    /** The generator's main-thread event-loop utilization (near 1 means the generator limits). */
    generatorEventLoopUtilization: number;
    machineBusyCores: number;
    /** Busy cores not explained by hub + Postgres + generator (other tenants of the machine). */
    otherCores: number | null;
  };
  /** Database work per operation (transactions ≈ statements: the hub runs few explicit transactions). */
  db: {
    transactionsPerOp: number | null;
    rowsInsertedPerOp: number | null;
    rowsUpdatedPerOp: number | null;
    rowsDeletedPerOp: number | null;
    statements?: Array<{ callsPerOp: number; meanExecUs: number; meanPlanUs: number; query: string }>;
  };
  hubPeakRssMiB: number | null;
  hubRssAtEndMiB: number | null;
  /** BENCH_PERF=1: where the hub's CPU went during the window. */
  perf?: PerfSummary;
}

/** Sum of a reading over hub nodes or their processes; undefined when any reading is missing. */
export function sumOver<T>(items: T[], read: (item: T) => number | undefined): number | undefined {
  let total = 0;
  for (const item of items) {
    const v = read(item);
    if (v === undefined) return undefined;
    total += v;
  }
  return total;
}

export function snapshot(hubs: HubProcess[], db: Database): Snapshot {
  return {
    wall: performance.now(),
    hub: sumOver(hubs, (h) => sumOver(h.pids, processCpuSeconds)),
    hubMain: sumOver(hubs, (h) => sumOver(h.pids, (p) => threadCpuSeconds(p, p))),
    pg: db.postmasterPid === undefined ? undefined : postgresCpuSeconds(db.postmasterPid),
    gen: process.cpuUsage(),
    elu: performance.eventLoopUtilization(),
    machine: machineCpuSeconds(),
    connections: connectionStats.opened,
  };
}

export async function runPhase(o: {
  name: string;
  kind: 'flow' | 'api';
  workers: number;
  requestsPerOp: number;
  /** Every hub node: CPU and memory are summed over them; perf records the first. */
  hubs: HubProcess[];
  db: Database;
  monitor: PgMonitor;
  /** Directory for a perf recording of the window (BENCH_PERF=1). */
  perfDir: string | undefined;
  op: (worker: number, steps: StepTimes) => Promise<void>;
}): Promise<PhaseResult> {
  log(
    `phase ${o.name}: ${o.workers} concurrent, ${PHASE_WINDOW.warmupS} s warm-up + ${PHASE_WINDOW.durationS} s measured`,
  );
  const latencies: number[] = [];
  const stepSamples = new Map<string, number[]>();
  const firstErrors: string[] = [];
  let errors = 0;
  let measuring = false;
  let stop = false;
  let before: Snapshot | undefined;
  let after: Snapshot | undefined;
  let peakRssReset = false;
  let dbBefore: Promise<DbCounters> | undefined;
  let dbAfter: Promise<DbCounters> | undefined;
  let statementsReset: Promise<void> | undefined;
  let recording: ReturnType<typeof startPerfRecord> | undefined;
  const perfFile = o.perfDir ? path.join(o.perfDir, `${o.name.replace(/\W/g, '_')}.perf.data`) : undefined;

  const startTimer = setTimeout(() => {
    peakRssReset = o.hubs.every((h) => h.pids.every((p) => resetPeakRss(p)));
    before = snapshot(o.hubs, o.db);
    measuring = true;
    dbBefore = o.monitor.counters();
    statementsReset = o.monitor.resetStatements();
    if (perfFile) recording = startPerfRecord(o.hubs[0]!.servingPid, perfFile);
  }, PHASE_WINDOW.warmupS * 1000);
  const stopTimer = setTimeout(
    () => {
      after = snapshot(o.hubs, o.db);
      measuring = false;
      stop = true;
      dbAfter = o.monitor.counters();
      void recording?.stop();
    },
    (PHASE_WINDOW.warmupS + PHASE_WINDOW.durationS) * 1000,
  );

  const worker = async (w: number) => {
    while (!stop) {
      const steps: StepTimes = {};
      const t0 = performance.now();
      try {
        await o.op(w, steps);
        if (!measuring) continue;
        latencies.push(performance.now() - t0);
        for (const [k, v] of Object.entries(steps)) {
          const arr = stepSamples.get(k);
          if (arr) arr.push(v);
          else stepSamples.set(k, [v]);
        }
      } catch (err) {
        errors += 1;
        if (firstErrors.length < 5) firstErrors.push(String((err as Error).message ?? err).slice(0, 400));
        if (errors >= MAX_ERRORS) {
          log(`phase ${o.name}: ${errors} errors, stopping early; first: ${firstErrors[0]}`);
          stop = true;
        }
        await new Promise((r) => setTimeout(r, 20));
      }
    }
  };
  await Promise.all(Array.from({ length: o.workers }, (_, w) => worker(w)));
  clearTimeout(startTimer);
  clearTimeout(stopTimer);
  if (!before || !after)
    throw new Error(`phase ${o.name} ended before its measured window (errors: ${firstErrors.join(' | ')})`);

  const seconds = (after.wall - before.wall) / 1000;
  const ops = latencies.length;
  await recording?.stop();
  const perf = perfFile && recording ? await summarizePerf(perfFile, ROOT) : undefined;
  await statementsReset;
  const statements = await o.monitor.statements(20);
  const [c0, c1] = await Promise.all([dbBefore!, dbAfter!]);
  const perOp = (x: number) => (ops === 0 ? null : round(x / ops, 2));
  const per = (x: number | undefined, y: number | undefined) =>
    x === undefined || y === undefined ? null : y - x;
  const hubS = per(before.hub, after.hub);
  const hubMainS = per(before.hubMain, after.hubMain);
  const pgS = per(before.pg, after.pg);
  const genS = (after.gen.user + after.gen.system - before.gen.user - before.gen.system) / 1e6;
  const machineS = after.machine.busy - before.machine.busy;
  const elu = performance.eventLoopUtilization(after.elu, before.elu).utilization;
  const memories = o.hubs.flatMap((h) => h.pids.map((p) => memoryMiB(p)));
  const mem = memories.every((m) => m !== undefined)
    ? { peak: memories.reduce((a, m) => a + m!.peak, 0), rss: memories.reduce((a, m) => a + m!.rss, 0) }
    : undefined;
  const stepsMs: Record<string, Summary> = {};
  for (const s of STEPS) {
    const arr = stepSamples.get(s);
    if (arr) stepsMs[s] = summarize(arr);
  }
  const msPerOp = (s: number | null) => (s === null || ops === 0 ? null : round((1000 * s) / ops, 3));
  const result: PhaseResult = {
    name: o.name,
    kind: o.kind,
    concurrency: o.workers,
    measuredSeconds: round(seconds, 2)!,
    operations: ops,
    errors,
    firstErrors,
    connectionsOpened: after.connections - before.connections,
    perSecond: round(ops / seconds)!,
    httpRequestsPerSecond: round((ops * o.requestsPerOp) / seconds)!,
    latencyMs: summarize(latencies),
    ...(o.kind === 'flow' ? { stepsMs } : {}),
    cpu: {
      hubMsPerOp: msPerOp(hubS),
      postgresMsPerOp: msPerOp(pgS),
      generatorMsPerOp: msPerOp(genS)!,
      hubCores: hubS === null ? null : round(hubS / seconds, 2),
      hubMainThreadCores: hubMainS === null ? null : round(hubMainS / seconds, 2),
      postgresCores: pgS === null ? null : round(pgS / seconds, 2),
      generatorCores: round(genS / seconds, 2)!,
      generatorEventLoopUtilization: round(elu, 2)!,
      machineBusyCores: round(machineS / seconds, 2)!,
      otherCores:
        hubS === null || pgS === null ? null : round(Math.max(0, machineS - hubS - pgS - genS) / seconds, 2),
    },
    db: {
      transactionsPerOp: perOp(c1.xacts - c0.xacts),
      rowsInsertedPerOp: perOp(c1.inserted - c0.inserted),
      rowsUpdatedPerOp: perOp(c1.updated - c0.updated),
      rowsDeletedPerOp: perOp(c1.deleted - c0.deleted),
      ...(statements
        ? {
            statements: statements.map((r) => ({
              callsPerOp: round(r.calls / Math.max(1, ops), 2)!,
              meanExecUs: round(r.meanExecMs * 1000, 0)!,
              meanPlanUs: round(r.meanPlanMs * 1000, 0)!,
              query: r.query,
            })),
          }
        : {}),
    },
    hubPeakRssMiB: mem && peakRssReset ? round(mem.peak) : null,
    hubRssAtEndMiB: mem ? round(mem.rss) : null,
    ...(perf ? { perf } : {}),
  };
  log(
    `  ${result.perSecond}/s, p50 ${round(result.latencyMs.p50, 2)} ms, p99 ${round(result.latencyMs.p99, 2)} ms, ` +
      `hub ${result.cpu.hubMsPerOp} ms CPU/op, errors ${errors}, new connections ${result.connectionsOpened}`,
  );
  return result;
}

/**
 * Where a flow's CPU goes, step by step: sequential flows (one at a time, so the hub and Postgres
 * work only for us) with the hub's main-thread and the bench database's Postgres backends' on-CPU time read from
 * /proc/<pid>/task/<tid>/schedstat (ns) between steps. Work a step leaves behind after its response
 * lands in the next step; the passkeyAssert step is client-side, so its figures are background noise.
 */
export async function measureStepCpu(o: {
  flows: number;
  hub: HubProcess;
  db: Database;
  flow: FlowSettings;
  user: VirtualUser;
  monitor: PgMonitor;
}): Promise<StepCpu> {
  log(`step CPU: ${o.flows} sequential flows with per-step /proc readings`);
  const pgPids =
    o.db.postmasterPid === undefined
      ? []
      : postgresBackends(o.db.postmasterPid, new URL(o.db.url).pathname.slice(1)).filter(
          (pid) => pid !== o.monitor.backendPid,
        );
  const read = async () => {
    const calls = await o.monitor.totalCalls();
    let pgNs = 0;
    for (const pid of pgPids) pgNs += threadRuntimeNs(pid, pid);
    // Every worker's main thread (the one serving the step's connection does the work).
    const hubNs = o.hub.pids.reduce((sum, pid) => sum + threadRuntimeNs(pid, pid), 0);
    return { hub: hubNs, pg: pgNs, calls: calls ?? 0 };
  };
  const hub: Partial<Record<Step, number>> = {};
  const pg: Partial<Record<Step, number>> = {};
  const calls: Partial<Record<Step, number>> = {};
  let last = await read();
  const onLap = async (step: Step | 'start') => {
    const now = await read();
    if (step !== 'start') {
      hub[step] = (hub[step] ?? 0) + now.hub - last.hub;
      pg[step] = (pg[step] ?? 0) + now.pg - last.pg;
      calls[step] = (calls[step] ?? 0) + now.calls - last.calls;
    }
    last = now;
  };
  for (let i = 0; i < o.flows; i++) await runFlow(o.flow, o.user, {}, onLap);
  const out: StepCpu = { flows: o.flows, steps: {} };
  for (const s of STEPS) {
    if (hub[s] === undefined) continue;
    out.steps[s] = {
      hubMainThreadUs: round((hub[s] ?? 0) / 1000 / o.flows, 0)!,
      postgresUs: o.db.postmasterPid === undefined ? null : round((pg[s] ?? 0) / 1000 / o.flows, 0),
      statements: o.db.statementStats ? round((calls[s] ?? 0) / o.flows, 1) : null,
    };
  }
  return out;
}

export interface StepCpu {
  flows: number;
  steps: Partial<
    Record<Step, { hubMainThreadUs: number; postgresUs: number | null; statements: number | null }>
  >;
}

/** The per-step latency table of the flow phases and the CPU-per-step table, as markdown lines. */
export function flowStepLines(phases: PhaseResult[], stepCpu: StepCpu | undefined, server = 'hub'): string[] {
  const lines: string[] = [];
  const flows = phases.filter((p) => p.kind === 'flow' && p.stepsMs);
  if (flows.length) {
    lines.push(
      '',
      'Per step (ms, mean / p99):',
      '',
      `| step | ${flows.map((p) => p.name).join(' | ')} |`,
      `|---|${flows.map(() => '---:|').join('')}`,
    );
    for (const s of STEPS) {
      if (!flows.some((p) => p.stepsMs![s])) continue;
      lines.push(
        `| ${s} | ${flows.map((p) => (p.stepsMs![s] ? `${round(p.stepsMs![s].mean, 2)} / ${round(p.stepsMs![s].p99, 1)}` : '–')).join(' | ')} |`,
      );
    }
  }
  if (stepCpu) {
    const sc = stepCpu;
    let hubSum = 0;
    let pgSum = 0;
    lines.push(
      '',
      `CPU per step, ${sc.flows} sequential flows (µs per flow; ${server} main thread / Postgres backends, from schedstat):`,
      '',
      `| step | ${server} main thread µs | Postgres µs | statements |`,
      '|---|---:|---:|---:|',
    );
    let callSum = 0;
    for (const s of STEPS) {
      const v = sc.steps[s];
      if (!v) continue;
      hubSum += v.hubMainThreadUs;
      pgSum += v.postgresUs ?? 0;
      callSum += v.statements ?? 0;
      lines.push(`| ${s} | ${v.hubMainThreadUs} | ${v.postgresUs ?? '–'} | ${v.statements ?? '–'} |`);
    }
    lines.push(
      `| total | ${hubSum} | ${pgSum} | ${sc.steps.par?.statements == null ? '– (BENCH_PG_STATS=1)' : round(callSum, 1)} |`,
    );
  }
  return lines;
}
