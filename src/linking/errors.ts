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
  /** No such link (or not visible to the caller). */
  | 'ERR_LINK_NOT_FOUND'
  /** The link is not in a state that allows this change. */
  | 'ERR_LINK_STATUS'
  /** Only the institution that suspended a link may resume it. */
  | 'ERR_LINK_SUSPENDED_BY_OTHER'
  /** The bank could not be reached to start the link. */
  | 'ERR_LINK_BANK_UNAVAILABLE';

export class LinkError extends Error {
  override name = 'LinkError';
  readonly code: LinkErrorCode;
  constructor(code: LinkErrorCode, message: string) {
    super(message);
    this.code = code;
  }
}
