/**
 * A throwaway PKI for mTLS tests: a CA and client certificates it issues (ECDSA P-256, EKU clientAuth,
 * with the subject and SANs a test asks for), and self-signed client certificates — built with
 * @peculiar/x509 like the hub's own dev CA (src/tls).
 */
import { createPrivateKey, X509Certificate } from 'node:crypto';
import type * as X509 from '@peculiar/x509';
import { loadX509 } from '../../src/tls/index.ts';

const EC: EcKeyGenParams = { name: 'ECDSA', namedCurve: 'P-256' };
const SIGN: EcdsaParams = { name: 'ECDSA', hash: 'SHA-256' };
const HOUR = 3_600_000;

export interface TestCertificate {
  certPem: string;
  keyPem: string;
  /** base64 DER, as in a JWK's x5c. */
  x5c: string;
  /** x5t#S256 (RFC 8705 §3.1). */
  thumbprint: string;
  /** Hex, as the issuer's CRL lists it. */
  serialNumber: string;
}

export interface TestCa extends TestCertificate {
  subject: string;
  /** Issues a client certificate. */
  issue(o: ClientCertOptions): Promise<TestCertificate>;
  /** A PEM CRL of this CA listing `revoked`; valid from an hour ago until `nextUpdate` (default in a day). */
  crl(o?: { revoked?: TestCertificate[]; nextUpdate?: Date }): Promise<string>;
}

export interface ClientCertOptions {
  subject: string;
  san?: X509.JsonGeneralName[];
  /** Default: valid from an hour ago for a day. */
  notBefore?: Date;
  notAfter?: Date;
  /** Default ['clientAuth']. */
  eku?: string[];
}

let serial = 1;
const nextSerial = () => (serial++).toString(16).padStart(4, '0');

async function pkcs8Pem(key: CryptoKey): Promise<string> {
  const der = Buffer.from(await crypto.subtle.exportKey('pkcs8', key));
  return createPrivateKey({ key: der, format: 'der', type: 'pkcs8' }).export({
    format: 'pem',
    type: 'pkcs8',
  }) as string;
}

async function describe(cert: X509.X509Certificate, key: CryptoKey): Promise<TestCertificate> {
  const certPem = cert.toString('pem');
  const fp = new X509Certificate(certPem).fingerprint256.replaceAll(':', '');
  return {
    certPem,
    keyPem: await pkcs8Pem(key),
    x5c: Buffer.from(cert.rawData).toString('base64'),
    thumbprint: Buffer.from(fp, 'hex').toString('base64url'),
    serialNumber: cert.serialNumber,
  };
}

async function clientExtensions(x509: typeof X509, o: ClientCertOptions, publicKey: CryptoKey) {
  return [
    new x509.BasicConstraintsExtension(false, undefined, true),
    new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
    new x509.ExtendedKeyUsageExtension(
      (o.eku ?? ['clientAuth']).map((u) =>
        u === 'clientAuth' ? x509.ExtendedKeyUsage.clientAuth : x509.ExtendedKeyUsage.serverAuth,
      ),
    ),
    ...(o.san?.length ? [new x509.SubjectAlternativeNameExtension(o.san)] : []),
    await x509.SubjectKeyIdentifierExtension.create(publicKey),
  ];
}

export async function createTestCa(name = 'CN=Kakehashi Test Client CA, O=Test, C=JP'): Promise<TestCa> {
  const x509 = await loadX509();
  const keys = (await crypto.subtle.generateKey(EC, true, ['sign', 'verify'])) as CryptoKeyPair;
  const now = Date.now();
  const ca = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: nextSerial(),
    name,
    notBefore: new Date(now - HOUR),
    notAfter: new Date(now + 24 * HOUR),
    signingAlgorithm: SIGN,
    keys,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return {
    ...(await describe(ca, keys.privateKey)),
    subject: name,
    async issue(o) {
      const leaf = (await crypto.subtle.generateKey(EC, true, ['sign', 'verify'])) as CryptoKeyPair;
      const cert = await x509.X509CertificateGenerator.create({
        serialNumber: nextSerial(),
        subject: o.subject,
        issuer: ca.subject,
        notBefore: o.notBefore ?? new Date(Date.now() - HOUR),
        notAfter: o.notAfter ?? new Date(Date.now() + 24 * HOUR),
        signingAlgorithm: SIGN,
        publicKey: leaf.publicKey,
        signingKey: keys.privateKey,
        extensions: [
          ...(await clientExtensions(x509, o, leaf.publicKey)),
          await x509.AuthorityKeyIdentifierExtension.create(ca.publicKey),
        ],
      });
      return describe(cert, leaf.privateKey);
    },
    async crl(o = {}) {
      const hourAgo = new Date(Date.now() - HOUR);
      const crl = await x509.X509CrlGenerator.create({
        issuer: ca.subject,
        thisUpdate: hourAgo,
        nextUpdate: o.nextUpdate ?? new Date(Date.now() + 24 * HOUR),
        signingAlgorithm: SIGN,
        signingKey: keys.privateKey,
        entries: (o.revoked ?? []).map((c) => ({
          serialNumber: c.serialNumber,
          revocationDate: hourAgo,
          reason: x509.X509CrlReason.keyCompromise,
        })),
      });
      return crl.toString('pem');
    },
  };
}

export async function createSelfSigned(o: ClientCertOptions): Promise<TestCertificate> {
  const x509 = await loadX509();
  const keys = (await crypto.subtle.generateKey(EC, true, ['sign', 'verify'])) as CryptoKeyPair;
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: nextSerial(),
    name: o.subject,
    notBefore: o.notBefore ?? new Date(Date.now() - HOUR),
    notAfter: o.notAfter ?? new Date(Date.now() + 24 * HOUR),
    signingAlgorithm: SIGN,
    keys,
    extensions: await clientExtensions(x509, o, keys.publicKey),
  });
  return describe(cert, keys.privateKey);
}
