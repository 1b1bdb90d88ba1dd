/** oidc-provider's internal per-provider record (see src/oidc/signingKeys.ts for why it is used). */
declare module 'oidc-provider/lib/helpers/weak_cache.js' {
  export default function instance(provider: object): unknown;
}
