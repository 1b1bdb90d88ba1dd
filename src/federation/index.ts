/**
 * Upstream federation: the hub as an OpenID relying party of banks' providers, for bank linking
 * (issue 6, item 4). Brokerages as relying parties of the hub live in src/oidc.
 */
export {
  assertedNames,
  BANK_CALLBACK_PATH,
  type BankAssertion,
  type BankChecks,
  type BankConfig,
  type BankFederation,
  createBankFederation,
  idTokenProblem,
  maskBankAccount,
} from './bankRp.ts';
export { FederationError, type FederationErrorCode } from './errors.ts';
export {
  loadRpKey,
  promoteRpKey,
  RP_JWKS_MAX_AGE_SECONDS,
  RP_KEY_IN_FLIGHT_SECONDS,
  type RpKey,
  rpJwksFollower,
  rpPublicJwks,
  stageRpKey,
} from './rpKey.ts';
