/**
 * The pure parts of mTLS (src/mtls): certificate headers as proxies send them, the chain check used
 * behind a proxy, RFC 8705 §2.1.2 subject matching, the constant-time binding check, the FAPI client
 * policy for the mTLS methods, and the configuration keys.
 */
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../../src/config/index.ts';
import { certificationPath, comparableName, createCertificateSource } from '../../src/mtls/certificate.ts';
import {
  certificateBindingProblem,
  chainsToAnchor,
  mtlsFor,
  type PresentedCertificate,
  parseCertificateHeader,
  subjectMatches,
  thumbprintOf,
} from '../../src/mtls/index.ts';
import { ClientPolicyError, validateClientMetadata } from '../../src/oidc/clients.ts';
import { loadX509 } from '../../src/tls/index.ts';
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
  it('accepts a client certificate of a configured CA only', async () => {
    const cert = new X509Certificate(leaf.certPem);
    expect(chainsToAnchor(cert, [new X509Certificate(ca.certPem)])).toBe(true);
    expect(chainsToAnchor(cert, [new X509Certificate(otherCa.certPem)])).toBe(false);
    expect(chainsToAnchor(cert, [])).toBe(false);
    const self = await createSelfSigned({ subject: 'CN=pfm.example, O=PFM Example\\, Inc., C=JP' });
    expect(chainsToAnchor(new X509Certificate(self.certPem), [new X509Certificate(ca.certPem)])).toBe(false);
  });

  it('refuses expired, not yet valid and server-only certificates', async () => {
    const anchors = [new X509Certificate(ca.certPem)];
    const expired = await ca.issue({
      subject: 'CN=old',
      notBefore: new Date(Date.now() - 3 * 3_600_000),
      notAfter: new Date(Date.now() - 3_600_000),
    });
    const future = await ca.issue({ subject: 'CN=new', notBefore: new Date(Date.now() + 3_600_000) });
    const server = await ca.issue({ subject: 'CN=server', eku: ['serverAuth'] });
    for (const c of [expired, future, server])
      expect(chainsToAnchor(new X509Certificate(c.certPem), anchors)).toBe(false);
    // The CA's own certificate is no client certificate.
    expect(chainsToAnchor(new X509Certificate(ca.certPem), anchors)).toBe(false);
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
