import { createPublicKey, generateKeyPairSync } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { checkClientAssertion, checkDpopProof, KeyCache } from '../bench/lib/floorJose.ts';
import { createClientAssertionSigner, createDpopSigner, signCompact } from '../bench/lib/jws.ts';

// The floor servers (test/bench) are only an honest floor if their checks refuse what they must.

const HTU = 'https://localhost:8443/token';
const ISSUER = 'https://localhost:8443';
const b64 = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url');

function changedSignature(jws: string): string {
  const [h, p, s] = jws.split('.') as [string, string, string];
  const sig = Buffer.from(s, 'base64url');
  sig[7]! ^= 0x01;
  return `${h}.${p}.${sig.toString('base64url')}`;
}

describe('floor DPoP proof check', () => {
  const signer = createDpopSigner();
  const keys = new KeyCache();
  const check = (proof: string) => checkDpopProof(proof, { htm: 'POST', htu: HTU, keys });

  it('accepts a good proof and names its key and jti', () => {
    const result = check(signer.proof('POST', HTU));
    expect(result).toMatchObject({ jkt: signer.jkt, jti: expect.any(String) });
  });

  it('refuses a changed signature, another htm or htu, and garbage', () => {
    expect(check(changedSignature(signer.proof('POST', HTU)))).toBe('signature');
    expect(check(signer.proof('GET', HTU))).toBe('htm or htu');
    expect(check(signer.proof('POST', `${HTU}/x`))).toBe('htm or htu');
    expect(check('not.a.jws')).toBe('malformed proof');
    expect(check('a.b')).toBe('malformed proof');
  });

  it('refuses a stale iat, a private key in the header, and another typ', () => {
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const jwk = publicKey.export({ format: 'jwk' });
    const sign = (header: object, claims: object) => signCompact(b64(header), claims, privateKey);
    const now = Math.floor(Date.now() / 1000);
    const claims = { jti: 'j1', htm: 'POST', htu: HTU, iat: now };
    const header = { typ: 'dpop+jwt', alg: 'ES256', jwk: { kty: 'EC', crv: 'P-256', x: jwk.x, y: jwk.y } };
    expect(check(sign(header, claims))).toMatchObject({ jti: 'j1' });
    expect(check(sign(header, { ...claims, iat: now - 300 }))).toBe('iat');
    expect(check(sign({ ...header, jwk: privateKey.export({ format: 'jwk' }) }, claims))).toBe('jwk');
    expect(check(sign({ ...header, typ: 'JWT' }, claims))).toBe('typ or alg');
  });
});

describe('floor client assertion check', () => {
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const privateJwk = { ...privateKey.export({ format: 'jwk' }), kid: 'k1' };
  const signer = createClientAssertionSigner('client-1', privateJwk);
  const key = createPublicKey(privateKey);
  const check = (assertion: string) =>
    checkClientAssertion(assertion, { clientId: 'client-1', kid: 'k1', key, issuer: ISSUER });

  it('accepts a good assertion for the issuer', () => {
    expect(check(signer.assertion(ISSUER))).toMatchObject({ jti: expect.any(String) });
  });

  it('refuses a changed signature, another audience, another client and a long or past lifetime', () => {
    expect(check(changedSignature(signer.assertion(ISSUER)))).toBe('signature');
    expect(check(signer.assertion(`${ISSUER}/token`))).toBe('aud');
    const other = createClientAssertionSigner('client-2', privateJwk);
    expect(check(other.assertion(ISSUER))).toBe('iss or sub');
    const now = Math.floor(Date.now() / 1000);
    const sign = (claims: object) => signCompact(b64({ alg: 'ES256', kid: 'k1' }), claims, privateKey);
    const base = { iss: 'client-1', sub: 'client-1', aud: ISSUER, jti: 'j' };
    expect(check(sign({ ...base, aud: [ISSUER], iat: now, exp: now + 60 }))).toBe('aud');
    expect(check(sign({ ...base, iat: now - 120, exp: now - 60 }))).toBe('exp');
    expect(check(sign({ ...base, iat: now, exp: now + 3600 }))).toBe('iat');
    expect(check(sign({ ...base, iat: now, exp: now + 60 }))).toMatchObject({ jti: 'j' });
  });
});
