/**
 * Customer authentication: one-time enrollment tickets (issued after KYC) and passkey (WebAuthn)
 * registration and login ceremonies. No passwords exist. Pages call these functions; every
 * security-relevant outcome is written to the audit log (never a ticket, key or assertion).
 */
export { type AttestationPolicy, loadAttestationPolicy } from './attestation.ts';
export {
  CertChainError,
  parseCertificate,
  parsePemBundle,
  verifyCertificateChain,
} from './certChain.ts';
export { AUTHN_AUDIT, type AuthnContext, createAuthnContext, type RequestMeta } from './context.ts';
export { AuthnError, type AuthnErrorCode, authnErrorMessage } from './errors.ts';
export {
  ALTERNATIVE_MFA_ACR,
  type AlternativeLogin,
  activeExemption,
  checkTotpCode,
  confirmTotpSetup,
  type Exemption,
  type ExemptionReport,
  endExemption,
  exemptionReport,
  grantExemption,
  hasTotpAlternative,
  signInWithTotp,
  startTotpSetup,
} from './exemptions.ts';
export {
  clientChallenge,
  deleteExpiredChallenges,
  finishPasskeyAuthentication,
  finishPasskeyRegistration,
  hasUsablePasskey,
  listPasskeys,
  type PasskeyLogin,
  type PasskeySummary,
  passkeyAdoption,
  removePasskey,
  renamePasskey,
  startAdditionalPasskeyRegistration,
  startPasskeyAuthentication,
  startPasskeyRegistration,
} from './passkeys.ts';
export {
  auditTicketRefusal,
  checkEnrollmentTicket,
  issueEnrollmentTicket,
  normalizeTicket,
} from './tickets.ts';
