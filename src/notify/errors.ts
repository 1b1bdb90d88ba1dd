export type NotifyErrorCode =
  /** Notification data that does not fit its kind (unknown field, wrong type, too long). */
  | 'ERR_NOTIFY_DATA'
  /** A kind that does not exist. */
  | 'ERR_NOTIFY_KIND'
  /** A security-critical kind cannot be switched off. */
  | 'ERR_NOTIFY_CRITICAL'
  /** Not an address this channel kind accepts. */
  | 'ERR_NOTIFY_ADDRESS'
  /** The customer already has this address as an active channel. */
  | 'ERR_NOTIFY_DUPLICATE'
  /** No such active channel of this customer. */
  | 'ERR_NOTIFY_CHANNEL_UNKNOWN'
  /** The last active channel cannot be removed: security notices must reach the customer somewhere. */
  | 'ERR_NOTIFY_LAST_CHANNEL'
  /** A stored address does not open (wrong key-encryption key or tampered row). */
  | 'ERR_NOTIFY_SEALED';

/** Messages never echo addresses or notification content. */
export class NotifyError extends Error {
  override name = 'NotifyError';
  readonly code: NotifyErrorCode;
  constructor(code: NotifyErrorCode, message: string, options?: ErrorOptions) {
    super(message, options);
    this.code = code;
  }
}
