/**
 * What the hub knows about peers as transmitters: their SSF configuration (fetched from the
 * well-known location and checked against the configured issuer) and their signing keys. An unknown
 * `kid` refetches the JWKS once (concurrent misses share one fetch), so a peer's key rotation is
 * picked up on its first SET without trusting anything the SET itself says about keys — but at most
 * once per `signals.jwksRefetchMinIntervalSeconds` per peer, so SETs with made-up kids (whoever
 * sends them) cannot turn into a stream of outbound fetches.
 */
import { importJWK, type JWK } from 'jose';
import type { PeerConfig } from '../config/index.ts';
import type { SignalsContext } from './context.ts';
import { SignalsError } from './errors.ts';
import { parseJsonObject } from './http.ts';

export interface TransmitterMetadata {
  issuer: string;
  jwks_uri?: string;
  configuration_endpoint?: string;
  status_endpoint?: string;
  verification_endpoint?: string;
  add_subject_endpoint?: string;
  remove_subject_endpoint?: string;
  delivery_methods_supported?: string[];
  [k: string]: unknown;
}

/** SSF 1.0 §7.2: /.well-known/ssf-configuration inserted between host and path. */
export function ssfConfigurationUrl(issuer: string): string {
  const url = new URL(issuer);
  const path = url.pathname.replace(/\/$/, '');
  return `${url.origin}/.well-known/ssf-configuration${path === '' ? '' : path}`;
}

const METADATA_TTL_MS = 3600_000;

type Key = CryptoKey | Uint8Array;

interface JwksEntry {
  keys: JWK[];
  imported: Map<string, Key>;
}

export class PeerMetadata {
  readonly #ctx: SignalsContext;
  readonly #metadata = new Map<string, { value: TransmitterMetadata; at: number }>();
  readonly #jwks = new Map<string, JwksEntry>();
  readonly #inflight = new Map<string, Promise<JwksEntry>>();
  /** When a miss last made us refetch a peer's JWKS (ms). */
  readonly #lastRefetch = new Map<string, number>();

  constructor(ctx: SignalsContext) {
    this.#ctx = ctx;
  }

  async fetchJson(peer: PeerConfig, url: string): Promise<Record<string, unknown>> {
    let res: Awaited<ReturnType<SignalsContext['agents']['request']>>;
    try {
      res = await this.#ctx.agents.request(url, this.#ctx.agents.agent(peer), {
        headers: { accept: 'application/json' },
        timeoutMs: 10_000,
      });
    } catch (err) {
      throw new SignalsError('ERR_SSF_PEER_UNREACHABLE', `${peer.id}: ${url}: ${(err as Error).message}`, {
        cause: err,
      });
    }
    const body = parseJsonObject(res.body);
    if (res.status !== 200 || !body)
      throw new SignalsError('ERR_SSF_PEER_RESPONSE', `${peer.id}: ${url} answered HTTP ${res.status}`);
    return body;
  }

  /** The peer's transmitter configuration; its `issuer` must be the configured one (SSF 1.0 §7.2.3). */
  async transmitter(peer: PeerConfig, fresh = false): Promise<TransmitterMetadata> {
    if (!peer.issuer) throw new SignalsError('ERR_SSF_CONFIG', `peer ${peer.id} has no issuer`);
    const cached = this.#metadata.get(peer.id);
    if (cached && !fresh && Date.now() - cached.at < METADATA_TTL_MS) return cached.value;
    const body = await this.fetchJson(peer, ssfConfigurationUrl(peer.issuer));
    if (body.issuer !== peer.issuer)
      throw new SignalsError(
        'ERR_SSF_PEER_RESPONSE',
        `${peer.id}: ssf-configuration names issuer ${String(body.issuer)}`,
      );
    const value = body as TransmitterMetadata;
    this.#metadata.set(peer.id, { value, at: Date.now() });
    return value;
  }

  async #loadJwks(peer: PeerConfig): Promise<JwksEntry> {
    const running = this.#inflight.get(peer.id);
    if (running) return running;
    const p = (async () => {
      const uri = peer.jwksUri ?? (await this.transmitter(peer)).jwks_uri;
      if (!uri) throw new SignalsError('ERR_SSF_PEER_RESPONSE', `${peer.id}: no jwks_uri`);
      const body = await this.fetchJson(peer, uri);
      const keys = Array.isArray(body.keys)
        ? (body.keys.filter((k) => k && typeof k === 'object') as JWK[])
        : [];
      const entry: JwksEntry = { keys, imported: new Map() };
      this.#jwks.set(peer.id, entry);
      return entry;
    })();
    this.#inflight.set(peer.id, p);
    try {
      return await p;
    } finally {
      this.#inflight.delete(peer.id);
    }
  }

  /**
   * The peer's public key for `kid` and `alg`, refetching the JWKS once when the kid is unknown.
   * Undefined when the peer has no such key even after that.
   */
  async key(peer: PeerConfig, kid: string | undefined, alg: string): Promise<Key | undefined> {
    const cached = this.#jwks.get(peer.id);
    let entry = cached ?? (await this.#loadJwks(peer));
    let jwk = pick(entry.keys, kid, alg);
    // A JWKS fetched for this very SET is not fetched again, concurrent misses share one fetch, and
    // a miss refetches only if the last miss-driven refetch of this peer is old enough.
    if (!jwk && cached && (this.#inflight.has(peer.id) || this.#mayRefetch(peer.id))) {
      entry = await this.#loadJwks(peer);
      jwk = pick(entry.keys, kid, alg);
    }
    if (!jwk) return undefined;
    const cacheKey = `${jwk.kid ?? ''}:${alg}`;
    let key = entry.imported.get(cacheKey);
    if (!key) {
      key = await importJWK(jwk, alg);
      entry.imported.set(cacheKey, key);
    }
    return key;
  }

  #mayRefetch(peerId: string): boolean {
    const now = Date.now();
    const last = this.#lastRefetch.get(peerId);
    if (last !== undefined && now - last < this.#ctx.signals.jwksRefetchMinIntervalSeconds * 1000) {
      this.#ctx.logger.debug(
        { peerId },
        'unknown kid: the peer JWKS was refetched too recently to fetch again',
      );
      return false;
    }
    this.#lastRefetch.set(peerId, now);
    return true;
  }
}

/** The key a JWS names: by kid when it has one, else the only signing key of that algorithm's type. */
function pick(keys: JWK[], kid: string | undefined, alg: string): JWK | undefined {
  const kty = alg.startsWith('ES') ? 'EC' : alg === 'EdDSA' ? 'OKP' : 'RSA';
  const usable = keys.filter(
    (k) =>
      k.kty === kty && (k.use === undefined || k.use === 'sig') && (k.alg === undefined || k.alg === alg),
  );
  if (kid !== undefined) return usable.find((k) => k.kid === kid);
  return usable.length === 1 ? usable[0] : undefined;
}
