export type AuthnErrorCode =
  | 'ERR_TICKET_MALFORMED'
  | 'ERR_TICKET_INVALID'
  | 'ERR_TICKET_EXPIRED'
  | 'ERR_TICKET_USED'
  | 'ERR_TICKET_VOIDED'
  | 'ERR_TICKET_LOCKED'
  | 'ERR_CUSTOMER_UNKNOWN'
  | 'ERR_CUSTOMER_INACTIVE'
  | 'ERR_WEBAUTHN_CHALLENGE'
  | 'ERR_WEBAUTHN_VERIFICATION'
  | 'ERR_PASSKEY_UNKNOWN'
  | 'ERR_PASSKEY_COUNTER'
  | 'ERR_PASSKEY_DISABLED'
  | 'ERR_PASSKEY_LAST'
  | 'ERR_NOT_EXEMPT'
  | 'ERR_TOTP_INVALID';

/**
 * Messages are safe to show to the customer: they never echo input, secrets or library detail
 * (the detail goes to the audit log and `cause`).
 */
const MESSAGES: Record<AuthnErrorCode, string> = {
  ERR_TICKET_MALFORMED: 'The enrollment code is not in the expected format (KKH- followed by 20 characters).',
  // One message for wrong, unknown and other customers' tickets: a guesser learns nothing.
  ERR_TICKET_INVALID: 'The customer number or the enrollment code is not correct.',
  ERR_TICKET_EXPIRED: 'This enrollment code has expired. Please ask for a new one.',
  ERR_TICKET_USED: 'This enrollment code has already been used.',
  ERR_TICKET_VOIDED: 'This enrollment code has been cancelled. Please use the newest code you received.',
  ERR_TICKET_LOCKED:
    'Enrollment is blocked after too many incorrect codes. Please contact us to receive a new enrollment code.',
  ERR_CUSTOMER_UNKNOWN: 'The customer could not be found.',
  ERR_CUSTOMER_INACTIVE: 'This account is currently not available for sign-in. Please contact us.',
  ERR_WEBAUTHN_CHALLENGE: 'This passkey request is no longer valid. Please start again.',
  ERR_WEBAUTHN_VERIFICATION: 'The passkey could not be verified. Please try again.',
  ERR_PASSKEY_UNKNOWN: 'This passkey is not registered with us.',
  ERR_PASSKEY_COUNTER: 'This passkey could not be accepted. Please contact us.',
  ERR_PASSKEY_DISABLED:
    'This passkey has been disabled for your protection. Please use another passkey or contact us.',
  ERR_NOT_EXEMPT: 'Sign-in without a passkey needs an exemption granted by us. Please contact us.',
  ERR_TOTP_INVALID: 'The customer number or the code is not correct.',
  ERR_PASSKEY_LAST: 'Your last passkey cannot be removed: you would have no way left to sign in.',
};

export class AuthnError extends Error {
  override name = 'AuthnError';
  readonly code: AuthnErrorCode;
  /** The customer the failure is attributable to (a registered passkey failed), for throttling. */
  customerId: string | undefined;

  constructor(code: AuthnErrorCode, options?: { cause?: unknown }) {
    super(MESSAGES[code], options);
    this.code = code;
  }
}
