/**
 * The hub's own keys as a relying party of banks, each generated at first use, sealed with the
 * key-encryption key in `secrets`, the same on every node:
 *   - the signing key (private_key_jwt client assertions and signed request objects, JAR): banks
 *     register its public part, served at /federation/jwks.json;
 *   - the DPoP key the bank's tokens are bound to (RFC 9449), when the bank offers DPoP. It is a
 *     key of its own so that a bank-side token binding never doubles as client authentication.
 *
 * The signing key rotates in two operator steps (`keys rotate-rp`, docs/rp-and-operations-review.md):
 * a next key is staged and published beside the current one while banks learn it; promoting it
 * makes it sign and keeps the replaced one published as previous (nodes still signing with it until
 * they reload) until the next rotation.
 */
import { generateKeyPairSync } from 'node:crypto';
import { recordAudit } from '../audit/index.ts';
import type { Db, Queryable } from '../db/index.ts';
import { decryptAtRest, encryptAtRest, jwkThumbprint, KEYS_LOCK_ID } from '../keys/index.ts';
import { FederationError } from './errors.ts';

const SECRET_NAME = 'federation.rp_signing_key';
const NEXT_NAME = `${SECRET_NAME}.next`;
const PREVIOUS_NAME = `${SECRET_NAME}.previous`;
export const DPOP_SECRET_NAME = 'federation.rp_dpop_key';

export interface RpKey {
  kid: string;
  privateKey: CryptoKey;
  /** Extractable: a DPoP proof carries it in its header. */
  publicKey: CryptoKey;
  publicJwk: JsonWebKey & { kid: string; alg: 'ES256'; use: 'sig' };
}

function newJwk(): JsonWebKey {
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  return privateKey.export({ format: 'jwk' }) as JsonWebKey;
}

async function toRpKey(jwk: JsonWebKey): Promise<RpKey> {
  const { d: _d, ...pub } = jwk;
  const kid = jwkThumbprint(pub as Record<string, unknown>);
  const privateKey = await crypto.subtle.importKey(
    'jwk',
    jwk,
    { name: 'ECDSA', namedCurve: 'P-256' },
    false,
    ['sign'],
  );
  const publicKey = await crypto.subtle.importKey('jwk', pub, { name: 'ECDSA', namedCurve: 'P-256' }, true, [
    'verify',
  ]);
  return { kid, privateKey, publicKey, publicJwk: { ...pub, kid, alg: 'ES256', use: 'sig' } };
}

const readSealed = async (db: Queryable, name: string) =>
  (await db.query<{ value_enc: string }>('SELECT value_enc FROM secrets WHERE name = $1', [name])).rows[0]
    ?.value_enc;

/** The private JWK sealed under `name`; ERR_RP_KEY when it does not open. */
function openJwk(kek: Buffer, sealed: string, name: string): JsonWebKey {
  try {
    return JSON.parse(decryptAtRest(kek, sealed, name)) as JsonWebKey;
  } catch (err) {
    throw unopenable(name, err);
  }
}

// Never generated anew over it (banks registered its public part): the operator must act.
const unopenable = (name: string, cause: unknown) =>
  new FederationError(
    'ERR_RP_KEY',
    `the hub's ${name} does not open with the configured key-encryption key (sealed with another KEK, or tampered; see docs/key-rotation.md)`,
    { cause },
  );

async function openRpKey(kek: Buffer, sealed: string, name: string): Promise<RpKey> {
  const jwk = openJwk(kek, sealed, name);
  try {
    return await toRpKey(jwk);
  } catch (err) {
    throw unopenable(name, err);
  }
}

/** The key, generated and stored when missing (a concurrent first start keeps the first one). */
export async function loadRpKey(db: Queryable, kek: Buffer, name: string = SECRET_NAME): Promise<RpKey> {
  let sealed = await readSealed(db, name);
  if (!sealed) {
    const created = await db.query(
      'INSERT INTO secrets (name, value_enc) VALUES ($1, $2) ON CONFLICT DO NOTHING',
      [name, encryptAtRest(kek, JSON.stringify(newJwk()), name)],
    );
    if (created.rowCount === 1)
      await recordAudit(db, {
        type: 'keys.generated',
        outcome: 'info',
        actor: 'system',
        data: { secrets: [name] },
      });
    sealed = await readSealed(db, name);
  }
  return openRpKey(kek, sealed!, name);
}

/** What banks see at /federation/jwks.json: the current signing key, a staged next, the previous. */
export async function rpPublicJwks(db: Queryable, kek: Buffer): Promise<{ keys: RpKey['publicJwk'][] }> {
  const current = await loadRpKey(db, kek);
  const keys = [current.publicJwk];
  for (const name of [NEXT_NAME, PREVIOUS_NAME]) {
    const sealed = await readSealed(db, name);
    if (sealed) keys.push((await openRpKey(kek, sealed, name)).publicJwk);
  }
  return { keys };
}

/**
 * Step 1 of a rotation: a next signing key, published at once and used for nothing until promoted
 * (the previous key of the last rotation stops being published). Again while one waits: that one.
 */
export async function stageRpKey(
  db: Db,
  kek: Buffer,
  actor: string,
): Promise<{ kid: string; created: boolean }> {
  return db.transaction(async (tx) => {
    // Key generation, rotation and rekey take this lock too.
    await tx.query('SELECT pg_advisory_xact_lock($1)', [KEYS_LOCK_ID]);
    await loadRpKey(tx, kek);
    const waiting = await readSealed(tx, NEXT_NAME);
    if (waiting) return { kid: (await openRpKey(kek, waiting, NEXT_NAME)).kid, created: false };
    const jwk = newJwk();
    await tx.query('INSERT INTO secrets (name, value_enc) VALUES ($1, $2)', [
      NEXT_NAME,
      encryptAtRest(kek, JSON.stringify(jwk), NEXT_NAME),
    ]);
    await tx.query('DELETE FROM secrets WHERE name = $1', [PREVIOUS_NAME]);
    const { kid } = await toRpKey(jwk);
    await recordAudit(tx, { type: 'keys.federation.staged', outcome: 'info', actor, data: { kid } });
    return { kid, created: true };
  });
}

/**
 * Step 2: the staged key signs from now on (every node within keys.pollSeconds); the replaced one
 * stays published as previous. Undefined when no key is staged.
 */
export async function promoteRpKey(
  db: Db,
  kek: Buffer,
  actor: string,
): Promise<{ kid: string; previousKid: string } | undefined> {
  return db.transaction(async (tx) => {
    await tx.query('SELECT pg_advisory_xact_lock($1)', [KEYS_LOCK_ID]);
    const next = await readSealed(tx, NEXT_NAME);
    if (!next) return undefined;
    const current = await loadRpKey(tx, kek);
    const currentJwk = openJwk(kek, (await readSealed(tx, SECRET_NAME))!, SECRET_NAME);
    const nextJwk = openJwk(kek, next, NEXT_NAME);
    // Sealed again under each name: the name is the sealed value's context (AAD).
    await tx.query(
      `INSERT INTO secrets (name, value_enc) VALUES ($1, $2)
       ON CONFLICT (name) DO UPDATE SET value_enc = EXCLUDED.value_enc`,
      [PREVIOUS_NAME, encryptAtRest(kek, JSON.stringify(currentJwk), PREVIOUS_NAME)],
    );
    await tx.query('UPDATE secrets SET value_enc = $2 WHERE name = $1', [
      SECRET_NAME,
      encryptAtRest(kek, JSON.stringify(nextJwk), SECRET_NAME),
    ]);
    await tx.query('DELETE FROM secrets WHERE name = $1', [NEXT_NAME]);
    const { kid } = await toRpKey(nextJwk);
    await recordAudit(tx, {
      type: 'keys.federation.promoted',
      outcome: 'info',
      actor,
      data: { kid, previousKid: current.kid },
    });
    return { kid, previousKid: current.kid };
  });
}
