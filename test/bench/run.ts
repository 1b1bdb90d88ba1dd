/**
 * `npm run bench`: throughput, latency, CPU and memory of the hub against a real PostgreSQL.
 *
 *   1. Complete FAPI 2.0 flows (PAR with private_key_jwt + PKCE + DPoP, passkey login, consent,
 *      code exchange with DPoP) at 1 and at 10 concurrent clients.
 *   2. DPoP-protected GET /api/v1/accounts at 50 connections, a fresh proof per request.
 *
 * It starts its own throwaway PostgreSQL (scripts/pg-test-server.sh, fsync=off; BENCH_PG_FSYNC=on
 * for a durable one) unless BENCH_DATABASE_URL is set, and the hub as a child process so that its CPU
 * time and peak RSS are its own. Traffic goes to 127.0.0.1 only. Everything it starts is stopped and
 * removed at the end, on error and on Ctrl-C.
 *
 * Settings (BENCH_* environment variables) and how to read the report: test/bench/README.md.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { issueEnrollmentTicket } from '../../src/authn/index.ts';
import { openDb } from '../../src/db/index.ts';
import { createEmulator } from '../support/passkeyEmulator.ts';
import { log, onCleanup, runBench } from './lib/cleanup.ts';
import {
  type Database,
  freePort,
  type HubProcess,
  machineCpuSeconds,
  machineInfo,
  memoryMiB,
  postgresBackends,
  postgresCpuSeconds,
  processCpuSeconds,
  resetPeakRss,
  startDatabase,
  startHubProcess,
  threadCpuSeconds,
  threadRuntimeNs,
} from './lib/env.ts';
import {
  discoverFlow,
  enroll,
  type FlowSettings,
  runFlow,
  STEPS,
  type Step,
  type StepTimes,
  type VirtualUser,
} from './lib/flow.ts';
import { type Connection, connection, connectionStats, request, type Target } from './lib/http.ts';
import { athOf, createDpopSigner } from './lib/jws.ts';
import { formatPerf, type PerfSummary, perfAvailable, startPerfRecord, summarizePerf } from './lib/perf.ts';
import { createPgMonitor, type DbCounters, type PgMonitor } from './lib/pgstats.ts';
import { formatProfile, summarizeProfile } from './lib/profile.ts';
import { writeResults } from './lib/results.ts';
import { round, type Summary, summarize } from './lib/stats.ts';

const ROOT = path.resolve(import.meta.dirname, '../..');
const env = process.env;
const num = (name: string, dflt: number) => (env[name] ? Number(env[name]) : dflt);
const flag = (name: string, dflt: boolean) =>
  env[name] === undefined ? dflt : /^(1|true|yes|on)$/i.test(env[name]);

const HUB_WORKERS = Math.max(1, num('BENCH_HUB_WORKERS', availableParallelism()));
const SETTINGS = {
  warmupS: num('BENCH_WARMUP_S', 3),
  durationS: num('BENCH_DURATION_S', 15),
  flowConcurrency: (env.BENCH_FLOW_CONCURRENCY ?? '1,10')
    .split(',')
    .map(Number)
    .filter((n) => n > 0),
  apiConnections: num('BENCH_API_CONNECTIONS', 50),
  phases: new Set((env.BENCH_PHASES ?? 'flow,api').split(',')),
  /**
   * The hub's pool per worker. With Postgres on the same two cores, few connections did best (fewer
   * backends competing for the cores, more statements per round trip): 2 per worker with two
   * workers, 4 with one (measured against 3, 5, 10, 20, 30).
   */
  dbPool: num('BENCH_DB_POOL', HUB_WORKERS > 1 ? 2 : 4),
  /** Hub nodes (processes) sharing the database and the issuer, as behind a load balancer. */
  hubNodes: Math.max(1, num('BENCH_HUB_NODES', 1)),
  /** Workers per hub (KAKEHASHI_WORKERS): as many as the machine has cores, as the hub is deployed. */
  hubWorkers: HUB_WORKERS,
  parDpop: (env.BENCH_PAR_DPOP ?? 'proof') === 'jkt' ? ('jkt' as const) : ('proof' as const),
  consentPage: flag('BENCH_CONSENT_PAGE', true),
  loginPage: flag('BENCH_LOGIN_PAGE', false),
  profile: flag('BENCH_PROFILE', false),
  perf: flag('BENCH_PERF', false),
  stepCpuFlows: num('BENCH_STEP_CPU_FLOWS', 200),
  /** `off`: the hub runs with risk.enabled false, to measure what detection costs (risk-overhead.ts). */
  risk: ((v = 'on') => {
    if (v !== 'on' && v !== 'off') throw new Error(`BENCH_RISK: on or off, not "${v}"`);
    return v;
  })(env.BENCH_RISK),
};
const TARGETS = { flowsPerSecondAt10: 300, flowP99MsAt10: 100, apiReadsPerSecondAt50: 2500 };
const SCOPE = 'openid offline_access accounts';
/** Stop a phase early when this many operations failed in it: something is broken, not slow. */
const MAX_ERRORS = 50;

// ---------------------------------------------------------------------------------------------
// Measurement of one phase.

interface Snapshot {
  wall: number;
  hub: number | undefined;
  hubMain: number | undefined;
  pg: number | undefined;
  gen: NodeJS.CpuUsage;
  elu: ReturnType<typeof performance.eventLoopUtilization>;
  machine: { busy: number; total: number };
  connections: number;
}

interface PhaseResult {
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
function sumOver<T>(items: T[], read: (item: T) => number | undefined): number | undefined {
  let total = 0;
  for (const item of items) {
    const v = read(item);
    if (v === undefined) return undefined;
    total += v;
  }
  return total;
}

function snapshot(hubs: HubProcess[], db: Database): Snapshot {
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

async function runPhase(o: {
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
    `phase ${o.name}: ${o.workers} concurrent, ${SETTINGS.warmupS} s warm-up + ${SETTINGS.durationS} s measured`,
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
  }, SETTINGS.warmupS * 1000);
  const stopTimer = setTimeout(
    () => {
      after = snapshot(o.hubs, o.db);
      measuring = false;
      stop = true;
      dbAfter = o.monitor.counters();
      void recording?.stop();
    },
    (SETTINGS.warmupS + SETTINGS.durationS) * 1000,
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
async function measureStepCpu(o: {
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

interface StepCpu {
  flows: number;
  steps: Partial<
    Record<Step, { hubMainThreadUs: number; postgresUs: number | null; statements: number | null }>
  >;
}

// ---------------------------------------------------------------------------------------------
// Set-up: database, hub, customers with enrolled passkeys.

async function setUpUsers(o: {
  databaseUrl: string;
  dataDir: string;
  count: number;
  issuer: string;
  flow: FlowSettings;
  /** One per hub node: user i talks to node i mod n. */
  targets: Target[];
}): Promise<VirtualUser[]> {
  const db = await openDb({ databaseUrl: o.databaseUrl, dataDir: o.dataDir, poolSize: 2 });
  try {
    const demo = await db.query<{ id: string; institution_id: string }>(
      "SELECT id, institution_id FROM customers WHERE customer_number = '10000001'",
    );
    const institution = demo.rows[0]!.institution_id;
    const customers: Array<{ id: string; number: string }> = [{ id: demo.rows[0]!.id, number: '10000001' }];
    // More customers like the demo one, each with two accounts: every concurrent client signs in
    // as its own customer with its own passkey (a passkey's signature counter must move forward).
    for (let i = 1; i < o.count; i++) {
      const id = `cus_bench_${String(i).padStart(4, '0')}`;
      const number = String(20_000_000 + i);
      await db.query(
        `INSERT INTO customers (id, institution_id, customer_number, name_kanji, name_kana, birth_date)
         VALUES ($1, $2, $3, 'ベンチ 太郎', 'ベンチ タロウ', '1990-01-01')`,
        [id, institution, number],
      );
      await db.query(
        `INSERT INTO accounts (id, customer_id, institution_id, kind, tax_category, branch_code, account_number, nickname, opened_on) VALUES
         ($1, $3, $4, 'securities', 'specific', '001', $5, '特定口座', '2019-04-01'),
         ($2, $3, $4, 'securities', 'nisa', '001', $6, 'NISA口座', '2024-01-04')`,
        [
          `acc_bench_${i}_a`,
          `acc_bench_${i}_b`,
          id,
          institution,
          String(3_000_000 + i),
          String(4_000_000 + i),
        ],
      );
      customers.push({ id, number });
    }
    const authn = {
      db,
      rpId: new URL(o.issuer).hostname,
      rpName: 'Kakehashi',
      origin: o.issuer,
      ticketTtlSeconds: 3600,
      maxFailedAttempts: 5,
    };
    const users: VirtualUser[] = [];
    for (const c of customers) {
      const accounts = await db.query<{ id: string }>(
        "SELECT id FROM accounts WHERE customer_id = $1 AND status = 'open' ORDER BY opened_on, id",
        [c.id],
      );
      const { ticket } = await issueEnrollmentTicket(authn, { customerId: c.id, issuedBy: 'bench' });
      const user: VirtualUser = {
        conn: connection(o.targets[users.length % o.targets.length]!),
        dpop: createDpopSigner(),
        device: createEmulator(),
        customerNumber: c.number,
        accountIds: accounts.rows.map((r) => r.id),
      };
      onCleanup(() => user.conn.destroy());
      await enroll(o.flow, user, ticket);
      users.push(user);
    }
    return users;
  } finally {
    await db.close();
  }
}

function postgresClientVersion(): string {
  try {
    return execFileSync('psql', ['--version'], { encoding: 'utf8' }).trim();
  } catch {
    return 'unknown';
  }
}

// ---------------------------------------------------------------------------------------------

function markdown(report: Report): string {
  const m = report.machine;
  const lines = [
    '## Kakehashi benchmark',
    '',
    `Machine: ${m.nproc} × ${m.cpuModel}, ${m.platform}, Node ${m.node}; PostgreSQL ${report.postgres.version} ` +
      `(${report.postgres.source}, fsync=${report.postgres.fsync}${report.postgres.fsync === 'off' ? ' — NOT durable, commits skip the disk flush' : ''}), hub pg pool ${report.config.dbPool}${report.config.hubWorkers > 1 ? ` per worker, ${report.config.hubWorkers} workers per hub (KAKEHASHI_WORKERS: node:cluster, one port; CPU and RSS summed over primary and workers, perf profiles worker 1)` : ''}${report.config.hubNodes > 1 ? ` per node, ${report.config.hubNodes} hub nodes (processes) sharing the database and the issuer, connections spread over them; CPU and RSS are their sums, perf profiles node 1` : ''}.`,
    `Load generator, hub and PostgreSQL share these ${m.nproc} cores. ${report.config.warmupS} s warm-up, ${report.config.durationS} s measured per phase.`,
    `Risk detection: ${report.config.risk === 'off' ? '**OFF** (BENCH_RISK=off, risk.enabled false)' : 'on'}.`,
    `Flow = PAR (private_key_jwt, PKCE S256, ${report.config.parDpop === 'proof' ? 'DPoP proof header' : 'dpop_jkt'}) → /auth → ` +
      `${report.config.loginPage ? 'login page → ' : ''}passkey options → assertion (client side) → verify → /auth resume → ` +
      `${report.config.consentPage ? 'consent page (HTML GET) → ' : ''}consent POST → /auth resume → token (DPoP), fresh cookie jar per flow; ` +
      `${report.config.requestsPerFlow} HTTP requests per flow.`,
    report.config.profile ? '**The hub ran under --cpu-prof: figures include profiling overhead.**' : '',
    report.config.perf
      ? '**The hub ran with --perf-basic-prof under perf record: figures include profiling overhead.**'
      : '',
    '',
    '| phase | concurrency | ops/s | p50 ms | p99 ms | hub CPU ms/op | PG CPU ms/op | generator CPU ms/op | cores hub (main thread) / PG / gen / other | PG xacts/op | hub peak RSS MiB | errors | target |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---|',
  ];
  for (const p of report.phases) {
    const c = p.cpu;
    lines.push(
      `| ${p.name} | ${p.concurrency} | ${p.perSecond} | ${round(p.latencyMs.p50, 1)} | ${round(p.latencyMs.p99, 1)} | ` +
        `${c.hubMsPerOp ?? '–'} | ${c.postgresMsPerOp ?? '–'} | ${c.generatorMsPerOp} | ` +
        `${c.hubCores ?? '–'} (${c.hubMainThreadCores ?? '–'}) / ${c.postgresCores ?? '–'} / ${c.generatorCores} / ${c.otherCores ?? '–'} | ` +
        `${p.db.transactionsPerOp ?? '–'} | ${p.hubPeakRssMiB ?? '–'} | ${p.errors} | ${report.verdicts[p.name] ?? ''} |`,
    );
  }
  const flows = report.phases.filter((p) => p.kind === 'flow' && p.stepsMs);
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
  if (report.stepCpu) {
    const sc = report.stepCpu;
    let hubSum = 0;
    let pgSum = 0;
    lines.push(
      '',
      `CPU per step, ${sc.flows} sequential flows (µs per flow; hub main thread / Postgres backends, from schedstat):`,
      '',
      '| step | hub main thread µs | Postgres µs | statements |',
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
  lines.push(
    '',
    `Generator main-thread event-loop utilization: ${report.phases.map((p) => `${p.name} ${p.cpu.generatorEventLoopUtilization}`).join(', ')} (near 1 would mean the generator limits).`,
  );
  for (const p of report.phases) if (p.perf) lines.push('', formatPerf(p.name, p.perf));
  for (const p of report.phases)
    if (p.firstErrors.length) lines.push(`Errors in ${p.name}: ${p.firstErrors.join(' | ')}`);
  return lines.filter((l, i, a) => !(l === '' && a[i - 1] === '')).join('\n');
}

interface Report {
  when: string;
  machine: ReturnType<typeof machineInfo>;
  postgres: { version: string; client: string; source: string; fsync: string };
  config: typeof SETTINGS & { requestsPerFlow: number; scope: string; phases: string[] };
  targets: typeof TARGETS;
  verdicts: Record<string, string>;
  phases: PhaseResult[];
  stepCpu?: StepCpu;
  profile?: string;
}

async function main(): Promise<void> {
  const db = await startDatabase(log);
  onCleanup(() => db.stop());
  const dataDir = mkdtempSync(path.join(tmpdir(), 'kakehashi-bench-'));
  onCleanup(() => rmSync(dataDir, { recursive: true, force: true }));
  // Our own config file, so that a developer's config/kakehashi.json does not change what we measure.
  const configFile = path.join(dataDir, 'bench-config.json');
  writeFileSync(configFile, SETTINGS.risk === 'off' ? '{"risk":{"enabled":false}}\n' : '{}\n');
  if (SETTINGS.risk === 'off') log('BENCH_RISK=off: the hub runs with risk detection OFF');
  const profileDir = path.join(dataDir, 'profile');
  if (SETTINGS.profile) mkdirSync(profileDir);
  const perfDir = SETTINGS.perf && perfAvailable() ? path.join(dataDir, 'perf') : undefined;
  if (SETTINGS.perf && !perfDir) log('BENCH_PERF=1 but `perf` is not installed: no on-CPU profile');
  if (perfDir) mkdirSync(perfDir);

  const port = await freePort();
  const issuer = `https://localhost:${port}`;
  // Node 1 migrates, generates keys, seeds the demo and the dev TLS files; the others, started after
  // it, find all of that in the shared database and data directory — as extra nodes of one deployment
  // do. Every node answers for the same issuer; the generator spreads its connections over them.
  const hubs: HubProcess[] = [];
  for (let n = 0; n < SETTINGS.hubNodes; n++) {
    const nodePort = n === 0 ? port : await freePort();
    log(
      `starting hub node ${n + 1} of ${SETTINGS.hubNodes} on port ${nodePort} (pool ${SETTINGS.dbPool})${SETTINGS.profile ? ' under --cpu-prof' : ''}`,
    );
    const hub = await startHubProcess({
      // BENCH_HUB_ROOT runs the hub from another checkout (e.g. a branch to compare) with this driver.
      cwd: env.BENCH_HUB_ROOT ? path.resolve(env.BENCH_HUB_ROOT) : ROOT,
      env: {
        DATABASE_URL: db.url,
        KAKEHASHI_DATA: dataDir,
        KAKEHASHI_CONFIG: configFile,
        KAKEHASHI_DB_POOL: String(SETTINGS.dbPool),
        KAKEHASHI_WORKERS: String(SETTINGS.hubWorkers),
        KAKEHASHI_ISSUER: issuer,
        PORT: String(nodePort),
        LOG_LEVEL: 'warn',
      },
      nodeArgs: [
        ...(SETTINGS.profile && n === 0 ? ['--cpu-prof', `--cpu-prof-dir=${profileDir}`] : []),
        ...(perfDir ? ['--perf-basic-prof'] : []),
        ...(env.BENCH_HUB_NODE_ARGS ?? '').split(' ').filter(Boolean),
      ],
      log,
    });
    onCleanup(() => hub.stop());
    // --perf-basic-prof leaves its symbol map in /tmp.
    if (perfDir)
      onCleanup(() => {
        for (const p of hub.pids) rmSync(`/tmp/perf-${p}.map`, { force: true });
      });
    log(
      `hub node ${n + 1} pid ${hub.pid}${hub.pids.length > 1 ? ` (workers ${hub.pids.slice(1).join(', ')})` : ''}${db.postmasterPid ? `, postmaster pid ${db.postmasterPid}` : ''}`,
    );
    hubs.push(hub);
  }
  const hub = hubs[0]!;

  const caPem = readFileSync(path.join(dataDir, 'tls', 'ca.pem'), 'utf8');
  const targets: Target[] = hubs.map((h) => ({
    connectOrigin: `https://127.0.0.1:${new URL(h.listenUrl).port}`,
    issuer,
    host: `localhost:${port}`,
    caPem,
  }));
  const target = targets[0]!;
  const setupConn = connection(target);
  onCleanup(() => setupConn.destroy());
  const flow = await discoverFlow(setupConn, target, dataDir, {
    scope: SCOPE,
    consentPage: SETTINGS.consentPage,
    loginPage: SETTINGS.loginPage,
    parDpopProof: SETTINGS.parDpop === 'proof',
  });
  const requestsPerFlow = 8 + (SETTINGS.consentPage ? 1 : 0) + (SETTINGS.loginPage ? 1 : 0);

  const userCount = Math.max(...SETTINGS.flowConcurrency, 1);
  log(`enrolling ${userCount} customers' passkeys`);
  const users = await setUpUsers({ databaseUrl: db.url, dataDir, count: userCount, issuer, flow, targets });

  // Sanity: every user completes one flow, and the API returns exactly the consented accounts.
  await Promise.all(users.map((u) => runFlow(flow, u, {})));
  const apiUrl = `${issuer}/api/v1/accounts`;
  {
    const u = users[0]!;
    const res = await request(
      u.conn,
      'api',
      200,
      'GET',
      '/api/v1/accounts',
      {
        host: target.host,
        authorization: `DPoP ${u.accessToken!}`,
        dpop: u.dpop.proof('GET', apiUrl, athOf(u.accessToken!)),
        accept: 'application/json',
      },
      undefined,
      true,
    );
    const body = JSON.parse(res.text!) as { data: Array<{ accountId: string }> };
    const got = body.data.map((a) => a.accountId).sort();
    if (JSON.stringify(got) !== JSON.stringify([...u.accountIds].sort()))
      throw new Error(
        `sanity: /api/v1/accounts returned ${JSON.stringify(got)}, consented ${JSON.stringify(u.accountIds)}`,
      );
  }
  log('set-up done: flows and the API answer as expected');

  const monitor = await createPgMonitor(db.url, db.statementStats);
  onCleanup(() => monitor.close());
  const phases: PhaseResult[] = [];
  if (SETTINGS.phases.has('flow')) {
    for (const c of SETTINGS.flowConcurrency) {
      phases.push(
        await runPhase({
          name: `flow@${c}`,
          kind: 'flow',
          workers: c,
          requestsPerOp: requestsPerFlow,
          hubs,
          db,
          monitor,
          perfDir,
          op: (w, steps) => runFlow(flow, users[w]!, steps),
        }),
      );
    }
  }
  if (SETTINGS.phases.has('api')) {
    // One connection per worker; the workers share the users' tokens (each bound to its user's DPoP key).
    const conns: Connection[] = Array.from({ length: SETTINGS.apiConnections }, (_, w) =>
      connection(targets[w % targets.length]!),
    );
    onCleanup(() => Promise.all(conns.map((c) => c.destroy())));
    const tokens = users.map((u) => ({
      u,
      authorization: `DPoP ${u.accessToken!}`,
      ath: athOf(u.accessToken!),
    }));
    phases.push(
      await runPhase({
        name: `api@${SETTINGS.apiConnections}`,
        kind: 'api',
        workers: SETTINGS.apiConnections,
        requestsPerOp: 1,
        hubs,
        db,
        monitor,
        perfDir,
        op: async (w) => {
          const t = tokens[w % tokens.length]!;
          await request(
            conns[w]!,
            'api',
            200,
            'GET',
            '/api/v1/accounts',
            {
              host: target.host,
              authorization: t.authorization,
              dpop: t.u.dpop.proof('GET', apiUrl, t.ath),
              accept: 'application/json',
            },
            undefined,
            false,
          );
        },
      }),
    );
  }

  const stepCpu =
    SETTINGS.stepCpuFlows > 0 && SETTINGS.phases.has('flow')
      ? await measureStepCpu({ flows: SETTINGS.stepCpuFlows, hub, db, flow, user: users[0]!, monitor })
      : undefined;

  const verdicts: Record<string, string> = {};
  for (const p of phases) {
    if (p.name === 'flow@10') {
      const ok = p.perSecond >= TARGETS.flowsPerSecondAt10 && p.latencyMs.p99 < TARGETS.flowP99MsAt10;
      verdicts[p.name] =
        `${ok ? 'PASS' : 'MISS'} (≥ ${TARGETS.flowsPerSecondAt10}/s, p99 < ${TARGETS.flowP99MsAt10} ms)`;
    } else if (p.name === 'api@50') {
      verdicts[p.name] =
        `${p.perSecond >= TARGETS.apiReadsPerSecondAt50 ? 'PASS' : 'MISS'} (≥ ${TARGETS.apiReadsPerSecondAt50}/s)`;
    }
  }

  // Stop the hubs now (node 1's profile is written at exit).
  for (const [n, h] of hubs.entries()) {
    const code = await h.stop();
    if (code !== 0 && code !== null) log(`hub node ${n + 1} exited with code ${code}`);
  }
  const report: Report = {
    when: new Date().toISOString(),
    machine: machineInfo(),
    postgres: {
      version: db.serverVersion,
      client: postgresClientVersion(),
      source: db.source,
      fsync: db.fsync,
    },
    config: { ...SETTINGS, phases: [...SETTINGS.phases], requestsPerFlow, scope: SCOPE } as Report['config'],
    targets: TARGETS,
    verdicts,
    phases,
    ...(stepCpu ? { stepCpu } : {}),
  };
  if (SETTINGS.profile) {
    const file = readdirSync(profileDir).find((f) => f.endsWith('.cpuprofile'));
    if (file) {
      const text = formatProfile(summarizeProfile(path.join(profileDir, file), ROOT, 30));
      report.profile = text;
      if (env.BENCH_PROFILE_KEEP) {
        writeFileSync(env.BENCH_PROFILE_KEEP, readFileSync(path.join(profileDir, file)));
        log(`raw profile kept at ${env.BENCH_PROFILE_KEEP}`);
      }
    } else log('no .cpuprofile was written');
  }
  const out =
    env.BENCH_OUT ??
    path.join(
      ROOT,
      'test',
      'bench',
      'results',
      SETTINGS.profile || SETTINGS.perf ? 'latest-profiled.json' : 'latest.json',
    );
  writeResults(out, report);
  console.log(markdown(report));
  if (report.profile) console.log(`\n### Hub CPU profile (whole run, set-up included)\n\n${report.profile}`);
  console.log(`\nJSON: ${path.relative(process.cwd(), out)}`);
}

runBench(main);
