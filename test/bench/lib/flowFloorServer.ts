/**
 * The floor of a FAPI 2.0 flow, for test/bench/flowFloor.ts: node:https with the hub's TLS settings,
 * HTTP/1.1 keep-alive, no framework, answering the requests of the benchmark's flow driver
 * (lib/flow.ts) at the hub's URLs and in its response shapes — and doing, for real, only the work no
 * correct implementation of that flow can skip. Every check refuses when it fails; flowFloor.ts
 * proves the refusals before it measures. docs/flow-floor.md lists each statement and why.
 *
 * State: one row per flow (floor_flows) moved forward by compare-and-set statements (`WHERE stage =
 * …`), so every single-use value (request_uri, the login, the consent, the code) is consumed
 * atomically; one HMAC-signed cookie binds the browser to its flow. The WebAuthn challenge and the
 * authorization code are HMACs of the flow id under the server's secret: unpredictable, recomputed
 * instead of stored, single use through the row's stage.
 *
 * Run as a child process (prints "listening on <url>"): FLOOR_PORT, FLOOR_DB, FLOOR_CERT, FLOOR_KEY,
 * FLOOR_ISSUER, FLOOR_CLIENT (JSON: client_id, redirect_uris, public jwk with kid), FLOOR_SECRET
 * (base64url), FLOOR_SIGNING_KEY (PKCS#8 PEM, ES256) and FLOOR_SIGNING_KID, FLOOR_POOL (connections per
 * worker), FLOOR_WORKERS (node:cluster worker processes, as the hub's KAKEHASHI_WORKERS).
 */
import cluster from 'node:cluster';
import {
  createHash,
  createHmac,
  createPrivateKey,
  createPublicKey,
  type KeyObject,
  randomBytes,
  randomUUID,
  timingSafeEqual,
  verify,
} from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import https from 'node:https';
import { openDb } from '../../../src/db/index.ts';
import { secureTlsOptions } from '../../../src/tls/index.ts';
import { checkClientAssertion, checkDpopProof, jtiKey, KeyCache } from './floorJose.ts';
import { signCompact } from './jws.ts';

const env = (k: string): string => {
  const v = process.env[k];
  if (v === undefined) throw new Error(`flow floor server: ${k} is not set`);
  return v;
};
const WORKERS = Math.max(1, Number(process.env.FLOOR_WORKERS ?? 1));
const PORT = Number(env('FLOOR_PORT'));

if (cluster.isPrimary && WORKERS > 1) {
  // Like the hub's primary: accepts connections and hands them to the workers; does no request work.
  let ready = 0;
  for (let i = 0; i < WORKERS; i++)
    cluster.fork().on('message', (m) => {
      if (m === 'ready' && ++ready === WORKERS) console.log(`listening on https://127.0.0.1:${PORT}`);
    });
  let stopping = false;
  cluster.on('exit', (_w, code, signal) => {
    if (!stopping) {
      console.error(`flow floor worker died (${signal ?? code})`);
      process.exit(1);
    }
  });
  process.once('SIGTERM', () => {
    stopping = true;
    for (const w of Object.values(cluster.workers ?? {})) w?.kill();
    setTimeout(() => process.exit(0), 200);
  });
} else
  serve().catch((err: Error) => {
    console.error(`flow floor server: ${err.stack ?? err}`);
    process.exit(1);
  });

async function serve(): Promise<void> {
  const ISSUER = env('FLOOR_ISSUER');
  const PAR_URL = `${ISSUER}/request`;
  const TOKEN_URL = `${ISSUER}/token`;
  const RP_ID = new URL(ISSUER).hostname;
  const RP_ID_HASH = createHash('sha256').update(RP_ID).digest();
  const REQUEST_URI_PREFIX = 'urn:ietf:params:oauth:request_uri:';
  const SCOPES = new Set(['openid', 'offline_access', 'accounts']);
  const client = JSON.parse(env('FLOOR_CLIENT')) as {
    client_id: string;
    client_name: string;
    redirect_uris: string[];
    jwk: { kty: 'EC'; crv: 'P-256'; x: string; y: string; kid: string };
  };
  const clientKey = createPublicKey({
    key: { kty: 'EC', crv: 'P-256', x: client.jwk.x, y: client.jwk.y },
    format: 'jwk',
  });
  const secret = Buffer.from(env('FLOOR_SECRET'), 'base64url');
  const signingKey = createPrivateKey(env('FLOOR_SIGNING_KEY'));
  const idTokenHeader = Buffer.from(
    JSON.stringify({ alg: 'ES256', kid: env('FLOOR_SIGNING_KID'), typ: 'JWT' }),
  ).toString('base64url');
  // The hub's own database layer (postgres.js: prepared statements, pipelining; less client CPU per
  // statement than pg, docs/database-driver.md), so both pay the same per statement.
  const db = await openDb({
    databaseUrl: env('FLOOR_DB'),
    dataDir: '.',
    poolSize: Number(env('FLOOR_POOL')),
  });
  const dpopKeys = new KeyCache();
  /** Parsed credential public keys by their stored SPKI bytes (parsing costs more than verifying). */
  const credentialKeys = new Map<string, KeyObject>();
  const COOKIE = '__Host-flow';
  const COOKIE_MAX_AGE_S = 600;
  const SECURITY_HEADERS = { 'strict-transport-security': 'max-age=31536000; includeSubDomains' };

  // ---------------------------------------------------------------------------------------------
  // Statements: each is one round trip (prepared once per connection by the Db layer).

  /** PAR: remember both jtis once, and store the request only if both were fresh. */
  const PAR_SQL = `WITH seen AS (
    INSERT INTO floor_jti (jti_hash, expires_at) SELECT unnest($1::text[]), now() + interval '5 minutes'
    ON CONFLICT (jti_hash) DO NOTHING RETURNING jti_hash),
  flow AS (
    INSERT INTO floor_flows (id, client_id, redirect_uri, scope, oauth_state, code_challenge, jkt, stage, expires_at)
    SELECT $2::text, $3::text, $4::text, $5::text, $6::text, $7::text, $8::text, 'pushed', now() + interval '60 seconds'
    WHERE (SELECT count(*) FROM seen) = cardinality($1::text[]) RETURNING 1)
  SELECT ARRAY(SELECT jti_hash FROM seen) AS fresh, (SELECT count(*) FROM flow)::int AS stored`;
  /** /auth: consume the request_uri and open the login transaction. */
  const AUTH_SQL = `UPDATE floor_flows SET stage = 'login', uid = $3, expires_at = now() + interval '10 minutes'
    WHERE id = $1 AND client_id = $2 AND stage = 'pushed' AND expires_at > now() RETURNING 1`;
  const CREDENTIAL_SQL = `SELECT public_key, counter, customer_id, user_handle FROM floor_credentials
    WHERE id = $1 AND revoked_at IS NULL`;
  /**
   * Passkey verified: advance the counter (refused unless it moves forward, so a replayed or cloned
   * assertion writes nothing), consume the login transaction, record the sign-in.
   */
  const SIGN_IN_SQL = `WITH cred AS (
    UPDATE floor_credentials SET counter = $4, last_used_at = now()
    WHERE id = $3 AND revoked_at IS NULL AND (counter < $4 OR (counter = 0 AND $4 = 0)) RETURNING customer_id),
  flow AS (
    UPDATE floor_flows SET stage = 'signedin', customer_id = (SELECT customer_id FROM cred), auth_time = now()
    WHERE id = $1 AND uid = $2 AND stage = 'login' AND expires_at > now() AND EXISTS (SELECT 1 FROM cred)
    RETURNING customer_id, client_id),
  audit AS (
    INSERT INTO floor_audit (type, outcome, customer_id, client_id, ip, port, user_agent, data)
    SELECT 'authn.passkey.login', 'success', customer_id, client_id, $5::text, $6::int, $7::text,
      jsonb_build_object('credentialId', $3::text)
    FROM flow RETURNING 1)
  SELECT (SELECT count(*) FROM cred)::int AS counter_ok, (SELECT customer_id FROM flow) AS customer_id`;
  const FAILED_SIGN_IN_SQL = `INSERT INTO floor_audit (type, outcome, client_id, ip, port, user_agent, data)
    VALUES ('authn.passkey.login', 'failure', $1, $2, $3, $4, jsonb_build_object('reason', $5::text))`;
  const CONSENT_PAGE_SQL = `SELECT f.scope, a.id, a.nickname FROM floor_flows f
    JOIN floor_accounts a ON a.customer_id = f.customer_id
    WHERE f.id = $1 AND f.uid = $2 AND f.stage = 'signedin' AND f.expires_at > now() ORDER BY a.id`;
  /**
   * Consent: only the customer's own accounts, the grant stored, the code issued (its expiry; the
   * code itself is an HMAC of the flow id), the consent recorded.
   */
  const CONSENT_SQL = `WITH flow AS (
    UPDATE floor_flows f SET stage = 'consented', account_ids = $3, grant_id = $4,
      expires_at = now() + interval '60 seconds'
    WHERE f.id = $1 AND f.uid = $2 AND f.stage = 'signedin' AND f.expires_at > now()
      AND cardinality($3::text[]) > 0
      AND (SELECT count(*) FROM floor_accounts a WHERE a.id = ANY ($3::text[]) AND a.customer_id = f.customer_id)
        = cardinality($3::text[])
    RETURNING f.customer_id, f.client_id, f.scope, f.redirect_uri, f.oauth_state),
  grant_row AS (
    INSERT INTO floor_grants (id, customer_id, client_id, scope, account_ids)
    SELECT $4::text, customer_id, client_id, scope, $3::text[] FROM flow RETURNING 1),
  audit AS (
    INSERT INTO floor_audit (type, outcome, customer_id, client_id, ip, port, user_agent, data)
    SELECT 'consent.granted', 'success', customer_id, client_id, $5::text, $6::int, $7::text,
      jsonb_build_object('grantId', $4::text)
    FROM flow RETURNING 1)
  SELECT redirect_uri, oauth_state FROM flow`;
  const DENY_SQL = `UPDATE floor_flows SET stage = 'denied' WHERE id = $1 AND uid = $2 AND stage = 'signedin'
    RETURNING redirect_uri, oauth_state`;
  /**
   * Token: remember both jtis once, consume the code (of concurrent redemptions exactly one matches
   * stage = 'consented'), check client, redirect_uri, PKCE and the DPoP key binding in the same WHERE,
   * and store the access and refresh token hashes — all or nothing.
   */
  const TOKEN_SQL = `WITH seen AS (
    INSERT INTO floor_jti (jti_hash, expires_at) SELECT unnest($1::text[]), now() + interval '5 minutes'
    ON CONFLICT (jti_hash) DO NOTHING RETURNING jti_hash),
  flow AS (
    UPDATE floor_flows SET stage = 'redeemed'
    WHERE id = $2 AND stage = 'consented' AND expires_at > now() AND client_id = $3 AND redirect_uri = $4
      AND code_challenge = $5 AND jkt = $6 AND (SELECT count(*) FROM seen) = cardinality($1::text[])
    RETURNING grant_id, customer_id, scope, auth_time),
  tokens AS (
    INSERT INTO floor_tokens (at_hash, rt_hash, grant_id, jkt, scope, at_expires_at)
    SELECT $7::text, $8::text, grant_id, $6::text, scope, now() + interval '10 minutes' FROM flow RETURNING 1)
  SELECT ARRAY(SELECT jti_hash FROM seen) AS fresh, f.customer_id, f.scope,
    extract(epoch FROM f.auth_time)::bigint AS auth_time
  FROM (SELECT 1) one LEFT JOIN flow f ON true`;
  /** A code presented after its redemption: revoke the grant and every token issued under it. */
  const CODE_REPLAY_SQL = `WITH flow AS (SELECT grant_id FROM floor_flows WHERE id = $1 AND stage = 'redeemed'),
  grant_row AS (UPDATE floor_grants SET revoked_at = now() WHERE id IN (SELECT grant_id FROM flow) RETURNING 1),
  tokens AS (UPDATE floor_tokens SET revoked_at = now() WHERE grant_id IN (SELECT grant_id FROM flow) RETURNING 1)
  SELECT (SELECT count(*) FROM grant_row)::int AS grants, (SELECT count(*) FROM tokens)::int AS tokens`;

  // biome-ignore lint/suspicious/noExplicitAny: rows are read by column name right where they are used
  const query = (text: string, values: unknown[]) => db.query<any>(text, values);

  // ---------------------------------------------------------------------------------------------
  // Small helpers.

  const mac = (label: string, data: string): string =>
    createHmac('sha256', secret).update(`${label}\0${data}`).digest('base64url');
  const sameString = (a: string, b: string): boolean => {
    const x = Buffer.from(a);
    const y = Buffer.from(b);
    return x.length === y.length && timingSafeEqual(x, y);
  };
  const sha256 = (s: string | Buffer): string => createHash('sha256').update(s).digest('base64url');
  const newId = (): string => randomBytes(16).toString('base64url');
  const ID = /^[A-Za-z0-9_-]{22}$/;

  interface FlowCookie {
    /** The flow row. */
    f: string;
    /** The interaction id in the URL. */
    u: string;
    s: 'login' | 'signedin' | 'consented';
    /** Issued at (s). */
    t: number;
    /** The signed-in customer. */
    c?: string;
    /** After consent: the redirect_uri and state of the authorization response. */
    r?: string;
    st?: string;
  }

  function setCookie(value: FlowCookie | undefined): string {
    if (!value) return `${COOKIE}=; Path=/; Max-Age=0; Secure; HttpOnly; SameSite=Lax`;
    const payload = Buffer.from(JSON.stringify(value)).toString('base64url');
    return `${COOKIE}=${payload}.${mac('cookie', payload)}; Path=/; Secure; HttpOnly; SameSite=Lax`;
  }

  /** The flow cookie when its signature holds, it is fresh, and it belongs to the interaction `uid`. */
  function readCookie(req: IncomingMessage, uid: string): FlowCookie | undefined {
    const header = req.headers.cookie;
    if (!header) return undefined;
    const at = header.indexOf(`${COOKIE}=`);
    if (at < 0) return undefined;
    const end = header.indexOf(';', at);
    const raw = header.slice(at + COOKIE.length + 1, end < 0 ? undefined : end);
    const dot = raw.indexOf('.');
    if (dot < 0 || !sameString(raw.slice(dot + 1), mac('cookie', raw.slice(0, dot)))) return undefined;
    const value = JSON.parse(Buffer.from(raw.slice(0, dot), 'base64url').toString('utf8')) as FlowCookie;
    if (value.u !== uid || Date.now() / 1000 - value.t > COOKIE_MAX_AGE_S) return undefined;
    return value;
  }

  /** The request body as text (undefined past 64 KiB); events rather than an async iterator (cheaper). */
  function readBody(req: IncomingMessage): Promise<string | undefined> {
    return new Promise((resolve, reject) => {
      const chunks: Buffer[] = [];
      let size = 0;
      req.on('data', (chunk: Buffer) => {
        size += chunk.length;
        if (size <= 64 * 1024) chunks.push(chunk);
      });
      req.on('end', () =>
        resolve(
          size > 64 * 1024
            ? undefined
            : (chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks)).toString('utf8'),
        ),
      );
      req.on('error', reject);
    });
  }

  function send(
    res: ServerResponse,
    status: number,
    body: string,
    type: string,
    headers: Record<string, string | string[]> = {},
  ): void {
    res.writeHead(status, {
      ...SECURITY_HEADERS,
      'content-type': type,
      'cache-control': 'no-store',
      ...headers,
    });
    res.end(body);
  }
  const json = (
    res: ServerResponse,
    status: number,
    body: unknown,
    headers?: Record<string, string | string[]>,
  ) => send(res, status, JSON.stringify(body), 'application/json; charset=utf-8', headers);
  /** An OAuth error (RFC 6749 §5.2 shape). */
  const oauthError = (res: ServerResponse, status: number, error: string, description: string) =>
    json(res, status, { error, error_description: description });
  const redirect = (res: ServerResponse, location: string, cookie?: string) => {
    res.writeHead(303, { ...SECURITY_HEADERS, location, ...(cookie ? { 'set-cookie': cookie } : {}) });
    res.end();
  };
  const escapeHtml = (s: string) =>
    s.replace(
      /[&<>"']/g,
      (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c] ?? c,
    );
  const fapiId = (req: IncomingMessage) => {
    const given = req.headers['x-fapi-interaction-id'];
    return typeof given === 'string' && given.length <= 100 ? given : randomUUID();
  };
  const peer = (req: IncomingMessage) => [req.socket.remoteAddress ?? null, req.socket.remotePort ?? null];

  // ---------------------------------------------------------------------------------------------
  // Endpoints.

  /** The private_key_jwt client assertion of a form; its replay key, or the refusal already sent. */
  function authenticateClient(res: ServerResponse, form: URLSearchParams): string | undefined {
    const assertion = form.get('client_assertion');
    if (
      form.get('client_assertion_type') !== 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer' ||
      !assertion ||
      (form.has('client_id') && form.get('client_id') !== client.client_id)
    ) {
      oauthError(res, 401, 'invalid_client', 'private_key_jwt client authentication is required');
      return undefined;
    }
    const checked = checkClientAssertion(assertion, {
      clientId: client.client_id,
      kid: client.jwk.kid,
      key: clientKey,
      issuer: ISSUER,
    });
    if (typeof checked === 'string') {
      oauthError(res, 401, 'invalid_client', `client assertion: ${checked}`);
      return undefined;
    }
    return jtiKey(`client:${client.client_id}`, checked.jti);
  }

  /** A form body from the authenticated client (PAR, token), or undefined when the refusal is sent. */
  async function authenticatedForm(req: IncomingMessage, res: ServerResponse) {
    const body = await readBody(req);
    if (body === undefined || !req.headers['content-type']?.startsWith('application/x-www-form-urlencoded')) {
      oauthError(res, 400, 'invalid_request', 'a form body is required');
      return undefined;
    }
    const form = new URLSearchParams(body);
    const clientJti = authenticateClient(res, form);
    return clientJti ? { form, clientJti } : undefined;
  }

  async function par(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const authenticated = await authenticatedForm(req, res);
    if (!authenticated) return;
    const { form, clientJti } = authenticated;
    const jtis = [clientJti];
    let jkt = form.get('dpop_jkt') ?? undefined;
    const proof = req.headers.dpop;
    if (proof !== undefined) {
      const checked =
        typeof proof === 'string'
          ? checkDpopProof(proof, { htm: 'POST', htu: PAR_URL, keys: dpopKeys })
          : 'proof';
      if (typeof checked === 'string') return oauthError(res, 400, 'invalid_dpop_proof', checked);
      if (jkt !== undefined && jkt !== checked.jkt)
        return oauthError(res, 400, 'invalid_request', 'dpop_jkt does not match the DPoP proof');
      jkt = checked.jkt;
      jtis.push(jtiKey(`dpop:${checked.jkt}`, checked.jti));
    }
    const redirectUri = form.get('redirect_uri') ?? '';
    const scope = form.get('scope') ?? '';
    const scopes = scope.split(' ');
    const challenge = form.get('code_challenge') ?? '';
    const state = form.get('state') ?? '';
    if (form.get('response_type') !== 'code')
      return oauthError(res, 400, 'unsupported_response_type', 'code only');
    if (!client.redirect_uris.includes(redirectUri))
      return oauthError(res, 400, 'invalid_request', 'redirect_uri is not registered');
    if (!scopes.includes('openid') || !scopes.every((s) => SCOPES.has(s)))
      return oauthError(res, 400, 'invalid_scope', 'openid and known scopes only');
    if (form.get('code_challenge_method') !== 'S256' || !/^[A-Za-z0-9_-]{43}$/.test(challenge))
      return oauthError(res, 400, 'invalid_request', 'PKCE with S256 is required');
    if (state.length > 512) return oauthError(res, 400, 'invalid_request', 'state is too long');
    if (form.has('request_uri'))
      return oauthError(res, 400, 'invalid_request', 'request_uri is not allowed here');
    if (!jkt || !/^[A-Za-z0-9_-]{43}$/.test(jkt))
      return oauthError(res, 400, 'invalid_request', 'a DPoP proof or dpop_jkt is required');
    const flowId = newId();
    const r = await query(PAR_SQL, [
      jtis,
      flowId,
      client.client_id,
      redirectUri,
      scope,
      state,
      challenge,
      jkt,
    ]);
    const fresh = r.rows[0].fresh as string[];
    if (!fresh.includes(clientJti))
      return oauthError(res, 401, 'invalid_client', 'client assertion replayed');
    if (r.rows[0].stored !== 1) return oauthError(res, 400, 'invalid_dpop_proof', 'DPoP proof replayed');
    json(
      res,
      201,
      { request_uri: `${REQUEST_URI_PREFIX}${flowId}`, expires_in: 60 },
      { 'x-fapi-interaction-id': fapiId(req) },
    );
  }

  async function authorize(res: ServerResponse, query_: string): Promise<void> {
    const params = new URLSearchParams(query_);
    const requestUri = params.get('request_uri') ?? '';
    const flowId = requestUri.slice(REQUEST_URI_PREFIX.length);
    if (
      params.get('client_id') !== client.client_id ||
      !requestUri.startsWith(REQUEST_URI_PREFIX) ||
      !ID.test(flowId)
    )
      return send(res, 400, 'invalid_request: client_id and a pushed request_uri are required', 'text/plain');
    const uid = newId();
    const r = await query(AUTH_SQL, [flowId, client.client_id, uid]);
    if (r.rowCount !== 1) return send(res, 400, 'invalid_request_uri', 'text/plain');
    redirect(
      res,
      `/interaction/${uid}`,
      setCookie({ f: flowId, u: uid, s: 'login', t: Math.floor(Date.now() / 1000) }),
    );
  }

  function passkeyOptions(res: ServerResponse, flow: FlowCookie): void {
    json(res, 200, {
      challenge: mac('webauthn', flow.f),
      timeout: 300_000,
      rpId: RP_ID,
      allowCredentials: [],
      userVerification: 'required',
    });
  }

  async function passkeyVerify(
    req: IncomingMessage,
    res: ServerResponse,
    flow: FlowCookie,
    uid: string,
  ): Promise<void> {
    const body = await readBody(req);
    const [ip, port] = peer(req);
    const refuse = async (reason: string) => {
      await query(FAILED_SIGN_IN_SQL, [
        client.client_id,
        ip,
        port,
        req.headers['user-agent'] ?? null,
        reason,
      ]);
      json(res, 400, { error: 'invalid_request', error_description: `passkey: ${reason}` });
    };
    let assertion: {
      id?: unknown;
      rawId?: unknown;
      type?: unknown;
      response?: {
        clientDataJSON?: unknown;
        authenticatorData?: unknown;
        signature?: unknown;
        userHandle?: unknown;
      };
    };
    try {
      assertion = JSON.parse(body ?? '');
    } catch {
      return refuse('malformed');
    }
    if (typeof assertion !== 'object' || assertion === null) return refuse('malformed');
    const r = assertion.response;
    if (
      assertion.type !== 'public-key' ||
      typeof assertion.id !== 'string' ||
      assertion.id !== assertion.rawId ||
      !/^[A-Za-z0-9_-]{1,1400}$/.test(assertion.id) ||
      typeof r?.clientDataJSON !== 'string' ||
      typeof r.authenticatorData !== 'string' ||
      typeof r.signature !== 'string' ||
      typeof r.userHandle !== 'string'
    )
      return refuse('malformed');
    const clientDataBytes = Buffer.from(r.clientDataJSON, 'base64url');
    let clientData: { type?: unknown; challenge?: unknown; origin?: unknown; crossOrigin?: unknown };
    try {
      clientData = JSON.parse(clientDataBytes.toString('utf8'));
    } catch {
      return refuse('malformed clientDataJSON');
    }
    if (clientData.type !== 'webauthn.get') return refuse('type');
    if (
      typeof clientData.challenge !== 'string' ||
      !sameString(clientData.challenge, mac('webauthn', flow.f))
    )
      return refuse('challenge');
    if (clientData.origin !== ISSUER || clientData.crossOrigin === true) return refuse('origin');
    const authData = Buffer.from(r.authenticatorData, 'base64url');
    if (authData.length < 37 || !authData.subarray(0, 32).equals(RP_ID_HASH)) return refuse('rpIdHash');
    // Flags: user present (0x01) and user verified (0x04) are both required.
    if ((authData[32]! & 0x05) !== 0x05) return refuse('user verification');
    const counter = authData.readUInt32BE(33);

    const found = await query(CREDENTIAL_SQL, [assertion.id]);
    const cred = found.rows[0] as
      | { public_key: Buffer; counter: string; customer_id: string; user_handle: string }
      | undefined;
    if (!cred) return refuse('unknown credential');
    if (!sameString(r.userHandle, cred.user_handle)) return refuse('user handle');
    const spki = cred.public_key.toString('base64');
    let key = credentialKeys.get(spki);
    if (!key) {
      key = createPublicKey({ key: cred.public_key, format: 'der', type: 'spki' });
      if (credentialKeys.size > 10_000) credentialKeys.clear();
      credentialKeys.set(spki, key);
    }
    const signed = Buffer.concat([authData, createHash('sha256').update(clientDataBytes).digest()]);
    let valid = false;
    try {
      valid = verify('sha256', signed, key, Buffer.from(r.signature, 'base64url'));
    } catch {
      // not a DER ECDSA signature
    }
    if (!valid) return refuse('signature');

    const done = await query(SIGN_IN_SQL, [
      flow.f,
      uid,
      assertion.id,
      counter,
      ip,
      port,
      req.headers['user-agent'] ?? null,
    ]);
    const row = done.rows[0] as { counter_ok: number; customer_id: string | null };
    if (row.counter_ok !== 1) return refuse('counter did not advance');
    if (!row.customer_id) return refuse('no login in progress');
    json(
      res,
      200,
      { redirectTo: `/auth/${uid}` },
      {
        'set-cookie': setCookie({
          ...flow,
          s: 'signedin',
          c: row.customer_id,
          t: Math.floor(Date.now() / 1000),
        }),
      },
    );
  }

  async function interactionPage(res: ServerResponse, flow: FlowCookie, uid: string): Promise<void> {
    if (flow.s === 'login')
      return send(
        res,
        200,
        `<!doctype html><html lang="en"><meta charset="utf-8"><title>Sign in</title><main><h1>Sign in with a passkey</h1><button id="passkey" data-uid="${uid}">Sign in</button></main></html>`,
        'text/html; charset=utf-8',
      );
    if (flow.s !== 'signedin') return send(res, 400, 'invalid_request', 'text/plain');
    const r = await query(CONSENT_PAGE_SQL, [flow.f, uid]);
    if (r.rows.length === 0) return send(res, 400, 'invalid_request: no consent pending', 'text/plain');
    const scopes = String(r.rows[0].scope).split(' ');
    let html = `<!doctype html><html lang="en"><meta charset="utf-8"><title>Consent</title><main><h1>${escapeHtml(client.client_name)} asks for access</h1><ul>`;
    for (const s of scopes) html += `<li>${escapeHtml(s)}</li>`;
    html += `</ul><form method="post" action="/interaction/${uid}/consent">`;
    for (const a of r.rows)
      html += `<label><input type="checkbox" name="account" value="${escapeHtml(a.id)}" checked> ${escapeHtml(a.nickname)}</label>`;
    html += `<button name="decision" value="approve">Allow</button><button name="decision" value="deny">Deny</button></form></main></html>`;
    send(res, 200, html, 'text/html; charset=utf-8');
  }

  async function consent(
    req: IncomingMessage,
    res: ServerResponse,
    flow: FlowCookie,
    uid: string,
  ): Promise<void> {
    const body = await readBody(req);
    if (req.headers.origin !== ISSUER || flow.s !== 'signedin' || body === undefined)
      return send(res, 400, 'invalid_request', 'text/plain');
    const form = new URLSearchParams(body);
    const decision = form.get('decision');
    if (decision === 'deny') {
      const r = await query(DENY_SQL, [flow.f, uid]);
      if (r.rowCount !== 1) return send(res, 400, 'invalid_request', 'text/plain');
      const { redirect_uri, oauth_state } = r.rows[0];
      return redirect(
        res,
        `${redirect_uri}?error=access_denied&state=${encodeURIComponent(oauth_state)}&iss=${encodeURIComponent(ISSUER)}`,
        setCookie(undefined),
      );
    }
    const accounts = form.getAll('account');
    if (decision !== 'approve' || accounts.length === 0 || accounts.length > 50)
      return send(res, 400, 'invalid_request: approve with at least one account', 'text/plain');
    const [ip, port] = peer(req);
    const r = await query(CONSENT_SQL, [
      flow.f,
      uid,
      accounts,
      newId(),
      ip,
      port,
      req.headers['user-agent'] ?? null,
    ]);
    if (r.rowCount !== 1)
      return send(res, 400, 'invalid_request: not your accounts or no consent pending', 'text/plain');
    redirect(
      res,
      `/auth/${uid}`,
      setCookie({
        ...flow,
        s: 'consented',
        r: r.rows[0].redirect_uri,
        st: r.rows[0].oauth_state,
        t: Math.floor(Date.now() / 1000),
      }),
    );
  }

  /** /auth/<uid>: the authorization endpoint resumed after the login and after the consent. */
  function resume(res: ServerResponse, flow: FlowCookie, uid: string): void {
    if (flow.s === 'signedin') redirect(res, `/interaction/${uid}`);
    else if (flow.s !== 'consented') send(res, 400, 'invalid_request', 'text/plain');
    else
      redirect(
        res,
        `${flow.r}?code=${flow.f}.${mac('code', flow.f)}&state=${encodeURIComponent(flow.st ?? '')}&iss=${encodeURIComponent(ISSUER)}`,
        setCookie(undefined),
      );
  }

  async function token(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const authenticated = await authenticatedForm(req, res);
    if (!authenticated) return;
    const { form, clientJti } = authenticated;
    const proof = req.headers.dpop;
    const checked =
      typeof proof === 'string'
        ? checkDpopProof(proof, { htm: 'POST', htu: TOKEN_URL, keys: dpopKeys })
        : 'proof';
    if (typeof checked === 'string') return oauthError(res, 400, 'invalid_dpop_proof', checked);
    if (form.get('grant_type') !== 'authorization_code')
      return oauthError(res, 400, 'unsupported_grant_type', 'authorization_code only');
    const code = form.get('code') ?? '';
    const dot = code.indexOf('.');
    const flowId = code.slice(0, dot);
    if (dot < 0 || !ID.test(flowId) || !sameString(code.slice(dot + 1), mac('code', flowId)))
      return oauthError(res, 400, 'invalid_grant', 'unknown code');
    const verifier = form.get('code_verifier') ?? '';
    if (!/^[A-Za-z0-9._~-]{43,128}$/.test(verifier))
      return oauthError(res, 400, 'invalid_grant', 'code_verifier is required');
    const dpopJti = jtiKey(`dpop:${checked.jkt}`, checked.jti);
    const accessToken = randomBytes(32).toString('base64url');
    const refreshToken = randomBytes(32).toString('base64url');
    const r = await query(TOKEN_SQL, [
      [clientJti, dpopJti],
      flowId,
      client.client_id,
      form.get('redirect_uri') ?? '',
      sha256(verifier),
      checked.jkt,
      sha256(accessToken),
      sha256(refreshToken),
    ]);
    const row = r.rows[0] as {
      fresh: string[];
      customer_id: string | null;
      scope: string;
      auth_time: string;
    };
    if (!row.fresh.includes(clientJti))
      return oauthError(res, 401, 'invalid_client', 'client assertion replayed');
    if (!row.fresh.includes(dpopJti))
      return oauthError(res, 400, 'invalid_dpop_proof', 'DPoP proof replayed');
    if (!row.customer_id) {
      // Wrong client, redirect_uri, verifier or key, expired — or redeemed before: then revoke.
      await query(CODE_REPLAY_SQL, [flowId]);
      return oauthError(res, 400, 'invalid_grant', 'the code is invalid, expired or already used');
    }
    const now = Math.floor(Date.now() / 1000);
    const idToken = signCompact(
      idTokenHeader,
      {
        iss: ISSUER,
        sub: row.customer_id,
        aud: client.client_id,
        iat: now,
        exp: now + 600,
        auth_time: Number(row.auth_time),
      },
      signingKey,
    );
    json(
      res,
      200,
      {
        access_token: accessToken,
        token_type: 'DPoP',
        expires_in: 600,
        refresh_token: refreshToken,
        id_token: idToken,
        scope: row.scope,
      },
      { 'x-fapi-interaction-id': fapiId(req) },
    );
  }

  function discovery(res: ServerResponse): void {
    json(res, 200, {
      issuer: ISSUER,
      pushed_authorization_request_endpoint: PAR_URL,
      require_pushed_authorization_requests: true,
      authorization_endpoint: `${ISSUER}/auth`,
      token_endpoint: TOKEN_URL,
      response_types_supported: ['code'],
      code_challenge_methods_supported: ['S256'],
      token_endpoint_auth_methods_supported: ['private_key_jwt'],
      token_endpoint_auth_signing_alg_values_supported: ['ES256'],
      dpop_signing_alg_values_supported: ['ES256'],
      id_token_signing_alg_values_supported: ['ES256'],
      authorization_response_iss_parameter_supported: true,
      scopes_supported: [...SCOPES],
    });
  }

  async function route(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    const path = q < 0 ? url : url.slice(0, q);
    const method = req.method;
    if (method === 'POST' && path === '/request') return par(req, res);
    if (method === 'POST' && path === '/token') return token(req, res);
    if (method === 'GET' && path === '/auth') return authorize(res, q < 0 ? '' : url.slice(q + 1));
    if (method === 'GET' && path === '/.well-known/openid-configuration') return discovery(res);
    const interaction = /^\/interaction\/([A-Za-z0-9_-]{22})(\/[a-z/]*)?$/.exec(path);
    const resumed = /^\/auth\/([A-Za-z0-9_-]{22})$/.exec(path);
    const uid = interaction?.[1] ?? resumed?.[1];
    if (!uid) return send(res, 404, 'not found', 'text/plain');
    const flow = readCookie(req, uid);
    if (!flow) return send(res, 400, 'invalid_request: no interaction for this browser', 'text/plain');
    const action = interaction?.[2] ?? '';
    if (resumed && method === 'GET') return resume(res, flow, uid);
    if (method === 'GET' && action === '') return interactionPage(res, flow, uid);
    if (method === 'POST' && action === '/passkey/options') {
      await readBody(req);
      if (flow.s !== 'login')
        return json(res, 400, { error: 'invalid_request', error_description: 'no login in progress' });
      return passkeyOptions(res, flow);
    }
    if (method === 'POST' && action === '/passkey/verify') {
      if (flow.s !== 'login' || req.headers.origin !== ISSUER)
        return json(res, 400, { error: 'invalid_request', error_description: 'no login in progress' });
      return passkeyVerify(req, res, flow, uid);
    }
    if (method === 'POST' && action === '/consent') return consent(req, res, flow, uid);
    send(res, 404, 'not found', 'text/plain');
  }

  const server = https.createServer(
    secureTlsOptions({
      certPem: readFileSync(env('FLOOR_CERT'), 'utf8'),
      keyPem: readFileSync(env('FLOOR_KEY'), 'utf8'),
    }),
    (req, res) => {
      route(req, res).catch((err: Error) => {
        // Not a client mistake (those are answered above): the database or a bug. Say so, once.
        console.error(`flow floor: ${req.method} ${req.url}: ${err.stack ?? err}`);
        if (!res.headersSent) send(res, 500, 'server_error', 'text/plain');
        else res.destroy();
      });
    },
  );
  server.keepAliveTimeout = 60_000;
  server.listen(PORT, '127.0.0.1', () => {
    if (cluster.isWorker) process.send?.('ready');
    else console.log(`listening on https://127.0.0.1:${PORT}`);
  });
  process.once('SIGTERM', () => {
    server.close();
    server.closeAllConnections();
    void db.close().finally(() => process.exit(0));
  });
}
