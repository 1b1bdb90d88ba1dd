import type { ServerOptions } from 'node:https';

/**
 * TLS 1.2 suites FAPI 2.0 §5.2.1 permits (the RFC 9325 recommendations, ECDHE only: forward secrecy with
 * the ECDSA development certificate or an operator's RSA one). Anything else offered over TLS 1.2 — CBC,
 * static RSA key exchange, CHACHA20 — fails the handshake.
 */
export const FAPI_TLS12_CIPHERS = [
  'ECDHE-ECDSA-AES128-GCM-SHA256',
  'ECDHE-RSA-AES128-GCM-SHA256',
  'ECDHE-ECDSA-AES256-GCM-SHA384',
  'ECDHE-RSA-AES256-GCM-SHA384',
] as const;

/** TLS 1.3 suites are all AEAD with forward secrecy; listed so the cipher string is explicit. */
export const TLS13_CIPHERS = [
  'TLS_AES_128_GCM_SHA256',
  'TLS_AES_256_GCM_SHA384',
  'TLS_CHACHA20_POLY1305_SHA256',
] as const;

/**
 * Options for node:https createServer that satisfy FAPI 2.0 / BCP 195: TLS 1.2 minimum, only the permitted
 * TLS 1.2 suites, and the server's preference order.
 */
export function secureTlsOptions(cert: { certPem: string; keyPem: string }): ServerOptions {
  return {
    cert: cert.certPem,
    key: cert.keyPem,
    minVersion: 'TLSv1.2',
    ciphers: [...TLS13_CIPHERS, ...FAPI_TLS12_CIPHERS].join(':'),
    honorCipherOrder: true,
  };
}
