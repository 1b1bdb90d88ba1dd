export type ProofingErrorCode =
  | 'ERR_PROOFING_METHOD_DISABLED'
  | 'ERR_PROOFING_FLOW'
  | 'ERR_PROOFING_MISMATCH'
  | 'ERR_PROOFING_TICKET'
  | 'ERR_PROOFING_UPSTREAM'
  | 'ERR_PROOFING_TRUST_FRAMEWORK'
  | 'ERR_PROOFING_CERTIFICATE'
  | 'ERR_PROOFING_SIGNATURE'
  | 'ERR_PROOFING_INPUT';

/**
 * Safe to show: never says which of name or birth date differed, nor whether a customer number
 * exists (one message for both), nor any upstream detail (that goes to the proofing record).
 */
const MESSAGES: Record<ProofingErrorCode, string> = {
  ERR_PROOFING_METHOD_DISABLED: 'This way of confirming your identity is not offered.',
  ERR_PROOFING_FLOW: 'This identity confirmation is no longer valid. Please start again.',
  ERR_PROOFING_MISMATCH: 'The confirmed identity does not match our records for this customer number.',
  ERR_PROOFING_TICKET: 'The enrollment code could not be accepted.',
  ERR_PROOFING_UPSTREAM: 'The identity provider did not confirm your identity. Please try again.',
  ERR_PROOFING_TRUST_FRAMEWORK:
    'The identity provider did not confirm your identity to the required standard.',
  ERR_PROOFING_CERTIFICATE: 'The certificate could not be accepted.',
  ERR_PROOFING_SIGNATURE: 'The signature could not be verified.',
  ERR_PROOFING_INPUT: 'The request is incomplete.',
};

export class ProofingError extends Error {
  override name = 'ProofingError';
  readonly code: ProofingErrorCode;
  /** For the proofing record: a short reason and non-secret facts (never names or birth dates). */
  readonly reason: string;
  readonly evidence: Record<string, unknown>;

  constructor(
    code: ProofingErrorCode,
    o: { reason?: string; evidence?: Record<string, unknown>; message?: string; cause?: unknown } = {},
  ) {
    super(o.message ?? MESSAGES[code], o.cause === undefined ? undefined : { cause: o.cause });
    this.code = code;
    this.reason = o.reason ?? code;
    this.evidence = o.evidence ?? {};
  }
}
