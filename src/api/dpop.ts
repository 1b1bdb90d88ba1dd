/**
 * DPoP proof verification at the resource server (RFC 9449 §4.3, §7), run on every API call.
 *
 * Speed matters here, so signatures are checked with node:crypto directly (jose's async WebCrypto path
 * costs 5–7× more) and imported public keys are cached by their RFC 7638 thumbprint.
 */
import { constants, createHash, createPublicKey, type KeyObject, verify } from 'node:crypto';
import type { Queryable } from '../db/index.ts';
import { p1363ToDer, tryJwkThumbprint } from '../keys/index.ts';

export interface DpopReplayStore {
  /** true if first sighting (records it until expiresAt), false if seen before. */
  remember(jtiKey: string, expiresAt: Date): Promise<boolean>;
}

export interface VerifyDpopOptions {
  /** All values of the DPoP request header (node gives a string, or string[] if repeated — pass the raw list). */
  headers: string[];
  /** Request method. */
  method: string;
  /** Full external request URL (scheme://host[:port]/path?query) as the client addressed it. */
  url: string;
  /** The token from `Authorization: DPoP <token>`. */
  accessToken: string;
  /** The access token's cnf.jkt. */
  expectedJkt: string;
  replay: DpopReplayStore;
  /** Accept |now - iat| <= window. */
  iatWindowSeconds: number;
  /** Epoch seconds, for tests. */
  now?: number;
}

export interface VerifiedDpop {
  jkt: string;
  jti: string;
  iat: number;
}

export class DpopError extends Error {
  readonly code = 'ERR_DPOP_INVALID' as const;
  /** `message` is a short reason for logs and WWW-Authenticate error_description; never holds secrets. */
  constructor(message: string) {
    super(message);
    this.name = 'DpopError';
  }
}

type DpopAlg = 'ES256' | 'PS256' | 'EdDSA';

/** FAPI 2.0 §5.4.1: PS256, ES256, EdDSA only (no RS256, HS*, none). */
const ALLOWED_ALGS: ReadonlySet<string> = new Set<DpopAlg>(['ES256', 'PS256', 'EdDSA']);
const PRIVATE_JWK_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k'] as const;
/** Far above any real proof (an RSA-4096 jwk plus claims is ~1.5 kB); bounds parsing work on junk. */
const MAX_PROOF_LENGTH = 8192;
const MAX_JTI_LENGTH = 256;
const BASE64URL = /^[A-Za-z0-9_-]+$/;
/** Added to the iat window when remembering a jti, so clock jitter between nodes cannot reopen it. */
const REPLAY_MARGIN_SECONDS = 60;
const MIN_RSA_BITS = 2048;

/**
 * Verifies a DPoP proof for one request. Resolves with the proof's key thumbprint, jti and iat, or rejects
 * with DpopError; every malformed input ends as DpopError, never as another exception type.
 */
export async function verifyDpopProof(o: VerifyDpopOptions): Promise<VerifiedDpop> {
  if (o.headers.length !== 1) throw new DpopError('exactly one DPoP header is required');
  const proof = o.headers[0]!;
  if (proof.includes(',')) throw new DpopError('exactly one DPoP header is required');
  if (proof.length > MAX_PROOF_LENGTH) throw new DpopError('DPoP proof too large');

  const parts = proof.split('.');
  if (parts.length !== 3) throw new DpopError('DPoP proof is not a compact JWS');
  const [h, p, s] = parts as [string, string, string];
  if (!BASE64URL.test(h) || !BASE64URL.test(p) || !BASE64URL.test(s)) {
    throw new DpopError('DPoP proof is not a compact JWS');
  }

  const header = parseJsonObject(h, 'header');
  if (header.typ !== 'dpop+jwt') throw new DpopError('DPoP typ must be dpop+jwt');
  const alg = header.alg;
  if (typeof alg !== 'string' || !ALLOWED_ALGS.has(alg)) throw new DpopError('DPoP alg not allowed');
  // We understand no extensions, and b64:false would change what is signed.
  if (header.crit !== undefined || header.b64 !== undefined) throw new DpopError('DPoP header uses crit/b64');
  const jwk = header.jwk;
  if (!isPlainObject(jwk)) throw new DpopError('DPoP header has no jwk');
  for (const m of PRIVATE_JWK_MEMBERS) {
    if (m in jwk) throw new DpopError('DPoP jwk contains private key material');
  }

  const jkt = tryJwkThumbprint(jwk);
  if (jkt === undefined) throw new DpopError('DPoP jwk is invalid');
  // Before importing: proofs with keys unrelated to the token then cost no key import or cache slot.
  if (jkt !== o.expectedJkt) throw new DpopError('DPoP key does not match the access token binding');
  const key = importKey(jkt, jwk);
  if (key.alg !== alg) throw new DpopError('DPoP jwk does not match alg');

  const signature = Buffer.from(s, 'base64url');
  if (!verifySignature(key, alg as DpopAlg, Buffer.from(`${h}.${p}`, 'latin1'), signature)) {
    throw new DpopError('DPoP signature invalid');
  }

  const claims = parseJsonObject(p, 'payload');
  const { jti, htm, htu, iat, ath } = claims;
  if (typeof jti !== 'string' || jti.length === 0 || jti.length > MAX_JTI_LENGTH) {
    throw new DpopError('DPoP jti missing or invalid');
  }
  if (typeof htm !== 'string') throw new DpopError('DPoP htm missing');
  if (typeof htu !== 'string') throw new DpopError('DPoP htu missing');
  if (typeof iat !== 'number' || !Number.isFinite(iat)) throw new DpopError('DPoP iat missing or invalid');
  if (typeof ath !== 'string') throw new DpopError('DPoP ath missing');

  if (htm !== o.method) throw new DpopError('DPoP htm does not match the request method');
  const requestTarget = normalizeHtu(o.url);
  if (requestTarget === undefined || normalizeHtu(htu) !== requestTarget) {
    throw new DpopError('DPoP htu does not match the request URL');
  }
  const now = o.now ?? Math.floor(Date.now() / 1000);
  if (Math.abs(now - iat) > o.iatWindowSeconds) throw new DpopError('DPoP iat outside the acceptable window');
  if (ath !== createHash('sha256').update(o.accessToken).digest('base64url')) {
    throw new DpopError('DPoP ath does not match the access token');
  }

  // Last, so only proofs that are otherwise valid can occupy the replay store.
  const expiresAt = new Date((iat + o.iatWindowSeconds + REPLAY_MARGIN_SECONDS) * 1000);
  if (!(await o.replay.remember(`${jkt}:${jti}`, expiresAt))) throw new DpopError('DPoP proof replayed');

  return { jkt, jti, iat };
}

/**
 * RFC 7638 thumbprint (base64url SHA-256 of the required members in lexicographic order) computed with
 * createHash over the canonical JSON: ~35× faster than jose's calculateJwkThumbprint.
 */
/** RFC 7638 thumbprint; a DpopError for a key without the members a thumbprint needs. */
export function jwkThumbprint(jwk: { kty: string; [k: string]: unknown }): string {
  const t = tryJwkThumbprint(jwk);
  if (t === undefined) throw new DpopError('JWK is missing required members');
  return t;
}

interface CachedKey {
  key: KeyObject;
  /** The only JWS alg this key may be used with. */
  alg: DpopAlg;
}

const KEY_CACHE_MAX = 10_000;
/** Insertion-ordered Map as an LRU: a hit is re-inserted at the end, the oldest entry is evicted first. */
const keyCache = new Map<string, CachedKey>();

/**
 * Imports the public key (cached by thumbprint; the thumbprint covers every member that defines the key,
 * so equal thumbprints mean equal keys) and fixes the one alg it may verify, which blocks algorithm
 * confusion such as ES256 over a P-384 key.
 */
function importKey(jkt: string, jwk: Record<string, unknown>): CachedKey {
  const hit = keyCache.get(jkt);
  if (hit) {
    keyCache.delete(jkt);
    keyCache.set(jkt, hit);
    return hit;
  }
  let alg: DpopAlg;
  let publicJwk: Record<string, string>;
  if (jwk.kty === 'EC' && jwk.crv === 'P-256') {
    alg = 'ES256';
    publicJwk = { kty: 'EC', crv: 'P-256', x: jwk.x as string, y: jwk.y as string };
  } else if (jwk.kty === 'RSA') {
    alg = 'PS256';
    publicJwk = { kty: 'RSA', n: jwk.n as string, e: jwk.e as string };
  } else if (jwk.kty === 'OKP' && (jwk.crv === 'Ed25519' || jwk.crv === 'Ed448')) {
    alg = 'EdDSA';
    publicJwk = { kty: 'OKP', crv: jwk.crv, x: jwk.x as string };
  } else {
    throw new DpopError('DPoP jwk key type or curve not allowed');
  }
  let key: KeyObject;
  try {
    key = createPublicKey({ key: publicJwk, format: 'jwk' });
  } catch {
    throw new DpopError('DPoP jwk is invalid');
  }
  if (alg === 'PS256' && (key.asymmetricKeyDetails?.modulusLength ?? 0) < MIN_RSA_BITS) {
    throw new DpopError('DPoP RSA key too small');
  }
  const entry: CachedKey = { key, alg };
  keyCache.set(jkt, entry);
  if (keyCache.size > KEY_CACHE_MAX) {
    const oldest = keyCache.keys().next().value;
    if (oldest !== undefined) keyCache.delete(oldest);
  }
  return entry;
}

function verifySignature(key: CachedKey, alg: DpopAlg, data: Buffer, signature: Buffer): boolean {
  try {
    switch (alg) {
      case 'ES256':
        if (signature.length !== 64) return false;
        return verify('sha256', data, key.key, p1363ToDer(signature));
      case 'PS256':
        return verify(
          'sha256',
          data,
          { key: key.key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 },
          signature,
        );
      case 'EdDSA':
        return verify(null, data, key.key, signature);
    }
  } catch {
    return false;
  }
}

/**
 * The part of a URL htu must match: scheme, host, port and path (RFC 9449 §4.3 ignores query and fragment).
 * WHATWG URL parsing lower-cases scheme and host, drops default ports and normalizes the path.
 */
function normalizeHtu(value: string): string | undefined {
  const u = URL.parse(value);
  if (!u || (u.protocol !== 'https:' && u.protocol !== 'http:')) return undefined;
  return `${u.protocol}//${u.host}${u.pathname}`;
}

function parseJsonObject(segment: string, what: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(Buffer.from(segment, 'base64url').toString('utf8'));
  } catch {
    throw new DpopError(`DPoP ${what} is not valid JSON`);
  }
  if (!isPlainObject(value)) throw new DpopError(`DPoP ${what} is not a JSON object`);
  return value;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Sweep expired rows on one call in this many; any node may do it, concurrent sweeps are harmless. */
const SWEEP_EVERY = 100;
/** Bounds one sweep's work so a backlog never stalls a request. */
const SWEEP_BATCH = 1000;

/**
 * Postgres replay store over dpop_seen: the key is stored as the hex SHA-256 of `${jkt}:${jti}` and the
 * primary key makes "first sighting" an atomic INSERT … ON CONFLICT DO NOTHING across all nodes.
 */
/** The dpop_seen key for a `${jkt}:${jti}` replay key. */
export function dpopSeenKey(jtiKey: string): string {
  return createHash('sha256').update(jtiKey).digest('hex');
}

export function createDbReplayStore(db: Queryable): DpopReplayStore {
  let calls = 0;
  return {
    async remember(jtiKey, expiresAt) {
      const hash = dpopSeenKey(jtiKey);
      const r = await db.query(
        'INSERT INTO dpop_seen (jti_hash, expires_at) VALUES ($1, $2) ON CONFLICT (jti_hash) DO NOTHING',
        [hash, expiresAt.toISOString()],
      );
      calls = (calls + 1) % SWEEP_EVERY;
      if (calls === 0) {
        try {
          await db.query(
            `DELETE FROM dpop_seen WHERE jti_hash IN
               (SELECT jti_hash FROM dpop_seen WHERE expires_at < now() LIMIT ${SWEEP_BATCH})`,
          );
        } catch {
          // Expired rows only cost space; the next sweep retries. Never fail a request over it.
        }
      }
      return r.rowCount === 1;
    },
  };
}

/** Deletes remembered DPoP jtis whose proofs can no longer be fresh, at most `limit` per call. */
export async function deleteExpiredDpopProofs(db: Queryable, limit = SWEEP_BATCH): Promise<number> {
  const res = await db.query(
    'DELETE FROM dpop_seen WHERE jti_hash IN (SELECT jti_hash FROM dpop_seen WHERE expires_at < now() LIMIT $1)',
    [limit],
  );
  return res.rowCount;
}
