/**
 * The JOSE checks the floor servers (floorServer.ts, flowFloorServer.ts) do per request, with
 * node:crypto directly: an ES256 compact JWS (P1363 signature converted to DER, the cheap path —
 * see src/keys/ecdsaSignature.ts), a DPoP proof (RFC 9449 §4.3) and a private_key_jwt client
 * assertion (RFC 7523, FAPI 2.0: `aud` is the issuer). Each returns the checked claims or the reason
 * it refused; the caller answers in its protocol's error format and records the jti.
 */
import { createHash, createPublicKey, type KeyObject, verify } from 'node:crypto';
import { p1363ToDer } from '../../../src/keys/index.ts';
import { ecThumbprint, type PublicEcJwk } from './jws.ts';

export interface CompactJws {
  header: Record<string, unknown>;
  claims: Record<string, unknown>;
  signingInput: Buffer;
  signature: Buffer;
}

/** The parts of a compact JWS, or undefined when it is not one (bad base64url or JSON). */
export function parseCompact(jws: string): CompactJws | undefined {
  const first = jws.indexOf('.');
  const second = jws.indexOf('.', first + 1);
  if (first < 0 || second < 0 || jws.indexOf('.', second + 1) >= 0) return undefined;
  try {
    const header = JSON.parse(Buffer.from(jws.slice(0, first), 'base64url').toString('utf8'));
    const claims = JSON.parse(Buffer.from(jws.slice(first + 1, second), 'base64url').toString('utf8'));
    if (typeof header !== 'object' || header === null || typeof claims !== 'object' || claims === null)
      return undefined;
    return {
      header,
      claims,
      signingInput: Buffer.from(jws.slice(0, second), 'latin1'),
      signature: Buffer.from(jws.slice(second + 1), 'base64url'),
    };
  } catch {
    return undefined;
  }
}

/** ES256 over the JWS signing input: a 64-byte r ‖ s signature, verified as DER. */
export function es256Valid(jws: CompactJws, key: KeyObject): boolean {
  return jws.signature.length === 64 && verify('sha256', jws.signingInput, key, p1363ToDer(jws.signature));
}

/** P-256 public keys imported from DPoP headers, by thumbprint (an import costs more than a verify). */
export class KeyCache {
  readonly #keys = new Map<string, KeyObject>();
  readonly #limit: number;
  constructor(limit = 10_000) {
    this.#limit = limit;
  }
  get(jkt: string, jwk: PublicEcJwk): KeyObject {
    let key = this.#keys.get(jkt);
    if (!key) {
      if (this.#keys.size >= this.#limit) this.#keys.clear();
      key = createPublicKey({ key: { kty: 'EC', crv: 'P-256', x: jwk.x, y: jwk.y }, format: 'jwk' });
      this.#keys.set(jkt, key);
    }
    return key;
  }
}

export interface DpopProof {
  jkt: string;
  jti: string;
  claims: Record<string, unknown>;
}

/**
 * A DPoP proof for `htm` `htu`: typ, alg ES256, a public P-256 jwk, the signature, htm, htu, iat
 * within `maxAgeS`, a jti. The caller checks ath and the key binding, and records the jti.
 */
export function checkDpopProof(
  proof: string,
  o: { htm: string; htu: string; keys: KeyCache; maxAgeS?: number },
): DpopProof | string {
  const jws = parseCompact(proof);
  if (!jws) return 'malformed proof';
  const { header, claims } = jws;
  const jwk = header.jwk as Record<string, unknown> | undefined;
  if (header.typ !== 'dpop+jwt' || header.alg !== 'ES256') return 'typ or alg';
  if (
    jwk?.kty !== 'EC' ||
    jwk.crv !== 'P-256' ||
    typeof jwk.x !== 'string' ||
    typeof jwk.y !== 'string' ||
    'd' in jwk
  )
    return 'jwk';
  const publicJwk = { kty: 'EC', crv: 'P-256', x: jwk.x, y: jwk.y } as const;
  const jkt = ecThumbprint(publicJwk);
  let key: KeyObject;
  try {
    key = o.keys.get(jkt, publicJwk);
  } catch {
    return 'jwk';
  }
  if (!es256Valid(jws, key)) return 'signature';
  if (claims.htm !== o.htm || claims.htu !== o.htu) return 'htm or htu';
  if (typeof claims.iat !== 'number' || Math.abs(Date.now() / 1000 - claims.iat) > (o.maxAgeS ?? 60))
    return 'iat';
  if (typeof claims.jti !== 'string' || claims.jti.length === 0 || claims.jti.length > 200) return 'jti';
  return { jkt, jti: claims.jti, claims };
}

export interface ClientAssertion {
  jti: string;
  exp: number;
}

/**
 * A private_key_jwt client assertion of `clientId`: alg ES256 (the key's), kid when given, the
 * signature, iss = sub = client_id, aud = the issuer (a string, as FAPI 2.0 wants), exp in the
 * future and at most `maxLifetimeS` after iat, a jti. The caller records the jti.
 */
export function checkClientAssertion(
  assertion: string,
  o: { clientId: string; kid: string; key: KeyObject; issuer: string; maxLifetimeS?: number },
): ClientAssertion | string {
  const jws = parseCompact(assertion);
  if (!jws) return 'malformed assertion';
  const { header, claims } = jws;
  if (header.alg !== 'ES256' || (header.kid !== undefined && header.kid !== o.kid)) return 'alg or kid';
  if (!es256Valid(jws, o.key)) return 'signature';
  if (claims.iss !== o.clientId || claims.sub !== o.clientId) return 'iss or sub';
  if (claims.aud !== o.issuer) return 'aud';
  const now = Date.now() / 1000;
  const { exp, iat } = claims;
  if (typeof exp !== 'number' || exp <= now) return 'exp';
  if (typeof iat !== 'number' || iat > now + 60 || exp - iat > (o.maxLifetimeS ?? 300)) return 'iat';
  if (typeof claims.jti !== 'string' || claims.jti.length === 0 || claims.jti.length > 200) return 'jti';
  return { jti: claims.jti, exp };
}

/** A replay-cache key: the hash of a namespaced jti (bounded length, nothing client-chosen stored). */
export const jtiKey = (namespace: string, jti: string): string =>
  createHash('sha256').update(`${namespace}:${jti}`).digest('base64url');
