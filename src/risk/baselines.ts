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
 * Deletes baselines and reported changes `limit` rows at a time; returns how many went. A row goes
 * once older than `lifetimeSeconds` (the longest token or session lifetime) unless it tracks a browser
 * session (`session:<uid>`) that is still live: a session rolls (oidc-provider saves it again with a
 * full lifetime whenever it is used), so it can be presented long after its baseline was claimed.
 * Every row goes once older than `retentionSeconds` (the risk data's retention), live or not.
 */
export async function deleteExpiredBaselines(
  db: Queryable,
  age: { lifetimeSeconds: number; retentionSeconds: number },
  limit = 5000,
): Promise<number> {
  // The session's row by its uid (index oidc_payloads_uid), as src/oidc/adapter.ts findByUid reads it.
  const res = await db.query(
    `DELETE FROM request_baselines WHERE (tracking_id, item) IN (
       SELECT b.tracking_id, b.item FROM request_baselines b
       WHERE b.created_at < now() - make_interval(secs => $1)
         AND (b.created_at < now() - make_interval(secs => $3) OR b.tracking_id NOT LIKE 'session:%'
              OR NOT EXISTS (SELECT 1 FROM oidc_payloads s
                WHERE s.model = 'Session' AND s.uid = substr(b.tracking_id, 9)
                  AND (s.expires_at IS NULL OR s.expires_at > now())))
       ORDER BY b.created_at LIMIT $2)`,
    [Math.min(age.lifetimeSeconds, age.retentionSeconds), limit, age.retentionSeconds],
  );
  return res.rowCount;
}
