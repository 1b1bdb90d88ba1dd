/**
 * The SSF / CAEP / RISC vocabulary the hub speaks: event-type URIs, delivery-method URNs, and the
 * receiver's default action for each event type.
 */
import type { SignalAction } from './types.ts';

const CAEP = 'https://schemas.openid.net/secevent/caep/event-type/';
const RISC = 'https://schemas.openid.net/secevent/risc/event-type/';
const SSF = 'https://schemas.openid.net/secevent/ssf/event-type/';

export const EVENT = {
  credentialChange: `${CAEP}credential-change`,
  sessionRevoked: `${CAEP}session-revoked`,
  assuranceLevelChange: `${CAEP}assurance-level-change`,
  riskLevelChange: `${CAEP}risk-level-change`,
  tokenClaimsChange: `${CAEP}token-claims-change`,
  deviceComplianceChange: `${CAEP}device-compliance-change`,
  accountDisabled: `${RISC}account-disabled`,
  accountEnabled: `${RISC}account-enabled`,
  credentialCompromise: `${RISC}credential-compromise`,
  accountCredentialChangeRequired: `${RISC}account-credential-change-required`,
  recoveryActivated: `${RISC}recovery-activated`,
  identifierChanged: `${RISC}identifier-changed`,
  verification: `${SSF}verification`,
  streamUpdated: `${SSF}stream-updated`,
} as const;

/** Event types about customers that the hub transmits (events_supported of every stream). */
export const TRANSMITTED_EVENTS: readonly string[] = [
  EVENT.credentialChange,
  EVENT.sessionRevoked,
  EVENT.assuranceLevelChange,
  EVENT.riskLevelChange,
  EVENT.accountDisabled,
  EVENT.accountEnabled,
  EVENT.credentialCompromise,
  EVENT.accountCredentialChangeRequired,
  EVENT.recoveryActivated,
  EVENT.identifierChanged,
];

/** Stream events: sent on any stream whatever it requested (SSF 1.0 §8.1.4, §8.1.5). */
export const STREAM_EVENTS: readonly string[] = [EVENT.verification, EVENT.streamUpdated];

export const PUSH = 'urn:ietf:rfc:8935';
export const POLL = 'urn:ietf:rfc:8936';
export type DeliveryMethod = typeof PUSH | typeof POLL;

export const SET_TYPE = 'secevent+jwt';
export const SET_CONTENT_TYPE = 'application/secevent+jwt';

/**
 * What a received SET does by default (config `signals.actions` and a peer's `actions` override
 * per key). A takeover elsewhere ends the customer's sessions and tokens here; weaker signals raise
 * risk or ask for step-up. `forward` passes the event on to the customer's other linked peers.
 */
export const DEFAULT_ACTIONS: Readonly<Record<string, readonly SignalAction[]>> = {
  [`${EVENT.accountDisabled}#hijacking`]: [
    'revoke_sessions',
    'raise_risk',
    'require_reproofing',
    'suspend_sweeps',
    'notify',
    'forward',
  ],
  [EVENT.accountDisabled]: ['revoke_sessions', 'raise_risk', 'suspend_sweeps', 'notify'],
  [EVENT.credentialCompromise]: ['revoke_sessions', 'raise_risk', 'require_step_up', 'notify', 'forward'],
  [EVENT.accountCredentialChangeRequired]: ['require_step_up', 'notify'],
  [EVENT.recoveryActivated]: ['raise_risk', 'require_step_up', 'suspend_sweeps', 'notify'],
  [EVENT.sessionRevoked]: ['raise_risk', 'require_step_up'],
  [EVENT.credentialChange]: ['raise_risk', 'notify'],
  [`${EVENT.riskLevelChange}#HIGH`]: ['raise_risk', 'require_step_up', 'suspend_sweeps'],
  [`${EVENT.riskLevelChange}#MEDIUM`]: ['raise_risk'],
  [EVENT.assuranceLevelChange]: [],
  [EVENT.identifierChanged]: ['notify'],
};
