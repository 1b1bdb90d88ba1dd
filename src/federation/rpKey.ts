/**
 * The hub's own keys as a relying party of banks, each generated at first use, sealed with the
 * key-encryption key in `secrets`, the same on every node:
 *   - the signing key (private_key_jwt client assertions and signed request objects, JAR): banks
 *     register its public part, served at /federation/jwks.json;
 *   - the DPoP key the bank's tokens are bound to (RFC 9449), when the bank offers DPoP. It is a
 *     key of its own so that a bank-side token binding never doubles as client authentication.
 *
 * The signing key rotates in two operator steps (`keys rotate-rp`, docs/rp-and-operations-review.md):
 * a next key is staged and published beside the current one while banks learn it; promoting it
 * makes it sign and keeps the replaced one published as previous (nodes still signing with it until
 * they reload) until the next rotation, which waits until no node can still sign with it.
 */
import { generateKeyPairSync } from 'node:crypto';
import { recordAudit } from '../audit/index.ts';
import type { Db, Queryable } from '../db/index.ts';
import { decryptAtRest, encryptAtRest, jwkThumbprint, KEYS_LOCK_ID } from '../keys/index.ts';
import { FederationError } from './errors.ts';

const SECRET_NAME = 'federation.rp_signing_key';
const NEXT_NAME = `${SECRET_NAME}.next`;
const PREVIOUS_NAME = `${SECRET_NAME}.previous`;
export const DPOP_SECRET_NAME = 'federation.rp_dpop_key';

export interface RpKey {
  kid: string;
  privateKey: CryptoKey;
  /** Extractable: a DPoP proof carries it in its header. */
  publicKey: CryptoKey;
  publicJwk: JsonWebKey & { kid: string; alg: 'ES256'; use: 'sig' };
}

function newJwk(): JsonWebKey {
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  return privateKey.export({ format: 'jwk' }) as JsonWebKey;
}

async function toRpKey(jwk: JsonWebKey): Promise<RpKey> {
  const { d: _d, ...pub } = jwk;
  const kid = jwkThumbprint(pub as Record<string, unknown>);
  const privateKey = await crypto.subtle.importKey(
    'jwk',
    jwk,
    { name: 'ECDSA', namedCurve: 'P-256' },
    false,
    ['sign'],
  );
  const publicKey = await crypto.subtle.importKey('jwk', pub, { name: 'ECDSA', namedCurve: 'P-256' }, true, [
    'verify',
  ]);
  return { kid, privateKey, publicKey, publicJwk: { ...pub, kid, alg: 'ES256', use: 'sig' } };
}

const readSealed = async (db: Queryable, name: string) =>
  (await db.query<{ value_enc: string }>('SELECT value_enc FROM secrets WHERE name = $1', [name])).rows[0]
    ?.value_enc;

/** Seals `jwk` under `name` (the name is the sealed value's context) and stores it as a new row. */
const insertSealed = (db: Queryable, kek: Buffer, name: string, jwk: JsonWebKey) =>
  db.query('INSERT INTO secrets (name, value_enc) VALUES ($1, $2)', [
    name,
    encryptAtRest(kek, JSON.stringify(jwk), name),
  ]);

/** The private JWK sealed under `name`; ERR_RP_KEY when it does not open. */
function openJwk(kek: Buffer, sealed: string, name: string): JsonWebKey {
  try {
    return JSON.parse(decryptAtRest(kek, sealed, name)) as JsonWebKey;
  } catch (err) {
    throw unopenable(name, err);
  }
}

// Never generated anew over it (banks registered its public part): the operator must act.
const unopenable = (name: string, cause: unknown) =>
  new FederationError(
    'ERR_RP_KEY',
    `the hub's ${name} does not open with the configured key-encryption key (sealed with another KEK, or tampered; see docs/key-rotation.md)`,
    { cause },
  );

async function openRpKey(kek: Buffer, sealed: string, name: string): Promise<RpKey> {
  const jwk = openJwk(kek, sealed, name);
  try {
    return await toRpKey(jwk);
  } catch (err) {
    throw unopenable(name, err);
  }
}

/**
 * Whether a signing key was ever made here (then banks registered its public part): a staged or
 * previous key, or the audit of its generation, staging or promotion (the audit log is never pruned).
 */
async function signingKeyWasPublished(db: Queryable): Promise<boolean> {
  const r = await db.query(
    `SELECT 1 FROM secrets WHERE name IN ($1, $2)
     UNION ALL
     SELECT 1 FROM audit_events
      WHERE (type = 'keys.generated' AND data->'secrets' @> $3::jsonb)
         OR type IN ('keys.federation.staged', 'keys.federation.promoted', 'keys.federation.replaced')
     LIMIT 1`,
    [NEXT_NAME, PREVIOUS_NAME, JSON.stringify([SECRET_NAME])],
  );
  return r.rows.length > 0;
}

const missingSigningKey = () =>
  new FederationError(
    'ERR_RP_KEY',
    `the hub's ${SECRET_NAME} is missing although one was published before (banks registered it): run \`kakehashi keys rotate-rp\` to make a new one and have the banks learn it (docs/key-rotation.md)`,
  );

async function insertGenerated(db: Queryable, kek: Buffer, name: string): Promise<void> {
  const created = await db.query(
    'INSERT INTO secrets (name, value_enc) VALUES ($1, $2) ON CONFLICT DO NOTHING',
    [name, encryptAtRest(kek, JSON.stringify(newJwk()), name)],
  );
  if (created.rowCount === 1)
    await recordAudit(db, {
      type: 'keys.generated',
      outcome: 'info',
      actor: 'system',
      data: { secrets: [name] },
    });
}

/**
 * The key, generated and stored when missing (a concurrent first start keeps the first one). A
 * missing signing key is generated only at first start: once one was published, a silent new key
 * would only make every bank refuse the hub (ERR_RP_KEY; the operator runs `keys rotate-rp`).
 */
export async function loadRpKey(db: Queryable, kek: Buffer, name: string = SECRET_NAME): Promise<RpKey> {
  let sealed = await readSealed(db, name);
  if (!sealed) {
    if (name === SECRET_NAME && (await signingKeyWasPublished(db))) throw missingSigningKey();
    await insertGenerated(db, kek, name);
    sealed = await readSealed(db, name);
  }
  return openRpKey(kek, sealed!, name);
}

/** What banks see at /federation/jwks.json: the current signing key, a staged next, the previous. */
export async function rpPublicJwks(db: Queryable, kek: Buffer): Promise<{ keys: RpKey['publicJwk'][] }> {
  const current = await loadRpKey(db, kek);
  const keys = [current.publicJwk];
  for (const name of [NEXT_NAME, PREVIOUS_NAME]) {
    const sealed = await readSealed(db, name);
    if (sealed) keys.push((await openRpKey(kek, sealed, name)).publicJwk);
  }
  return { keys };
}

/**
 * The published JWKS of one node, for an endpoint anyone may call: the sealed rows are compared
 * (one cheap query) at most every `pollSeconds`, and opened again only when they changed, so a
 * rotation or promotion is published on every node within pollSeconds while callers cost no
 * decryption. A failure (ERR_RP_KEY) is kept as long, for the same reason.
 */
export function rpJwksFollower(o: {
  db: Queryable;
  kek: Buffer;
  pollSeconds: number;
}): () => Promise<{ keys: RpKey['publicJwk'][] }> {
  let cached: { fingerprint: string; jwks: Promise<{ keys: RpKey['publicJwk'][] }> } | undefined;
  let checked: Promise<{ keys: RpKey['publicJwk'][] }> | undefined;
  let checkedAt = 0;
  const check = async () => {
    const rows = await o.db.query<{ name: string; value_enc: string }>(
      'SELECT name, value_enc FROM secrets WHERE name IN ($1, $2, $3) ORDER BY name',
      [SECRET_NAME, NEXT_NAME, PREVIOUS_NAME],
    );
    const fingerprint = rows.rows.map((r) => `${r.name}=${r.value_enc}`).join(' ');
    // A missing current key is loaded (first start generates it) and looked at again next time.
    const missing = !rows.rows.some((r) => r.name === SECRET_NAME);
    if (!cached || cached.fingerprint !== fingerprint || missing) {
      const entry = { fingerprint: missing ? '' : fingerprint, jwks: rpPublicJwks(o.db, o.kek) };
      cached = entry;
      entry.jwks.catch((err: unknown) => {
        if (!(err instanceof FederationError) && cached === entry) cached = undefined;
      });
    }
    return cached.jwks;
  };
  return () => {
    if (!checked || Date.now() - checkedAt >= o.pollSeconds * 1000) {
      checkedAt = Date.now();
      checked = check();
      // A database error is not kept: the next request asks again.
      checked.catch((err: unknown) => {
        if (!(err instanceof FederationError)) checked = undefined;
      });
    }
    return checked;
  };
}

/**
 * Seconds a replaced signing key stays published after `keys.pollSeconds` have passed since its
 * promotion: a client assertion or request object a node signed with it just before it reloaded
 * may still be on its way to the bank (both are sent at once, over PAR or to the token endpoint).
 */
export const RP_KEY_IN_FLIGHT_SECONDS = 30;

/** How long banks and shared caches may keep /federation/jwks.json (Cache-Control max-age). */
export const RP_JWKS_MAX_AGE_SECONDS = 300;

/**
 * Step 1 of a rotation: a next signing key, published at once and used for nothing until promoted
 * (the previous key of the last rotation stops being published). Again while one waits: that one.
 *
 * Refused (ERR_RP_KEY_IN_USE, naming when it becomes possible) while the previous key was current
 * less than `pollSeconds` + RP_KEY_IN_FLIGHT_SECONDS ago: a node may still sign with it. When the
 * signing key is missing although one was published (deleted), the waiting key, or a new one,
 * becomes the signing key at once (`replacedMissing`): nothing signs until then anyway.
 */
export async function stageRpKey(
  db: Db,
  kek: Buffer,
  actor: string,
  o: { pollSeconds: number },
): Promise<{ kid: string; created: boolean; replacedMissing: boolean }> {
  return db.transaction(async (tx) => {
    // Key generation, rotation and rekey take this lock too.
    await tx.query('SELECT pg_advisory_xact_lock($1)', [KEYS_LOCK_ID]);
    const waiting = await readSealed(tx, NEXT_NAME);
    if (!(await readSealed(tx, SECRET_NAME)) && (await signingKeyWasPublished(tx))) {
      const jwk = waiting ? openJwk(kek, waiting, NEXT_NAME) : newJwk();
      await insertSealed(tx, kek, SECRET_NAME, jwk);
      await tx.query('DELETE FROM secrets WHERE name = $1', [NEXT_NAME]);
      const { kid } = await toRpKey(jwk);
      await recordAudit(tx, {
        type: 'keys.federation.replaced',
        outcome: 'info',
        actor,
        data: { kid, reason: 'signing key missing', wasStaged: Boolean(waiting) },
      });
      return { kid, created: !waiting, replacedMissing: true };
    }
    await loadRpKey(tx, kek);
    if (waiting)
      return { kid: (await openRpKey(kek, waiting, NEXT_NAME)).kid, created: false, replacedMissing: false };
    const held = await tx.query<{ value_enc: string; until: Date }>(
      `SELECT value_enc, created_at + make_interval(secs => $2) AS until FROM secrets
        WHERE name = $1 AND created_at + make_interval(secs => $2) > now()`,
      [PREVIOUS_NAME, o.pollSeconds + RP_KEY_IN_FLIGHT_SECONDS],
    );
    if (held.rows[0]) {
      const previous = await openRpKey(kek, held.rows[0].value_enc, PREVIOUS_NAME);
      const until = new Date(held.rows[0].until).toISOString();
      throw new FederationError(
        'ERR_RP_KEY_IN_USE',
        `the previous key ${previous.kid} was promoted away less than keys.pollSeconds + ${RP_KEY_IN_FLIGHT_SECONDS} s ago and a node may still sign with it; a new rotation would unpublish it: run keys rotate-rp again after ${until}`,
      );
    }
    const jwk = newJwk();
    await insertSealed(tx, kek, NEXT_NAME, jwk);
    await tx.query('DELETE FROM secrets WHERE name = $1', [PREVIOUS_NAME]);
    const { kid } = await toRpKey(jwk);
    await recordAudit(tx, { type: 'keys.federation.staged', outcome: 'info', actor, data: { kid } });
    return { kid, created: true, replacedMissing: false };
  });
}

/**
 * Step 2: the staged key signs from now on (every node within keys.pollSeconds); the replaced one
 * stays published as previous. Undefined when no key is staged.
 */
export async function promoteRpKey(
  db: Db,
  kek: Buffer,
  actor: string,
): Promise<{ kid: string; previousKid: string } | undefined> {
  return db.transaction(async (tx) => {
    await tx.query('SELECT pg_advisory_xact_lock($1)', [KEYS_LOCK_ID]);
    const next = await readSealed(tx, NEXT_NAME);
    if (!next) return undefined;
    const current = await loadRpKey(tx, kek);
    const currentJwk = openJwk(kek, (await readSealed(tx, SECRET_NAME))!, SECRET_NAME);
    const nextJwk = openJwk(kek, next, NEXT_NAME);
    // Sealed again under each name: the name is the sealed value's context (AAD). created_at is when
    // it stopped being current: stageRpKey keeps it published for keys.pollSeconds (+ margin) after.
    await tx.query(
      `INSERT INTO secrets (name, value_enc) VALUES ($1, $2)
       ON CONFLICT (name) DO UPDATE SET value_enc = EXCLUDED.value_enc, created_at = now()`,
      [PREVIOUS_NAME, encryptAtRest(kek, JSON.stringify(currentJwk), PREVIOUS_NAME)],
    );
    await tx.query('UPDATE secrets SET value_enc = $2 WHERE name = $1', [
      SECRET_NAME,
      encryptAtRest(kek, JSON.stringify(nextJwk), SECRET_NAME),
    ]);
    await tx.query('DELETE FROM secrets WHERE name = $1', [NEXT_NAME]);
    const { kid } = await toRpKey(nextJwk);
    await recordAudit(tx, {
      type: 'keys.federation.promoted',
      outcome: 'info',
      actor,
      data: { kid, previousKid: current.kid },
    });
    return { kid, previousKid: current.kid };
  });
}
