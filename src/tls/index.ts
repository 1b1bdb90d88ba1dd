/** Development TLS (local CA + server certificate) and the TLS settings FAPI 2.0 requires of the hub. */
export { type DevTls, DevTlsError, ensureDevTls, loadX509 } from './devTls.ts';
export { FAPI_TLS12_CIPHERS, secureTlsOptions, TLS13_CIPHERS } from './secureOptions.ts';
