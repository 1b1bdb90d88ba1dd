/**
 * The pure parts of mTLS (src/mtls): certificate headers as proxies send them, the chain check used
 * behind a proxy, RFC 8705 §2.1.2 subject matching, the constant-time binding check, the FAPI client
 * policy for the mTLS methods, and the configuration keys.
 */
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../../src/config/index.ts';
import { certificationPath, comparableName, createCertificateSource } from '../../src/mtls/certificate.ts';
import {
  certificateBindingProblem,
  mtlsFor,
  type PresentedCertificate,
  parseCertificateHeader,
  proxiedCertificationPath,
  subjectMatches,
  thumbprintOf,
} from '../../src/mtls/index.ts';
import { ClientPolicyError, validateClientMetadata } from '../../src/oidc/clients.ts';
import { type CrlChecker, createCrlChecker, loadX509 } from '../../src/tls/index.ts';
import {
  createSelfSigned,
  createTestCa,
  issueCertificate,
  type TestCa,
  type TestCert,
} from '../support/certificates.ts';

let ca: TestCa;
let otherCa: TestCa;
let leaf: TestCert;
let x509: Awaited<ReturnType<typeof loadX509>>;

beforeAll(async () => {
  x509 = await loadX509();
  ca = await createTestCa();
  otherCa = await createTestCa('CN=Other CA, C=JP');
  leaf = await ca.issue({
    subject: 'CN=pfm.example, O=PFM Example\\, Inc., C=JP',
    san: [
      { type: 'dns', value: 'Client.PFM.example' },
      { type: 'ip', value: '2001:db8::1' },
      { type: 'email', value: 'ops@PFM.example' },
      { type: 'url', value: 'https://pfm.example/client' },
    ],
  });
});

async function presentedOf(cert: TestCert): Promise<PresentedCertificate> {
  const node = new X509Certificate(cert.certPem);
  const parsed = new x509.X509Certificate(cert.certPem);
  const san = { dns: [] as string[], ip: [] as string[], email: [] as string[], uri: [] as string[] };
  for (const n of parsed.getExtension(x509.SubjectAlternativeNameExtension)?.names.toJSON() ?? []) {
    if (n.type === 'dns') san.dns.push(n.value);
    if (n.type === 'ip') san.ip.push(n.value);
    if (n.type === 'email') san.email.push(n.value);
    if (n.type === 'url') san.uri.push(n.value);
  }
  return {
    certificate: node,
    thumbprint: thumbprintOf(node),
    source: 'header',
    chainTrusted: false,
    subject: comparableName(parsed.subjectName),
    san,
  };
}

describe('certificate headers', () => {
  it('reads URL-encoded PEM, PEM with spaces for line breaks, and bare base64 DER alike', () => {
    const der = new X509Certificate(leaf.certPem).raw;
    const spaced = leaf.certPem.trim().replace(/\n/g, ' ');
    for (const value of [encodeURIComponent(leaf.certPem), spaced, leaf.x5c, leaf.certPem]) {
      expect(parseCertificateHeader(value).raw.equals(der)).toBe(true);
    }
  });

  it('refuses junk, bad URL encoding and oversized values', () => {
    for (const value of ['not a certificate', '%E0%A4%A', 'A'.repeat(20_000), 'QUJD']) {
      expect(() => parseCertificateHeader(value)).toThrow(/certificate header/);
    }
  });

  it('is believed only from a trusted proxy peer', async () => {
    const source = createCertificateSource({
      mode: 'proxy',
      anchors: [new X509Certificate(ca.certPem)],
      header: 'X-SSL-Client-Cert',
      trustedProxies: ['10.1.0.0/16', '::1'],
    });
    const req = (peer: string, value: string | string[]) =>
      ({ socket: { remoteAddress: peer }, headers: { 'x-ssl-client-cert': value } }) as never;
    const trusted = await source.resolve(req('::ffff:10.1.2.3', encodeURIComponent(leaf.certPem)));
    expect(trusted.presented?.thumbprint).toBe(leaf.thumbprint);
    expect(trusted.presented?.chainTrusted).toBe(true);
    expect(trusted.ignoredHeader).toBeUndefined();
    const outsider = await source.resolve(req('10.2.0.1', encodeURIComponent(leaf.certPem)));
    expect(outsider.presented).toBeUndefined();
    expect(outsider.ignoredHeader).toEqual({
      peer: '10.2.0.1',
      reason: 'the TCP peer is not a trusted proxy',
    });
    const twice = await source.resolve(req('::1', [leaf.certPem, leaf.certPem]));
    expect(twice.presented).toBeUndefined();
    expect(twice.ignoredHeader?.reason).toMatch(/more than one/);
  });
});

describe('chain check (proxy mode)', () => {
  const chains = (c: X509Certificate, anchors: X509Certificate[]) =>
    proxiedCertificationPath(c, anchors)?.map((x) => x.fingerprint256);

  it('accepts a client certificate of a configured CA only, with the path the CRL check walks', async () => {
    const cert = new X509Certificate(leaf.certPem);
    const anchor = new X509Certificate(ca.certPem);
    expect(chains(cert, [anchor])).toEqual([cert.fingerprint256, anchor.fingerprint256]);
    expect(chains(cert, [new X509Certificate(otherCa.certPem)])).toBeUndefined();
    expect(chains(cert, [])).toBeUndefined();
    const self = new X509Certificate(
      (await createSelfSigned({ subject: 'CN=pfm.example, O=PFM Example\\, Inc., C=JP' })).certPem,
    );
    expect(chains(self, [anchor])).toBeUndefined();
    // Listing the leaf itself among the CAs does not make it CA-issued.
    expect(chains(self, [anchor, self])).toBeUndefined();
  });

  it('refuses expired, not yet valid and server-only certificates, and an expired CA', async () => {
    const anchors = [new X509Certificate(ca.certPem)];
    const expired = await ca.issue({
      subject: 'CN=old',
      notBefore: new Date(Date.now() - 3 * 3_600_000),
      notAfter: new Date(Date.now() - 3_600_000),
    });
    const future = await ca.issue({ subject: 'CN=new', notBefore: new Date(Date.now() + 3_600_000) });
    const server = await ca.issue({ subject: 'CN=server', eku: ['serverAuth'] });
    for (const c of [expired, future, server])
      expect(chains(new X509Certificate(c.certPem), anchors)).toBeUndefined();
    // The CA's own certificate is no client certificate.
    expect(chains(new X509Certificate(ca.certPem), anchors)).toBeUndefined();
    // A certificate that outlives its CA by two days: good before the CA expires, not after.
    const caExpiry = Date.parse(anchors[0]!.validTo);
    const outliving = new X509Certificate(
      (await ca.issue({ subject: 'CN=outliving', notAfter: new Date(caExpiry + 48 * 3_600_000) })).certPem,
    );
    expect(proxiedCertificationPath(outliving, anchors, caExpiry - 1000)).toBeDefined();
    expect(proxiedCertificationPath(outliving, anchors, caExpiry + 1000)).toBeUndefined();
  });
});

describe('verdict cache behind a proxy (one check per certificate and interval)', () => {
  const INTERVAL = 60_000;
  let dir: string;
  let crlFile: string;
  let writes = 0;
  let clock: number;
  let checks: number;

  /** Publishes a CRL of `ca` listing `revoked`, with a distinct mtime (the checker re-reads on change). */
  async function publish(revoked: TestCert[]) {
    writeFileSync(crlFile, await ca.crl({ revoked }));
    const at = new Date(Date.now() + ++writes * 1000);
    utimesSync(crlFile, at, at);
  }

  function proxySource(o: { cacheSize?: number; recheckIntervalMs?: number } = {}) {
    const crl = createCrlChecker(
      {
        crlFiles: [crlFile],
        fetchDistributionPoints: false,
        fetchTimeoutMs: 1000,
        maxCrlBytes: 1 << 20,
        onUnavailable: 'refuse',
      },
      'mtls.revocation',
    );
    const counting: CrlChecker = {
      check(path, now) {
        checks++;
        return crl.check(path, now);
      },
    };
    const source = createCertificateSource({
      mode: 'proxy',
      anchors: [new X509Certificate(ca.certPem)],
      revocation: counting,
      recheckIntervalMs: o.recheckIntervalMs ?? INTERVAL,
      ...(o.cacheSize ? { cacheSize: o.cacheSize } : {}),
      now: () => clock,
      header: 'X-SSL-Client-Cert',
      trustedProxies: ['10.0.0.1'],
    });
    return (cert: TestCert) =>
      source.resolve({
        socket: { remoteAddress: '10.0.0.1' },
        headers: { 'x-ssl-client-cert': encodeURIComponent(cert.certPem) },
      } as never);
  }

  beforeAll(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'kkh-mtls-cache-'));
    crlFile = path.join(dir, 'ca.crl.pem');
  });
  beforeEach(async () => {
    clock = Date.now();
    checks = 0;
    await publish([]);
  });

  it('checks a revoked certificate once per interval, refuses every request and marks one audit per interval', async () => {
    const revoked = await ca.issue({ subject: 'CN=revoked' });
    await publish([revoked]);
    const resolve = proxySource();
    const first = await Promise.all([1, 2, 3].map(() => resolve(revoked)));
    const later = [];
    for (let i = 0; i < 5; i++) {
      clock += INTERVAL / 10;
      later.push(await resolve(revoked));
    }
    for (const r of [...first, ...later]) {
      expect(r.presented?.chainTrusted).toBe(false);
      expect(r.presented?.revocation?.code).toBe('ERR_CERT_REVOKED');
    }
    expect([...first, ...later].filter((r) => r.auditRevocation)).toHaveLength(1);
    expect(checks).toBe(1);
    // The next interval: checked again, and audited again once.
    clock += INTERVAL;
    const next = [await resolve(revoked), await resolve(revoked)];
    expect(next.map((r) => [r.presented?.chainTrusted, r.auditRevocation === true])).toEqual([
      [false, true],
      [false, false],
    ]);
    expect(checks).toBe(2);
  });

  it('a good certificate keeps working; a CRL revoking it takes effect after the interval, not before', async () => {
    const good = await ca.issue({ subject: 'CN=good' });
    const resolve = proxySource();
    expect((await resolve(good)).presented?.chainTrusted).toBe(true);
    await publish([good]);
    clock += INTERVAL - 1;
    const cached = await resolve(good);
    expect(cached.presented?.chainTrusted).toBe(true);
    expect(checks).toBe(1);
    clock += 1;
    const rechecked = await resolve(good);
    expect(rechecked.presented?.chainTrusted).toBe(false);
    expect(rechecked.presented?.revocation?.code).toBe('ERR_CERT_REVOKED');
    expect(rechecked.auditRevocation).toBe(true);
    expect(checks).toBe(2);
  });

  it('keeps a bounded number of verdicts, least recently used out first', async () => {
    const [a, b, c] = await Promise.all(['a', 'b', 'c'].map((n) => ca.issue({ subject: `CN=${n}` })));
    const resolve = proxySource({ cacheSize: 2 });
    for (const cert of [a!, b!, a!, c!]) await resolve(cert);
    expect(checks).toBe(3); // a, b, c; the second a was a hit
    await resolve(a!); // still cached (used more recently than b)
    expect(checks).toBe(3);
    await resolve(b!); // evicted by c
    expect(checks).toBe(4);
  });

  it("never uses a verdict past the certificate's expiry", async () => {
    const shortLived = await ca.issue({ subject: 'CN=short', notAfter: new Date(clock + 60_000) });
    const resolve = proxySource({ recheckIntervalMs: 86_400_000 });
    expect((await resolve(shortLived)).presented?.chainTrusted).toBe(true);
    clock += 60_001;
    expect((await resolve(shortLived)).presented?.chainTrusted).toBe(false);
  });
});

describe('subject matching (RFC 8705 §2.1.2)', () => {
  it('matches the subject DN attribute by attribute, in either RDN order, never another DN', async () => {
    const p = await presentedOf(leaf);
    const dn = 'tls_client_auth_subject_dn';
    expect(subjectMatches(x509, p, dn, 'CN=pfm.example, O=PFM Example\\, Inc., C=JP')).toBe(true);
    expect(subjectMatches(x509, p, dn, 'C=JP,O=PFM Example\\, Inc.,CN=pfm.example')).toBe(true);
    expect(subjectMatches(x509, p, dn, 'cn=PFM.example,o=pfm  example\\, inc.,c=jp')).toBe(true);
    expect(subjectMatches(x509, p, dn, 'CN=pfm.example, O=PFM Example\\, Inc.')).toBe(false);
    expect(subjectMatches(x509, p, dn, 'CN=evil.example, O=PFM Example\\, Inc., C=JP')).toBe(false);
    expect(subjectMatches(x509, p, dn, 'O=PFM Example\\, Inc., CN=pfm.example, C=JP')).toBe(false);
    expect(subjectMatches(x509, p, dn, '')).toBe(false);
  });

  it('matches SAN values: DNS case-insensitively, IPs however written, email domain case, exact URI', async () => {
    const p = await presentedOf(leaf);
    expect(subjectMatches(x509, p, 'tls_client_auth_san_dns', 'client.pfm.example')).toBe(true);
    expect(subjectMatches(x509, p, 'tls_client_auth_san_dns', 'pfm.example')).toBe(false);
    expect(subjectMatches(x509, p, 'tls_client_auth_san_ip', '2001:0db8:0:0::1')).toBe(true);
    expect(subjectMatches(x509, p, 'tls_client_auth_san_ip', '2001:db8::2')).toBe(false);
    expect(subjectMatches(x509, p, 'tls_client_auth_san_ip', 'not-an-ip')).toBe(false);
    expect(subjectMatches(x509, p, 'tls_client_auth_san_email', 'ops@pfm.example')).toBe(true);
    expect(subjectMatches(x509, p, 'tls_client_auth_san_email', 'OPS@pfm.example')).toBe(false);
    expect(subjectMatches(x509, p, 'tls_client_auth_san_uri', 'https://pfm.example/client')).toBe(true);
    expect(subjectMatches(x509, p, 'tls_client_auth_san_uri', 'https://pfm.example/client/')).toBe(false);
    expect(subjectMatches(x509, p, 'tls_client_auth_unknown', 'x')).toBe(false);
  });
});

describe('certificate binding at the resource server', () => {
  it('needs the very certificate of the token', async () => {
    const p = await presentedOf(leaf);
    expect(certificateBindingProblem(p, leaf.thumbprint)).toBeUndefined();
    expect(certificateBindingProblem(undefined, leaf.thumbprint)).toMatch(/over mutual TLS/);
    const other = await createSelfSigned({ subject: 'CN=other' });
    expect(certificateBindingProblem(p, other.thumbprint)).toMatch(/does not match/);
    expect(certificateBindingProblem(p, 'short')).toMatch(/does not match/);
  });
});

describe('FAPI client policy for mTLS', () => {
  const base = (extra: Record<string, unknown>) => ({
    client_id: 'mtls-client',
    client_name: 'mTLS client',
    redirect_uris: ['https://pfm.example/cb'],
    grant_types: ['authorization_code'],
    ...extra,
  });

  it('accepts each method with exactly one sender constraint, stating both flags', () => {
    const m = validateClientMetadata(
      base({
        token_endpoint_auth_method: 'tls_client_auth',
        tls_client_auth_subject_dn: 'CN=pfm.example',
        tls_client_certificate_bound_access_tokens: true,
      }),
    );
    expect(m).toMatchObject({
      dpop_bound_access_tokens: false,
      tls_client_certificate_bound_access_tokens: true,
    });
    const s = validateClientMetadata(
      base({
        token_endpoint_auth_method: 'self_signed_tls_client_auth',
        jwks: { keys: [{ kty: 'EC', crv: 'P-256', x: 'x', y: 'y', x5c: [leaf.x5c] }] },
        dpop_bound_access_tokens: true,
      }),
    );
    expect(s).toMatchObject({
      dpop_bound_access_tokens: true,
      tls_client_certificate_bound_access_tokens: false,
    });
  });

  it.each([
    [
      { token_endpoint_auth_method: 'tls_client_auth', dpop_bound_access_tokens: true },
      /exactly one of tls_client_auth_subject_dn/,
    ],
    [
      {
        token_endpoint_auth_method: 'tls_client_auth',
        tls_client_auth_subject_dn: 'CN=a',
        tls_client_auth_san_dns: 'a.example',
        dpop_bound_access_tokens: true,
      },
      /exactly one of tls_client_auth_subject_dn/,
    ],
    [
      {
        token_endpoint_auth_method: 'tls_client_auth',
        tls_client_auth_subject_dn: 'CN=a',
        dpop_bound_access_tokens: true,
        tls_client_certificate_bound_access_tokens: true,
      },
      /exactly one sender constraint/,
    ],
    [
      { token_endpoint_auth_method: 'tls_client_auth', tls_client_auth_san_ip: '1.2.3' },
      /tls_client_auth_san_ip/,
    ],
    [
      {
        token_endpoint_auth_method: 'self_signed_tls_client_auth',
        jwks: { keys: [{ kty: 'EC', crv: 'P-256', x: 'x', y: 'y' }] },
        tls_client_certificate_bound_access_tokens: true,
      },
      /x5c/,
    ],
    [
      {
        token_endpoint_auth_method: 'private_key_jwt',
        jwks: { keys: [{ kty: 'EC', crv: 'P-256', x: 'x', y: 'y' }] },
        tls_client_auth_subject_dn: 'CN=a',
        dpop_bound_access_tokens: true,
      },
      /other methods none/,
    ],
  ])('refuses %o', (extra, message) => {
    expect(() => validateClientMetadata(base(extra))).toThrow(ClientPolicyError);
    expect(() => validateClientMetadata(base(extra))).toThrow(message);
  });
});

describe('configuration', () => {
  const load = (env: Record<string, string>, overrides = {}) =>
    loadConfig({ env, overrides, configDir: mkdtempSync(path.join(tmpdir(), 'kkh-mtls-')) });

  it('has mTLS on a second, system-chosen port by default and takes the KAKEHASHI_MTLS_* variables', () => {
    expect(load({}).mtls).toEqual({
      enabled: true,
      port: 0,
      caFiles: [],
      revocation: {
        enabled: true,
        crlFiles: [],
        fetchDistributionPoints: true,
        fetchTimeoutMs: 5000,
        maxCrlBytes: 50 * 1024 * 1024,
        onUnavailable: 'refuse',
        recheckIntervalMs: 300_000,
      },
      certificateHeader: 'x-ssl-client-cert',
      trustedProxies: [],
    });
    const c = load({
      KAKEHASHI_MTLS_PORT: '9444',
      KAKEHASHI_MTLS_URL: 'https://mtls.id.example.jp',
      KAKEHASHI_MTLS_CA: '/etc/ca1.pem, /etc/ca2.pem',
      KAKEHASHI_MTLS_CRL: '/etc/ca1.crl',
      KAKEHASHI_MTLS_CERT_HEADER: 'X-Client-Cert',
      KAKEHASHI_MTLS_TRUSTED_PROXIES: '10.0.0.5,fd00::/8',
    });
    expect(c.mtls).toMatchObject({
      port: 9444,
      baseUrl: 'https://mtls.id.example.jp',
      caFiles: ['/etc/ca1.pem', '/etc/ca2.pem'],
      revocation: { crlFiles: ['/etc/ca1.crl'] },
      certificateHeader: 'X-Client-Cert',
      trustedProxies: ['10.0.0.5', 'fd00::/8'],
    });
    expect(load({ KAKEHASHI_MTLS: 'false' }).mtls.enabled).toBe(false);
  });

  it('names the key of a bad value', () => {
    expect(() => load({ KAKEHASHI_MTLS_TRUSTED_PROXIES: 'proxy.example' })).toThrow(
      /mtls\.trustedProxies\.0/,
    );
    expect(() => load({ KAKEHASHI_MTLS_TRUSTED_PROXIES: '10.0.0.0/33' })).toThrow(/mtls\.trustedProxies/);
    expect(() => load({ KAKEHASHI_MTLS_URL: 'http://mtls.example' })).toThrow(/mtls\.baseUrl/);
    expect(() => load({ KAKEHASHI_MTLS_CERT_HEADER: 'bad header' })).toThrow(/mtls\.certificateHeader/);
    expect(() => load({}, { mtls: { revocation: { recheckIntervalMs: 0 } } })).toThrow(
      /mtls\.revocation\.recheckIntervalMs/,
    );
    expect(() => load({ PORT: '9000', KAKEHASHI_MTLS_PORT: '9000' })).toThrow(ConfigError);
    expect(() => load({ PORT: '9000', KAKEHASHI_MTLS_PORT: '9000' })).toThrow(/mtls\.port/);
  });

  it('names mtls.caFiles when a CA bundle is missing or holds no certificate', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'kkh-mtls-ca-'));
    const empty = path.join(dir, 'empty.pem');
    writeFileSync(empty, 'no certificates here\n');
    for (const file of [path.join(dir, 'missing.pem'), empty]) {
      const config = load({ KAKEHASHI_MTLS_CA: file });
      expect(() => mtlsFor(config)).toThrow(ConfigError);
      expect(() => mtlsFor(config)).toThrow(/mtls\.caFiles/);
    }
    writeFileSync(path.join(dir, 'ca.pem'), ca.certPem);
    // A CRL file that cannot be read stops the hub too, naming its key.
    expect(() =>
      mtlsFor(
        load({
          KAKEHASHI_MTLS_CA: path.join(dir, 'ca.pem'),
          KAKEHASHI_MTLS_CRL: path.join(dir, 'missing.crl'),
        }),
      ),
    ).toThrow(/mtls\.revocation\.crlFiles\[0\]/);
    expect(mtlsFor(load({ KAKEHASHI_MTLS_CA: path.join(dir, 'ca.pem') })).listenerOptions()).toMatchObject({
      requestCert: true,
      rejectUnauthorized: false,
      ca: [ca.certPem],
    });
  });
});

describe('certificationPath (what the CRL check walks)', () => {
  it('goes from the leaf through intermediates the client sent to a configured CA, and stops at the first CA', async () => {
    const root = await createTestCa('CN=Path Root, O=Test, C=JP');
    const intermediate = await issueCertificate(root, {
      subject: 'CN=Path Issuing CA, O=Test, C=JP',
      ca: true,
    });
    const leaf = await issueCertificate(intermediate, { subject: 'CN=client, O=Test, C=JP' });
    const node = (c: { certPem: string }) => new X509Certificate(c.certPem);
    const fingerprints = (p: X509Certificate[] | undefined) => p?.map((c) => c.fingerprint256);
    const [r, i, l] = [node(root), node(intermediate), node(leaf)];
    expect(fingerprints(certificationPath(l, [r], [i]))).toEqual(fingerprints([l, i, r]));
    // The intermediate configured as a CA: the path ends there (it is trusted by configuration).
    expect(fingerprints(certificationPath(l, [r, i]))).toEqual(fingerprints([l, i]));
    // Without the intermediate there is no path; a stranger's CA is no issuer.
    expect(certificationPath(l, [r])).toBeUndefined();
    const stranger = node(await createTestCa('CN=Path Issuing CA, O=Test, C=JP'));
    expect(certificationPath(l, [r], [stranger])).toBeUndefined();
  });
});
