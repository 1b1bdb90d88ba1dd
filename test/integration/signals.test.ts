/**
 * The signals module against a real database (PGlite, or TEST_DATABASE_URL), below HTTP: events
 * are atomic with their cause, fan-out and push claims are safe with several nodes, paused streams
 * hold a bounded number of SETs, undeliverable SETs end in the dead-letter view, subjects are
 * pairwise unless consented, and revoking a customer's sessions touches nobody else.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { decodeJwt, decodeProtectedHeader } from 'jose';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { ConfigError, type ConfigInput, loadConfig } from '../../src/config/index.ts';
import { createLogger } from '../../src/log.ts';
import { createSignalsContext, type SignalsContext } from '../../src/signals/context.ts';
import { claimStreams } from '../../src/signals/delivery.ts';
import { fanOutBatch } from '../../src/signals/fanout.ts';
import {
  changeStreamStatus,
  emitSecurityEvent,
  linkCustomer,
  listDeadLetters,
  requeueDeadLetters,
  revokeCustomerSessions,
  withdrawSharedSubject,
} from '../../src/signals/index.ts';
import { loadSsfKeys } from '../../src/signals/keys.ts';
import {
  activityResolutionSeconds,
  createStream,
  findStream,
  listStreams,
  streamJson,
} from '../../src/signals/streams.ts';
import { EVENT } from '../../src/signals/vocabulary.ts';
import { maintain } from '../../src/signals/worker.ts';
import { insertCustomer, type TestDb, testDb } from '../support/db.ts';

let t: TestDb;
let dir: string;
let ctx: SignalsContext;
let node2: SignalsContext;
const logger = createLogger('silent');

function config(signals: ConfigInput['signals']) {
  return loadConfig({
    env: {},
    configDir: path.join(dir, 'none'),
    overrides: { issuer: 'https://hub.example', dataDir: dir, signals },
  });
}

const SIGNALS = {
  pausedHoldMax: 3,
  push: { deadAfterSeconds: 60, allowLoopbackHttp: true },
  peers: [
    { id: 'bank', clientId: 'ssf-bank', audience: 'https://bank.example' },
    { id: 'pfm', clientId: 'ssf-pfm' },
  ],
};

const customer = () => insertCustomer(t.db);

async function stream(peerId: string, method: 'push' | 'poll' = 'push') {
  const peer = ctx.peers.byId.get(peerId)!;
  return createStream(ctx, t.db, peer, peer.clientId!, {
    delivery:
      method === 'push'
        ? { method: 'urn:ietf:rfc:8935', endpoint_url: 'http://127.0.0.1:9/events' }
        : { method: 'urn:ietf:rfc:8936' },
  });
}

const outbox = async (streamId: string) =>
  (
    await t.db.query<{ set_jwt: string; state: string; control: boolean }>(
      'SELECT set_jwt, state, control FROM ssf_outbox WHERE stream_id = $1 ORDER BY event_id, id',
      [streamId],
    )
  ).rows;

async function drain(c = ctx) {
  while ((await fanOutBatch(c, 100)).events > 0);
}

beforeAll(async () => {
  t = await testDb();
  dir = mkdtempSync(path.join(tmpdir(), 'kakehashi-signals-'));
  const kek = randomBytes(32);
  const keys = await loadSsfKeys(t.db, kek);
  ctx = createSignalsContext({ db: t.db, config: config(SIGNALS), keys, kek, logger });
  // A second node on the same database: same keys (loaded, not generated again), another node id.
  node2 = createSignalsContext({
    db: t.db,
    config: config(SIGNALS),
    keys: await loadSsfKeys(t.db, kek),
    kek,
    logger,
  });
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

describe('keys', () => {
  it('generates one RS256 (2048-bit) and one ES256 SET key and an ES256 client key, once per database', async () => {
    const again = await loadSsfKeys(t.db, Buffer.from(ctx.kek));
    expect(again.set.RS256.kid).toBe(ctx.keys.set.RS256.kid);
    expect(ctx.keys.set.RS256.key.asymmetricKeyDetails?.modulusLength).toBe(2048);
    expect(ctx.keys.setJwks.keys.map((k) => k.alg).sort()).toEqual(['ES256', 'RS256']);
    expect(ctx.keys.clientJwks.keys.map((k) => k.kid)).toEqual([ctx.keys.client.kid]);
    const n = await t.db.query<{ n: number }>('SELECT count(*)::int AS n FROM ssf_keys');
    expect(n.rows[0]!.n).toBe(3);
    const stored = await t.db.query<{ private_jwk_enc: string }>('SELECT private_jwk_enc FROM ssf_keys');
    for (const r of stored.rows) expect(r.private_jwk_enc).not.toContain('"d"');
  });
});

describe('emitting', () => {
  it('an event emitted in a transaction that rolls back never exists', async () => {
    const c = await customer();
    await linkCustomer(t.db, { peerId: 'bank', customerId: c });
    const s = await stream('bank');
    await expect(
      t.db.transaction(async (tx) => {
        await emitSecurityEvent(tx, { type: 'recovery-activated', customerId: c });
        throw new Error('the cause failed');
      }),
    ).rejects.toThrow('the cause failed');
    await drain();
    expect(await outbox(s.stream_id)).toEqual([]);
  });

  it('goes only to streams of peers linked to the customer, one SET per stream, pairwise per peer', async () => {
    const c = await customer();
    const stranger = await customer();
    await linkCustomer(t.db, { peerId: 'bank', customerId: c });
    await linkCustomer(t.db, { peerId: 'pfm', customerId: c });
    const bank = await stream('bank');
    const pfm = await stream('pfm', 'poll');
    const { txn } = await emitSecurityEvent(t.db, {
      type: 'account-disabled',
      reason: 'hijacking',
      customerId: c,
    });
    await emitSecurityEvent(t.db, { type: 'account-disabled', reason: 'hijacking', customerId: stranger });
    await drain();
    const [a] = await outbox(bank.stream_id);
    const [b] = await outbox(pfm.stream_id);
    expect((await outbox(bank.stream_id)).length).toBe(1);
    const ca = decodeJwt(a!.set_jwt);
    const cb = decodeJwt(b!.set_jwt);
    expect(decodeProtectedHeader(a!.set_jwt)).toEqual({
      typ: 'secevent+jwt',
      alg: 'RS256',
      kid: ctx.keys.set.RS256.kid,
    });
    expect(ca).toMatchObject({ iss: 'https://hub.example', aud: 'https://bank.example', txn });
    expect(ca.events).toEqual({
      'https://schemas.openid.net/secevent/risc/event-type/account-disabled': { reason: 'hijacking' },
    });
    expect(ca.sub).toBeUndefined();
    expect(ca.exp).toBeUndefined();
    const sa = ca.sub_id as Record<string, string>;
    const sb = cb.sub_id as Record<string, string>;
    expect(sa.format).toBe('iss_sub');
    expect(sa.sub).not.toBe(sb.sub);
    expect(JSON.stringify([sa, sb])).not.toContain(c);
  });

  it('uses the identifier the customer consented to share, and the pairwise one again after withdrawal', async () => {
    const c = await customer();
    const s = await stream('bank');
    await linkCustomer(t.db, {
      peerId: 'bank',
      customerId: c,
      sharedSubject: { subject: { format: 'email', email: 'taro@example.jp' }, consentRef: 'consent-1' },
    });
    await emitSecurityEvent(t.db, { type: 'recovery-activated', customerId: c });
    await drain();
    await withdrawSharedSubject(t.db, 'bank', c);
    await emitSecurityEvent(t.db, { type: 'recovery-activated', customerId: c });
    await drain();
    const [consented, withdrawn] = (await outbox(s.stream_id)).map(
      (r) => decodeJwt(r.set_jwt).sub_id as Record<string, string>,
    );
    expect(consented).toEqual({ format: 'email', email: 'taro@example.jp' });
    expect(withdrawn!.format).toBe('iss_sub');
  });

  it('identifier-changed goes only where that identifier was shared, naming the old value', async () => {
    const c = await customer();
    const bank = await stream('bank');
    const pfm = await stream('pfm');
    await linkCustomer(t.db, {
      peerId: 'bank',
      customerId: c,
      sharedSubject: { subject: { format: 'email', email: 'old@example.jp' }, consentRef: 'consent-2' },
    });
    await linkCustomer(t.db, { peerId: 'pfm', customerId: c });
    await emitSecurityEvent(t.db, {
      type: 'identifier-changed',
      customerId: c,
      format: 'email',
      oldValue: 'old@example.jp',
      newValue: 'new@example.jp',
    });
    await drain();
    expect(await outbox(pfm.stream_id)).toEqual([]);
    const [set] = await outbox(bank.stream_id);
    const claims = decodeJwt(set!.set_jwt);
    expect(claims.sub_id).toEqual({ format: 'email', email: 'old@example.jp' });
    expect(Object.values(claims.events as object)[0]).toEqual({ 'new-value': 'new@example.jp' });
  });
});

describe('several nodes', () => {
  it('two nodes fanning out at once produce each SET exactly once', async () => {
    const c = await customer();
    await linkCustomer(t.db, { peerId: 'bank', customerId: c });
    const s = await stream('bank');
    for (let i = 0; i < 60; i++) await emitSecurityEvent(t.db, { type: 'recovery-activated', customerId: c });
    const results = await Promise.all([
      fanOutBatch(ctx, 7),
      fanOutBatch(node2, 7),
      fanOutBatch(ctx, 7),
      fanOutBatch(node2, 7),
    ]);
    expect(results.reduce((n, r) => n + r.events, 0)).toBe(28);
    await Promise.all([drain(ctx), drain(node2)]);
    const rows = await t.db.query<{ n: number; d: number }>(
      'SELECT count(*)::int AS n, count(DISTINCT event_id)::int AS d FROM ssf_outbox WHERE stream_id = $1',
      [s.stream_id],
    );
    expect(rows.rows[0]).toEqual({ n: 60, d: 60 });
  });

  it('a stream is leased to one node at a time; another node gets it only after the lease ran out', async () => {
    const c = await customer();
    await linkCustomer(t.db, { peerId: 'bank', customerId: c });
    const s = await stream('bank');
    await emitSecurityEvent(t.db, { type: 'recovery-activated', customerId: c });
    await drain();
    const [mine, theirs] = await Promise.all([claimStreams(ctx, 10), claimStreams(node2, 10)]);
    expect([...mine, ...theirs].map((x) => x.stream_id)).toEqual([s.stream_id]);
    // The holder dies without releasing it: the lease expires, then the other node may take it.
    await t.db.query(
      "UPDATE ssf_streams SET lease_until = now() - interval '1 second' WHERE stream_id = $1",
      [s.stream_id],
    );
    const winner = mine.length ? node2 : ctx;
    expect((await claimStreams(winner, 10)).map((x) => x.stream_id)).toEqual([s.stream_id]);
  });
});

describe('holding and dead letters', () => {
  it('a paused stream holds at most pausedHoldMax SETs, the newest, and says so in the audit log', async () => {
    const c = await customer();
    await linkCustomer(t.db, { peerId: 'bank', customerId: c });
    const s = await stream('bank');
    await changeStreamStatus(t.db, s.stream_id, 'paused', 'maintenance', 'operator:test');
    const txns: string[] = [];
    for (let i = 0; i < 5; i++)
      txns.push((await emitSecurityEvent(t.db, { type: 'recovery-activated', customerId: c })).txn);
    await drain();
    await maintain(ctx);
    const held = (await outbox(s.stream_id)).filter((r) => !r.control).map((r) => decodeJwt(r.set_jwt).txn);
    expect(held).toEqual(txns.slice(2));
    const control = (await outbox(s.stream_id)).filter((r) => r.control);
    expect(control).toHaveLength(1);
    const audit = await t.db.query<{ data: { dropped: number } }>(
      "SELECT data FROM audit_events WHERE type = 'ssf.stream.held_dropped' AND data->>'streamId' = $1",
      [s.stream_id],
    );
    expect(audit.rows[0]!.data.dropped).toBe(2);
  });

  it('a SET undeliverable for deadAfterSeconds goes to the dead-letter view and can be requeued', async () => {
    const c = await customer();
    await linkCustomer(t.db, { peerId: 'bank', customerId: c });
    const s = await stream('bank');
    await emitSecurityEvent(t.db, { type: 'recovery-activated', customerId: c });
    await drain();
    await t.db.query("UPDATE ssf_outbox SET created_at = now() - interval '2 minutes' WHERE stream_id = $1", [
      s.stream_id,
    ]);
    await maintain(ctx);
    const dead = await listDeadLetters(t.db, { streamId: s.stream_id });
    expect(dead).toHaveLength(1);
    expect(dead[0]!.lastError).toMatch(/undeliverable/);
    expect(await requeueDeadLetters(t.db, s.stream_id, 'operator:test')).toBe(1);
    expect((await outbox(s.stream_id))[0]!.state).toBe('pending');
  });
});

describe('inactivity_timeout (SSF 1.0 §8.1.1)', () => {
  /** This node with another `signals.inactivityTimeoutSeconds`. */
  const withInactivityTimeout = (seconds: number) =>
    createSignalsContext({
      db: t.db,
      config: config({ ...SIGNALS, inactivityTimeoutSeconds: seconds }),
      keys: ctx.keys,
      kek: ctx.kek,
      logger,
    });

  it('is advertised; a stream idle that long is paused and told so, while receiver activity restarts the counter', async () => {
    const short = withInactivityTimeout(1);
    const idle = await stream('bank');
    const active = await stream('pfm');
    expect(streamJson(short, idle).inactivity_timeout).toBe(1);
    expect(streamJson(ctx, idle).inactivity_timeout).toBe(30 * 24 * 3600);
    await new Promise((r) => setTimeout(r, 1200));
    // The pfm receiver reads its stream (a management call naming it): its counter starts over.
    expect(await findStream(short, 'ssf-pfm', active.stream_id)).toBeDefined();
    await maintain(short);
    const status = await t.db.query<{ stream_id: string; status: string; status_reason: string | null }>(
      'SELECT stream_id, status, status_reason FROM ssf_streams ORDER BY stream_id',
    );
    expect(Object.fromEntries(status.rows.map((r) => [r.stream_id, [r.status, r.status_reason]]))).toEqual({
      [idle.stream_id]: ['paused', 'inactivity_timeout'],
      [active.stream_id]: ['enabled', null],
    });
    // The receiver is told with stream-updated (sent although the stream is paused); audited.
    await drain(short);
    const control = (await outbox(idle.stream_id)).filter((r) => r.control);
    expect(control).toHaveLength(1);
    expect(
      (decodeJwt(control[0]!.set_jwt).events as Record<string, { status: string; reason: string }>)[
        EVENT.streamUpdated
      ],
    ).toEqual({
      status: 'paused',
      reason: 'inactivity_timeout',
    });
    const audit = await t.db.query<{ actor: string; data: { to: string; reason: string } }>(
      "SELECT actor, data FROM audit_events WHERE type = 'ssf.stream.status' AND data->>'streamId' = $1",
      [idle.stream_id],
    );
    expect(audit.rows).toEqual([
      { actor: 'system', data: expect.objectContaining({ to: 'paused', reason: 'inactivity_timeout' }) },
    ]);
    // Once paused it stays as it is (the receiver re-enables it), with no second stream-updated.
    await maintain(short);
    await drain(short);
    expect((await outbox(idle.stream_id)).filter((r) => r.control)).toHaveLength(1);
  });

  it('records receiver activity only once the recorded one is stale, and never pauses a receiver active within the timeout', async () => {
    const s = await stream('pfm');
    const idleFor = (seconds: number) =>
      t.db.query(
        'UPDATE ssf_streams SET last_activity_at = now() - make_interval(secs => $2::double precision) WHERE stream_id = $1',
        [s.stream_id, seconds],
      );
    const recordedAgo = async () =>
      (
        await t.db.query<{ ago: number }>(
          'SELECT extract(epoch FROM now() - last_activity_at)::float8 AS ago FROM ssf_streams WHERE stream_id = $1',
          [s.stream_id],
        )
      ).rows[0]!.ago;
    // The default timeout (30 days): activity is written at most once a minute.
    expect(activityResolutionSeconds(ctx.signals)).toBe(60);
    await idleFor(30);
    expect(await findStream(ctx, 'ssf-pfm', s.stream_id)).toMatchObject({
      stream_id: s.stream_id,
      status: 'enabled',
    });
    expect((await listStreams(ctx, 'ssf-pfm')).map((r) => r.stream_id)).toEqual([s.stream_id]);
    expect(await recordedAgo()).toBeGreaterThanOrEqual(30);
    // Older than that: the next call, a read of the stream or of the list, records it.
    for (const call of [() => findStream(ctx, 'ssf-pfm', s.stream_id), () => listStreams(ctx, 'ssf-pfm')]) {
      await idleFor(61);
      await call();
      expect(await recordedAgo()).toBeLessThan(5);
    }
    // Another receiver's calls are no activity on this stream.
    await idleFor(61);
    expect(await findStream(ctx, 'ssf-bank', s.stream_id)).toBeUndefined();
    await listStreams(ctx, 'ssf-bank');
    expect(await recordedAgo()).toBeGreaterThanOrEqual(61);

    // A 10 s timeout: activity written at a 1 s resolution, so a stream recorded 10.5 s ago may have
    // been used 9.5 s ago and stays enabled; recorded 11.5 s ago it is idle beyond doubt and paused.
    const tenSeconds = withInactivityTimeout(10);
    expect(activityResolutionSeconds(tenSeconds.signals)).toBe(1);
    const status = async () =>
      (
        await t.db.query<{ status: string }>('SELECT status FROM ssf_streams WHERE stream_id = $1', [
          s.stream_id,
        ])
      ).rows[0]!.status;
    await idleFor(10.5);
    await maintain(tenSeconds);
    expect(await status()).toBe('enabled');
    await idleFor(11.5);
    await maintain(tenSeconds);
    expect(await status()).toBe('paused');
  });
});

describe('revoking a customer', () => {
  it("removes that customer's sessions, grants and grant-bound tokens, and nothing of anyone else", async () => {
    const insert = (model: string, id: string, payload: Record<string, unknown>, grantId?: string) =>
      t.db.query('INSERT INTO oidc_payloads (model, id, payload, grant_id) VALUES ($1, $2, $3::jsonb, $4)', [
        model,
        id,
        JSON.stringify(payload),
        grantId ?? null,
      ]);
    for (const who of ['alice', 'bob']) {
      await insert('Session', `s-${who}`, { accountId: who });
      await insert('Grant', `g-${who}`, { accountId: who, clientId: 'pfm' });
      await insert('AccessToken', `at-${who}`, { accountId: who, grantId: `g-${who}` }, `g-${who}`);
      await insert('RefreshToken', `rt-${who}`, { accountId: who, grantId: `g-${who}` }, `g-${who}`);
    }
    await insert('ClientCredentials', 'cc', { clientId: 'ssf-bank' });
    const revoked = await revokeCustomerSessions(t.db, 'alice', {
      actor: 'operator:test',
      reason: 'takeover',
    });
    expect(revoked).toEqual({ sessions: 1, grants: 1, tokens: 2 });
    const left = await t.db.query<{ id: string }>(
      "SELECT id FROM oidc_payloads WHERE id IN ('s-alice','g-alice','at-alice','rt-alice','s-bob','g-bob','at-bob','rt-bob','cc') ORDER BY id",
    );
    expect(left.rows.map((r) => r.id)).toEqual(['at-bob', 'cc', 'g-bob', 'rt-bob', 's-bob']);
    expect(await revokeCustomerSessions(t.db, 'alice', { actor: 'operator:test', reason: 'again' })).toEqual({
      sessions: 0,
      grants: 0,
      tokens: 0,
    });
  });
});

describe('configuration', () => {
  it('refuses two peers with one id, client or issuer', () => {
    expect(() =>
      config({
        peers: [
          { id: 'a', clientId: 'x' },
          { id: 'b', clientId: 'x' },
        ],
      }),
    ).toThrow(ConfigError);
    expect(() => config({ peers: [{ id: 'a' }, { id: 'a' }] })).toThrow(/duplicate id/);
    expect(() => config({ peers: [{ id: 'a', issuer: 'http://insecure.example' }] })).toThrow(ConfigError);
  });
});
