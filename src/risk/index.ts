/**
 * Risk: failed-authentication throttling, account lock, known devices; login and post-login
 * signals, declarative versioned rules that decide allow / step-up / block, and the forensic
 * record of sign-ins and operations (JSDA IV.5, FSA comments 84–88). See docs/risk.md.
 */
export { type RiskConfig, riskConfigSchema } from './config.ts';
export {
  announceDetectionOff,
  assessLogin,
  assessOperation,
  createRiskEngine,
  DEFAULT_RULES_FILE,
  deviceHashOf,
  type LoginAssessment,
  type ObservedRequest,
  type OperationInput,
  observeRequest,
  type RiskEngine,
  recordLoginFailure,
  riskEngineFor,
  sessionRisk,
  signInGate,
} from './engine.ts';
export {
  declareTravel,
  exportCustomerForensics,
  type ForensicsRow,
  noteAccountRecovered,
  TravelError,
} from './forensics.ts';
export { createGeoLookup, GeoDataError, type GeoLookup, type Location, networkRange } from './geo.ts';
export {
  clearPeerLevels,
  type EffectiveRiskLevel,
  effectiveRiskLevel,
  type PeerRiskLevel,
} from './peerLevels.ts';
export { ReplayError, type ReplayedDecision, replay } from './replay.ts';
export { clearAfterReproofing, type Reproofing } from './reproofing.ts';
export {
  type Decision,
  evaluate,
  loadRuleSet,
  parseRuleSet,
  type RiskDecision,
  type RiskReason,
  RiskRulesError,
  type RuleSet,
  type Signals,
} from './rules.ts';
export { deriveLoginSignals, type LoginAttempt, type LoginFacts, MemoryHistory } from './signals.ts';
export { type CustomerRiskView, customerRisk, deleteExpiredRiskEvents } from './store.ts';
export {
  type AccountLock,
  accountLock,
  DEFAULT_THROTTLE_POLICY,
  deviceHash,
  type FailureOutcome,
  isKnownDevice,
  lockAndDevice,
  recordAuthFailure,
  recordAuthSuccess,
  releaseAccountAttempt,
  rememberDevice,
  sourceKey,
  sourceRetryAfter,
  type ThrottlePolicy,
  takeAccountAttempt,
  unlockAccount,
} from './throttle.ts';
