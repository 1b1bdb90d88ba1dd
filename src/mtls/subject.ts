/**
 * RFC 8705 §2.1.2: a tls_client_auth client names exactly one expected subject value of its certificate,
 * and the presented certificate must carry it.
 */
import { BlockList, isIP } from 'node:net';
import type * as X509 from '@peculiar/x509';
import { comparableName, type PresentedCertificate } from './certificate.ts';

export type SubjectProperty =
  | 'tls_client_auth_subject_dn'
  | 'tls_client_auth_san_dns'
  | 'tls_client_auth_san_ip'
  | 'tls_client_auth_san_email'
  | 'tls_client_auth_san_uri';

const sameRdns = (a: string[][], b: string[][]) =>
  a.length === b.length && a.every((rdn, i) => rdn.join('+') === b[i]!.join('+'));

/**
 * Whether the certificate carries the registered value.
 * - subject DN: the RFC 4514 string, compared attribute by attribute (types and values case- and
 *   space-insensitive). RFC 4514 writes the last RDN first while some tools write certificate order;
 *   either order of the same RDNs matches, never a different set.
 * - DNS names: exact, case-insensitive (no wildcard expansion); IP: the same address however written;
 *   email: exact with a case-insensitive domain; URI: exact.
 */
export function subjectMatches(
  x509: typeof X509,
  presented: PresentedCertificate,
  property: SubjectProperty | string,
  expected: string,
): boolean {
  switch (property) {
    case 'tls_client_auth_subject_dn': {
      let wanted: string[][];
      try {
        // Attribute type names are case-insensitive (RFC 4514 §3); the parser knows only upper case.
        const typesUpper = expected.replace(
          /(^|(?<!\\)[,+])(\s*)([A-Za-z][A-Za-z0-9-]*)(\s*=)/g,
          (_m, sep, sp, type, eq) => `${sep}${sp}${type.toUpperCase()}${eq}`,
        );
        wanted = comparableName(new x509.Name(typesUpper));
      } catch {
        return false;
      }
      if (!wanted.length) return false;
      return sameRdns(wanted, presented.subject) || sameRdns(wanted.toReversed(), presented.subject);
    }
    case 'tls_client_auth_san_dns': {
      const name = expected.toLowerCase().replace(/\.$/, '');
      return presented.san.dns.some((d) => d.toLowerCase().replace(/\.$/, '') === name);
    }
    case 'tls_client_auth_san_ip': {
      const family = isIP(expected);
      if (!family) return false;
      const list = new BlockList();
      list.addAddress(expected, family === 6 ? 'ipv6' : 'ipv4');
      return presented.san.ip.some((ip) => {
        const f = isIP(ip);
        return f === family && list.check(ip, f === 6 ? 'ipv6' : 'ipv4');
      });
    }
    case 'tls_client_auth_san_email': {
      const at = expected.lastIndexOf('@');
      const norm = (e: string) => {
        const i = e.lastIndexOf('@');
        return i < 0 ? e : `${e.slice(0, i)}@${e.slice(i + 1).toLowerCase()}`;
      };
      return at > 0 && presented.san.email.some((e) => norm(e) === norm(expected));
    }
    case 'tls_client_auth_san_uri':
      return presented.san.uri.includes(expected);
    default:
      return false;
  }
}
