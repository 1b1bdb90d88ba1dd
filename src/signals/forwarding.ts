/**
 * What the hub re-signs when it forwards a peer's event (the `forward` action): only the members the
 * CAEP 1.0 / RISC 1.0 event schemas define, each with a value of the defined shape — never free text
 * the hub cannot vouch for (reason_admin, reason_user, risk_reason, friendly_name, x509 names) and
 * never members the schemas do not know, since the receiving peer trusts our signature. Event types
 * without a schema here are not forwarded, nor are events missing a member their schema requires.
 */
import { EVENT } from './vocabulary.ts';

type Check = (v: unknown) => boolean;

const oneOf =
  (...values: string[]): Check =>
  (v) =>
    typeof v === 'string' && values.includes(v);
/** A short identifier-like string (levels, namespaces): no spaces, no free text. */
const token: Check = (v) => typeof v === 'string' && /^[A-Za-z0-9_.:-]{1,64}$/.test(v);
const timestamp: Check = (v) => typeof v === 'number' && Number.isFinite(v) && v > 0;
const uuid: Check = (v) => typeof v === 'string' && /^[0-9a-fA-F-]{36}$/.test(v);

const CREDENTIAL_TYPES = [
  'password',
  'pin',
  'x509',
  'fido2-platform',
  'fido2-roaming',
  'fido-u2f',
  'verifiable-credential',
  'phone-voice',
  'phone-sms',
  'app',
];
const LEVEL = oneOf('LOW', 'MEDIUM', 'HIGH');

interface Schema {
  members: Record<string, Check>;
  required?: string[];
}

/** CAEP 1.0 §2: the optional claims every CAEP event may carry, minus the free-text ones. */
const CAEP_COMMON: Record<string, Check> = {
  event_timestamp: timestamp,
  initiating_entity: oneOf('admin', 'user', 'policy', 'system'),
};

const SCHEMAS: Record<string, Schema> = {
  [EVENT.sessionRevoked]: { members: CAEP_COMMON },
  [EVENT.credentialChange]: {
    members: {
      ...CAEP_COMMON,
      credential_type: oneOf(...CREDENTIAL_TYPES),
      change_type: oneOf('create', 'revoke', 'update', 'delete'),
      fido2_aaguid: uuid,
    },
    required: ['credential_type', 'change_type'],
  },
  [EVENT.assuranceLevelChange]: {
    members: {
      ...CAEP_COMMON,
      namespace: token,
      current_level: token,
      previous_level: token,
      change_direction: oneOf('increase', 'decrease'),
    },
    required: ['namespace', 'current_level'],
  },
  [EVENT.riskLevelChange]: {
    members: {
      ...CAEP_COMMON,
      principal: oneOf('USER', 'DEVICE', 'SESSION', 'TENANT', 'ORG_UNIT', 'GROUP'),
      current_level: LEVEL,
      previous_level: LEVEL,
    },
    required: ['principal', 'current_level'],
  },
  [EVENT.accountDisabled]: { members: { reason: oneOf('hijacking', 'bulk-account') } },
  [EVENT.accountEnabled]: { members: {} },
  [EVENT.credentialCompromise]: {
    members: { credential_type: oneOf(...CREDENTIAL_TYPES), event_timestamp: timestamp },
    required: ['credential_type'],
  },
  [EVENT.accountCredentialChangeRequired]: { members: {} },
  [EVENT.recoveryActivated]: { members: {} },
};

/** The event as the hub forwards it, or undefined when it is not forwardable. */
export function forwardableEvent(
  eventType: string,
  event: Record<string, unknown>,
): Record<string, unknown> | undefined {
  const schema = SCHEMAS[eventType];
  if (!schema) return undefined;
  const out: Record<string, unknown> = {};
  for (const [name, valid] of Object.entries(schema.members))
    if (event[name] !== undefined && valid(event[name])) out[name] = event[name];
  if (schema.required?.some((name) => out[name] === undefined)) return undefined;
  return out;
}
