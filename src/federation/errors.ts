export type FederationErrorCode =
  /** No bank with that id is configured. */
  | 'ERR_BANK_UNKNOWN'
  /** The bank's provider could not be reached or its metadata is unusable. */
  | 'ERR_BANK_UNAVAILABLE'
  /** The bank answered the authorization request with an error (e.g. the customer cancelled). */
  | 'ERR_BANK_DENIED'
  /** The bank's response did not validate: state, nonce, ID token, code exchange. */
  | 'ERR_BANK_RESPONSE'
  /**
   * The hub's own relying-party key (sealed in `secrets`) does not open: sealed with another
   * key-encryption key, tampered, or unreadable. Nothing the bank or the customer did.
   */
  | 'ERR_RP_KEY'
  /**
   * `keys rotate-rp` too soon after `keys promote-rp`: it would unpublish the previous signing key
   * while a node may still sign with it (the message names when it becomes possible).
   */
  | 'ERR_RP_KEY_IN_USE';

export class FederationError extends Error {
  override name = 'FederationError';
  readonly code: FederationErrorCode;
  /** The bank's OAuth error code, for ERR_BANK_DENIED. */
  readonly oauthError: string | undefined;
  constructor(
    code: FederationErrorCode,
    message: string,
    options: { cause?: unknown; oauthError?: string } = {},
  ) {
    super(message, { cause: options.cause });
    this.code = code;
    this.oauthError = options.oauthError;
  }
}
