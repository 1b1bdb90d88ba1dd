/**
 * The risk commands against a real database: replaying recorded streams offline, the effective
 * rules, declared travel, the forensics export (audited) and its retention.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/index.ts';
import { type Db, openDb } from '../../src/db/index.ts';
import { startHub } from '../../src/hub.ts';
import { createLogger } from '../../src/log.ts';
import {
  assessLogin,
  deleteExpiredRiskEvents,
  recordLoginFailure,
  riskEngineFor,
} from '../../src/risk/index.ts';
import { CLI_TEST_TIMEOUT, runCli } from '../support/cli.ts';
import { createTestDatabase } from '../support/db.ts';
import { freePort } from '../support/hub.ts';
import { seedPgliteDataDir } from '../support/pgliteTemplate.ts';

const CONFIG = path.resolve('test/fixtures/risk/config.json');
let dataDir: string;
let env: NodeJS.ProcessEnv;
let drop: () => Promise<void>;
let customerId: string;

beforeAll(async () => {
  dataDir = mkdtempSync(path.join(tmpdir(), 'kakehashi-risk-cli-'));
  const database = await createTestDatabase();
  drop = database.drop;
  env = {
    PATH: process.env.PATH,
    KAKEHASHI_DATA: dataDir,
    KAKEHASHI_CONFIG: CONFIG,
    LOG_LEVEL: 'silent',
    ...(database.url ? { DATABASE_URL: database.url } : {}),
  };
  // A hub seeds the demo customer; sign-ins are recorded through the engine as the gate does.
  const config = loadConfig({ env, overrides: { port: await freePort(), logLevel: 'silent' } });
  if (!config.databaseUrl) seedPgliteDataDir(config.dataDir);
  const hub = await startHub(config, { logger: createLogger('silent') });
  customerId = hub.demo!.customerId;
  const risk = riskEngineFor(config);
  await recordLoginFailure(risk, hub.db, {
    customerId,
    credentialId: 'k1',
    method: 'passkey',
    reason: 'ERR_WEBAUTHN_VERIFICATION',
    ip: '127.0.1.8',
    port: 50123,
    userAgent: 'Mozilla/5.0 (X11; Linux x86_64) Firefox/130.0',
  });
  await assessLogin(risk, hub.db, {
    customerId,
    method: 'passkey',
    credentialId: 'k1',
    backedUp: true,
    ip: '127.0.0.8',
    port: 50124,
    userAgent: 'Mozilla/5.0 (Windows NT 10.0) Chrome/130.0',
    knownDevice: false,
    deviceHash: 'dev-hash',
  });
  // One record past the retention, as if written years ago.
  await hub.db.query(
    "INSERT INTO risk_events (at, kind, customer_id, method, result) VALUES (now() - interval '4 years', 'login', $1, 'passkey', 'success')",
    [customerId],
  );
  expect(await deleteExpiredRiskEvents(hub.db, config.risk.retentionDays)).toBe(1);
  await hub.close();
});
afterAll(async () => {
  await drop?.();
  rmSync(dataDir, { recursive: true, force: true });
});

const cli = (...args: string[]) => runCli(env, ...args);
/** The database as the CLI sees it (PGlite allows one process at a time: open only between calls). */
async function withDb<T>(fn: (db: Db) => Promise<T>): Promise<T> {
  const db = await openDb({ databaseUrl: env.DATABASE_URL, dataDir });
  try {
    return await fn(db);
  } finally {
    await db.close();
  }
}
const lines = (out: string) =>
  out
    .trim()
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as Record<string, unknown>);

/** Each CLI run starts Node and opens the database: seconds each on a busy machine. */

describe('kakehashi risk', () => {
  it(
    'replays a recorded stream and prints one decision per attempt, with the summary on stderr',
    async () => {
      const out = await cli('risk', 'replay', 'test/fixtures/risk/takeover-abroad.jsonl');
      expect(out.code).toBe(0);
      expect(lines(out.stdout).map((d) => [d.line, d.country, d.decision, d.score])).toEqual([
        [1, 'JP', 'allow', 15],
        [2, 'US', 'block', 140],
        [3, 'US', 'step_up', 80],
        [5, 'US', 'allow', 20],
        [6, 'US', 'block', 90],
      ]);
      expect(lines(out.stdout)[1]).toMatchObject({
        ruleVersion: '2026-11-26.3',
        reasons: expect.arrayContaining(['impossible-travel']),
      });
      expect(out.stderr).toContain('rules 2026-11-26.3: 2 allowed, 1 step-up, 2 blocked, 0 failed attempts');
    },
    CLI_TEST_TIMEOUT,
  );

  it(
    'replays with another rule file, and refuses a broken one or a broken stream naming the fault',
    async () => {
      const dir = mkdtempSync(path.join(tmpdir(), 'kkh-rules-'));
      const strict = path.join(dir, 'strict.json');
      writeFileSync(
        strict,
        JSON.stringify({
          version: 'strict-1',
          thresholds: { stepUp: 5, block: 100 },
          rules: [
            {
              id: 'any-new-device',
              when: { newDevice: true },
              score: 10,
              explain: 'every new browser steps up',
            },
          ],
        }),
      );
      const out = await cli(
        'risk',
        'replay',
        'test/fixtures/risk/credential-stuffing.jsonl',
        '--rules',
        strict,
      );
      expect(out.code).toBe(0);
      expect(lines(out.stdout).map((d) => d.decision ?? d.result)).toEqual([
        'step_up',
        ...Array(5).fill('failure'),
        // Under these rules the first sign-in stepped up, so that browser never became known.
        'step_up',
        'step_up',
        ...Array(6).fill('step_up'),
      ]);
      const broken = path.join(dir, 'broken.json');
      writeFileSync(
        broken,
        JSON.stringify({ version: 'b', thresholds: { stepUp: 50, block: 10 }, rules: [] }),
      );
      const refused = await cli('risk', 'rules', '--rules', broken);
      expect(refused.code).toBe(2);
      expect(refused.stderr).toContain('thresholds.block');
      const stream = path.join(dir, 'bad.jsonl');
      writeFileSync(stream, '{"at":"2026-11-20T00:00:00Z","customerId":"c","result":"maybe"}\n');
      const bad = await cli('risk', 'replay', stream);
      expect(bad.code).toBe(2);
      expect(bad.stderr).toContain('line 1: result');
      rmSync(dir, { recursive: true, force: true });
    },
    CLI_TEST_TIMEOUT,
  );

  it(
    'prints the effective rules',
    async () => {
      const out = await cli('risk', 'rules');
      expect(out.code).toBe(0);
      const rules = JSON.parse(out.stdout) as {
        version: string;
        rules: Array<{ id: string; explain: string }>;
      };
      expect(rules.version).toBe('2026-11-26.3');
      expect(rules.rules.map((r) => r.id)).toContain('abroad-undeclared');
    },
    CLI_TEST_TIMEOUT,
  );

  it(
    'lifts an account lock, audited with the operator and the customer told; says so when none is in force',
    async () => {
      await withDb(async (db) => {
        await db.query(
          `INSERT INTO account_lockouts (customer_id, consecutive_failures, locked_at, locked_until)
           VALUES ($1, 10, now(), now() + interval '1 day')
           ON CONFLICT (customer_id) DO UPDATE SET consecutive_failures = 10, locked_at = now(),
             locked_until = now() + interval '1 day'`,
          [customerId],
        );
        // A mail channel, so that telling the customer leaves a row to count.
        await db.query(
          `INSERT INTO notify_channels (id, customer_id, kind, address_enc, address_hash, address_masked)
           VALUES ('ch-risk-cli', $1, 'email', 'sealed', 'hash', 't***@example.jp')`,
          [customerId],
        );
      });
      const lifted = await cli('risk', 'unlock', '10000001', '--operator', 'sato');
      expect(lifted.code).toBe(0);
      expect(lifted.stdout).toContain('account of 10000001 unlocked');
      const again = await cli('risk', 'unlock', '10000001', '--operator', 'sato');
      expect(again.stdout).toContain('no lock in force');
      expect((await cli('risk', 'unlock')).code).toBe(2);
      const { audits, notices, lock } = await withDb(async (db) => ({
        audits: (
          await db.query<{ actor: string }>(
            "SELECT actor FROM audit_events WHERE type = 'risk.account.unlocked' AND customer_id = $1",
            [customerId],
          )
        ).rows,
        notices: (
          await db.query<{ n: number }>(
            "SELECT count(*)::int AS n FROM notify_outbox WHERE customer_id = $1 AND kind = 'account_unlocked'",
            [customerId],
          )
        ).rows[0]!.n,
        lock: (
          await db.query<{ n: number }>(
            'SELECT count(*)::int AS n FROM account_lockouts WHERE customer_id = $1 AND locked_until > now()',
            [customerId],
          )
        ).rows[0]!.n,
      }));
      expect(audits).toEqual([{ actor: 'operator:sato' }]);
      expect(lock).toBe(0);
      // Told once (one channel), and only for the lift that happened.
      expect(notices).toBe(1);
    },
    CLI_TEST_TIMEOUT,
  );

  it(
    'records declared travel, refusing a bad country',
    async () => {
      expect(
        (
          await cli(
            'risk',
            'travel',
            '10000001',
            '--country',
            'Narnia',
            '--from',
            '2026-12-01',
            '--to',
            '2026-12-20',
          )
        ).code,
      ).toBe(2);
      const ok = await cli(
        'risk',
        'travel',
        '10000001',
        '--country',
        'us',
        '--from',
        '2026-12-01',
        '--to',
        '2026-12-20',
        '--operator',
        'sato',
      );
      expect(ok.code).toBe(0);
      expect(ok.stdout).toContain('sign-ins from US until 2026-12-20 are expected');
    },
    CLI_TEST_TIMEOUT,
  );

  it(
    'exports a customer’s sign-ins with everything investigators need, and audits the export',
    async () => {
      const out = await cli('forensics', 'export', '10000001', '--operator', 'investigator');
      expect(out.code).toBe(0);
      const rows = lines(out.stdout);
      expect(rows).toHaveLength(2);
      expect(rows[0]).toMatchObject({
        customerId,
        kind: 'login',
        method: 'passkey',
        result: 'failure',
        ip: '127.0.1.8',
        port: 50123,
        country: 'US',
        asn: 64501,
        userAgent: 'Mozilla/5.0 (X11; Linux x86_64) Firefox/130.0',
      });
      expect(rows[1]).toMatchObject({
        result: 'success',
        decision: 'allow',
        ip: '127.0.0.8',
        port: 50124,
        country: 'JP',
        asn: 64500,
        deviceHash: 'dev-hash',
        credentialId: 'k1',
        ruleVersion: '2026-11-26.3',
        reasons: [
          expect.objectContaining({ rule: 'new-device', score: 10, explain: expect.any(String) }),
          expect.objectContaining({ rule: 'new-credential', score: 5 }),
        ],
      });
      expect(typeof rows[1]!.at).toBe('string');
      // The same period, replayed: the export is a recorded stream the replay reads as it is.
      const dir = mkdtempSync(path.join(tmpdir(), 'kkh-export-'));
      writeFileSync(path.join(dir, 'export.jsonl'), out.stdout);
      const replayed = await cli('risk', 'replay', path.join(dir, 'export.jsonl'));
      expect(lines(replayed.stdout).map((d) => d.decision ?? d.result)).toEqual(['failure', 'allow']);
      rmSync(dir, { recursive: true, force: true });

      const audit = lines((await cli('export-audit', '10000001')).stdout);
      expect(audit.find((r) => r.type === 'risk.forensics.exported')).toMatchObject({
        actor: 'operator:investigator',
      });
      expect(audit.map((r) => r.type)).toContain('risk.travel.declared');
      expect((await cli('forensics', 'export')).code).toBe(2);
    },
    CLI_TEST_TIMEOUT,
  );
});
