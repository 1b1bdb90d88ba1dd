/**
 * A fake peer institution for the SSF plan, over HTTPS with its own dev CA: it plays
 *  - a receiver: push endpoints (/push/<name>) that record every request and answer as told
 *    (202, an RFC 8935 error, 503, or hold the connection to look slow), and
 *  - a transmitter: /.well-known/ssf-configuration, a token endpoint, stream creation, verification
 *    and a poll endpoint, serving SETs the plan signs with keys it controls (so it can also forge
 *    bad ones: wrong iss/aud, unknown kid, broken signature).
 * The hub under test is configured with this server as a peer and trusts its CA.
 */
import { generateKeyPairSync, type KeyObject, randomBytes, randomUUID, sign } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { ensureDevTls } from '../../../src/tls/index.ts';

export interface RecordedPush {
  at: number;
  path: string;
  headers: Record<string, string | string[] | undefined>;
  body: string;
  /** What the server answered. */
  status: number;
}

export type PushAnswer =
  | { status: number; body?: Record<string, unknown>; headers?: Record<string, string> }
  | { hang: number }
  | { drop: true };

export interface SetKey {
  kid: string;
  alg: 'RS256' | 'ES256';
  privateKey: KeyObject;
  publicJwk: Record<string, unknown>;
}

export function newSetKey(alg: 'RS256' | 'ES256' = 'RS256', kid = randomBytes(8).toString('hex')): SetKey {
  const { privateKey, publicKey } =
    alg === 'RS256'
      ? generateKeyPairSync('rsa', { modulusLength: 2048 })
      : generateKeyPairSync('ec', { namedCurve: 'P-256' });
  return {
    kid,
    alg,
    privateKey,
    publicJwk: { ...publicKey.export({ format: 'jwk' }), kid, alg, use: 'sig' },
  };
}

const b64 = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url');

/** A compact JWS with exactly the header and claims given. */
export function signSet(
  key: SetKey,
  claims: Record<string, unknown>,
  header: Record<string, unknown> = {},
): string {
  const input = `${b64({ typ: 'secevent+jwt', alg: key.alg, kid: key.kid, ...header })}.${b64(claims)}`;
  const sig = sign(
    'sha256',
    Buffer.from(input),
    key.alg === 'ES256' ? { key: key.privateKey, dsaEncoding: 'ieee-p1363' } : key.privateKey,
  );
  return `${input}.${sig.toString('base64url')}`;
}

export interface CreatedStream {
  stream_id: string;
  body: Record<string, unknown>;
  authorization: string | undefined;
}

export interface PollRequest {
  streamId: string;
  body: Record<string, unknown>;
}

export class PeerServer {
  readonly issuer: string;
  readonly caPath: string;
  readonly port: number;
  readonly pushes: RecordedPush[] = [];
  readonly streams: CreatedStream[] = [];
  readonly verifications: { stream_id: string; state?: string }[] = [];
  readonly polls: PollRequest[] = [];
  /** SETs waiting for the hub's next poll, per stream. */
  readonly pollQueue = new Map<string, Map<string, string>>();
  /** Keys served at /jwks (the plan changes this to rotate keys). */
  jwks: SetKey[] = [newSetKey('RS256')];
  jwksFetches = 0;
  answer: (push: { path: string; body: string }) => PushAnswer = () => ({ status: 202 });
  readonly #server: https.Server;
  readonly #dir: string;
  readonly #waiters = new Set<() => void>();

  private constructor(server: https.Server, dir: string, caPath: string, port: number) {
    this.#server = server;
    this.#dir = dir;
    this.caPath = caPath;
    this.port = port;
    this.issuer = `https://localhost:${port}`;
  }

  static async start(): Promise<PeerServer> {
    const dir = mkdtempSync(path.join(tmpdir(), 'kakehashi-peer-'));
    const tls = await ensureDevTls(dir, ['localhost']);
    let self: PeerServer | undefined;
    const server = https.createServer({ cert: tls.certPem, key: tls.keyPem }, (req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => self!.handle(req, res, Buffer.concat(chunks).toString('utf8')));
    });
    server.keepAliveTimeout = 5000;
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as AddressInfo;
    self = new PeerServer(server, dir, tls.caPath, port);
    return self;
  }

  /** Resolves when `predicate` holds, checking after every request (and at least every 100 ms). */
  async waitFor<T>(
    predicate: () => T | undefined | false,
    timeoutMs = 10_000,
    what = 'condition',
  ): Promise<T> {
    const end = Date.now() + timeoutMs;
    for (;;) {
      const v = predicate();
      if (v) return v;
      if (Date.now() > end) throw new Error(`peer server: timed out waiting for ${what}`);
      await new Promise<void>((resolve) => {
        const done = () => {
          this.#waiters.delete(done);
          clearTimeout(t);
          resolve();
        };
        const t = setTimeout(done, 100);
        this.#waiters.add(done);
      });
    }
  }

  pushesTo(name: string): RecordedPush[] {
    return this.pushes.filter((p) => p.path === `/push/${name}`);
  }

  /** Queues a SET for the hub's next poll of a stream. */
  queueForPoll(streamId: string, jti: string, set: string): void {
    let q = this.pollQueue.get(streamId);
    if (!q) {
      q = new Map();
      this.pollQueue.set(streamId, q);
    }
    q.set(jti, set);
  }

  #notify(): void {
    for (const w of [...this.#waiters]) w();
  }

  private handle(
    req: import('node:http').IncomingMessage,
    res: import('node:http').ServerResponse,
    body: string,
  ): undefined {
    const url = new URL(req.url ?? '/', this.issuer);
    const json = (status: number, value: unknown, headers: Record<string, string> = {}): undefined => {
      res.writeHead(status, { 'content-type': 'application/json', ...headers });
      res.end(JSON.stringify(value));
      this.#notify();
    };
    const parsed = () => {
      try {
        return JSON.parse(body) as Record<string, unknown>;
      } catch {
        return {};
      }
    };
    const p = url.pathname;
    if (p.startsWith('/push/')) {
      const a = this.answer({ path: p, body });
      const record = (status: number) =>
        this.pushes.push({ at: Date.now(), path: p, headers: { ...req.headers }, body, status });
      if ('drop' in a) {
        record(0);
        req.socket.destroy();
        this.#notify();
        return;
      }
      if ('hang' in a) {
        setTimeout(() => {
          record(202);
          res.writeHead(202);
          res.end();
          this.#notify();
        }, a.hang);
        return;
      }
      record(a.status);
      if (a.body) json(a.status, a.body, a.headers);
      else {
        res.writeHead(a.status, a.headers);
        res.end();
        this.#notify();
      }
      return;
    }
    if (p === '/.well-known/ssf-configuration')
      return json(200, {
        spec_version: '1_0',
        issuer: this.issuer,
        jwks_uri: `${this.issuer}/jwks`,
        delivery_methods_supported: ['urn:ietf:rfc:8935', 'urn:ietf:rfc:8936'],
        configuration_endpoint: `${this.issuer}/stream`,
        status_endpoint: `${this.issuer}/status`,
        verification_endpoint: `${this.issuer}/verify`,
        authorization_schemes: [{ spec_urn: 'urn:ietf:rfc:6749' }],
      });
    if (p === '/.well-known/openid-configuration')
      return json(200, { issuer: this.issuer, token_endpoint: `${this.issuer}/token` });
    if (p === '/jwks') {
      this.jwksFetches++;
      return json(200, { keys: this.jwks.map((k) => k.publicJwk) });
    }
    if (p === '/token') {
      const form = new URLSearchParams(body);
      if (form.get('grant_type') !== 'client_credentials' || !form.get('client_assertion'))
        return json(400, { error: 'invalid_request' });
      return json(200, {
        access_token: randomBytes(16).toString('hex'),
        token_type: 'Bearer',
        expires_in: 600,
      });
    }
    if (p === '/stream' && req.method === 'POST') {
      const b = parsed();
      const stream_id = randomUUID();
      const delivery = (b.delivery ?? { method: 'urn:ietf:rfc:8936' }) as Record<string, unknown>;
      const method = delivery.method === 'urn:ietf:rfc:8935' ? 'urn:ietf:rfc:8935' : 'urn:ietf:rfc:8936';
      this.streams.push({
        stream_id,
        body: b,
        authorization:
          typeof delivery.authorization_header === 'string' ? delivery.authorization_header : undefined,
      });
      return json(201, {
        stream_id,
        iss: this.issuer,
        aud: 'kakehashi-under-test',
        delivery:
          method === 'urn:ietf:rfc:8935'
            ? { method, endpoint_url: delivery.endpoint_url }
            : { method, endpoint_url: `${this.issuer}/poll/${stream_id}` },
        events_delivered: b.events_requested ?? [],
      });
    }
    if (p === '/stream' && req.method === 'GET') {
      const s = this.streams.find((x) => x.stream_id === url.searchParams.get('stream_id'));
      if (!s) return json(404, { error: 'not_found' });
      const delivery = (s.body.delivery ?? { method: 'urn:ietf:rfc:8936' }) as Record<string, unknown>;
      return json(200, { stream_id: s.stream_id, iss: this.issuer, aud: 'kakehashi-under-test', delivery });
    }
    if (p === '/verify') {
      const b = parsed();
      this.verifications.push({
        stream_id: String(b.stream_id),
        ...(typeof b.state === 'string' ? { state: b.state } : {}),
      });
      res.writeHead(204);
      res.end();
      this.#notify();
      return;
    }
    if (p.startsWith('/poll/')) {
      const streamId = p.slice('/poll/'.length);
      const b = parsed();
      this.polls.push({ streamId, body: b });
      const q = this.pollQueue.get(streamId) ?? new Map<string, string>();
      const sets: Record<string, string> = {};
      for (const [jti, set] of q) sets[jti] = set;
      q.clear();
      const respond = () => json(200, { sets });
      // Long poll: answer at once only when there is something, else after a short while.
      if (Object.keys(sets).length || b.returnImmediately === true) return respond();
      setTimeout(respond, 300);
      return;
    }
    json(404, { error: 'not_found' });
  }

  async close(): Promise<void> {
    await new Promise<void>((resolve) => {
      this.#server.close(() => resolve());
      this.#server.closeAllConnections();
    });
    rmSync(this.#dir, { recursive: true, force: true });
  }
}
