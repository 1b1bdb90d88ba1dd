/**
 * Products a customer allows trading in (issue 6, item 3; JSDA IV.1.(2) BP②). In the 2025
 * takeovers attackers used victims' accounts to buy thinly traded foreign small caps; a customer who
 * never trades such products switches them off, and a brokerage asks the hub (decision `trade`)
 * before an order. Blocking a product is lowering: at once. Allowing one is raising: a passkey
 * sign-in within 5 minutes, then the policy's cool-off — the same raise_limit decision as limits.
 */
import { type Db, lockCustomer, type Queryable } from '../db/index.ts';
import { enqueueNotification } from '../notify/index.ts';
import { decide } from './decide.ts';
import { raiseUnderLock } from './limits.ts';
import type { Policy } from './policy/parsePolicy.ts';
import { PRODUCTS, type Product } from './productCatalogue.ts';

export { isProduct, PRODUCT_NAMES, PRODUCTS, type Product } from './productCatalogue.ts';

export interface ProductState {
  product: Product;
  allowed: boolean;
  /** An allow waiting for its cool-off. */
  allowAt: Date | null;
}

/**
 * Every product of the catalogue with the customer's state; no choice of theirs → `defaults`. The
 * state is derived in the SELECT: an allow whose cool-off has ended counts as allowed, so a read (one
 * per `trade` decision and page view) writes nothing. The row keeps `allowed = false` with its past
 * `allow_at` until the next change overwrites both; nothing is recorded when a cool-off ends, because
 * the customer was told the moment (`effectiveAt`) when they asked.
 */
export async function productStates(
  db: Queryable,
  customerId: string,
  defaults: readonly Product[],
): Promise<ProductState[]> {
  const rows = await db.query<{ product: Product; allowed: boolean; allow_at: Date | null }>(
    `SELECT product, allowed OR (allow_at IS NOT NULL AND allow_at <= now()) AS allowed,
            CASE WHEN NOT allowed AND allow_at > now() THEN allow_at END AS allow_at
     FROM customer_products WHERE customer_id = $1`,
    [customerId],
  );
  return PRODUCTS.map((product) => {
    const r = rows.rows.find((x) => x.product === product);
    return r
      ? { product, allowed: r.allowed, allowAt: r.allow_at }
      : { product, allowed: defaults.includes(product), allowAt: null };
  });
}

export interface ProductChange {
  customerId: string;
  product: Product;
  allow: boolean;
  acr: string | undefined;
  authTime: number | undefined;
  frozen: boolean;
  actor: string;
  ip?: string | undefined;
}

/**
 * Blocks a product at once, or schedules allowing it after the policy's cool-off; throws LinkingError
 * (ERR_LIMIT_NEEDS_FRESH_PASSKEY / ERR_LIMIT_DENIED) when the policy refuses. Every change is decided
 * (audited) and told to the customer on every channel.
 */
export async function changeProduct(
  db: Db,
  policy: Policy,
  defaults: readonly Product[],
  change: ProductChange,
): Promise<{ status: 'blocked' | 'pending' | 'unchanged'; allowAt?: Date }> {
  const current = (await productStates(db, change.customerId, defaults)).find(
    (s) => s.product === change.product,
  )!;
  const context = {
    customerId: change.customerId,
    actor: change.actor,
    ip: change.ip,
    subject: { product: change.product, allow: change.allow },
  };
  if (!change.allow) {
    if (!current.allowed && !current.allowAt) return { status: 'unchanged' };
    // The decision, the change and its notice stand or fall together.
    // Under the customer's lock: a decision reading this state either sees it or is decided before.
    await db.transaction(async (tx) => {
      await lockCustomer(tx, change.customerId);
      await decide(tx, policy, 'lower_limit', {}, context);
      await tx.query(
        `INSERT INTO customer_products (customer_id, product, allowed) VALUES ($1, $2, false)
         ON CONFLICT (customer_id, product) DO UPDATE SET allowed = false, allow_at = NULL, changed_at = now()`,
        [change.customerId, change.product],
      );
      await enqueueNotification(tx, {
        customerId: change.customerId,
        kind: 'products_changed',
        data: { product: change.product, allowed: false },
      });
    });
    return { status: 'blocked' };
  }
  if (current.allowed) return { status: 'unchanged' };
  const { result: allowAt } = await raiseUnderLock(db, policy, change, context, async (tx, decision) => {
    const r = await tx.query<{ allow_at: Date }>(
      `INSERT INTO customer_products (customer_id, product, allowed, allow_at)
       VALUES ($1, $2, false, now() + make_interval(secs => $3))
       ON CONFLICT (customer_id, product) DO UPDATE SET allow_at = EXCLUDED.allow_at, changed_at = now()
       RETURNING allow_at`,
      [change.customerId, change.product, decision.obligations.coolOffSeconds ?? 0],
    );
    const at = r.rows[0]!.allow_at;
    await enqueueNotification(tx, {
      customerId: change.customerId,
      kind: 'products_changed',
      data: { product: change.product, allowed: true, effectiveAt: at.toISOString() },
    });
    return at;
  });
  return { status: 'pending', allowAt };
}
