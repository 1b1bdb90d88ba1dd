/** FAPI 2.0 §5.4: only these JWS algorithms, everywhere (own module: clients.ts and registration use it without the provider). */
export const FAPI_ALGS = ['PS256', 'ES256', 'EdDSA'] as const;
