/**
 * The floor of a DPoP-protected read, for test/bench/floor.ts: node:https with the hub's TLS settings,
 * no framework; per request it parses the DPoP proof, checks its key against the token binding,
 * verifies the ES256 signature with node:crypto (key cached), checks htm/htu/iat/ath, and runs ONE
 * statement that records the jti (replay check) and reads the consented accounts — the work every
 * read has to do and nothing else. Run as a child process: FLOOR_PORT, FLOOR_DB, FLOOR_CERT, FLOOR_KEY,
 * FLOOR_TOKEN, FLOOR_JKT, FLOOR_HTU.
 */
import { createHash, createPublicKey, type KeyObject, verify } from 'node:crypto';
import { readFileSync } from 'node:fs';
import https from 'node:https';
import pg from 'pg';
import { p1363ToDer } from '../../../src/keys/index.ts';
import { secureTlsOptions } from '../../../src/tls/index.ts';

const env = (k: string) => process.env[k] ?? '';
const pool = new pg.Pool({ connectionString: env('FLOOR_DB'), max: 10 });
const token = env('FLOOR_TOKEN');
const ath = createHash('sha256').update(token).digest('base64url');
const keys = new Map<string, KeyObject>();
const SQL = `WITH seen AS (INSERT INTO floor_seen (jti_hash, expires_at) VALUES ($1, now() + interval '3 minutes')
  ON CONFLICT (jti_hash) DO NOTHING RETURNING 1)
SELECT (SELECT count(*) FROM seen)::int AS fresh, a.id, a.nickname FROM floor_consents c
  JOIN floor_accounts a ON a.id = ANY (c.account_ids) WHERE c.grant_id = $2 ORDER BY a.id`;

function fail(res: import('node:http').ServerResponse, status: number, error: string) {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify({ error }));
}

const server = https.createServer(
  secureTlsOptions({
    certPem: readFileSync(env('FLOOR_CERT'), 'utf8'),
    keyPem: readFileSync(env('FLOOR_KEY'), 'utf8'),
  }),
  async (req, res) => {
    const proof = req.headers.dpop;
    if (req.headers.authorization !== `DPoP ${token}` || typeof proof !== 'string')
      return fail(res, 401, 'invalid_token');
    const [h, p, s] = proof.split('.') as [string, string, string];
    const header = JSON.parse(Buffer.from(h, 'base64url').toString('utf8'));
    const jwk = header.jwk;
    const jkt = createHash('sha256')
      .update(JSON.stringify({ crv: jwk.crv, kty: jwk.kty, x: jwk.x, y: jwk.y }))
      .digest('base64url');
    if (header.typ !== 'dpop+jwt' || header.alg !== 'ES256' || jkt !== env('FLOOR_JKT'))
      return fail(res, 401, 'invalid_dpop_proof');
    let key = keys.get(jkt);
    if (!key) {
      key = createPublicKey({ key: { kty: 'EC', crv: 'P-256', x: jwk.x, y: jwk.y }, format: 'jwk' });
      keys.set(jkt, key);
    }
    const signature = Buffer.from(s, 'base64url');
    const ok =
      signature.length === 64 &&
      verify('sha256', Buffer.from(`${h}.${p}`, 'latin1'), key, p1363ToDer(signature));
    const claims = JSON.parse(Buffer.from(p, 'base64url').toString('utf8'));
    if (
      !ok ||
      claims.htm !== req.method ||
      claims.htu !== env('FLOOR_HTU') ||
      Math.abs(Date.now() / 1000 - claims.iat) > 60 ||
      claims.ath !== ath
    )
      return fail(res, 401, 'invalid_dpop_proof');
    const jti = createHash('sha256').update(`${jkt}:${claims.jti}`).digest('hex');
    const r = await pool.query({ name: 'floor', text: SQL, values: [jti, 'g1'] });
    if (r.rows[0]?.fresh !== 1) return fail(res, 401, 'invalid_dpop_proof');
    res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' });
    res.end(
      JSON.stringify({
        data: r.rows.map((a) => ({ accountId: a.id, nickname: a.nickname })),
        links: {},
        meta: {},
      }),
    );
  },
);
server.keepAliveTimeout = 60_000;
server.listen(Number(env('FLOOR_PORT')), '127.0.0.1', () => process.send?.('ready'));
