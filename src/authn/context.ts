import type { Config } from '../config/index.ts';
import type { Db } from '../db/index.ts';
import { loadKeyEncryptionKey } from '../keys/index.ts';
import { type AttestationPolicy, loadAttestationPolicy } from './attestation.ts';

export interface AuthnContext {
  db: Db;
  /** WebAuthn relying-party id (the issuer's host name). */
  rpId: string;
  /** Shown by authenticators when a passkey is created. */
  rpName: string;
  /** The only origin accepted in WebAuthn client data. */
  origin: string;
  ticketTtlSeconds: number;
  maxFailedAttempts: number;
  /** Key-encryption key for secrets kept by this module (TOTP secrets). */
  kek?: Buffer;
  /** Which attestations earn `phrh` (default: none asked for, every passkey `phr`). */
  attestation?: AttestationPolicy;
}

/** Where a request came from, for the audit log. */
export interface RequestMeta {
  ip?: string | undefined;
  /** Source port (JSDA IV.5.(1): kept for investigations, e.g. behind carrier-grade NAT). */
  port?: number | undefined;
  userAgent?: string | undefined;
  interactionId?: string | undefined;
}

export function createAuthnContext(db: Db, config: Config, rpName = 'Kakehashi'): AuthnContext {
  return {
    kek: loadKeyEncryptionKey(config),
    db,
    rpId: config.rpId,
    rpName,
    origin: config.origin,
    ticketTtlSeconds: config.enrollment.ticketTtl,
    maxFailedAttempts: config.enrollment.maxFailedAttempts,
    attestation: loadAttestationPolicy(config.authn.attestation),
  };
}

/** Audit event types written by this module (other modules and pages query by them). */
export const AUTHN_AUDIT = {
  ticketIssued: 'enrollment.ticket.issued',
  ticketAccepted: 'enrollment.ticket.accepted',
  ticketRejected: 'enrollment.ticket.rejected',
  ticketLocked: 'enrollment.ticket.locked',
  ticketUsed: 'enrollment.ticket.used',
  passkeyRegister: 'authn.passkey.register',
  passkeyLogin: 'authn.passkey.login',
  passkeyCloneSuspected: 'authn.passkey.clone_suspected',
  passkeyRenamed: 'authn.passkey.renamed',
  passkeyRemoved: 'authn.passkey.removed',
} as const;
