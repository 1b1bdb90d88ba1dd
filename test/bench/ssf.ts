/**
 * Shared Signals benchmark: SETs signed, recorded in the outbox, pushed over HTTPS and acknowledged
 * (202) per second, fanning out to 1, 10 and 100 receivers on loopback — one of them slow — against
 * a real PostgreSQL with durable commits.
 *
 *   node test/bench/ssf.ts
 *
 * The transmitter is this process (the signals worker of one hub node: fan-out, RS256 or ES256
 * signing on the thread pool, batched inserts, pushes on keep-alive connections); the receivers
 * are a child process (one HTTPS server, a path per receiver, each receiver its own peer and so
 * its own connection pool), answering 202 at once, the slow one after BENCH_SSF_SLOW_MS. A run
 * preloads E events about C linked customers and measures from starting the worker until every
 * fast receiver has acknowledged every SET; the slow receiver is sampled at that moment.
 *
 * Environment: BENCH_DATABASE_URL (else a throwaway server; BENCH_PG_FSYNC defaults to on here),
 * BENCH_SSF_ALGS (RS256,ES256), BENCH_SSF_FANOUT (1,10,100), BENCH_SSF_SETS (about 30000 per run),
 * BENCH_SSF_CUSTOMERS (2000), BENCH_SSF_SLOW_MS (500). Results are printed as a markdown table.
 */
import { fork } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { cpus, loadavg, tmpdir } from 'node:os';
import path from 'node:path';
import { loadConfig, type PeerConfig } from '../../src/config/index.ts';
import { type Db, migrate, openDb } from '../../src/db/index.ts';
import { createLogger } from '../../src/log.ts';
import { eventClaims } from '../../src/signals/emit.ts';
import { createSignals } from '../../src/signals/index.ts';
import { createStream } from '../../src/signals/streams.ts';
import { ensureDevTls } from '../../src/tls/index.ts';
import { machineInfo, postgresCpuSeconds, processCpuSeconds, startDatabase } from './lib/env.ts';

const env = process.env;
const list = (name: string, dflt: string) =>
  (env[name] ?? dflt)
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);

// ---------------------------------------------------------------------------------------------
// Child: the receivers.
if (process.argv[2] === '--receivers') {
  const dir = process.argv[3]!;
  const slowMs = Number(process.argv[4]);
  const tls = await ensureDevTls(dir, ['localhost']);
  const counts = new Map<string, number>();
  const server = https.createServer({ cert: tls.certPem, key: tls.keyPem }, (req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const p = req.url ?? '';
      const done = () => {
        counts.set(p, (counts.get(p) ?? 0) + 1);
        res.writeHead(202);
        res.end();
      };
      if (p.endsWith('/slow')) setTimeout(done, slowMs);
      else done();
    });
  });
  server.keepAliveTimeout = 60_000;
  server.listen(0, '127.0.0.1', () => {
    process.send!({ port: (server.address() as AddressInfo).port, caPath: tls.caPath });
  });
  process.on('message', (m: { type: string }) => {
    if (m.type === 'counts') process.send!({ counts: Object.fromEntries(counts) });
    if (m.type === 'reset') counts.clear();
  });
} else {
  await main();
}

interface Receivers {
  port: number;
  caPath: string;
  pid: number;
  counts(): Promise<Record<string, number>>;
  reset(): void;
  stop(): void;
}

async function startReceivers(dir: string, slowMs: number): Promise<Receivers> {
  const child = fork(import.meta.filename, ['--receivers', dir, String(slowMs)], { stdio: 'inherit' });
  const first = await new Promise<{ port: number; caPath: string }>((resolve) =>
    child.once('message', (m) => resolve(m as never)),
  );
  return {
    ...first,
    pid: child.pid!,
    counts: () =>
      new Promise((resolve) => {
        child.once('message', (m) => resolve((m as { counts: Record<string, number> }).counts));
        child.send({ type: 'counts' });
      }),
    reset: () => child.send({ type: 'reset' }),
    stop: () => child.kill(),
  };
}

interface RunResult {
  alg: string;
  receivers: number;
  events: number;
  sets: number;
  fastSets: number;
  fanoutS: number;
  totalS: number;
  setsPerS: number;
  slowDelivered: number;
  cpuTransmitterS: number;
  cpuReceiversS: number;
  cpuPostgresS: number | undefined;
  /** 1-minute load average when the run started (other work on the machine skews wall-clock rates). */
  load: number;
}

async function main() {
  const log = (s: string) => console.error(`[ssf-bench] ${s}`);
  env.BENCH_PG_FSYNC ??= 'on';
  const algs = list('BENCH_SSF_ALGS', 'RS256,ES256') as ('RS256' | 'ES256')[];
  const fanouts = list('BENCH_SSF_FANOUT', '1,10,100').map(Number);
  const targetSets = Number(env.BENCH_SSF_SETS ?? 30_000);
  const customers = Number(env.BENCH_SSF_CUSTOMERS ?? 2000);
  const slowMs = Number(env.BENCH_SSF_SLOW_MS ?? 500);
  const dir = mkdtempSync(path.join(tmpdir(), 'kakehashi-ssf-bench-'));
  const database = await startDatabase(log);
  const receivers = await startReceivers(path.join(dir, 'receivers'), slowMs);
  const db = await openDb({ databaseUrl: database.url, dataDir: dir, poolSize: 10 });
  const results: RunResult[] = [];
  try {
    await migrate(db);
    const customerIds = await seedCustomers(db, customers);
    for (const alg of algs)
      for (const r of fanouts) {
        const events = Math.max(1, Math.round(targetSets / r));
        results.push(
          await run(
            db,
            {
              alg,
              receivers: r,
              events,
              customerIds,
              slowMs,
              receiverProc: receivers,
              dir,
              postmaster: database.postmasterPid,
            },
            log,
          ),
        );
      }
  } finally {
    await db.close();
    receivers.stop();
    await database.stop();
    rmSync(dir, { recursive: true, force: true });
  }
  const m = machineInfo();
  console.log(
    `\n## Shared Signals delivery (${m.nproc} cores, ${m.cpuModel}, Node ${m.node}; PostgreSQL ${database.serverVersion}, fsync ${database.fsync})\n`,
  );
  console.log(
    '| alg | receivers | events | SETs to fast receivers | fan-out done | all acknowledged | SETs/s measured | CPU ms per SET (transmitter + receivers + Postgres) | SETs/s the CPU allows on idle cores | slow receiver meanwhile | load avg at start |',
  );
  console.log('|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
  for (const x of results) {
    const cpuMs = ((x.cpuTransmitterS + x.cpuReceiversS + (x.cpuPostgresS ?? 0)) * 1000) / x.fastSets;
    console.log(
      `| ${x.alg} | ${x.receivers} | ${x.events} | ${x.fastSets} | ${x.fanoutS.toFixed(1)} s | ${x.totalS.toFixed(1)} s | **${Math.round(x.setsPerS)}** | ${cpuMs.toFixed(2)} (${((x.cpuTransmitterS * 1000) / x.fastSets).toFixed(2)} + ${((x.cpuReceiversS * 1000) / x.fastSets).toFixed(2)} + ${x.cpuPostgresS === undefined ? '?' : ((x.cpuPostgresS * 1000) / x.fastSets).toFixed(2)}) | ${Math.round((cpus().length * 1000) / cpuMs)} | ${x.receivers > 1 ? `${x.slowDelivered} of ${x.events}` : '–'} | ${x.load.toFixed(1)} |`,
    );
  }
  console.log(
    `\n${cpus().length} cores shared by transmitter, receivers and PostgreSQL; slow receiver answers after ${slowMs} ms.`,
  );
}

async function seedCustomers(db: Db, n: number): Promise<string[]> {
  await db.query(
    "INSERT INTO institutions (id, kind, name_ja, name_en) VALUES ('bench', 'bank', 'ベンチ銀行', 'Bench Bank')",
  );
  await db.query(
    `INSERT INTO customers (id, institution_id, customer_number, name_kanji, name_kana)
     SELECT 'cus_bench_' || g, 'bench', 'B' || g, '顧客', 'コキャク' FROM generate_series(1, $1) g`,
    [n],
  );
  return Array.from({ length: n }, (_, i) => `cus_bench_${i + 1}`);
}

async function run(
  db: Db,
  o: {
    alg: 'RS256' | 'ES256';
    receivers: number;
    events: number;
    customerIds: string[];
    slowMs: number;
    receiverProc: Receivers;
    dir: string;
    postmaster: number | undefined;
  },
  log: (s: string) => void,
): Promise<RunResult> {
  log(`${o.alg}, ${o.receivers} receiver(s), ${o.events} events`);
  await db.exec(
    'TRUNCATE ssf_outbox, ssf_events, ssf_txns, ssf_stream_subjects, ssf_streams, ssf_subject_links',
  );
  o.receiverProc.reset();
  const slowIndex = o.receivers > 1 ? o.receivers - 1 : -1;
  const peers: PeerConfig[] = Array.from({ length: o.receivers }, (_, i) => ({
    id: `r${i}`,
    clientId: `bench-r${i}`,
    caFile: o.receiverProc.caPath,
  }));
  const config = loadConfig({
    env: {},
    configDir: path.join(o.dir, 'none'),
    overrides: {
      issuer: 'https://transmitter.bench',
      dataDir: o.dir,
      keyEncryptionKey: 'A'.repeat(43),
      logLevel: 'warn',
      signals: {
        setSigningAlg: o.alg,
        workerIntervalMs: 20,
        push: {
          // The receivers are a local process.
          allowPrivateAddresses: true,
          concurrencyPerStream: Number(env.BENCH_SSF_CONCURRENCY ?? 16),
          batchSize: 1000,
          maxInFlight: Number(env.BENCH_SSF_IN_FLIGHT ?? 256),
        },
        peers,
      },
    },
  });
  const signals = await createSignals({ config, db, logger: createLogger('warn') });
  const ctx = signals.context;
  const streams: string[] = [];
  for (const [i, p] of peers.entries()) {
    const path_ = i === slowIndex ? `/r/${i}/slow` : `/r/${i}`;
    const s = await createStream(ctx, db, ctx.peers.byId.get(p.id)!, p.clientId!, {
      delivery: {
        method: 'urn:ietf:rfc:8935',
        endpoint_url: `https://localhost:${o.receiverProc.port}${path_}`,
      },
    });
    streams.push(s.stream_id);
  }
  const slowStream = slowIndex >= 0 ? streams[slowIndex]! : undefined;
  await db.query(
    `INSERT INTO ssf_subject_links (peer_id, customer_id, pairwise_sub)
     SELECT p, c, md5(p || c || random()::text) FROM unnest($1::text[]) p, unnest($2::text[]) c`,
    [peers.map((p) => p.id), o.customerIds],
  );
  // The events, queued as emitSecurityEvent queues them (one row each), spread over the customers.
  const { type, claims } = eventClaims({
    type: 'credential-change',
    customerId: 'x',
    credentialType: 'fido2-platform',
    changeType: 'update',
  });
  await db.query(
    `INSERT INTO ssf_events (txn, event_type, customer_id, payload)
     SELECT md5(g::text || random()::text), $1, ($2::text[])[1 + g % array_length($2::text[], 1)], $3::jsonb
     FROM generate_series(1, $4) g`,
    [type, o.customerIds, JSON.stringify({ claims }), o.events],
  );
  const fastSets = o.events * (o.receivers - (slowIndex >= 0 ? 1 : 0));
  const load = loadavg()[0]!;
  const cpu0 = process.cpuUsage();
  const rcpu0 = processCpuSeconds(o.receiverProc.pid) ?? 0;
  const pg0 = o.postmaster ? postgresCpuSeconds(o.postmaster) : undefined;
  const t0 = performance.now();
  signals.start();
  let fanoutS = 0;
  for (;;) {
    await new Promise((r) => setTimeout(r, 100));
    const c = await db.query<{ pending_events: number; fast_delivered: number }>(
      `SELECT (SELECT count(*)::int FROM ssf_events WHERE fanned_out_at IS NULL) AS pending_events,
              (SELECT count(*)::int FROM ssf_outbox WHERE state = 'delivered' AND stream_id IS DISTINCT FROM $1) AS fast_delivered`,
      [slowStream ?? null],
    );
    const row = c.rows[0]!;
    if (!fanoutS && row.pending_events === 0) fanoutS = (performance.now() - t0) / 1000;
    if (row.fast_delivered >= fastSets) break;
    if (performance.now() - t0 > 600_000) throw new Error('run did not finish in 10 minutes');
  }
  const totalS = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  const rcpu = (processCpuSeconds(o.receiverProc.pid) ?? 0) - rcpu0;
  const pg = o.postmaster && pg0 !== undefined ? (postgresCpuSeconds(o.postmaster) ?? 0) - pg0 : undefined;
  const slowDelivered = slowStream
    ? ((
        await db.query<{ n: number }>(
          "SELECT count(*)::int AS n FROM ssf_outbox WHERE stream_id = $1 AND state = 'delivered'",
          [slowStream],
        )
      ).rows[0]?.n ?? 0)
    : 0;
  const counts = await o.receiverProc.counts();
  const received = Object.entries(counts)
    .filter(([p]) => !p.endsWith('/slow'))
    .reduce((n, [, v]) => n + v, 0);
  if (received < fastSets) throw new Error(`receivers saw ${received} pushes for ${fastSets} SETs`);
  await signals.stop();
  return {
    alg: o.alg,
    receivers: o.receivers,
    events: o.events,
    sets: o.events * o.receivers,
    fastSets,
    fanoutS,
    totalS,
    setsPerS: fastSets / totalS,
    slowDelivered,
    cpuTransmitterS: (cpu.user + cpu.system) / 1e6,
    cpuReceiversS: rcpu,
    cpuPostgresS: pg,
    load,
  };
}
