/**
 * The hub as a receiver of peers' transmitters: for every peer with `subscribe`, keep a stream
 * there (created with our push endpoint and a fresh Authorization value, or poll), verify it, and
 * for poll streams fetch, acknowledge and report errors. Calls to the peer carry client-credentials
 * tokens obtained with private_key_jwt (our /ssf/client-jwks key) and DPoP.
 */
import { createHash, generateKeyPairSync, type KeyObject, randomBytes, randomUUID } from 'node:crypto';
import { recordAudit } from '../audit/index.ts';
import type { PeerConfig } from '../config/index.ts';
import type { SignalsContext } from './context.ts';
import { SetRejected, SignalsError } from './errors.ts';
import { parseJsonObject } from './http.ts';
import { signJws } from './jws.ts';
import type { PeerMetadata } from './peerMetadata.ts';
import { processSet, verifySet } from './receiver.ts';
import { POLL, PUSH, TRANSMITTED_EVENTS } from './vocabulary.ts';

interface Token {
  value: string;
  type: 'Bearer' | 'DPoP';
  expiresAt: number;
}

export interface Subscription {
  peerId: string;
  streamId: string;
  deliveryMethod: string;
  pollEndpoint: string | null;
}

/** One ES256 DPoP key per node for calls to peers (tokens are bound to it). */
function dpopKey(): { key: KeyObject; jwk: Record<string, unknown> } {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const { kty, crv, x, y } = publicKey.export({ format: 'jwk' });
  return { key: privateKey, jwk: { kty, crv, x, y } };
}

export class Subscriber {
  readonly #ctx: SignalsContext;
  readonly #metadata: PeerMetadata;
  readonly #tokens = new Map<string, Token>();
  readonly #nonces = new Map<string, string>();
  readonly #dpop = dpopKey();

  constructor(ctx: SignalsContext, metadata: PeerMetadata) {
    this.#ctx = ctx;
    this.#metadata = metadata;
  }

  async #proof(method: string, url: string, accessToken?: string): Promise<string> {
    const u = new URL(url);
    const nonce = this.#nonces.get(u.origin);
    return signJws(
      { typ: 'dpop+jwt', alg: 'ES256', jwk: this.#dpop.jwk },
      {
        jti: randomUUID(),
        htm: method,
        htu: `${u.origin}${u.pathname}`,
        iat: Math.floor(Date.now() / 1000),
        ...(accessToken ? { ath: createHash('sha256').update(accessToken).digest('base64url') } : {}),
        ...(nonce ? { nonce } : {}),
      },
      { kid: 'dpop', alg: 'ES256', key: this.#dpop.key },
    );
  }

  async #send(
    peer: PeerConfig,
    url: string,
    o: { method: string; headers: Record<string, string>; body?: string; timeoutMs?: number },
  ) {
    try {
      return await this.#ctx.agents.request(url, this.#ctx.agents.agent(peer), o);
    } catch (err) {
      throw new SignalsError('ERR_SSF_PEER_UNREACHABLE', `${peer.id}: ${url}: ${(err as Error).message}`, {
        cause: err,
      });
    }
  }

  /** A client-credentials token from the peer, cached until shortly before it expires. */
  async token(peer: PeerConfig, fresh = false): Promise<Token> {
    const cached = this.#tokens.get(peer.id);
    if (cached && !fresh && cached.expiresAt > Date.now() + 30_000) return cached;
    const sub = peer.subscribe;
    if (!sub || !peer.issuer)
      throw new SignalsError('ERR_SSF_CONFIG', `peer ${peer.id} has no subscribe configuration`);
    const as = await this.#metadata.fetchJson(peer, `${peer.issuer}/.well-known/openid-configuration`);
    const endpoint = as.token_endpoint;
    if (typeof endpoint !== 'string')
      throw new SignalsError('ERR_SSF_PEER_RESPONSE', `${peer.id}: no token_endpoint`);
    for (let attempt = 0; attempt < 2; attempt++) {
      const now = Math.floor(Date.now() / 1000);
      const assertion = await signJws(
        { alg: 'ES256', kid: this.#ctx.keys.client.kid },
        {
          iss: sub.clientId,
          sub: sub.clientId,
          aud: peer.issuer,
          iat: now,
          exp: now + 60,
          jti: randomUUID(),
        },
        this.#ctx.keys.client,
      );
      const res = await this.#send(peer, endpoint, {
        method: 'POST',
        headers: {
          'content-type': 'application/x-www-form-urlencoded',
          accept: 'application/json',
          dpop: await this.#proof('POST', endpoint),
        },
        body: new URLSearchParams({
          grant_type: 'client_credentials',
          scope: 'ssf.manage ssf.read',
          client_id: sub.clientId,
          client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
          client_assertion: assertion,
        }).toString(),
      });
      const body = parseJsonObject(res.body);
      if (this.#rememberNonce(endpoint, res.headers['dpop-nonce']) && body?.error === 'use_dpop_nonce')
        continue;
      if (res.status !== 200 || typeof body?.access_token !== 'string')
        throw new SignalsError(
          'ERR_SSF_PEER_RESPONSE',
          `${peer.id}: token endpoint answered HTTP ${res.status} ${String(body?.error ?? '')}`,
        );
      const token: Token = {
        value: body.access_token,
        type: String(body.token_type).toLowerCase() === 'dpop' ? 'DPoP' : 'Bearer',
        expiresAt: Date.now() + (typeof body.expires_in === 'number' ? body.expires_in : 300) * 1000,
      };
      this.#tokens.set(peer.id, token);
      return token;
    }
    throw new SignalsError(
      'ERR_SSF_PEER_RESPONSE',
      `${peer.id}: token endpoint keeps asking for a DPoP nonce`,
    );
  }

  #rememberNonce(url: string, nonce: string | string[] | undefined): boolean {
    if (typeof nonce !== 'string') return false;
    this.#nonces.set(new URL(url).origin, nonce);
    return true;
  }

  /** A management call at the peer with our token (fresh token once on 401). */
  async call(peer: PeerConfig, method: string, url: string, body?: unknown, timeoutMs?: number) {
    for (let attempt = 0; attempt < 3; attempt++) {
      const token = await this.token(peer, attempt > 0);
      const headers: Record<string, string> = {
        accept: 'application/json',
        authorization: `${token.type} ${token.value}`,
        ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
      };
      if (token.type === 'DPoP') headers.dpop = await this.#proof(method, url, token.value);
      const res = await this.#send(peer, url, {
        method,
        headers,
        ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
        ...(timeoutMs ? { timeoutMs } : {}),
      });
      if (res.status === 401) {
        const www = String(res.headers['www-authenticate'] ?? '');
        if (this.#rememberNonce(url, res.headers['dpop-nonce']) && /use_dpop_nonce/.test(www)) continue;
        if (attempt === 0) continue;
      }
      return { status: res.status, body: parseJsonObject(res.body), text: res.body };
    }
    throw new SignalsError(
      'ERR_SSF_PEER_RESPONSE',
      `${peer.id}: ${method} ${url} kept failing authorization`,
    );
  }

  async current(peerId: string): Promise<Subscription | undefined> {
    const res = await this.#ctx.db.query<{
      stream_id: string;
      delivery_method: string;
      poll_endpoint: string | null;
    }>('SELECT stream_id, delivery_method, poll_endpoint FROM ssf_subscriptions WHERE peer_id = $1', [
      peerId,
    ]);
    const r = res.rows[0];
    return r
      ? { peerId, streamId: r.stream_id, deliveryMethod: r.delivery_method, pollEndpoint: r.poll_endpoint }
      : undefined;
  }

  /**
   * Makes sure we hold a stream at the peer: the stored one if the peer still has it with the delivery
   * we want, else a new one (the old one deleted). Then asks for a verification event.
   */
  async ensure(peer: PeerConfig): Promise<Subscription> {
    const want = peer.subscribe;
    if (!want) throw new SignalsError('ERR_SSF_CONFIG', `peer ${peer.id} has no subscribe configuration`);
    const tm = await this.#metadata.transmitter(peer);
    if (!tm.configuration_endpoint)
      throw new SignalsError('ERR_SSF_PEER_RESPONSE', `${peer.id}: no configuration_endpoint`);
    const method = want.delivery === 'poll' ? POLL : PUSH;
    const existing = await this.current(peer.id);
    if (existing) {
      const url = new URL(tm.configuration_endpoint);
      url.searchParams.set('stream_id', existing.streamId);
      const res = await this.call(peer, 'GET', url.href);
      const delivery = res.body?.delivery as { method?: string } | undefined;
      if (res.status === 200 && delivery?.method === method && existing.deliveryMethod === method)
        return existing;
      if (res.status === 200) await this.call(peer, 'DELETE', url.href);
      else if (res.status !== 404)
        throw new SignalsError(
          'ERR_SSF_PEER_RESPONSE',
          `${peer.id}: reading our stream answered HTTP ${res.status}`,
        );
    }
    const authorization = `Bearer ${randomBytes(32).toString('base64url')}`;
    const delivery =
      method === PUSH
        ? {
            method,
            endpoint_url: `${this.#ctx.issuer}/ssf/receive/${peer.id}`,
            authorization_header: authorization,
          }
        : { method };
    const created = await this.call(peer, 'POST', tm.configuration_endpoint, {
      delivery,
      events_requested: want.events ?? [...TRANSMITTED_EVENTS],
      description: `Kakehashi ${this.#ctx.issuer}`,
    });
    const b = created.body;
    if (created.status !== 201 && created.status !== 200)
      throw new SignalsError(
        'ERR_SSF_PEER_RESPONSE',
        `${peer.id}: creating a stream answered HTTP ${created.status}`,
      );
    if (!b || typeof b.stream_id !== 'string' || b.iss !== peer.issuer)
      throw new SignalsError(
        'ERR_SSF_PEER_RESPONSE',
        `${peer.id}: the created stream has no stream_id or another iss`,
      );
    const pollEndpoint =
      method === POLL
        ? String((b.delivery as { endpoint_url?: unknown } | undefined)?.endpoint_url ?? '')
        : null;
    if (method === POLL && !pollEndpoint)
      throw new SignalsError('ERR_SSF_PEER_RESPONSE', `${peer.id}: poll stream without endpoint_url`);
    const aud =
      typeof b.aud === 'string'
        ? b.aud
        : Array.isArray(b.aud) && typeof b.aud[0] === 'string'
          ? b.aud[0]
          : null;
    await this.#ctx.db.query(
      `INSERT INTO ssf_subscriptions (peer_id, stream_id, delivery_method, aud, push_auth_hash, poll_endpoint)
       VALUES ($1, $2, $3, $4, $5, $6)
       ON CONFLICT (peer_id) DO UPDATE SET stream_id = EXCLUDED.stream_id, delivery_method = EXCLUDED.delivery_method,
         aud = EXCLUDED.aud, push_auth_hash = EXCLUDED.push_auth_hash, poll_endpoint = EXCLUDED.poll_endpoint,
         status = NULL, verified_at = NULL, updated_at = now()`,
      [
        peer.id,
        b.stream_id,
        method,
        aud,
        method === PUSH ? createHash('sha256').update(authorization).digest('hex') : null,
        pollEndpoint,
      ],
    );
    await recordAudit(this.#ctx.db, {
      type: 'ssf.subscription.created',
      outcome: 'success',
      actor: 'system',
      data: { peerId: peer.id, streamId: b.stream_id, delivery: method },
    });
    const sub = { peerId: peer.id, streamId: b.stream_id, deliveryMethod: method, pollEndpoint };
    await this.requestVerification(peer, sub).catch((err: unknown) =>
      this.#ctx.logger.warn({ err, peerId: peer.id }, 'verification request failed'),
    );
    return sub;
  }

  /** Asks the peer to send a verification event with a fresh state (checked when it arrives). */
  async requestVerification(peer: PeerConfig, sub: Subscription): Promise<string> {
    const tm = await this.#metadata.transmitter(peer);
    if (!tm.verification_endpoint)
      throw new SignalsError('ERR_SSF_PEER_RESPONSE', `${peer.id}: no verification_endpoint`);
    const state = randomBytes(16).toString('base64url');
    await this.#ctx.db.query(
      'INSERT INTO ssf_verification_requests (state, peer_id, stream_id) VALUES ($1, $2, $3)',
      [state, peer.id, sub.streamId],
    );
    const res = await this.call(peer, 'POST', tm.verification_endpoint, { stream_id: sub.streamId, state });
    if (res.status !== 204 && res.status !== 200)
      throw new SignalsError('ERR_SSF_PEER_RESPONSE', `${peer.id}: verification answered HTTP ${res.status}`);
    return state;
  }

  /**
   * One poll at the peer: acknowledges and reports what the previous poll returned, takes new SETs and
   * processes each. Returns the acks and errors still owed (sent with the next poll).
   */
  async pollOnce(
    peer: PeerConfig,
    sub: Subscription,
    owed: { ack: string[]; setErrs: Record<string, { err: string; description: string }> },
    o: { maxEvents?: number; returnImmediately?: boolean; timeoutMs?: number } = {},
  ): Promise<{ received: number; moreAvailable: boolean; owed: typeof owed }> {
    if (!sub.pollEndpoint) throw new SignalsError('ERR_SSF_CONFIG', `${peer.id}: not a poll subscription`);
    const res = await this.call(
      peer,
      'POST',
      sub.pollEndpoint,
      {
        maxEvents: o.maxEvents ?? 100,
        returnImmediately: o.returnImmediately ?? false,
        ...(owed.ack.length ? { ack: owed.ack } : {}),
        ...(Object.keys(owed.setErrs).length ? { setErrs: owed.setErrs } : {}),
      },
      o.timeoutMs ?? (this.#ctx.signals.longPollSeconds + 30) * 1000,
    );
    if (res.status !== 200 || !res.body)
      throw new SignalsError('ERR_SSF_PEER_RESPONSE', `${peer.id}: poll answered HTTP ${res.status}`);
    const sets = (res.body.sets ?? {}) as Record<string, unknown>;
    const next: typeof owed = { ack: [], setErrs: {} };
    for (const [jti, value] of Object.entries(sets)) {
      if (typeof value !== 'string') {
        next.setErrs[jti] = { err: 'invalid_request', description: 'not a SET' };
        continue;
      }
      try {
        const set = await verifySet(this.#ctx, this.#metadata, peer, value);
        await processSet(this.#ctx, peer, set, 'poll');
        next.ack.push(jti);
      } catch (err) {
        if (!(err instanceof SetRejected)) throw err;
        next.setErrs[jti] = { err: err.err, description: err.message };
        await recordAudit(this.#ctx.db, {
          type: 'ssf.set.rejected',
          outcome: 'failure',
          actor: `peer:${peer.id}`,
          data: { err: err.err, reason: err.message, via: 'poll' },
        });
      }
    }
    return { received: Object.keys(sets).length, moreAvailable: res.body.moreAvailable === true, owed: next };
  }
}
