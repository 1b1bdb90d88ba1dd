/**
 * What the hub knows about peers as transmitters: their SSF configuration (fetched from the
 * well-known location and checked against the configured issuer) and their signing keys. An unknown
 * `kid` refetches the JWKS once (concurrent misses share one fetch), so a peer's key rotation is
 * picked up on its first SET without trusting anything the SET itself says about keys.
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
    // Only an authenticated push or our own poll gets here, so a peer can make us refetch only its own
    // keys; a JWKS fetched for this very SET is not fetched again, and concurrent misses share one fetch.
    if (!jwk && cached) {
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
