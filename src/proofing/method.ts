/**
 * The pluggable proofing method. A method knows how to start a flow (what single-use material to
 * keep, what the customer's browser gets) and how to check the customer's answer. Everything
 * else — flows bound to an interaction, single use, expiry, the proofing record, the audit log,
 * the one-time enrollment ticket a verified flow carries — is the engine's (engine.ts), the same
 * for every method.
 */
import type { RequestMeta } from '../authn/index.ts';

export type ProofingMethodName = 'ticket' | 'ekyc' | 'jpki';
export type ProofingPurpose = 'enrollment' | 'recovery' | 'unlock';
export const PROOFING_PURPOSES: readonly ProofingPurpose[] = ['enrollment', 'recovery', 'unlock'];

/** The registered facts a method matches its evidence against. */
export interface ProofingCustomer {
  id: string;
  nameKanji: string;
  nameKana: string;
  /** YYYY-MM-DD, or null when not registered. */
  birthDate: string | null;
}

export interface ProofingFlow {
  id: string;
  method: ProofingMethodName;
  purpose: ProofingPurpose;
  interactionId: string;
  /** The customer the flow claims to be for; null when the customer number is unknown. */
  customer: ProofingCustomer | null;
  secret: Record<string, unknown>;
  expiresAt: Date;
}

export interface VerifiedIdentity {
  customerId: string;
  /** What was checked and how, for the proofing record: no secrets, no names, no birth dates. */
  evidence: Record<string, unknown>;
  /** A ticket the method itself consumed for this flow (the ticket method); else the engine mints one. */
  ticketId?: string;
}

export interface ProofingMethod<Start = unknown, Answer = unknown> {
  readonly name: ProofingMethodName;
  /** Seconds a started flow stays answerable. */
  readonly ttlSeconds: number;
  /** Single-use material kept server-side and the reply for the customer's browser. */
  begin(
    flow: Omit<ProofingFlow, 'secret' | 'expiresAt'>,
  ): Promise<{ secret: Record<string, unknown>; reply: Start }>;
  /**
   * Checks the answer against the flow. Throws ProofingError (recorded as refused) when the
   * evidence does not prove this flow's customer.
   */
  verify(flow: ProofingFlow, answer: Answer, meta: RequestMeta): Promise<VerifiedIdentity>;
}
