/**
 * Delivers OpenID Connect Back-Channel Logout tokens for the rows the database queues whenever a
 * live session goes away (migration 0017's trigger): every relying party the customer was signed in
 * to, with a backchannel_logout_uri, hears of it — whatever ended the session (the customer, an
 * operator, recovery, a peer's Shared Signals event). At least once, with backoff; audited.
 */
import type Provider from 'oidc-provider';
import { recordAudit } from '../audit/index.ts';
import type { Db } from '../db/index.ts';
import type { Logger } from '../log.ts';

/** Attempts before a logout is given up (about 4 hours of backoff in all). */
const MAX_ATTEMPTS = 8;

interface Row {
  id: string;
  client_id: string;
  account_id: string;
  sid: string;
  attempts: number;
  live: boolean;
  told: boolean;
}

export interface BackchannelLogouts {
  /** Delivers what is due now; resolves with the number of rows handled. */
  runOnce(): Promise<number>;
  stop(): void;
}

export function startBackchannelLogouts(o: {
  provider: Provider;
  db: Db;
  logger: Logger;
  intervalMs?: number;
}): BackchannelLogouts {
  const { provider, db, logger } = o;
  // oidc-provider's own end_session tells the session's clients itself: remember that, so the
  // row its session deletion queues is not delivered twice.
  provider.on(
    'backchannel.success',
    (_ctx: unknown, client: { clientId: string }, accountId: string, sid: string) => {
      db.query(
        `INSERT INTO backchannel_logouts (client_id, account_id, sid, outcome, done_at) VALUES ($1, $2, $3, 'delivered', now())`,
        [client.clientId, accountId, sid],
      ).catch((err: unknown) => logger.warn({ err }, 'recording a back-channel logout failed'));
    },
  );

  async function finish(row: Row, outcome: 'delivered' | 'skipped' | 'dead', error?: string) {
    await db.query(
      'UPDATE backchannel_logouts SET outcome = $2, done_at = now(), last_error = $3 WHERE id = $1',
      [row.id, outcome, error ?? null],
    );
  }

  async function deliver(row: Row): Promise<void> {
    if (row.live || row.told) return finish(row, 'skipped');
    const client = await provider.Client.find(row.client_id).catch(() => undefined);
    if (!client?.backchannelLogoutUri) return finish(row, 'skipped');
    try {
      // Client#backchannelLogout signs the logout token (pairwise sub for pairwise clients) and POSTs it.
      await (
        client as unknown as { backchannelLogout(sub: string, sid: string): Promise<void> }
      ).backchannelLogout(row.account_id, row.sid);
      await finish(row, 'delivered');
      await recordAudit(db, {
        type: 'oidc.backchannel_logout.delivered',
        outcome: 'success',
        actor: 'system',
        customerId: row.account_id,
        clientId: row.client_id,
      });
    } catch (err) {
      const message = (err as Error).message.slice(0, 300);
      if (row.attempts + 1 >= MAX_ATTEMPTS) {
        await finish(row, 'dead', message);
        await recordAudit(db, {
          type: 'oidc.backchannel_logout.failed',
          outcome: 'failure',
          actor: 'system',
          customerId: row.account_id,
          clientId: row.client_id,
          data: { attempts: row.attempts + 1, error: message },
        });
        return;
      }
      await db.query(
        `UPDATE backchannel_logouts SET attempts = attempts + 1, last_error = $2,
           next_at = now() + make_interval(secs => least(3600, 2 ^ (attempts + 1)) * (0.5 + random()))
         WHERE id = $1`,
        [row.id, message],
      );
    }
  }

  async function runOnce(): Promise<number> {
    // Claim a batch with a lease (another node skips these rows), and learn for each whether its sid
    // still lives (a re-saved session) or the client was already told.
    const claimed = await db.query<Row>(
      `WITH due AS (
         SELECT id FROM backchannel_logouts WHERE done_at IS NULL AND next_at <= now()
         ORDER BY id LIMIT 20 FOR UPDATE SKIP LOCKED),
       leased AS (
         UPDATE backchannel_logouts l SET next_at = now() + interval '60 seconds' FROM due WHERE l.id = due.id
         RETURNING l.id, l.client_id, l.account_id, l.sid, l.attempts)
       SELECT leased.*,
         EXISTS (SELECT 1 FROM oidc_payloads s WHERE s.model = 'Session' AND s.payload ->> 'accountId' = leased.account_id
                   AND s.payload -> 'authorizations' -> leased.client_id ->> 'sid' = leased.sid
                   AND (s.expires_at IS NULL OR s.expires_at > now())) AS live,
         EXISTS (SELECT 1 FROM backchannel_logouts d WHERE d.client_id = leased.client_id AND d.sid = leased.sid
                   AND d.outcome = 'delivered') AS told
       FROM leased`,
    );
    for (const row of claimed.rows) await deliver(row);
    return claimed.rows.length;
  }

  let running = false;
  const timer = setInterval(async () => {
    if (running) return;
    running = true;
    try {
      while ((await runOnce()) > 0);
    } catch (err) {
      logger.warn({ err }, 'back-channel logout delivery failed');
    } finally {
      running = false;
    }
  }, o.intervalMs ?? 1000);
  timer.unref();
  return { runOnce, stop: () => clearInterval(timer) };
}
