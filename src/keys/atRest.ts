/**
 * The key-encryption key (KEK) and authenticated encryption of key material at rest.
 */
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { chmodSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { KeyError } from './errors.ts';

const KEK_BYTES = 32;
const IV_BYTES = 12;
const TAG_BYTES = 16;
const VERSION = 'v1';
const B64URL_32 = /^[A-Za-z0-9_-]{43}$/;

function decodeKek(value: string, source: string): Buffer {
  const trimmed = value.trim();
  if (!B64URL_32.test(trimmed)) {
    throw new KeyError(
      'ERR_KEY_INVALID',
      `${source}: the key-encryption key must be 32 bytes, base64url-encoded`,
    );
  }
  return Buffer.from(trimmed, 'base64url');
}

/**
 * Further KEKs that open (never seal) values, per loaded KEK: during a KEK rotation a node knows the
 * old and the new key (docs/key-rotation.md). Kept beside the Buffer so that every module that
 * carries "the KEK" around keeps working unchanged.
 */
const openers = new WeakMap<Buffer, readonly Buffer[]>();

/** The KEKs that open what `kek` opens besides itself (none unless configured). */
export function additionalKeks(kek: Buffer): readonly Buffer[] {
  return openers.get(kek) ?? [];
}

/**
 * 32-byte key-encryption key: from `keyEncryptionKey` (base64url) if set, else read from
 * <dataDir>/secrets/kek, which is created (file 0600, directory 0700) with 32 random bytes if missing.
 * `additionalKeyEncryptionKeys` only open values (a KEK rotation in progress); new values are always
 * sealed with the first.
 */
export function loadKeyEncryptionKey(opts: {
  keyEncryptionKey?: string | undefined;
  additionalKeyEncryptionKeys?: readonly string[] | undefined;
  dataDir: string;
}): Buffer {
  const kek = loadPrimaryKek(opts);
  const extra = (opts.additionalKeyEncryptionKeys ?? [])
    .map((k, i) => decodeKek(k, `additionalKeyEncryptionKeys[${i}]`))
    .filter((k) => !k.equals(kek));
  if (extra.length) openers.set(kek, extra);
  return kek;
}

function loadPrimaryKek(opts: { keyEncryptionKey?: string | undefined; dataDir: string }): Buffer {
  if (opts.keyEncryptionKey) return decodeKek(opts.keyEncryptionKey, 'keyEncryptionKey');

  const dir = path.join(opts.dataDir, 'secrets');
  const file = path.join(dir, 'kek');
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  try {
    // 'wx' fails if the file exists, so two processes sharing a data directory never overwrite each other's key.
    writeFileSync(file, `${randomBytes(KEK_BYTES).toString('base64url')}\n`, { mode: 0o600, flag: 'wx' });
    // The umask may have narrowed the directory mode further but never widened it; make it exact anyway.
    chmodSync(dir, 0o700);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
  // Like ssh with private keys: refuse a key file that others can read rather than silently use it.
  if (process.platform !== 'win32' && (statSync(file).mode & 0o077) !== 0) {
    throw new KeyError('ERR_KEY_FILE_MODE', `${file} is accessible by group or others; chmod 600 it`);
  }
  return decodeKek(readFileSync(file, 'utf8'), file);
}

function checkKek(kek: Buffer): void {
  if (kek.length !== KEK_BYTES)
    throw new KeyError('ERR_KEY_INVALID', 'the key-encryption key must be 32 bytes');
}

/**
 * AES-256-GCM with a random 96-bit IV. `aad` binds the sealed value to its context (a kid, a secret's
 * name), so a value copied to another row does not open. Output: 'v1.<iv b64url>.<ciphertext+tag b64url>'.
 */
export function encryptAtRest(kek: Buffer, plaintext: string, aad: string): string {
  checkKek(kek);
  const iv = randomBytes(IV_BYTES);
  const cipher = createCipheriv('aes-256-gcm', kek, iv, { authTagLength: TAG_BYTES });
  cipher.setAAD(Buffer.from(aad, 'utf8'));
  const body = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final(), cipher.getAuthTag()]);
  return `${VERSION}.${iv.toString('base64url')}.${body.toString('base64url')}`;
}

/**
 * Opens a value sealed by encryptAtRest with `kek` or, during a KEK rotation, with one of its
 * additional KEKs; throws KeyError ERR_KEY_DECRYPT on any mismatch.
 */
export function decryptAtRest(kek: Buffer, sealed: string, aad: string): string {
  try {
    return openWith(kek, sealed, aad);
  } catch (err) {
    for (const other of openers.get(kek) ?? []) {
      try {
        return openWith(other, sealed, aad);
      } catch {
        // Try the next one; the configured KEK's error is the one reported.
      }
    }
    throw err;
  }
}

/** True when `sealed` opens with exactly this KEK (not its additional ones). */
export function opensWith(kek: Buffer, sealed: string, aad: string): boolean {
  try {
    openWith(kek, sealed, aad);
    return true;
  } catch {
    return false;
  }
}

function openWith(kek: Buffer, sealed: string, aad: string): string {
  checkKek(kek);
  const parts = sealed.split('.');
  const [version, ivText, bodyText] = parts;
  if (parts.length !== 3 || version !== VERSION || !ivText || !bodyText) {
    throw new KeyError('ERR_KEY_DECRYPT', 'sealed value is malformed or of an unknown version');
  }
  const iv = Buffer.from(ivText, 'base64url');
  const body = Buffer.from(bodyText, 'base64url');
  if (iv.length !== IV_BYTES || body.length < TAG_BYTES) {
    throw new KeyError('ERR_KEY_DECRYPT', 'sealed value is malformed');
  }
  try {
    const decipher = createDecipheriv('aes-256-gcm', kek, iv, { authTagLength: TAG_BYTES });
    decipher.setAAD(Buffer.from(aad, 'utf8'));
    decipher.setAuthTag(body.subarray(body.length - TAG_BYTES));
    return Buffer.concat([
      decipher.update(body.subarray(0, body.length - TAG_BYTES)),
      decipher.final(),
    ]).toString('utf8');
  } catch (err) {
    throw new KeyError(
      'ERR_KEY_DECRYPT',
      'sealed value does not open: tampered, or sealed with another key-encryption key or context',
      { cause: err },
    );
  }
}
