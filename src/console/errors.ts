const MESSAGES = {
  ERR_OPERATOR_NAME: 'operator names are 2–40 lower-case letters, digits, dots, dashes or underscores',
  ERR_OPERATOR_ROLE: 'the role must be viewer, operator or admin',
  ERR_OPERATOR_EXISTS: 'an operator with this name exists',
  ERR_OPERATOR_UNKNOWN: 'no active operator with this name',
  ERR_OPERATOR_TICKET: 'the operator name or enrollment ticket is wrong, used or expired',
  ERR_OPERATOR_DISABLED: 'this operator is disabled',
  ERR_WEBAUTHN: 'the passkey could not be verified; start again',
  ERR_CUSTOMER_UNKNOWN: 'no such customer',
  ERR_ALREADY_FROZEN: 'the customer is already frozen',
  ERR_NOT_FROZEN: 'the customer is not frozen',
  ERR_REPROOFING_REQUIRED:
    'the customer has not re-proofed their identity since the freeze (a verified proofing record for unlock or recovery)',
  ERR_REQUEST_UNKNOWN: 'no open request with this id (decided, expired or unknown)',
  ERR_REQUEST_OWN: 'a request must be approved or rejected by another operator than the one who filed it',
  ERR_PEER_UNKNOWN: 'no circuit breaker for this peer',
  ERR_REASON_REQUIRED:
    'give a reason (at most 500 characters; at least 5 for a request another operator approves)',
} as const;

export type ConsoleErrorCode = keyof typeof MESSAGES;

export class ConsoleError extends Error {
  readonly code: ConsoleErrorCode;
  constructor(code: ConsoleErrorCode) {
    super(MESSAGES[code]);
    this.name = 'ConsoleError';
    this.code = code;
  }
}
