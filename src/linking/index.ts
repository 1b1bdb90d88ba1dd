/**
 * Bank–brokerage linking and the withdrawal-strength policy (issue 6): one declarative policy
 * (config/withdrawal-policy.json) evaluated by one engine for withdrawals, withdrawal-account
 * changes, sweep links, sweep pulls and limit changes; every decision explained and audited.
 */

export {
  applySweepSuspensions,
  type BankLink,
  deleteExpiredLinkAttempts,
  finishBankLink,
  type InstitutionEvent,
  type LinkingDeps,
  type LinkOutcome,
  type LinkStatus,
  listBankLinks,
  listInstitutionEvents,
  listInstitutionLinks,
  NO_CREDENTIAL_CHANGE_DAYS,
  type RecordSweepInput,
  type RefusalReason,
  recordSweep,
  reportSweepDecision,
  type SweepDecisionInput,
  type SweepPullInput,
  setBankLinkSuspended,
  startBankLink,
  sweepPullFacts,
  unlinkBankLink,
} from './bankLinks.ts';
export { type BankStrength, bankStrength } from './bankStrength.ts';
export { type DecisionContext, decide } from './decide.ts';
export { LinkError, type LinkErrorCode } from './errors.ts';
export { namesMatch, normalizeName, type RegisteredName } from './nameMatch.ts';
export { describeCondition, describePolicy } from './policy/describePolicy.ts';
export { evaluatePolicy, type MatchedRule, type PolicyDecision } from './policy/evaluatePolicy.ts';
export { DEFAULT_POLICY_FILE, loadPolicy } from './policy/loadPolicy.ts';
export {
  ACR_FACT_VALUES,
  BANK_STRENGTHS,
  type FactsOf,
  isOperation,
  OPERATION_NAMES,
  OPERATIONS,
  type Operation,
  RISK_LEVELS,
} from './policy/operations.ts';
export {
  DECISIONS,
  type Decision,
  type Obligations,
  type Policy,
  PolicyError,
  parsePolicy,
} from './policy/parsePolicy.ts';
export { type LinkingRoutesOptions, linkingRoutes } from './routes.ts';
