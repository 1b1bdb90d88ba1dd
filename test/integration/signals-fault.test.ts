/**
 * Faults during delivery: the receiver dies mid-delivery (connections cut, its database writes
 * stop), events keep coming while it is down, then the transmitter dies too (in-flight pushes cut,
 * leases left behind, nothing recorded after the crash), and both come back on their databases.
 * Every event must then have been delivered and acted on exactly once at the receiver, whatever
 * was pushed twice on the way.
 *
 * A "crash" here is a hub whose database handle starts failing every statement (a process that is
 * gone writes nothing more), whose sockets are destroyed, and whose leftovers are then discarded.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Agent, fetch as undiciFetch } from 'undici';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { type ConfigInput, loadConfig } from '../../src/config/index.ts';
import { type Db, openDb, type Queryable } from '../../src/db/index.ts';
import { type Hub, startHub } from '../../src/hub.ts';
import { createLogger } from '../../src/log.ts';
import {
  emitSecurityEvent,
  linkCustomer,
  outgoingSubject,
  registerPeerClient,
} from '../../src/signals/index.ts';
import { ensureDevTls } from '../../src/tls/index.ts';
import { createTestDatabase } from '../support/db.ts';
import { freePort } from '../support/hub.ts';
import { waitFor } from '../support/waitFor.ts';

interface Killable extends Db {
  kill(): void;
}

/** The database as one process sees it: after kill() every statement fails, as if the process had died. */
function killable(db: Db): Killable {
  let dead = false;
  const alive = () => {
    if (dead) throw new Error('the process is gone');
  };
  const wrap = (q: Queryable): Queryable => ({
    async query(sql, params) {
      alive();
      const r = await q.query(sql, params);
      alive();
      return r as never;
    },
    async exec(sql) {
      alive();
      await q.exec(sql);
    },
    afterCommit: (fn) => q.afterCommit(fn),
  });
  return {
    kind: db.kind,
    ...wrap(db),
    transaction: (fn) => {
      alive();
      return db.transaction(async (tx) => {
        const r = await fn(wrap(tx));
        alive();
        return r;
      });
    },
    close: async () => {},
    kill() {
      dead = true;
    },
  };
}

interface Node {
  hub: Hub;
  db: Killable;
}

interface Site {
  name: string;
  dir: string;
  port: number;
  issuer: string;
  caPath: string;
  db: Db;
  drop(): Promise<void>;
  config(signals: ConfigInput['signals']): ReturnType<typeof loadConfig>;
}

const logger = createLogger(process.env.TEST_LOG_LEVEL ?? 'silent');
const sites: Site[] = [];

async function site(name: string): Promise<Site> {
  const dir = mkdtempSync(path.join(tmpdir(), `kakehashi-fault-${name}-`));
  const { caPath } = await ensureDevTls(dir, ['localhost']);
  const port = await freePort();
  const created = await createTestDatabase();
  const db = await openDb({ databaseUrl: created.url, dataDir: dir, poolSize: 10, inMemory: !created.url });
  const s: Site = {
    name,
    dir,
    port,
    issuer: `https://localhost:${port}`,
    caPath,
    db,
    async drop() {
      await db.close();
      await created.drop();
      rmSync(dir, { recursive: true, force: true });
    },
    config: (signals) =>
      loadConfig({
        // The hubs push to each other on loopback.
        env: { KAKEHASHI_SSF_ALLOW_PRIVATE_ENDPOINTS: 'true' },
        configDir: path.join(dir, 'none'),
        overrides: { port, issuer: s.issuer, dataDir: dir, logLevel: 'silent', signals },
      }),
  };
  sites.push(s);
  return s;
}

async function start(s: Site, signals: ConfigInput['signals']): Promise<Node> {
  const db = killable(s.db);
  return { hub: await startHub(s.config(signals), { db, logger }), db };
}

/** The process dies: no more writes, every connection cut (in and out). */
async function crash(n: Node): Promise<void> {
  n.db.kill();
  n.hub.server.closeAllConnections();
  n.hub.signals.context.agents.close();
  // What is left of the dead instance is discarded (its timers and sockets), writing nothing.
  await n.hub.close().catch(() => {});
}

const count = async (db: Queryable, sql: string, params: unknown[] = []) =>
  (await db.query<{ n: number }>(sql, params)).rows[0]?.n ?? 0;

let transmitterSite: Site;
let receiverSite: Site;
let transmitterSignals: ConfigInput['signals'];
let receiverSignals: ConfigInput['signals'];
let transmitter: Node;
let receiver: Node;
let customerAtT: string;
let customerAtR: string;

beforeAll(async () => {
  transmitterSite = await site('t');
  receiverSite = await site('r');
  transmitterSignals = {
    workerIntervalMs: 50,
    push: {
      retryBaseMs: 100,
      retryMaxMs: 500,
      leaseSeconds: 5,
      batchSize: 50,
      concurrencyPerStream: 8,
      timeoutMs: 2000,
    },
    peers: [{ id: 'r', clientId: 'ssf-r', caFile: receiverSite.caPath }],
  };
  receiverSignals = {
    workerIntervalMs: 50,
    peers: [
      {
        id: 't',
        issuer: transmitterSite.issuer,
        caFile: transmitterSite.caPath,
        subscribe: { clientId: 'ssf-r', delivery: 'push' },
        // Side effects we can count: two queued actions per event, nothing forwarded.
        actions: {
          'https://schemas.openid.net/secevent/caep/event-type/credential-change': ['raise_risk', 'notify'],
        },
        // 300 events about 300 customers within seconds: above the default circuit breaker (100 per
        // 10 minutes), which would hold the rest for an operator; this test is about delivery.
        circuitBreaker: { maxSetsPerWindow: 1000, windowSeconds: 600 },
      },
    ],
  };
  transmitter = await start(transmitterSite, transmitterSignals);
  receiver = await start(receiverSite, receiverSignals);
  const dispatcher = new Agent({ connect: { ca: readFileSync(receiverSite.caPath, 'utf8') } });
  const jwks = await (await undiciFetch(`${receiverSite.issuer}/ssf/client-jwks`, { dispatcher })).json();
  await dispatcher.close();
  await registerPeerClient(transmitterSite.db, {
    clientId: 'ssf-r',
    jwks: jwks as { keys: Record<string, unknown>[] },
  });
  receiver.hub.signals.resubscribe();
  customerAtT = transmitter.hub.demo!.customerId;
  customerAtR = receiver.hub.demo!.customerId;
  const link = await linkCustomer(transmitterSite.db, { peerId: 'r', customerId: customerAtT });
  await linkCustomer(receiverSite.db, {
    peerId: 't',
    customerId: customerAtR,
    peerSubject: outgoingSubject(transmitterSite.issuer, link),
  });
  await waitFor(
    'the receiver to verify its stream',
    async () =>
      (await count(
        receiverSite.db,
        'SELECT count(*)::int AS n FROM ssf_subscriptions WHERE verified_at IS NOT NULL',
      )) === 1,
    20_000,
  );
}, 60_000);

afterAll(async () => {
  await transmitter?.hub.close().catch(() => {});
  await receiver?.hub.close().catch(() => {});
  for (const s of sites) await s.drop();
});

const received = () =>
  count(
    receiverSite.db,
    "SELECT count(*)::int AS n FROM ssf_received WHERE peer_id = 't' AND event_type LIKE '%credential-change'",
  );

async function emit(n: number, from: number): Promise<string[]> {
  const txns: string[] = [];
  for (let i = 0; i < n; i++) {
    const txn = `fault-${from + i}`;
    txns.push(txn);
    await emitSecurityEvent(transmitterSite.db, {
      type: 'credential-change',
      customerId: customerAtT,
      credentialType: 'fido2-platform',
      changeType: 'update',
      txn,
    });
  }
  return txns;
}

it('receiver killed mid-delivery, transmitter crashed mid-delivery and restarted: every event delivered, every side effect once', async () => {
  const total = 300;
  const first = await emit(200, 0);
  await waitFor('delivery to be under way', async () => (await received()) >= 40, 20_000);
  await crash(receiver);
  const whileDown = await emit(total - first.length, first.length);
  // The transmitter keeps failing (connection refused) and backs off; nothing is lost meanwhile.
  await new Promise((r) => setTimeout(r, 700));
  const duringOutage = await received();
  expect(duringOutage).toBeLessThan(total);

  receiver = await start(receiverSite, receiverSignals);
  // As soon as deliveries resume, the transmitter dies with pushes in flight and its stream lease held.
  await waitFor('deliveries to resume', async () => (await received()) > duringOutage, 20_000);
  await crash(transmitter);
  const atCrash = await received();
  expect(atCrash).toBeLessThan(total);

  transmitter = await start(transmitterSite, transmitterSignals);
  // The dead transmitter's stream lease (5 s) has to run out before the new instance may push.
  await waitFor(`all ${total} events at the receiver`, async () => (await received()) >= total, 60_000);
  await new Promise((r) => setTimeout(r, 500));
  const txns = [...first, ...whileDown];
  const r = receiverSite.db;
  expect(await received()).toBe(total);
  expect(
    await count(
      r,
      "SELECT count(DISTINCT txn)::int AS n FROM ssf_received WHERE peer_id = 't' AND txn = ANY ($1::text[])",
      [txns],
    ),
  ).toBe(total);
  // Exactly two queued actions per event: nothing ran twice, however often a SET arrived.
  const perEvent = await r.query<{ txn: string; n: number }>(
    'SELECT txn, count(*)::int AS n FROM ssf_action_outbox WHERE txn = ANY ($1::text[]) GROUP BY txn',
    [txns],
  );
  expect(perEvent.rows).toHaveLength(total);
  expect(perEvent.rows.every((row) => row.n === 2)).toBe(true);
  expect(
    await count(
      r,
      "SELECT count(*)::int AS n FROM audit_events WHERE type = 'ssf.set.received' AND data->>'txn' LIKE 'fault-%'",
    ),
  ).toBe(total);
  // The transmitter's outbox ends clean: everything delivered, nothing pending or dead.
  const t = transmitterSite.db;
  const states = await t.query<{ state: string; n: number }>(
    `SELECT o.state, count(*)::int AS n FROM ssf_outbox o JOIN ssf_events e ON e.id = o.event_id
     WHERE e.txn = ANY ($1::text[]) GROUP BY o.state`,
    [txns],
  );
  expect(states.rows).toEqual([{ state: 'delivered', n: total }]);
  expect(
    await count(r, 'SELECT count(*)::int AS n FROM ssf_received WHERE customer_id = $1', [customerAtR]),
  ).toBe(total);
  const repeats = await count(
    r,
    "SELECT count(*)::int AS n FROM audit_events WHERE type = 'ssf.set.duplicate'",
  );
  console.info(
    `fault test: ${total} events; received ${duringOutage} before the outage ended, ${atCrash} at the transmitter crash; ${repeats} SET(s) pushed again and ignored`,
  );
}, 120_000);
