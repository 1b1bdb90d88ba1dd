import 'reflect-metadata';
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { mkdtemp, readFile, rm, stat, unlink, writeFile } from 'node:fs/promises';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import * as x509 from '@peculiar/x509';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type DevTls, DevTlsError, ensureDevTls, secureTlsOptions } from '../../src/tls/index.ts';

const DAY = 86_400_000;
const dirs: string[] = [];

async function tempDir(): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), 'kkh-tls-'));
  dirs.push(d);
  return d;
}

afterAll(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

function certs(t: DevTls) {
  return { ca: new X509Certificate(t.caPem), server: new X509Certificate(t.certPem) };
}

describe('ensureDevTls', () => {
  it('creates a P-256 CA and a server certificate it issued, with the required SANs and validity', async () => {
    const dataDir = await tempDir();
    const t = await ensureDevTls(dataDir, ['hub.example.test', '192.0.2.10', '[2001:db8::5]']);
    const { ca, server } = certs(t);

    expect(t.caPath).toBe(join(dataDir, 'tls', 'ca.pem'));
    expect(await readFile(t.caPath, 'utf8')).toBe(t.caPem);
    expect(await readFile(join(dataDir, 'tls', 'server.pem'), 'utf8')).toBe(t.certPem);
    expect(await readFile(join(dataDir, 'tls', 'server-key.pem'), 'utf8')).toBe(t.keyPem);
    expect(t.keyPem).toMatch(/^-----BEGIN PRIVATE KEY-----\n/); // PKCS#8

    // CA
    expect(ca.subject).toMatch(/^CN=Kakehashi Dev CA [0-9a-f]{8}$/m);
    expect(ca.ca).toBe(true);
    expect(ca.publicKey.asymmetricKeyDetails?.namedCurve).toBe('prime256v1');
    expect(ca.checkIssued(ca)).toBe(true);
    expect(ca.verify(ca.publicKey)).toBe(true);
    const caYears = (Date.parse(ca.validTo) - Date.parse(ca.validFrom)) / (365 * DAY);
    expect(caYears).toBeGreaterThan(9.9);
    expect(caYears).toBeLessThan(10.1);
    const caX = new x509.X509Certificate(t.caPem);
    const ku = caX.getExtension(x509.KeyUsagesExtension);
    expect(ku?.usages).toBe(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign);
    expect(caX.getExtension(x509.BasicConstraintsExtension)?.critical).toBe(true);

    // Server
    expect(server.ca).toBe(false);
    expect(server.publicKey.asymmetricKeyDetails?.namedCurve).toBe('prime256v1');
    expect(server.checkIssued(ca)).toBe(true);
    expect(server.verify(ca.publicKey)).toBe(true);
    expect(server.checkPrivateKey(createPrivateKey(t.keyPem))).toBe(true);
    expect(server.keyUsage).toEqual(['1.3.6.1.5.5.7.3.1']); // node reports the EKU here: serverAuth only
    const validFrom = Date.parse(server.validFrom);
    const validTo = Date.parse(server.validTo);
    expect(validFrom).toBeLessThanOrEqual(Date.now());
    expect(validTo - validFrom).toBeLessThanOrEqual(397 * DAY);
    expect(validTo - Date.now()).toBeGreaterThan(390 * DAY);
    for (const host of ['localhost', 'hub.example.test']) {
      expect(server.checkHost(host, { subject: 'never' })).toBe(host);
    }
    for (const ip of ['127.0.0.1', '::1', '192.0.2.10', '2001:db8::5'])
      expect(server.checkIP(ip)).toBeDefined();
    expect(server.checkHost('other.example.test', { subject: 'never' })).toBeUndefined();
    expect(server.checkIP('192.0.2.11')).toBeUndefined();
  });

  it('restricts file modes: directory 0700, private keys 0600', async () => {
    const dataDir = await tempDir();
    await ensureDevTls(dataDir);
    const mode = async (p: string) => (await stat(join(dataDir, 'tls', p))).mode & 0o777;
    expect(await mode('.')).toBe(0o700);
    expect(await mode('ca-key.pem')).toBe(0o600);
    expect(await mode('server-key.pem')).toBe(0o600);
    expect((await mode('ca.pem')) & 0o022).toBe(0); // not group/world writable
  });

  it('reuses existing files on a second call', async () => {
    const dataDir = await tempDir();
    const first = certs(await ensureDevTls(dataDir, ['hub.example.test']));
    const second = await ensureDevTls(dataDir, ['hub.example.test']);
    expect(certs(second).ca.fingerprint256).toBe(first.ca.fingerprint256);
    expect(certs(second).server.fingerprint256).toBe(first.server.fingerprint256);
    // A subset of the names already covered (here only the defaults) does not re-issue either.
    const third = await ensureDevTls(dataDir, ['LOCALHOST', '127.0.0.1']);
    expect(certs(third).server.fingerprint256).toBe(first.server.fingerprint256);
  });

  it('re-issues only the server certificate when a hostname is added', async () => {
    const dataDir = await tempDir();
    const first = await ensureDevTls(dataDir);
    const second = await ensureDevTls(dataDir, ['new.example.test']);
    expect(certs(second).ca.fingerprint256).toBe(certs(first).ca.fingerprint256);
    expect(certs(second).server.fingerprint256).not.toBe(certs(first).server.fingerprint256);
    expect(second.keyPem).not.toBe(first.keyPem);
    expect(certs(second).server.checkHost('new.example.test', { subject: 'never' })).toBe('new.example.test');
    expect(certs(second).server.checkIssued(certs(first).ca)).toBe(true);
    expect(await readFile(join(dataDir, 'tls', 'server.pem'), 'utf8')).toBe(second.certPem);
  });

  it('re-issues a missing server certificate with the same CA', async () => {
    const dataDir = await tempDir();
    const first = await ensureDevTls(dataDir);
    await unlink(join(dataDir, 'tls', 'server.pem'));
    const second = await ensureDevTls(dataDir);
    expect(certs(second).ca.fingerprint256).toBe(certs(first).ca.fingerprint256);
    expect(certs(second).server.fingerprint256).not.toBe(certs(first).server.fingerprint256);
  });

  it('re-issues a server certificate that expires within 30 days', async () => {
    const dataDir = await tempDir();
    const first = await ensureDevTls(dataDir);
    // Replace the server certificate with one from the same CA that expires in 10 days.
    const caKeyPem = await readFile(join(dataDir, 'tls', 'ca-key.pem'), 'utf8');
    const alg = { name: 'ECDSA', namedCurve: 'P-256' };
    const caKey = await crypto.subtle.importKey(
      'pkcs8',
      createPrivateKey(caKeyPem).export({ format: 'der', type: 'pkcs8' }),
      alg,
      false,
      ['sign'],
    );
    const keys = await crypto.subtle.generateKey(alg, true, ['sign', 'verify']);
    const short = await x509.X509CertificateGenerator.create(
      {
        subject: 'CN=localhost',
        issuer: new x509.X509Certificate(first.caPem).subject,
        notBefore: new Date(Date.now() - DAY),
        notAfter: new Date(Date.now() + 10 * DAY),
        signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
        publicKey: keys.publicKey,
        signingKey: caKey,
        extensions: [
          new x509.SubjectAlternativeNameExtension([
            { type: 'dns', value: 'localhost' },
            { type: 'ip', value: '127.0.0.1' },
            { type: 'ip', value: '::1' },
          ]),
        ],
      },
      crypto,
    );
    const shortPem = short.toString('pem');
    const der = Buffer.from(await crypto.subtle.exportKey('pkcs8', keys.privateKey));
    const keyPem = createPrivateKey({ key: der, format: 'der', type: 'pkcs8' }).export({
      format: 'pem',
      type: 'pkcs8',
    }) as string;
    await writeFile(join(dataDir, 'tls', 'server.pem'), shortPem);
    await writeFile(join(dataDir, 'tls', 'server-key.pem'), keyPem, { mode: 0o600 });
    // Sanity: the planted certificate is otherwise acceptable (issued by the CA, right names).
    expect(new X509Certificate(shortPem).checkIssued(certs(first).ca)).toBe(true);

    const second = await ensureDevTls(dataDir);
    expect(second.certPem).not.toBe(shortPem);
    expect(Date.parse(certs(second).server.validTo) - Date.now()).toBeGreaterThan(390 * DAY);
    expect(certs(second).ca.fingerprint256).toBe(certs(first).ca.fingerprint256);
  });

  it('starts over with a new CA (and server certificate) when the CA is missing', async () => {
    const dataDir = await tempDir();
    const first = await ensureDevTls(dataDir);
    await unlink(join(dataDir, 'tls', 'ca-key.pem'));
    const second = await ensureDevTls(dataDir);
    expect(certs(second).ca.fingerprint256).not.toBe(certs(first).ca.fingerprint256);
    expect(certs(second).server.checkIssued(certs(second).ca)).toBe(true);
    expect(certs(second).server.verify(certs(second).ca.publicKey)).toBe(true);
  });

  it('refuses to overwrite a CA whose key file belongs to another certificate', async () => {
    const a = await tempDir();
    const b = await tempDir();
    await ensureDevTls(a);
    await ensureDevTls(b);
    const caPemA = await readFile(join(a, 'tls', 'ca.pem'), 'utf8');
    await writeFile(join(b, 'tls', 'ca-key.pem'), await readFile(join(a, 'tls', 'ca-key.pem')));
    const err = await ensureDevTls(b).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DevTlsError);
    expect((err as DevTlsError).code).toBe('ERR_DEV_TLS_CA_MISMATCH');
    expect(await readFile(join(b, 'tls', 'ca.pem'), 'utf8')).not.toBe(caPemA);
  });

  it('rejects a hostname that is neither a DNS name nor an IP address', async () => {
    const dataDir = await tempDir();
    for (const bad of ['bad name', 'a..b', '-x.example', 'https://x.example']) {
      const err = await ensureDevTls(dataDir, [bad]).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(DevTlsError);
      expect((err as DevTlsError).code).toBe('ERR_DEV_TLS_INVALID_HOSTNAME');
    }
  });
});

type Handshake = { ok: true; protocol: string | null; cipher: string } | { ok: false; error: string };

function handshake(port: number, opts: tls.ConnectionOptions): Promise<Handshake> {
  return new Promise((resolve) => {
    const socket = tls.connect({ host: '127.0.0.1', port, servername: 'localhost', ...opts }, () => {
      resolve({ ok: true, protocol: socket.getProtocol(), cipher: socket.getCipher().name });
      socket.end();
    });
    socket.on('error', (e) => resolve({ ok: false, error: e.message }));
  });
}

async function listen(options: https.ServerOptions): Promise<{ server: https.Server; port: number }> {
  const server = https.createServer(options, (_req, res) => res.end('hello'));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { server, port: (server.address() as AddressInfo).port };
}

describe('secureTlsOptions on a real HTTPS server', () => {
  let devTls: DevTls;
  let secure: { server: https.Server; port: number };
  // Same certificate, Node defaults: shows the refusals below come from our options, not the client.
  let lax: { server: https.Server; port: number };

  beforeAll(async () => {
    devTls = await ensureDevTls(await tempDir());
    secure = await listen(secureTlsOptions(devTls));
    lax = await listen({
      cert: devTls.certPem,
      key: devTls.keyPem,
      minVersion: 'TLSv1',
      ciphers: 'DEFAULT:@SECLEVEL=0',
    });
  });

  afterAll(async () => {
    for (const s of [secure, lax]) await new Promise((r) => s.server.close(r));
  });

  it('returns the documented options', () => {
    const o = secureTlsOptions(devTls);
    expect(o.minVersion).toBe('TLSv1.2');
    expect(o.honorCipherOrder).toBe(true);
    const tls12 = String(o.ciphers)
      .split(':')
      .filter((c) => !c.startsWith('TLS_'));
    expect(tls12.sort()).toEqual(
      [
        'ECDHE-ECDSA-AES128-GCM-SHA256',
        'ECDHE-RSA-AES128-GCM-SHA256',
        'ECDHE-ECDSA-AES256-GCM-SHA384',
        'ECDHE-RSA-AES256-GCM-SHA384',
      ].sort(),
    );
  });

  it('serves HTTPS to a client that trusts the dev CA, over localhost and 127.0.0.1', async () => {
    for (const hostname of ['localhost', '127.0.0.1']) {
      const body = await new Promise<string>((resolve, reject) => {
        https
          .get(
            {
              host: '127.0.0.1',
              servername: hostname === 'localhost' ? hostname : undefined,
              port: secure.port,
              path: '/',
              ca: devTls.caPem,
            },
            (res) => {
              let data = '';
              res.on('data', (c) => {
                data += c;
              });
              res.on('end', () => resolve(data));
            },
          )
          .on('error', reject);
      });
      expect(body).toBe('hello');
    }
  });

  it('is not trusted by a client without the dev CA', async () => {
    const r = await handshake(secure.port, {});
    expect(r.ok).toBe(false);
  });

  it('negotiates TLS 1.3 and the allowed TLS 1.2 suites', async () => {
    const r13 = await handshake(secure.port, { ca: devTls.caPem });
    expect(r13).toMatchObject({ ok: true, protocol: 'TLSv1.3' });
    for (const cipher of ['ECDHE-ECDSA-AES128-GCM-SHA256', 'ECDHE-ECDSA-AES256-GCM-SHA384']) {
      const r = await handshake(secure.port, { ca: devTls.caPem, maxVersion: 'TLSv1.2', ciphers: cipher });
      expect(r).toEqual({ ok: true, protocol: 'TLSv1.2', cipher });
    }
  });

  it('refuses TLS 1.1', async () => {
    const client: tls.ConnectionOptions = {
      ca: devTls.caPem,
      minVersion: 'TLSv1',
      maxVersion: 'TLSv1.1',
      ciphers: 'DEFAULT:@SECLEVEL=0',
    };
    expect(await handshake(lax.port, client)).toMatchObject({ ok: true, protocol: 'TLSv1.1' });
    expect(await handshake(secure.port, client)).toMatchObject({ ok: false });
  });

  it('refuses TLS 1.2 clients offering only suites outside the FAPI list', async () => {
    // CBC with ECDHE (usable with this ECDSA certificate under Node defaults) and static-RSA CBC.
    const cbc = { ca: devTls.caPem, maxVersion: 'TLSv1.2' as const, ciphers: 'ECDHE-ECDSA-AES128-SHA256' };
    expect(await handshake(lax.port, cbc)).toMatchObject({ ok: true, cipher: 'ECDHE-ECDSA-AES128-SHA256' });
    expect(await handshake(secure.port, cbc)).toMatchObject({ ok: false });
    for (const ciphers of ['AES128-SHA256', 'ECDHE-ECDSA-CHACHA20-POLY1305', 'ECDHE-ECDSA-AES256-SHA']) {
      const r = await handshake(secure.port, { ca: devTls.caPem, maxVersion: 'TLSv1.2', ciphers });
      expect(r, ciphers).toMatchObject({ ok: false });
    }
  });
});
