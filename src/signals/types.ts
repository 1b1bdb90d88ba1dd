/** Shapes shared across the signals module. */
import type { SIGNAL_ACTIONS } from '../config/index.ts';

export type SignalAction = (typeof SIGNAL_ACTIONS)[number];

/** An RFC 9493 / SSF subject identifier (simple or complex). */
export type SubjectId = { format: string; [member: string]: unknown };

/** A BCP 47 language tag → message map (CAEP reason_admin / reason_user). */
export type LocalizedText = Record<string, string>;

export type InitiatingEntity = 'admin' | 'user' | 'policy' | 'system';

/** CAEP credential types (CAEP 1.0 §3.3.1). */
export type CredentialType =
  | 'password'
  | 'pin'
  | 'x509'
  | 'fido2-platform'
  | 'fido2-roaming'
  | 'fido-u2f'
  | 'verifiable-credential'
  | 'phone-voice'
  | 'phone-sms'
  | 'app';

interface Common {
  /** The customer the event is about (its linked peers receive it). */
  customerId: string;
  /** Ties SETs with one cause together (e.g. account-disabled + session-revoked); generated if absent. */
  txn?: string;
  /** When it happened (default now). */
  occurredAt?: Date;
  initiatingEntity?: InitiatingEntity;
  /** For logs and operators at the peer; a string is sent as `{ "en": … }`. */
  reasonAdmin?: string | LocalizedText;
  reasonUser?: string | LocalizedText;
}

/**
 * What the hub emits, in its own words; emitSecurityEvent maps each to its CAEP / RISC event.
 * Identifiers never appear here: subjects are chosen per peer at fan-out.
 */
export type SecurityEventInput = Common &
  (
    | {
        type: 'credential-change';
        credentialType: CredentialType;
        changeType: 'create' | 'revoke' | 'update' | 'delete';
        friendlyName?: string;
        fido2Aaguid?: string;
      }
    | { type: 'session-revoked' }
    | {
        type: 'assurance-level-change';
        namespace: string;
        currentLevel: string;
        previousLevel?: string;
        changeDirection?: 'increase' | 'decrease';
      }
    | {
        type: 'risk-level-change';
        currentLevel: 'LOW' | 'MEDIUM' | 'HIGH';
        previousLevel?: 'LOW' | 'MEDIUM' | 'HIGH';
        riskReason?: string;
        principal?: string;
      }
    | { type: 'account-disabled'; reason?: 'hijacking' | 'bulk-account' }
    | { type: 'account-enabled' }
    | { type: 'credential-compromise'; credentialType: CredentialType }
    | { type: 'account-credential-change-required' }
    | { type: 'recovery-activated' }
    | {
        type: 'identifier-changed';
        /** Only peers the customer shares this kind of identifier with learn about the change. */
        format: 'email' | 'phone_number';
        oldValue: string;
        newValue?: string;
      }
  );

export type SecurityEventType = SecurityEventInput['type'];
