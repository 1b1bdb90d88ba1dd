/**
 * Post-login baselines shared by the nodes (src/risk/baselines.ts, migration 0039): two risk engines
 * — two nodes of the hub — over ONE database. A token's first network and user agent is the one the
 * first node to see it stored; every node compares with that, and a change raises the session's risk
 * once in the hub. The database is read once per token and node, not per request.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Db } from '../../src/db/index.ts';
import { createAdapterFactory } from '../../src/oidc/adapter.ts';
import {
  createRiskEngine,
  deleteExpiredRiskEvents,
  observeRequest,
  type RiskEngine,
  riskConfigSchema,
} from '../../src/risk/index.ts';
import { insertCustomer, type TestDb, testDb } from '../support/db.ts';

const config = riskConfigSchema.parse({
  geo: { countryFiles: ['test/fixtures/risk/country.csv'], asnFiles: ['test/fixtures/risk/asn.csv'] },
});
// The fixtures: 127.0.0.0/24 a Japanese broadband AS, 127.0.3.0/24 a German one.
const HOME = '127.0.0.5';
const HOME_TOO = '127.0.0.9';
const ABROAD = '127.0.3.20';

let t: TestDb;
let customerId: string;
beforeAll(async () => {
  t = await testDb();
  customerId = await insertCustomer(t.db);
});
afterAll(async () => t?.close());

/** A node: its own engine (its own memory) over the shared database. */
function node(db: () => Db = () => t.db): { engine: RiskEngine; see: See } {
  const engine = createRiskEngine(config);
  const see: See = async (jti, ip, userAgent = 'PFM/1') =>
    (
      await observeRequest(engine, db(), {
        trackingId: jti,
        sessionKey: `grant:${jti}`,
        customerId,
        clientId: 'pfm',
        ip,
        userAgent,
      })
    )?.reasons.map((r) => r.rule);
  return { engine, see };
}
type See = (jti: string, ip: string, userAgent?: string) => Promise<string[] | undefined>;

async function raised(jti: string) {
  const risk = await t.db.query<{ score: number; reasons: string[] }>(
    'SELECT score, reasons FROM session_risk WHERE session_key = $1',
    [`grant:${jti}`],
  );
  const events = await t.db.query<{ ip: string; country: string }>(
    "SELECT ip, country FROM risk_events WHERE kind = 'request' AND session_key = $1 ORDER BY id",
    [`grant:${jti}`],
  );
  return { risk: risk.rows, events: events.rows };
}

describe('post-login baselines shared by the nodes', () => {
  it('a token first seen by node A: node B seeing it from another network raises the risk', async () => {
    const a = node();
    const b = node();
    expect(await a.see('T1', HOME)).toBeUndefined();
    // Before: B took the thief's network as the token's first and raised nothing.
    expect(await b.see('T1', ABROAD)).toEqual(['session-network-changed']);
    expect(await raised('T1')).toEqual({
      risk: [{ score: 30, reasons: ['session-network-changed'] }],
      events: [{ ip: ABROAD, country: 'DE' }],
    });
  });

  it('node B seeing the token from the stored network raises nothing; a change raises once in the hub', async () => {
    const a = node();
    const b = node();
    expect(await a.see('T2', HOME)).toBeUndefined();
    expect(await b.see('T2', HOME_TOO)).toBeUndefined();
    expect(await raised('T2')).toEqual({ risk: [], events: [] });

    expect(await b.see('T2', ABROAD)).toEqual(['session-network-changed']);
    // The same change again on the same node, then on the other node: reported already.
    expect(await b.see('T2', ABROAD)).toBeUndefined();
    expect(await a.see('T2', ABROAD)).toBeUndefined();
    expect(await a.see('T2', ABROAD)).toBeUndefined();
    // A node started afresh (or that forgot the token) reads the same baseline and the same reports.
    const c = node();
    expect(await c.see('T2', ABROAD)).toBeUndefined();
    expect(await c.see('T2', HOME)).toBeUndefined();
    expect((await raised('T2')).risk).toEqual([{ score: 30, reasons: ['session-network-changed'] }]);

    // Another change — the client software — is another report, once, whichever node sees it.
    expect(await a.see('T2', ABROAD, 'curl/8')).toEqual(['session-user-agent-changed']);
    expect(await b.see('T2', HOME, 'curl/8')).toBeUndefined();
    expect(await raised('T2')).toMatchObject({
      risk: [{ score: 60, reasons: ['session-network-changed', 'session-user-agent-changed'] }],
      events: [{ ip: ABROAD }, { ip: ABROAD }],
    });
  });

  it('nodes meeting new tokens at once agree on one baseline each and raise once', async () => {
    const [a, b, c] = [node(), node(), node()];
    // Many tokens, so that on PostgreSQL claims do overlap (a claim then meets a row committed
    // after its snapshot, and reads it again).
    for (let i = 0; i < 20; i++) {
      const jti = `T3-${i}`;
      const seen = await Promise.all([a.see(jti, HOME), b.see(jti, ABROAD), c.see(jti, ABROAD)]);
      // Whichever claimed first is the baseline; the others saw one change, raised by one of them.
      expect(seen.filter(Boolean)).toEqual([['session-network-changed']]);
      expect((await raised(jti)).risk).toEqual([{ score: 30, reasons: ['session-network-changed'] }]);
      expect(await a.see(jti, ABROAD)).toBeUndefined();
      expect(await b.see(jti, HOME)).toBeUndefined();
    }
  });

  it('touches the database once per token and node while nothing changes', async () => {
    let statements = 0;
    const counting = Object.assign(Object.create(t.db) as Db, {
      query: (sql: string, params?: unknown[]) => {
        statements++;
        return t.db.query(sql, params);
      },
      transaction: <R>(fn: Parameters<Db['transaction']>[0]) => {
        statements++;
        return t.db.transaction(fn) as Promise<R>;
      },
    });
    const a = node(() => counting);
    const b = node(() => counting);
    expect(await a.see('T4', HOME)).toBeUndefined();
    expect(statements).toBe(1);
    for (let i = 0; i < 20; i++) expect(await a.see('T4', HOME_TOO)).toBeUndefined();
    expect(statements).toBe(1);
    for (let i = 0; i < 20; i++) expect(await b.see('T4', HOME)).toBeUndefined();
    expect(statements).toBe(2);
    // Most reads cost nothing at all: no promise to wait for.
    expect(
      observeRequest(a.engine, counting, {
        trackingId: 'T4',
        sessionKey: 'grant:T4',
        customerId,
        ip: HOME,
        userAgent: 'PFM/1',
      }),
    ).toBeUndefined();
  });

  it('a change whose record failed is reported by the next request', async () => {
    let fail = false;
    const flaky = Object.assign(Object.create(t.db) as Db, {
      transaction: <R>(fn: Parameters<Db['transaction']>[0]) =>
        fail ? Promise.reject(new Error('connection lost')) : (t.db.transaction(fn) as Promise<R>),
    });
    const a = node(() => flaky);
    expect(await a.see('T5', HOME)).toBeUndefined();
    fail = true;
    await expect(a.see('T5', ABROAD)).rejects.toThrow('connection lost');
    fail = false;
    expect(await a.see('T5', ABROAD)).toEqual(['session-network-changed']);
    expect((await raised('T5')).risk).toEqual([{ score: 30, reasons: ['session-network-changed'] }]);
  });

  it('the risk sweeper deletes baselines past the longest token or session lifetime, a batch at a time', async () => {
    const a = node();
    expect(await a.see('OLD1', HOME)).toBeUndefined();
    expect(await a.see('OLD1', ABROAD)).toEqual(['session-network-changed']);
    expect(await a.see('OLD2', HOME)).toBeUndefined();
    expect(await a.see('YOUNG', HOME)).toBeUndefined();
    await t.db.query(
      "UPDATE request_baselines SET created_at = now() - interval '9 hours' WHERE tracking_id LIKE 'OLD%'",
    );
    const rows = async () =>
      (
        await t.db.query<{ tracking_id: string; item: string }>(
          "SELECT tracking_id, item FROM request_baselines WHERE tracking_id IN ('OLD1', 'OLD2', 'YOUNG') ORDER BY 1, 2",
        )
      ).rows.map((r) => `${r.tracking_id} ${r.item}`);
    expect(await rows()).toEqual([
      'OLD1 baseline',
      `OLD1 net:127.0.3.0/24`,
      'OLD2 baseline',
      'YOUNG baseline',
    ]);
    // Within the retention (years) but past an 8 h lifetime: swept, two rows per run here.
    await deleteExpiredRiskEvents(t.db, config.retentionDays, { limit: 2, baselineMaxAgeSeconds: 8 * 3600 });
    expect(await rows()).toHaveLength(2);
    await deleteExpiredRiskEvents(t.db, config.retentionDays, { limit: 2, baselineMaxAgeSeconds: 8 * 3600 });
    expect(await rows()).toEqual(['YOUNG baseline']);
    // The retention bounds them too when it is the shorter (and without a lifetime given).
    await t.db.query(
      "UPDATE request_baselines SET created_at = now() - interval '2 days' WHERE tracking_id = 'YOUNG'",
    );
    await deleteExpiredRiskEvents(t.db, 1);
    expect(await rows()).toEqual([]);
  });

  it('keeps the baseline of a browser session still in use past the longest lifetime (short TTLs)', async () => {
    // A session lives `ttl` seconds from its last save; oidc-provider saves it again whenever it is used.
    const ttl = 3;
    const sessions = createAdapterFactory(t.db)('Session');
    const save = (id: string, uid: string) => sessions.upsert(id, { uid, accountId: customerId }, ttl);
    const seeSession = async (n: { engine: RiskEngine }, uid: string, ip: string) =>
      (
        await observeRequest(n.engine, t.db, {
          trackingId: `session:${uid}`,
          sessionKey: `session:${uid}`,
          customerId,
          ip,
          userAgent: 'Browser/1',
        })
      )?.reasons.map((r) => r.rule);
    const rows = async (uid: string) =>
      (
        await t.db.query<{ item: string }>(
          'SELECT item FROM request_baselines WHERE tracking_id = $1 ORDER BY item',
          [`session:${uid}`],
        )
      ).rows.map((r) => r.item);
    const sweep = (retentionDays = config.retentionDays) =>
      deleteExpiredRiskEvents(t.db, retentionDays, { baselineMaxAgeSeconds: ttl });
    const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

    await save('SID1', 'uid-1');
    expect(await seeSession(node(), 'uid-1', HOME)).toBeUndefined();
    // In use: saved again half-way, so it is live when its baseline is past the longest lifetime.
    await sleep(1600);
    await save('SID1', 'uid-1');
    await sleep(1600);
    await sweep();
    expect(await rows('uid-1')).toEqual(['baseline']);
    // A node that never saw the session compares with the stored first network (not its own request).
    expect(await seeSession(node(), 'uid-1', ABROAD)).toEqual(['session-network-changed']);
    // Once the session is over, the sweeper takes its baseline (the change reported just now goes
    // when it is itself past the lifetime).
    await sessions.destroy('SID1');
    await sweep();
    expect(await rows('uid-1')).toEqual(['net:127.0.3.0/24']);
    // A live session's rows still go with the retention.
    await save('SID2', 'uid-2');
    expect(await seeSession(node(), 'uid-2', HOME)).toBeUndefined();
    await t.db.query(
      "UPDATE request_baselines SET created_at = now() - interval '2 days' WHERE tracking_id = 'session:uid-2'",
    );
    await sweep(1);
    expect(await rows('uid-2')).toEqual([]);
  });

  it('drains a backlog in one sweep, batch after batch while each comes back full', async () => {
    const a = node();
    for (const id of ['D1', 'D2', 'D3', 'D4', 'D5']) expect(await a.see(id, HOME)).toBeUndefined();
    await t.db.query(
      "UPDATE request_baselines SET created_at = now() - interval '9 hours' WHERE tracking_id LIKE 'D_'",
    );
    const left = async () =>
      Number(
        (
          await t.db.query<{ n: number }>(
            "SELECT count(*)::int AS n FROM request_baselines WHERE tracking_id LIKE 'D_'",
          )
        ).rows[0]!.n,
      );
    // Two batches of two: four go, one is left for the next sweep.
    await deleteExpiredRiskEvents(t.db, config.retentionDays, {
      limit: 2,
      batches: 2,
      baselineMaxAgeSeconds: 8 * 3600,
    });
    expect(await left()).toBe(1);
    // Enough batches: the rest go, and the sweep stops at the first batch that is not full.
    await deleteExpiredRiskEvents(t.db, config.retentionDays, {
      limit: 2,
      batches: 100,
      baselineMaxAgeSeconds: 8 * 3600,
    });
    expect(await left()).toBe(0);
  });
});
