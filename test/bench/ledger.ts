/**
 * `npm run bench:ledger`: paging through an account with 1,000,000 transactions over the read API.
 *
 * Starts a throwaway PostgreSQL (or a fresh database on BENCH_DATABASE_URL) and the hub as a child
 * process, bulk-loads the transactions with generate_series (not through the ingestion API: this
 * measures reads), signs in the demo customer (passkey, consent to both accounts, DPoP-bound token)
 * and then measures, with a fresh DPoP proof per request and the customer present (no unattended
 * limit):
 *   1. walk: every page of 100 from the newest transaction to the oldest, following links.next,
 *      checking order, gaps and duplicates on the way; latency by depth;
 *   2. fixed depths: the same page re-read many times at shallow and deep positions
 *      through its cursor; p50/p99 per position;
 *   3. jumps: first pages of toBookingDateTime windows at random depths, for one account and for the
 *      bulk list across both consented accounts.
 * Target: p99 < 20 ms per page of 100 at any depth. Traffic goes to 127.0.0.1 only; everything it
 * starts is stopped and removed at the end, on error and on Ctrl-C.
 *
 * Settings: BENCH_LEDGER_ROWS (1000000), BENCH_LEDGER_REPEAT (400 requests per fixed depth),
 * BENCH_LEDGER_JUMPS (1000), BENCH_LEDGER_CONCURRENCY (1), BENCH_DB_POOL (10), BENCH_DATABASE_URL,
 * BENCH_HUB_NODE_ARGS (extra node flags for the hub, e.g. --cpu-prof), BENCH_OUT (results/ledger-latest.json).
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { issueEnrollmentTicket } from '../../src/authn/index.ts';
import { openDb } from '../../src/db/index.ts';
import { createEmulator } from '../support/passkeyEmulator.ts';
import { log, onCleanup, runBench } from './lib/cleanup.ts';
import {
  freePort,
  machineCpuSeconds,
  machineInfo,
  postgresCpuSeconds,
  processCpuSeconds,
  startDatabase,
  startHubProcess,
} from './lib/env.ts';
import { discoverFlow, enroll, runFlow, type VirtualUser } from './lib/flow.ts';
import { type Connection, connection, request, type Target } from './lib/http.ts';
import { athOf, createDpopSigner } from './lib/jws.ts';
import { writeResults } from './lib/results.ts';
import { round, type Summary, summarize } from './lib/stats.ts';

const ROOT = path.resolve(import.meta.dirname, '../..');
const env = process.env;
const num = (name: string, dflt: number) => (env[name] ? Number(env[name]) : dflt);
const SETTINGS = {
  rows: num('BENCH_LEDGER_ROWS', 1_000_000),
  repeat: num('BENCH_LEDGER_REPEAT', 400),
  jumps: num('BENCH_LEDGER_JUMPS', 1000),
  concurrency: num('BENCH_LEDGER_CONCURRENCY', 1),
  dbPool: num('BENCH_DB_POOL', 10),
  pageSize: 100,
};
const TARGET_P99_MS = 20;
const CUSTOMER_IP = '127.0.0.1';

interface Page {
  data: Array<{ transactionId: string; bookingDateTime: string }>;
  links: { next?: string; prev?: string };
}

interface Reader {
  /** GET an absolute API URL; returns the parsed page and the latency (request sent → body received). */
  get(url: string): Promise<{ page: Page; ms: number }>;
}

function reader(o: { target: Target; conn: Connection; user: VirtualUser }): Reader {
  const authorization = `DPoP ${o.user.accessToken!}`;
  const ath = athOf(o.user.accessToken!);
  return {
    async get(url) {
      const u = new URL(url);
      const dpop = o.user.dpop.proof('GET', `${u.origin}${u.pathname}`, ath);
      const t0 = performance.now();
      const res = await request(
        o.conn,
        'page',
        200,
        'GET',
        `${u.pathname}${u.search}`,
        {
          host: o.target.host,
          authorization,
          dpop,
          accept: 'application/json',
          'x-fapi-customer-ip-address': CUSTOMER_IP,
        },
        undefined,
        true,
      );
      const ms = performance.now() - t0;
      return { page: JSON.parse(res.text!) as Page, ms };
    },
  };
}

/** Runs `count` calls of `fn` on `workers` concurrent workers; returns the latencies. */
async function concurrently(count: number, workers: number, fn: (i: number, w: number) => Promise<number>) {
  const samples: number[] = [];
  let next = 0;
  await Promise.all(
    Array.from({ length: workers }, async (_, w) => {
      while (next < count) {
        const i = next++;
        samples.push(await fn(i, w));
      }
    }),
  );
  return samples;
}

async function main(): Promise<void> {
  const db = await startDatabase(log);
  onCleanup(() => db.stop());
  const dataDir = mkdtempSync(path.join(tmpdir(), 'kakehashi-bench-ledger-'));
  onCleanup(() => rmSync(dataDir, { recursive: true, force: true }));
  const configFile = path.join(dataDir, 'bench-config.json');
  writeFileSync(configFile, '{}\n');
  const port = await freePort();
  log(`starting the hub on port ${port} (pool ${SETTINGS.dbPool})`);
  const hub = await startHubProcess({
    cwd: ROOT,
    env: {
      DATABASE_URL: db.url,
      KAKEHASHI_DATA: dataDir,
      KAKEHASHI_CONFIG: configFile,
      KAKEHASHI_DB_POOL: String(SETTINGS.dbPool),
      PORT: String(port),
      LOG_LEVEL: 'warn',
    },
    nodeArgs: (env.BENCH_HUB_NODE_ARGS ?? '').split(' ').filter(Boolean),
    log,
  });
  onCleanup(() => hub.stop());

  const issuer = `https://localhost:${port}`;
  const target: Target = {
    connectOrigin: `https://127.0.0.1:${port}`,
    issuer,
    host: `localhost:${port}`,
    caPem: readFileSync(path.join(dataDir, 'tls', 'ca.pem'), 'utf8'),
  };

  // --- data -------------------------------------------------------------------------------------
  const pool = await openDb({ databaseUrl: db.url, dataDir, poolSize: 2 });
  onCleanup(() => pool.close());
  const demo = await pool.query<{ id: string; customer_id: string; customer_number: string }>(
    `SELECT a.id, c.id AS customer_id, c.customer_number FROM accounts a JOIN customers c ON c.id = a.customer_id
     WHERE c.customer_number = '10000001' ORDER BY a.opened_on, a.id`,
  );
  const accountIds = demo.rows.map((r) => r.id);
  const big = accountIds[0]!;
  log(`bulk-loading ${SETTINGS.rows.toLocaleString('en')} transactions into ${big} (generate_series)`);
  const loadStart = performance.now();
  // One minute apart, three per instant (ties broken by id), all within the default 730-day lookback.
  const chunk = 250_000;
  for (let from = 1; from <= SETTINGS.rows; from += chunk) {
    const to = Math.min(SETTINGS.rows, from + chunk - 1);
    await pool.query(
      `INSERT INTO ledger_transactions (id, account_id, external_id, booked_at, type, credit_debit, amount, currency, description)
       SELECT 'txn_bench_' || lpad(i::text, 8, '0'), $1, 'bench-' || i,
              date_trunc('minute', now()) - make_interval(mins => i / 3),
              (ARRAY['deposit', 'withdrawal', 'fee', 'dividend', 'interest'])[1 + i % 5],
              CASE WHEN i % 5 IN (1, 2) THEN 'debit' ELSE 'credit' END,
              (1000 + (i::bigint * 7919) % 900000)::numeric / 100, 'JPY', 'ベンチ取引 ' || i
       FROM generate_series($2::int, $3::int) AS i`,
      [big, from, to],
    );
    log(`  ${to.toLocaleString('en')} rows`);
  }
  // A few on the second account too, so that the bulk list merges two accounts.
  await pool.query(
    `INSERT INTO ledger_transactions (id, account_id, external_id, booked_at, type, credit_debit, amount, currency, description)
     SELECT 'txn_bench2_' || lpad(i::text, 8, '0'), $1, 'bench2-' || i, now() - make_interval(hours => i), 'deposit',
            'credit', 10000, 'JPY', 'ベンチ入金' FROM generate_series(1, 10000) AS i`,
    [accountIds[1]],
  );
  await pool.exec('ANALYZE ledger_transactions');
  const loadSeconds = (performance.now() - loadStart) / 1000;
  log(`loaded in ${round(loadSeconds, 1)} s`);

  // --- customer, consent, token -----------------------------------------------------------------
  const discoveryConn = connection(target);
  onCleanup(() => discoveryConn.destroy());
  const flow = await discoverFlow(discoveryConn, target, dataDir, {
    scope: 'openid accounts',
    consentPage: false,
    loginPage: false,
    parDpopProof: true,
  });
  const user: VirtualUser = {
    conn: connection(target),
    dpop: createDpopSigner(),
    device: createEmulator(),
    customerNumber: demo.rows[0]!.customer_number,
    accountIds,
  };
  onCleanup(() => user.conn.destroy());
  const { ticket } = await issueEnrollmentTicket(
    {
      db: pool,
      rpId: 'localhost',
      rpName: 'Kakehashi',
      origin: issuer,
      ticketTtlSeconds: 3600,
      maxFailedAttempts: 5,
    },
    { customerId: demo.rows[0]!.customer_id, issuedBy: 'bench' },
  );
  await enroll(flow, user, ticket);
  await runFlow(flow, user, {});
  const conns = Array.from({ length: SETTINGS.concurrency }, () => connection(target));
  onCleanup(() => Promise.all(conns.map((c) => c.destroy())));
  const readers = conns.map((conn) => reader({ target, conn, user }));
  const accountUrl = `${issuer}/api/v1/accounts/${big}/transactions`;

  // --- 1. the walk ------------------------------------------------------------------------------
  log(`walk: every page of ${SETTINGS.pageSize} of ${big}`);
  const walk: Array<{ ms: number; offset: number }> = [];
  const links: string[] = [];
  let seen = 0;
  let previous: [number, string] | undefined;
  let url: string | undefined = accountUrl;
  const walkStart = performance.now();
  const cpu0 = {
    hub: processCpuSeconds(hub.pid),
    pg: db.postmasterPid === undefined ? undefined : postgresCpuSeconds(db.postmasterPid),
    gen: process.cpuUsage(),
    machine: machineCpuSeconds(),
  };
  while (url) {
    links.push(url);
    const { page, ms } = await readers[0]!.get(url);
    walk.push({ ms, offset: seen });
    for (const t of page.data) {
      const key: [number, string] = [Date.parse(t.bookingDateTime), t.transactionId];
      // Newest first, strictly: an equal or greater key would be a duplicate or a disorder.
      if (previous && !(key[0] < previous[0] || (key[0] === previous[0] && key[1] < previous[1])))
        throw new Error(`walk: order broken at offset ${seen}: ${previous} then ${key}`);
      previous = key;
      seen += 1;
    }
    url = page.links.next;
    if (walk.length % 1000 === 0) log(`  ${walk.length} pages, ${seen.toLocaleString('en')} rows`);
  }
  const walkSeconds = (performance.now() - walkStart) / 1000;
  const hubCpu1 = processCpuSeconds(hub.pid);
  const pgCpu1 = db.postmasterPid === undefined ? undefined : postgresCpuSeconds(db.postmasterPid);
  const gen1 = process.cpuUsage(cpu0.gen);
  const machine1 = machineCpuSeconds();
  const perPage = (s0: number | undefined, s1: number | undefined) =>
    s0 === undefined || s1 === undefined ? null : round(((s1 - s0) * 1000) / walk.length, 3);
  // CPU per page does not depend on what else runs on the machine; latency does (`otherCores`).
  const walkCpu = {
    hubMsPerPage: perPage(cpu0.hub, hubCpu1),
    postgresMsPerPage: perPage(cpu0.pg, pgCpu1),
    generatorMsPerPage: round((gen1.user + gen1.system) / 1000 / walk.length, 3),
    machineBusyCores: round((machine1.busy - cpu0.machine.busy) / walkSeconds, 2),
    otherCores:
      cpu0.hub === undefined || hubCpu1 === undefined || cpu0.pg === undefined || pgCpu1 === undefined
        ? null
        : round(
            Math.max(
              0,
              machine1.busy -
                cpu0.machine.busy -
                (hubCpu1 - cpu0.hub) -
                (pgCpu1 - cpu0.pg) -
                (gen1.user + gen1.system) / 1e6,
            ) / walkSeconds,
            2,
          ),
  };
  const expectedRows = (
    await pool.query<{ n: number }>(
      "SELECT count(*)::int AS n FROM ledger_transactions WHERE account_id = $1 AND booked_at >= now() - interval '730 days'",
      [big],
    )
  ).rows[0]!.n;
  if (seen !== expectedRows) throw new Error(`walk: saw ${seen} rows, the account has ${expectedRows}`);
  const deciles: Array<{ depth: string; summary: Summary }> = [];
  for (let d = 0; d < 10; d++) {
    const lo = (d * seen) / 10;
    const hi = ((d + 1) * seen) / 10;
    deciles.push({
      depth: `${d * 10}–${(d + 1) * 10}%`,
      summary: summarize(walk.filter((w) => w.offset >= lo && w.offset < hi).map((w) => w.ms)),
    });
  }
  const walkAll = summarize(walk.map((w) => w.ms));
  log(
    `  ${walk.length} pages in ${round(walkSeconds, 1)} s: p50 ${round(walkAll.p50, 2)} ms, p99 ${round(walkAll.p99, 2)} ms`,
  );

  // --- 2. fixed depths, repeated, concurrently ---------------------------------------------------
  const positions = [
    { name: 'first page', index: 0 },
    { name: 'page 10 (1k rows)', index: 10 },
    { name: '10%', index: Math.floor(links.length * 0.1) },
    { name: '50%', index: Math.floor(links.length * 0.5) },
    { name: '90%', index: Math.floor(links.length * 0.9) },
    { name: 'last page', index: links.length - 1 },
  ];
  const fixed: Array<{ position: string; offset: number; summary: Summary }> = [];
  for (const p of positions) {
    const link = links[p.index]!;
    const samples = await concurrently(SETTINGS.repeat, SETTINGS.concurrency, async (_i, w) => {
      const { ms } = await readers[w]!.get(link);
      return ms;
    });
    const summary = summarize(samples);
    fixed.push({ position: p.name, offset: p.index * SETTINGS.pageSize, summary });
    log(`fixed ${p.name}: p50 ${round(summary.p50, 2)} ms, p99 ${round(summary.p99, 2)} ms`);
  }

  // --- 3. jumps to random depths by booking date ------------------------------------------------
  const span = await pool.query<{ lo: Date; hi: Date }>(
    'SELECT min(booked_at) AS lo, max(booked_at) AS hi FROM ledger_transactions WHERE account_id = $1',
    [big],
  );
  const lo = new Date(span.rows[0]!.lo).getTime();
  const hi = new Date(span.rows[0]!.hi).getTime();
  let seed = 42;
  const random = () => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    return seed / 2 ** 31;
  };
  const jumps: Array<{ list: string; summary: Summary }> = [];
  for (const [list, base] of [
    ['one account', accountUrl],
    ['bulk (2 accounts)', `${issuer}/api/v1/transactions`],
  ] as const) {
    const samples = await concurrently(SETTINGS.jumps, SETTINGS.concurrency, async (_i, w) => {
      const at = new Date(lo + random() * (hi - lo)).toISOString();
      const { ms, page } = await readers[w]!.get(`${base}?toBookingDateTime=${encodeURIComponent(at)}`);
      if (page.data.length === 0) throw new Error(`jump to ${at}: empty page`);
      return ms;
    });
    const summary = summarize(samples);
    jumps.push({ list, summary });
    log(`jumps ${list}: p50 ${round(summary.p50, 2)} ms, p99 ${round(summary.p99, 2)} ms`);
  }

  // --- the plan of a deep keyset page -----------------------------------------------------------
  const deepKey = await pool.query<{ booked_at: Date; id: string }>(
    'SELECT booked_at, id FROM ledger_transactions WHERE account_id = $1 ORDER BY booked_at, id LIMIT 1 OFFSET 1000',
    [big],
  );
  const plan = await pool.query<{ 'QUERY PLAN': string }>(
    `EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) SELECT id FROM ledger_transactions
     WHERE account_id = $1 AND booked_at >= now() - interval '730 days' AND (booked_at, id) < ($2::timestamptz, $3::text)
     ORDER BY booked_at DESC, id DESC LIMIT 101`,
    [big, deepKey.rows[0]!.booked_at, deepKey.rows[0]!.id],
  );
  const planText = plan.rows.map((r) => r['QUERY PLAN']).join('\n');

  const code = await hub.stop();
  if (code !== 0 && code !== null) log(`hub exited with code ${code}`);

  const all = [...fixed.map((f) => f.summary.p99), ...jumps.map((j) => j.summary.p99), walkAll.p99];
  const verdict = all.every((p) => p < TARGET_P99_MS) ? 'PASS' : 'MISS';
  const report = {
    when: new Date().toISOString(),
    machine: machineInfo(),
    postgres: { version: db.serverVersion, source: db.source, fsync: db.fsync },
    settings: SETTINGS,
    target: `p99 < ${TARGET_P99_MS} ms per page of ${SETTINGS.pageSize}`,
    verdict,
    load: { rows: SETTINGS.rows, seconds: round(loadSeconds, 1) },
    walk: {
      pages: walk.length,
      rows: seen,
      seconds: round(walkSeconds, 1),
      all: walkAll,
      deciles,
      cpu: walkCpu,
    },
    fixed,
    jumps,
    plan: planText,
  };
  const out = env.BENCH_OUT ?? path.join(ROOT, 'test', 'bench', 'results', 'ledger-latest.json');
  writeResults(out, report);

  const ms = (x: number) => round(x, 2);
  const on = `${SETTINGS.concurrency} connection${SETTINGS.concurrency === 1 ? '' : 's'}`;
  const m = report.machine;
  const lines = [
    '## Kakehashi ledger paging benchmark',
    '',
    `Machine: ${m.nproc} × ${m.cpuModel}, Node ${m.node}; PostgreSQL ${db.serverVersion} (${db.source}, fsync=${db.fsync}), hub pg pool ${SETTINGS.dbPool}.`,
    `${SETTINGS.rows.toLocaleString('en')} transactions in one account (bulk-loaded in ${round(loadSeconds, 1)} s), pages of ${SETTINGS.pageSize}, DPoP proof per request, customer present. Target: p99 < ${TARGET_P99_MS} ms at any depth — **${verdict}**.`,
    '',
    `Walk (1 client, links.next from newest to oldest): ${walk.length} pages, ${seen.toLocaleString('en')} rows, order and completeness checked, ${round(walkSeconds, 1)} s. ` +
      `CPU per page: hub ${walkCpu.hubMsPerPage ?? '–'} ms, PostgreSQL ${walkCpu.postgresMsPerPage ?? '–'} ms, generator ${walkCpu.generatorMsPerPage} ms; ` +
      `busy cores ${walkCpu.machineBusyCores}, of which other processes ${walkCpu.otherCores ?? '–'} (near 0: the figures are the hub's own).`,
    '',
    '| depth | pages | p50 ms | p99 ms | max ms |',
    '|---|---:|---:|---:|---:|',
    ...deciles.map(
      (d) =>
        `| ${d.depth} | ${d.summary.count} | ${ms(d.summary.p50)} | ${ms(d.summary.p99)} | ${ms(d.summary.max)} |`,
    ),
    `| all | ${walkAll.count} | ${ms(walkAll.p50)} | ${ms(walkAll.p99)} | ${ms(walkAll.max)} |`,
    '',
    `Fixed positions (the same cursor ${SETTINGS.repeat}× on ${on}):`,
    '',
    '| position | row offset | p50 ms | p99 ms | max ms |',
    '|---|---:|---:|---:|---:|',
    ...fixed.map(
      (f) =>
        `| ${f.position} | ${f.offset.toLocaleString('en')} | ${ms(f.summary.p50)} | ${ms(f.summary.p99)} | ${ms(f.summary.max)} |`,
    ),
    '',
    `Jumps (toBookingDateTime at random depths, ${SETTINGS.jumps} requests on ${on}):`,
    '',
    '| list | p50 ms | p99 ms | max ms |',
    '|---|---:|---:|---:|',
    ...jumps.map((j) => `| ${j.list} | ${ms(j.summary.p50)} | ${ms(j.summary.p99)} | ${ms(j.summary.max)} |`),
    '',
    'Plan of a deep keyset page (the per-account scan inside the read statement):',
    '',
    '```',
    planText,
    '```',
    '',
    `JSON: ${path.relative(process.cwd(), out)}`,
  ];
  console.log(lines.join('\n'));
}

runBench(main);
