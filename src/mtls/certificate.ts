/**
 * The client certificate of one request, from wherever this deployment gets it: the TLS socket of the
 * hub's own mTLS listener, or — behind a TLS-terminating proxy — a header the proxy sets, believed only
 * when the TCP peer is a configured proxy address. Resolved once per request by `clientCertificates()`
 * (which audits a header it ignores) and read synchronously by oidc-provider and the resource server.
 */
import { createHash, X509Certificate as NodeX509Certificate } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { BlockList, isIP } from 'node:net';
import type { TLSSocket } from 'node:tls';
import type * as X509 from '@peculiar/x509';
import { type CrlChecker, CrlError, type CrlErrorCode, loadX509 } from '../tls/index.ts';

const CLIENT_AUTH_EKU = '1.3.6.1.5.5.7.3.2';
/** A client certificate chain in a header is a few kB; anything far larger is junk. */
const MAX_HEADER_LENGTH = 16_384;

export interface PresentedCertificate {
  certificate: NodeX509Certificate;
  /** RFC 8705 §3.1 `x5t#S256`: base64url SHA-256 of the DER certificate. */
  thumbprint: string;
  source: 'tls' | 'header';
  /**
   * The certificate chains to a configured CA and is not revoked (tls_client_auth); self-signed ones
   * never do.
   */
  chainTrusted: boolean;
  /** Why a certificate that chains to a CA is not trusted after all: revoked, or no usable CRL. */
  revocation?: { code: CrlErrorCode; message: string; detail: Record<string, unknown> };
  /** Subject RDNs in certificate order, each a sorted list of `TYPE=normalized value`. */
  subject: string[][];
  san: { dns: string[]; ip: string[]; email: string[]; uri: string[] };
}

export class CertificateHeaderError extends Error {
  override name = 'CertificateHeaderError';
  readonly code = 'ERR_MTLS_CERTIFICATE_HEADER';
}

/**
 * The DER of a certificate as proxies forward it: URL-encoded PEM (nginx `$ssl_client_escaped_cert`,
 * AWS ALB), PEM with its line breaks turned into spaces (Apache, HAProxy), or bare base64 DER. Only the
 * first certificate counts (the leaf).
 */
export function certificateHeaderDer(value: string): Buffer {
  if (value.length > MAX_HEADER_LENGTH) throw new CertificateHeaderError('certificate header too large');
  let text = value.trim();
  if (text.includes('%')) {
    try {
      text = decodeURIComponent(text);
    } catch {
      throw new CertificateHeaderError('certificate header is not URL-encoded correctly');
    }
  }
  const pem = /-----BEGIN CERTIFICATE-----([^-]+)-----END CERTIFICATE-----/.exec(text);
  const base64 = (pem ? pem[1]! : text).replace(/\s+/g, '');
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(base64))
    throw new CertificateHeaderError('certificate header is not PEM');
  return Buffer.from(base64, 'base64');
}

function parseDer(der: Buffer): NodeX509Certificate {
  try {
    return new NodeX509Certificate(der);
  } catch {
    throw new CertificateHeaderError('certificate header holds no readable certificate');
  }
}

/** The certificate of a proxy's header (see certificateHeaderDer). */
export function parseCertificateHeader(value: string): NodeX509Certificate {
  return parseDer(certificateHeaderDer(value));
}

/** Every certificate of a PEM bundle. */
export function parsePemBundle(pem: string): NodeX509Certificate[] {
  const blocks = pem.match(/-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/g) ?? [];
  return blocks.map((b) => new NodeX509Certificate(b));
}

const validAt = (c: NodeX509Certificate, now: number) =>
  Date.parse(c.validFrom) <= now && Date.parse(c.validTo) >= now;

/**
 * The chain check for certificates the hub did not see in a handshake (proxy mode): the leaf is in its
 * validity period, usable for client authentication and no CA, and one of the configured CAs (trust
 * anchors by configuration, intermediates included) issued it. The path it returns is what the CRL
 * check walks; undefined: not trusted.
 */
export function proxiedCertificationPath(
  cert: NodeX509Certificate,
  anchors: readonly NodeX509Certificate[],
  now = Date.now(),
): NodeX509Certificate[] | undefined {
  if (!validAt(cert, now) || cert.ca) return undefined;
  const eku = cert.keyUsage; // node names the extended key usage OIDs "keyUsage"
  if (eku?.length && !eku.includes(CLIENT_AUTH_EKU)) return undefined;
  const path = certificationPath(cert, anchors, [], now);
  // A leaf listed among the CAs is not issued by one.
  return path && path.length > 1 ? path : undefined;
}

/** Case- and space-insensitive comparison form of a DN attribute value (RFC 4518 caseIgnoreMatch, roughly). */
const normalizeValue = (v: string) => v.normalize('NFKC').trim().replace(/\s+/g, ' ').toLowerCase();

/** A Name as comparable RDNs: attribute types upper-cased, values normalized, multi-valued RDNs sorted. */
export function comparableName(name: X509.Name): string[][] {
  return name.toJSON().map((rdn) =>
    Object.entries(rdn)
      .flatMap(([type, values]) => values.map((v) => `${type.toUpperCase()}=${normalizeValue(v)}`))
      .sort(),
  );
}

async function describe(
  certificate: NodeX509Certificate,
  source: PresentedCertificate['source'],
  chainTrusted: boolean,
  revocation?: PresentedCertificate['revocation'],
): Promise<PresentedCertificate> {
  const x509 = await loadX509();
  const parsed = new x509.X509Certificate(certificate.raw);
  const san = { dns: [] as string[], ip: [] as string[], email: [] as string[], uri: [] as string[] };
  for (const n of parsed.getExtension(x509.SubjectAlternativeNameExtension)?.names.toJSON() ?? []) {
    if (n.type === 'dns') san.dns.push(n.value);
    else if (n.type === 'ip') san.ip.push(n.value);
    else if (n.type === 'email') san.email.push(n.value);
    else if (n.type === 'url') san.uri.push(n.value);
  }
  return {
    certificate,
    thumbprint: thumbprintOf(certificate),
    source,
    chainTrusted: chainTrusted && !revocation,
    ...(revocation ? { revocation } : {}),
    subject: comparableName(parsed.subjectName),
    san,
  };
}

/** RFC 8705 §3.1 x5t#S256 of a certificate. */
export function thumbprintOf(certificate: NodeX509Certificate): string {
  return Buffer.from(certificate.fingerprint256.replaceAll(':', ''), 'hex').toString('base64url');
}

/**
 * The certification path of a certificate, leaf first, ending at the configured CA that vouches for it:
 * issuers (CA certificates valid now whose signature verifies) are taken from the CAs first, then from
 * what the client sent in its handshake.
 */
export function certificationPath(
  leaf: NodeX509Certificate,
  anchors: readonly NodeX509Certificate[],
  sent: readonly NodeX509Certificate[] = [],
  now = Date.now(),
): NodeX509Certificate[] | undefined {
  const isAnchor = (c: NodeX509Certificate) => anchors.some((a) => a.fingerprint256 === c.fingerprint256);
  const path = [leaf];
  for (let current = leaf; path.length <= 6; ) {
    if (isAnchor(current)) return path;
    const issuer = [...anchors, ...sent].find(
      (c) =>
        c.ca &&
        c.fingerprint256 !== current.fingerprint256 &&
        validAt(c, now) &&
        current.checkIssued(c) &&
        current.verify(c.publicKey),
    );
    if (!issuer) return undefined;
    path.push(issuer);
    current = issuer;
  }
  return undefined;
}

/** What the handshake's peer sent besides its leaf (node's legacy chain objects). */
function sentChain(socket: TLSSocket): NodeX509Certificate[] {
  const out: NodeX509Certificate[] = [];
  let c = socket.getPeerCertificate?.(true) as { raw?: Buffer; issuerCertificate?: unknown } | undefined;
  const seen = new Set<unknown>();
  while (c?.raw && !seen.has(c) && out.length < 6) {
    seen.add(c);
    out.push(new NodeX509Certificate(c.raw));
    c = c.issuerCertificate as typeof c;
  }
  return out.slice(1);
}

/** Revocation problems of a trusted certificate, or undefined when none (or nobody checks). */
async function revocationProblem(
  checker: CrlChecker | undefined,
  path: NodeX509Certificate[] | undefined,
): Promise<PresentedCertificate['revocation']> {
  if (!checker) return undefined;
  if (!path)
    return { code: 'ERR_CRL_UNAVAILABLE', message: 'no certification path to a configured CA', detail: {} };
  try {
    await checker.check(path);
    return undefined;
  } catch (err) {
    if (!(err instanceof CrlError)) throw err;
    return { code: err.code, message: err.message, detail: err.detail };
  }
}

/** Default time a certificate verdict (chain and revocation) is reused: `mtls.revocation.recheckIntervalMs`. */
const DEFAULT_RECHECK_INTERVAL_MS = 300_000;
/** Default bound of the per-certificate caches (verdicts in proxy mode, audited problems). */
const DEFAULT_CACHE_SIZE = 10_000;

export interface CertificateSourceOptions {
  mode: 'tls' | 'proxy';
  anchors: readonly NodeX509Certificate[];
  /** Checks CA-issued certificates against their CAs' CRLs; none: not checked here. */
  revocation?: CrlChecker;
  /** How long a verdict is reused before the CRLs are consulted again (default five minutes). */
  recheckIntervalMs?: number;
  /** Most certificates whose verdict is remembered (least recently used ones go first). */
  cacheSize?: number;
  /** The clock (tests). */
  now?: () => number;
  /** proxy mode. */
  header: string;
  trustedProxies: readonly string[];
}

/** What a request shows: perhaps a certificate, and perhaps a certificate header that was not believed. */
export interface Resolution {
  presented?: PresentedCertificate;
  /**
   * The certificate's revocation problem is news: first seen for this certificate in this interval,
   * so the caller audits it (once per certificate and interval, not per request or connection).
   */
  auditRevocation?: boolean;
  ignoredHeader?: { reason: string; peer: string };
}

/** The IPv4 address inside an IPv4-mapped IPv6 address, otherwise the address itself. */
export const unmapped = (address: string) =>
  address.startsWith('::ffff:') && isIP(address.slice(7)) === 4 ? address.slice(7) : address;

/** Insertion-ordered Map as an LRU: a hit is re-inserted at the end, the oldest entry is evicted first. */
function lru<V>(max: number) {
  const map = new Map<string, V>();
  return {
    get(key: string): V | undefined {
      const hit = map.get(key);
      if (hit !== undefined) {
        map.delete(key);
        map.set(key, hit);
      }
      return hit;
    },
    set(key: string, value: V) {
      map.delete(key);
      map.set(key, value);
      if (map.size > max) map.delete(map.keys().next().value!);
    },
    delete: (key: string) => map.delete(key),
  };
}

/** What `read` returns, or the CertificateHeaderError it throws (a reason to ignore the header). */
function headerError<T>(read: () => T): T | CertificateHeaderError {
  try {
    return read();
  } catch (err) {
    if (!(err instanceof CertificateHeaderError)) throw err;
    return err;
  }
}

interface Verdict {
  presented: PresentedCertificate;
  /** When the chain and the CRLs were checked. */
  at: number;
}

export function createCertificateSource(o: CertificateSourceOptions) {
  const proxies = new BlockList();
  for (const entry of o.trustedProxies) {
    const [addr, bits] = entry.split('/') as [string, string | undefined];
    const type = isIP(addr) === 6 ? 'ipv6' : 'ipv4';
    if (bits === undefined) proxies.addAddress(addr, type);
    else proxies.addSubnet(addr, Number(bits), type);
  }
  const headerName = o.header.toLowerCase();
  const interval = o.recheckIntervalMs ?? DEFAULT_RECHECK_INTERVAL_MS;
  const cacheSize = o.cacheSize ?? DEFAULT_CACHE_SIZE;
  const now = o.now ?? Date.now;
  // A keep-alive connection presents its certificate once: parse it once, and look at the CRLs again
  // only every interval (a revocation ends the connection's use within that time).
  const perSocket = new WeakMap<TLSSocket, Verdict>();
  // Behind a proxy every request carries the certificate again: the verdict is kept per certificate
  // (SHA-256 of its DER), in flight included, so parallel requests share one check. It is never used
  // longer than the interval (a replaced CRL takes effect within it) nor past the certificate's expiry.
  const perCertificate = lru<{ verdict: Promise<Verdict>; until: number }>(cacheSize);
  // When each certificate's revocation problem was last audited (key: thumbprint and problem code).
  const audited = lru<number>(cacheSize);

  const trusted = (peer: string) => {
    const family = isIP(peer);
    return family !== 0 && proxies.check(peer, family === 6 ? 'ipv6' : 'ipv4');
  };

  /** The resolution of a verdict, with its revocation problem marked for audit once per interval. */
  const resolved = ({ presented, at }: Verdict, out: Resolution = {}): Resolution => {
    const problem = presented.revocation;
    if (!problem) return { ...out, presented };
    const key = `${presented.thumbprint} ${problem.code}`;
    const last = audited.get(key);
    if (last !== undefined && at - last < interval) return { ...out, presented };
    audited.set(key, at);
    return { ...out, presented, auditRevocation: true };
  };

  async function checkHeaderCertificate(cert: NodeX509Certificate, at: number): Promise<Verdict> {
    const path = proxiedCertificationPath(cert, o.anchors, at);
    const problem = path ? await revocationProblem(o.revocation, path) : undefined;
    return { presented: await describe(cert, 'header', path !== undefined, problem), at };
  }

  return {
    headerName,
    async resolve(req: IncomingMessage): Promise<Resolution> {
      const peer = unmapped(req.socket.remoteAddress ?? '');
      const raw = req.headers[headerName];
      const ignored = (reason: string): Resolution => ({ ignoredHeader: { reason, peer } });
      if (o.mode === 'tls') {
        // The hub's own handshake is the only source; a forwarded header is somebody's guess.
        const out = raw === undefined ? {} : ignored('the hub terminates TLS itself');
        const socket = req.socket as TLSSocket;
        const known = perSocket.get(socket);
        if (known && now() - known.at < interval) return resolved(known, out);
        const cert =
          typeof socket.getPeerX509Certificate === 'function' ? socket.getPeerX509Certificate() : undefined;
        if (!cert) return out;
        const at = now();
        // socket.authorized: OpenSSL verified the chain against exactly the configured CAs (no CAs, no trust).
        const chained = o.anchors.length > 0 && socket.authorized === true;
        const problem = chained
          ? await revocationProblem(o.revocation, certificationPath(cert, o.anchors, sentChain(socket), at))
          : undefined;
        const verdict = { presented: await describe(cert, 'tls', chained, problem), at };
        perSocket.set(socket, verdict);
        return resolved(verdict, out);
      }
      if (raw === undefined || raw === '') return {};
      if (!trusted(peer)) return ignored('the TCP peer is not a trusted proxy');
      if (Array.isArray(raw)) return ignored('more than one certificate header');
      const der = headerError(() => certificateHeaderDer(raw));
      if (der instanceof CertificateHeaderError) return ignored(der.message);
      const key = createHash('sha256').update(der).digest('base64url');
      const at = now();
      const cached = perCertificate.get(key);
      if (cached && at < cached.until) return resolved(await cached.verdict);
      const cert = headerError(() => parseDer(der));
      if (cert instanceof CertificateHeaderError) return ignored(cert.message);
      const verdict = checkHeaderCertificate(cert, at);
      perCertificate.set(key, { verdict, until: Math.min(at + interval, Date.parse(cert.validTo) + 1) });
      try {
        return resolved(await verdict);
      } catch (err) {
        perCertificate.delete(key);
        throw err;
      }
    },
  };
}
