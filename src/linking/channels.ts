/**
 * Channels a customer can switch off (issue 4, item 8; DESIGN.md "raise a limit / enable a channel"):
 * third-party read access (`aggregator_access`), withdrawals, bank sweeps. Switching off is decided
 * like lowering a limit (at once); switching on like raising one (a passkey sign-in within 5 minutes,
 * then the policy's cool-off). The read API, the decision endpoint and sweep decisions read the state.
 */
import { type Db, lockCustomer, type Queryable } from '../db/index.ts';
import { enqueueNotification } from '../notify/index.ts';
import { decide } from './decide.ts';
import { raiseUnderLock } from './limits.ts';
import type { Policy } from './policy/parsePolicy.ts';

export const CHANNELS = ['aggregator_access', 'withdrawals', 'sweeps'] as const;
export type Channel = (typeof CHANNELS)[number];

export interface ChannelState {
  channel: Channel;
  enabled: boolean;
  /** A switch-on waiting for its cool-off. */
  enableAt: Date | null;
}

export const isChannel = (v: unknown): v is Channel =>
  typeof v === 'string' && (CHANNELS as readonly string[]).includes(v);

/**
 * The state as it is now, derived in the SELECT: a switch-on whose cool-off has ended counts as on
 * (the read API checks aggregator access with the same condition, src/api/reads.ts). A read writes
 * nothing — the decisions that read this run on every withdrawal, sweep and page view. The row keeps
 * `disabled` with its past `enable_at` until the next switch overwrites both; nothing is recorded when
 * a cool-off ends, because the customer was told the moment (`effectiveAt`) when they asked.
 */
export async function channelStates(db: Queryable, customerId: string): Promise<ChannelState[]> {
  const rows = await db.query<{ channel: Channel; disabled: boolean; enable_at: Date | null }>(
    `SELECT channel, disabled AND (enable_at IS NULL OR enable_at > now()) AS disabled,
            CASE WHEN disabled AND enable_at > now() THEN enable_at END AS enable_at
     FROM customer_channels WHERE customer_id = $1`,
    [customerId],
  );
  return CHANNELS.map((channel) => {
    const r = rows.rows.find((x) => x.channel === channel);
    return { channel, enabled: !r?.disabled, enableAt: r?.enable_at ?? null };
  });
}

/** Whether the customer has this channel switched off now. */
export async function channelDisabled(db: Queryable, customerId: string, channel: Channel): Promise<boolean> {
  return !(await channelStates(db, customerId)).find((s) => s.channel === channel)!.enabled;
}

export interface ChannelChange {
  customerId: string;
  channel: Channel;
  enable: boolean;
  acr: string | undefined;
  authTime: number | undefined;
  frozen: boolean;
  actor: string;
  ip?: string | undefined;
}

/** Switches a channel off at once, or schedules switching it on; throws LinkingError when refused. */
export async function changeChannel(
  db: Db,
  policy: Policy,
  change: ChannelChange,
): Promise<{ status: 'disabled' | 'pending' | 'unchanged'; enableAt?: Date }> {
  const current = (await channelStates(db, change.customerId)).find((s) => s.channel === change.channel)!;
  const context = {
    customerId: change.customerId,
    actor: change.actor,
    ip: change.ip,
    subject: { channel: change.channel, enable: change.enable },
  };
  if (!change.enable) {
    if (!current.enabled && !current.enableAt) return { status: 'unchanged' };
    // The decision, the change and its notice stand or fall together.
    // Under the customer's lock: a decision reading this state either sees it or is decided before.
    await db.transaction(async (tx) => {
      await lockCustomer(tx, change.customerId);
      await decide(tx, policy, 'lower_limit', {}, context);
      await tx.query(
        `INSERT INTO customer_channels (customer_id, channel, disabled) VALUES ($1, $2, true)
         ON CONFLICT (customer_id, channel) DO UPDATE SET disabled = true, enable_at = NULL, changed_at = now()`,
        [change.customerId, change.channel],
      );
      await enqueueNotification(tx, {
        customerId: change.customerId,
        kind: 'channel_changed',
        data: { channel: change.channel, enabled: false },
      });
    });
    return { status: 'disabled' };
  }
  if (current.enabled) return { status: 'unchanged' };
  const { result: enableAt } = await raiseUnderLock(db, policy, change, context, async (tx, decision) => {
    const r = await tx.query<{ enable_at: Date }>(
      `UPDATE customer_channels SET enable_at = now() + make_interval(secs => $3), changed_at = now()
       WHERE customer_id = $1 AND channel = $2 RETURNING enable_at`,
      [change.customerId, change.channel, decision.obligations.coolOffSeconds ?? 0],
    );
    const at = r.rows[0]!.enable_at;
    await enqueueNotification(tx, {
      customerId: change.customerId,
      kind: 'channel_changed',
      data: { channel: change.channel, enabled: true, effectiveAt: at.toISOString() },
    });
    return at;
  });
  return { status: 'pending', enableAt };
}
