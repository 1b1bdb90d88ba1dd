/**
 * The floor of a complete FAPI 2.0 flow on this machine, measured the way `npm run bench` measures the
 * hub's flows: the same driver (lib/flow.ts: PAR with private_key_jwt + PKCE + DPoP → /auth → passkey
 * options → assertion → verify → resume → consent page → consent → resume → token with DPoP), the same
 * phases (lib/phase.ts: warm-up, window, concurrency 1 and 10, /proc CPU accounting), a throwaway
 * PostgreSQL, and a server (lib/flowFloorServer.ts) that does only what no correct implementation of
 * the flow can skip, with as few statements as it can. The hub's flows/s divided by this is how close
 * the hub runs to what the machine allows; a target above this figure cannot be met here.
 *
 * Before measuring it proves that the floor refuses what it must: a replayed DPoP proof, a client
 * assertion with a bad signature, a wrong PKCE verifier, a replayed code (whose grant and tokens are
 * then revoked), and two concurrent redemptions of one code (exactly one wins).
 *
 *   node test/bench/flowFloor.ts    (BENCH_WARMUP_S, BENCH_DURATION_S, BENCH_FLOW_CONCURRENCY,
 *                                    BENCH_FLOOR_WORKERS 1, BENCH_DB_POOL, BENCH_DATABASE_URL, BENCH_OUT)
 */
import { createPublicKey, generateKeyPairSync, randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { verifyRegistrationResponse } from '@simplewebauthn/server';
import { convertCOSEtoPKCS } from '@simplewebauthn/server/helpers';
import pg from 'pg';
import { ensureDevTls } from '../../src/tls/index.ts';
import { createEmulator } from '../support/passkeyEmulator.ts';
import { log, onCleanup, runBench } from './lib/cleanup.ts';
import { freePort, machineInfo, startDatabase, startHubProcess } from './lib/env.ts';
import {
  type FlowSettings,
  obtainCode,
  parRequestBody,
  runFlow,
  tokenRequestBody,
  type VirtualUser,
} from './lib/flow.ts';
import { type Connection, connection, UnexpectedResponse } from './lib/http.ts';
import { createDpopSigner, pkcePair } from './lib/jws.ts';
import { createPgMonitor } from './lib/pgstats.ts';
import {
  dbPoolFor,
  discoverDrivenFlow,
  envNumber,
  FLOW_DRIVE,
  FLOW_SCOPE,
  flowStepLines,
  measureStepCpu,
  PHASE_WINDOW,
  type PhaseResult,
  runPhase,
  TARGETS,
} from './lib/phase.ts';
import { writeResults } from './lib/results.ts';
import { round } from './lib/stats.ts';

const ROOT = path.resolve(import.meta.dirname, '../..');
const WORKERS = Math.max(1, envNumber('BENCH_FLOOR_WORKERS', 1));
const POOL = dbPoolFor(WORKERS);

const SCHEMA = `
CREATE TABLE floor_jti (jti_hash text PRIMARY KEY, expires_at timestamptz NOT NULL);
CREATE TABLE floor_flows (
  id text PRIMARY KEY, client_id text NOT NULL, redirect_uri text NOT NULL, scope text NOT NULL,
  oauth_state text NOT NULL, code_challenge text NOT NULL, jkt text NOT NULL, stage text NOT NULL,
  uid text, customer_id text, auth_time timestamptz, account_ids text[], grant_id text,
  expires_at timestamptz NOT NULL
) WITH (fillfactor = 50);
CREATE TABLE floor_accounts (id text PRIMARY KEY, customer_id text NOT NULL, nickname text NOT NULL);
CREATE INDEX ON floor_accounts (customer_id);
CREATE TABLE floor_credentials (
  id text PRIMARY KEY, customer_id text NOT NULL, user_handle text NOT NULL, public_key bytea NOT NULL,
  counter bigint NOT NULL, last_used_at timestamptz, revoked_at timestamptz
) WITH (fillfactor = 50);
CREATE TABLE floor_grants (
  id text PRIMARY KEY, customer_id text NOT NULL, client_id text NOT NULL, scope text NOT NULL,
  account_ids text[] NOT NULL, created_at timestamptz NOT NULL DEFAULT now(), revoked_at timestamptz
);
CREATE TABLE floor_tokens (
  at_hash text PRIMARY KEY, rt_hash text NOT NULL UNIQUE, grant_id text NOT NULL, jkt text NOT NULL,
  scope text NOT NULL, at_expires_at timestamptz NOT NULL, revoked_at timestamptz
);
CREATE INDEX ON floor_tokens (grant_id);
CREATE TABLE floor_audit (
  id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT now(), type text NOT NULL, outcome text NOT NULL,
  customer_id text, client_id text, ip text, port int, user_agent text, data jsonb
);`;

/**
 * Customers with two accounts each and one passkey each, registered with the emulator and written
 * straight into the table (the floor measures sign-ins, not enrolment).
 */
async function enrolUsers(o: {
  admin: pg.Client;
  count: number;
  issuer: string;
  target: FlowSettings['target'];
}): Promise<VirtualUser[]> {
  const rpId = new URL(o.issuer).hostname;
  const users: VirtualUser[] = [];
  for (let i = 0; i < o.count; i++) {
    const customerId = `cus_floor_${i}`;
    const accountIds = [`acc_floor_${i}_a`, `acc_floor_${i}_b`];
    await o.admin.query(
      `INSERT INTO floor_accounts (id, customer_id, nickname) VALUES ($1, $3, '特定口座'), ($2, $3, 'NISA口座')`,
      [accountIds[0], accountIds[1], customerId],
    );
    const device = createEmulator();
    const userHandle = randomBytes(16).toString('base64url');
    const challenge = randomBytes(32).toString('base64url');
    const response = device.register(
      {
        rp: { id: rpId, name: 'Kakehashi flow floor' },
        user: { id: userHandle, name: String(20_000_000 + i), displayName: `Floor ${i}` },
        challenge,
        pubKeyCredParams: [{ type: 'public-key', alg: -7 }],
        timeout: 60_000,
        attestation: 'none',
        excludeCredentials: [],
        authenticatorSelection: { residentKey: 'required', userVerification: 'required' },
      },
      o.issuer,
    );
    const verified = await verifyRegistrationResponse({
      response,
      expectedChallenge: challenge,
      expectedOrigin: o.issuer,
      expectedRPID: rpId,
      requireUserVerification: true,
    });
    if (!verified.verified) throw new Error('set-up: the emulator registration did not verify');
    const { credential } = verified.registrationInfo;
    // COSE EC2 → uncompressed point 0x04 ‖ x ‖ y → SPKI, the form the server parses.
    const point = convertCOSEtoPKCS(credential.publicKey);
    const spki = createPublicKey({
      key: {
        kty: 'EC',
        crv: 'P-256',
        x: Buffer.from(point.subarray(1, 33)).toString('base64url'),
        y: Buffer.from(point.subarray(33, 65)).toString('base64url'),
      },
      format: 'jwk',
    }).export({ type: 'spki', format: 'der' });
    await o.admin.query(
      'INSERT INTO floor_credentials (id, customer_id, user_handle, public_key, counter) VALUES ($1, $2, $3, $4, $5)',
      [credential.id, customerId, userHandle, spki, credential.counter],
    );
    const user: VirtualUser = {
      conn: connection(o.target),
      dpop: createDpopSigner(),
      device,
      customerNumber: String(20_000_000 + i),
      accountIds,
    };
    onCleanup(() => user.conn.destroy());
    users.push(user);
  }
  return users;
}

/** One raw request: status and body, whatever the status. */
async function send(
  conn: Connection,
  flow: FlowSettings,
  path: string,
  body: string,
  extra: Record<string, string>,
): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await conn.request({
    method: 'POST',
    path,
    headers: {
      host: flow.target.host,
      'content-type': 'application/x-www-form-urlencoded',
      accept: 'application/json',
      ...extra,
    },
    body,
  });
  return { status: res.statusCode, body: JSON.parse(res.body.toString('utf8') || '{}') };
}

/** The refusals the floor must make; throws when one does not hold. */
async function selfTest(flow: FlowSettings, u: VirtualUser, admin: pg.Client): Promise<string[]> {
  const out: string[] = [];
  const expect = (
    what: string,
    got: { status: number; body: Record<string, unknown> },
    status: number,
    error?: string,
  ) => {
    if (got.status !== status || (error !== undefined && got.body.error !== error))
      throw new Error(
        `self-test: ${what}: expected ${status} ${error ?? ''}, got ${got.status} ${JSON.stringify(got.body)}`,
      );
    out.push(`${what}: ${status}${error ? ` ${error}` : ''}`);
  };
  const par = (proof: string, assertion?: string) => {
    const form = parRequestBody(flow, pkcePair().challenge, 'self-test');
    if (assertion) form.set('client_assertion', assertion);
    return send(u.conn, flow, flow.parPath, form.toString(), { dpop: proof });
  };
  const redeem = (conn: Connection, code: string, verifier: string) =>
    send(conn, flow, flow.tokenPath, tokenRequestBody(flow, code, verifier), {
      dpop: u.dpop.proof('POST', flow.tokenUrl),
    });

  // Passkey assertions the server must refuse: no user verification, a changed signature byte, and
  // an assertion from an earlier flow (its challenge).
  const refusedAt = async (what: string, reason: string, device: VirtualUser['device']) => {
    try {
      await runFlow(flow, { ...u, device }, {});
    } catch (err) {
      if (
        err instanceof UnexpectedResponse &&
        err.step === 'passkeyVerify' &&
        err.status === 400 &&
        err.message.includes(`passkey: ${reason}`)
      ) {
        out.push(`${what}: 400 (${reason})`);
        return;
      }
      throw err;
    }
    throw new Error(`self-test: ${what} was accepted`);
  };
  u.device.userVerified = false;
  await refusedAt('passkey assertion without user verification', 'user verification', u.device);
  u.device.userVerified = true;
  let earlier: ReturnType<VirtualUser['device']['authenticate']> | undefined;
  await runFlow(
    flow,
    {
      ...u,
      device: { ...u.device, authenticate: (o, origin) => (earlier = u.device.authenticate(o, origin)) },
    },
    {},
  );
  await refusedAt('passkey assertion of an earlier flow', 'challenge', {
    ...u.device,
    authenticate: () => earlier!,
  });
  await refusedAt('passkey assertion with a changed signature', 'signature', {
    ...u.device,
    authenticate: (o, origin) => {
      const a = u.device.authenticate(o, origin);
      const sig = Buffer.from(a.response.signature, 'base64url');
      sig[sig.length - 5]! ^= 0x01;
      return { ...a, response: { ...a.response, signature: sig.toString('base64url') } };
    },
  });

  // DPoP proof replayed at PAR.
  const proof = u.dpop.proof('POST', flow.parUrl);
  expect('PAR with a fresh DPoP proof', await par(proof), 201);
  expect('PAR replaying that DPoP proof', await par(proof), 400, 'invalid_dpop_proof');

  // A client assertion whose signature does not verify (one byte of it changed).
  const [h, p, s] = flow.clientSigner.assertion(flow.target.issuer).split('.') as [string, string, string];
  const sig = Buffer.from(s, 'base64url');
  sig[10]! ^= 0x01;
  expect(
    'PAR with a bad client assertion signature',
    await par(u.dpop.proof('POST', flow.parUrl), `${h}.${p}.${sig.toString('base64url')}`),
    401,
    'invalid_client',
  );

  // Wrong PKCE verifier, then the right one, then the code again.
  const first = await obtainCode(flow, u);
  expect(
    'token with a wrong PKCE verifier',
    await redeem(u.conn, first.code, pkcePair().verifier),
    400,
    'invalid_grant',
  );
  const redeemed = await redeem(u.conn, first.code, first.verifier);
  expect('token with the right verifier', redeemed, 200);
  if (redeemed.body.token_type !== 'DPoP' || typeof redeemed.body.id_token !== 'string')
    throw new Error(`self-test: token response ${JSON.stringify(redeemed.body)}`);
  expect('token replaying the code', await redeem(u.conn, first.code, first.verifier), 400, 'invalid_grant');
  const flowId = first.code.split('.')[0]!;
  const revoked = await admin.query(
    `SELECT g.revoked_at IS NOT NULL AS grant_revoked, bool_and(t.revoked_at IS NOT NULL) AS tokens_revoked
     FROM floor_flows f JOIN floor_grants g ON g.id = f.grant_id JOIN floor_tokens t ON t.grant_id = g.id
     WHERE f.id = $1 GROUP BY g.revoked_at`,
    [flowId],
  );
  if (revoked.rows[0]?.grant_revoked !== true || revoked.rows[0]?.tokens_revoked !== true)
    throw new Error('self-test: the replayed code did not revoke its grant and tokens');
  out.push('the replayed code revoked its grant and tokens');

  // Two concurrent redemptions of one code: exactly one wins.
  const second = await obtainCode(flow, u);
  const other = connection(flow.target);
  try {
    const both = await Promise.all([
      redeem(u.conn, second.code, second.verifier),
      redeem(other, second.code, second.verifier),
    ]);
    const statuses = both.map((r) => r.status).sort();
    if (statuses[0] !== 200 || statuses[1] !== 400)
      throw new Error(`self-test: concurrent redemptions answered ${statuses.join(', ')}`);
    out.push('two concurrent redemptions of one code: 200 and 400');
  } finally {
    await other.destroy();
  }
  return out;
}

runBench(async () => {
  const db = await startDatabase(log);
  onCleanup(() => db.stop());
  const admin = new pg.Client({ connectionString: db.url });
  await admin.connect();
  onCleanup(() => admin.end());
  await admin.query(SCHEMA);

  const dir = mkdtempSync(path.join(tmpdir(), 'kakehashi-flow-floor-'));
  onCleanup(() => rmSync(dir, { recursive: true, force: true }));
  const tls = await ensureDevTls(dir);
  const port = await freePort();
  const issuer = `https://localhost:${port}`;

  // The aggregator, as the hub's demo writes it (discoverFlow reads <dir>/demo/aggregator-client.json).
  const clientKey = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'jwk' });
  const client = {
    client_id: 'floor-aggregator',
    redirect_uris: ['https://aggregator.example/callback'],
    private_jwk: { ...clientKey, kid: 'floor-client-1' },
  };
  mkdirSync(path.join(dir, 'demo'));
  writeFileSync(path.join(dir, 'demo', 'aggregator-client.json'), JSON.stringify(client));
  const signingKey = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;

  log(`starting the flow floor server (${WORKERS} worker${WORKERS > 1 ? 's' : ''}, pool ${POOL} each)`);
  const server = await startHubProcess({
    cwd: ROOT,
    script: ['test/bench/lib/flowFloorServer.ts'],
    nodeArgs: [],
    log,
    env: {
      FLOOR_PORT: String(port),
      FLOOR_DB: db.url,
      FLOOR_CERT: path.join(dir, 'tls', 'server.pem'),
      FLOOR_KEY: path.join(dir, 'tls', 'server-key.pem'),
      FLOOR_ISSUER: issuer,
      FLOOR_CLIENT: JSON.stringify({
        client_id: client.client_id,
        client_name: 'Floor Aggregator',
        redirect_uris: client.redirect_uris,
        jwk: { kty: 'EC', crv: 'P-256', x: clientKey.x, y: clientKey.y, kid: client.private_jwk.kid },
      }),
      FLOOR_SECRET: randomBytes(32).toString('base64url'),
      FLOOR_SIGNING_KEY: signingKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
      FLOOR_SIGNING_KID: 'floor-signing-1',
      FLOOR_POOL: String(POOL),
      FLOOR_WORKERS: String(WORKERS),
    },
  });
  onCleanup(() => server.stop());

  const target = {
    connectOrigin: `https://127.0.0.1:${port}`,
    issuer,
    host: `localhost:${port}`,
    caPem: tls.caPem,
  };
  const setupConn = connection(target);
  onCleanup(() => setupConn.destroy());
  const { flow, requestsPerFlow } = await discoverDrivenFlow(setupConn, target, dir);
  const users = await enrolUsers({
    admin,
    count: Math.max(...FLOW_DRIVE.flowConcurrency, 1),
    issuer,
    target,
  });

  const selfTestResults = await selfTest(flow, users[0]!, admin);
  for (const line of selfTestResults) log(`self-test: ${line}`);
  await Promise.all(users.map((u) => runFlow(flow, u, {})));
  log('set-up done: the refusals hold and every user completes a flow');

  const monitor = await createPgMonitor(db.url, db.statementStats);
  onCleanup(() => monitor.close());
  const phases: PhaseResult[] = [];
  for (const c of FLOW_DRIVE.flowConcurrency)
    phases.push(
      await runPhase({
        name: `floor@${c}`,
        kind: 'flow',
        workers: c,
        requestsPerOp: requestsPerFlow,
        hubs: [server],
        db,
        monitor,
        perfDir: undefined,
        op: (w, steps) => runFlow(flow, users[w]!, steps),
      }),
    );
  const stepCpu =
    FLOW_DRIVE.stepCpuFlows > 0
      ? await measureStepCpu({
          flows: FLOW_DRIVE.stepCpuFlows,
          hub: server,
          db,
          flow,
          user: users[0]!,
          monitor,
        })
      : undefined;
  await server.stop();

  const m = machineInfo();
  const report = {
    when: new Date().toISOString(),
    machine: m,
    postgres: { version: db.serverVersion, source: db.source, fsync: db.fsync },
    config: {
      ...PHASE_WINDOW,
      ...FLOW_DRIVE,
      workers: WORKERS,
      dbPoolPerWorker: POOL,
      requestsPerFlow,
      scope: FLOW_SCOPE,
    },
    selfTest: selfTestResults,
    phases,
    ...(stepCpu ? { stepCpu } : {}),
  };
  const lines = [
    '## The floor of a FAPI 2.0 flow (test/bench/flowFloor.ts)',
    '',
    `Machine: ${m.nproc} × ${m.cpuModel}, ${m.platform}, Node ${m.node}; PostgreSQL ${db.serverVersion} (${db.source}, fsync=${db.fsync}); ` +
      `floor server: ${WORKERS} worker${WORKERS > 1 ? 's (node:cluster; CPU summed over primary and workers)' : ''}, pool ${POOL}${WORKERS > 1 ? ' per worker' : ''}; ` +
      `${PHASE_WINDOW.warmupS} s warm-up, ${PHASE_WINDOW.durationS} s measured; ${requestsPerFlow} HTTP requests per flow.`,
    '',
    '| phase | concurrency | flows/s | p50 ms | p99 ms | server CPU ms/flow | PG CPU ms/flow | generator CPU ms/flow | cores server (main thread) / PG / gen / other | PG statements/flow | errors |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|',
  ];
  for (const p of phases) {
    const c = p.cpu;
    lines.push(
      `| ${p.name} | ${p.concurrency} | ${p.perSecond} | ${round(p.latencyMs.p50, 1)} | ${round(p.latencyMs.p99, 1)} | ` +
        `${c.hubMsPerOp ?? '–'} | ${c.postgresMsPerOp ?? '–'} | ${c.generatorMsPerOp} | ` +
        `${c.hubCores ?? '–'} (${c.hubMainThreadCores ?? '–'}) / ${c.postgresCores ?? '–'} / ${c.generatorCores} / ${c.otherCores ?? '–'} | ` +
        `${p.db.transactionsPerOp ?? '–'} | ${p.errors} |`,
    );
  }
  const at10 = phases.find((p) => p.concurrency === 10);
  if (at10)
    lines.push(
      '',
      `Issue 2's target at 10 clients (≥ ${TARGETS.flowsPerSecondAt10} flows/s, p99 < ${TARGETS.flowP99MsAt10} ms) is ` +
        (at10.perSecond >= TARGETS.flowsPerSecondAt10 && at10.latencyMs.p99 < TARGETS.flowP99MsAt10
          ? 'within this floor: reachable on this machine in principle.'
          : '**beyond this floor**: no implementation of this flow reaches it here (if `other` cores ≈ 0).'),
    );
  lines.push(...flowStepLines(phases, stepCpu, 'server'));
  for (const p of phases)
    if (p.firstErrors.length) lines.push(`Errors in ${p.name}: ${p.firstErrors.join(' | ')}`);
  console.log(lines.join('\n'));
  if (process.env.BENCH_OUT) {
    writeResults(process.env.BENCH_OUT, report);
    console.log(`\nJSON: ${process.env.BENCH_OUT}`);
  }
});
