/**
 * The push worker against real HTTP receivers on loopback:
 * - wake-up: an event committed by another node (a plain insert, no in-process wake) is delivered at
 *   once on PostgreSQL (LISTEN/NOTIFY, with a poll interval of a minute), and by the poll on PGlite;
 * - fair share: one receiver that hangs until the push times out does not delay another's SETs.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { decodeJwt } from 'jose';
import { afterAll, afterEach, beforeAll, beforeEach, expect, it } from 'vitest';
import { type ConfigInput, loadConfig } from '../../src/config/index.ts';
import { createLogger } from '../../src/log.ts';
import { createSignalsContext, type SignalsContext } from '../../src/signals/context.ts';
import { emitSecurityEvent, linkCustomer } from '../../src/signals/index.ts';
import { loadSsfKeys, type SsfKeys } from '../../src/signals/keys.ts';
import { PeerMetadata } from '../../src/signals/peerMetadata.ts';
import { createStream } from '../../src/signals/streams.ts';
import { Subscriber } from '../../src/signals/subscriber.ts';
import { EVENT } from '../../src/signals/vocabulary.ts';
import { type SignalsWorker, startSignalsWorker } from '../../src/signals/worker.ts';
import { insertCustomer, type TestDb, testDb } from '../support/db.ts';
import { waitFor } from '../support/waitFor.ts';

const logger = createLogger('silent');
let t: TestDb;
let dir: string;
let kek: Buffer;
let keys: SsfKeys;
const cleanup: (() => Promise<void> | void)[] = [];

interface Receiver {
  url: string;
  /** txn of each SET received, with when it arrived. */
  got: { txn: string; at: number }[];
  /** Pushes being held open right now (mode hang). */
  hung(): number;
}

/** A push receiver on loopback: answers 202 at once, or never (the push times out). */
async function receiver(mode: 'fast' | 'hang'): Promise<Receiver> {
  const got: Receiver['got'] = [];
  let hung = 0;
  const server = http.createServer((req, res) => {
    let body = '';
    if (mode === 'hang') {
      hung++;
      req.socket.on('close', () => hung--);
    }
    req.on('data', (c) => {
      body += c;
    });
    req.on('end', () => {
      if (mode === 'hang') return;
      got.push({ txn: decodeJwt(body).txn as string, at: Date.now() });
      res.writeHead(202).end();
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  cleanup.push(
    () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  );
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/events`,
    got,
    hung: () => hung,
  };
}

function context(signals: ConfigInput['signals']): SignalsContext {
  const config = loadConfig({
    env: {},
    configDir: path.join(dir, 'none'),
    overrides: { issuer: 'https://hub.example', dataDir: dir, signals },
  });
  const ctx = createSignalsContext({ db: t.db, config, keys, kek, logger });
  cleanup.push(() => ctx.agents.close());
  return ctx;
}

function worker(ctx: SignalsContext): SignalsWorker {
  const w = startSignalsWorker(ctx, new Subscriber(ctx, new PeerMetadata(ctx)));
  cleanup.unshift(() => w.stop());
  return w;
}

const customer = () => insertCustomer(t.db);

async function pushStream(ctx: SignalsContext, peerId: string, url: string) {
  const peer = ctx.peers.byId.get(peerId)!;
  return createStream(ctx, t.db, peer, peer.clientId!, {
    delivery: { method: 'urn:ietf:rfc:8935', endpoint_url: url },
  });
}

const PEERS = [
  { id: 'bank', clientId: 'ssf-bank' },
  { id: 'pfm', clientId: 'ssf-pfm' },
];

beforeAll(async () => {
  t = await testDb();
  dir = mkdtempSync(path.join(tmpdir(), 'kakehashi-ssf-worker-'));
  kek = randomBytes(32);
  keys = await loadSsfKeys(t.db, kek);
});
afterAll(async () => {
  await t?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});
beforeEach(async () => {
  await t.db.query('DELETE FROM ssf_outbox');
  await t.db.query('DELETE FROM ssf_streams');
  await t.db.query('DELETE FROM ssf_events');
});
afterEach(async () => {
  for (const f of cleanup.splice(0)) await f();
});

it('an event committed elsewhere is delivered at once on PostgreSQL (LISTEN), and by the poll on PGlite', async () => {
  const pg = t.db.kind === 'pg';
  // On PostgreSQL the poll would take a minute: only the notification can explain a prompt push.
  const ctx = context({
    workerIntervalMs: pg ? 60_000 : 200,
    push: { allowLoopbackHttp: true },
    peers: PEERS,
  });
  const r = await receiver('fast');
  const c = await customer();
  await linkCustomer(t.db, { peerId: 'bank', customerId: c });
  await pushStream(ctx, 'bank', r.url);
  const w = worker(ctx);
  await waitFor('the worker to be ready', () => w.listening() === pg, 5000);
  expect(w.listening()).toBe(pg);
  await new Promise((res) => setTimeout(res, 300));

  // Another node's event: a row in ssf_events, committed, with no in-process wake-up here.
  const txn = randomUUID();
  const started = Date.now();
  await t.db.query(
    `INSERT INTO ssf_events (txn, event_type, customer_id, payload) VALUES ($1, $2, $3, $4::jsonb)`,
    [txn, EVENT.recoveryActivated, c, JSON.stringify({ claims: {} })],
  );
  await waitFor('the SET at the receiver', () => r.got.some((g) => g.txn === txn), pg ? 5000 : 10_000);
  const took = r.got.find((g) => g.txn === txn)!.at - started;
  if (pg) expect(took).toBeLessThan(5000);
  else expect(took).toBeGreaterThan(0);
});

it('a receiver that hangs until the push times out does not delay the SETs of another', async () => {
  const ctx = context({
    workerIntervalMs: 50,
    push: {
      allowLoopbackHttp: true,
      timeoutMs: 3000,
      // Few slots on purpose: the hung receiver could take every one of them if it were allowed to.
      maxInFlight: 4,
      concurrencyPerStream: 16,
      retryBaseMs: 60_000,
    },
    peers: PEERS,
  });
  const slow = await receiver('hang');
  const fast = await receiver('fast');
  const ofBank = await Promise.all(Array.from({ length: 8 }, () => customer()));
  const ofPfm = await Promise.all(Array.from({ length: 4 }, () => customer()));
  for (const c of ofBank) await linkCustomer(t.db, { peerId: 'bank', customerId: c });
  for (const c of ofPfm) await linkCustomer(t.db, { peerId: 'pfm', customerId: c });
  await pushStream(ctx, 'bank', slow.url);
  await pushStream(ctx, 'pfm', fast.url);
  worker(ctx);

  // The hung receiver gets its SETs first and holds the pushes it was given…
  // All eight in one commit: on PostgreSQL the worker's LISTEN wake-up could otherwise catch the first
  // alone, and a stream whose only push hangs is (rightly) probed one SET at a time after it fails.
  await t.db.transaction(async (tx) => {
    for (const c of ofBank) await emitSecurityEvent(tx, { type: 'recovery-activated', customerId: c });
  });
  await waitFor('pushes hanging at the slow receiver', () => slow.hung() >= 2, 15_000);
  await new Promise((r) => setTimeout(r, 200));
  // …but never more than half the node's slots: the rest are free for the other receiver.
  expect(slow.hung()).toBe(2);
  const started = Date.now();
  const txns: string[] = [];
  for (const c of ofPfm)
    txns.push((await emitSecurityEvent(t.db, { type: 'recovery-activated', customerId: c })).txn);
  await waitFor(
    'every SET at the fast receiver',
    () => txns.every((x) => fast.got.some((g) => g.txn === x)),
    10_000,
  );
  // Well before the hung pushes time out (3 s after they began): nothing waited for them.
  expect(Math.max(...fast.got.map((g) => g.at)) - started).toBeLessThan(1500);

  // After the timeout the hung receiver's stream backs off, its SETs kept; the fast one goes on.
  await new Promise((r) => setTimeout(r, 3500));
  const streams = await t.db.query<{
    peer_id: string;
    consecutive_failures: number;
    last_error: string | null;
  }>('SELECT peer_id, consecutive_failures, last_error FROM ssf_streams ORDER BY peer_id');
  expect(streams.rows[0]).toMatchObject({ peer_id: 'bank', consecutive_failures: 1 });
  expect(streams.rows[0]!.last_error).toMatch(/transport/);
  expect(streams.rows[1]).toMatchObject({ peer_id: 'pfm', consecutive_failures: 0 });
  const more = (await emitSecurityEvent(t.db, { type: 'recovery-activated', customerId: ofPfm[0]! })).txn;
  const again = Date.now();
  await waitFor('the next SET at the fast receiver', () => fast.got.some((g) => g.txn === more), 5000);
  expect(fast.got.find((g) => g.txn === more)!.at - again).toBeLessThan(1500);
  const pending = await t.db.query<{ n: number }>(
    "SELECT count(*)::int AS n FROM ssf_outbox o JOIN ssf_streams s USING (stream_id) WHERE s.peer_id = 'bank' AND o.state = 'pending'",
  );
  expect(pending.rows[0]!.n).toBe(8);
});
