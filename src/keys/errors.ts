export type KeyErrorCode =
  /** A sealed value could not be opened: tampered, wrong key-encryption key, or wrong context. */
  | 'ERR_KEY_DECRYPT'
  /** The key-encryption key is not 32 bytes of base64url. */
  | 'ERR_KEY_INVALID'
  /** The key-encryption key file is readable by group or others. */
  | 'ERR_KEY_FILE_MODE';

/** Errors about key material. Messages never contain key material. */
export class KeyError extends Error {
  readonly code: KeyErrorCode;

  constructor(code: KeyErrorCode, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = 'KeyError';
    this.code = code;
  }
}
