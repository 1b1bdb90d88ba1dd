/**
 * A peer managing its streams at the hub under test, as a real SSF receiver would: an OAuth client
 * (private_key_jwt, ES256) that gets client-credentials tokens from the hub's token endpoint,
 * DPoP-bound by default, and calls the SSF endpoints with them.
 */
import { createHash, generateKeyPairSync, type KeyObject, randomUUID, sign } from 'node:crypto';

export interface HubHttp {
  issuer: string;
  fetch: typeof globalThis.fetch;
}

export interface Reply {
  status: number;
  headers: Headers;
  text: string;
  body: unknown;
}

export interface PeerClientKey {
  clientId: string;
  kid: string;
  privateKey: KeyObject;
  publicJwk: Record<string, unknown>;
}

export function newPeerClientKey(clientId: string): PeerClientKey {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const kid = `k-${randomUUID()}`;
  return {
    clientId,
    kid,
    privateKey,
    publicJwk: { ...publicKey.export({ format: 'jwk' }), kid, alg: 'ES256', use: 'sig' },
  };
}

const b64 = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url');
function es256(header: Record<string, unknown>, claims: Record<string, unknown>, key: KeyObject): string {
  const input = `${b64(header)}.${b64(claims)}`;
  return `${input}.${sign('sha256', Buffer.from(input), { key, dsaEncoding: 'ieee-p1363' }).toString('base64url')}`;
}

export interface Token {
  value: string;
  type: string;
  scope: string;
}

export class SsfManager {
  readonly hub: HubHttp;
  readonly client: PeerClientKey;
  readonly #dpop = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  readonly #dpopJwk: Record<string, unknown>;
  #metadata: Record<string, unknown> | undefined;
  token: Token | undefined;

  constructor(hub: HubHttp, client: PeerClientKey) {
    this.hub = hub;
    this.client = client;
    const { kty, crv, x, y } = this.#dpop.publicKey.export({ format: 'jwk' });
    this.#dpopJwk = { kty, crv, x, y };
  }

  async request(
    url: string,
    o: { method?: string; headers?: Record<string, string>; body?: unknown; raw?: string } = {},
  ): Promise<Reply> {
    const res = await this.hub.fetch(url, {
      method: o.method ?? 'GET',
      headers: {
        accept: 'application/json',
        ...(o.body !== undefined || o.raw !== undefined ? { 'content-type': 'application/json' } : {}),
        ...o.headers,
      },
      ...(o.raw !== undefined
        ? { body: o.raw }
        : o.body !== undefined
          ? { body: JSON.stringify(o.body) }
          : {}),
    });
    const text = await res.text();
    let body: unknown;
    try {
      body = text ? JSON.parse(text) : undefined;
    } catch {
      body = undefined;
    }
    return { status: res.status, headers: res.headers, text, body };
  }

  async metadata(): Promise<Record<string, unknown>> {
    this.#metadata ??= (await this.request(`${this.hub.issuer}/.well-known/ssf-configuration`))
      .body as Record<string, unknown>;
    return this.#metadata;
  }

  endpoint(
    name: 'configuration' | 'status' | 'verification' | 'add_subject' | 'remove_subject',
  ): Promise<string> {
    return this.metadata().then((m) => String(m[`${name}_endpoint`]));
  }

  proof(method: string, url: string, accessToken?: string): string {
    const u = new URL(url);
    return es256(
      { typ: 'dpop+jwt', alg: 'ES256', jwk: this.#dpopJwk },
      {
        jti: randomUUID(),
        htm: method,
        htu: `${u.origin}${u.pathname}`,
        iat: Math.floor(Date.now() / 1000),
        ...(accessToken ? { ath: createHash('sha256').update(accessToken).digest('base64url') } : {}),
      },
      this.#dpop.privateKey,
    );
  }

  /** A client-credentials token request; `dpop: false` asks for a bearer token. */
  async requestToken(scope: string, o: { dpop?: boolean; resource?: string } = {}): Promise<Reply> {
    const discovery = (await this.request(`${this.hub.issuer}/.well-known/openid-configuration`))
      .body as Record<string, string>;
    const tokenEndpoint = discovery.token_endpoint!;
    const now = Math.floor(Date.now() / 1000);
    const assertion = es256(
      { alg: 'ES256', kid: this.client.kid },
      {
        iss: this.client.clientId,
        sub: this.client.clientId,
        aud: this.hub.issuer,
        iat: now,
        exp: now + 60,
        jti: randomUUID(),
      },
      this.client.privateKey,
    );
    const form = new URLSearchParams({
      grant_type: 'client_credentials',
      scope,
      client_id: this.client.clientId,
      client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
      client_assertion: assertion,
      ...(o.resource ? { resource: o.resource } : {}),
    });
    const res = await this.hub.fetch(tokenEndpoint, {
      method: 'POST',
      headers: {
        'content-type': 'application/x-www-form-urlencoded',
        accept: 'application/json',
        ...(o.dpop === false ? {} : { dpop: this.proof('POST', tokenEndpoint) }),
      },
      body: form.toString(),
    });
    const text = await res.text();
    return { status: res.status, headers: res.headers, text, body: text ? JSON.parse(text) : undefined };
  }

  async authorize(scope = 'ssf.manage ssf.read', o: { dpop?: boolean } = {}): Promise<Token> {
    const res = await this.requestToken(scope, o);
    const b = res.body as Record<string, unknown> | undefined;
    if (res.status !== 200 || typeof b?.access_token !== 'string')
      throw new Error(`token request failed: HTTP ${res.status} ${res.text.slice(0, 200)}`);
    this.token = { value: b.access_token, type: String(b.token_type), scope: String(b.scope ?? '') };
    return this.token;
  }

  /** Headers that present `token` (default: ours) for a call. */
  auth(method: string, url: string, token: Token | undefined): Record<string, string> {
    if (!token) return {};
    if (token.type.toLowerCase() === 'dpop')
      return { authorization: `DPoP ${token.value}`, dpop: this.proof(method, url, token.value) };
    return { authorization: `Bearer ${token.value}` };
  }

  /** An authorized SSF call. */
  async call(
    method: string,
    url: string,
    body?: unknown,
    o: { token?: Token | null; raw?: string } = {},
  ): Promise<Reply> {
    const token = o.token === null ? undefined : (o.token ?? this.token);
    return this.request(url, {
      method,
      headers: this.auth(method, url, token),
      ...(body !== undefined ? { body } : {}),
      ...(o.raw !== undefined ? { raw: o.raw } : {}),
    });
  }

  async createStream(config: Record<string, unknown>): Promise<Reply> {
    return this.call('POST', await this.endpoint('configuration'), config);
  }

  async readStream(streamId?: string): Promise<Reply> {
    const url = new URL(await this.endpoint('configuration'));
    if (streamId) url.searchParams.set('stream_id', streamId);
    return this.call('GET', url.href);
  }

  async deleteStream(streamId: string): Promise<Reply> {
    const url = new URL(await this.endpoint('configuration'));
    url.searchParams.set('stream_id', streamId);
    return this.call('DELETE', url.href);
  }

  async setStatus(streamId: string, status: string, reason?: string): Promise<Reply> {
    return this.call('POST', await this.endpoint('status'), {
      stream_id: streamId,
      status,
      ...(reason ? { reason } : {}),
    });
  }

  async readStatus(streamId: string): Promise<Reply> {
    const url = new URL(await this.endpoint('status'));
    url.searchParams.set('stream_id', streamId);
    return this.call('GET', url.href);
  }

  async verify(streamId: string, state?: string): Promise<Reply> {
    return this.call('POST', await this.endpoint('verification'), {
      stream_id: streamId,
      ...(state ? { state } : {}),
    });
  }

  async poll(pollUrl: string, body: Record<string, unknown>): Promise<Reply> {
    return this.call('POST', pollUrl, body);
  }
}
