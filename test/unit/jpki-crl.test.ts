/**
 * CRL revocation for JPKI-style certificates (src/tls/crl.ts): the test CA and its
 * intermediate issue CRLs, served from a loopback distribution point or configured as files. A
 * revoked certificate is refused; an expired, unsigned, foreign-signed or unreachable CRL leaves
 * the certificate uncheckable, which fails closed unless configured otherwise; CRLs are cached
 * until their nextUpdate; a replaced CRL file is read again.
 */
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { verifyCertificateChain } from '../../src/authn/index.ts';
import { type CrlSettings, createCrlChecker } from '../../src/proofing/index.ts';
import {
  type CrlServer,
  createTestCa,
  issueCertificate,
  issueCrl,
  startCrlServer,
  type TestCert,
} from '../support/certificates.ts';

const DAY = 86_400_000;
let server: CrlServer;
let dir: string;
let root: TestCert;
let intermediate: TestCert;
let rootCrlFile: string;

beforeAll(async () => {
  server = await startCrlServer();
  dir = mkdtempSync(path.join(tmpdir(), 'kkh-crl-'));
  root = await createTestCa('CN=Test JPKI Root, O=Test J-LIS, C=JP');
  intermediate = await issueCertificate(root, {
    subject: 'CN=Test JPKI Signing CA, O=Test J-LIS, C=JP',
    ca: true,
  });
  rootCrlFile = path.join(dir, 'root.crl');
  writeFileSync(rootCrlFile, await issueCrl(root));
});
afterAll(async () => {
  await server?.close();
  rmSync(dir, { recursive: true, force: true });
});

/** A card certificate whose CRL distribution point is `name` on the loopback server. */
const card = (name: string) =>
  issueCertificate(intermediate, { subject: 'CN=山田 太郎, C=JP', crlUrls: [server.url(name)] });

const pathOf = (leaf: TestCert) =>
  verifyCertificateChain(
    new X509Certificate(leaf.certDer),
    [new X509Certificate(intermediate.certDer)],
    [new X509Certificate(root.certDer)],
  );

function checker(o: Partial<CrlSettings> = {}) {
  return createCrlChecker({
    crlFiles: [rootCrlFile],
    fetchDistributionPoints: true,
    fetchTimeoutMs: 2000,
    maxCrlBytes: 1024 * 1024,
    onUnavailable: 'refuse',
    ...o,
  });
}

describe('CRL revocation check', () => {
  it('accepts a certificate on no CRL and caches the fetched CRL until its nextUpdate', async () => {
    const holder = await card('good.crl');
    server.set('good.crl', await issueCrl(intermediate, { nextUpdate: new Date(Date.now() + DAY) }));
    const rootLong = path.join(dir, 'root-long.crl');
    writeFileSync(rootLong, await issueCrl(root, { nextUpdate: new Date(Date.now() + 5 * DAY) }));
    const crl = checker({ crlFiles: [rootLong] });
    const result = await crl.check(pathOf(holder));
    expect(result.checked).toEqual([
      { serialNumber: holder.cert.serialNumber.toUpperCase(), source: server.url('good.crl') },
      { serialNumber: intermediate.cert.serialNumber.toUpperCase(), source: 'file' },
    ]);
    await crl.check(pathOf(holder));
    expect(server.hits.get('good.crl')).toBe(1);

    // Two days later the cached CRL is past its nextUpdate: fetched again, then cached again.
    server.set('good.crl', await issueCrl(intermediate, { nextUpdate: new Date(Date.now() + 3 * DAY) }));
    const later = new Date(Date.now() + 2 * DAY);
    await crl.check(pathOf(holder), later);
    await crl.check(pathOf(holder), later);
    expect(server.hits.get('good.crl')).toBe(2);
  });

  it('refuses a revoked card certificate and a revoked intermediate', async () => {
    const holder = await card('revoking.crl');
    server.set('revoking.crl', await issueCrl(intermediate, { revoked: [holder] }));
    await expect(checker().check(pathOf(holder))).rejects.toMatchObject({
      code: 'ERR_CERT_REVOKED',
      detail: { serialNumber: holder.cert.serialNumber.toUpperCase(), source: server.url('revoking.crl') },
    });

    const other = await card('good2.crl');
    server.set('good2.crl', await issueCrl(intermediate));
    const revokingRoot = path.join(dir, 'root-revoking.crl');
    writeFileSync(revokingRoot, await issueCrl(root, { revoked: [intermediate] }));
    await expect(checker({ crlFiles: [revokingRoot] }).check(pathOf(other))).rejects.toMatchObject({
      code: 'ERR_CERT_REVOKED',
      detail: { serialNumber: intermediate.cert.serialNumber.toUpperCase(), source: 'file' },
    });
  });

  it('fails closed on an expired, unsigned, missing or oversized CRL, a dead or hanging distribution point', async () => {
    const cases: Array<[string, Buffer | 'stall' | undefined, string]> = [
      [
        'expired.crl',
        await issueCrl(intermediate, {
          thisUpdate: new Date(Date.now() - 3 * DAY),
          nextUpdate: new Date(Date.now() - DAY),
        }),
        'url:expired',
      ],
      [
        'foreign.crl',
        await issueCrl(intermediate, {
          signedBy: await createTestCa('CN=Test JPKI Signing CA, O=Test J-LIS, C=JP'),
        }),
        'url:signature_invalid',
      ],
      ['endless.crl', await issueCrl(intermediate, { nextUpdate: null }), 'url:no_next_update'],
      ['other-issuer.crl', await issueCrl(root), 'url:other_issuer'],
      ['missing.crl', undefined, 'url:fetch_failed (HTTP 404)'],
      ['hanging.crl', 'stall', 'url:fetch_failed'],
    ];
    for (const [name, body, problem] of cases) {
      if (body === 'stall') server.stall(name);
      else server.set(name, body);
      const certPath = pathOf(await card(name));
      // Only the check is timed: a distribution point that hangs costs the fetch timeout, not more.
      const started = Date.now();
      const err = await checker({ fetchTimeoutMs: 300 })
        .check(certPath)
        .then(
          () => undefined,
          (e: unknown) => e as { code: string; detail: { problems: string[] } },
        );
      expect(err, name).toMatchObject({ code: 'ERR_CRL_UNAVAILABLE' });
      expect(err!.detail.problems[0], name).toContain(problem);
      expect(Date.now() - started, name).toBeLessThan(2000);
    }

    // A bad CRL is not kept: once the CA publishes a good one, it is used.
    const fixedLater = await card('fixed.crl');
    server.set('fixed.crl', await issueCrl(intermediate, { signedBy: root }));
    const crl = checker();
    await expect(crl.check(pathOf(fixedLater))).rejects.toMatchObject({ code: 'ERR_CRL_UNAVAILABLE' });
    server.set('fixed.crl', await issueCrl(intermediate));
    await expect(crl.check(pathOf(fixedLater))).resolves.toBeDefined();
    expect(server.hits.get('fixed.crl')).toBe(2);

    // Larger than configured.
    const many = await Promise.all([1, 2, 3, 4, 5, 6].map(() => card('unused.crl')));
    server.set('large.crl', await issueCrl(intermediate, { revoked: many }));
    await expect(checker({ maxCrlBytes: 300 }).check(pathOf(await card('large.crl')))).rejects.toMatchObject({
      code: 'ERR_CRL_UNAVAILABLE',
      detail: { problems: ['url:fetch_failed (CRL too large)'] },
    });

    // No distribution point and no file for the issuer.
    const bare = await issueCertificate(intermediate, { subject: 'CN=山田 太郎, C=JP' });
    await expect(checker().check(pathOf(bare))).rejects.toMatchObject({
      code: 'ERR_CRL_UNAVAILABLE',
      detail: { problems: ['no_crl'] },
    });
    // Configured to accept what cannot be checked: recorded as unchecked.
    const allowed = await checker({ onUnavailable: 'allow' }).check(pathOf(bare));
    expect(allowed.checked[0]).toEqual({
      serialNumber: bare.cert.serialNumber.toUpperCase(),
      source: 'unchecked',
    });
  });

  it('reads a replaced CRL file again, and names the key of an unreadable one at start', async () => {
    const holder = await card('good3.crl');
    server.set('good3.crl', await issueCrl(intermediate));
    const file = path.join(dir, 'root-replaced.crl');
    writeFileSync(file, await issueCrl(root));
    const crl = checker({ crlFiles: [file] });
    await crl.check(pathOf(holder));
    writeFileSync(file, await issueCrl(root, { revoked: [intermediate] }));
    utimesSync(file, new Date(), new Date(Date.now() + 5000));
    await expect(crl.check(pathOf(holder))).rejects.toMatchObject({ code: 'ERR_CERT_REVOKED' });

    expect(() => checker({ crlFiles: [rootCrlFile, path.join(dir, 'nope.crl')] })).toThrow(
      /^proofing\.jpki\.revocation\.crlFiles\[1\]: cannot read/,
    );
  });
});
