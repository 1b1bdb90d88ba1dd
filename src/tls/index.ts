/** Development TLS (local CA + server certificate), the TLS settings FAPI 2.0 requires of the hub, and certificate revocation by CRL. */

export {
  type CrlChecker,
  CrlError,
  type CrlErrorCode,
  type CrlSettings,
  createCrlChecker,
  type RevocationResult,
} from './crl.ts';
export { type DevTls, DevTlsError, ensureDevTls, loadX509 } from './devTls.ts';
export { FAPI_TLS12_CIPHERS, secureTlsOptions, TLS13_CIPHERS } from './secureOptions.ts';
