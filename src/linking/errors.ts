export type LinkingErrorCode =
  | 'ERR_APPROVAL_DETAILS'
  | 'ERR_APPROVAL_NOT_FOUND'
  | 'ERR_APPROVAL_USED'
  | 'ERR_APPROVAL_EXPIRED'
  | 'ERR_APPROVAL_TOTP'
  | 'ERR_APPROVAL_TOTP_ATTEMPTS'
  | 'ERR_APPROVAL_NEEDS_PASSKEY'
  | 'ERR_LIMIT_INVALID'
  | 'ERR_LIMIT_NEEDS_FRESH_PASSKEY'
  | 'ERR_LIMIT_DENIED';

/** Messages are safe to show to a customer or an institution: no secrets, no echoed input. */
const MESSAGES: Record<LinkingErrorCode, string> = {
  ERR_APPROVAL_DETAILS: 'The passkey approval does not commit to these operation details.',
  ERR_APPROVAL_NOT_FOUND: 'No approval of this operation was found.',
  ERR_APPROVAL_USED: 'This approval has already been used.',
  ERR_APPROVAL_EXPIRED: 'This approval has expired.',
  ERR_APPROVAL_TOTP:
    'The one-time code is wrong, was already used, or one-time codes are not enabled for you.',
  ERR_APPROVAL_TOTP_ATTEMPTS: 'Too many wrong one-time codes. Please wait 15 minutes and try again.',
  ERR_APPROVAL_NEEDS_PASSKEY:
    'This operation cannot be approved with a one-time code. Please use your brokerage’s written procedure.',
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

export type LinkErrorCode =
  /** The brokerage account is not the customer's, not a securities account, or closed. */
  | 'ERR_LINK_ACCOUNT'
  /** No such bank is configured. */
  | 'ERR_LINK_BANK'
  /** The callback's state is missing, unknown or tampered with. */
  | 'ERR_LINK_STATE'
  /** The callback was already used. */
  | 'ERR_LINK_REPLAY'
  /** The customer took too long at the bank. */
  | 'ERR_LINK_EXPIRED'
  /** The callback arrived in another session than the one that started the link. */
  | 'ERR_LINK_SESSION'
  /** The callback arrived on another bank's redirect URI than its attempt's (OAuth mix-up). */
  | 'ERR_LINK_WRONG_BANK'
  /** No such link (or not visible to the caller). */
  | 'ERR_LINK_NOT_FOUND'
  /** The link is not in a state that allows this change. */
  | 'ERR_LINK_STATUS'
  /** Only the institution that suspended a link may resume it. */
  | 'ERR_LINK_SUSPENDED_BY_OTHER'
  /** The bank could not be reached to start the link. */
  | 'ERR_LINK_BANK_UNAVAILABLE'
  /** The hub's own relying-party key cannot be used (an operator must re-seal or restore it). */
  | 'ERR_LINK_HUB_UNAVAILABLE';

export class LinkError extends Error {
  override name = 'LinkError';
  readonly code: LinkErrorCode;
  constructor(code: LinkErrorCode, message: string) {
    super(message);
    this.code = code;
  }
}
