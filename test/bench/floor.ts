/**
 * The floor of a DPoP-protected read on this machine, measured the way `npm run bench` measures the
 * hub's reads: the same load generator (50 keep-alive HTTPS connections, a fresh ES256 proof per
 * request) on the same two cores, a throwaway PostgreSQL, and a server (lib/floorServer.ts) that does
 * only what no read can skip — TLS, HTTP, the proof's signature and claims, one statement that records
 * the jti and reads the consented accounts. The hub's reads/s divided by this is how close the hub
 * runs to what the machine allows; a target above this figure cannot be met on this machine.
 *
 *   node test/bench/floor.ts        (BENCH_WARMUP_S 3, BENCH_DURATION_S 15, BENCH_API_CONNECTIONS 50)
 */
import { fork } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { ensureDevTls } from '../../src/tls/index.ts';
import { log, onCleanup, runBench } from './lib/cleanup.ts';
import {
  freePort,
  machineCpuSeconds,
  machineInfo,
  postgresCpuSeconds,
  processCpuSeconds,
  startDatabase,
} from './lib/env.ts';
import { connection, request } from './lib/http.ts';
import { athOf, createDpopSigner } from './lib/jws.ts';
import { round, summarize } from './lib/stats.ts';

const WARMUP_S = Number(process.env.BENCH_WARMUP_S ?? 3);
const DURATION_S = Number(process.env.BENCH_DURATION_S ?? 15);
const CONNECTIONS = Number(process.env.BENCH_API_CONNECTIONS ?? 50);
const ROOT = path.resolve(import.meta.dirname, '../..');

runBench(async () => {
  const db = await startDatabase(log);
  onCleanup(() => db.stop());
  const admin = new pg.Client({ connectionString: db.url });
  await admin.connect();
  await admin.query(`CREATE TABLE floor_seen (jti_hash text PRIMARY KEY, expires_at timestamptz NOT NULL);
    CREATE TABLE floor_accounts (id text PRIMARY KEY, nickname text NOT NULL);
    CREATE TABLE floor_consents (grant_id text PRIMARY KEY, account_ids text[] NOT NULL);
    INSERT INTO floor_accounts VALUES ('acc-1', 'Tokkutei'), ('acc-2', 'NISA'), ('acc-3', 'Margin');
    INSERT INTO floor_consents VALUES ('g1', ARRAY['acc-1', 'acc-2']);`);
  await admin.end();

  const dir = mkdtempSync(path.join(tmpdir(), 'kakehashi-floor-'));
  onCleanup(() => rmSync(dir, { recursive: true, force: true }));
  const tls = await ensureDevTls(dir);
  const port = await freePort();
  const issuer = `https://localhost:${port}`;
  const htu = `${issuer}/api/v1/accounts`;
  const signer = createDpopSigner();
  const token = 'floor-access-token-0123456789abcdef';
  const server = fork(path.join(import.meta.dirname, 'lib/floorServer.ts'), [], {
    cwd: ROOT,
    env: {
      ...process.env,
      FLOOR_PORT: String(port),
      FLOOR_DB: db.url,
      FLOOR_CERT: path.join(dir, 'tls', 'server.pem'),
      FLOOR_KEY: path.join(dir, 'tls', 'server-key.pem'),
      FLOOR_TOKEN: token,
      FLOOR_JKT: signer.jkt,
      FLOOR_HTU: htu,
    },
  });
  onCleanup(() => server.kill());
  await new Promise<void>((resolve, reject) => {
    server.once('message', () => resolve());
    server.once('exit', (code) => reject(new Error(`floor server exited with ${code}`)));
  });

  const target = {
    connectOrigin: `https://127.0.0.1:${port}`,
    issuer,
    host: `localhost:${port}`,
    caPem: tls.caPem,
  };
  const conns = Array.from({ length: CONNECTIONS }, () => connection(target));
  onCleanup(() => Promise.all(conns.map((c) => c.destroy())));
  const ath = athOf(token);
  const read = (w: number) =>
    request(
      conns[w]!,
      'floor',
      200,
      'GET',
      '/api/v1/accounts',
      {
        host: target.host,
        authorization: `DPoP ${token}`,
        dpop: signer.proof('GET', htu, ath),
        accept: 'application/json',
      },
      undefined,
      false,
    );
  // A replayed proof must be refused, or the floor would not be doing the replay check.
  const first = signer.proof('GET', htu, ath);
  const headers = { host: target.host, authorization: `DPoP ${token}`, dpop: first };
  await request(conns[0]!, 'floor', 200, 'GET', '/api/v1/accounts', headers, undefined, false);
  await request(conns[0]!, 'floor replay', 401, 'GET', '/api/v1/accounts', headers, undefined, false);

  log(`floor: ${CONNECTIONS} connections, ${WARMUP_S} s warm-up + ${DURATION_S} s measured`);
  const latencies: number[] = [];
  let measuring = false;
  let stop = false;
  const snap = () => ({
    wall: performance.now(),
    server: processCpuSeconds(server.pid!) ?? 0,
    pg: db.postmasterPid === undefined ? 0 : (postgresCpuSeconds(db.postmasterPid) ?? 0),
    gen: process.cpuUsage(),
    machine: machineCpuSeconds(),
  });
  let before: ReturnType<typeof snap> | undefined;
  let after: ReturnType<typeof snap> | undefined;
  setTimeout(() => {
    before = snap();
    measuring = true;
  }, WARMUP_S * 1000);
  setTimeout(
    () => {
      after = snap();
      measuring = false;
      stop = true;
    },
    (WARMUP_S + DURATION_S) * 1000,
  );
  await Promise.all(
    conns.map(async (_, w) => {
      while (!stop) {
        const t0 = performance.now();
        await read(w);
        if (measuring) latencies.push(performance.now() - t0);
      }
    }),
  );
  const s = (after!.wall - before!.wall) / 1000;
  const ops = latencies.length;
  const lat = summarize(latencies);
  const ms = (cpuS: number) => round((cpuS * 1000) / ops, 3);
  const gen = (after!.gen.user + after!.gen.system - before!.gen.user - before!.gen.system) / 1e6;
  const result = {
    machine: machineInfo(),
    connections: CONNECTIONS,
    readsPerSecond: round(ops / s, 1),
    p50Ms: round(lat.p50, 1),
    p99Ms: round(lat.p99, 1),
    cpuMsPerRead: {
      server: ms(after!.server - before!.server),
      postgres: ms(after!.pg - before!.pg),
      generator: ms(gen),
    },
    machineBusyCores: round((after!.machine.busy - before!.machine.busy) / s, 2),
  };
  console.log(JSON.stringify(result, null, 2));
});
