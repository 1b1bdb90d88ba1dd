/**
 * How assessLogin records a sign-in (src/risk/engine.ts): a sign-in that changes nothing writes its
 * event alone; one that keeps the customer's level but changes its reasons (or is a step-up or block
 * at the level already stored) writes event, audit and reasons in one statement and announces nothing;
 * one that changes the level does so in a transaction with its risk-level-change. A level changed by
 * someone else between the facts and the record is settled, never overwritten unseen.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Db, QueryResult } from '../../src/db/index.ts';
import {
  assessLogin,
  createRiskEngine,
  type LoginAttempt,
  recordLoginFailure,
  riskConfigSchema,
  signInGate,
} from '../../src/risk/index.ts';
import { insertCustomer, type TestDb, testDb } from '../support/db.ts';

let t: TestDb;
const engine = createRiskEngine(riskConfigSchema.parse({}));

beforeAll(async () => {
  t = await testDb();
});
afterAll(async () => t?.close());

const attempt = (customerId: string, o: Partial<LoginAttempt> = {}): LoginAttempt => ({
  customerId,
  method: 'passkey',
  credentialId: `cred-${customerId}`,
  backedUp: true,
  ip: '192.0.2.10',
  port: 40_000,
  userAgent: 'Mozilla/5.0 (Test)',
  knownDevice: true,
  deviceHash: 'device-1',
  ...o,
});

async function state(db: Db, customerId: string) {
  const q = async (sql: string) => Number((await db.query<{ n: number }>(sql, [customerId])).rows[0]!.n);
  const level = (
    await db.query<{ level: string; reasons: string[] }>(
      'SELECT level, reasons FROM risk_levels WHERE customer_id = $1',
      [customerId],
    )
  ).rows[0];
  return {
    level: level?.level,
    reasons: level?.reasons,
    events: await q('SELECT count(*)::int AS n FROM risk_events WHERE customer_id = $1'),
    audits: await q(
      `SELECT count(*)::int AS n FROM audit_events WHERE customer_id = $1 AND type LIKE 'risk.login.%'`,
    ),
    announced: await q(
      `SELECT count(*)::int AS n FROM ssf_events WHERE customer_id = $1 AND event_type LIKE '%risk-level-change'`,
    ),
  };
}

/** A Db that runs `before` once, just ahead of the first statement whose text contains `marker`. */
function interceptingDb(db: Db, marker: string, before: () => Promise<unknown>): Db {
  let done = false;
  const query = async <R>(sql: string, params?: unknown[]): Promise<QueryResult<R>> => {
    if (!done && sql.includes(marker)) {
      done = true;
      await before();
    }
    return db.query<R>(sql, params);
  };
  return {
    kind: db.kind,
    query,
    exec: (sql) => db.exec(sql),
    afterCommit: (fn) => db.afterCommit(fn),
    close: () => db.close(),
    transaction: (fn) => db.transaction(fn),
  };
}

describe('recording a sign-in', () => {
  it('stores the level at the first sign-in, then keeps it with changing reasons without announcing', async () => {
    const id = await insertCustomer(t.db);
    const first = await assessLogin(engine, t.db, attempt(id, { knownDevice: false }));
    expect(first.decision).toBe('allow');
    const s1 = await state(t.db, id);
    expect(s1).toMatchObject({ level: 'LOW', events: 1, audits: 0, announced: 0 });
    expect(s1.reasons).toContain('new-device');

    // Same level, other reasons (none now): event and reasons, nothing announced.
    await assessLogin(engine, t.db, attempt(id));
    expect(await state(t.db, id)).toMatchObject({
      level: 'LOW',
      reasons: [],
      events: 2,
      audits: 0,
      announced: 0,
    });

    // Nothing changes: the event alone.
    await assessLogin(engine, t.db, attempt(id));
    expect(await state(t.db, id)).toMatchObject({
      level: 'LOW',
      reasons: [],
      events: 3,
      audits: 0,
      announced: 0,
    });
  });

  it('audits a block at the level already stored, in the same statement as its event and reasons', async () => {
    const id = await insertCustomer(t.db);
    await assessLogin(engine, t.db, attempt(id));
    await t.db.query(
      `UPDATE risk_levels SET level = 'HIGH', reasons = '["earlier"]' WHERE customer_id = $1`,
      [id],
    );
    // Five accounts failed from one source: credential stuffing blocks the next sign-in from it.
    const source = '198.51.100.7';
    for (let k = 0; k < 5; k++)
      await recordLoginFailure(engine, t.db, {
        ip: source,
        port: 50_000,
        userAgent: 'x',
        method: 'passkey',
        reason: 'ERR_UNKNOWN_CREDENTIAL',
        credentialId: `stolen-${id}-${k}`,
      });
    const statements: string[] = [];
    const watched = interceptingDb(t.db, '\u0000never', async () => {});
    const counting: Db = {
      ...watched,
      query: (sql, params) => {
        statements.push(sql);
        return watched.query(sql, params);
      },
      transaction: () => {
        throw new Error('no transaction expected at an unchanged level');
      },
    };
    const d = await assessLogin(engine, counting, attempt(id, { ip: source }));
    expect(d.decision).toBe('block');
    expect(d.level).toBe('HIGH');
    expect(statements).toHaveLength(2); // the facts, then event + audit + reasons
    const s = await state(t.db, id);
    expect(s).toMatchObject({ level: 'HIGH', events: 2, audits: 1, announced: 0 });
    expect(s.reasons).toContain('credential-stuffing');
    const audit = (
      await t.db.query<{ type: string; outcome: string; data: { reasons: string[] } }>(
        `SELECT type, outcome, data FROM audit_events WHERE customer_id = $1 AND type LIKE 'risk.login.%'`,
        [id],
      )
    ).rows[0]!;
    expect(audit).toMatchObject({ type: 'risk.login.block', outcome: 'failure' });
    expect(audit.data.reasons).toContain('credential-stuffing');
  });

  it('settles a level that changed after the facts were read, recording the sign-in once and announcing the change', async () => {
    const id = await insertCustomer(t.db);
    await assessLogin(engine, t.db, attempt(id));
    expect(await state(t.db, id)).toMatchObject({ level: 'LOW', events: 1, announced: 0 });
    // A peer's signal or a concurrent decision raises the level between the facts and the record.
    const db = interceptingDb(t.db, 'old AS (SELECT level FROM risk_levels', () =>
      t.db.query(`UPDATE risk_levels SET level = 'HIGH', reasons = '["elsewhere"]' WHERE customer_id = $1`, [
        id,
      ]),
    );
    const d = await assessLogin(engine, db, attempt(id, { knownDevice: false, deviceHash: 'device-2' }));
    expect(d).toMatchObject({ decision: 'allow', level: 'LOW' });
    const s = await state(t.db, id);
    expect(s).toMatchObject({ level: 'LOW', events: 2, audits: 0, announced: 1 });
    expect(s.reasons).toContain('new-device');
  });

  it('reads lock, known device and facts in one statement, and records an unchanged sign-in in one more', async () => {
    const id = await insertCustomer(t.db);
    await assessLogin(engine, t.db, attempt(id));
    await t.db.query('INSERT INTO known_devices (device_hash, customer_id) VALUES ($1, $2)', [
      'device-1',
      id,
    ]);
    const statements: string[] = [];
    const counting: Db = {
      ...interceptingDb(t.db, '\u0000never', async () => {}),
      query: (sql, params) => {
        statements.push(sql);
        return t.db.query(sql, params);
      },
    };
    const { knownDevice: _, ...signIn } = attempt(id);
    const gate = await signInGate(engine, counting, signIn);
    expect(gate).toMatchObject({ known: true, lock: { locked: false } });
    expect(statements).toHaveLength(1);
    expect(await gate.assess()).toMatchObject({ decision: 'allow', level: 'LOW', reasons: [] });
    expect(statements).toHaveLength(2);
    // Another browser: not known; a lock set meanwhile is seen by the same one statement.
    await t.db.query(
      "INSERT INTO account_lockouts (customer_id, consecutive_failures, locked_until) VALUES ($1, 5, now() + interval '1 hour')",
      [id],
    );
    const other = await signInGate(engine, counting, { ...signIn, deviceHash: 'device-2' });
    expect(other).toMatchObject({ known: false, lock: { locked: true, reproofingRequired: false } });
    expect(other.lock.lockedUntil).toBeInstanceOf(Date);
    expect(statements).toHaveLength(3);
    // Detection off: lock and device in one statement, nothing assessed or recorded.
    const off = createRiskEngine(riskConfigSchema.parse({ enabled: false }));
    const events = (await state(t.db, id)).events;
    const gateOff = await signInGate(off, counting, signIn);
    expect(gateOff).toMatchObject({ known: true, lock: { locked: true } });
    expect(await gateOff.assess()).toMatchObject({ decision: 'allow' });
    expect(statements).toHaveLength(4);
    expect((await state(t.db, id)).events).toBe(events);
  });
});
