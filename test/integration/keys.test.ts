import { createPrivateKey, createPublicKey, randomBytes, sign, verify } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Db, migrate, openDb } from '../../src/db/index.ts';
import { jwkThumbprint, type KeyMaterial, loadKeyMaterial } from '../../src/keys/index.ts';
import { createTestDatabase, realPostgresUrl, type TestDb, testDb } from '../support/db.ts';

const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi'];
const kek = randomBytes(32);

let t: TestDb;
let first: KeyMaterial;
beforeAll(async () => {
  t = await testDb();
  first = await loadKeyMaterial(t.db, kek);
});
afterAll(() => t.close());

const kids = (m: KeyMaterial) => m.signingJwks.keys.map((k) => k.kid);

describe('loadKeyMaterial', () => {
  it('generates ES256, PS256 and EdDSA signing keys in that order, with thumbprint kids', () => {
    const keys = first.signingJwks.keys;
    expect(keys.map((k) => [k.alg, k.kty, k.crv, k.use])).toEqual([
      ['ES256', 'EC', 'P-256', 'sig'],
      ['PS256', 'RSA', undefined, 'sig'],
      ['EdDSA', 'OKP', 'Ed25519', 'sig'],
    ]);
    expect(createPrivateKey({ key: keys[1]!, format: 'jwk' }).asymmetricKeyDetails?.modulusLength).toBe(2048);
    for (const k of keys) {
      expect(k.d).toBeTruthy();
      expect(k.kid).toBe(jwkThumbprint(k));
    }
    expect(new Set(kids(first)).size).toBe(3);
  });

  it('publishes only the public halves, and they verify what the private keys sign', () => {
    expect(first.publicJwks.keys.map((k) => k.kid)).toEqual(kids(first));
    for (const [i, pub] of first.publicJwks.keys.entries()) {
      for (const m of PRIVATE_MEMBERS) expect(pub).not.toHaveProperty(m);
      const priv = createPrivateKey({ key: first.signingJwks.keys[i]!, format: 'jwk' });
      const data = Buffer.from('kakehashi');
      const alg = pub.alg === 'EdDSA' ? null : 'sha256';
      const signature = sign(alg, data, priv);
      expect(verify(alg, data, createPublicKey({ key: pub, format: 'jwk' }), signature)).toBe(true);
    }
  });

  it('generates cookie keys and a 32-byte DPoP nonce secret', () => {
    expect(first.cookieKeys).toHaveLength(1);
    expect(first.cookieKeys[0]).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(first.dpopNonceSecret).toHaveLength(32);
    expect(first.pairwiseSecret).toHaveLength(32);
    expect(first.pairwiseSecret.equals(first.dpopNonceSecret)).toBe(false);
  });

  it('returns identical material on the next load and generates nothing more', async () => {
    const again = await loadKeyMaterial(t.db, kek);
    expect(again).toEqual(first);
    const counts = await t.db.query<{ n: number }>('SELECT count(*)::int AS n FROM signing_keys');
    expect(counts.rows[0]?.n).toBe(3);
    const audit = await t.db.query<{ n: number }>(
      "SELECT count(*)::int AS n FROM audit_events WHERE type = 'keys.generated'",
    );
    expect(audit.rows[0]?.n).toBe(1);
  });

  it('stores no private members in public_jwk and nothing plaintext in secrets', async () => {
    const rows = await t.db.query<{
      kid: string;
      public_jwk: Record<string, unknown>;
      private_jwk_enc: string;
    }>('SELECT kid, public_jwk, private_jwk_enc FROM signing_keys');
    expect(rows.rows).toHaveLength(3);
    for (const row of rows.rows) {
      for (const m of PRIVATE_MEMBERS) expect(row.public_jwk).not.toHaveProperty(m);
      expect(row.private_jwk_enc).toMatch(/^v1\./);
      const priv = first.signingJwks.keys.find((k) => k.kid === row.kid)!;
      expect(row.private_jwk_enc).not.toContain(priv.d);
    }
    const secrets = await t.db.query<{ name: string; value_enc: string }>(
      'SELECT name, value_enc FROM secrets',
    );
    expect(secrets.rows.map((r) => r.name).sort()).toEqual([
      'cookie-keys',
      'dpop-nonce-secret',
      'pairwise-subject-secret',
    ]);
    const dump = JSON.stringify(secrets.rows);
    for (const r of secrets.rows) expect(r.value_enc).toMatch(/^v1\./);
    expect(dump).not.toContain(first.cookieKeys[0]);
    expect(dump).not.toContain(first.dpopNonceSecret.toString('base64url'));
    expect(dump).not.toContain(first.dpopNonceSecret.toString('base64'));
    expect(dump).not.toContain(first.dpopNonceSecret.toString('hex'));
    expect(dump).not.toContain(first.pairwiseSecret.toString('base64url'));
  });

  it('refuses to load with another key-encryption key, without writing anything', async () => {
    await expect(loadKeyMaterial(t.db, randomBytes(32))).rejects.toMatchObject({ code: 'ERR_KEY_DECRYPT' });
    // A partial store plus a wrong KEK must not get a new key sealed under that KEK next to the old ones.
    await t.db.query("UPDATE signing_keys SET status = 'previous' WHERE alg = 'EdDSA'");
    await expect(loadKeyMaterial(t.db, randomBytes(32))).rejects.toMatchObject({ code: 'ERR_KEY_DECRYPT' });
    const n = await t.db.query<{ n: number }>('SELECT count(*)::int AS n FROM signing_keys');
    expect(n.rows[0]?.n).toBe(3);
    // With the right KEK the missing current EdDSA key is generated; the old one stays published as previous.
    const healed = await loadKeyMaterial(t.db, kek);
    const oldEd = first.signingJwks.keys[2]!.kid;
    expect(healed.signingJwks.keys.map((k) => k.alg)).toEqual(['ES256', 'PS256', 'EdDSA']);
    expect(healed.signingJwks.keys[2]!.kid).not.toBe(oldEd);
    expect(healed.publicJwks.keys.map((k) => k.kid)).toEqual([...kids(healed), oldEd]);
    expect(healed.cookieKeys).toEqual(first.cookieKeys);
  });

  it('gives two nodes starting together on one empty database the same keys', async () => {
    // Two separate pools on a real server; with PGlite (one connection) both calls share one Db.
    const created = await createTestDatabase();
    const dbs: Db[] = [];
    try {
      if (created.url) {
        for (let i = 0; i < 2; i++)
          dbs.push(await openDb({ databaseUrl: created.url, dataDir: '', poolSize: 2 }));
      } else {
        dbs.push(await openDb({ dataDir: '', inMemory: true }));
      }
      await migrate(dbs[0]!);
      const results = await Promise.all([0, 1, 0, 1].map((i) => loadKeyMaterial(dbs[i % dbs.length]!, kek)));
      for (const r of results.slice(1)) {
        expect(kids(r)).toEqual(kids(results[0]!));
        expect(r.cookieKeys).toEqual(results[0]!.cookieKeys);
        expect(r.dpopNonceSecret.equals(results[0]!.dpopNonceSecret)).toBe(true);
        expect(r.pairwiseSecret.equals(results[0]!.pairwiseSecret)).toBe(true);
      }
      const n = await dbs[0]!.query<{ n: number }>('SELECT count(*)::int AS n FROM signing_keys');
      expect(n.rows[0]?.n).toBe(3);
    } finally {
      for (const db of dbs) await db.close();
      await created.drop();
    }
    expect(realPostgresUrl === undefined || dbs.length === 2).toBe(true);
  });
});
