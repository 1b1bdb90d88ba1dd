import { jwkThumbprint } from './jwkThumbprint.ts';
/**
 * Signing keys and shared secrets for oidc-provider, generated once per database and identical on
 * every node. Private halves and secrets are stored sealed with the key-encryption key.
 */

import type { JsonWebKey, KeyObject } from 'node:crypto';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { recordAudit } from '../audit/index.ts';
import type { Db, Queryable } from '../db/index.ts';
import { decryptAtRest, encryptAtRest } from './atRest.ts';

/** A JWK as handed to oidc-provider (and usable with node:crypto): always carries kid, alg and use. */
export type JsonWebKeyWithKid = JsonWebKey & { kty: string; kid: string; alg: string; use: 'sig' };

export interface KeyMaterial {
  /** Private JWKs for oidc-provider's `jwks` option: ES256 first (the default), then PS256, then EdDSA. Only 'current' keys. */
  signingJwks: { keys: JsonWebKeyWithKid[] };
  /** Public JWKS: current + next + previous keys (no private members). */
  publicJwks: { keys: JsonWebKeyWithKid[] };
  /**
   * Public keys that verify but never sign: next, previous, and keys retired less than
   * `verifyRetiredForSeconds` ago (an id_token_hint at logout may be older than the signing window).
   */
  verifyOnlyJwks: { keys: JsonWebKeyWithKid[] };
  /** Cookie signing keys for oidc-provider `cookies.keys` (random 32-byte base64url strings; newest first). */
  cookieKeys: string[];
  /** 32 bytes; oidc-provider features.dPoP.nonceSecret. */
  dpopNonceSecret: Buffer;
  /** 32 bytes; keys the pairwise subject identifiers (one per customer and client sector). */
  pairwiseSecret: Buffer;
}

/** Order matters: oidc-provider signs with the first key of an algorithm family it is asked for. */
export const SIGNING_ALGS = ['ES256', 'PS256', 'EdDSA'] as const;
const COOKIE_KEYS = 'cookie-keys';
const DPOP_NONCE_SECRET = 'dpop-nonce-secret';
const PAIRWISE_SECRET = 'pairwise-subject-secret';
/** Arbitrary constant, distinct from the migration lock: serialises first-start generation across nodes. */
export const KEYS_LOCK_ID = 0x6b6b6579;
const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi'] as const;

export type SigningAlg = (typeof SIGNING_ALGS)[number];

function generate(alg: SigningAlg): KeyObject {
  switch (alg) {
    case 'ES256':
      return generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
    case 'PS256':
      return generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;
    case 'EdDSA':
      return generateKeyPairSync('ed25519').privateKey;
  }
}

export function publicPart(jwk: JsonWebKeyWithKid): JsonWebKeyWithKid {
  const pub = { ...jwk };
  for (const member of PRIVATE_MEMBERS) delete pub[member];
  return pub;
}

export function newSigningKey(alg: SigningAlg): {
  privateJwk: JsonWebKeyWithKid;
  publicJwk: JsonWebKeyWithKid;
} {
  const key = generate(alg);
  const exported = key.export({ format: 'jwk' });
  const kid = jwkThumbprint(exported);
  const privateJwk: JsonWebKeyWithKid = { ...exported, kty: exported.kty!, kid, alg, use: 'sig' };
  return { privateJwk, publicJwk: publicPart(privateJwk) };
}

interface KeyRow {
  kid: string;
  alg: string;
  status: 'next' | 'current' | 'previous' | 'retired';
  public_jwk: JsonWebKeyWithKid;
  private_jwk_enc: string;
}

interface Stored {
  keys: KeyRow[];
  secrets: Map<string, string>;
}

async function readStored(q: Queryable, verifyRetiredForSeconds = 0): Promise<Stored> {
  const keys = await q.query<KeyRow>(
    `SELECT kid, alg, status, public_jwk, private_jwk_enc FROM signing_keys
     WHERE status IN ('next', 'current', 'previous')
        OR (status = 'retired' AND retired_at > now() - make_interval(secs => $1))
     ORDER BY activated_at DESC NULLS LAST, created_at DESC, kid`,
    [verifyRetiredForSeconds],
  );
  const secrets = await q.query<{ name: string; value_enc: string }>(
    'SELECT name, value_enc FROM secrets WHERE name = ANY($1)',
    [[COOKIE_KEYS, DPOP_NONCE_SECRET, PAIRWISE_SECRET]],
  );
  return { keys: keys.rows, secrets: new Map(secrets.rows.map((r) => [r.name, r.value_enc])) };
}

function missingAlgs(stored: Stored): SigningAlg[] {
  return SIGNING_ALGS.filter((alg) => !stored.keys.some((k) => k.status === 'current' && k.alg === alg));
}

function isComplete(stored: Stored): boolean {
  return (
    missingAlgs(stored).length === 0 &&
    stored.secrets.has(COOKIE_KEYS) &&
    stored.secrets.has(DPOP_NONCE_SECRET) &&
    stored.secrets.has(PAIRWISE_SECRET)
  );
}

/** Generates whatever is missing. Runs under the advisory lock, so it sees what any other node committed. */
async function generateMissing(tx: Queryable, kek: Buffer, stored: Stored): Promise<void> {
  const generated: { kid: string; alg: string }[] = [];
  for (const alg of missingAlgs(stored)) {
    const { privateJwk, publicJwk } = newSigningKey(alg);
    await tx.query(
      `INSERT INTO signing_keys (kid, alg, public_jwk, private_jwk_enc, status, activated_at)
       VALUES ($1, $2, $3, $4, 'current', now())`,
      [
        privateJwk.kid,
        alg,
        JSON.stringify(publicJwk),
        encryptAtRest(kek, JSON.stringify(privateJwk), privateJwk.kid),
      ],
    );
    generated.push({ kid: privateJwk.kid, alg });
  }
  const secrets: string[] = [];
  if (!stored.secrets.has(COOKIE_KEYS)) {
    const value = JSON.stringify([randomBytes(32).toString('base64url')]);
    await tx.query('INSERT INTO secrets (name, value_enc) VALUES ($1, $2)', [
      COOKIE_KEYS,
      encryptAtRest(kek, value, COOKIE_KEYS),
    ]);
    secrets.push(COOKIE_KEYS);
  }
  for (const name of [DPOP_NONCE_SECRET, PAIRWISE_SECRET]) {
    if (stored.secrets.has(name)) continue;
    const value = randomBytes(32).toString('base64url');
    await tx.query('INSERT INTO secrets (name, value_enc) VALUES ($1, $2)', [
      name,
      encryptAtRest(kek, value, name),
    ]);
    secrets.push(name);
  }
  await recordAudit(tx, {
    type: 'keys.generated',
    outcome: 'info',
    actor: 'system',
    data: { signingKeys: generated, secrets },
  });
}

function build(stored: Stored, kek: Buffer): KeyMaterial {
  const byStatus = (status: KeyRow['status']) =>
    stored.keys
      .filter((k) => k.status === status)
      .sort((a, b) => SIGNING_ALGS.indexOf(a.alg as SigningAlg) - SIGNING_ALGS.indexOf(b.alg as SigningAlg));
  const current = byStatus('current');
  const signing = current.map(
    (row) => JSON.parse(decryptAtRest(kek, row.private_jwk_enc, row.kid)) as JsonWebKeyWithKid,
  );
  const publicKeys = [...current, ...byStatus('next'), ...byStatus('previous')].map((row) =>
    publicPart(row.public_jwk),
  );
  const verifyOnly = [...byStatus('next'), ...byStatus('previous'), ...byStatus('retired')].map((row) =>
    publicPart(row.public_jwk),
  );

  const cookieKeys = JSON.parse(
    decryptAtRest(kek, stored.secrets.get(COOKIE_KEYS)!, COOKIE_KEYS),
  ) as string[];
  const secret = (name: string) =>
    Buffer.from(decryptAtRest(kek, stored.secrets.get(name)!, name), 'base64url');
  return {
    signingJwks: { keys: signing },
    publicJwks: { keys: publicKeys },
    verifyOnlyJwks: { keys: verifyOnly },
    cookieKeys,
    dpopNonceSecret: secret(DPOP_NONCE_SECRET),
    pairwiseSecret: secret(PAIRWISE_SECRET),
  };
}

/**
 * Loads keys from the database, generating what is missing at first start. Generation runs in one
 * transaction under pg_advisory_xact_lock and re-reads inside it, so nodes starting together on one
 * database end with the same keys. kid = RFC 7638 thumbprint of the public key.
 */
export async function loadKeyMaterial(
  db: Db,
  kek: Buffer,
  options: { verifyRetiredForSeconds?: number } = {},
): Promise<KeyMaterial> {
  const retired = options.verifyRetiredForSeconds ?? 0;
  const stored = await readStored(db, retired);
  if (isComplete(stored)) return build(stored, kek);
  return db.transaction(async (tx) => {
    await tx.query('SELECT pg_advisory_xact_lock($1)', [KEYS_LOCK_ID]);
    const inside = await readStored(tx, retired);
    if (isComplete(inside)) return build(inside, kek);
    await generateMissing(tx, kek, inside);
    // Opening everything before commit: with a wrong KEK nothing new is written next to the old keys.
    return build(await readStored(tx, retired), kek);
  });
}
