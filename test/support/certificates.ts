/**
 * Test PKI: a CA and end-entity certificates it signs (ECDSA P-256 or RSA 2048), for passkey
 * attestation and JPKI-style signatures. Built with @peculiar/x509 like the dev TLS CA (src/tls).
 */
import { createHash, createPrivateKey, sign } from 'node:crypto';
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
  return {
    cert,
    keys,
    certPem: cert.toString('pem'),
    certDer: Buffer.from(cert.rawData),
    keyPem: await pem(keys.privateKey),
  };
}

export async function createTestCa(name = 'CN=Test Root CA, O=Kakehashi tests, C=JP'): Promise<TestCert> {
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
    ],
  });
  return wrap(cert, keys);
}

export interface IssueOptions {
  subject: string;
  /** Default digitalSignature (JPKI signing certificates carry nonRepudiation too). */
  keyUsage?: number;
  ca?: boolean;
  rsa?: boolean;
  notBefore?: Date;
  notAfter?: Date;
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
    extensions: [
      new x509.BasicConstraintsExtension(o.ca ?? false, undefined, true),
      new x509.KeyUsagesExtension(
        o.keyUsage ?? (o.ca ? x509.KeyUsageFlags.keyCertSign : x509.KeyUsageFlags.digitalSignature),
        true,
      ),
    ],
  });
  return wrap(cert, keys);
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
