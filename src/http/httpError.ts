/**
 * A client-facing failure of the hub's own pages and JSON endpoints, answered in the OAuth error
 * shape: `{ error, error_code?, error_description }` with `status` (and Retry-After when set).
 */
export class HttpError extends Error {
  override name = 'HttpError';
  readonly status: number;
  readonly error: string;
  readonly code: string | undefined;
  readonly retryAfter: number | undefined;
  constructor(status: number, error: string, description: string, code?: string, retryAfter?: number) {
    super(description);
    this.status = status;
    this.error = error;
    this.code = code;
    this.retryAfter = retryAfter;
  }
}
