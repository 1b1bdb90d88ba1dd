/**
 * Revocation by CRL (RFC 5280 §6.3, simplified), for JPKI-style proofing certificates and mTLS client
 * certificates: every certificate of a
 * verified path except the anchor is looked up in a CRL of its issuer. A CRL counts only when its
 * issuer name is the certificate's issuer, its signature verifies with that issuer's key (so it
 * comes from the CA the path chains to the trust anchor through), and it is current (thisUpdate
 * passed, nextUpdate present and ahead). CRLs come from configured files (re-read when the file
 * changes) and from the certificate's CRL distribution points over HTTP(S) (fetched with a timeout
 * and a size cap, cached until nextUpdate). No valid CRL → the check fails closed unless configured
 * otherwise.
 */
import type { X509Certificate as NodeX509 } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import type * as X509 from '@peculiar/x509';
import { loadX509 } from './devTls.ts';

export interface CrlSettings {
  /** PEM or DER CRL files (e.g. the operator's copy of the CA's CRL). */
  crlFiles: string[];
  /** Also fetch the CRLs named in the certificates' CRL distribution points (http/https only). */
  fetchDistributionPoints: boolean;
  /** Milliseconds a distribution point may take to answer. */
  fetchTimeoutMs: number;
  /** Largest CRL accepted from a distribution point, in bytes. */
  maxCrlBytes: number;
  /** `refuse` (fail closed) or `allow` when no valid CRL is available for a certificate. */
  onUnavailable: 'refuse' | 'allow';
}

export type CrlErrorCode = 'ERR_CERT_REVOKED' | 'ERR_CRL_UNAVAILABLE';

export class CrlError extends Error {
  override name = 'CrlError';
  readonly code: CrlErrorCode;
  /** For the proofing record: which certificate, and why no CRL was usable. */
  readonly detail: Record<string, unknown>;
  constructor(code: CrlErrorCode, message: string, detail: Record<string, unknown>) {
    super(message);
    this.code = code;
    this.detail = detail;
  }
}

export interface RevocationResult {
  /** How each non-anchor certificate was checked: its serial and the CRL's source, or `unchecked`. */
  checked: Array<{ serialNumber: string; source: string }>;
}

export interface CrlChecker {
  /** Throws CrlError when a certificate of `path` (leaf first, anchor last) is revoked or uncheckable. */
  check(path: NodeX509[], now?: Date): Promise<RevocationResult>;
}

interface Cached {
  crl: X509.X509Crl;
  /** The file's mtime, for file CRLs. */
  version?: number;
}

/** A CRL in PEM or DER; the file or URL is named in the error. */
function parseCrl(x509: typeof X509, bytes: Buffer, where: string): X509.X509Crl {
  try {
    const text = bytes.toString('latin1');
    return new x509.X509Crl(text.includes('-----BEGIN X509 CRL-----') ? text : new Uint8Array(bytes));
  } catch (err) {
    throw new Error(`${where}: not a CRL (${(err as Error).message})`);
  }
}

/**
 * The configured CRL files must be readable at start (a missing file stops the hub with the key
 * named); they are parsed at the first check and re-read whenever their mtime changes.
 */
export function createCrlChecker(settings: CrlSettings, key = 'proofing.jpki.revocation'): CrlChecker {
  settings.crlFiles.forEach((file, i) => {
    try {
      readFileSync(file);
    } catch (err) {
      throw new Error(`${key}.crlFiles[${i}]: cannot read ${file} (${(err as Error).message})`);
    }
  });
  let x509: typeof X509;
  const files = new Map<string, Cached>();
  const fetched = new Map<string, Cached>();
  const inFlight = new Map<string, Promise<X509.X509Crl>>();

  /** The file's CRL, re-read when the operator replaced the file. A vanished file counts as none. */
  function fileCrl(file: string): X509.X509Crl | undefined {
    try {
      const version = statSync(file).mtimeMs;
      const known = files.get(file);
      if (known?.version === version) return known.crl;
      const crl = parseCrl(x509, readFileSync(file), file);
      files.set(file, { crl, version });
      return crl;
    } catch {
      return undefined;
    }
  }

  async function download(url: string): Promise<X509.X509Crl> {
    const res = await fetch(url, {
      signal: AbortSignal.timeout(settings.fetchTimeoutMs),
      redirect: 'error',
      headers: { accept: 'application/pkix-crl, application/x-pkcs7-crl;q=0.5, */*;q=0.1' },
    });
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    const declared = Number(res.headers.get('content-length') ?? 0);
    if (declared > settings.maxCrlBytes) throw new Error('CRL too large');
    // Read with the cap applied as it arrives: a distribution point cannot make us buffer more.
    const chunks: Uint8Array[] = [];
    let size = 0;
    const reader = res.body?.getReader();
    for (let part = await reader?.read(); part && !part.done; part = await reader?.read()) {
      size += part.value.length;
      if (size > settings.maxCrlBytes) {
        await reader?.cancel().catch(() => {});
        throw new Error('CRL too large');
      }
      chunks.push(part.value);
    }
    return parseCrl(x509, Buffer.concat(chunks), url);
  }

  /**
   * The distribution point's CRL: the cached one while current, else one download at a time per
   * URL. Only a CRL found fit is cached (by the caller), so a bad one is fetched again next time.
   */
  async function urlCrl(url: string, now: Date): Promise<X509.X509Crl> {
    const cached = fetched.get(url);
    if (cached && current(cached.crl, now)) return cached.crl;
    let pending = inFlight.get(url);
    if (!pending) {
      pending = download(url).finally(() => inFlight.delete(url));
      inFlight.set(url, pending);
    }
    return pending;
  }

  // A parsed CRL never changes: its signature is checked once per issuer, not at every check.
  const verified = new WeakMap<X509.X509Crl, Map<string, boolean>>();
  async function signedBy(crl: X509.X509Crl, issuer: X509.X509Certificate): Promise<boolean> {
    const key = Buffer.from(issuer.rawData).toString('base64');
    let known = verified.get(crl);
    if (!known) {
      known = new Map();
      verified.set(crl, known);
    }
    let ok = known.get(key);
    if (ok === undefined) {
      ok = await crl.verify({ publicKey: issuer }).catch(() => false);
      known.set(key, ok);
    }
    return ok;
  }

  const current = (crl: X509.X509Crl, now: Date) =>
    crl.thisUpdate.getTime() <= now.getTime() + 60_000 &&
    crl.nextUpdate !== undefined &&
    crl.nextUpdate.getTime() > now.getTime();

  /** Why this CRL cannot speak for certificates of `issuer`, or undefined when it can. */
  async function unfit(
    crl: X509.X509Crl,
    issuer: X509.X509Certificate,
    now: Date,
  ): Promise<string | undefined> {
    if (crl.issuerName.toString() !== issuer.subjectName.toString()) return 'other_issuer';
    if (!(await signedBy(crl, issuer))) return 'signature_invalid';
    if (!crl.nextUpdate) return 'no_next_update';
    if (crl.nextUpdate.getTime() <= now.getTime()) return 'expired';
    if (crl.thisUpdate.getTime() > now.getTime() + 60_000) return 'not_yet_valid';
    return undefined;
  }

  function distributionPoints(cert: X509.X509Certificate): string[] {
    const ext = cert.getExtension(x509.CRLDistributionPointsExtension);
    const urls: string[] = [];
    for (const dp of ext?.distributionPoints ?? [])
      for (const name of dp.distributionPoint?.fullName ?? [])
        if (name.uniformResourceIdentifier && /^https?:\/\//i.test(name.uniformResourceIdentifier))
          urls.push(name.uniformResourceIdentifier);
    return urls.slice(0, 3);
  }

  return {
    async check(path, now = new Date()) {
      x509 ??= await loadX509();
      const checked: RevocationResult['checked'] = [];
      for (let i = 0; i + 1 < path.length; i++) {
        const cert = new x509.X509Certificate(path[i]!.raw);
        const issuer = new x509.X509Certificate(path[i + 1]!.raw);
        const problems: string[] = [];
        let found: { crl: X509.X509Crl; source: string } | undefined;
        for (const file of settings.crlFiles) {
          const crl = fileCrl(file);
          const why = crl ? await unfit(crl, issuer, now) : 'unreadable';
          if (!why) {
            found = { crl: crl!, source: 'file' };
            break;
          }
          if (why !== 'other_issuer') problems.push(`file:${why}`);
        }
        if (!found && settings.fetchDistributionPoints)
          for (const url of distributionPoints(cert)) {
            try {
              const crl = await urlCrl(url, now);
              const why = await unfit(crl, issuer, now);
              if (!why) {
                fetched.set(url, { crl });
                found = { crl, source: url };
                break;
              }
              problems.push(`url:${why}`);
            } catch (err) {
              problems.push(`url:fetch_failed (${(err as Error).message.slice(0, 80)})`);
            }
          }
        const serialNumber = path[i]!.serialNumber;
        if (!found) {
          if (settings.onUnavailable === 'allow') {
            checked.push({ serialNumber, source: 'unchecked' });
            continue;
          }
          throw new CrlError(
            'ERR_CRL_UNAVAILABLE',
            `no valid CRL for certificate ${serialNumber} of ${issuer.subject}`,
            { serialNumber, problems: problems.length ? problems : ['no_crl'] },
          );
        }
        const entry = found.crl.findRevoked(cert);
        if (entry && entry.revocationDate.getTime() <= now.getTime())
          throw new CrlError('ERR_CERT_REVOKED', `certificate ${serialNumber} is revoked`, {
            serialNumber,
            revokedAt: entry.revocationDate.toISOString(),
            ...(entry.reason !== undefined ? { reason: entry.reason } : {}),
            source: found.source,
          });
        checked.push({ serialNumber, source: found.source });
      }
      return { checked };
    },
  };
}
