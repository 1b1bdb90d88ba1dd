import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { generateKeyPair, SignJWT } from 'jose';
import { describe, expect, it } from 'vitest';
import { ConfigError } from '../../src/config/index.ts';
import { registrationConfigSchema } from '../../src/registration/config.ts';
import { loadDirectories, verifySoftwareStatement } from '../../src/registration/softwareStatement.ts';

const issues = (input: unknown) => {
  const r = registrationConfigSchema.safeParse(input);
  return r.success ? [] : r.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`);
};

describe('registration configuration', () => {
  it('defaults: enabled, one-day initial access tokens, no directory', () => {
    expect(registrationConfigSchema.parse({})).toEqual({
      enabled: true,
      initialAccessTokenTtl: 86400,
      directories: [],
    });
  });

  it('wants exactly one of jwks and jwksFile per directory and names the key', () => {
    expect(issues({ directories: [{ issuer: 'https://d.example' }] })).toEqual([
      'directories.0: exactly one of jwks and jwksFile is required',
    ]);
    expect(issues({ directories: [{ issuer: 'https://d.example', jwks: { keys: [] } }] })).toHaveLength(1);
    expect(issues({ initialAccessTokenTtl: 31 * 24 * 3600 })).toHaveLength(1);
  });

  it('reads a directory key file; an unreadable one is a ConfigError naming the key', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'kakehashi-dir-'));
    try {
      const { publicKey, privateKey } = await generateKeyPair('ES256', { extractable: true });
      const jwk = { ...(await crypto.subtle.exportKey('jwk', publicKey)), kid: 'd1', alg: 'ES256' };
      const file = path.join(dir, 'jwks.json');
      writeFileSync(file, JSON.stringify({ keys: [jwk] }));
      const config = registrationConfigSchema.parse({
        directories: [{ issuer: 'https://d.example', jwksFile: file }],
      });
      const directories = loadDirectories(config);
      const ssa = await new SignJWT({ software_id: 'sw-1' })
        .setProtectedHeader({ alg: 'ES256', kid: 'd1' })
        .setIssuer('https://d.example')
        .setIssuedAt()
        .sign(privateKey);
      expect((await verifySoftwareStatement(directories, ssa, 10)).claims.software_id).toBe('sw-1');

      const missing = registrationConfigSchema.parse({
        directories: [{ issuer: 'https://d.example', jwksFile: path.join(dir, 'nope.json') }],
      });
      expect(() => loadDirectories(missing)).toThrow(ConfigError);
      expect(() => loadDirectories(missing)).toThrow(/^registration\.directories\.0\.jwksFile: /);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
