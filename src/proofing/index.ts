/**
 * Identity proofing before enrollment and for recovery or unlock (JSDA IV.1, FSA comments 45–46):
 * three pluggable methods (one-time ticket, eKYC over OpenID Connect for Identity Assurance,
 * JPKI-style signature), each answer an audited proofing record; recovery after losing every
 * passkey; the "first login after recovery" marker for the risk engine.
 */

export { type CrlChecker, CrlError, type CrlSettings, createCrlChecker } from '../tls/index.ts';
export { createProofingContext, EKYC_CALLBACK_PATH, type ProofingContext } from './context.ts';
export {
  beginProofing,
  completeProofing,
  customerByNumber,
  deleteExpiredProofingFlows,
  PROOFING_AUDIT,
  type ProofingResult,
  type ProofReference,
  proofBegan,
  proofedEnrollment,
  verifiedProofingSince,
} from './engine.ts';
export { ProofingError, type ProofingErrorCode, proofingErrorMessage } from './errors.ts';
export type {
  ProofingCustomer,
  ProofingFlow,
  ProofingMethod,
  ProofingMethodName,
  ProofingPurpose,
  VerifiedIdentity,
} from './method.ts';
export { type EkycSettings, ekycMethod } from './methods/ekyc.ts';
export { type JpkiSettings, jpkiMethod } from './methods/jpki.ts';
export { ticketMethod } from './methods/ticket.ts';
export {
  matchesRegisteredName,
  namesMatch,
  normalizeBirthdate,
  normalizeName,
  type RegisteredName,
} from './names.ts';
export {
  type CompletedRecovery,
  completeRecoveryAfterEnrollment,
  firstLoginAfterRecovery,
  markLoginAfterRecovery,
  type RecoveryMarker,
} from './recovery.ts';
export { reproofed } from './reproofed.ts';
export { enrollmentProof, proofingRoutes } from './routes.ts';
