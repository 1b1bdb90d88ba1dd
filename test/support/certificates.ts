/**
 * Test PKI: CAs and the certificates they sign (ECDSA P-256 or RSA 2048) — mTLS client certificates
 * (EKU clientAuth, subject and SANs as a test asks) and self-signed ones, passkey attestation and
 * JPKI-style signing certificates — the CRLs a CA issues, and a loopback HTTP server that serves them
 * as a CRL distribution point. Built with @peculiar/x509 like the dev TLS CA (src/tls).
 */
import { createHash, createPrivateKey, sign } from 'node:crypto';
import { createServer } from 'node:http';
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import type { RegistrationResponseJSON } from '@simplewebauthn/server';
import { isoCBOR } from '@simplewebauthn/server/helpers';
import type { PasskeyEmulator } from './passkeyEmulator.ts';

const webcrypto: Crypto = globalThis.crypto;
x509.cryptoProvider.set(webcrypto);
const EC = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;
const RSA = {
  name: 'RSASSA-PKCS1-v1_5',
  hash: 'SHA-256',
  publicExponent: new Uint8Array([1, 0, 1]),
  modulusLength: 2048,
} as const;
const DAY = 86_400_000;

export interface TestCert {
  certPem: string;
  certDer: Buffer;
  keyPem: string;
  cert: x509.X509Certificate;
  keys: CryptoKeyPair;
  /** base64 DER, as in a JWK's x5c. */
  x5c: string;
  /** x5t#S256 (RFC 8705 §3.1). */
  thumbprint: string;
  /** Hex, as the issuer's CRL lists it. */
  serialNumber: string;
}

/** A CA with shortcuts for mTLS tests. */
export interface TestCa extends TestCert {
  subject: string;
  /** Issues a client certificate (EKU clientAuth unless `eku` says otherwise). */
  issue(o: ClientCertOptions): Promise<TestCert>;
  /** A PEM CRL of this CA listing `revoked`; valid from an hour ago until `nextUpdate` (default in a day). */
  crl(o?: { revoked?: TestCert[]; nextUpdate?: Date }): Promise<string>;
}

async function pem(key: CryptoKey): Promise<string> {
  const der = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', key));
  return `-----BEGIN PRIVATE KEY-----\n${der
    .toString('base64')
    .match(/.{1,64}/g)!
    .join('\n')}\n-----END PRIVATE KEY-----\n`;
}

function serial(): string {
  return `01${Buffer.from(webcrypto.getRandomValues(new Uint8Array(15))).toString('hex')}`;
}

async function wrap(cert: x509.X509Certificate, keys: CryptoKeyPair): Promise<TestCert> {
  const certDer = Buffer.from(cert.rawData);
  return {
    cert,
    keys,
    certPem: cert.toString('pem'),
    certDer,
    keyPem: await pem(keys.privateKey),
    x5c: certDer.toString('base64'),
    thumbprint: createHash('sha256').update(certDer).digest('base64url'),
    serialNumber: cert.serialNumber,
  };
}

export async function createTestCa(name = 'CN=Test Root CA, O=Kakehashi tests, C=JP'): Promise<TestCa> {
  const keys = await webcrypto.subtle.generateKey(EC, true, ['sign', 'verify']);
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial(),
    name,
    notBefore: new Date(Date.now() - DAY),
    notAfter: new Date(Date.now() + 365 * DAY),
    signingAlgorithm: EC,
    keys,
    extensions: [
      new x509.BasicConstraintsExtension(true, 1, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  const ca = await wrap(cert, keys);
  return {
    ...ca,
    subject: name,
    issue: (o) => issueCertificate(ca, { ...o, eku: o.eku ?? ['clientAuth'] }),
    async crl(o = {}) {
      const der = await issueCrl(ca, { revoked: o.revoked ?? [], nextUpdate: o.nextUpdate });
      return new x509.X509Crl(new Uint8Array(der)).toString('pem');
    },
  };
}

export interface IssueOptions {
  subject: string;
  /** Default digitalSignature (JPKI signing certificates carry nonRepudiation too). */
  keyUsage?: number;
  /** Extended key usages (none by default; client certificates: clientAuth). */
  eku?: Array<'clientAuth' | 'serverAuth'>;
  san?: x509.JsonGeneralName[];
  ca?: boolean;
  rsa?: boolean;
  notBefore?: Date;
  notAfter?: Date;
  /** CRL distribution point URL(s) written into the certificate. */
  crlUrls?: string[];
  /**
   * The basic four facts of a JPKI signing certificate, as J-LIS writes them: subjectAltName
   * otherName entries under 1.2.392.200149.8.5.5 (UTF8String). `birthDate` as on the card:
   * `EYYYYMMDD` (era digit, Gregorian date). Replaces `san`.
   */
  jpki?: { name?: string; birthDate?: string; gender?: string; address?: string };
}

/** What an mTLS client certificate is made of. */
export type ClientCertOptions = Pick<IssueOptions, 'subject' | 'san' | 'notBefore' | 'notAfter' | 'eku'>;

/** DER: one element (short or long length form). */
function der(tag: number, ...content: Buffer[]): Buffer {
  const body = Buffer.concat(content);
  const n = body.length;
  const length = n < 0x80 ? [n] : n < 0x100 ? [0x81, n] : [0x82, n >> 8, n & 0xff];
  return Buffer.concat([Buffer.from([tag, ...length]), body]);
}

function derOid(oid: string): Buffer {
  const [a = 0, b = 0, ...rest] = oid.split('.').map(Number);
  const bytes = [40 * a + b];
  for (const arc of rest) {
    const base128 = [arc & 0x7f];
    for (let v = Math.floor(arc / 128); v > 0; v = Math.floor(v / 128)) base128.unshift((v & 0x7f) | 0x80);
    bytes.push(...base128);
  }
  return der(0x06, Buffer.from(bytes));
}

/** GeneralNames of otherName [0] { OID, [0] EXPLICIT UTF8String } for each fact given. */
function jpkiSubjectAltName(facts: NonNullable<IssueOptions['jpki']>): Buffer {
  const arcs = { name: 1, gender: 3, birthDate: 4, address: 5 } as const;
  const names = Object.entries(facts)
    .filter(([, v]) => v !== undefined)
    .map(([k, v]) =>
      der(
        0xa0,
        derOid(`1.2.392.200149.8.5.5.${arcs[k as keyof typeof arcs]}`),
        der(0xa0, der(0x0c, Buffer.from(String(v), 'utf8'))),
      ),
    );
  return der(0x30, ...names);
}

/** The extensions of a certificate `o` describes, with the key identifiers of its key (and issuer's). */
async function extensionsOf(o: IssueOptions, publicKey: CryptoKey, issuer?: TestCert) {
  return [
    new x509.BasicConstraintsExtension(o.ca ?? false, undefined, true),
    new x509.KeyUsagesExtension(
      o.keyUsage ??
        (o.ca
          ? x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign
          : x509.KeyUsageFlags.digitalSignature),
      true,
    ),
    ...(o.eku?.length
      ? [new x509.ExtendedKeyUsageExtension(o.eku.map((u) => x509.ExtendedKeyUsage[u]))]
      : []),
    ...(o.jpki
      ? [new x509.Extension('2.5.29.17', false, new Uint8Array(jpkiSubjectAltName(o.jpki)))]
      : o.san?.length
        ? [new x509.SubjectAlternativeNameExtension(o.san)]
        : []),
    ...(o.crlUrls?.length ? [new x509.CRLDistributionPointsExtension(o.crlUrls)] : []),
    await x509.SubjectKeyIdentifierExtension.create(publicKey),
    ...(issuer ? [await x509.AuthorityKeyIdentifierExtension.create(issuer.cert.publicKey)] : []),
  ];
}

export async function issueCertificate(issuer: TestCert, o: IssueOptions): Promise<TestCert> {
  const keys = await webcrypto.subtle.generateKey(o.rsa ? RSA : EC, true, ['sign', 'verify']);
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serial(),
    subject: o.subject,
    issuer: issuer.cert.subject,
    notBefore: o.notBefore ?? new Date(Date.now() - DAY),
    notAfter: o.notAfter ?? new Date(Date.now() + 30 * DAY),
    signingAlgorithm: EC,
    publicKey: keys.publicKey,
    signingKey: issuer.keys.privateKey,
    extensions: await extensionsOf(o, keys.publicKey, issuer),
  });
  return wrap(cert, keys);
}

/** A self-signed client certificate (self_signed_tls_client_auth, or a key to bind tokens to). */
export async function createSelfSigned(o: ClientCertOptions): Promise<TestCert> {
  const keys = await webcrypto.subtle.generateKey(EC, true, ['sign', 'verify']);
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial(),
    name: o.subject,
    notBefore: o.notBefore ?? new Date(Date.now() - DAY),
    notAfter: o.notAfter ?? new Date(Date.now() + 30 * DAY),
    signingAlgorithm: EC,
    keys,
    extensions: await extensionsOf({ ...o, eku: o.eku ?? ['clientAuth'] }, keys.publicKey),
  });
  return wrap(cert, keys);
}

export interface CrlOptions {
  /** Certificates listed as revoked (revocation date: an hour ago). */
  revoked?: TestCert[];
  /** Default an hour ago. */
  thisUpdate?: Date;
  /** Default in a day; `null` leaves it out. */
  nextUpdate?: Date | null | undefined;
  /** Sign with another key than the issuer's (an illegitimate CRL). */
  signedBy?: TestCert;
}

/** A DER CRL issued by `issuer`. */
export async function issueCrl(issuer: TestCert, o: CrlOptions = {}): Promise<Buffer> {
  const now = Date.now();
  const crl = await x509.X509CrlGenerator.create({
    issuer: issuer.cert.subject,
    thisUpdate: o.thisUpdate ?? new Date(now - 3_600_000),
    ...(o.nextUpdate === null ? {} : { nextUpdate: o.nextUpdate ?? new Date(now + DAY) }),
    signingAlgorithm: EC,
    signingKey: (o.signedBy ?? issuer).keys.privateKey,
    entries: (o.revoked ?? []).map((c) => ({
      serialNumber: c.cert.serialNumber,
      revocationDate: new Date(now - 3_600_000),
      reason: x509.X509CrlReason.keyCompromise,
    })),
  });
  return Buffer.from(crl.rawData);
}

export interface CrlServer {
  /** http://127.0.0.1:port/<name> */
  url(name: string): string;
  /** What the URL answers from now on (undefined: 404). */
  set(name: string, der: Buffer | undefined): void;
  /** The URL never answers (a distribution point that hangs). */
  stall(name: string): void;
  /** How many times each name was fetched. */
  hits: Map<string, number>;
  close(): Promise<void>;
}

/** A CRL distribution point on loopback (plain HTTP, as CAs publish CRLs: they are signed). */
export async function startCrlServer(): Promise<CrlServer> {
  const crls = new Map<string, Buffer>();
  const stalled = new Set<string>();
  const hits = new Map<string, number>();
  const server = createServer((req, res) => {
    const name = (req.url ?? '/').slice(1);
    hits.set(name, (hits.get(name) ?? 0) + 1);
    if (stalled.has(name)) return;
    const body = crls.get(name);
    if (!body) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { 'content-type': 'application/pkix-crl', 'content-length': body.length }).end(body);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  return {
    url: (name) => `http://127.0.0.1:${port}/${name}`,
    set: (name, der) => (der ? crls.set(name, der) : crls.delete(name)),
    stall: (name) => stalled.add(name),
    hits,
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

export const KeyUsage = x509.KeyUsageFlags;

/** Signs `data` as a JPKI card would: RSA PKCS#1 v1.5 or ECDSA (DER), SHA-256. */
export function signWith(holder: TestCert, data: Buffer): Buffer {
  return sign('sha256', data, createPrivateKey(holder.keyPem));
}

/**
 * Wraps a software authenticator so its registrations carry a `packed` full attestation: the
 * authenticator data gets `aaguid`, and attStmt is signed by `attestation` (whose certificate must
 * say OU=Authenticator Attestation, as the packed format requires).
 */
export function withPackedAttestation(
  device: PasskeyEmulator,
  o: { aaguid: string; attestation: TestCert; chain?: TestCert[] },
): PasskeyEmulator {
  const aaguid = Buffer.from(o.aaguid.replace(/-/g, ''), 'hex');
  const wrapped = Object.create(device) as PasskeyEmulator;
  wrapped.register = (options, origin): RegistrationResponseJSON => {
    const response = device.register(options, origin);
    const decoded = isoCBOR.decodeFirst<Map<string, unknown>>(
      Buffer.from(response.response.attestationObject, 'base64url'),
    );
    const authData = Buffer.from(decoded.get('authData') as Uint8Array);
    aaguid.copy(authData, 37); // rpIdHash (32) + flags (1) + counter (4)
    const clientDataHash = createHash('sha256')
      .update(Buffer.from(response.response.clientDataJSON, 'base64url'))
      .digest();
    const sig = signWith(o.attestation, Buffer.concat([authData, clientDataHash]));
    const attStmt = new Map<string, unknown>([
      ['alg', -7],
      ['sig', new Uint8Array(sig)],
      ['x5c', [o.attestation, ...(o.chain ?? [])].map((c) => new Uint8Array(c.certDer))],
    ]);
    const attestationObject = isoCBOR.encode(
      new Map<string, unknown>([
        ['fmt', 'packed'],
        ['attStmt', attStmt],
        ['authData', new Uint8Array(authData)],
      ]) as never,
    );
    return {
      ...response,
      response: {
        ...response.response,
        attestationObject: Buffer.from(attestationObject).toString('base64url'),
        ...(response.response.authenticatorData ? { authenticatorData: authData.toString('base64url') } : {}),
      },
    };
  };
  return wrapped;
}
