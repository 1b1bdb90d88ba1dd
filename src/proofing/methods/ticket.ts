/**
 * The one-time enrollment ticket (issued by an operator after KYC, delivered out of band) as a
 * proofing method. The ticket's own rules stay in src/authn/tickets.ts (hash-only storage,
 * single use, failure lock); `check` is that check, possibly wrapped with source throttling.
 */
import { AuthnError, type RequestMeta } from '../../authn/index.ts';
import { ProofingError } from '../errors.ts';
import type { ProofingFlow, ProofingMethod, VerifiedIdentity } from '../method.ts';

export interface TicketAnswer {
  customerNumber: string;
  ticket: string;
}

export type TicketCheck = (
  answer: TicketAnswer,
  meta: RequestMeta,
) => Promise<{ customerId: string; ticketId: string }>;

export function ticketMethod(check: TicketCheck): ProofingMethod<Record<string, never>, TicketAnswer> {
  return {
    name: 'ticket',
    ttlSeconds: 300,
    async begin() {
      return { secret: {}, reply: {} };
    },
    async verify(_flow: ProofingFlow, answer: TicketAnswer, meta: RequestMeta): Promise<VerifiedIdentity> {
      try {
        const { customerId, ticketId } = await check(answer, meta);
        return { customerId, ticketId, evidence: { ticketId } };
      } catch (err) {
        // The ticket module already audited the refusal; the customer sees its message.
        if (err instanceof AuthnError)
          throw new ProofingError('ERR_PROOFING_TICKET', {
            reason: err.code,
            message: err.message,
            cause: err,
          });
        throw err;
      }
    },
  };
}
