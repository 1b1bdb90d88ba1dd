import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../../src/config/index.ts';

const emptyDir = () => mkdtempSync(path.join(tmpdir(), 'kkh-config-'));

describe('loadConfig', () => {
  it('has the documented defaults', () => {
    const c = loadConfig({ env: {}, configDir: emptyDir() });
    expect(c.port).toBe(8443);
    expect(c.tls.mode).toBe('dev');
    expect(c.dataDir).toBe(path.resolve('./data'));
    expect(c.issuer).toBe('https://localhost:8443');
    expect(c.rpId).toBe('localhost');
    expect(c.oidc.authorizationCodeTtl).toBeLessThanOrEqual(60);
    expect(c.oidc.parTtl).toBe(60);
    expect(c.databaseUrl).toBeUndefined();
  });

  it('takes PORT, KAKEHASHI_DATA and DATABASE_URL from the environment', () => {
    const c = loadConfig({
      env: { PORT: '9443', KAKEHASHI_DATA: '/tmp/kkh-x', DATABASE_URL: 'postgres://u@127.0.0.1/db' },
      configDir: emptyDir(),
    });
    expect(c.port).toBe(9443);
    expect(c.issuer).toBe('https://localhost:9443');
    expect(c.dataDir).toBe('/tmp/kkh-x');
    expect(c.databaseUrl).toBe('postgres://u@127.0.0.1/db');
  });

  it('runs one worker unless KAKEHASHI_WORKERS says more, and more only on PostgreSQL', () => {
    expect(loadConfig({ env: {}, configDir: emptyDir() }).workers).toBe(1);
    const url = 'postgres://u@127.0.0.1/db';
    expect(
      loadConfig({ env: { KAKEHASHI_WORKERS: '2', DATABASE_URL: url }, configDir: emptyDir() }).workers,
    ).toBe(2);
    expect(() => loadConfig({ env: { KAKEHASHI_WORKERS: '2' }, configDir: emptyDir() })).toThrow(
      /workers: more than one worker needs databaseUrl/,
    );
    expect(() =>
      loadConfig({ env: { KAKEHASHI_WORKERS: '0', DATABASE_URL: url }, configDir: emptyDir() }),
    ).toThrow(/workers:/);
  });

  it('reads config/kakehashi.json and lets the environment win', () => {
    const dir = emptyDir();
    writeFileSync(
      path.join(dir, 'kakehashi.json'),
      JSON.stringify({ port: 7000, oidc: { accessTokenTtl: 300 } }),
    );
    const c = loadConfig({ env: { PORT: '7001' }, configDir: dir });
    expect(c.port).toBe(7001);
    expect(c.oidc.accessTokenTtl).toBe(300);
    expect(c.oidc.authorizationCodeTtl).toBe(60);
  });

  it.each([
    [{ PORT: 'eighty' }, /PORT \(port\): expected an integer/],
    [{ PORT: '70000' }, /port: .*65535/],
    [{ DATABASE_URL: 'mysql://x' }, /databaseUrl: must be a postgres:\/\/ URL/],
    [{ KAKEHASHI_ISSUER: 'http://insecure.example' }, /issuer/],
    [{ KAKEHASHI_TLS: 'none' }, /tls\.mode/],
    [{ KAKEHASHI_KEK: 'short' }, /keyEncryptionKey: must be 32 bytes/],
    [{ KAKEHASHI_DEMO: 'maybe' }, /KAKEHASHI_DEMO \(demo\): expected true or false/],
  ])('stops on a bad value naming the key: %o', (env, message) => {
    expect(() => loadConfig({ env, configDir: emptyDir() })).toThrow(ConfigError);
    expect(() => loadConfig({ env, configDir: emptyDir() })).toThrow(message);
  });

  it('refuses FAPI-breaking lifetimes and unknown keys in the file', () => {
    const dir = emptyDir();
    writeFileSync(path.join(dir, 'kakehashi.json'), JSON.stringify({ oidc: { authorizationCodeTtl: 600 } }));
    expect(() => loadConfig({ env: {}, configDir: dir })).toThrow(/oidc\.authorizationCodeTtl/);
    writeFileSync(path.join(dir, 'kakehashi.json'), JSON.stringify({ prot: 1 }));
    expect(() => loadConfig({ env: {}, configDir: dir })).toThrow(/prot/);
    writeFileSync(path.join(dir, 'kakehashi.json'), '{ not json');
    expect(() => loadConfig({ env: {}, configDir: dir })).toThrow(/not valid JSON/);
  });

  it('needs both files in tls.mode files', () => {
    expect(() => loadConfig({ env: { KAKEHASHI_TLS: 'files' }, configDir: emptyDir() })).toThrow(
      /tls\.certFile and tls\.keyFile/,
    );
  });

  it('validates linking.banks and names the bad key', () => {
    const bank = {
      id: 'a-bank',
      name: { ja: '銀行', en: 'Bank' },
      issuer: 'https://bank.example',
      clientId: 'hub',
    };
    const ok = loadConfig({ env: {}, configDir: emptyDir(), overrides: { linking: { banks: [bank] } } });
    expect(ok.linking.banks[0]).toMatchObject({
      auth: { method: 'private_key_jwt' },
      scope: 'openid profile',
    });
    expect(ok.linking.defaultSweepCap).toBe(1_000_000);
    const bad = (banks: unknown[]) => () =>
      loadConfig({ env: {}, configDir: emptyDir(), overrides: { linking: { banks } } as never });
    expect(bad([{ ...bank, issuer: 'http://bank.example' }])).toThrow(/linking\.banks\.0\.issuer/);
    expect(bad([{ ...bank, auth: { method: 'client_secret', secret: 'short' } }])).toThrow(
      /linking\.banks\.0\.auth/,
    );
    expect(bad([bank, bank])).toThrow(/configured twice/);
    expect(bad([{ ...bank, acrStrength: { x: 'strong' } }])).toThrow(/acrStrength/);
  });

  it('defaults the allowed products to the unleveraged ones and names a product it does not know', () => {
    const ok = loadConfig({ env: {}, configDir: emptyDir() });
    expect(ok.linking.defaultProducts).toEqual([
      'domestic_equity',
      'foreign_equity',
      'investment_trust',
      'bonds',
    ]);
    const only = loadConfig({
      env: {},
      configDir: emptyDir(),
      overrides: { linking: { defaultProducts: ['bonds'] } },
    });
    expect(only.linking.defaultProducts).toEqual(['bonds']);
    expect(() =>
      loadConfig({
        env: {},
        configDir: emptyDir(),
        overrides: { linking: { defaultProducts: ['crypto'] } } as never,
      }),
    ).toThrow(/linking\.defaultProducts\.0/);
  });
});
