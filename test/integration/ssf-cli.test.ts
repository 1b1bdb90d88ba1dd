/** `kakehashi ssf …` against a real database: the stream view, status changes, dead letters, verification. */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/index.ts';
import { type Db, openDb } from '../../src/db/index.ts';
import { startHub } from '../../src/hub.ts';
import { createLogger } from '../../src/log.ts';
import { EVENT } from '../../src/signals/index.ts';
import { runCli } from '../support/cli.ts';
import { createTestDatabase } from '../support/db.ts';
import { freePort } from '../support/hub.ts';
import { seedPgliteDataDir } from '../support/pgliteTemplate.ts';

let dataDir: string;
let env: NodeJS.ProcessEnv;
let database: Awaited<ReturnType<typeof createTestDatabase>>;
const STREAM = 'stream-cli-1';

/** The database as the CLI sees it (PGlite allows one process at a time: open only between calls). */
async function withDb<T>(fn: (db: Db) => Promise<T>): Promise<T> {
  const db = await openDb({ databaseUrl: database.url, dataDir });
  try {
    return await fn(db);
  } finally {
    await db.close();
  }
}

beforeAll(async () => {
  dataDir = mkdtempSync(path.join(tmpdir(), 'kakehashi-ssf-cli-'));
  database = await createTestDatabase();
  env = {
    PATH: process.env.PATH,
    KAKEHASHI_DATA: dataDir,
    LOG_LEVEL: 'silent',
    ...(database.url ? { DATABASE_URL: database.url } : {}),
  };
  const config = loadConfig({
    env,
    configDir: path.join(dataDir, 'none'),
    overrides: { port: await freePort(), logLevel: 'silent', signals: { enabled: false } },
  });
  if (!config.databaseUrl) seedPgliteDataDir(config.dataDir);
  const hub = await startHub(config, { logger: createLogger('silent') });
  // A push stream that delivered one SET, holds two, and has one dead letter.
  await hub.db.query(
    `INSERT INTO ssf_streams (stream_id, peer_id, client_id, aud, delivery_method, endpoint_url, events_delivered, signing_alg)
     VALUES ($1, 'bank', 'ssf-bank', 'https://bank.example', 'urn:ietf:rfc:8935', 'https://bank.example/events', '{}', 'RS256')`,
    [STREAM],
  );
  await hub.db.query(
    `INSERT INTO ssf_outbox (stream_id, event_id, jti, subject_key, set_jwt, state, delivered_at, last_error) VALUES
       ($1, 1, 'j1', 's1', 'x.y.z', 'delivered', now(), NULL),
       ($1, 2, 'j2', 's1', 'x.y.z', 'pending', NULL, NULL),
       ($1, 3, 'j3', 's2', 'x.y.z', 'pending', NULL, NULL),
       ($1, 4, 'j4', 's3', 'x.y.z', 'failed', NULL, 'invalid_request: bad sub_id')`,
    [STREAM],
  );
  await hub.close();
});
afterAll(async () => {
  await database?.drop();
  rmSync(dataDir, { recursive: true, force: true });
});

const cli = (...args: string[]) => runCli(env, ...args);

it('lists streams, pauses one (the receiver is told), requeues dead letters and sends a verification, all audited', async () => {
  const listed = await cli('ssf', 'streams', '--json');
  expect(listed.code).toBe(0);
  const [s] = JSON.parse(listed.stdout);
  expect(s).toMatchObject({
    streamId: STREAM,
    peerId: 'bank',
    status: 'enabled',
    delivery: 'push',
    backlog: 2,
    deadLetters: 1,
    lastError: null,
  });
  expect(s.lastDeliveryAt).toMatch(/^\d{4}-/);

  const paused = await cli('ssf', 'stream', STREAM, 'pause', '--reason', 'maintenance', '--operator', 'sato');
  expect(paused).toMatchObject({ code: 0, stdout: `stream ${STREAM}: enabled -> paused\n` });
  expect((await cli('ssf', 'stream', 'no-such', 'pause')).code).toBe(2);

  const dead = await cli('ssf', 'dead-letters', '--retry', '--operator', 'sato');
  expect(dead).toMatchObject({ code: 0, stdout: '1 dead letters requeued\n' });
  expect((await cli('ssf', 'verify', STREAM, '--operator', 'sato')).code).toBe(0);

  const text = await cli('ssf', 'streams');
  expect(text.stdout).toMatch(new RegExp(`^${STREAM}\\s+bank\\s+paused\\s+push\\s+3\\s+0\\s`, 'm'));

  await withDb(async (db) => {
    const audit = await db.query<{ type: string; actor: string }>(
      `SELECT type, actor FROM audit_events WHERE type IN ('ssf.stream.status', 'ssf.outbox.requeued', 'ssf.stream.verification_sent') ORDER BY id`,
    );
    expect(audit.rows).toEqual([
      { type: 'ssf.stream.status', actor: 'operator:sato' },
      { type: 'ssf.outbox.requeued', actor: 'operator:sato' },
      { type: 'ssf.stream.verification_sent', actor: 'operator:sato' },
    ]);
    const events = await db.query<{ event_type: string; payload: { claims: Record<string, unknown> } }>(
      'SELECT event_type, payload FROM ssf_events WHERE stream_id = $1 ORDER BY id',
      [STREAM],
    );
    expect(events.rows).toEqual([
      { event_type: EVENT.streamUpdated, payload: { claims: { status: 'paused', reason: 'maintenance' } } },
      { event_type: EVENT.verification, payload: { claims: {} } },
    ]);
  });
}, 120_000);
