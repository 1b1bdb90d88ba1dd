export type LinkingErrorCode =
  | 'ERR_APPROVAL_DETAILS'
  | 'ERR_APPROVAL_NOT_FOUND'
  | 'ERR_APPROVAL_USED'
  | 'ERR_APPROVAL_EXPIRED'
  | 'ERR_LIMIT_INVALID'
  | 'ERR_LIMIT_NEEDS_FRESH_PASSKEY'
  | 'ERR_LIMIT_DENIED';

/** Messages are safe to show to a customer or an institution: no secrets, no echoed input. */
const MESSAGES: Record<LinkingErrorCode, string> = {
  ERR_APPROVAL_DETAILS: 'The passkey approval does not commit to these operation details.',
  ERR_APPROVAL_NOT_FOUND: 'No approval of this operation was found.',
  ERR_APPROVAL_USED: 'This approval has already been used.',
  ERR_APPROVAL_EXPIRED: 'This approval has expired.',
  ERR_LIMIT_INVALID: 'The limit must be a whole number of yen.',
  ERR_LIMIT_NEEDS_FRESH_PASSKEY: 'Raising a limit needs a passkey sign-in within the last 5 minutes.',
  ERR_LIMIT_DENIED: 'This limit cannot be raised now. Please contact us.',
};

export class LinkingError extends Error {
  override name = 'LinkingError';
  readonly code: LinkingErrorCode;
  constructor(code: LinkingErrorCode, options?: { cause?: unknown }) {
    super(MESSAGES[code], options);
    this.code = code;
  }
}
