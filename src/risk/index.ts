/** Risk: failed-authentication throttling, account lock, known devices. */
export {
  type AccountLock,
  accountLock,
  DEFAULT_THROTTLE_POLICY,
  deviceHash,
  type FailureOutcome,
  isKnownDevice,
  recordAuthFailure,
  recordAuthSuccess,
  rememberDevice,
  sourceKey,
  sourceRetryAfter,
  type ThrottlePolicy,
  unlockAccount,
} from './throttle.ts';
