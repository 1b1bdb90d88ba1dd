/**
 * The SSF transmitter after its security review (docs/ssf-transmitter-review.md): stream management
 * is confined to the caller's own streams, bounded, and race-free; push endpoints cannot point into
 * the hub's network; a push that trickles or floods its answer is cut off; waiting long polls cost
 * little and are bounded per receiver and per node.
 *
 * One hub, receivers as real OAuth clients (DPoP-bound client-credentials tokens, as the conformance
 * plan's SsfManager), and small local servers standing in for receivers' push endpoints.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import { hostname, tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { newPeerClientKey, type Reply, SsfManager } from '../../conformance/ssf/lib/manager.ts';
import type { Db, Queryable } from '../../src/db/index.ts';
import { emitSecurityEvent, linkCustomer, registerPeerClient } from '../../src/signals/index.ts';
import { changeStreamStatus } from '../../src/signals/ops.ts';
import { TRANSMITTED_EVENTS } from '../../src/signals/vocabulary.ts';
import { ensureDevTls } from '../../src/tls/index.ts';
import { insertCustomer } from '../support/db.ts';
import { startTestHub, type TestHub } from '../support/hub.ts';
import { waitFor } from '../support/waitFor.ts';

const PUSH = 'urn:ietf:rfc:8935';
const POLL = 'urn:ietf:rfc:8936';
const PUBLIC_ENDPOINT = 'https://receiver.example/events';

let t: TestHub;
let db: Db;
const managers: Record<string, SsfManager> = {};
/** A receiver endpoint whose certificate no CA the hub trusts has signed (its own dev CA). */
let untrusted: { server: https.Server; origin: string; requests: number; dir: string };

beforeAll(async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'kakehashi-untrusted-'));
  const tls = await ensureDevTls(dir, ['localhost']);
  const server = https.createServer({ cert: tls.certPem, key: tls.keyPem }, (_req, res) => {
    untrusted.requests++;
    res.writeHead(202).end();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  untrusted = {
    server,
    origin: `https://localhost:${(server.address() as net.AddressInfo).port}`,
    requests: 0,
    dir,
  };
  t = await startTestHub({
    signals: {
      workerIntervalMs: 50,
      longPollSeconds: 30,
      minVerificationIntervalSeconds: 0,
      maxStreamsPerReceiver: 4,
      maxSubjectsPerStream: 3,
      maxLongPollsPerReceiver: 2,
      maxLongPolls: 3,
      push: {
        allowPrivateAddresses: false,
        allowLoopbackHttp: true,
        timeoutMs: 400,
        retryBaseMs: 100,
        retryMaxMs: 200,
      },
      peers: [
        ...['a', 'b', 'c', 'd', 'e'].map((id) => ({ id, clientId: `ssf-${id}` })),
        // Its push endpoint is at an origin the operator listed: trusted as listed, even on loopback.
        { id: 'f', clientId: 'ssf-f', endpointOrigins: [untrusted.origin] },
      ],
    },
  });
  db = t.hub.db;
  for (const id of ['a', 'b', 'c', 'd', 'e', 'f']) {
    const key = newPeerClientKey(`ssf-${id}`);
    await registerPeerClient(db, { clientId: key.clientId, jwks: { keys: [key.publicJwk] }, dpop: true });
    const m = new SsfManager({ issuer: t.issuer, fetch: t.fetch }, key);
    await m.authorize('ssf.manage ssf.read');
    managers[id] = m;
  }
});

afterAll(async () => {
  await t?.close();
  untrusted?.server.close();
  if (untrusted) rmSync(untrusted.dir, { recursive: true, force: true });
});

const url = (path: string, query?: Record<string, string>) => {
  const u = new URL(`${t.issuer}/ssf/${path}`);
  for (const [k, v] of Object.entries(query ?? {})) u.searchParams.set(k, v);
  return u.href;
};

async function create(m: SsfManager, config: Record<string, unknown>): Promise<string> {
  const r = await m.createStream(config);
  expect(r.status, r.text).toBe(201);
  return String((r.body as { stream_id: string }).stream_id);
}

const oauthError = (r: Reply, status: number, error: string) => {
  expect(r.status, r.text).toBe(status);
  expect((r.body as { error?: string }).error).toBe(error);
  expect(typeof (r.body as { error_description?: unknown }).error_description).toBe('string');
};

async function linkedCustomer(peerId: string): Promise<string> {
  const customerId = await insertCustomer(db);
  await linkCustomer(db, { peerId, customerId });
  return customerId;
}

const emit = (customerId: string) =>
  emitSecurityEvent(db, {
    type: 'credential-change',
    credentialType: 'fido2-platform',
    changeType: 'create',
    customerId,
  });

/**
 * Runs `after` once each statement of the hub (in a transaction or not) has answered, before its
 * caller sees the answer; returns the function that undoes it. For interleavings that are otherwise
 * a matter of luck.
 */
function afterEachQuery(after: (sql: string, params: unknown[] | undefined) => unknown): () => void {
  const query = db.query;
  const transaction = db.transaction;
  const wrap = (q: Queryable['query'], self: Queryable) =>
    (async (sql: string, params?: unknown[]) => {
      const r = await q.call(self, sql, params);
      await after(sql, params);
      return r;
    }) as Queryable['query'];
  db.query = wrap(query, db);
  db.transaction = ((fn: (tx: Queryable) => Promise<unknown>) =>
    transaction.call(db, (tx) => fn({ ...tx, query: wrap(tx.query, tx) }))) as Db['transaction'];
  return () => {
    db.query = query;
    db.transaction = transaction;
  };
}

/** The stream's last push error, once there is one. */
const lastError = (streamId: string) =>
  db
    .query<{ last_error: string | null }>('SELECT last_error FROM ssf_streams WHERE stream_id = $1', [
      streamId,
    ])
    .then((r) => r.rows[0]?.last_error ?? undefined);

describe('another receiver’s stream', () => {
  it('every management and poll endpoint answers 404 for it, and nothing of it changes', async () => {
    const a = managers.a!;
    const b = managers.b!;
    const push = await create(a, {
      delivery: { method: PUSH, endpoint_url: PUBLIC_ENDPOINT, authorization_header: 'Bearer a-secret' },
      description: 'a’s own',
    });
    const pollId = await create(a, { delivery: { method: POLL } });
    const before = await a.readStream(push);
    const subject = { format: 'opaque', id: 'someone' };

    const attempts: [string, Promise<Reply>][] = [
      ['read', b.call('GET', url('stream', { stream_id: push }))],
      ['update', b.call('PATCH', url('stream'), { stream_id: push, description: 'b was here' })],
      ['replace', b.call('PUT', url('stream'), { stream_id: push, delivery: { method: POLL } })],
      ['status', b.call('GET', url('status', { stream_id: push }))],
      ['set status', b.call('POST', url('status'), { stream_id: push, status: 'disabled' })],
      ['add subject', b.call('POST', url('subjects/add'), { stream_id: push, subject })],
      ['remove subject', b.call('POST', url('subjects/remove'), { stream_id: push, subject })],
      ['verify', b.call('POST', url('verify'), { stream_id: push, state: 'x' })],
      ['poll', b.call('POST', url(`poll/${pollId}`), { returnImmediately: true, ack: ['x'] })],
      ['delete', b.call('DELETE', url('stream', { stream_id: push }))],
    ];
    for (const [what, reply] of attempts) {
      const r = await reply;
      expect(r.status, `${what}: ${r.text}`).toBe(404);
      expect((r.body as { error?: string }).error, what).toBe('not_found');
    }
    // b's list holds none of a's streams.
    const list = await b.readStream();
    expect((list.body as { stream_id: string }[]).map((s) => s.stream_id)).not.toContain(push);

    const after = await a.readStream(push);
    expect(after.body).toEqual(before.body);
    expect(((await a.readStatus(push)).body as { status: string }).status).toBe('enabled');
    const rows = await db.query<{ n: number }>(
      `SELECT (SELECT count(*) FROM ssf_stream_subjects WHERE stream_id = $1)::int
            + (SELECT count(*) FROM ssf_events WHERE stream_id = $1)::int AS n`,
      [push],
    );
    expect(rows.rows[0]!.n).toBe(0);
  });
});

describe('the audit of a push endpoint', () => {
  it('keeps the host and path, not a token in the query (credentials and fragments are refused anyway)', async () => {
    const a = managers.a!;
    const streamId = await create(a, {
      delivery: {
        method: PUSH,
        endpoint_url: 'https://receiver.example/events?token=s3cret-in-query',
      },
    });
    const rows = await db.query<{ data: { endpoint?: string } }>(
      "SELECT data FROM audit_events WHERE type = 'ssf.stream.created' AND data ->> 'streamId' = $1",
      [streamId],
    );
    expect(rows.rows.map((r) => r.data.endpoint)).toEqual(['https://receiver.example/events?…']);
    expect(JSON.stringify(rows.rows)).not.toContain('s3cret');
    // The receiver's stream count is shared with the tests below.
    expect((await a.call('DELETE', url('stream', { stream_id: streamId }))).status).toBe(204);
  });
});

describe('a status the operator set', () => {
  it('holds against the receiver (403) until an operator enables the stream; the hub’s own pause does not', async () => {
    const a = managers.a!;
    const streamId = await create(a, { delivery: { method: POLL } });
    const operator = (
      status: 'enabled' | 'paused' | 'disabled',
      actor: string,
      reason: string | null = null,
    ) => db.transaction((tx) => changeStreamStatus(tx, streamId, status, reason, actor));
    const statusNow = async () => ((await a.readStatus(streamId)).body as { status: string }).status;

    await operator('disabled', 'operator:alice', 'fraud investigation');
    for (const status of ['enabled', 'paused', 'disabled'])
      oauthError(await a.setStatus(streamId, status), 403, 'access_denied');
    expect(await statusNow()).toBe('disabled');
    await operator('paused', 'operator:alice');
    oauthError(await a.setStatus(streamId, 'enabled'), 403, 'access_denied');
    expect(await statusNow()).toBe('paused');

    await operator('enabled', 'operator:alice');
    expect((await a.setStatus(streamId, 'paused')).status).toBe(200);
    expect((await a.setStatus(streamId, 'enabled')).status).toBe(200);
    // Paused by the hub itself for inactivity: the receiver re-enables it (SSF 1.0 §8.1.1).
    await operator('paused', 'system', 'inactivity_timeout');
    expect((await a.setStatus(streamId, 'enabled')).status).toBe(200);
    expect(await statusNow()).toBe('enabled');
    await a.deleteStream(streamId);
  });

  it('cannot be sidestepped by deleting the held stream or opening another one', async () => {
    const a = managers.a!;
    const streams = async () =>
      (await db.query<{ n: number }>("SELECT count(*)::int AS n FROM ssf_streams WHERE client_id = 'ssf-a'"))
        .rows[0]!.n;
    const before = await streams();
    const streamId = await create(a, { delivery: { method: POLL } });
    const operator = (status: 'enabled' | 'disabled') =>
      db.transaction((tx) => changeStreamStatus(tx, streamId, status, null, 'operator:alice'));

    await operator('disabled');
    oauthError(await a.createStream({ delivery: { method: POLL } }), 403, 'access_denied');
    oauthError(await a.deleteStream(streamId), 403, 'access_denied');
    expect(await streams()).toBe(before + 1);
    const held = await db.query<{ status: string; operator_hold: boolean }>(
      'SELECT status, operator_hold FROM ssf_streams WHERE stream_id = $1',
      [streamId],
    );
    expect(held.rows[0]).toEqual({ status: 'disabled', operator_hold: true });

    // Once the operator enables it, the receiver manages its streams as before.
    await operator('enabled');
    const other = await create(a, { delivery: { method: POLL } });
    expect((await a.deleteStream(other)).status).toBe(204);
    expect((await a.deleteStream(streamId)).status).toBe(204);
    expect(await streams()).toBe(before);
  });
});

describe('limits and input', () => {
  it('a body over 64 KiB is 413, a long events_requested or a non-https URL 400, all as OAuth JSON errors', async () => {
    const a = managers.a!;
    oauthError(
      await a.call('POST', url('stream'), undefined, {
        raw: JSON.stringify({ description: 'x'.repeat(70 * 1024) }),
      }),
      413,
      'invalid_request',
    );
    oauthError(
      await a.createStream({ events_requested: Array.from({ length: 101 }, (_, i) => `urn:x:${i}`) }),
      400,
      'invalid_request',
    );
    oauthError(
      await a.createStream({ delivery: { method: PUSH, endpoint_url: 'http://receiver.example/events' } }),
      400,
      'invalid_request',
    );
  });

  it('two creations counting the receiver’s streams at once never make more than maxStreamsPerReceiver', async () => {
    const c = managers.c!;
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) ids.push(await create(c, { delivery: { method: POLL } }));
    // Each count waits (up to 300 ms) until the other has counted too: both see room for one more.
    let counted = 0;
    const restore = afterEachQuery(async (sql) => {
      if (!sql.includes('count(*)::int AS n FROM ssf_streams')) return;
      counted++;
      const until = Date.now() + 300;
      while (counted < 2 && Date.now() < until) await new Promise((r) => setTimeout(r, 10));
    });
    let replies: Reply[];
    try {
      replies = await Promise.all([1, 2].map(() => c.createStream({ delivery: { method: POLL } })));
    } finally {
      restore();
    }
    expect(replies.map((r) => r.status).sort()).toEqual([201, 409]);
    oauthError(replies.find((r) => r.status === 409)!, 409, 'invalid_request');
    const n = await db.query<{ n: number }>(
      "SELECT count(*)::int AS n FROM ssf_streams WHERE client_id = 'ssf-c'",
    );
    expect(n.rows[0]!.n).toBe(4);
    ids.push((replies.find((r) => r.status === 201)!.body as { stream_id: string }).stream_id);
    for (const id of ids) expect((await c.deleteStream(id)).status).toBe(204);
  });

  it('a stream records at most maxSubjectsPerStream subjects; known ones can still change', async () => {
    const a = managers.a!;
    const streamId = await create(a, { delivery: { method: POLL } });
    const subject = (i: number) => ({ format: 'opaque', id: `s-${i}` });
    for (let i = 0; i < 3; i++) {
      const r = await a.call('POST', url('subjects/add'), { stream_id: streamId, subject: subject(i) });
      expect(r.status, r.text).toBe(200);
    }
    oauthError(
      await a.call('POST', url('subjects/add'), { stream_id: streamId, subject: subject(3) }),
      409,
      'invalid_request',
    );
    oauthError(
      await a.call('POST', url('subjects/remove'), { stream_id: streamId, subject: subject(4) }),
      409,
      'invalid_request',
    );
    expect(
      (await a.call('POST', url('subjects/remove'), { stream_id: streamId, subject: subject(0) })).status,
    ).toBe(204);
    expect(
      (await a.call('POST', url('subjects/add'), { stream_id: streamId, subject: subject(0) })).status,
    ).toBe(200);
    const n = await db.query<{ n: number }>(
      'SELECT count(*)::int AS n FROM ssf_stream_subjects WHERE stream_id = $1',
      [streamId],
    );
    expect(n.rows[0]!.n).toBe(3);
    await a.deleteStream(streamId);
  });
});

describe('push endpoints at non-public addresses (SSRF)', () => {
  it('are refused when a stream is created or updated', async () => {
    const b = managers.b!;
    for (const endpoint of [
      'https://127.0.0.1/events',
      'https://127.1.2.3:8443/events',
      'https://[::1]/events',
      'https://[::ffff:127.0.0.1]/events',
      'https://2130706433/events',
      'https://169.254.169.254/latest/meta-data',
      'https://10.0.0.8/admin',
      'https://172.16.5.4/',
      'https://192.168.1.1/',
      'https://[fd00::1]/',
      'https://localhost:8443/events',
      'https://api.localhost/events',
    ]) {
      const r = await b.createStream({ delivery: { method: PUSH, endpoint_url: endpoint } });
      expect(r.status, `${endpoint}: ${r.text}`).toBe(400);
      expect((r.body as { error_description: string }).error_description).toMatch(/public address/);
    }
    const streamId = await create(b, { delivery: { method: PUSH, endpoint_url: PUBLIC_ENDPOINT } });
    const r = await b.call('PATCH', url('stream'), {
      stream_id: streamId,
      delivery: { method: PUSH, endpoint_url: 'https://169.254.169.254/latest' },
    });
    expect(r.status, r.text).toBe(400);
    const now = await b.readStream(streamId);
    expect((now.body as { delivery: { endpoint_url: string } }).delivery.endpoint_url).toBe(PUBLIC_ENDPOINT);
    await b.deleteStream(streamId);
  });

  it('a stream whose name resolves to a non-public address when pushing is not connected to', async () => {
    // As if configured before this check, or its DNS record pointed at the hub's network since: the
    // machine's own name (not refused by name like localhost) resolves to loopback or the LAN.
    let connections = 0;
    const server = net.createServer((s) => {
      connections++;
      s.destroy();
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as net.AddressInfo).port;
    try {
      const streamId = randomBytes(16).toString('hex');
      await db.query(
        `INSERT INTO ssf_streams (stream_id, peer_id, client_id, aud, delivery_method, endpoint_url, events_delivered, signing_alg)
         VALUES ($1, 'd', 'ssf-d', 'd', $2, $3, $4::text[], 'ES256')`,
        [streamId, PUSH, `https://${hostname()}:${port}/events`, [...TRANSMITTED_EVENTS]],
      );
      await emit(await linkedCustomer('d'));
      expect(await waitFor('the push to fail', () => lastError(streamId), 10_000)).toMatch(
        /non-public address/,
      );
      expect(connections).toBe(0);
      const pending = await db.query<{ n: number }>(
        "SELECT count(*)::int AS n FROM ssf_outbox WHERE stream_id = $1 AND state = 'pending'",
        [streamId],
      );
      expect(pending.rows[0]!.n).toBe(1);
      await db.query('DELETE FROM ssf_streams WHERE stream_id = $1', [streamId]);
    } finally {
      server.close();
    }
  });
});

describe('push over TLS', () => {
  it('an origin the operator listed may be on loopback, but its certificate must still verify', async () => {
    const f = managers.f!;
    oauthError(
      await f.createStream({ delivery: { method: PUSH, endpoint_url: PUBLIC_ENDPOINT } }),
      400,
      'invalid_request',
    );
    const streamId = await create(f, {
      delivery: { method: PUSH, endpoint_url: `${untrusted.origin}/events` },
    });
    await emit(await linkedCustomer('f'));
    expect(await waitFor('the push to fail', () => lastError(streamId), 10_000)).toMatch(/certificate/);
    expect(untrusted.requests).toBe(0);
    await f.deleteStream(streamId);
  });
});

describe('push to a slow, flooding or redirecting receiver', () => {
  it('gives up on an answer still trickling after push.timeoutMs, cuts off a flood, never follows a redirect', async () => {
    const hits: Record<string, number> = {};
    const open = new Set<http.ServerResponse>();
    const server = http.createServer((req, res) => {
      const path = new URL(req.url ?? '/', 'http://x').pathname;
      hits[path] = (hits[path] ?? 0) + 1;
      req.resume();
      if (path === '/trickle') {
        // Headers at once, then one byte every 100 ms: never silent long enough for a socket timeout.
        res.writeHead(202, { 'content-type': 'application/json' });
        open.add(res);
        const timer = setInterval(() => res.write(' '), 100);
        res.on('close', () => {
          clearInterval(timer);
          open.delete(res);
        });
      } else if (path === '/flood') {
        res.writeHead(400, { 'content-type': 'application/json' });
        open.add(res);
        const chunk = Buffer.alloc(64 * 1024, 0x20);
        const pump = () => {
          while (res.write(chunk)) if (res.destroyed) return;
        };
        res.on('drain', pump);
        res.on('close', () => open.delete(res));
        pump();
      } else if (path === '/redirect') {
        res.writeHead(307, { location: '/target' }).end();
      } else {
        res.writeHead(202).end();
      }
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const base = `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`;
    const d = managers.d!;
    const streams: Record<string, string> = {};
    try {
      for (const path of ['/trickle', '/flood', '/redirect'])
        streams[path] = await create(d, { delivery: { method: PUSH, endpoint_url: `${base}${path}` } });
      await emit(await linkedCustomer('d'));
      // The trickling answer is abandoned and the SET tried again.
      expect(
        await waitFor('the trickle to be abandoned', () => lastError(streams['/trickle']!), 10_000),
      ).toMatch(/within 400 ms/);
      await waitFor('a retry', () => (hits['/trickle'] ?? 0) >= 2, 10_000);
      // The flood is read only up to its limit: its 400 is judged on what came, the SET dead-lettered.
      const flood = await waitFor(
        'the flooded SET to be dead-lettered',
        async () => {
          const r = await db.query<{ state: string; last_error: string | null }>(
            "SELECT state, last_error FROM ssf_outbox WHERE stream_id = $1 AND state = 'failed'",
            [streams['/flood']!],
          );
          return r.rows[0];
        },
        10_000,
      );
      expect(flood.last_error).toMatch(/^HTTP 400/);
      // A redirect is a failure to retry, not a new destination.
      expect(await waitFor('the redirect to fail', () => lastError(streams['/redirect']!), 10_000)).toMatch(
        /HTTP 307/,
      );
      expect(hits['/target']).toBeUndefined();
    } finally {
      for (const id of Object.values(streams)) await d.deleteStream(id);
      for (const res of open) res.destroy();
      server.closeAllConnections();
      server.close();
    }
  });
});

describe('a stream changed while a batch is being pushed', () => {
  it('stops pushing soon after it is disabled, deleted or given a new endpoint; the rest stays pending or goes', async () => {
    const d = managers.d!;
    const arrived: Record<string, number> = {};
    let onFirst: ((path: string) => Promise<unknown>) | undefined;
    const server = http.createServer(async (req, res) => {
      const path = new URL(req.url ?? '/', 'http://x').pathname;
      arrived[path] = (arrived[path] ?? 0) + 1;
      req.resume();
      // The first SET is answered only once the change is made: however slow the machine, at most
      // the pushes of one recheck interval (250 ms, 2 × 150 ms) follow it.
      if (arrived[path] === 1) await onFirst?.(path);
      // A slow receiver: one SET about one customer after the other, 150 ms each.
      setTimeout(() => res.writeHead(202).end(), 150);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const base = `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`;
    const ids: Record<string, string> = {};
    try {
      for (const path of ['/disable', '/delete', '/moved'])
        ids[path] = await create(d, { delivery: { method: PUSH, endpoint_url: `${base}${path}` } });
      const changes: Promise<Reply>[] = [];
      onFirst = (path) => {
        const id = ids[path];
        if (!id) return Promise.resolve(); // /moved-here
        const change =
          path === '/disable'
            ? d.setStatus(id, 'disabled')
            : path === '/delete'
              ? d.deleteStream(id)
              : d.call('PATCH', url('stream'), {
                  stream_id: id,
                  delivery: { method: PUSH, endpoint_url: `${base}/moved-here` },
                });
        changes.push(change);
        return change;
      };
      const customerId = await linkedCustomer('d');
      await db.transaction(async (tx) => {
        for (let i = 0; i < 12; i++)
          await emitSecurityEvent(tx, {
            type: 'credential-change',
            credentialType: 'fido2-platform',
            changeType: 'create',
            customerId,
          });
      });
      await waitFor('the three changes', () => changes.length === 3, 10_000);
      for (const r of await Promise.all(changes)) expect(r.status, r.text).toBeLessThan(300);
      const pendingOf = (id: string) =>
        db
          .query<{ n: number }>(
            "SELECT count(*)::int AS n FROM ssf_outbox WHERE stream_id = $1 AND state = 'pending'",
            [id],
          )
          .then((r) => r.rows[0]!.n);
      await waitFor(
        'the moved stream to deliver all',
        async () => (await pendingOf(ids['/moved']!)) === 0,
        15_000,
      );
      // Each change is seen at the next recheck, not after all 12.
      for (const path of ['/disable', '/delete', '/moved'])
        expect(arrived[path], path).toBeLessThanOrEqual(3);
      // Disabling drops what was pending (SSF 1.0 §8.1.2).
      expect(await pendingOf(ids['/disable']!)).toBe(0);
      expect((arrived['/moved'] ?? 0) + (arrived['/moved-here'] ?? 0)).toBeGreaterThanOrEqual(12);
    } finally {
      for (const id of [ids['/disable'], ids['/moved']]) if (id) await d.deleteStream(id);
      server.closeAllConnections();
      server.close();
    }
  });
});

describe('stream changes racing a delete', () => {
  /**
   * Deletes the stream (without waiting) right after the request's first statement naming it has
   * answered: a receiver's DELETE landing between the lookup and the change.
   */
  function deleteAfterLookup(streamId: string): { deleted: () => Promise<unknown>; restore: () => void } {
    const direct = db.query;
    let deletion: Promise<unknown> | undefined;
    const restore = afterEachQuery((_sql, params) => {
      if (deletion || !params?.includes(streamId)) return;
      deletion = direct.call(db, 'DELETE FROM ssf_streams WHERE stream_id = $1', [streamId]);
    });
    return { deleted: () => deletion ?? Promise.resolve(), restore };
  }

  it('an update, a subject change or a verification answers 200/204 or 404, never 500, and leaves no row behind', async () => {
    const e = managers.e!;
    const calls: [string, (id: string) => Promise<Reply>][] = [
      ['update', (id) => e.call('PATCH', url('stream'), { stream_id: id, description: 'changed' })],
      [
        'add subject',
        (id) =>
          e.call('POST', url('subjects/add'), { stream_id: id, subject: { format: 'opaque', id: 'x' } }),
      ],
      ['verify', (id) => e.call('POST', url('verify'), { stream_id: id, state: 'v' })],
    ];
    for (const [what, call] of calls) {
      const id = await create(e, { delivery: { method: POLL } });
      const race = deleteAfterLookup(id);
      let r: Reply;
      try {
        r = await call(id);
        await race.deleted();
      } finally {
        race.restore();
      }
      expect([200, 204, 404], `${what}: ${r.status} ${r.text}`).toContain(r.status);
      expect((await e.readStream(id)).status, what).toBe(404);
      const left = await db.query<{ n: number }>(
        `SELECT (SELECT count(*) FROM ssf_stream_subjects WHERE stream_id = $1)::int
              + (SELECT count(*) FROM ssf_outbox WHERE stream_id = $1)::int AS n`,
        [id],
      );
      expect(left.rows[0]!.n, what).toBe(0);
    }
  });
});

describe('long polling (RFC 8936)', () => {
  it('a waiting poll looks at the outbox about once a second (longPollRecheckMs), not in a loop', async () => {
    const e = managers.e!;
    const streamId = await create(e, { delivery: { method: POLL } });
    const customerId = await linkedCustomer('e');
    let looks = 0;
    const restore = afterEachQuery((sql) => {
      if (sql.includes('SET served_until = now() + make_interval')) looks++;
    });
    try {
      const polled = e.call('POST', url(`poll/${streamId}`), { returnImmediately: false });
      await new Promise((r) => setTimeout(r, 2200));
      const lookedWhileWaiting = looks;
      await emit(customerId);
      const r = await polled;
      expect(r.status, r.text).toBe(200);
      expect(Object.keys((r.body as { sets: object }).sets)).toHaveLength(1);
      // 2.2 s of waiting: the first look and one a second (the 100 ms loop before made 22).
      expect(lookedWhileWaiting).toBeGreaterThanOrEqual(1);
      expect(lookedWhileWaiting).toBeLessThanOrEqual(4);
    } finally {
      restore();
      await e.deleteStream(streamId);
    }
  });

  it('an event wakes a waiting poll at once, not at its next look', async () => {
    const e = managers.e!;
    const streamId = await create(e, { delivery: { method: POLL } });
    const customerId = await linkedCustomer('e');
    const signals = t.hub.signals.context.signals;
    const recheck = signals.longPollRecheckMs;
    // No look of its own within the poll's 30 s: only the fan-out's wake can answer it early.
    signals.longPollRecheckMs = 60_000;
    try {
      const started = Date.now();
      const polled = e.call('POST', url(`poll/${streamId}`), { returnImmediately: false });
      await waitFor('the poll to wait', () => t.hub.signals.context.longPolls.waiting === 1, 10_000);
      await emit(customerId);
      const r = await polled;
      expect(r.status, r.text).toBe(200);
      expect(Object.keys((r.body as { sets: object }).sets)).toHaveLength(1);
      expect(Date.now() - started).toBeLessThan(15_000);
    } finally {
      signals.longPollRecheckMs = recheck;
      await e.deleteStream(streamId);
    }
  });

  it('waiting polls are bounded per receiver and per node (429 with Retry-After); a client that goes frees its place at once', async () => {
    const e = managers.e!;
    const a = managers.a!;
    const b = managers.b!;
    const eStream = await create(e, { delivery: { method: POLL } });
    const aStream = await create(a, { delivery: { method: POLL } });
    const bStream = await create(b, { delivery: { method: POLL } });
    const waiting: AbortController[] = [];
    const longPoll = (m: SsfManager, id: string) => {
      const abort = new AbortController();
      waiting.push(abort);
      const target = url(`poll/${id}`);
      return t
        .fetch(target, {
          method: 'POST',
          signal: abort.signal,
          headers: { 'content-type': 'application/json', ...m.auth('POST', target, m.token) },
          body: JSON.stringify({ returnImmediately: false }),
        })
        .then(async (res) => ({
          status: res.status,
          retryAfter: res.headers.get('retry-after'),
          body: await res.text(),
        }))
        .catch(() => ({ status: 0, retryAfter: null, body: 'aborted' }));
    };
    const settled = (p: Promise<unknown>, ms: number) =>
      Promise.race([p.then(() => true), new Promise((r) => setTimeout(() => r(false), ms))]);
    const waitingCount = () => t.hub.signals.context.longPolls.waiting;
    try {
      const e1 = longPoll(e, eStream);
      const e2 = longPoll(e, eStream);
      await waitFor('2 waiting polls', () => waitingCount() === 2, 5000);
      // A third from the same receiver is refused at once.
      const e3 = await longPoll(e, eStream);
      expect(e3.status, e3.body).toBe(429);
      expect(e3.retryAfter).toBe('1');
      expect(JSON.parse(e3.body).error).toBe('slow_down');
      // Another receiver still gets its place; the node's third place is then the last.
      const a1 = longPoll(a, aStream);
      await waitFor('3 waiting polls', () => waitingCount() === 3, 5000);
      const b1 = await longPoll(b, bStream);
      expect(b1.status, b1.body).toBe(429);
      // A short poll is never refused for it.
      expect((await b.call('POST', url(`poll/${bStream}`), { returnImmediately: true })).status).toBe(200);
      expect(await settled(Promise.all([e1, e2, a1]), 200)).toBe(false);
      // The two waiting polls of e go away: their places are free at once, not after longPollSeconds.
      waiting[0]!.abort();
      waiting[1]!.abort();
      // (longPollSeconds is 30: only the client going explains a place freed within seconds.)
      await waitFor('1 waiting polls', () => waitingCount() === 1, 5000);
      const again = longPoll(e, eStream);
      await waitFor('2 waiting polls', () => waitingCount() === 2, 5000);
      waiting.at(-1)!.abort();
      await again;
    } finally {
      for (const w of waiting) w.abort();
      await waitFor('0 waiting polls', () => waitingCount() === 0, 5000);
      await e.deleteStream(eStream);
      await a.deleteStream(aStream);
      await b.deleteStream(bStream);
    }
  });

  it('ack and setErrs touch only the polled stream’s SETs; unknown jtis and maxEvents out of range are handled', async () => {
    const e = managers.e!;
    const x = await create(e, { delivery: { method: POLL } });
    const y = await create(e, { delivery: { method: POLL } });
    await emit(await linkedCustomer('e'));
    const take = async (id: string) => {
      const r = await waitFor(
        'a SET to poll',
        async () => {
          const r = await e.call('POST', url(`poll/${id}`), { returnImmediately: true });
          return Object.keys((r.body as { sets: object }).sets).length ? r : undefined;
        },
        5000,
      );
      return Object.keys((r.body as { sets: Record<string, string> }).sets);
    };
    const [jx] = await take(x);
    const [jy] = await take(y);
    // y acknowledges x's jti and reports an error for it; and an unknown jti.
    const r = await e.call('POST', url(`poll/${y}`), {
      returnImmediately: true,
      maxEvents: 0,
      ack: [jx!, 'no-such-jti'],
      setErrs: { [jx!]: { err: 'invalid_request', description: 'not mine' } },
    });
    expect(r.status, r.text).toBe(200);
    const states = await db.query<{ jti: string; state: string }>(
      'SELECT jti, state FROM ssf_outbox WHERE jti = ANY ($1::text[]) ORDER BY jti',
      [[jx!, jy!]],
    );
    expect(states.rows.map((s) => s.state)).toEqual(['pending', 'pending']);
    oauthError(
      await e.call('POST', url(`poll/${y}`), { returnImmediately: true, maxEvents: 1001 }),
      400,
      'invalid_request',
    );
    oauthError(
      await e.call('POST', url(`poll/${y}`), { returnImmediately: true, maxEvents: -1 }),
      400,
      'invalid_request',
    );
    await e.deleteStream(x);
    await e.deleteStream(y);
  });
});
