/**
 * Where the hub may push to when a receiver names the endpoint: public addresses only, unless the
 * configuration allows private ones (tests, local demos) or the operator listed the peer's origins.
 * Checked twice: the URL when the stream is configured (an IP literal, `localhost`), and every
 * address a name resolves to when a connection is opened (a name may point, or later be pointed, at
 * the hub's own network: DNS rebinding). Redirects are never followed (node:https does not).
 */

import { lookup as dnsLookup } from 'node:dns';
import { BlockList, isIP, type LookupFunction } from 'node:net';

const nonPublic = new BlockList();
for (const [net, prefix] of [
  ['0.0.0.0', 8], // "this" network
  ['10.0.0.0', 8],
  ['100.64.0.0', 10], // carrier-grade NAT
  ['127.0.0.0', 8],
  ['169.254.0.0', 16], // link-local, cloud metadata
  ['172.16.0.0', 12],
  ['192.0.0.0', 24],
  ['192.0.2.0', 24],
  ['192.88.99.0', 24], // 6to4 relay anycast
  ['192.168.0.0', 16],
  ['198.18.0.0', 15],
  ['198.51.100.0', 24],
  ['203.0.113.0', 24],
  ['224.0.0.0', 4], // multicast
  ['240.0.0.0', 4], // reserved, broadcast
] as const)
  nonPublic.addSubnet(net, prefix, 'ipv4');
for (const [net, prefix] of [
  // ::/96 holds the unspecified (::) and loopback (::1) addresses and the IPv4-compatible form. With
  // it, the forms that embed an IPv4 address a stack or a translator may reach it by (the mapped form,
  // ::ffff:0:0/96, is judged by its IPv4 address already): IPv4-translated (SIIT), NAT64 well-known
  // and local-use (RFC 8215: the site's own IPv4 network), 6to4.
  ['::', 96],
  ['::ffff:0:0:0', 96],
  ['64:ff9b::', 96],
  ['64:ff9b:1::', 48],
  ['2002::', 16],
  ['100::', 64],
  ['2001:db8::', 32],
  ['fc00::', 7], // unique local
  ['fec0::', 10], // site-local (deprecated, private where still used)
  ['fe80::', 10], // link-local
  ['ff00::', 8], // multicast
] as const)
  nonPublic.addSubnet(net, prefix, 'ipv6');

/** An IP address outside the public internet (IPv4-mapped IPv6 is judged by its IPv4 address). */
export function isNonPublicAddress(address: string): boolean {
  const family = isIP(address);
  if (family === 0) return false;
  return nonPublic.check(address, family === 4 ? 'ipv4' : 'ipv6');
}

/** The host of a URL as an IP literal (brackets of IPv6 removed), or undefined for a name. */
function ipLiteral(hostname: string): string | undefined {
  const h = hostname.startsWith('[') ? hostname.slice(1, -1) : hostname;
  return isIP(h) ? h : undefined;
}

/** Whether a URL's host is obviously not public: a non-public IP literal or a localhost name. */
export function namesNonPublicHost(url: URL): boolean {
  const host = url.hostname.toLowerCase().replace(/\.$/, '');
  if (host === 'localhost' || host.endsWith('.localhost')) return true;
  const ip = ipLiteral(host);
  return ip !== undefined && isNonPublicAddress(ip);
}

export class NonPublicAddressError extends Error {
  override name = 'NonPublicAddressError';
  readonly code = 'ERR_SSF_NON_PUBLIC_ADDRESS';
}

/**
 * A `lookup` for node:http(s) that refuses to connect when a name resolves to a non-public address
 * (any of them: the connection may try each).
 */
export const publicOnlyLookup: LookupFunction = (hostname, options, callback) => {
  dnsLookup(hostname, { ...options, all: true }, (err, addresses) => {
    if (err) return callback(err, '', 0);
    const list = addresses as unknown as { address: string; family: number }[];
    const bad = list.find((a) => isNonPublicAddress(a.address));
    if (bad || list.length === 0)
      return callback(
        new NonPublicAddressError(`${hostname} resolves to a non-public address`) as NodeJS.ErrnoException,
        '',
        0,
      );
    if (options.all) return (callback as unknown as (e: null, a: typeof list) => void)(null, list);
    callback(null, list[0]!.address, list[0]!.family);
  });
};

/** Before a request to an IP literal (no lookup happens for one): refuses a non-public one. */
export function assertPublicDestination(url: URL): void {
  if (namesNonPublicHost(url)) throw new NonPublicAddressError(`${url.hostname} is not a public address`);
}
