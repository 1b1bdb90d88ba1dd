import { describe, expect, it } from 'vitest';
import { type Cursor, createCursorCodec } from '../../src/api/cursor.ts';
import { CookieSigner } from '../../src/http/index.ts';

const cursor: Cursor = {
  v: 1,
  r: 'transactions',
  g: 'grant-1',
  a: 'acc_1',
  d: 'next',
  k: ['2025-01-01T00:00:00.123456Z', 'txn_1'],
  n: 100,
  f: '2024-01-01T00:00:00+09:00',
};

describe('pagination cursors', () => {
  const codec = createCursorCodec(new CookieSigner(['key-new', 'key-old']));

  it('round-trip', () => {
    expect(codec.decode(codec.encode(cursor))).toEqual(cursor);
  });

  it('are refused when altered, truncated or signed by another key', () => {
    const token = codec.encode(cursor);
    const [payload, tag] = token.split('.') as [string, string];
    const altered = Buffer.from(JSON.stringify({ ...cursor, a: 'acc_2' })).toString('base64url');
    expect(codec.decode(`${altered}.${tag}`)).toBeUndefined();
    expect(codec.decode(`${payload}.${tag.slice(0, -2)}`)).toBeUndefined();
    expect(codec.decode(payload)).toBeUndefined();
    expect(codec.decode('')).toBeUndefined();
    expect(codec.decode(`${'a'.repeat(3000)}.${tag}`)).toBeUndefined();
    const foreign = createCursorCodec(new CookieSigner(['someone-else']));
    expect(codec.decode(foreign.encode(cursor))).toBeUndefined();
  });

  it('survive a key rotation (signed with the old key, verified after a new one was added)', () => {
    const before = createCursorCodec(new CookieSigner(['key-old']));
    expect(codec.decode(before.encode(cursor))).toEqual(cursor);
  });

  it('reject well-signed payloads of the wrong shape', () => {
    const signer = new CookieSigner(['key-new']);
    const payload = Buffer.from(JSON.stringify({ ...cursor, n: -1 })).toString('base64url');
    expect(codec.decode(`${payload}.${signer.sign(`kakehashi/api-cursor/v1:${payload}`)}`)).toBeUndefined();
    // A cookie signature over the same text is not a cursor signature.
    expect(codec.decode(`${payload}.${signer.sign(payload)}`)).toBeUndefined();
  });
});
