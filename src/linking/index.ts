/**
 * Bank–brokerage linking and the withdrawal-strength policy (issue 6): one declarative policy
 * (config/withdrawal-policy.json) evaluated by one engine for withdrawals, withdrawal-account
 * changes, sweep links, sweep pulls and limit changes; every decision explained and audited.
 */
export { approvalRoutes } from './approvals/approvalInteraction.ts';
export {
  APPROVAL_TTL_SECONDS,
  attachApprovalToGrant,
  consumeApproval,
  finishOperationApproval,
  finishTotpApproval,
  type OperationApproval,
  startOperationApproval,
} from './approvals/approvals.ts';
export {
  type BankAccountDetails,
  canonicalJson,
  detailsHash,
  isOperationDetailType,
  maskAccountNumber,
  OPERATION_DETAIL_TYPES,
  type OperationDetails,
  parseOperationDetails,
} from './approvals/operationDetails.ts';
export {
  applySweepSuspensions,
  type BankLink,
  decideSweepPull,
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
  type SweepPullOutcome,
  type SweepPullRequest,
  setBankLinkSuspended,
  startBankLink,
  sweepPullFacts,
  sweepsPeerStopped,
  unlinkBankLink,
} from './bankLinks.ts';
export { type BankStrength, bankStrength } from './bankStrength.ts';
export {
  CHANNELS,
  type Channel,
  type ChannelState,
  changeChannel,
  channelDisabled,
  channelStates,
  isChannel,
} from './channels.ts';
export { type DecisionContext, decide } from './decide.ts';
export { decisionRoutes } from './decisionsApi.ts';
export { LinkError, type LinkErrorCode, LinkingError, type LinkingErrorCode } from './errors.ts';
export {
  applyDueLimitRaises,
  type CustomerLimits,
  changeLimit,
  customerLimits,
  LIMIT_NAMES,
  type LimitName,
  type Limits,
  MAX_LIMIT,
} from './limits.ts';
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
export {
  changeProduct,
  isProduct,
  PRODUCTS,
  type Product,
  type ProductChange,
  type ProductState,
  productStates,
} from './products.ts';
export { type LinkingRoutesOptions, linkingRoutes } from './routes.ts';
export {
  activeWithdrawalAccount,
  registerWithdrawalAccount,
  type WithdrawalAccount,
} from './withdrawalAccounts.ts';
