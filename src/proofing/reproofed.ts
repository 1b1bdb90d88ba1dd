/**
 * The end of every re-proofing path (proofing purpose `unlock`; enrolment of a passkey or an
 * authenticator app under a one-time ticket or a verified flow): the clear of src/risk, given the time
 * the proof began as stored with the flow or ticket, and the customer told when a lock was lifted.
 */
import type { Db } from '../db/index.ts';
import { notifyCustomer } from '../oidc/securityNotices.ts';
import { clearAfterReproofing } from '../risk/index.ts';
import { type ProofReference, proofBegan } from './engine.ts';

/** Returns whether a lock was lifted. */
export async function reproofed(db: Db, customerId: string, proof: ProofReference): Promise<boolean> {
  const { unlocked } = await clearAfterReproofing(db, { customerId, began: await proofBegan(db, proof) });
  if (unlocked) await notifyCustomer(db, { customerId, kind: 'account_unlocked', data: {} });
  return unlocked;
}
