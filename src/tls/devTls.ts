/**
 * Development TLS: a local CA plus a server certificate it signs, kept in <dataDir>/tls so a developer
 * trusts the CA once and the hub can re-issue its own server certificate (new hostnames, expiry)
 * without breaking that trust.
 */
import {
  createPrivateKey,
  type KeyObject,
  X509Certificate as NodeX509Certificate,
  randomBytes,
} from 'node:crypto';
import { chmod, mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import { join } from 'node:path';
import type * as X509 from '@peculiar/x509';

// Node's WebCrypto (globalThis.crypto === crypto.webcrypto), typed with the DOM types @peculiar/x509 expects.
const webcrypto: Crypto = globalThis.crypto;

let x509Lib: Promise<typeof X509> | undefined;
/**
 * @peculiar/x509 needs the reflect-metadata polyfill loaded first (its tsyringe dependency throws
 * otherwise); loading both lazily also keeps them out of processes that never issue certificates.
 */
export function loadX509(): Promise<typeof X509> {
  x509Lib ??= (async () => {
    await import('reflect-metadata');
    const lib = await import('@peculiar/x509');
    lib.cryptoProvider.set(webcrypto);
    return lib;
  })();
  return x509Lib;
}

export interface DevTls {
  caPem: string;
  certPem: string;
  keyPem: string;
  caPath: string;
}

export class DevTlsError extends Error {
  readonly code: 'ERR_DEV_TLS_INVALID_HOSTNAME' | 'ERR_DEV_TLS_CA_MISMATCH';
  constructor(code: DevTlsError['code'], message: string) {
    super(message);
    this.name = 'DevTlsError';
    this.code = code;
  }
}

const DAY_MS = 86_400_000;
const CA_VALIDITY_DAYS = 3650;
// CA/Browser Forum and Apple cap TLS server certificates at 398 days; stay one below.
const SERVER_VALIDITY_DAYS = 397;
const RENEW_BEFORE_DAYS = 30;
// Backdate a little so a client whose clock runs slightly behind still accepts a fresh certificate.
const BACKDATE_MS = 5 * 60_000;
const DEFAULT_NAMES = ['localhost', '127.0.0.1', '::1'];

const EC_ALG: EcKeyGenParams = { name: 'ECDSA', namedCurve: 'P-256' };
const SIGNING_ALG: EcdsaParams = { name: 'ECDSA', hash: 'SHA-256' };

/**
 * Ensures <dataDir>/tls/{ca.pem, ca-key.pem, server.pem, server-key.pem} exist: a local CA (ECDSA P-256,
 * 10 years) and a server certificate it signs (ECDSA P-256, ≤ 397 days, SAN localhost, 127.0.0.1, ::1 plus
 * `hostnames`, EKU serverAuth). Private keys 0600, directory 0700. Existing files are reused; only the
 * server certificate is re-issued when missing, invalid, expiring within 30 days, not issued by the CA, or
 * not covering `hostnames`.
 */
export async function ensureDevTls(dataDir: string, hostnames: string[] = []): Promise<DevTls> {
  const x509 = await loadX509();
  const names = normalizeNames([...DEFAULT_NAMES, ...hostnames]);
  const dir = join(dataDir, 'tls');
  await mkdir(dir, { recursive: true, mode: 0o700 });
  // mkdir's mode is filtered by the umask and ignored for an existing directory.
  await chmod(dir, 0o700);
  const paths = {
    ca: join(dir, 'ca.pem'),
    caKey: join(dir, 'ca-key.pem'),
    server: join(dir, 'server.pem'),
    serverKey: join(dir, 'server-key.pem'),
  };

  let ca = await loadCa(paths.ca, paths.caKey);
  let caIsNew = false;
  if (!ca) {
    ca = await createCa(x509);
    await writeAtomic(paths.caKey, ca.keyPem, 0o600);
    await writeAtomic(paths.ca, ca.certPem, 0o644);
    caIsNew = true;
  }

  const existing = caIsNew ? undefined : await loadServer(paths.server, paths.serverKey);
  if (existing && serverIsUsable(x509, existing.cert, existing.key, ca.cert, names)) {
    await chmod(paths.serverKey, 0o600);
    return { caPem: ca.certPem, certPem: existing.certPem, keyPem: existing.keyPem, caPath: paths.ca };
  }

  const server = await createServerCert(x509, ca, names);
  await writeAtomic(paths.serverKey, server.keyPem, 0o600);
  await writeAtomic(paths.server, server.certPem, 0o644);
  return { caPem: ca.certPem, certPem: server.certPem, keyPem: server.keyPem, caPath: paths.ca };
}

interface LoadedCa {
  certPem: string;
  keyPem: string;
  cert: NodeX509Certificate;
}

async function loadCa(certPath: string, keyPath: string): Promise<LoadedCa | undefined> {
  const certPem = await readIfExists(certPath);
  const keyPem = await readIfExists(keyPath);
  if (certPem === undefined || keyPem === undefined) return undefined;
  await chmod(keyPath, 0o600);
  const cert = new NodeX509Certificate(certPem);
  const key = createPrivateKey(keyPem);
  // Replacing a CA the developer may already trust would be a surprise; let them decide.
  if (!cert.checkPrivateKey(key)) {
    throw new DevTlsError('ERR_DEV_TLS_CA_MISMATCH', `${keyPath} does not belong to ${certPath}`);
  }
  // An expiring CA cannot sign a server certificate for its full lifetime: start over.
  if (Date.parse(cert.validTo) - Date.now() < (SERVER_VALIDITY_DAYS + RENEW_BEFORE_DAYS) * DAY_MS) {
    return undefined;
  }
  return { certPem, keyPem, cert };
}

async function loadServer(
  certPath: string,
  keyPath: string,
): Promise<{ certPem: string; keyPem: string; cert: NodeX509Certificate; key: KeyObject } | undefined> {
  const certPem = await readIfExists(certPath);
  const keyPem = await readIfExists(keyPath);
  if (certPem === undefined || keyPem === undefined) return undefined;
  try {
    return { certPem, keyPem, cert: new NodeX509Certificate(certPem), key: createPrivateKey(keyPem) };
  } catch {
    return undefined; // unreadable: re-issue
  }
}

function serverIsUsable(
  x509: typeof X509,
  cert: NodeX509Certificate,
  key: KeyObject,
  ca: NodeX509Certificate,
  names: string[],
): boolean {
  if (!cert.checkPrivateKey(key)) return false;
  if (!cert.checkIssued(ca) || !cert.verify(ca.publicKey)) return false;
  if (Date.parse(cert.validTo) - Date.now() < RENEW_BEFORE_DAYS * DAY_MS) return false;
  if (Date.parse(cert.validFrom) > Date.now() + BACKDATE_MS) return false;
  // DNS names must appear literally (a wildcard "covering" a name still counts as missing: re-issuing is
  // cheap); IPs go through checkIP, which copes with the many spellings of an IPv6 address.
  const san = new x509.X509Certificate(cert.raw).getExtension(x509.SubjectAlternativeNameExtension);
  const dns = new Set(
    (san?.names.toJSON() ?? []).filter((g) => g.type === 'dns').map((g) => g.value.toLowerCase()),
  );
  return names.every((n) => (isIP(n) ? cert.checkIP(n) !== undefined : dns.has(n)));
}

async function createCa(x509: typeof X509): Promise<LoadedCa> {
  const keys = await webcrypto.subtle.generateKey(EC_ALG, true, ['sign', 'verify']);
  const notBefore = new Date(Date.now() - BACKDATE_MS);
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serialNumber(),
    name: `CN=Kakehashi Dev CA ${randomBytes(4).toString('hex')}, O=Kakehashi development`,
    notBefore,
    notAfter: new Date(notBefore.getTime() + CA_VALIDITY_DAYS * DAY_MS),
    signingAlgorithm: SIGNING_ALG,
    keys: keys,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  const certPem = cert.toString('pem');
  const keyPem = await exportPkcs8Pem(keys.privateKey);
  return { certPem, keyPem, cert: new NodeX509Certificate(certPem) };
}

async function createServerCert(
  x509: typeof X509,
  ca: LoadedCa,
  names: string[],
): Promise<{ certPem: string; keyPem: string }> {
  const caKey = await webcrypto.subtle.importKey(
    'pkcs8',
    createPrivateKey(ca.keyPem).export({ format: 'der', type: 'pkcs8' }),
    EC_ALG,
    false,
    ['sign'],
  );
  const caCert = new x509.X509Certificate(ca.certPem);
  const keys = await webcrypto.subtle.generateKey(EC_ALG, true, ['sign', 'verify']);
  const notBefore = new Date(Date.now() - BACKDATE_MS);
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serialNumber(),
    subject: 'CN=localhost, O=Kakehashi development',
    issuer: caCert.subject,
    notBefore,
    notAfter: new Date(notBefore.getTime() + SERVER_VALIDITY_DAYS * DAY_MS),
    signingAlgorithm: SIGNING_ALG,
    publicKey: keys.publicKey,
    signingKey: caKey,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
      new x509.SubjectAlternativeNameExtension(
        names.map((value): X509.JsonGeneralName => ({ type: isIP(value) ? 'ip' : 'dns', value })),
      ),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
      await x509.AuthorityKeyIdentifierExtension.create(caCert.publicKey),
    ],
  });
  return { certPem: cert.toString('pem'), keyPem: await exportPkcs8Pem(keys.privateKey) };
}

const DNS_NAME = /^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/;

function normalizeNames(input: string[]): string[] {
  const out = new Set<string>();
  for (const raw of input) {
    let n = raw.trim().toLowerCase();
    if (n.startsWith('[') && n.endsWith(']')) n = n.slice(1, -1); // "[::1]" as written in URLs
    if (n.endsWith('.')) n = n.slice(0, -1);
    if (isIP(n) === 0 && (n.length > 253 || !DNS_NAME.test(n))) {
      throw new DevTlsError(
        'ERR_DEV_TLS_INVALID_HOSTNAME',
        `not a DNS name or IP address: ${JSON.stringify(raw)}`,
      );
    }
    out.add(n);
  }
  return [...out];
}

function serialNumber(): string {
  // 16 random bytes with the top bit clear: a positive INTEGER that never needs a leading zero.
  const b = randomBytes(16);
  b[0] = (b[0]! & 0x7f) | 0x01;
  return b.toString('hex');
}

async function exportPkcs8Pem(key: CryptoKey): Promise<string> {
  const der = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', key));
  const lines = der.toString('base64').match(/.{1,64}/g) ?? [];
  return `-----BEGIN PRIVATE KEY-----\n${lines.join('\n')}\n-----END PRIVATE KEY-----\n`;
}

async function readIfExists(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

/** Write-then-rename so a crash or a concurrent reader never sees half a key. */
async function writeAtomic(path: string, data: string, mode: number): Promise<void> {
  const tmp = `${path}.${randomBytes(6).toString('hex')}.tmp`;
  await writeFile(tmp, data, { mode, flag: 'wx' });
  await chmod(tmp, mode); // writeFile's mode is filtered by the umask
  await rename(tmp, path);
}
