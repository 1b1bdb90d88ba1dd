/** Risk: failed-authentication throttling, account lock, known devices. */
export {
  type AccountLock,
  accountLock,
  DEFAULT_THROTTLE_POLICY,
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
