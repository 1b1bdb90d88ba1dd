import { describe, expect, it } from 'vitest';
import { isNonPublicAddress, namesNonPublicHost } from '../../src/signals/egress.ts';

describe('push egress: which addresses count as non-public', () => {
  it('IPv4 private, loopback, link-local and reserved ranges, and public ones not', () => {
    for (const a of [
      '127.0.0.1',
      '10.1.2.3',
      '172.16.0.1',
      '192.168.1.1',
      '169.254.169.254',
      '0.0.0.0',
      '100.64.0.1',
    ])
      expect(isNonPublicAddress(a), a).toBe(true);
    for (const a of ['8.8.8.8', '1.1.1.1', '203.0.114.1']) expect(isNonPublicAddress(a), a).toBe(false);
  });

  it('IPv6 forms that embed or translate to an IPv4 address are judged by it (mapped, compatible, translated, NAT64, 6to4)', () => {
    for (const a of [
      '::ffff:127.0.0.1', // IPv4-mapped
      '::127.0.0.1', // IPv4-compatible (deprecated; some stacks still route it to IPv4)
      '::ffff:0:127.0.0.1', // IPv4-translated (SIIT)
      '64:ff9b::a00:1', // NAT64 well-known prefix
      '64:ff9b:1::a00:1', // NAT64 local-use prefix (RFC 8215): translated to the site's own IPv4 network
      '2002:a00:1::', // 6to4 of 10.0.0.1
      '2002:7f00:1::1', // 6to4 of 127.0.0.1
      'fec0::1', // site-local (deprecated, still private where used)
      '::1',
      'fe80::1',
      'fd00::1',
    ])
      expect(isNonPublicAddress(a), a).toBe(true);
    for (const a of ['2001:4860:4860::8888', '2606:4700:4700::1111'])
      expect(isNonPublicAddress(a), a).toBe(false);
  });

  it('URL hosts in any spelling the URL parser normalises (decimal, octal, hex, full-width, bracketed IPv6)', () => {
    for (const u of [
      'https://2130706433/',
      'https://0x7f.1/',
      'https://0177.0.0.1/',
      'https://１２７.０.０.１/',
      'https://127.0.0.1./',
      'https://[::ffff:127.0.0.1]/',
      'https://[0:0:0:0:0:0:127.0.0.1]/',
      'https://[64:ff9b:1::a9fe:a9fe]/',
      'https://LOCALHOST./',
      'https://a.localhost/',
    ])
      expect(namesNonPublicHost(new URL(u)), u).toBe(true);
    expect(namesNonPublicHost(new URL('https://receiver.example/'))).toBe(false);
    expect(namesNonPublicHost(new URL('https://[2001:4860:4860::8888]/'))).toBe(false);
  });
});
