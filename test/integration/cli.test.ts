/** The operator CLI against a real database: tickets, exemptions, the report, the audit export, bad input. */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/index.ts';
import { startHub } from '../../src/hub.ts';
import { createLogger } from '../../src/log.ts';
import { CLI_TEST_TIMEOUT, runCli } from '../support/cli.ts';
import { createTestDatabase } from '../support/db.ts';
import { freePort } from '../support/hub.ts';
import { seedPgliteDataDir } from '../support/pgliteTemplate.ts';

let dataDir: string;
let env: NodeJS.ProcessEnv;
let drop: () => Promise<void>;

beforeAll(async () => {
  dataDir = mkdtempSync(path.join(tmpdir(), 'kakehashi-cli-'));
  const database = await createTestDatabase();
  drop = database.drop;
  env = {
    PATH: process.env.PATH,
    KAKEHASHI_DATA: dataDir,
    LOG_LEVEL: 'silent',
    ...(database.url ? { DATABASE_URL: database.url } : {}),
  };
  // A hub start seeds the demo customer (number 10000001), then stops so the CLI has the database.
  const port = await freePort();
  const config = loadConfig({
    env,
    configDir: path.join(dataDir, 'none'),
    overrides: { port, logLevel: 'silent' },
  });
  if (!config.databaseUrl) seedPgliteDataDir(config.dataDir);
  const hub = await startHub(config, { logger: createLogger('silent') });
  await hub.close();
});
afterAll(async () => {
  await drop?.();
  rmSync(dataDir, { recursive: true, force: true });
});

const cli = (...args: string[]) => runCli(env, ...args);

describe('kakehashi CLI', { timeout: CLI_TEST_TIMEOUT }, () => {
  it('issues an enrollment ticket once, and refuses an unknown customer', async () => {
    const ok = await cli('enroll-ticket', '10000001', '--operator', 'sato');
    expect(ok.code).toBe(0);
    expect(ok.stdout).toMatch(/^KKH-[0-9A-Z]{5}-[0-9A-Z]{5}-[0-9A-Z]{5}-[0-9A-Z]{5}\n/);
    const missing = await cli('enroll-ticket', 'nobody');
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain('no customer nobody');
  });

  it('grants an exemption only with a reason, and reports the exemption rate against its target', async () => {
    expect((await cli('exemption', 'grant', '10000001')).code).toBe(2);
    const granted = await cli(
      'exemption',
      'grant',
      '10000001',
      '--reason',
      '端末を所持していないため',
      '--operator',
      'sato',
    );
    expect(granted.code).toBe(0);
    const report = await cli('report', '--json');
    expect(report.code).toBe(0);
    const parsed = JSON.parse(report.stdout) as {
      customers: number;
      measures: Array<{ name: string; value: number; met: boolean }>;
    };
    expect(parsed.customers).toBe(1);
    expect(parsed.measures.find((m) => m.name === 'exemptionRate')).toMatchObject({ value: 1, met: false });
    expect(parsed.measures.find((m) => m.name === 'passkeyAdoption')).toMatchObject({ value: 0, met: false });
    const text = await cli('report');
    expect(text.stdout).toMatch(/exemption rate \(解除率\)\s+100\.0 %\s+\(1\)\s+target ≤ 5\.0 %\s+NOT MET/);
  });

  it('exports a customer’s history as JSON lines and audits the export', async () => {
    const out = await cli('export-audit', '10000001', '--operator', 'investigator');
    expect(out.code).toBe(0);
    const rows = out.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { type: string; actor: string | null });
    expect(rows.map((r) => r.type)).toEqual(
      expect.arrayContaining(['enrollment.ticket.issued', 'authn.exemption.granted']),
    );
    expect(rows.find((r) => r.type === 'authn.exemption.granted')?.actor).toBe('operator:sato');
    const again = await cli('export-audit', '10000001');
    expect(again.stdout).toContain('"type":"audit.exported"');
    expect((await cli('export-audit', '10000001', '--from', '2030-01-01', '--to', '2020-01-01')).code).toBe(
      2,
    );
  });

  it('lists, disables, enables clients and refuses metadata that breaks the FAPI policy', async () => {
    const list = await cli('clients', 'list');
    expect(list.stdout).toMatch(/^enabled\s+demo-aggregator\s/m);
    expect((await cli('clients', 'disable', 'demo-aggregator')).stdout).toContain(
      'client demo-aggregator: disabled',
    );
    expect((await cli('clients', 'list')).stdout).toMatch(/^DISABLED\s+demo-aggregator\s/m);
    expect((await cli('clients', 'enable', 'demo-aggregator')).code).toBe(0);
    expect((await cli('clients', 'disable', 'nope')).code).toBe(2);
    const { writeFileSync } = await import('node:fs');
    const file = path.join(dataDir, 'bad-client.json');
    writeFileSync(
      file,
      JSON.stringify({
        client_id: 'bad-client',
        client_name: 'Bad',
        grant_types: ['authorization_code'],
        redirect_uris: ['http://x.example/cb'],
        token_endpoint_auth_method: 'client_secret_basic',
        dpop_bound_access_tokens: true,
      }),
    );
    const refused = await cli('clients', 'add', file);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toMatch(/refused: .*redirect_uris.*token_endpoint_auth_method/);
  });

  it('issues an initial access token for one registration: printed once, bounded lifetime', async () => {
    const ok = await cli('clients', 'iat', 'create', '--ttl', '600', '--operator', 'sato');
    expect(ok.code).toBe(0);
    expect(ok.stdout).toMatch(/^kiat_[A-Za-z0-9_-]{43}\n$/);
    expect(ok.stderr).toMatch(/valid until \d{4}-\d\d-\d\dT/);
    expect((await cli('clients', 'iat', 'create', '--ttl', '0')).code).toBe(2);
  });

  it('lists, rotates and prints the signing keys; makes a KEK (docs/key-rotation.md)', async () => {
    const listed = await cli('keys');
    expect(listed.code).toBe(0);
    expect(listed.stdout.split('\n').filter((l) => l.startsWith('current '))).toHaveLength(3);
    const rotated = await cli('keys', 'rotate', '--alg', 'EdDSA', '--operator', 'sato');
    expect(rotated.code).toBe(0);
    expect(rotated.stdout).toMatch(/^EdDSA: new key \S+ is published now as next and signs from \d{4}-/);
    const jwks = JSON.parse((await cli('keys', 'jwks')).stdout) as { keys: { kid: string; d?: string }[] };
    // The three current keys and the next one.
    expect(jwks.keys).toHaveLength(4);
    expect(jwks.keys.at(-1)?.kid).toBe(/new key (\S+)/.exec(rotated.stdout)?.[1]);
    expect(jwks.keys.some((k) => k.d)).toBe(false);
    const bad = await cli('keys', 'rotate', '--alg', 'RS256');
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('unknown --alg RS256');
    expect((await cli('keys', 'new-kek')).stdout).toMatch(/^[A-Za-z0-9_-]{43}\n$/);
  });

  it('stops with a message naming the key for a bad configuration value', async () => {
    const { code, stderr } = await runCli({ ...env, PORT: 'eighty' }, 'migrate');
    expect(code).toBe(1);
    expect(stderr).toContain('PORT (port): expected an integer');
  });

  it('prints the effective withdrawal-strength policy, and names a policy file it cannot use', async () => {
    const shown = await cli('policy', 'show', '--ja');
    expect(shown.code).toBe(0);
    expect(shown.stdout).toContain('withdrawal.name-mismatch: when destinationNameMatches = false');
    expect(shown.stdout).toContain('出金先口座の名義');
    const json = await cli('policy', 'show', '--json');
    expect(JSON.parse(json.stdout).operations.withdrawal.default).toBe('deny');
    const broken = await runCli({ ...env, KAKEHASHI_POLICY: '/nonexistent/policy.json' }, 'policy', 'show');
    expect(broken.code).toBe(1);
    expect(broken.stderr).toContain('withdrawal-strength policy: /nonexistent/policy.json');
  });
});
