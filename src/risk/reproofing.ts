/**
 * What a completed identity re-proofing ends (every path: proofing purpose `unlock`, and enrolment of
 * a passkey or an authenticator app with a one-time ticket or a verified proofing flow): the account
 * lock, the peers' levels and stops on the sweeps (clearPeerLevels), and the peers' actions received
 * before the proof began but not yet acted on (settlePeerActions) — acted on afterwards they would
 * raise the level or stop the sweeps again although the customer proved who they are after they
 * arrived. An action received at or after the proof began is not answered by it and acts as usual.
 */
import type { Db } from '../db/index.ts';
import { clearPeerLevels, settlePeerActions } from './peerLevels.ts';
import { liftLock } from './throttle.ts';

export interface Reproofing {
  customerId: string;
  /**
   * When the proof began, as the database has it (src/proofing proofBegan: the flow's or ticket's
   * start, never a client's value); undefined when unknown: then nothing pending is settled.
   */
  began: Date | undefined;
}

/** Whether a lock was lifted, and how many pending peer actions were settled. */
export async function clearAfterReproofing(
  db: Db,
  r: Reproofing,
): Promise<{ unlocked: boolean; settled: number }> {
  return db.transaction(async (tx) => {
    // The customer's lock (src/linking/customerLock.ts), as for every change of the facts money
    // decisions read: a decision in flight finishes first, a later one sees all of this at once.
    await tx.query('SELECT 1 FROM customers WHERE id = $1 FOR NO KEY UPDATE', [r.customerId]);
    // Settled first: a row a consumer is applying is waited for here, so what it applied is in place
    // when the statements below lift it (each sees what committed before it started).
    const settled = r.began ? await settlePeerActions(tx, r.customerId, r.began) : 0;
    await clearPeerLevels(tx, r.customerId, 'reproofing');
    const unlocked = await liftLock(tx, r.customerId, 'reproofing');
    return { unlocked, settled };
  });
}
