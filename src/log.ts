import pino from 'pino';

export type Logger = pino.Logger;

/** Structured logs. Authorization, cookies and DPoP proofs are redacted wherever they appear. */
export function createLogger(level: string): Logger {
  return pino({
    level,
    redact: {
      paths: [
        'req.headers.authorization',
        'req.headers.cookie',
        'req.headers.dpop',
        '*.ticket',
        '*.private_jwk',
        '*.d',
      ],
      censor: '[redacted]',
    },
  });
}
