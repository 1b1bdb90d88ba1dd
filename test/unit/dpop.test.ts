import { constants, createHash, generateKeyPairSync, randomUUID, sign } from 'node:crypto';
import {
  base64url,
  type CryptoKey,
  calculateJwkThumbprint,
  exportJWK,
  generateKeyPair,
  generateSecret,
  type JWK,
  SignJWT,
} from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  createDbReplayStore,
  DpopError,
  type DpopReplayStore,
  jwkThumbprint,
  type VerifyDpopOptions,
  verifyDpopProof,
} from '../../src/api/dpop.ts';
import { type TestDb, testDb } from '../support/db.ts';

const NOW = 1_900_000_000;
const WINDOW = 60;
const URL_ = 'https://api.kakehashi.test/v1/accounts?limit=10';
const TOKEN = 'access-token-value-Qm9n';
const ATH = createHash('sha256').update(TOKEN).digest('base64url');

class MemoryReplayStore implements DpopReplayStore {
  readonly seen = new Map<string, Date>();
  async remember(jtiKey: string, expiresAt: Date): Promise<boolean> {
    if (this.seen.has(jtiKey)) return false;
    this.seen.set(jtiKey, expiresAt);
    return true;
  }
}

interface Signer {
  alg: string;
  privateKey: CryptoKey;
  jwk: JWK; // public
  jkt: string;
}

async function signer(alg: 'ES256' | 'PS256' | 'Ed25519'): Promise<Signer> {
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true });
  const jwk = await exportJWK(publicKey);
  return { alg: alg === 'Ed25519' ? 'EdDSA' : alg, privateKey, jwk, jkt: await calculateJwkThumbprint(jwk) };
}

interface ProofOptions {
  header?: Record<string, unknown>;
  claims?: Record<string, unknown>;
  omit?: string[];
  alg?: string;
  key?: CryptoKey | Uint8Array;
}

function claimsFor(o: ProofOptions): Record<string, unknown> {
  const c: Record<string, unknown> = {
    jti: randomUUID(),
    htm: 'GET',
    htu: 'https://api.kakehashi.test/v1/accounts',
    iat: NOW,
    ath: ATH,
    ...o.claims,
  };
  for (const k of o.omit ?? []) delete c[k];
  return c;
}

async function proof(s: Signer, o: ProofOptions = {}): Promise<string> {
  return new SignJWT(claimsFor(o))
    .setProtectedHeader({ typ: 'dpop+jwt', alg: o.alg ?? s.alg, jwk: s.jwk, ...o.header } as never)
    .sign(o.key ?? s.privateKey);
}

/** Builds a compact JWS by hand, for headers and signatures jose refuses to produce. */
function rawJws(
  header: Record<string, unknown>,
  claims: Record<string, unknown>,
  signature: Buffer | string,
): string {
  const h = base64url.encode(JSON.stringify(header));
  const p = base64url.encode(JSON.stringify(claims));
  const sig = typeof signature === 'string' ? signature : base64url.encode(signature);
  return `${h}.${p}.${sig}`;
}

function opts(s: Signer, headers: string[], extra: Partial<VerifyDpopOptions> = {}): VerifyDpopOptions {
  return {
    headers,
    method: 'GET',
    url: URL_,
    accessToken: TOKEN,
    expectedJkt: s.jkt,
    replay: new MemoryReplayStore(),
    iatWindowSeconds: WINDOW,
    now: NOW,
    ...extra,
  };
}

async function rejection(o: VerifyDpopOptions): Promise<DpopError> {
  const err = await verifyDpopProof(o).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err, 'expected verifyDpopProof to reject').toBeInstanceOf(DpopError);
  expect((err as DpopError).code).toBe('ERR_DPOP_INVALID');
  return err as DpopError;
}

let es: Signer;
let ps: Signer;
let ed: Signer;

beforeAll(async () => {
  [es, ps, ed] = await Promise.all([signer('ES256'), signer('PS256'), signer('Ed25519')]);
});

describe('verifyDpopProof: valid proofs', () => {
  it.each(['ES256', 'PS256', 'EdDSA'])('accepts a valid %s proof and returns jkt, jti, iat', async (alg) => {
    const s = { ES256: es, PS256: ps, EdDSA: ed }[alg]!;
    const jti = randomUUID();
    const r = await verifyDpopProof(opts(s, [await proof(s, { claims: { jti } })]));
    expect(r).toEqual({ jkt: s.jkt, jti, iat: NOW });
  });

  it('accepts extra claims and extra header members', async () => {
    const p = await proof(es, {
      claims: { nonce: 'n-1', custom: { a: 1 }, exp: NOW + 30 },
      header: { kid: 'k1' },
    });
    await expect(verifyDpopProof(opts(es, [p]))).resolves.toMatchObject({ jkt: es.jkt });
  });

  it('accepts htu with a query or fragment (ignored per RFC 9449 §4.3)', async () => {
    for (const htu of [
      'https://api.kakehashi.test/v1/accounts?other=1',
      'https://api.kakehashi.test/v1/accounts#frag',
      'https://api.kakehashi.test/v1/accounts?limit=10#x',
    ]) {
      await expect(
        verifyDpopProof(opts(es, [await proof(es, { claims: { htu } })])),
        htu,
      ).resolves.toBeDefined();
    }
  });

  it('accepts different case in scheme and host, and an explicit default port', async () => {
    for (const htu of [
      'HTTPS://API.Kakehashi.TEST/v1/accounts',
      'https://api.kakehashi.test:443/v1/accounts',
      'HtTpS://api.kakehashi.test:443/v1/accounts',
    ]) {
      await expect(
        verifyDpopProof(opts(es, [await proof(es, { claims: { htu } })])),
        htu,
      ).resolves.toBeDefined();
    }
    // And the other way round: the request URL written with a default port, htu without.
    const p = await proof(es, { claims: { htu: 'http://localhost/x' } });
    await expect(verifyDpopProof(opts(es, [p], { url: 'http://LOCALHOST:80/x' }))).resolves.toBeDefined();
  });

  it('accepts iat within the window (±10 s with a 60 s window, and exactly at the edge)', async () => {
    for (const iat of [NOW - 10, NOW + 10, NOW - WINDOW, NOW + WINDOW]) {
      await expect(
        verifyDpopProof(opts(es, [await proof(es, { claims: { iat } })])),
        String(iat),
      ).resolves.toBeDefined();
    }
  });

  it('uses the current time when now is not given', async () => {
    const iat = Math.floor(Date.now() / 1000);
    const p = await proof(es, { claims: { iat } });
    await expect(verifyDpopProof({ ...opts(es, [p]), now: undefined })).resolves.toMatchObject({ iat });
    const old = await proof(es, { claims: { iat: iat - 3600 } });
    await rejection({ ...opts(es, [old]), now: undefined });
  });
});

describe('verifyDpopProof: rejections', () => {
  it('rejects zero or several DPoP headers, and a comma-joined list', async () => {
    const a = await proof(es);
    const b = await proof(es);
    expect((await rejection(opts(es, []))).message).toMatch(/exactly one/);
    expect((await rejection(opts(es, [a, b]))).message).toMatch(/exactly one/);
    expect((await rejection(opts(es, [`${a}, ${b}`]))).message).toMatch(/exactly one/);
    expect((await rejection(opts(es, [`${a},${b}`]))).message).toMatch(/exactly one/);
  });

  it('rejects anything that is not a compact JWS, without leaking other error types', async () => {
    const good = await proof(es);
    const [h, p, s] = good.split('.') as [string, string, string];
    const junk = [
      '',
      'abc',
      `${h}.${p}`,
      `${h}.${p}.${s}.${s}`,
      `${h}.${p}.`,
      `.${p}.${s}`,
      `${h}.${p}.${s}=`,
      `${h}.${p}.${s.slice(0, 10)}+/${s.slice(12)}`,
      `${base64url.encode('not json')}.${p}.${s}`,
      `${base64url.encode('[1,2]')}.${p}.${s}`,
      `${base64url.encode('null')}.${p}.${s}`,
      `${h}.${base64url.encode('{"jti":')}.${s}`,
      `${h}.${p}.${s}${'A'.repeat(9000)}`,
      '\u0000.\u0000.\u0000',
    ];
    for (const j of junk) await rejection(opts(es, [j]));
  });

  it('rejects a typ other than exactly dpop+jwt', async () => {
    for (const typ of ['JWT', 'DPOP+JWT', 'application/dpop+jwt', undefined, 1]) {
      const p = await proof(es, { header: { typ } });
      expect((await rejection(opts(es, [p]))).message, String(typ)).toMatch(/typ/);
    }
  });

  it('rejects RS256 (and ES384) even with a valid signature', async () => {
    const rs = await generateKeyPair('RS256', { extractable: true });
    const rsJwk = await exportJWK(rs.publicKey);
    const p = await new SignJWT(claimsFor({}))
      .setProtectedHeader({ typ: 'dpop+jwt', alg: 'RS256', jwk: rsJwk })
      .sign(rs.privateKey);
    const e = await rejection(opts(es, [p], { expectedJkt: await calculateJwkThumbprint(rsJwk) }));
    expect(e.message).toMatch(/alg/);

    const es384 = await generateKeyPair('ES384', { extractable: true });
    const es384Jwk = await exportJWK(es384.publicKey);
    const p384 = await new SignJWT(claimsFor({}))
      .setProtectedHeader({ typ: 'dpop+jwt', alg: 'ES384', jwk: es384Jwk })
      .sign(es384.privateKey);
    expect(
      (await rejection(opts(es, [p384], { expectedJkt: await calculateJwkThumbprint(es384Jwk) }))).message,
    ).toMatch(/alg/);
  });

  it('rejects HS256 and none', async () => {
    const secret = await generateSecret('HS256', { extractable: true });
    const hs = await new SignJWT(claimsFor({}))
      .setProtectedHeader({ typ: 'dpop+jwt', alg: 'HS256', jwk: es.jwk } as never)
      .sign(secret);
    expect((await rejection(opts(es, [hs]))).message).toMatch(/alg/);
    const none = rawJws({ typ: 'dpop+jwt', alg: 'none', jwk: es.jwk }, claimsFor({}), 'AAAA');
    expect((await rejection(opts(es, [none]))).message).toMatch(/alg/);
    const noneEmpty = rawJws({ typ: 'dpop+jwt', alg: 'none', jwk: es.jwk }, claimsFor({}), '');
    await rejection(opts(es, [noneEmpty]));
  });

  it('rejects an alg that does not fit the key (ES256 over a P-384 key, EdDSA over an EC key)', async () => {
    const k384 = generateKeyPairSync('ec', { namedCurve: 'P-384' });
    const jwk384 = k384.publicKey.export({ format: 'jwk' });
    const claims = claimsFor({});
    const header = { typ: 'dpop+jwt', alg: 'ES256', jwk: jwk384 };
    const h = base64url.encode(JSON.stringify(header));
    const p = base64url.encode(JSON.stringify(claims));
    const sig = sign('sha256', Buffer.from(`${h}.${p}`), { key: k384.privateKey, dsaEncoding: 'ieee-p1363' });
    const jkt384 = jwkThumbprint(jwk384 as JWK & { kty: string });
    await rejection(opts(es, [`${h}.${p}.${base64url.encode(sig)}`], { expectedJkt: jkt384 }));

    const edOverEc = await proof(es, { alg: 'EdDSA', key: ed.privateKey });
    await rejection(opts(es, [edOverEc]));
  });

  it('rejects a PS256 key shorter than 2048 bits', async () => {
    const small = generateKeyPairSync('rsa', { modulusLength: 1024 });
    const jwk = small.publicKey.export({ format: 'jwk' });
    const h = base64url.encode(JSON.stringify({ typ: 'dpop+jwt', alg: 'PS256', jwk }));
    const p = base64url.encode(JSON.stringify(claimsFor({})));
    const sig = sign('sha256', Buffer.from(`${h}.${p}`), {
      key: small.privateKey,
      padding: constants.RSA_PKCS1_PSS_PADDING,
      saltLength: 32,
    });
    const jkt = jwkThumbprint(jwk as JWK & { kty: string });
    expect(
      (await rejection(opts(es, [`${h}.${p}.${base64url.encode(sig)}`], { expectedJkt: jkt }))).message,
    ).toMatch(/too small/);
  });

  it('rejects a missing jwk, a symmetric jwk, or a jwk with private members', async () => {
    const noJwk = await proof(es, { header: { jwk: undefined } });
    expect((await rejection(opts(es, [noJwk]))).message).toMatch(/jwk/);
    const stringJwk = await proof(es, { header: { jwk: 'abc' } });
    expect((await rejection(opts(es, [stringJwk]))).message).toMatch(/jwk/);

    const privateJwk = await exportJWK(es.privateKey); // has d
    expect(privateJwk.d).toBeDefined();
    const withD = await proof(es, { header: { jwk: privateJwk } });
    expect((await rejection(opts(es, [withD]))).message).toMatch(/private/);

    const rsaPrivate = await exportJWK(ps.privateKey);
    for (const m of ['d', 'p', 'q', 'dp', 'dq', 'qi']) {
      const jwk = { ...ps.jwk, [m]: rsaPrivate[m as keyof JWK] };
      const p = await proof(ps, { header: { jwk } });
      expect((await rejection(opts(ps, [p]))).message, m).toMatch(/private/);
    }
    const withK = await proof(es, { header: { jwk: { ...es.jwk, k: 'c2VjcmV0' } } });
    expect((await rejection(opts(es, [withK]))).message).toMatch(/private/);
  });

  it('rejects a bad signature', async () => {
    // Signed by another key but carrying the bound key's jwk.
    const other = await signer('ES256');
    const forged = await proof(es, { key: other.privateKey });
    expect((await rejection(opts(es, [forged]))).message).toMatch(/signature/);
    for (const s of [ps, ed]) {
      const otherKey = await signer(s === ps ? 'PS256' : 'Ed25519');
      const f = await proof(s, { key: otherKey.privateKey });
      expect((await rejection(opts(s, [f]))).message).toMatch(/signature/);
    }
    // Payload swapped after signing.
    const good = await proof(es);
    const [h, , s] = good.split('.') as [string, string, string];
    const swapped = `${h}.${base64url.encode(JSON.stringify(claimsFor({})))}.${s}`;
    expect((await rejection(opts(es, [swapped]))).message).toMatch(/signature/);
    // Truncated signature.
    expect((await rejection(opts(es, [`${h}.${good.split('.')[1]}.${s.slice(0, 40)}`]))).message).toMatch(
      /signature/,
    );
  });

  it.each(['jti', 'htm', 'htu', 'iat', 'ath'])('rejects a proof without %s', async (claim) => {
    const p = await proof(es, { omit: [claim] });
    expect((await rejection(opts(es, [p]))).message).toContain(claim);
  });

  it('rejects claims of the wrong type', async () => {
    for (const claims of [
      { jti: 5 },
      { jti: '' },
      { htm: ['GET'] },
      { htu: null },
      { iat: '1900000000' },
      { ath: 1 },
    ]) {
      await rejection(opts(es, [await proof(es, { claims })]));
    }
  });

  it('rejects htm different from the request method', async () => {
    const p = await proof(es, { claims: { htm: 'POST' } });
    expect((await rejection(opts(es, [p]))).message).toMatch(/htm/);
    const lower = await proof(es, { claims: { htm: 'get' } });
    await rejection(opts(es, [lower]));
  });

  it('rejects htu different in scheme, host, port or path', async () => {
    for (const htu of [
      'http://api.kakehashi.test/v1/accounts',
      'https://other.kakehashi.test/v1/accounts',
      'https://api.kakehashi.test:8443/v1/accounts',
      'https://api.kakehashi.test/v1/accounts/',
      'https://api.kakehashi.test/v1/Accounts',
      'https://api.kakehashi.test/v1',
      '/v1/accounts',
      'not a url',
    ]) {
      const p = await proof(es, { claims: { htu } });
      expect((await rejection(opts(es, [p]))).message, htu).toMatch(/htu/);
    }
  });

  it('rejects iat outside the window (±1 hour, and just past the edge)', async () => {
    for (const iat of [NOW - 3600, NOW + 3600, NOW - WINDOW - 1, NOW + WINDOW + 1]) {
      const p = await proof(es, { claims: { iat } });
      expect((await rejection(opts(es, [p]))).message, String(iat)).toMatch(/iat/);
    }
  });

  it('rejects ath that is not the hash of the presented access token', async () => {
    const p = await proof(es);
    expect((await rejection(opts(es, [p], { accessToken: `${TOKEN}x` }))).message).toMatch(/ath/);
    const wrong = await proof(es, {
      claims: { ath: createHash('sha256').update('other').digest('base64url') },
    });
    expect((await rejection(opts(es, [wrong]))).message).toMatch(/ath/);
  });

  it('rejects a key whose thumbprint is not the token binding', async () => {
    const other = await signer('ES256');
    const p = await proof(other); // valid in every other way
    expect((await rejection(opts(es, [p]))).message).toMatch(/binding/);
    await expect(verifyDpopProof(opts(other, [p]))).resolves.toBeDefined();
  });

  it('rejects a replayed jti for the same key, keyed by jkt + jti', async () => {
    const replay = new MemoryReplayStore();
    const jti = randomUUID();
    const p = await proof(es, { claims: { jti } });
    await verifyDpopProof(opts(es, [p], { replay }));
    expect((await rejection(opts(es, [p], { replay }))).message).toMatch(/replay/);
    // A fresh proof reusing the jti is a replay too.
    const again = await proof(es, { claims: { jti, iat: NOW + 1 } });
    await rejection(opts(es, [again], { replay }));
    // The same jti from another key is someone else's proof.
    const otherKey = await proof(ed, { claims: { jti } });
    await expect(verifyDpopProof(opts(ed, [otherKey], { replay }))).resolves.toMatchObject({ jti });

    expect([...replay.seen.keys()].sort()).toEqual([`${ed.jkt}:${jti}`, `${es.jkt}:${jti}`].sort());
    // Remembered for at least the whole time the proof's iat is acceptable.
    const until = replay.seen.get(`${es.jkt}:${jti}`)!.getTime() / 1000;
    expect(until).toBeGreaterThanOrEqual(NOW + WINDOW);
    expect(until).toBeLessThanOrEqual(NOW + WINDOW + 600);
  });

  it('does not record jti of proofs that fail other checks', async () => {
    const replay = new MemoryReplayStore();
    await rejection(opts(es, [await proof(es, { claims: { htm: 'POST' } })], { replay }));
    await rejection(opts(es, [await proof(es)], { replay, accessToken: 'other' }));
    expect(replay.seen.size).toBe(0);
  });
});

describe('jwkThumbprint', () => {
  it('matches RFC 7638 §3.1', () => {
    const jwk = {
      kty: 'RSA',
      n: '0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw',
      e: 'AQAB',
      alg: 'RS256',
      kid: '2011-04-29',
    };
    expect(jwkThumbprint(jwk)).toBe('NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs');
  });

  it('agrees with jose for EC, RSA and OKP keys, ignoring optional members', async () => {
    for (const s of [es, ps, ed]) {
      expect(jwkThumbprint({ ...(s.jwk as { kty: string }), kid: 'x', use: 'sig', alg: s.alg })).toBe(
        await calculateJwkThumbprint(s.jwk),
      );
    }
  });

  it('throws DpopError for unsupported or incomplete keys', () => {
    for (const jwk of [
      { kty: 'oct', k: 'abc' },
      { kty: 'EC', crv: 'P-256', x: 'a' },
      { kty: 'RSA', n: 1, e: 'AQAB' },
    ]) {
      expect(() => jwkThumbprint(jwk)).toThrow(DpopError);
    }
  });
});

describe('createDbReplayStore', () => {
  let t: TestDb;
  beforeAll(async () => {
    t = await testDb();
  });
  afterAll(async () => {
    await t.close();
  });

  it('returns true on first sighting and false afterwards, storing only a hash', async () => {
    const store = createDbReplayStore(t.db);
    const key = `${es.jkt}:${randomUUID()}`;
    const exp = new Date(Date.now() + 120_000);
    expect(await store.remember(key, exp)).toBe(true);
    expect(await store.remember(key, exp)).toBe(false);
    // A second store (another node) sees the same row.
    expect(await createDbReplayStore(t.db).remember(key, exp)).toBe(false);
    expect(await store.remember(`${key}x`, exp)).toBe(true);

    const hash = createHash('sha256').update(key).digest('hex');
    const r = await t.db.query<{ jti_hash: string; expires_at: Date | string }>(
      'SELECT jti_hash, expires_at FROM dpop_seen WHERE jti_hash = $1',
      [hash],
    );
    expect(r.rows).toHaveLength(1);
    expect(new Date(r.rows[0]!.expires_at).getTime()).toBe(exp.getTime());
  });

  it('deletes expired rows every 100 calls and keeps live ones', async () => {
    await t.db.query(
      `INSERT INTO dpop_seen (jti_hash, expires_at)
       SELECT 'expired-' || g, now() - interval '1 hour' FROM generate_series(1, 50) g`,
    );
    const store = createDbReplayStore(t.db);
    const live = new Date(Date.now() + 600_000);
    for (let i = 0; i < 99; i++) await store.remember(`k-${randomUUID()}`, live);
    const count = async (sql: string) => Number((await t.db.query<{ n: number }>(sql)).rows[0]!.n);
    expect(await count(`SELECT count(*)::int AS n FROM dpop_seen WHERE jti_hash LIKE 'expired-%'`)).toBe(50);
    await store.remember(`k-${randomUUID()}`, live); // 100th call sweeps
    expect(await count(`SELECT count(*)::int AS n FROM dpop_seen WHERE jti_hash LIKE 'expired-%'`)).toBe(0);
    expect(
      await count('SELECT count(*)::int AS n FROM dpop_seen WHERE expires_at > now()'),
    ).toBeGreaterThanOrEqual(100);
  });

  it('detects replay through verifyDpopProof', async () => {
    const replay = createDbReplayStore(t.db);
    const iat = Math.floor(Date.now() / 1000);
    const p = await proof(es, { claims: { iat } });
    const o = { ...opts(es, [p], { replay }), now: undefined };
    await expect(verifyDpopProof(o)).resolves.toMatchObject({ jkt: es.jkt });
    expect((await rejection(o)).message).toMatch(/replay/);
  });
});
