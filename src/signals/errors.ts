/**
 * Errors of the signals module. SignalsError carries a stable code for programmatic callers;
 * the two HTTP error types carry what goes on the wire: an OAuth-style error for the management
 * and poll endpoints, an RFC 8935 §2.3 `{err, description}` for the push receiver.
 */

export type SignalsErrorCode =
  | 'ERR_SSF_UNKNOWN_PEER'
  | 'ERR_SSF_UNKNOWN_CUSTOMER'
  | 'ERR_SSF_PEER_UNREACHABLE'
  | 'ERR_SSF_PEER_RESPONSE'
  | 'ERR_SSF_CONFIG'
  /** A shared identifier another customer already consented to share with the same peer. */
  | 'ERR_SSF_SUBJECT_TAKEN';

export class SignalsError extends Error {
  override name = 'SignalsError';
  readonly code: SignalsErrorCode;
  constructor(code: SignalsErrorCode, message: string, options?: ErrorOptions) {
    super(message, options);
    this.code = code;
  }
}

/** A 4xx of the management / poll API: `{error, error_description}`, plus a challenge for 401/403. */
export class ManagementError extends Error {
  override name = 'ManagementError';
  readonly code = 'ERR_SSF_MANAGEMENT';
  readonly status: number;
  readonly error: string;
  readonly challenge: string | undefined;
  /** Sent as Retry-After (429). */
  readonly retryAfterSeconds: number | undefined;
  constructor(
    status: number,
    error: string,
    description: string,
    challenge?: string,
    retryAfterSeconds?: number,
  ) {
    super(description);
    this.status = status;
    this.error = error;
    this.challenge = challenge;
    this.retryAfterSeconds = retryAfterSeconds;
  }
}

/** RFC 8935 §2.4 error codes, plus SSF's invalid_state. */
export type SetErrorCode =
  | 'invalid_request'
  | 'invalid_key'
  | 'invalid_issuer'
  | 'invalid_audience'
  | 'authentication_failed'
  | 'access_denied'
  | 'invalid_state';

/** A SET the receiver refuses (or a push it cannot authenticate). */
export class SetRejected extends Error {
  override name = 'SetRejected';
  readonly code = 'ERR_SSF_SET_REJECTED';
  readonly err: SetErrorCode;
  readonly status: number;
  constructor(err: SetErrorCode, description: string, status = 400) {
    super(description);
    this.err = err;
    this.status = status;
  }
}
