/**
 * Poll delivery (RFC 8936), transmitter side. One request acknowledges (`ack`), reports errors
 * (`setErrs`), and takes up to `maxEvents` SETs; with `returnImmediately` false it waits up to
 * `longPollSeconds` for some to arrive. SETs handed out are reserved for `pollRedeliverySeconds`
 * and handed out again if not acknowledged by then (a lost response loses nothing). While the
 * stream is paused or disabled nothing is handed out except stream-updated events.
 */
import { z } from 'zod';
import { recordAudit } from '../audit/index.ts';
import type { SignalsContext } from './context.ts';
import { ManagementError } from './errors.ts';
import type { StreamRow } from './streams.ts';

const MAX_EVENTS = 1000;
const DEFAULT_MAX_EVENTS = 100;
const WAIT_STEP_MS = 100;

const pollSchema = z.looseObject({
  maxEvents: z.number().int().min(0).max(MAX_EVENTS).optional(),
  returnImmediately: z.boolean().optional(),
  ack: z.array(z.string().min(1).max(256)).max(MAX_EVENTS).optional(),
  setErrs: z
    .record(
      z.string().min(1).max(256),
      z.looseObject({ err: z.string().min(1).max(64), description: z.string().max(1024).optional() }),
    )
    .optional(),
});

export interface PollResponse {
  sets: Record<string, string>;
  moreAvailable?: boolean;
}

export async function poll(
  ctx: SignalsContext,
  stream: StreamRow,
  body: Record<string, unknown>,
  clientGone: () => boolean,
): Promise<PollResponse> {
  const parsed = pollSchema.safeParse(body);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new ManagementError(400, 'invalid_request', `${issue.path.join('.') || 'body'}: ${issue.message}`);
  }
  const req = parsed.data;
  if (req.setErrs && Object.keys(req.setErrs).length > MAX_EVENTS)
    throw new ManagementError(400, 'invalid_request', 'setErrs: too many entries');

  if (req.ack?.length)
    await ctx.db.query(
      `UPDATE ssf_outbox SET state = 'delivered', delivered_at = now(), served_until = NULL
       WHERE stream_id = $1 AND jti = ANY ($2::text[]) AND state = 'pending'`,
      [stream.stream_id, req.ack],
    );
  if (req.setErrs && Object.keys(req.setErrs).length) {
    const entries = Object.entries(req.setErrs);
    const failed = await ctx.db.query<{ jti: string }>(
      `UPDATE ssf_outbox o SET state = 'failed', last_error = e.error, served_until = NULL
       FROM unnest($2::text[], $3::text[]) AS e(jti, error)
       WHERE o.stream_id = $1 AND o.jti = e.jti AND o.state = 'pending' RETURNING o.jti`,
      [
        stream.stream_id,
        entries.map(([jti]) => jti),
        entries.map(([, e]) => `${e.err}${e.description ? `: ${e.description}` : ''}`.slice(0, 300)),
      ],
    );
    if (failed.rowCount)
      await recordAudit(ctx.db, {
        type: 'ssf.poll.set_errors',
        outcome: 'failure',
        actor: `client:${stream.client_id}`,
        clientId: stream.client_id,
        data: {
          streamId: stream.stream_id,
          errors: entries.slice(0, 20).map(([jti, e]) => ({ jti, err: e.err })),
        },
      });
  }

  const maxEvents = req.maxEvents ?? DEFAULT_MAX_EVENTS;
  if (maxEvents === 0) return { sets: {} };
  const deadline =
    Date.now() +
    (req.returnImmediately === false || req.returnImmediately === undefined
      ? ctx.signals.longPollSeconds * 1000
      : 0);
  for (;;) {
    const status = await ctx.db.query<{ status: StreamRow['status'] }>(
      'SELECT status FROM ssf_streams WHERE stream_id = $1',
      [stream.stream_id],
    );
    const enabled = status.rows[0]?.status === 'enabled';
    const served = await ctx.db.query<{ jti: string; set_jwt: string; event_id: string; id: string }>(
      `UPDATE ssf_outbox SET served_until = now() + make_interval(secs => $4)
       WHERE id IN (SELECT id FROM ssf_outbox
                    WHERE stream_id = $1 AND state = 'pending' AND (control OR $2)
                      AND (served_until IS NULL OR served_until < now())
                    ORDER BY event_id, id LIMIT $3 FOR UPDATE SKIP LOCKED)
       RETURNING jti, set_jwt, event_id::text AS event_id, id::text AS id`,
      [stream.stream_id, enabled, maxEvents, ctx.signals.pollRedeliverySeconds],
    );
    if (served.rowCount > 0 || Date.now() >= deadline || clientGone()) {
      const rows = served.rows.sort(
        (a, b) => Number(BigInt(a.event_id) - BigInt(b.event_id)) || Number(BigInt(a.id) - BigInt(b.id)),
      );
      const sets: Record<string, string> = {};
      for (const r of rows) sets[r.jti] = r.set_jwt;
      const more = await ctx.db.query(
        `SELECT 1 FROM ssf_outbox WHERE stream_id = $1 AND state = 'pending' AND (control OR $2)
           AND (served_until IS NULL OR served_until < now()) LIMIT 1`,
        [stream.stream_id, enabled],
      );
      return more.rowCount > 0 ? { sets, moreAvailable: true } : { sets };
    }
    await new Promise((r) => setTimeout(r, WAIT_STEP_MS));
  }
}
