/**
 * What the signals module needs at run time, built once per hub node by createSignals: the
 * configuration, keys, peers by id / client / issuer, outgoing HTTP agents and the peer JWKS cache.
 */
import { randomBytes } from 'node:crypto';
import type { Config, PeerConfig, SignalsConfig } from '../config/index.ts';
import type { Db } from '../db/index.ts';
import type { Logger } from '../log.ts';
import { PeerAgents } from './http.ts';
import type { SsfKeys } from './keys.ts';
import { LongPolls } from './poll.ts';

/** The resource indicator (RFC 8707) of the SSF management API: client-credentials tokens name it as `aud`. */
export const ssfResource = (issuer: string) => `${issuer}/ssf`;

export const SSF_SCOPES = ['ssf.manage', 'ssf.read'] as const;

export interface SignalsContext {
  db: Db;
  config: Config;
  signals: SignalsConfig;
  issuer: string;
  keys: SsfKeys;
  kek: Buffer;
  logger: Logger;
  agents: PeerAgents;
  peers: {
    byId: Map<string, PeerConfig>;
    byClient: Map<string, PeerConfig>;
    byIssuer: Map<string, PeerConfig>;
  };
  /** Names this node in stream leases. */
  nodeId: string;
  /** Bounds the pushes in flight on this node, across all streams. */
  pushSlots: Semaphore;
  /** Deliveries under way on this node (they share `pushSlots`); the worker keeps the set. */
  deliveries: ReadonlySet<unknown>;
  /** Poll requests waiting on this node (bounded; woken by this node's fan-out). */
  longPolls: LongPolls;
}

/** A counting semaphore: at most `limit` holders at once, others wait in line. */
export class Semaphore {
  #free: number;
  readonly #waiting: (() => void)[] = [];

  constructor(limit: number) {
    this.#free = limit;
  }

  async acquire(): Promise<void> {
    if (this.#free > 0) {
      this.#free--;
      return;
    }
    await new Promise<void>((resolve) => this.#waiting.push(resolve));
  }

  release(): void {
    const next = this.#waiting.shift();
    if (next) next();
    else this.#free++;
  }
}

export function createSignalsContext(o: {
  db: Db;
  config: Config;
  keys: SsfKeys;
  kek: Buffer;
  logger: Logger;
}): SignalsContext {
  const signals = o.config.signals;
  const byId = new Map<string, PeerConfig>();
  const byClient = new Map<string, PeerConfig>();
  const byIssuer = new Map<string, PeerConfig>();
  for (const p of signals.peers) {
    byId.set(p.id, p);
    if (p.clientId) byClient.set(p.clientId, p);
    if (p.issuer) byIssuer.set(p.issuer.replace(/\/$/, ''), p);
  }
  return {
    ...o,
    signals,
    issuer: o.config.issuer,
    agents: new PeerAgents(Math.max(signals.push.concurrencyPerStream, 16)),
    peers: { byId, byClient, byIssuer },
    nodeId: `${process.pid}-${randomBytes(4).toString('hex')}`,
    pushSlots: new Semaphore(signals.push.maxInFlight),
    deliveries: new Set(),
    longPolls: new LongPolls(),
  };
}
