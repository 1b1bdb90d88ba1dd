/**
 * X.509 path checks with node:crypto for the two places that trust certificates by a configured
 * anchor: passkey attestation (FIDO metadata roots) and JPKI-style signatures (a PEM bundle).
 * Deliberately small: signature and issuer-name chaining, validity windows, CA basic constraints
 * on every issuer, a bounded depth. No revocation check here: JPKI paths are checked against CRLs
 * by src/tls/crl.ts; attestation chains are not (see the docs' known limits).
 */
import { X509Certificate } from 'node:crypto';

const MAX_DEPTH = 5;

export class CertChainError extends Error {
  override name = 'CertChainError';
  readonly code:
    | 'ERR_CERT_MALFORMED'
    | 'ERR_CERT_EXPIRED'
    | 'ERR_CERT_NOT_YET_VALID'
    | 'ERR_CERT_UNTRUSTED'
    | 'ERR_CERT_NOT_CA';
  constructor(code: CertChainError['code'], message: string) {
    super(message);
    this.code = code;
  }
}

/** Every certificate in a PEM bundle (text with any number of CERTIFICATE blocks). */
export function parsePemBundle(pem: string): X509Certificate[] {
  const blocks = pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  return blocks.map((b) => new X509Certificate(b));
}

/** A certificate from PEM text or base64/base64url DER; CertChainError when it is none. */
export function parseCertificate(input: string | Uint8Array): X509Certificate {
  try {
    if (typeof input !== 'string') return new X509Certificate(Buffer.from(input));
    if (input.includes('-----BEGIN CERTIFICATE-----')) return new X509Certificate(input);
    return new X509Certificate(Buffer.from(input.replace(/\s+/g, ''), 'base64'));
  } catch (err) {
    throw new CertChainError('ERR_CERT_MALFORMED', `not an X.509 certificate (${(err as Error).message})`);
  }
}

function checkValidity(cert: X509Certificate, now: Date): void {
  if (Date.parse(cert.validFrom) > now.getTime())
    throw new CertChainError('ERR_CERT_NOT_YET_VALID', `certificate ${cert.serialNumber} is not valid yet`);
  if (Date.parse(cert.validTo) < now.getTime())
    throw new CertChainError('ERR_CERT_EXPIRED', `certificate ${cert.serialNumber} has expired`);
}

function issues(issuer: X509Certificate, cert: X509Certificate): boolean {
  return cert.checkIssued(issuer) && cert.verify(issuer.publicKey);
}

/**
 * Verifies that `leaf` chains, through `intermediates` (in any order), to one of `anchors`.
 * Returns the path from the leaf to the anchor. Throws CertChainError otherwise.
 */
export function verifyCertificateChain(
  leaf: X509Certificate,
  intermediates: X509Certificate[],
  anchors: X509Certificate[],
  now: Date = new Date(),
): X509Certificate[] {
  checkValidity(leaf, now);
  const path = [leaf];
  let current = leaf;
  for (let depth = 0; depth <= MAX_DEPTH; depth++) {
    const anchor = anchors.find((a) => issues(a, current));
    if (anchor) {
      if (!anchor.ca) throw new CertChainError('ERR_CERT_NOT_CA', 'the trust anchor is not a CA certificate');
      checkValidity(anchor, now);
      path.push(anchor);
      return path;
    }
    const next = intermediates.find((c) => !path.includes(c) && issues(c, current));
    if (!next) break;
    if (!next.ca)
      throw new CertChainError('ERR_CERT_NOT_CA', `issuer ${next.subject} is not a CA certificate`);
    checkValidity(next, now);
    path.push(next);
    current = next;
  }
  throw new CertChainError('ERR_CERT_UNTRUSTED', 'the certificate does not chain to a trusted anchor');
}
