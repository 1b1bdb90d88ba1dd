/**
 * Callers without a credential cannot flood the audit log (docs/audit-sampling.md): per event type
 * and source network the first 5 refusals a minute are written, the rest are counted into one
 * `<type>.suppressed` row. Another source still gets its own first 5; a caller who presented a live
 * credential (an SSF access token, the push secret) is written every time.
 *
 * Sources are told apart over real connections: undici agents bound to other loopback addresses
 * (127.0.0.2, 127.0.0.3) reach the hub listening on 127.0.0.1.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { Agent, fetch as undiciFetch } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { newPeerClientKey, SsfManager } from '../../conformance/ssf/lib/manager.ts';
import { encryptAtRest } from '../../src/keys/index.ts';
import { registerPeerClient } from '../../src/signals/index.ts';
import { sha256 } from '../../src/signals/receiver.ts';
import { startTestHub, type TestHub } from '../support/hub.ts';

const PUSH_AUTH = `Bearer ${randomUUID()}`;
const LIMIT = 5;
let t: TestHub;
const agents: Agent[] = [];

beforeAll(async () => {
  t = await startTestHub(({ issuer, caPath }) => ({
    signals: { peers: [{ id: 'peer', issuer, caFile: caPath, clientId: 'ssf-peer' }] },
  }));
  await t.hub.db.query(
    `INSERT INTO ssf_subscriptions (peer_id, stream_id, delivery_method, push_auth_hash, poll_endpoint)
     VALUES ('peer', 'stream-at-peer', 'urn:ietf:rfc:8935', $1, NULL)`,
    [sha256(PUSH_AUTH).toString('hex')],
  );
});

afterAll(async () => {
  await Promise.all(agents.map((a) => a.close()));
  await t?.close();
});

/** fetch over connections from `address` (the hub sees it as the client's IP). */
function from(address: string): typeof globalThis.fetch {
  const agent = new Agent({ localAddress: address, connect: { ca: t.caPem } });
  agents.push(agent);
  return ((url: string | URL, init?: RequestInit) =>
    undiciFetch(url, { ...(init as object), dispatcher: agent })) as unknown as typeof globalThis.fetch;
}

interface Row {
  type: string;
  actor: string | null;
  client_id: string | null;
  data: Record<string, unknown>;
}

const rows = async (type: string, ip: string) =>
  (
    await t.hub.db.query<Row>(
      `SELECT type, actor, client_id, data FROM audit_events
       WHERE (type = $1 OR type = $1 || '.suppressed') AND ip = $2 ORDER BY id`,
      [type, ip],
    )
  ).rows;

/** Sends `n` requests, a few at a time, and returns their statuses. */
async function flood(n: number, send: () => Promise<Response>): Promise<number[]> {
  const statuses: number[] = [];
  for (let i = 0; i < n; i += 10) {
    const batch = await Promise.all(
      Array.from({ length: Math.min(10, n - i) }, async () => {
        const res = await send();
        await res.arrayBuffer();
        return res.status;
      }),
    );
    statuses.push(...batch);
  }
  return statuses;
}

/** kakehashi_security_events_total for a type (failures), from /metrics (loopback only). */
async function securityEventsCounted(type: string): Promise<number> {
  const text = await (await t.fetch(`${t.issuer}/metrics`)).text();
  const line = text
    .split('\n')
    .find((l) => l.startsWith(`kakehashi_security_events_total{type="${type}",outcome="failure"}`));
  return line ? Number(line.split(' ').at(-1)) : 0;
}

/** What a node writes when a window ends (or when it stops): every pending summary, now. */
const endWindows = () => t.hub.auditSampling.flush({ all: true });

describe('anonymous refusals at /ssf/*', () => {
  it('200 anonymous management requests from one source write 5 rows and one summary of the 195 dropped', async () => {
    const countedBefore = await securityEventsCounted('ssf.management.rejected');
    const attacker = from('127.0.0.2');
    const statuses = await flood(200, () =>
      attacker(`${t.issuer}/ssf/stream`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: '{}',
      }),
    );
    expect(statuses.every((s) => s === 401)).toBe(true);
    const written = await rows('ssf.management.rejected', '127.0.0.2');
    expect(written).toHaveLength(LIMIT);
    expect(written.every((r) => r.type === 'ssf.management.rejected' && r.actor === null)).toBe(true);

    // Meanwhile another source is not silenced by the first one's flood.
    const other = from('127.0.0.3');
    expect(await flood(8, () => other(`${t.issuer}/ssf/status?stream_id=x`))).toEqual(Array(8).fill(401));
    expect(await rows('ssf.management.rejected', '127.0.0.3')).toHaveLength(LIMIT);

    await endWindows();
    const flooded = await rows('ssf.management.rejected', '127.0.0.2');
    expect(flooded).toHaveLength(LIMIT + 1);
    expect(flooded[LIMIT]).toMatchObject({
      type: 'ssf.management.rejected.suppressed',
      data: {
        source: '127.0.0.2',
        suppressed: 200 - LIMIT,
        written: LIMIT,
        windowSeconds: 60,
        sample: { path: '/ssf/stream', method: 'POST', error: 'invalid_token' },
      },
    });
    const second = await rows('ssf.management.rejected', '127.0.0.3');
    expect(second.at(-1)).toMatchObject({ data: { source: '127.0.0.3', suppressed: 3 } });
    // The metrics still count every refusal, written or not.
    expect((await securityEventsCounted('ssf.management.rejected')) - countedBefore).toBe(208);
  });

  it('a peer with a live token is recorded every time, by name, even from a flooded source', async () => {
    const key = newPeerClientKey('ssf-peer');
    await registerPeerClient(t.hub.db, { clientId: 'ssf-peer', jwks: { keys: [key.publicJwk] } });
    const fetch = from('127.0.0.4');
    const peer = new SsfManager({ issuer: t.issuer, fetch }, key);
    // A token for reading only: creating a stream is refused with insufficient_scope (403).
    await peer.authorize('ssf.read');
    await flood(30, () =>
      fetch(`${t.issuer}/ssf/stream`, { method: 'POST', headers: { 'content-type': 'application/json' } }),
    );
    for (let i = 0; i < 20; i++) {
      const res = await peer.createStream({ delivery: { method: 'urn:ietf:rfc:8936' } });
      expect(res.status).toBe(403);
    }
    // A live token with a DPoP proof that does not verify: refused, and still named.
    for (let i = 0; i < 3; i++) {
      const res = await fetch(`${t.issuer}/ssf/stream`, {
        headers: { authorization: `DPoP ${peer.token!.value}`, dpop: 'not-a-proof' },
      });
      expect(res.status).toBe(401);
    }
    await endWindows();
    const all = await rows('ssf.management.rejected', '127.0.0.4');
    const named = all.filter((r) => r.client_id === 'ssf-peer');
    expect(named).toHaveLength(23);
    expect(named.every((r) => r.actor === 'client:ssf-peer' && r.type === 'ssf.management.rejected')).toBe(
      true,
    );
    expect(named.filter((r) => r.data.error === 'insufficient_scope')).toHaveLength(20);
    expect(named.filter((r) => r.data.error === 'invalid_dpop_proof')).toHaveLength(3);
    // The anonymous part of that source's traffic was sampled.
    const anonymous = all.filter((r) => r.client_id === null);
    expect(anonymous.map((r) => r.type)).toEqual([
      ...Array(LIMIT).fill('ssf.management.rejected'),
      'ssf.management.rejected.suppressed',
    ]);
    expect(anonymous.at(-1)!.data.suppressed).toBe(30 - LIMIT);
  });

  it('pushes with a wrong credential are sampled; pushes with the right one are always recorded', async () => {
    const fetch = from('127.0.0.5');
    const push = (authorization: string, body: string) =>
      fetch(`${t.issuer}/ssf/receive/peer`, {
        method: 'POST',
        headers: { 'content-type': 'application/secevent+jwt', authorization },
        body,
      });
    expect(await flood(100, () => push('Bearer guess', 'x.y.z'))).toEqual(Array(100).fill(401));
    expect(await flood(12, () => push(PUSH_AUTH, 'not a jws'))).toEqual(Array(12).fill(400));
    await endWindows();
    const all = await rows('ssf.set.rejected', '127.0.0.5');
    const unauthenticated = all.filter((r) => r.data.err === 'authentication_failed' || r.data.suppressed);
    expect(unauthenticated).toHaveLength(LIMIT + 1);
    expect(unauthenticated.at(-1)).toMatchObject({
      type: 'ssf.set.rejected.suppressed',
      data: { suppressed: 100 - LIMIT, sample: { err: 'authentication_failed', via: 'push' } },
    });
    const authenticated = all.filter((r) => r.data.err === 'invalid_request');
    expect(authenticated).toHaveLength(12);
    expect(authenticated.every((r) => r.type === 'ssf.set.rejected' && r.actor === 'peer:peer')).toBe(true);
  });
});

describe('anonymous refusals elsewhere', () => {
  it('the institution APIs and dynamic registration sample refusals of callers without a token', async () => {
    const fetch = from('127.0.0.6');
    const json = { 'content-type': 'application/json' };
    expect(
      await flood(40, () =>
        fetch(`${t.issuer}/api/institution/v1/batches`, { method: 'POST', headers: json, body: '{}' }),
      ),
    ).toEqual(Array(40).fill(401));
    expect(
      await flood(40, () =>
        fetch(`${t.issuer}/api/institution/v1/links/${randomUUID()}/suspend`, {
          method: 'POST',
          headers: { authorization: 'DPoP unknown-token' },
        }),
      ),
    ).toEqual(Array(40).fill(401));
    expect(
      await flood(40, () =>
        fetch(`${t.issuer}/reg`, {
          method: 'POST',
          headers: json,
          body: JSON.stringify({ redirect_uris: ['https://rp.example/cb'] }),
        }),
      ),
    ).toEqual(Array(40).fill(401));
    await endWindows();
    for (const type of ['api.ingest.refused', 'api.links.suspend.refused', 'client.registration.refused']) {
      const written = await rows(type, '127.0.0.6');
      expect(written.map((r) => r.type)).toEqual([...Array(LIMIT).fill(type), `${type}.suppressed`]);
      expect(written.at(-1)!.data.suppressed).toBe(40 - LIMIT);
    }
  });

  it('a relying-party key that does not open is recorded per source sampled, however often its JWKS is asked for', async () => {
    await t.hub.db.query(
      `INSERT INTO secrets (name, value_enc) VALUES ('federation.rp_signing_key', $1)
       ON CONFLICT (name) DO UPDATE SET value_enc = EXCLUDED.value_enc`,
      [encryptAtRest(randomBytes(32), '{}', 'federation.rp_signing_key')],
    );
    try {
      const fetch = from('127.0.0.7');
      expect(await flood(30, () => fetch(`${t.issuer}/federation/jwks.json`))).toEqual(Array(30).fill(503));
      await endWindows();
      const written = await rows('federation.rp_key.unavailable', '127.0.0.7');
      expect(written.map((r) => r.type)).toEqual([
        ...Array(LIMIT).fill('federation.rp_key.unavailable'),
        'federation.rp_key.unavailable.suppressed',
      ]);
      expect(written.at(-1)!.data.suppressed).toBe(30 - LIMIT);
    } finally {
      await t.hub.db.query("DELETE FROM secrets WHERE name = 'federation.rp_signing_key'");
    }
  });
});
