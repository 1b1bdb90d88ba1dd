/**
 * The hub's own keys as a relying party of banks, each generated at first use, sealed with the
 * key-encryption key in `secrets`, the same on every node:
 *   - the signing key (private_key_jwt client assertions and signed request objects, JAR): banks
 *     register its public part, served at /federation/jwks.json;
 *   - the DPoP key the bank's tokens are bound to (RFC 9449), when the bank offers DPoP. It is a
 *     key of its own so that a bank-side token binding never doubles as client authentication.
 */
import { generateKeyPairSync } from 'node:crypto';
import { recordAudit } from '../audit/index.ts';
import type { Queryable } from '../db/index.ts';
import { decryptAtRest, encryptAtRest, jwkThumbprint } from '../keys/index.ts';
import { FederationError } from './errors.ts';

const SECRET_NAME = 'federation.rp_signing_key';
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

/** The key, generated and stored when missing (a concurrent first start keeps the first one). */
export async function loadRpKey(db: Queryable, kek: Buffer, name: string = SECRET_NAME): Promise<RpKey> {
  const read = async () =>
    (await db.query<{ value_enc: string }>('SELECT value_enc FROM secrets WHERE name = $1', [name])).rows[0]
      ?.value_enc;
  let sealed = await read();
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
    sealed = await read();
  }
  try {
    return await toRpKey(JSON.parse(decryptAtRest(kek, sealed!, name)) as JsonWebKey);
  } catch (err) {
    // Never generated anew over it (banks registered its public part): the operator must act.
    throw new FederationError(
      'ERR_RP_KEY',
      `the hub's ${name} does not open with the configured key-encryption key (sealed with another KEK, or tampered; see docs/key-rotation.md)`,
      { cause: err },
    );
  }
}
