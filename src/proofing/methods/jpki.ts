/**
 * JPKI-style signature (as with the signing certificate of a My Number card): the hub issues a
 * random challenge; the customer's card signs exactly those bytes; the hub checks that the
 * certificate chains to a configured trust anchor, is within its validity, allows signing (key
 * usage digitalSignature or nonRepudiation), that no certificate of the path is revoked (CRL, see
 * ../../tls/crl.ts), that the signature is over the challenge, and that the name and the date of
 * birth the certificate states (J-LIS subjectAltName entries, ./jpkiIdentity.ts) are the
 * customer's registered ones — the name alone would let a namesake's genuine card prove someone
 * else. The challenge is single-use and short-lived (the engine spends the flow on the first answer).
 */
import { type X509Certificate as NodeX509, randomBytes, verify as verifySignature } from 'node:crypto';
import { readFileSync } from 'node:fs';
import {
  CertChainError,
  parseCertificate,
  parsePemBundle,
  type RequestMeta,
  verifyCertificateChain,
} from '../../authn/index.ts';
import { type CrlChecker, CrlError, type CrlSettings, createCrlChecker, loadX509 } from '../../tls/index.ts';
import { mismatchError, ProofingError } from '../errors.ts';
import type { ProofingFlow, ProofingMethod, VerifiedIdentity } from '../method.ts';
import { namesMatch, normalizeBirthdate } from '../names.ts';
import { type JpkiIdentity, JpkiSanError, jpkiIdentity, SUBJECT_ALT_NAME_OID } from './jpkiIdentity.ts';

export interface JpkiSettings {
  trustAnchorsFile: string;
  challengeTtl: number;
  revocation: CrlSettings;
}

export interface JpkiStart {
  /** base64url of the bytes to sign. */
  challenge: string;
}

export interface JpkiAnswer {
  /** The signing certificate: PEM, or base64 DER. */
  certificate: string;
  /** Intermediate certificates, if the anchor is not the direct issuer. */
  chain?: string[];
  /** base64url (or base64) of the signature over the challenge bytes (SHA-256; RSA PKCS#1 v1.5 or ECDSA DER). */
  signature: string;
}

export function loadTrustAnchors(file: string): NodeX509[] {
  let anchors: NodeX509[];
  try {
    anchors = parsePemBundle(readFileSync(file, 'utf8'));
  } catch (err) {
    throw new Error(`proofing.jpki.trustAnchorsFile: cannot read ${file} (${(err as Error).message})`);
  }
  if (anchors.length === 0) throw new Error(`proofing.jpki.trustAnchorsFile: no certificate in ${file}`);
  return anchors;
}

export function jpkiMethod(settings: JpkiSettings): ProofingMethod<JpkiStart, JpkiAnswer> {
  const anchors = loadTrustAnchors(settings.trustAnchorsFile);
  const revocation: CrlChecker = createCrlChecker(settings.revocation);
  return {
    name: 'jpki',
    ttlSeconds: settings.challengeTtl,
    async begin() {
      const challenge = randomBytes(32).toString('base64url');
      return { secret: { challenge }, reply: { challenge } };
    },

    async verify(flow: ProofingFlow, answer: JpkiAnswer, _meta: RequestMeta): Promise<VerifiedIdentity> {
      const challenge = typeof flow.secret.challenge === 'string' ? flow.secret.challenge : '';
      if (!challenge) throw new ProofingError('ERR_PROOFING_FLOW', { reason: 'no_challenge' });
      let leaf: NodeX509;
      let path: NodeX509[];
      try {
        leaf = parseCertificate(answer.certificate);
        const intermediates = (answer.chain ?? []).slice(0, 4).map((c) => parseCertificate(c));
        path = verifyCertificateChain(leaf, intermediates, anchors);
      } catch (err) {
        if (!(err instanceof CertChainError)) throw err;
        throw new ProofingError('ERR_PROOFING_CERTIFICATE', { reason: err.code, cause: err });
      }
      const evidence: Record<string, unknown> = {
        issuer: leaf.issuer.replace(/\n/g, ', '),
        serialNumber: leaf.serialNumber,
        validTo: new Date(leaf.validTo).toISOString(),
        anchor: path.at(-1)!.subject.replace(/\n/g, ', '),
      };
      const x509 = await loadX509();
      const parsed = new x509.X509Certificate(leaf.raw);
      const usage = parsed.getExtension(x509.KeyUsagesExtension);
      const signing = x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.nonRepudiation;
      if (!usage || (usage.usages & signing) === 0)
        throw new ProofingError('ERR_PROOFING_CERTIFICATE', { reason: 'key_usage', evidence });
      let identity: JpkiIdentity;
      try {
        const san = parsed.getExtension(SUBJECT_ALT_NAME_OID);
        identity = jpkiIdentity(san ? new Uint8Array(san.value) : undefined);
      } catch (err) {
        if (!(err instanceof JpkiSanError)) throw err;
        throw new ProofingError('ERR_PROOFING_CERTIFICATE', {
          reason: 'san_malformed',
          evidence,
          cause: err,
        });
      }

      const signature = Buffer.from(String(answer.signature ?? ''), 'base64url');
      let valid = false;
      try {
        valid = verifySignature('sha256', Buffer.from(challenge, 'base64url'), leaf.publicKey, signature);
      } catch {
        valid = false;
      }
      if (!valid)
        throw new ProofingError('ERR_PROOFING_SIGNATURE', { reason: 'signature_invalid', evidence });
      // Revocation last among the certificate checks: it may go to the network.
      try {
        evidence.revocation = (await revocation.check(path)).checked;
      } catch (err) {
        if (!(err instanceof CrlError)) throw err;
        evidence.revocation = err.detail;
        throw err.code === 'ERR_CERT_REVOKED'
          ? new ProofingError('ERR_PROOFING_CERTIFICATE_REVOKED', { reason: err.code, evidence, cause: err })
          : new ProofingError('ERR_PROOFING_REVOCATION_UNAVAILABLE', {
              reason: err.code,
              evidence,
              cause: err,
            });
      }

      // A certificate that does not state both (e.g. the card's user-authentication certificate,
      // 利用者証明用, which names nobody) cannot prove who someone is.
      const missing = [identity.name ? '' : 'no_name', identity.birthDate ? '' : 'no_birthdate'].filter(
        Boolean,
      );
      if (missing.length)
        throw new ProofingError('ERR_PROOFING_CERTIFICATE_NO_IDENTITY', {
          reason: missing.join(','),
          evidence,
        });
      const customer = flow.customer;
      const checks = {
        name: !!customer && namesMatch(identity.name, customer.nameKanji),
        birthdate: !!customer?.birthDate && identity.birthDate === normalizeBirthdate(customer.birthDate),
      };
      evidence.checks = checks;
      if (!customer)
        throw new ProofingError('ERR_PROOFING_MISMATCH', { reason: 'customer_unknown', evidence });
      if (!checks.name || !checks.birthdate) throw mismatchError(checks, evidence);
      return { customerId: customer.id, evidence };
    },
  };
}
