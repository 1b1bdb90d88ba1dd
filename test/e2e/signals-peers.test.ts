/**
 * Two hubs as SSF peers, each the other's transmitter and receiver: a brokerage and a bank that
 * share a customer. Each subscribes at the other (push, client credentials with private_key_jwt
 * and DPoP, verification). A takeover detected at the bank ends the customer's sessions and
 * tokens at the brokerage within seconds; a passkey added at the brokerage reaches the bank as a
 * CAEP credential-change. Nothing is forwarded back to where it came from.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { clientFromFile } from '../../conformance/lib/client.ts';
import { type CheckContext, createContext, type Tokens } from '../../conformance/lib/context.ts';
import { createPasskeyUser } from '../../conformance/lib/login.ts';
import type { Target } from '../../conformance/lib/target.ts';
import { DEFAULT_VARIANT } from '../../conformance/plan.ts';
import { issueEnrollmentTicket } from '../../src/authn/index.ts';
import type { PeerConfig } from '../../src/config/index.ts';
import {
  emitSecurityEvent,
  linkCustomer,
  outgoingSubject,
  registerPeerClient,
} from '../../src/signals/index.ts';
import { ensureDevTls } from '../../src/tls/index.ts';
import { freePort, startTestHub, type TestHub } from '../support/hub.ts';
import { waitFor } from '../support/waitFor.ts';

const dirs: string[] = [];
let brokerage: TestHub;
let bank: TestHub;
let customerAtBrokerage: string;
let customerAtBank: string;

async function prepare(name: string) {
  const dir = mkdtempSync(path.join(tmpdir(), `kakehashi-${name}-`));
  dirs.push(dir);
  const tls = await ensureDevTls(dir, ['localhost']);
  const port = await freePort();
  return { dir, caPath: tls.caPath, port, issuer: `https://localhost:${port}` };
}

/** The demo aggregator and customer of a running hub, as the conformance helpers want them. */
async function asTarget(t: TestHub): Promise<Target> {
  const demo = t.hub.demo!;
  const read = (f: string) => JSON.parse(readFileSync(f, 'utf8'));
  const metadata = (await (
    await t.fetch(`${t.issuer}/.well-known/openid-configuration`)
  ).json()) as Target['metadata'];
  return {
    label: t.issuer,
    issuer: t.issuer,
    fetch: t.fetch,
    dispatcher: t.dispatcher,
    metadata,
    clients: {
      a: await clientFromFile(read(demo.clientFile)),
      b: await clientFromFile(read(path.join(path.dirname(demo.clientFile), 'aggregator-client-2.json'))),
    },
    user: createPasskeyUser({
      fetch: t.fetch,
      customerNumber: demo.customerNumber,
      ticket: async () =>
        (await issueEnrollmentTicket(t.hub.authn, { customerId: demo.customerId, issuedBy: 'operator:test' }))
          .ticket,
    }),
    codeTtl: 60,
    close: async () => {},
  };
}

const count = async (t: TestHub, sql: string, params: unknown[] = []) =>
  (await t.hub.db.query<{ n: number }>(sql, params)).rows[0]?.n ?? 0;

beforeAll(async () => {
  const b = await prepare('brokerage');
  const k = await prepare('bank');
  const signals = (
    self: string,
    other: typeof b,
    otherId: string,
  ): { workerIntervalMs: number; peers: PeerConfig[] } => ({
    workerIntervalMs: 50,
    peers: [
      {
        id: otherId,
        clientId: `ssf-${otherId}`,
        issuer: other.issuer,
        caFile: other.caPath,
        subscribe: { clientId: `ssf-${self}`, delivery: 'push' },
      },
    ],
  });
  [brokerage, bank] = await Promise.all([
    startTestHub({
      port: b.port,
      issuer: b.issuer,
      dataDir: b.dir,
      signals: signals('brokerage', k, 'bank'),
    }),
    startTestHub({
      port: k.port,
      issuer: k.issuer,
      dataDir: k.dir,
      signals: signals('bank', b, 'brokerage'),
    }),
  ]);
  // Each registers the other's client key (the operator step of onboarding a peer), then both subscribe.
  const clientJwks = async (t: TestHub) =>
    (await (await t.fetch(`${t.issuer}/ssf/client-jwks`)).json()) as { keys: Record<string, unknown>[] };
  await registerPeerClient(brokerage.hub.db, { clientId: 'ssf-bank', jwks: await clientJwks(bank) });
  await registerPeerClient(bank.hub.db, { clientId: 'ssf-brokerage', jwks: await clientJwks(brokerage) });
  brokerage.hub.signals.resubscribe();
  bank.hub.signals.resubscribe();

  // The customer links accounts: each side learns how the other names them.
  customerAtBrokerage = brokerage.hub.demo!.customerId;
  customerAtBank = bank.hub.demo!.customerId;
  const atBank = await linkCustomer(bank.hub.db, { peerId: 'brokerage', customerId: customerAtBank });
  const atBrokerage = await linkCustomer(brokerage.hub.db, {
    peerId: 'bank',
    customerId: customerAtBrokerage,
    peerSubject: outgoingSubject(bank.issuer, atBank),
  });
  await linkCustomer(bank.hub.db, {
    peerId: 'brokerage',
    customerId: customerAtBank,
    peerSubject: outgoingSubject(brokerage.issuer, atBrokerage),
  });
  const verified = (t: TestHub) =>
    waitFor(
      'a verified subscription',
      async () =>
        (await count(t, 'SELECT count(*)::int AS n FROM ssf_subscriptions WHERE verified_at IS NOT NULL')) ===
        1,
    );
  await Promise.all([verified(brokerage), verified(bank)]);
}, 90_000);

afterAll(async () => {
  await brokerage?.close();
  await bank?.close();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

describe('brokerage and bank as SSF peers', () => {
  let ctx: CheckContext;
  let tokens: Tokens;

  it('each holds a verified push stream at the other, created with its own client-credentials token', async () => {
    for (const [t, peer] of [
      [brokerage, bank],
      [bank, brokerage],
    ] as const) {
      const sub = (await t.hub.db.query<{ stream_id: string }>('SELECT stream_id FROM ssf_subscriptions'))
        .rows[0]!;
      const stream = await peer.hub.db.query<{ endpoint_url: string; delivery_method: string }>(
        'SELECT endpoint_url, delivery_method FROM ssf_streams WHERE stream_id = $1',
        [sub.stream_id],
      );
      expect(stream.rows[0]).toMatchObject({
        delivery_method: 'urn:ietf:rfc:8935',
        endpoint_url: expect.stringContaining(`${t.issuer}/ssf/receive/`),
      });
    }
  });

  it("a takeover detected at the bank revokes the customer's sessions and tokens at the brokerage within seconds", async () => {
    ctx = createContext(await asTarget(brokerage), DEFAULT_VARIANT);
    tokens = await ctx.tokens();
    expect((await ctx.resource(tokens)).status).toBe(200);
    const sessions = () =>
      count(
        brokerage,
        "SELECT count(*)::int AS n FROM oidc_payloads WHERE model = 'Session' AND payload->>'accountId' = $1",
        [customerAtBrokerage],
      );
    expect(await sessions()).toBeGreaterThan(0);

    const started = Date.now();
    const txn = `takeover-${started}`;
    await bank.hub.db.transaction(async (tx) => {
      await emitSecurityEvent(tx, {
        type: 'account-disabled',
        reason: 'hijacking',
        customerId: customerAtBank,
        txn,
        initiatingEntity: 'policy',
      });
      await emitSecurityEvent(tx, {
        type: 'session-revoked',
        customerId: customerAtBank,
        txn,
        reasonAdmin: 'account takeover',
      });
    });
    await waitFor(
      'the access token to be rejected at the brokerage',
      async () => (await ctx.resource(tokens)).status === 401,
      10_000,
    );
    const elapsed = Date.now() - started;
    expect(elapsed).toBeLessThan(5000);
    console.info(`takeover → brokerage token rejected after ${elapsed} ms`);
    expect(await sessions()).toBe(0);
    const refreshed = await ctx.refresh(tokens);
    expect(refreshed.status).toBe(400);
    expect(refreshed.body?.error).toBe('invalid_grant');

    const audit = await brokerage.hub.db.query<{ type: string; data: Record<string, unknown> }>(
      "SELECT type, data FROM audit_events WHERE customer_id = $1 AND type LIKE 'ssf.%' AND data->>'txn' = $2 ORDER BY id",
      [customerAtBrokerage, txn],
    );
    const types = audit.rows.map((r) => r.type);
    expect(types).toContain('ssf.set.received');
    expect(types.filter((t) => t === 'ssf.action.revoke_sessions')).toHaveLength(1);
    const revoked = audit.rows.find((r) => r.type === 'ssf.action.revoke_sessions')!.data;
    expect(revoked.sessions).toBeGreaterThan(0);
    expect(revoked.grants).toBeGreaterThan(0);
    // Forwarding stops at the origin: the brokerage's only other peer is the bank, which sent it.
    await new Promise((r) => setTimeout(r, 500));
    expect(await count(bank, 'SELECT count(*)::int AS n FROM ssf_received WHERE txn = $1', [txn])).toBe(0);
  });

  it('a passkey added at the brokerage reaches the bank as a CAEP credential-change about its own customer', async () => {
    const { txn } = await emitSecurityEvent(brokerage.hub.db, {
      type: 'credential-change',
      customerId: customerAtBrokerage,
      credentialType: 'fido2-platform',
      changeType: 'create',
      initiatingEntity: 'user',
    });
    const row = await waitFor(
      'the bank to receive it',
      async () =>
        (
          await bank.hub.db.query<{ customer_id: string; event_type: string; actions: string[] }>(
            'SELECT customer_id, event_type, actions FROM ssf_received WHERE txn = $1',
            [txn],
          )
        ).rows[0],
    );
    expect(row.customer_id).toBe(customerAtBank);
    expect(row.event_type).toBe('https://schemas.openid.net/secevent/caep/event-type/credential-change');
    expect(row.actions).toEqual(['raise_risk', 'notify']);
    expect(await count(bank, 'SELECT count(*)::int AS n FROM ssf_action_outbox WHERE txn = $1', [txn])).toBe(
      2,
    );
  });
});
