import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { chmodSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { calculateJwkThumbprint } from 'jose';
import { afterEach, describe, expect, it } from 'vitest';
import {
  decryptAtRest,
  encryptAtRest,
  jwkThumbprint,
  KeyError,
  loadKeyEncryptionKey,
} from '../../src/keys/index.ts';

const kek = randomBytes(32);

function flip(sealed: string, part: 1 | 2): string {
  const parts = sealed.split('.');
  const bytes = Buffer.from(parts[part]!, 'base64url');
  bytes[0]! ^= 1;
  parts[part] = bytes.toString('base64url');
  return parts.join('.');
}

function expectDecryptError(fn: () => unknown): void {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(KeyError);
    expect((err as KeyError).code).toBe('ERR_KEY_DECRYPT');
    return;
  }
  throw new Error('expected ERR_KEY_DECRYPT');
}

describe('encryptAtRest / decryptAtRest', () => {
  it('round-trips text, including non-ASCII and empty strings, in the v1 format', () => {
    for (const text of ['hello', '', '鍵の暗号化 🔑', 'x'.repeat(10_000)]) {
      const sealed = encryptAtRest(kek, text, 'ctx');
      expect(sealed).toMatch(/^v1\.[A-Za-z0-9_-]{16}\.[A-Za-z0-9_-]+$/);
      expect(decryptAtRest(kek, sealed, 'ctx')).toBe(text);
    }
  });

  it('uses a fresh IV each time', () => {
    expect(encryptAtRest(kek, 'same', 'ctx')).not.toBe(encryptAtRest(kek, 'same', 'ctx'));
  });

  it('does not contain the plaintext', () => {
    const secret = 'very-secret-value-0123456789';
    const sealed = encryptAtRest(kek, secret, 'ctx');
    expect(sealed).not.toContain(secret);
    expect(sealed).not.toContain(Buffer.from(secret).toString('base64url'));
  });

  it('rejects a tampered ciphertext, tag or IV', () => {
    const sealed = encryptAtRest(kek, 'payload', 'ctx');
    expectDecryptError(() => decryptAtRest(kek, flip(sealed, 2), 'ctx'));
    expectDecryptError(() => decryptAtRest(kek, flip(sealed, 1), 'ctx'));
    const body = Buffer.from(sealed.split('.')[2]!, 'base64url');
    body[body.length - 1]! ^= 0x80; // last tag byte
    const [v, iv] = sealed.split('.');
    expectDecryptError(() => decryptAtRest(kek, `${v}.${iv}.${body.toString('base64url')}`, 'ctx'));
  });

  it('rejects a wrong key and a wrong aad', () => {
    const sealed = encryptAtRest(kek, 'payload', 'kid-1');
    expectDecryptError(() => decryptAtRest(randomBytes(32), sealed, 'kid-1'));
    expectDecryptError(() => decryptAtRest(kek, sealed, 'kid-2'));
    expectDecryptError(() => decryptAtRest(kek, sealed, ''));
  });

  it('rejects malformed input and unknown versions', () => {
    const sealed = encryptAtRest(kek, 'payload', 'ctx');
    for (const bad of ['', 'v1', 'v1..', `v2${sealed.slice(2)}`, `${sealed}.extra`, 'v1.AAAA.AAAA']) {
      expectDecryptError(() => decryptAtRest(kek, bad, 'ctx'));
    }
  });

  it('refuses a KEK that is not 32 bytes', () => {
    expect(() => encryptAtRest(randomBytes(16), 'x', 'ctx')).toThrow(KeyError);
  });
});

describe('loadKeyEncryptionKey', () => {
  const dirs: string[] = [];
  const tempDir = () => {
    const d = mkdtempSync(path.join(tmpdir(), 'kkh-kek-'));
    dirs.push(d);
    return d;
  };
  afterEach(() => {
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });

  it('opens with additional KEKs during a KEK rotation, but seals only with the configured one', () => {
    const [oldRaw, newRaw] = [randomBytes(32), randomBytes(32)];
    const dataDir = tempDir();
    const sealedOld = encryptAtRest(oldRaw, 'secret', 'ctx');
    const rotating = loadKeyEncryptionKey({
      keyEncryptionKey: newRaw.toString('base64url'),
      additionalKeyEncryptionKeys: [oldRaw.toString('base64url')],
      dataDir,
    });
    expect(rotating.equals(newRaw)).toBe(true);
    expect(decryptAtRest(rotating, sealedOld, 'ctx')).toBe('secret');
    // The context still binds: the old key does not open a value moved to another row.
    expectDecryptError(() => decryptAtRest(rotating, sealedOld, 'other'));
    const sealedNew = encryptAtRest(rotating, 'secret', 'ctx');
    expectDecryptError(() => decryptAtRest(oldRaw, sealedNew, 'ctx'));
    // Without the additional key, the old value no longer opens.
    const done = loadKeyEncryptionKey({ keyEncryptionKey: newRaw.toString('base64url'), dataDir });
    expectDecryptError(() => decryptAtRest(done, sealedOld, 'ctx'));
    expect(() =>
      loadKeyEncryptionKey({
        keyEncryptionKey: newRaw.toString('base64url'),
        additionalKeyEncryptionKeys: ['short'],
        dataDir,
      }),
    ).toThrow(/additionalKeyEncryptionKeys\[0\]/);
  });

  it('decodes the configured key and does not touch the data directory', () => {
    const raw = randomBytes(32);
    const dataDir = tempDir();
    expect(loadKeyEncryptionKey({ keyEncryptionKey: raw.toString('base64url'), dataDir }).equals(raw)).toBe(
      true,
    );
    expect(() => statSync(path.join(dataDir, 'secrets'))).toThrow();
  });

  it('rejects a configured key of the wrong size', () => {
    const err = (() => {
      try {
        loadKeyEncryptionKey({ keyEncryptionKey: randomBytes(16).toString('base64url'), dataDir: tempDir() });
      } catch (e) {
        return e as KeyError;
      }
    })();
    expect(err?.code).toBe('ERR_KEY_INVALID');
  });

  it('creates <dataDir>/secrets/kek with mode 0600 in a 0700 directory, then reuses it', () => {
    const dataDir = path.join(tempDir(), 'nested', 'data');
    const first = loadKeyEncryptionKey({ dataDir });
    expect(first).toHaveLength(32);
    const file = path.join(dataDir, 'secrets', 'kek');
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(statSync(path.dirname(file)).mode & 0o777).toBe(0o700);
    expect(readFileSync(file, 'utf8').trim()).toBe(first.toString('base64url'));
    expect(loadKeyEncryptionKey({ dataDir }).equals(first)).toBe(true);
    expect(loadKeyEncryptionKey({ dataDir: tempDir() }).equals(first)).toBe(false);
  });

  it('refuses a key file readable by others, and a corrupt one', () => {
    const dataDir = tempDir();
    loadKeyEncryptionKey({ dataDir });
    const file = path.join(dataDir, 'secrets', 'kek');
    chmodSync(file, 0o644);
    expect(() => loadKeyEncryptionKey({ dataDir })).toThrow(
      expect.objectContaining({ code: 'ERR_KEY_FILE_MODE' }),
    );
    chmodSync(file, 0o600);
    writeFileSync(file, 'not a key\n');
    expect(() => loadKeyEncryptionKey({ dataDir })).toThrow(
      expect.objectContaining({ code: 'ERR_KEY_INVALID' }),
    );
  });
});

describe('jwkThumbprint', () => {
  it('matches RFC 7638 (as computed by jose) for EC, RSA and OKP keys', async () => {
    const keys = [
      generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey,
      generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey,
      generateKeyPairSync('ed25519').publicKey,
    ];
    for (const key of keys) {
      const jwk = key.export({ format: 'jwk' }) as Parameters<typeof jwkThumbprint>[0];
      expect(jwkThumbprint(jwk)).toBe(await calculateJwkThumbprint(jwk as never, 'sha256'));
    }
  });

  it('matches the RFC 7638 section 3.1 example', () => {
    const jwk = {
      kty: 'RSA',
      n: '0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw',
      e: 'AQAB',
    };
    expect(jwkThumbprint(jwk)).toBe('NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs');
  });
});
