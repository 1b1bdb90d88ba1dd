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
import { issueEnrollmentTicket } from '../../src/authn/index.ts';
import { openDb } from '../../src/db/index.ts';
import { createEmulator } from '../support/passkeyEmulator.ts';
import { log, onCleanup, runBench } from './lib/cleanup.ts';
import { freePort, type HubProcess, machineInfo, startDatabase, startHubProcess } from './lib/env.ts';
import { enroll, type FlowSettings, runFlow, type VirtualUser } from './lib/flow.ts';
import { type Connection, connection, request, type Target } from './lib/http.ts';
import { athOf, createDpopSigner } from './lib/jws.ts';
import { formatPerf, perfAvailable } from './lib/perf.ts';
import { createPgMonitor } from './lib/pgstats.ts';
import {
  dbPoolFor,
  discoverDrivenFlow,
  envFlag,
  envNumber,
  FLOW_DRIVE,
  FLOW_SCOPE,
  flowStepLines,
  measureStepCpu,
  PHASE_WINDOW,
  type PhaseResult,
  runPhase,
  type StepCpu,
  TARGETS,
} from './lib/phase.ts';
import { formatProfile, summarizeProfile } from './lib/profile.ts';
import { writeResults } from './lib/results.ts';
import { round } from './lib/stats.ts';

const ROOT = path.resolve(import.meta.dirname, '../..');
const env = process.env;

const HUB_WORKERS = Math.max(1, envNumber('BENCH_HUB_WORKERS', availableParallelism()));
const SETTINGS = {
  warmupS: PHASE_WINDOW.warmupS,
  durationS: PHASE_WINDOW.durationS,
  flowConcurrency: FLOW_DRIVE.flowConcurrency,
  apiConnections: envNumber('BENCH_API_CONNECTIONS', 50),
  phases: new Set((env.BENCH_PHASES ?? 'flow,api').split(',')),
  /** The hub's pool per worker (KAKEHASHI_DB_POOL). */
  dbPool: dbPoolFor(HUB_WORKERS),
  /** Hub nodes (processes) sharing the database and the issuer, as behind a load balancer. */
  hubNodes: Math.max(1, envNumber('BENCH_HUB_NODES', 1)),
  /** Workers per hub (KAKEHASHI_WORKERS): as many as the machine has cores, as the hub is deployed. */
  hubWorkers: HUB_WORKERS,
  parDpop: FLOW_DRIVE.parDpop,
  consentPage: FLOW_DRIVE.consentPage,
  loginPage: FLOW_DRIVE.loginPage,
  profile: envFlag('BENCH_PROFILE', false),
  perf: envFlag('BENCH_PERF', false),
  stepCpuFlows: FLOW_DRIVE.stepCpuFlows,
  /** `off`: the hub runs with risk.enabled false, to measure what detection costs (risk-overhead.ts). */
  risk: ((v = 'on') => {
    if (v !== 'on' && v !== 'off') throw new Error(`BENCH_RISK: on or off, not "${v}"`);
    return v;
  })(env.BENCH_RISK),
};
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
  lines.push(...flowStepLines(report.phases, report.stepCpu));
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
  const { flow, requestsPerFlow } = await discoverDrivenFlow(setupConn, target, dataDir);

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
    config: {
      ...SETTINGS,
      phases: [...SETTINGS.phases],
      requestsPerFlow,
      scope: FLOW_SCOPE,
    } as Report['config'],
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
