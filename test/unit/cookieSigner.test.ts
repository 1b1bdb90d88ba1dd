import { describe, expect, it } from 'vitest';
import { CookieSigner } from '../../src/http/index.ts';

describe('CookieSigner', () => {
  const signer = new CookieSigner(['newest-key-0123456789abcdef', 'older-key-0123456789abcdef']);

  it('verifies its own signatures and reports the key index', () => {
    const sig = signer.sign('_session=abc');
    expect(signer.verify('_session=abc', sig)).toBe(true);
    expect(signer.index('_session=abc', sig)).toBe(0);
  });

  it('accepts a signature made with an older key (rotation) and signs with the newest', () => {
    const old = new CookieSigner(['older-key-0123456789abcdef']).sign('v');
    expect(signer.index('v', old)).toBe(1);
    expect(signer.sign('v')).not.toBe(old);
  });

  it('rejects tampered data, tampered or truncated signatures, and foreign keys', () => {
    const sig = signer.sign('value');
    expect(signer.verify('valuE', sig)).toBe(false);
    expect(signer.verify('value', `${sig.slice(0, -2)}AA`)).toBe(false);
    expect(signer.verify('value', sig.slice(0, 10))).toBe(false);
    expect(signer.verify('value', '')).toBe(false);
    expect(signer.index('value', new CookieSigner(['someone-else']).sign('value'))).toBe(-1);
  });

  it('needs a key', () => {
    expect(() => new CookieSigner([])).toThrow(TypeError);
  });
});
