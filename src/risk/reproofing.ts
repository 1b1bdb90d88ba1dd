/**
 * What a completed identity re-proofing ends (every path: proofing purpose `unlock`, and enrolment of
 * a passkey or an authenticator app with a one-time ticket or a verified proofing flow): the account
 * lock, and the peers' verdicts received before the proof began — applied ones (stops on the sweeps,
 * levels, the lock until re-proofing: clearPeerLevels, liftLock) and pending ones not yet acted on
 * (settlePeerActions), which acted on afterwards would raise the level or stop the sweeps again
 * although the customer proved who they are after they arrived. A verdict received at or after the
 * proof began is not answered by it: applied, it stays in force; pending, it acts as usual.
 */
import { recordAudit } from '../audit/index.ts';
import { type Db, lockCustomer } from '../db/index.ts';
import { clearPeerLevels, peerVerdictsInForce, settlePeerActions } from './peerLevels.ts';
import { liftLock } from './throttle.ts';

export interface Reproofing {
  customerId: string;
  /**
   * When the proof began, as the database has it (src/proofing proofBegan: the flow's or ticket's
   * start, never a client's value). Undefined when unknown (the flow or ticket is gone): then none of
   * the peers' verdicts is answered, only the lock after failed sign-ins is lifted.
   */
  began: Date | undefined;
}

/** Whether a lock was lifted, and how many pending peer actions were settled. */
export async function clearAfterReproofing(
  db: Db,
  r: Reproofing,
): Promise<{ unlocked: boolean; settled: number }> {
  const before = r.began ?? new Date(0);
  return db.transaction(async (tx) => {
    // The customer's lock (src/db/customerLock.ts), as for every change of the facts money
    // decisions read: a decision in flight finishes first, a later one sees all of this at once.
    await lockCustomer(tx, r.customerId);
    // Settled first: a row a consumer is applying is waited for here, so what it applied is in place
    // when the statements below lift it (each sees what committed before it started).
    const settled = await settlePeerActions(tx, r.customerId, before);
    await clearPeerLevels(tx, r.customerId, 'reproofing', before);
    const unlocked = await liftLock(tx, r.customerId, 'reproofing', before);
    const kept = await peerVerdictsInForce(tx, r.customerId);
    if (kept.length > 0)
      await recordAudit(tx, {
        type: 'risk.reproofing.kept',
        outcome: 'info',
        actor: 'reproofing',
        customerId: r.customerId,
        data: { proofBegan: r.began?.toISOString() ?? null, kept },
      });
    return { unlocked, settled };
  });
}
