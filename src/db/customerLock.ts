/**
 * The customer's row lock. Every decision about a customer's money (withdrawal, withdrawal-account
 * change, trade, sweep pull) takes it before it reads the facts it decides on, and every change of those facts
 * that must stop such a decision at once takes it too: a freeze (src/console/freeze.ts), switching a
 * channel off, lowering a limit, blocking a product, a new withdrawal account. So a decision either
 * finishes before the change or reads the changed facts — never decides on values the change has
 * already replaced.
 */
import type { Queryable } from './types.ts';

/**
 * Takes the lock in the caller's transaction until it ends. `exclusive` (FOR NO KEY UPDATE) for
 * decisions that count or write and for changes; `shared` (FOR SHARE) for decisions that only read
 * (trade): they wait for changes, not for each other. Neither blocks the foreign-key checks (FOR KEY
 * SHARE) of rows inserted for the customer elsewhere.
 */
export async function lockCustomer(
  tx: Queryable,
  customerId: string,
  mode: 'exclusive' | 'shared' = 'exclusive',
): Promise<void> {
  await tx.query(
    mode === 'exclusive'
      ? 'SELECT 1 FROM customers WHERE id = $1 FOR NO KEY UPDATE'
      : 'SELECT 1 FROM customers WHERE id = $1 FOR SHARE',
    [customerId],
  );
}
