/**
 * oidc-provider storage over Postgres/PGlite: every model in `oidc_payloads` (payload as jsonb), except
 * `Client`, which is read from the operator-managed `clients` table. One SQL statement per call.
 *
 * Code reuse (RFC 6749 §4.1.2, FAPI 2.0). oidc-provider 9.13 redeems a code in two separate steps
 * (lib/helpers/grant_source.js consumeGrantSource): if the found code already has `consumed`, it revokes
 * the grant (tokens by grantId and, by the default revokeGrantPolicy, the Grant itself) and answers
 * `invalid_grant`; otherwise it calls `adapter.consume()` and goes on to issue tokens. Two concurrent
 * requests can both pass the first step. So `consume` here is an atomic check-and-set, and the loser
 * does itself what oidc-provider would have done had it seen `consumed`: it deletes every row of the
 * code's grant, the Grant included, and throws `InvalidGrant`, which oidc-provider turns into a 400
 * `invalid_grant` (any other error would become a 500 `server_error`; oidc-provider itself does not
 * catch or revoke on a throwing consume()). The winner may save its tokens after that delete; they
 * are dead anyway, because `find` hides grant-bound tokens whose Grant is gone (and oidc-provider's
 * userinfo, introspection and refresh_token also reject them for that reason).
 */

import { createHash } from 'node:crypto';
import type { Adapter, AdapterPayload } from 'oidc-provider';
import { errors } from 'oidc-provider';
import { recordAudit } from '../audit/index.ts';
import type { Db, Queryable } from '../db/index.ts';

/** Models whose consumption redeems a grant: a second redemption revokes that grant. */
const GRANT_SOURCES: Record<string, string> = {
  AuthorizationCode: 'authorization code',
  RefreshToken: 'refresh token',
  DeviceCode: 'device code',
  BackchannelAuthenticationRequest: 'backchannel authentication request',
  PreAuthorizedCode: 'pre-authorized code',
};

/**
 * Models that carry a grantId and stand for the grant. `find` returns them only while the Grant row
 * exists, so revoking a grant (which deletes the Grant) disables every token of it at once, including
 * one the winner of a code race saves just after the loser's revocation, and for every reader (our
 * resource server only calls AccessToken.find). One extra primary-key probe in the same statement.
 */
const GRANT_BOUND = new Set([...Object.keys(GRANT_SOURCES), 'AccessToken']);

/**
 * Models whose id is a long-lived bearer secret nobody else keeps: stored under SHA-256 of the value,
 * without the value in the payload (its `jti`), so a copy of the table cannot manage clients. The
 * value is put back into the payload on `find`, where the caller has just presented it.
 */
const HASHED_IDS = new Set(['RegistrationAccessToken']);
const hashId = (value: string) => createHash('sha256').update(value).digest('base64url');

/** The adapter's statements; exported only for the query-plan tests. */
export const ADAPTER_SQL = {
  upsert: `INSERT INTO oidc_payloads (model, id, payload, grant_id, uid, user_code, expires_at, consumed_at)
    VALUES ($1, $2, $3::jsonb, $4, $5, $6, now() + $7::float8 * interval '1 second', to_timestamp($8::float8))
    ON CONFLICT (model, id) DO UPDATE SET payload = EXCLUDED.payload, grant_id = EXCLUDED.grant_id,
      uid = EXCLUDED.uid, user_code = EXCLUDED.user_code, expires_at = EXCLUDED.expires_at,
      consumed_at = COALESCE(oidc_payloads.consumed_at, EXCLUDED.consumed_at)`,
  // float8, not bigint: pg returns int8 as a string.
  find: `SELECT payload, floor(extract(epoch FROM consumed_at))::float8 AS consumed FROM oidc_payloads
    WHERE model = $1 AND id = $2 AND (expires_at IS NULL OR expires_at > now())`,
  // Tokens and codes are found only while their Grant exists (see GRANT_BOUND). A scalar subquery on the
  // primary key, not EXISTS: under OR, Postgres may plan EXISTS as a hashed subplan that reads every Grant
  // on each call — chosen while the table is small and kept in the connection's cached generic plan until
  // the next ANALYZE (1 ms per token request in the benchmark after a minute; 8 ms at 20,000 grants).
  findGrantBound: `SELECT p.payload, floor(extract(epoch FROM p.consumed_at))::float8 AS consumed FROM oidc_payloads p
    WHERE p.model = $1 AND p.id = $2 AND (p.expires_at IS NULL OR p.expires_at > now())
      AND (p.grant_id IS NULL OR (SELECT true FROM oidc_payloads g WHERE g.model = 'Grant' AND g.id = p.grant_id))`,
  findByUid: `SELECT payload, floor(extract(epoch FROM consumed_at))::float8 AS consumed FROM oidc_payloads
    WHERE model = $1 AND uid = $2 AND (expires_at IS NULL OR expires_at > now()) LIMIT 1`,
  findByUserCode: `SELECT payload, floor(extract(epoch FROM consumed_at))::float8 AS consumed FROM oidc_payloads
    WHERE model = $1 AND user_code = $2 AND (expires_at IS NULL OR expires_at > now()) LIMIT 1`,
  consume:
    'UPDATE oidc_payloads SET consumed_at = now() WHERE model = $1 AND id = $2 AND consumed_at IS NULL',
  // The losing redemption: revoke the whole grant in one statement (rows of the grant, and the Grant).
  revokeSourceGrant: `WITH src AS (SELECT grant_id FROM oidc_payloads WHERE model = $1 AND id = $2),
    del AS (
      DELETE FROM oidc_payloads p USING src
      WHERE src.grant_id IS NOT NULL AND (p.grant_id = src.grant_id OR (p.model = 'Grant' AND p.id = src.grant_id))
      RETURNING p.model)
    SELECT EXISTS (SELECT 1 FROM src) AS found, (SELECT grant_id FROM src) AS grant_id,
      (SELECT count(*) FROM del)::int AS revoked`,
  destroy: 'DELETE FROM oidc_payloads WHERE model = $1 AND id = $2',
  revokeByGrantId: 'DELETE FROM oidc_payloads WHERE grant_id = $1',
  clientFind: 'SELECT metadata FROM clients WHERE client_id = $1 AND enabled',
  clientUpsert: `INSERT INTO clients (client_id, metadata) VALUES ($1, $2::jsonb)
    ON CONFLICT (client_id) DO UPDATE SET metadata = EXCLUDED.metadata, updated_at = now()`,
  clientDestroy: 'DELETE FROM clients WHERE client_id = $1',
};

/** An escaped NUL (\u0000 not preceded by an odd number of backslashes). */
const ESCAPED_NUL = /(?:^|[^\\])(?:\\\\)*\\u0000/;

function toJsonb(value: unknown): string {
  const json = JSON.stringify(value);
  // jsonb cannot hold U+0000; request parameters (state, nonce, …) end up in payloads, so a NUL sent by a
  // client must be a 400, not a database error turned into a 500.
  if (json.includes('\\u0000') && ESCAPED_NUL.test(json)) {
    throw new errors.InvalidRequest('parameters must not contain NUL characters');
  }
  return json;
}

interface PayloadRow {
  payload: AdapterPayload;
  consumed: number | null;
}

function toPayload(row: PayloadRow | undefined): AdapterPayload | undefined {
  if (!row) return undefined;
  // The column is the one source of truth for consumption (see upsert).
  return row.consumed === null ? row.payload : { ...row.payload, consumed: row.consumed };
}

class PgAdapter implements Adapter {
  readonly #db: Db;
  readonly #model: string;

  constructor(db: Db, model: string) {
    this.#db = db;
    this.#model = model;
  }

  /** The row id of a model id (hashed for HASHED_IDS). */
  #key(id: string): string {
    return HASHED_IDS.has(this.#model) ? hashId(id) : id;
  }

  async upsert(id: string, payload: AdapterPayload, expiresIn?: number): Promise<void> {
    let stored = payload;
    if (HASHED_IDS.has(this.#model)) {
      const { jti: _secret, ...rest } = payload;
      stored = rest;
    }
    let consumed: number | null = null;
    if ('consumed' in payload) {
      // The column, not the JSON, records consumption; a consumed model saved again stays consumed
      // because the upsert never sets consumed_at back to NULL.
      const { consumed: value, ...rest } = stored;
      stored = rest;
      if (typeof value === 'number') consumed = value;
      else if (value) consumed = Math.floor(Date.now() / 1000);
    }
    await this.#db.query(ADAPTER_SQL.upsert, [
      this.#model,
      this.#key(id),
      toJsonb(stored),
      payload.grantId ?? null,
      payload.uid ?? null,
      payload.userCode ?? null,
      typeof expiresIn === 'number' ? expiresIn : null,
      consumed,
    ]);
  }

  async find(id: string): Promise<AdapterPayload | undefined> {
    const sql = GRANT_BOUND.has(this.#model) ? ADAPTER_SQL.findGrantBound : ADAPTER_SQL.find;
    const found = toPayload((await this.#db.query<PayloadRow>(sql, [this.#model, this.#key(id)])).rows[0]);
    return found && HASHED_IDS.has(this.#model) ? { ...found, jti: id } : found;
  }

  async findByUid(uid: string): Promise<AdapterPayload | undefined> {
    return toPayload((await this.#db.query<PayloadRow>(ADAPTER_SQL.findByUid, [this.#model, uid])).rows[0]);
  }

  async findByUserCode(userCode: string): Promise<AdapterPayload | undefined> {
    return toPayload(
      (await this.#db.query<PayloadRow>(ADAPTER_SQL.findByUserCode, [this.#model, userCode])).rows[0],
    );
  }

  /** Atomic check-and-set; exactly one caller per id succeeds, every other one throws (see the file comment). */
  async consume(id: string): Promise<void> {
    const won = await this.#db.query(ADAPTER_SQL.consume, [this.#model, id]);
    if (won.rowCount === 1) return;

    if (this.#model === 'PushedAuthorizationRequest') {
      // Same answer oidc-provider gives for a request_uri it finds consumed (actions/authorization/respond.js).
      throw new errors.InvalidRequestUri('request_uri is invalid, expired, or was already used');
    }
    const label = GRANT_SOURCES[this.#model] ?? this.#model;
    const res = await this.#db.query<{ found: boolean; grant_id: string | null; revoked: number }>(
      ADAPTER_SQL.revokeSourceGrant,
      [this.#model, id],
    );
    const row = res.rows[0];
    if (row?.found) {
      // Never log the id: for codes and tokens it is the secret value itself.
      await recordAudit(this.#db, {
        type: 'oidc.grant_source.reused',
        outcome: 'failure',
        actor: 'system',
        data: { model: this.#model, grantId: row.grant_id, revokedRows: row.revoked, concurrent: true },
      }).catch(() => {});
      throw new errors.InvalidGrant(`${label} already consumed`);
    }
    // Gone meanwhile (revoked by a third redemption, or destroyed).
    throw new errors.InvalidGrant(`${label} not found`);
  }

  async destroy(id: string): Promise<void> {
    await this.#db.query(ADAPTER_SQL.destroy, [this.#model, this.#key(id)]);
  }

  /** Deletes every row bound to the grant, whatever its model (oidc-provider calls this once per model). */
  async revokeByGrantId(grantId: string): Promise<void> {
    await this.#db.query(ADAPTER_SQL.revokeByGrantId, [grantId]);
  }
}

/** Clients live in `clients` so operators can add or disable them in the database, effective at once. */
class ClientAdapter implements Adapter {
  readonly #db: Db;

  constructor(db: Db) {
    this.#db = db;
  }

  async find(id: string): Promise<AdapterPayload | undefined> {
    const row = (await this.#db.query<{ metadata: AdapterPayload }>(ADAPTER_SQL.clientFind, [id])).rows[0];
    return row ? { ...row.metadata, client_id: id } : undefined;
  }

  async upsert(id: string, payload: AdapterPayload): Promise<void> {
    await this.#db.query(ADAPTER_SQL.clientUpsert, [id, toJsonb({ ...payload, client_id: id })]);
  }

  async destroy(id: string): Promise<void> {
    await this.#db.query(ADAPTER_SQL.clientDestroy, [id]);
  }

  async findByUid(): Promise<undefined> {
    return undefined;
  }

  async findByUserCode(): Promise<undefined> {
    return undefined;
  }

  async consume(): Promise<void> {}

  async revokeByGrantId(): Promise<void> {}
}

/**
 * For oidc-provider's `adapter` option. An arrow function is not constructable, so oidc-provider
 * (helpers/initialize_adapter.js, models/base_model.js) calls it as a factory, once per model.
 */
export function createAdapterFactory(db: Db): (modelName: string) => Adapter {
  return (modelName) => (modelName === 'Client' ? new ClientAdapter(db) : new PgAdapter(db, modelName));
}

/**
 * Deletes expired oidc-provider rows (finders already hide them) older than `graceSeconds`,
 * at most `limit` per call so a sweep never holds long locks. Returns how many went.
 */
export async function deleteExpiredOidcPayloads(
  db: Queryable,
  graceSeconds = 3600,
  limit = 5000,
): Promise<number> {
  const res = await db.query(
    `DELETE FROM oidc_payloads WHERE ctid IN (
       SELECT ctid FROM oidc_payloads WHERE expires_at < now() - make_interval(secs => $1) LIMIT $2)`,
    [graceSeconds, limit],
  );
  return res.rowCount;
}

export interface RevokedCustomerSessions {
  sessions: number;
  grants: number;
  /** Access and refresh tokens, codes and any other row bound to those grants. */
  tokens: number;
}

/**
 * Ends every session of a customer and revokes every grant (so every token and code of those grants)
 * in one statement: what a takeover signal or a freeze needs. Client-credentials tokens name no
 * customer and stay. Idempotent; returns what went.
 */
export async function revokeCustomerSessions(
  db: Queryable,
  customerId: string,
): Promise<RevokedCustomerSessions> {
  const res = await db.query<RevokedCustomerSessions>(
    // Two deletes, each on its own index (primary key; grant_id): one DELETE with `… IN (…) OR grant_id
    // IN (…)` cannot use either and read the whole table (42 ms at 200,000 rows, on a takeover's path).
    `WITH owned AS (
       SELECT model, id FROM oidc_payloads WHERE model IN ('Session', 'Grant') AND payload ->> 'accountId' = $1),
     del_owned AS (
       DELETE FROM oidc_payloads p USING owned o WHERE p.model = o.model AND p.id = o.id RETURNING p.model),
     del_bound AS (
       DELETE FROM oidc_payloads p WHERE p.grant_id IN (SELECT id FROM owned WHERE model = 'Grant')
       RETURNING p.model)
     SELECT (count(*) FILTER (WHERE model = 'Session'))::int AS sessions,
            (count(*) FILTER (WHERE model = 'Grant'))::int AS grants,
            (count(*) FILTER (WHERE model NOT IN ('Session', 'Grant')))::int AS tokens
     FROM (SELECT model FROM del_owned UNION ALL SELECT model FROM del_bound) del`,
    [customerId],
  );
  return res.rows[0] ?? { sessions: 0, grants: 0, tokens: 0 };
}

/**
 * oidc-provider's ReplayDetection.unique does find-then-save: two statements, and two concurrent
 * requests carrying the same client-assertion or DPoP jti could both pass. This is the same check as
 * one atomic statement: true only for the first sighting (an expired, unswept row counts as unseen).
 */
export async function rememberJtiOnce(
  db: Queryable,
  id: string,
  iss: string,
  ttlSeconds: number,
): Promise<boolean> {
  const res = await db.query(
    `INSERT INTO oidc_payloads (model, id, payload, expires_at)
     VALUES ('ReplayDetection', $1, $2::jsonb, now() + $3::float8 * interval '1 second')
     ON CONFLICT (model, id) DO UPDATE SET payload = EXCLUDED.payload, expires_at = EXCLUDED.expires_at
       WHERE oidc_payloads.expires_at IS NOT NULL AND oidc_payloads.expires_at <= now()
     RETURNING 1`,
    [id, JSON.stringify({ iss, kind: 'ReplayDetection' }), Math.max(1, ttlSeconds)],
  );
  return res.rowCount === 1;
}

export interface CustomerSession {
  uid: string;
  loginTs: number | null;
  amr: string[];
  acr: string | null;
  expiresAt: Date | null;
}

/** The customer's live oidc-provider sessions, newest sign-in first (for the security page). */
export async function listCustomerSessions(db: Queryable, customerId: string): Promise<CustomerSession[]> {
  const res = await db.query<{
    uid: string;
    payload: { loginTs?: number; amr?: string[]; acr?: string };
    expires_at: Date | null;
  }>(
    `SELECT uid, payload, expires_at FROM oidc_payloads
     WHERE model = 'Session' AND payload ->> 'accountId' = $1 AND (expires_at IS NULL OR expires_at > now())
     ORDER BY (payload ->> 'loginTs')::bigint DESC NULLS LAST`,
    [customerId],
  );
  return res.rows.map((r) => ({
    uid: r.uid,
    loginTs: r.payload.loginTs ?? null,
    amr: r.payload.amr ?? [],
    acr: r.payload.acr ?? null,
    expiresAt: r.expires_at,
  }));
}

/** Ends one of the customer's sessions by its uid; false when it is not theirs or already gone. */
export async function endCustomerSession(db: Queryable, customerId: string, uid: string): Promise<boolean> {
  const res = await db.query(
    "DELETE FROM oidc_payloads WHERE model = 'Session' AND uid = $1 AND payload ->> 'accountId' = $2",
    [uid, customerId],
  );
  return res.rowCount > 0;
}

/** Revokes one grant: the Grant and every token and code issued under it, at once, for every node. */
export async function revokeGrant(db: Queryable, grantId: string): Promise<number> {
  const res = await db.query(
    "DELETE FROM oidc_payloads WHERE grant_id = $1 OR (model = 'Grant' AND id = $1)",
    [grantId],
  );
  return res.rowCount;
}
