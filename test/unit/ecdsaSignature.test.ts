import { generateKeyPairSync, sign, verify } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { derToP1363, p1363ToDer } from '../../src/keys/index.ts';

describe('p1363ToDer', () => {
  for (const curve of ['P-256', 'P-384', 'P-521'] as const) {
    it(`gives the DER signature OpenSSL made, for ${curve} (many signatures: leading zeros, high bits)`, () => {
      const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: curve });
      const hash = curve === 'P-256' ? 'sha256' : curve === 'P-384' ? 'sha384' : 'sha512';
      let highBit = 0;
      let leadingZero = 0;
      for (let i = 0; i < 300; i++) {
        const data = Buffer.from(`message ${i}`);
        const p1363 = sign(hash, data, { key: privateKey, dsaEncoding: 'ieee-p1363' });
        const der = p1363ToDer(p1363);
        const size = p1363.length / 2;
        // And back: OpenSSL's own DER signature gives the P1363 bytes, and verifies in that form.
        expect(derToP1363(der, size).equals(p1363)).toBe(true);
        const opensslDer = sign(hash, data, privateKey);
        const fromOpenssl = derToP1363(opensslDer, size);
        expect(verify(hash, data, { key: publicKey, dsaEncoding: 'ieee-p1363' }, fromOpenssl)).toBe(true);
        expect(p1363ToDer(fromOpenssl).equals(opensslDer)).toBe(true);
        // The same bytes as OpenSSL's own DER for this signature (Node converts P1363 → DER exactly so).
        expect(verify(hash, data, publicKey, der)).toBe(true);
        expect(verify(hash, data, { key: publicKey, dsaEncoding: 'der' }, der)).toBe(true);
        if (p1363[0]! & 0x80) highBit++;
        if (p1363[0] === 0) leadingZero++;
        // A changed signature or message fails with the converted form as with the options form.
        const bad = Buffer.from(p1363);
        bad[bad.length - 1]! ^= 1;
        expect(verify(hash, data, publicKey, p1363ToDer(bad))).toBe(false);
        expect(verify(hash, Buffer.from('other'), publicKey, der)).toBe(false);
      }
      // r of P-521 starts with 0x00 or 0x01 (half of them need stripping); the others often have the high bit.
      if (curve === 'P-521') expect(leadingZero).toBeGreaterThan(0);
      else expect(highBit).toBeGreaterThan(0);
    });
  }

  it('encodes zero and small integers minimally', () => {
    const sig = Buffer.alloc(64);
    sig[31] = 1;
    expect(p1363ToDer(sig).toString('hex')).toBe('3006020101020100');
    sig[32] = 0x80;
    expect(p1363ToDer(sig).subarray(5, 8).toString('hex')).toBe('022100');
  });

  it('refuses what cannot be a DER signature of that size', () => {
    expect(() => derToP1363(Buffer.from('3006020101020100', 'hex'), 32)).not.toThrow();
    expect(() => derToP1363(Buffer.from('3106020101020100', 'hex'), 32)).toThrow(RangeError);
    expect(() => derToP1363(Buffer.from('3006030101020100', 'hex'), 32)).toThrow(RangeError);
    expect(() => derToP1363(Buffer.from(`3026022101${'11'.repeat(32)}020100`, 'hex'), 32)).toThrow(
      RangeError,
    );
    expect(() => derToP1363(Buffer.from('30060201010201', 'hex'), 32)).toThrow(RangeError);
    expect(() => derToP1363(Buffer.from('300602010102', 'hex'), 32)).toThrow(RangeError);
  });

  it('refuses what cannot be a P1363 signature', () => {
    expect(() => p1363ToDer(Buffer.alloc(0))).toThrow(RangeError);
    expect(() => p1363ToDer(Buffer.alloc(63))).toThrow(RangeError);
    expect(() => p1363ToDer(Buffer.alloc(134))).toThrow(RangeError);
  });
});
