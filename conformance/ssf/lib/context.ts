/**
 * The SSF plan's target and what every check gets: an in-process hub configured with the plan's
 * fake peers, OAuth clients for those peers, a customer linked to them, and short-hand for the
 * steps checks share (a push or poll stream, an event about the customer, the SETs a push endpoint
 * received, a SET sent to the hub's receiver).
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { compactVerify, createLocalJWKSet, decodeJwt, decodeProtectedHeader, type JWTPayload } from 'jose';
import type { Hub } from '../../../src/hub.ts';
import {
  emitSecurityEvent,
  linkCustomer,
  registerPeerClient,
  type SecurityEventInput,
} from '../../../src/signals/index.ts';
import { startTestHub, type TestHub } from '../../../test/support/hub.ts';
import { CheckFailure } from '../../lib/expect.ts';
import { newPeerClientKey, type Reply, SsfManager } from './manager.ts';
import { PeerServer, type SetKey, signSet } from './peerServer.ts';

export const PUSH = 'urn:ietf:rfc:8935';
export const POLL = 'urn:ietf:rfc:8936';
export const CAEP = 'https://schemas.openid.net/secevent/caep/event-type/';
export const RISC = 'https://schemas.openid.net/secevent/risc/event-type/';
export const SSF_EVENT = 'https://schemas.openid.net/secevent/ssf/event-type/';

/** Lifetimes and intervals short enough for checks to observe retries, holds and long polls. */
export const PLAN_SIGNALS = {
  workerIntervalMs: 50,
  longPollSeconds: 2,
  pollRedeliverySeconds: 2,
  minVerificationIntervalSeconds: 1,
  // recv-key-rotation rotates 1.1 s after recv-unknown-kid's refetch.
  jwksRefetchMinIntervalSeconds: 1,
  maxStreamsPerReceiver: 500,
  push: { retryBaseMs: 200, retryMaxMs: 800, timeoutMs: 3000 },
} as const;

export interface SsfTarget {
  label: string;
  t: TestHub;
  hub: Hub;
  /** Transmitter to the hub (push subscription) and receiver of the hub's pushes. */
  peer: PeerServer;
  /** A second transmitter the hub subscribes to by poll. */
  pollPeer: PeerServer;
  customerId: string;
  /** How the fake transmitter names that customer (learnt at linking). */
  customerSubject: { format: 'iss_sub'; iss: string; sub: string };
  /** A customer linked to no peer. */
  strangerId: string;
  close(): Promise<void>;
}

export async function startSsfTarget(): Promise<SsfTarget> {
  const peer = await PeerServer.start();
  const pollPeer = await PeerServer.start();
  let t: TestHub | undefined;
  try {
    t = await startTestHub({
      signals: {
        ...PLAN_SIGNALS,
        peers: [
          {
            id: 'conformance',
            clientId: 'ssf-conformance',
            issuer: peer.issuer,
            caFile: peer.caPath,
            subscribe: { clientId: 'kakehashi-at-conformance', delivery: 'push' },
            // Forward takeovers so the plan can watch a forwarded SET (and a loop being stopped).
            actions: {
              [`${RISC}account-disabled#hijacking`]: ['revoke_sessions', 'raise_risk', 'notify', 'forward'],
            },
          },
          {
            id: 'conformance-poll',
            issuer: pollPeer.issuer,
            caFile: pollPeer.caPath,
            subscribe: { clientId: 'kakehashi-at-conformance-poll', delivery: 'poll' },
          },
          { id: 'other', clientId: 'ssf-other', caFile: peer.caPath },
          { id: 'bearer', clientId: 'ssf-bearer', caFile: peer.caPath },
        ],
      },
    });
    const hub = t.hub;
    const customerId = hub.demo!.customerId;
    const stranger = `cus_${randomBytes(8).toString('hex')}`;
    await hub.db.query(
      `INSERT INTO customers (id, institution_id, customer_number, name_kanji, name_kana)
       SELECT $1, institution_id, $2, '他人 花子', 'タニン ハナコ' FROM customers WHERE id = $3`,
      [stranger, `9${randomBytes(3).toString('hex')}`, customerId],
    );
    const customerSubject = {
      format: 'iss_sub' as const,
      iss: peer.issuer,
      sub: `peer-customer-${randomBytes(4).toString('hex')}`,
    };
    await linkCustomer(hub.db, { peerId: 'conformance', customerId, peerSubject: customerSubject });
    await linkCustomer(hub.db, { peerId: 'other', customerId });
    await linkCustomer(hub.db, { peerId: 'conformance-poll', customerId });
    return {
      label: `in-process hub ${t.issuer} (${hub.db.kind}) with fake peers ${peer.issuer}, ${pollPeer.issuer}`,
      t,
      hub,
      peer,
      pollPeer,
      customerId,
      customerSubject,
      strangerId: stranger,
      async close() {
        await t?.close();
        await peer.close();
        await pollPeer.close();
      },
    };
  } catch (err) {
    await t?.close();
    await peer.close();
    await pollPeer.close();
    throw err;
  }
}

export interface DecodedSet {
  raw: string;
  header: Record<string, unknown>;
  claims: JWTPayload & Record<string, unknown>;
}

export function decodeSet(raw: string): DecodedSet {
  return {
    raw,
    header: decodeProtectedHeader(raw) as Record<string, unknown>,
    claims: decodeJwt(raw) as DecodedSet['claims'],
  };
}

export const eventOf = (s: DecodedSet) => {
  const [type, body] = Object.entries(s.claims.events as Record<string, Record<string, unknown>>)[0]!;
  return { type, body };
};

export interface SsfCheckContext {
  target: SsfTarget;
  issuer: string;
  /** Receiver client of peer "conformance": ssf.manage + ssf.read, DPoP-bound. */
  manager: SsfManager;
  /** Another receiver (peer "other"). */
  other: SsfManager;
  /** A receiver whose client is not DPoP-bound (bearer tokens). */
  bearer: SsfManager;
  /** A read-only token of the "conformance" client. */
  readOnly(): Promise<SsfManager>;
  /** A push stream to a fresh path of the fake peer. */
  pushStream(o?: {
    authorization?: string | null;
    events?: string[];
  }): Promise<{ streamId: string; name: string; config: Record<string, unknown> }>;
  pollStream(o?: {
    events?: string[];
  }): Promise<{ streamId: string; pollUrl: string; config: Record<string, unknown> }>;
  /** Queues an event about the linked customer; resolves with its txn. */
  emit(input?: Partial<SecurityEventInput>): Promise<string>;
  /** SETs pushed to /push/<name>, decoded, once at least `n` arrived (matching `filter`). */
  pushed(
    name: string,
    n: number,
    o?: { timeoutMs?: number; filter?: (s: DecodedSet) => boolean },
  ): Promise<DecodedSet[]>;
  /** Verifies a SET's signature against the hub's published SSF JWKS. */
  verifySignature(raw: string): Promise<void>;
  /** The hub's stream at the fake transmitter (waits until the hub created it). */
  subscription(): Promise<{ streamId: string; authorization: string; endpoint: string }>;
  /** Sends a SET to the hub's push receiver for peer "conformance". */
  sendSet(o?: {
    claims?: Record<string, unknown>;
    header?: Record<string, unknown>;
    key?: SetKey;
    raw?: string;
    authorization?: string | null;
    contentType?: string;
  }): Promise<{ reply: Reply; jti: string; txn: string }>;
  /** A SET the fake transmitter would send about the linked customer. */
  setClaims(
    event: string,
    body?: Record<string, unknown>,
    extra?: Record<string, unknown>,
  ): Promise<Record<string, unknown>>;
  sleep(ms: number): Promise<void>;
}

export async function createSsfContext(target: SsfTarget): Promise<SsfCheckContext> {
  const { t, hub, peer } = target;
  const http = { issuer: t.issuer, fetch: t.fetch };
  const register = async (clientId: string, dpop: boolean) => {
    const key = newPeerClientKey(clientId);
    await registerPeerClient(hub.db, { clientId, jwks: { keys: [key.publicJwk] }, dpop });
    const m = new SsfManager(http, key);
    await m.authorize('ssf.manage ssf.read', { dpop });
    return m;
  };
  const manager = await register('ssf-conformance', true);
  const other = await register('ssf-other', true);
  const bearer = await register('ssf-bearer', false);
  const jwks = createLocalJWKSet((await manager.request(`${t.issuer}/ssf/jwks`)).body as { keys: [] });
  let pushNames = 0;

  const ctx: SsfCheckContext = {
    target,
    issuer: t.issuer,
    manager,
    other,
    bearer,
    async readOnly() {
      const m = new SsfManager(http, manager.client);
      await m.authorize('ssf.read');
      return m;
    },
    async pushStream(o = {}) {
      const name = `s${++pushNames}-${randomBytes(4).toString('hex')}`;
      const delivery: Record<string, unknown> = { method: PUSH, endpoint_url: `${peer.issuer}/push/${name}` };
      if (o.authorization !== null) delivery.authorization_header = o.authorization ?? `Bearer ${name}`;
      const res = await manager.createStream({
        delivery,
        ...(o.events ? { events_requested: o.events } : {}),
      });
      if (res.status !== 201)
        throw new CheckFailure(`creating a push stream: HTTP ${res.status} ${res.text}`);
      const config = res.body as Record<string, unknown>;
      return { streamId: String(config.stream_id), name, config };
    },
    async pollStream(o = {}) {
      const res = await manager.createStream({
        delivery: { method: POLL },
        ...(o.events ? { events_requested: o.events } : {}),
      });
      if (res.status !== 201)
        throw new CheckFailure(`creating a poll stream: HTTP ${res.status} ${res.text}`);
      const config = res.body as Record<string, unknown>;
      return {
        streamId: String(config.stream_id),
        pollUrl: String((config.delivery as { endpoint_url: string }).endpoint_url),
        config,
      };
    },
    async emit(input = {}) {
      const txn = input.txn ?? randomUUID();
      await emitSecurityEvent(hub.db, {
        type: 'credential-change',
        credentialType: 'fido2-platform',
        changeType: 'create',
        customerId: target.customerId,
        ...input,
        txn,
      } as SecurityEventInput);
      return txn;
    },
    async pushed(name, n, o = {}) {
      const filter = o.filter ?? (() => true);
      const sets = () =>
        peer
          .pushesTo(name)
          .filter((p) => p.status === 202)
          .map((p) => decodeSet(p.body))
          .filter(filter);
      await peer
        .waitFor(() => sets().length >= n, o.timeoutMs ?? 10_000, `${n} SET(s) pushed to /push/${name}`)
        .catch(() => {
          throw new CheckFailure(
            `expected ${n} SET(s) at /push/${name} within ${o.timeoutMs ?? 10_000} ms, got ${sets().length}`,
          );
        });
      return sets();
    },
    async verifySignature(raw) {
      try {
        await compactVerify(raw, jwks);
      } catch (err) {
        throw new CheckFailure(
          `SET signature does not verify with the hub's /ssf/jwks: ${(err as Error).message}`,
        );
      }
    },
    async subscription() {
      const s = await peer.waitFor(
        () => peer.streams.at(-1),
        15_000,
        'the hub to create its stream at the fake transmitter',
      );
      const delivery = s.body.delivery as { endpoint_url?: string } | undefined;
      if (!s.authorization || !delivery?.endpoint_url)
        throw new CheckFailure('the hub created a push stream without endpoint or authorization');
      return { streamId: s.stream_id, authorization: s.authorization, endpoint: delivery.endpoint_url };
    },
    async setClaims(event, body = {}, extra = {}) {
      const sub = await ctx.subscription();
      return {
        iss: peer.issuer,
        jti: randomUUID(),
        iat: Math.floor(Date.now() / 1000),
        aud: 'kakehashi-under-test',
        txn: randomUUID(),
        sub_id: { format: 'opaque', id: sub.streamId },
        events: { [event]: body },
        ...extra,
      };
    },
    async sendSet(o = {}) {
      const sub = await ctx.subscription();
      const claims =
        o.claims ?? (await ctx.setClaims(`${CAEP}session-revoked`, { reason_admin: { en: 'test' } }));
      const raw = o.raw ?? signSet(o.key ?? peer.jwks[0]!, claims, o.header);
      const headers: Record<string, string> = {
        'content-type': o.contentType ?? 'application/secevent+jwt',
        accept: 'application/json',
      };
      if (o.authorization !== null) headers.authorization = o.authorization ?? sub.authorization;
      const reply = await manager.request(sub.endpoint, { method: 'POST', headers, raw });
      return { reply, jti: String(claims.jti), txn: String(claims.txn) };
    },
    sleep: (ms) => new Promise((r) => setTimeout(r, ms)),
  };
  return ctx;
}
