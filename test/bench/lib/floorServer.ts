/**
 * The floor of a DPoP-protected read, for test/bench/floor.ts: node:https with the hub's TLS settings,
 * no framework; per request it checks the DPoP proof (floorJose.ts: ES256 signature with node:crypto,
 * key cached; htm/htu/iat), its key against the token binding and ath, and runs ONE
 * statement that records the jti (replay check) and reads the consented accounts — the work every
 * read has to do and nothing else. Run as a child process: FLOOR_PORT, FLOOR_DB, FLOOR_CERT, FLOOR_KEY,
 * FLOOR_TOKEN, FLOOR_JKT, FLOOR_HTU.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import https from 'node:https';
import pg from 'pg';
import { secureTlsOptions } from '../../../src/tls/index.ts';
import { checkDpopProof, jtiKey, KeyCache } from './floorJose.ts';

const env = (k: string) => process.env[k] ?? '';
const pool = new pg.Pool({ connectionString: env('FLOOR_DB'), max: 10 });
const token = env('FLOOR_TOKEN');
const ath = createHash('sha256').update(token).digest('base64url');
const keys = new KeyCache();
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
    const checked = checkDpopProof(proof, { htm: req.method!, htu: env('FLOOR_HTU'), keys });
    if (typeof checked === 'string' || checked.jkt !== env('FLOOR_JKT') || checked.claims.ath !== ath)
      return fail(res, 401, 'invalid_dpop_proof');
    const jti = jtiKey(checked.jkt, checked.jti);
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
