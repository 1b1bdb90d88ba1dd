/**
 * Attestation policy: which registered passkeys count as hardware the hub trusts (acr `phrh`).
 * The operator supplies FIDO metadata statements in a file (no network fetch); a credential is
 * "attested" when its attestation statement was verified by @simplewebauthn/server (signature by
 * the attestation certificate) and that certificate chains to a root the metadata lists for the
 * credential's AAGUID. Everything else still registers, as `phr`.
 */
import type { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { decodeAttestationObject } from '@simplewebauthn/server/helpers';
import { CertChainError, parseCertificate, verifyCertificateChain } from './certChain.ts';

export interface AttestationPolicy {
  mode: 'none' | 'direct';
  /** AAGUID (lower-case, dashed) → attestation roots from its metadata statement. */
  roots: Map<string, X509Certificate[]>;
}

export interface AttestationSettings {
  policy: 'none' | 'direct';
  metadataFile?: string | undefined;
  allowedAaguids?: string[] | undefined;
}

export const NO_ATTESTATION: AttestationPolicy = { mode: 'none', roots: new Map() };

interface MetadataStatement {
  aaguid?: unknown;
  attestationRootCertificates?: unknown;
}

/** Reads the operator's metadata file: a JSON array of statements, or an MDS3 payload `{entries}`. */
export function loadAttestationPolicy(settings: AttestationSettings): AttestationPolicy {
  if (settings.policy === 'none' || !settings.metadataFile) return NO_ATTESTATION;
  const file = settings.metadataFile;
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    throw new Error(`authn.attestation.metadataFile: cannot read ${file} (${(err as Error).message})`);
  }
  const statements: MetadataStatement[] = Array.isArray(parsed)
    ? parsed
    : Array.isArray((parsed as { entries?: unknown })?.entries)
      ? (parsed as { entries: Array<{ metadataStatement?: MetadataStatement }> }).entries
          .map((e) => e.metadataStatement)
          .filter((s): s is MetadataStatement => !!s)
      : [];
  const allowed = settings.allowedAaguids?.map((a) => a.toLowerCase());
  const roots = new Map<string, X509Certificate[]>();
  for (const s of statements) {
    if (typeof s.aaguid !== 'string' || !Array.isArray(s.attestationRootCertificates)) continue;
    const aaguid = s.aaguid.toLowerCase();
    if (allowed && !allowed.includes(aaguid)) continue;
    try {
      roots.set(
        aaguid,
        s.attestationRootCertificates.map((c) => parseCertificate(String(c))),
      );
    } catch (err) {
      throw new Error(
        `authn.attestation.metadataFile: bad root certificate for ${aaguid} (${(err as Error).message})`,
      );
    }
  }
  return { mode: 'direct', roots };
}

/**
 * Whether a registration's attestation satisfies the policy. Call only after
 * verifyRegistrationResponse succeeded (it checked the statement's signature with x5c[0]).
 */
export function attestationVerified(
  policy: AttestationPolicy,
  info: { fmt: string; aaguid: string; attestationObject: Uint8Array },
): { verified: boolean; reason: string } {
  if (policy.mode === 'none') return { verified: false, reason: 'policy_none' };
  if (info.fmt === 'none') return { verified: false, reason: 'no_attestation' };
  const roots = policy.roots.get(info.aaguid.toLowerCase());
  if (!roots?.length) return { verified: false, reason: 'aaguid_not_in_metadata' };
  const x5c = decodeAttestationObject(new Uint8Array(info.attestationObject)).get('attStmt').get('x5c');
  if (!x5c?.length) return { verified: false, reason: 'no_certificate' };
  try {
    const [leaf, ...rest] = x5c.map((der) => parseCertificate(der));
    verifyCertificateChain(leaf!, rest, roots);
    return { verified: true, reason: 'chain_verified' };
  } catch (err) {
    if (err instanceof CertChainError) return { verified: false, reason: err.code };
    throw err;
  }
}
