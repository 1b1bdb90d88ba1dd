/**
 * The transmitter's SET signing keys (RS256 2048-bit for interop streams, ES256) and the key the
 * hub signs client assertions with when it manages streams at peers. Generated once per database
 * under an advisory lock (so every node ends with the same keys), private halves sealed with the
 * key-encryption key. Published at /ssf/jwks (SET keys) and /ssf/client-jwks (client key).
 */
import { createPrivateKey, generateKeyPairSync, type JsonWebKey, type KeyObject } from 'node:crypto';
import { recordAudit } from '../audit/index.ts';
import type { Db, Queryable } from '../db/index.ts';
import { decryptAtRest, encryptAtRest, jwkThumbprint } from '../keys/index.ts';
import type { SetAlg, SigningKey } from './jws.ts';

export type PublicJwk = JsonWebKey & { kty: string; kid: string; alg: string; use: 'sig' };

export interface SsfKeys {
  /** Current SET signing key per algorithm. */
  set: Record<SetAlg, SigningKey>;
  /** ES256 key for private_key_jwt at peers' token endpoints. */
  client: SigningKey;
  /** Public SET keys, current and previous (for SETs signed before a rotation). */
  setJwks: { keys: PublicJwk[] };
  clientJwks: { keys: PublicJwk[] };
}

type Purpose = 'set' | 'client';
const WANTED: readonly { purpose: Purpose; alg: SetAlg }[] = [
  { purpose: 'set', alg: 'RS256' },
  { purpose: 'set', alg: 'ES256' },
  { purpose: 'client', alg: 'ES256' },
];
/** Arbitrary constant, distinct from the other advisory locks of the hub. */
const SSF_KEYS_LOCK_ID = 0x73736b79;
const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi'] as const;

interface KeyRow {
  kid: string;
  purpose: Purpose;
  alg: SetAlg;
  status: 'current' | 'previous' | 'retired';
  public_jwk: PublicJwk;
  private_jwk_enc: string;
}

function generate(alg: SetAlg): KeyObject {
  // 2048 bits: the CAEP interoperability profile's minimum, and what RS256 signing at volume affords.
  return alg === 'RS256'
    ? generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey
    : generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
}

function publicOf(jwk: JsonWebKey & { kid: string; alg: string }): PublicJwk {
  const pub = { ...jwk } as PublicJwk;
  for (const m of PRIVATE_MEMBERS) delete pub[m];
  return { ...pub, use: 'sig' };
}

async function readKeys(q: Queryable): Promise<KeyRow[]> {
  const res = await q.query<KeyRow>(
    `SELECT kid, purpose, alg, status, public_jwk, private_jwk_enc FROM ssf_keys
     WHERE status IN ('current', 'previous') ORDER BY created_at DESC, kid`,
  );
  return res.rows;
}

const missing = (rows: KeyRow[]) =>
  WANTED.filter(
    (w) => !rows.some((r) => r.status === 'current' && r.purpose === w.purpose && r.alg === w.alg),
  );

function build(rows: KeyRow[], kek: Buffer): SsfKeys {
  const open = (row: KeyRow): SigningKey => {
    const jwk = JSON.parse(decryptAtRest(kek, row.private_jwk_enc, row.kid)) as JsonWebKey;
    return { kid: row.kid, alg: row.alg, key: createPrivateKey({ key: jwk, format: 'jwk' }) };
  };
  const current = (purpose: Purpose, alg: SetAlg) => {
    const row = rows.find((r) => r.status === 'current' && r.purpose === purpose && r.alg === alg);
    if (!row) throw new Error(`ssf key ${purpose}/${alg} missing`);
    return open(row);
  };
  return {
    set: { RS256: current('set', 'RS256'), ES256: current('set', 'ES256') },
    client: current('client', 'ES256'),
    setJwks: { keys: rows.filter((r) => r.purpose === 'set').map((r) => r.public_jwk) },
    clientJwks: {
      keys: rows.filter((r) => r.purpose === 'client' && r.status === 'current').map((r) => r.public_jwk),
    },
  };
}

/** Loads the SSF keys, generating any that are missing (first start). */
export async function loadSsfKeys(db: Db, kek: Buffer): Promise<SsfKeys> {
  const rows = await readKeys(db);
  if (missing(rows).length === 0) return build(rows, kek);
  return db.transaction(async (tx) => {
    await tx.query('SELECT pg_advisory_xact_lock($1)', [SSF_KEYS_LOCK_ID]);
    const inside = await readKeys(tx);
    const generated: { kid: string; purpose: Purpose; alg: SetAlg }[] = [];
    for (const { purpose, alg } of missing(inside)) {
      const exported = generate(alg).export({ format: 'jwk' });
      const kid = jwkThumbprint(exported as Record<string, unknown>);
      const privateJwk = { ...exported, kid, alg };
      await tx.query(
        `INSERT INTO ssf_keys (kid, purpose, alg, public_jwk, private_jwk_enc, status) VALUES ($1, $2, $3, $4, $5, 'current')`,
        [
          kid,
          purpose,
          alg,
          JSON.stringify(publicOf(privateJwk)),
          encryptAtRest(kek, JSON.stringify(privateJwk), kid),
        ],
      );
      generated.push({ kid, purpose, alg });
    }
    if (generated.length)
      await recordAudit(tx, {
        type: 'ssf.keys.generated',
        outcome: 'info',
        actor: 'system',
        data: { keys: generated },
      });
    return build(await readKeys(tx), kek);
  });
}
