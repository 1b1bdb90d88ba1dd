/**
 * Outgoing HTTP to peers (pushes, JWKS, stream management at their transmitters) over node:https
 * with one keep-alive agent per peer: connections are reused across a batch of pushes, and each
 * peer's agent trusts the system store plus the CA the peer's configuration names.
 */
import { readFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import type { LookupFunction } from 'node:net';
import { createSecureContext, rootCertificates } from 'node:tls';
import type { PeerConfig } from '../config/index.ts';

export interface HttpResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

export interface RequestOptions {
  method?: string;
  headers?: Record<string, string>;
  body?: string;
  timeoutMs?: number;
  /**
   * Bodies above this are cut off and the connection closed (responses from peers are small JSON
   * documents): the rest is never read.
   */
  maxBodyBytes?: number;
  /**
   * Longest the whole exchange may take, body included (`timeoutMs` alone bounds only the silence
   * between packets: a peer trickling bytes would hold the request forever).
   */
  deadlineMs?: number;
  /** Resolves host names for new connections (e.g. refusing non-public addresses). */
  lookup?: LookupFunction;
}

export class PeerAgents {
  readonly #agents = new Map<string, https.Agent>();
  readonly #plain = new http.Agent({ keepAlive: true, maxSockets: 256 });
  readonly #maxSockets: number;

  constructor(maxSockets = 64) {
    this.#maxSockets = maxSockets;
  }

  /** The agent for a peer (its CA trusted), or the default one. The CA file is read on first use. */
  agent(peer: Pick<PeerConfig, 'id' | 'caFile'> | undefined): https.Agent {
    const key = peer?.id ?? '';
    let agent = this.#agents.get(key);
    if (!agent) {
      const ca = peer?.caFile ? [...rootCertificates, readFileSync(peer.caFile, 'utf8')] : undefined;
      // A secure context rather than a `ca` option: https.Agent puts `ca` (every root certificate)
      // into the pool key it rebuilds for every request, which cost more CPU than the rest of a push.
      const secureContext = createSecureContext({ minVersion: 'TLSv1.2', ...(ca ? { ca } : {}) });
      agent = new https.Agent({ keepAlive: true, maxSockets: this.#maxSockets, secureContext });
      this.#agents.set(key, agent);
    }
    return agent;
  }

  request(url: string | URL, agent: https.Agent, o: RequestOptions = {}): Promise<HttpResponse> {
    const target = typeof url === 'string' ? new URL(url) : url;
    const isHttps = target.protocol === 'https:';
    const mod = isHttps ? https : http;
    const limit = o.maxBodyBytes ?? 1024 * 1024;
    return new Promise((resolve, reject) => {
      let deadline: NodeJS.Timeout | undefined;
      const settle = () => clearTimeout(deadline);
      const req = mod.request(
        target,
        {
          method: o.method ?? 'GET',
          headers: {
            ...(o.body !== undefined ? { 'content-length': String(Buffer.byteLength(o.body)) } : {}),
            ...o.headers,
          },
          agent: isHttps ? agent : this.#plain,
          timeout: o.timeoutMs ?? 10_000,
          ...(o.lookup ? { lookup: o.lookup } : {}),
        },
        (res) => {
          const chunks: Buffer[] = [];
          let size = 0;
          const done = () => {
            settle();
            resolve({
              status: res.statusCode ?? 0,
              headers: res.headers,
              body: Buffer.concat(chunks).toString('utf8'),
            });
          };
          res.on('data', (c: Buffer) => {
            if (size + c.length > limit) {
              chunks.push(c.subarray(0, limit - size));
              size = limit;
              done();
              // Nothing more is read: the connection goes (it cannot be reused mid-body).
              res.destroy();
              return;
            }
            size += c.length;
            chunks.push(c);
          });
          res.on('end', done);
          res.on('error', (err) => {
            settle();
            reject(err);
          });
        },
      );
      if (o.deadlineMs !== undefined)
        deadline = setTimeout(
          () => req.destroy(new Error(`no complete answer within ${o.deadlineMs} ms`)),
          o.deadlineMs,
        );
      req.on('timeout', () => req.destroy(new Error(`timeout after ${o.timeoutMs ?? 10_000} ms`)));
      req.on('error', (err) => {
        settle();
        reject(err);
      });
      if (o.body !== undefined) req.write(o.body);
      req.end();
    });
  }

  close(): void {
    for (const a of this.#agents.values()) a.destroy();
    this.#agents.clear();
    this.#plain.destroy();
  }
}

export function parseJsonObject(text: string): Record<string, unknown> | undefined {
  try {
    const v: unknown = JSON.parse(text);
    return v && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}
