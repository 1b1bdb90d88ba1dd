/**
 * Post-login baselines shared by the nodes (migration 0039, docs/post-login-baselines.md): the first
 * network and user agent of a token or session is claimed by whichever node sees it first, and every
 * node compares with what is stored; a change is claimed too before it raises the session's risk, so
 * two nodes seeing the same new network raise it once.
 */
import type { Queryable } from '../db/index.ts';
import type { Baseline } from './tracker.ts';

/**
 * Stores `proposed` as the tracking id's baseline unless one is stored already, and returns the
 * stored one — one statement. A row another transaction committed after this statement's snapshot
 * is not visible to its SELECT (the insert sees the conflict, the read does not): then again, once.
 */
export async function claimBaseline(
  db: Queryable,
  trackingId: string,
  proposed: Baseline,
): Promise<Baseline> {
  for (let attempt = 0; attempt < 2; attempt++) {
    const res = await db.query<{ network: string | null; asn: number | null; user_agent: string | null }>(
      `WITH claimed AS (
         INSERT INTO request_baselines (tracking_id, item, network, asn, user_agent)
         VALUES ($1, 'baseline', $2, $3, $4)
         ON CONFLICT (tracking_id, item) DO NOTHING
         RETURNING network, asn, user_agent)
       SELECT network, asn, user_agent FROM claimed
       UNION ALL
       SELECT network, asn, user_agent FROM request_baselines WHERE tracking_id = $1 AND item = 'baseline'`,
      [trackingId, proposed.range ?? null, proposed.asn ?? null, proposed.userAgent],
    );
    const row = res.rows[0];
    if (row)
      return { range: row.network ?? undefined, asn: row.asn ?? undefined, userAgent: row.user_agent ?? '' };
  }
  throw new Error(`request baseline of ${trackingId} neither stored nor readable`);
}

/**
 * Claims changes (`net:<range>`, `ua:<agent>`) of a tracking id as reported; returns those this
 * call claimed — the others were reported already, by another node or before this node forgot them.
 */
export async function claimChanges(
  db: Queryable,
  trackingId: string,
  changes: string[],
): Promise<Set<string>> {
  const res = await db.query<{ item: string }>(
    `INSERT INTO request_baselines (tracking_id, item) SELECT $1, unnest($2::text[])
     ON CONFLICT (tracking_id, item) DO NOTHING RETURNING item`,
    [trackingId, changes],
  );
  return new Set(res.rows.map((r) => r.item));
}

/**
 * Deletes baselines and reported changes older than `maxAgeSeconds` (the longest token or session
 * lifetime, or the retention if shorter), `limit` rows at a time; returns how many went.
 */
export async function deleteExpiredBaselines(
  db: Queryable,
  maxAgeSeconds: number,
  limit = 5000,
): Promise<number> {
  const res = await db.query(
    `DELETE FROM request_baselines WHERE (tracking_id, item) IN (
       SELECT tracking_id, item FROM request_baselines
       WHERE created_at < now() - make_interval(secs => $1) ORDER BY created_at LIMIT $2)`,
    [maxAgeSeconds, limit],
  );
  return res.rowCount;
}
