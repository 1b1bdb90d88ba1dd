/**
 * The receiver after the Shared Signals security review (issue 7): pushes are accepted only with the
 * credential we handed out for a push subscription; made-up kids do not turn into JWKS fetches; a
 * disabled peer client loses the management and poll API at its next call; a SET cannot be accepted
 * again after its dedupe row is purged; a subject naming two customers names nobody.
 *
 * The peer is the hub itself under other names (its SET keys sign; its JWKS is fetched over TLS).
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { newPeerClientKey, SsfManager } from '../../conformance/ssf/lib/manager.ts';
import { setClientEnabled } from '../../src/oidc/clients.ts';
import { ssfCommand } from '../../src/signals/cli.ts';
import { EVENT, linkCustomer, registerPeerClient, SignalsError } from '../../src/signals/index.ts';
import { signJws } from '../../src/signals/jws.ts';
import { listPeerBreakers, resolvePeerBreaker } from '../../src/signals/ops.ts';
import { sha256 } from '../../src/signals/receiver.ts';
import { maintain } from '../../src/signals/worker.ts';
import { insertCustomer } from '../support/db.ts';
import { startTestHub, type TestHub } from '../support/hub.ts';

const PUSH_AUTH = `Bearer ${randomUUID()}`;
const RETENTION = 3600;
let t: TestHub;
let jwksFetches = 0;

beforeAll(async () => {
  t = await startTestHub(({ issuer, caPath }) => ({
    signals: {
      workerIntervalMs: 50,
      retentionSeconds: RETENTION,
      peers: [
        { id: 'peer', issuer, caFile: caPath, clientId: 'ssf-peer' },
        // A peer we receive from by poll: it never got a push credential from us.
        {
          id: 'pollpeer',
          issuer: 'https://poll-peer.example',
          jwksUri: `${issuer}/ssf/jwks`,
          caFile: caPath,
        },
        // A peer whose circuit breaker opens after 3 SETs acting on customers.
        {
          id: 'burst',
          issuer: 'https://burst-peer.example',
          jwksUri: `${issuer}/ssf/jwks`,
          caFile: caPath,
          circuitBreaker: { maxSetsPerWindow: 3, windowSeconds: 600 },
        },
      ],
    },
  }));
  await t.hub.db.query(
    `INSERT INTO ssf_subscriptions (peer_id, stream_id, delivery_method, push_auth_hash, poll_endpoint)
     VALUES ('peer', 'stream-at-peer', 'urn:ietf:rfc:8935', $1, NULL),
            ('pollpeer', 'stream-at-pollpeer', 'urn:ietf:rfc:8936', NULL, 'https://poll-peer.example/poll'),
            ('burst', 'stream-at-burst', 'urn:ietf:rfc:8935', $1, NULL)`,
    [sha256(PUSH_AUTH).toString('hex')],
  );
  // Counts what the receiver fetches from peers' JWKS endpoints (the request itself still goes out).
  const agents = t.hub.signals.context.agents;
  const request = agents.request.bind(agents);
  agents.request = (url, ...rest) => {
    if (new URL(url).pathname === '/ssf/jwks') jwksFetches++;
    return request(url, ...rest);
  };
});

afterAll(async () => {
  await t?.close();
});

interface SetOptions {
  iss?: string;
  jti?: string;
  txn?: string;
  iat?: number;
  kid?: string;
  subId?: Record<string, unknown>;
}

async function signSet(eventType: string, event: Record<string, unknown>, o: SetOptions = {}) {
  const key = t.hub.signals.context.keys.set.RS256;
  return signJws(
    { alg: key.alg, kid: o.kid ?? key.kid, typ: 'secevent+jwt' },
    {
      iss: o.iss ?? t.issuer,
      aud: t.issuer,
      iat: o.iat ?? Math.floor(Date.now() / 1000),
      jti: o.jti ?? randomUUID(),
      txn: o.txn ?? randomUUID(),
      sub_id: o.subId ?? { format: 'opaque', id: 'nobody' },
      events: { [eventType]: event },
    },
    key,
  );
}

async function push(peerId: string, jwt: string, authorization: string | null = PUSH_AUTH) {
  const res = await t.fetch(`${t.issuer}/ssf/receive/${peerId}`, {
    method: 'POST',
    headers: {
      'content-type': 'application/secevent+jwt',
      ...(authorization === null ? {} : { authorization }),
    },
    body: jwt,
  });
  const text = await res.text();
  return { status: res.status, body: text ? (JSON.parse(text) as Record<string, unknown>) : undefined };
}

const count = async (sql: string, params: unknown[]) =>
  (await t.hub.db.query<{ n: number }>(sql, params)).rows[0]!.n;

describe('push authentication', () => {
  it('a push for a peer we poll is refused (401 authentication_failed), with or without an Authorization header, and fetches nothing', async () => {
    const customerId = await insertCustomer(t.hub.db);
    const subject = { format: 'opaque', id: `poll-customer-${randomUUID()}` };
    await linkCustomer(t.hub.db, { peerId: 'pollpeer', customerId, peerSubject: subject as never });
    const before = jwksFetches;
    for (const authorization of [null, 'Bearer anything', '']) {
      const jwt = await signSet(
        EVENT.accountDisabled,
        { reason: 'hijacking' },
        { iss: 'https://poll-peer.example', subId: subject },
      );
      const r = await push('pollpeer', jwt, authorization);
      expect(r.status).toBe(401);
      expect(r.body).toEqual({ err: 'authentication_failed', description: expect.any(String) });
    }
    expect(await count("SELECT count(*)::int AS n FROM ssf_received WHERE peer_id = 'pollpeer'", [])).toBe(0);
    expect(
      await count('SELECT count(*)::int AS n FROM ssf_action_outbox WHERE customer_id = $1', [customerId]),
    ).toBe(0);
    expect(jwksFetches).toBe(before);
  });

  it('the push peer is still accepted with its credential, and refused without it', async () => {
    expect((await push('peer', await signSet(EVENT.sessionRevoked, {}), null)).status).toBe(401);
    expect((await push('peer', await signSet(EVENT.sessionRevoked, {}))).status).toBe(202);
  });
});

describe('JWKS refetch', () => {
  it('20 SETs with made-up kids cause at most one JWKS refetch within jwksRefetchMinIntervalSeconds', async () => {
    // The peer's JWKS is cached by the test before.
    expect((await push('peer', await signSet(EVENT.sessionRevoked, {}))).status).toBe(202);
    const before = jwksFetches;
    for (let i = 0; i < 20; i++) {
      const r = await push('peer', await signSet(EVENT.sessionRevoked, {}, { kid: `junk-${randomUUID()}` }));
      expect(r.status).toBe(400);
      expect(r.body?.err).toBe('invalid_key');
    }
    expect(jwksFetches - before).toBe(1);
    // The real key still verifies from the cache.
    expect((await push('peer', await signSet(EVENT.sessionRevoked, {}))).status).toBe(202);
    expect(jwksFetches - before).toBe(1);
  });
});

describe('management and poll of a disabled peer client', () => {
  it('stop at the next call after the client is disabled, not when the token expires', async () => {
    const key = newPeerClientKey('ssf-peer');
    await registerPeerClient(t.hub.db, { clientId: 'ssf-peer', jwks: { keys: [key.publicJwk] } });
    const m = new SsfManager({ issuer: t.issuer, fetch: t.fetch }, key);
    await m.authorize();
    const created = await m.createStream({ delivery: { method: 'urn:ietf:rfc:8936' } });
    expect(created.status).toBe(201);
    const stream = created.body as { stream_id: string; delivery: { endpoint_url: string } };
    const pollUrl = stream.delivery.endpoint_url;
    expect((await m.poll(pollUrl, { returnImmediately: true })).status).toBe(200);
    expect((await m.readStream(stream.stream_id)).status).toBe(200);

    await setClientEnabled(t.hub.db, 'ssf-peer', false, 'operator:test');
    const polled = await m.poll(pollUrl, { returnImmediately: true });
    expect(polled.status).toBe(401);
    expect(polled.body).toMatchObject({ error: 'invalid_token' });
    expect(polled.headers.get('www-authenticate')).toMatch(/^DPoP .*error="invalid_token"/);
    expect((await m.readStream(stream.stream_id)).status).toBe(401);
    expect((await m.setStatus(stream.stream_id, 'paused')).status).toBe(401);

    await setClientEnabled(t.hub.db, 'ssf-peer', true, 'operator:test');
    expect((await m.readStream(stream.stream_id)).status).toBe(200);
  });
});

describe('replays after the dedupe window', () => {
  it('a SET issued in our future keeps its jti row until its iat is too old to be accepted', async () => {
    const customerId = await insertCustomer(t.hub.db);
    const subject = { format: 'opaque', id: `replay-customer-${randomUUID()}` };
    await linkCustomer(t.hub.db, { peerId: 'peer', customerId, peerSubject: subject as never });
    const jti = randomUUID();
    // iat 290 s ahead of us: within the accepted clock skew.
    const jwt = await signSet(
      EVENT.credentialChange,
      { credential_type: 'fido2-platform', change_type: 'create' },
      { jti, subId: subject, iat: Math.floor(Date.now() / 1000) + 290 },
    );
    expect((await push('peer', jwt)).status).toBe(202);
    const actions = () => count('SELECT count(*)::int AS n FROM ssf_action_outbox WHERE jti = $1', [jti]);
    const queued = await actions();
    expect(queued).toBeGreaterThan(0);

    // retentionSeconds + 1 s later (the row made older instead of waiting): the SET's iat is still
    // inside the receiver's window, so its row must still be there…
    const age = (seconds: number) =>
      t.hub.db.query(
        `UPDATE ssf_received SET received_at = now() - make_interval(secs => $2) WHERE peer_id = 'peer' AND jti = $1`,
        [jti, seconds],
      );
    await age(RETENTION + 1);
    await maintain(t.hub.signals.context);
    expect(await count('SELECT count(*)::int AS n FROM ssf_received WHERE jti = $1', [jti])).toBe(1);
    // …and the replay is a duplicate: 202, nothing done again.
    expect((await push('peer', jwt)).status).toBe(202);
    expect(await actions()).toBe(queued);
    expect(
      await count(
        "SELECT count(*)::int AS n FROM audit_events WHERE type = 'ssf.set.duplicate' AND data->>'jti' = $1",
        [jti],
      ),
    ).toBe(1);

    // Past retention + the largest accepted future skew (300 s) the row goes.
    await age(RETENTION + 301);
    await maintain(t.hub.signals.context);
    expect(await count('SELECT count(*)::int AS n FROM ssf_received WHERE jti = $1', [jti])).toBe(0);
  });
});

describe('ambiguous subjects', () => {
  it('a subject naming two customers acts on neither (audited); a second customer cannot consent to share the same identifier', async () => {
    const a = await insertCustomer(t.hub.db);
    const b = await insertCustomer(t.hub.db);
    const email = { format: 'email', email: `shared-${randomUUID()}@example.com` };
    // The peer names customer a by that e-mail; customer b consented to share the same e-mail.
    await linkCustomer(t.hub.db, { peerId: 'peer', customerId: a, peerSubject: email as never });
    await linkCustomer(t.hub.db, {
      peerId: 'peer',
      customerId: b,
      sharedSubject: { subject: email as never, consentRef: 'consent-b' },
    });
    const jti = randomUUID();
    const r = await push(
      'peer',
      await signSet(EVENT.accountDisabled, { reason: 'hijacking' }, { jti, subId: email }),
    );
    expect(r.status).toBe(202);
    const received = await t.hub.db.query<{ customer_id: string | null; actions: string[] }>(
      'SELECT customer_id, actions FROM ssf_received WHERE jti = $1',
      [jti],
    );
    expect(received.rows).toEqual([{ customer_id: null, actions: [] }]);
    expect(
      await count('SELECT count(*)::int AS n FROM ssf_action_outbox WHERE customer_id = ANY ($1)', [[a, b]]),
    ).toBe(0);
    expect(
      await count(
        "SELECT count(*)::int AS n FROM audit_events WHERE type = 'ssf.subject.ambiguous' AND actor = 'peer:peer'",
        [],
      ),
    ).toBeGreaterThan(0);

    // A third customer consenting to share b's identifier with the same peer is refused.
    const c = await insertCustomer(t.hub.db);
    const err = await linkCustomer(t.hub.db, {
      peerId: 'peer',
      customerId: c,
      sharedSubject: { subject: email as never, consentRef: 'consent-c' },
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SignalsError);
    expect((err as SignalsError).code).toBe('ERR_SSF_SUBJECT_TAKEN');
    // b itself may confirm its consent again.
    await linkCustomer(t.hub.db, {
      peerId: 'peer',
      customerId: b,
      sharedSubject: { subject: email as never, consentRef: 'consent-b2' },
    });
  });
});

describe('circuit breaker per peer', () => {
  const takeover = async (peerId: string, subject: Record<string, unknown>) => {
    const jti = randomUUID();
    const jwt = await signSet(
      EVENT.accountDisabled,
      { reason: 'hijacking' },
      { jti, subId: subject, iss: peerId === 'burst' ? 'https://burst-peer.example' : t.issuer },
    );
    expect((await push(peerId, jwt)).status).toBe(202);
    return jti;
  };
  const queued = (jti: string) =>
    count('SELECT count(*)::int AS n FROM ssf_action_outbox WHERE jti = $1', [jti]);
  const audits = (type: string) =>
    count("SELECT count(*)::int AS n FROM audit_events WHERE type = $1 AND data->>'peerId' = 'burst'", [
      type,
    ]);
  const revoked = (customerId: string) =>
    count(
      "SELECT count(*)::int AS n FROM audit_events WHERE type = 'ssf.action.revoke_sessions' AND customer_id = $1",
      [customerId],
    );

  async function linkedCustomers(n: number) {
    const out: { customerId: string; subject: Record<string, unknown> }[] = [];
    for (let i = 0; i < n; i++) {
      const customerId = await insertCustomer(t.hub.db);
      const subject = { format: 'opaque', id: `burst-${randomUUID()}` };
      await linkCustomer(t.hub.db, { peerId: 'burst', customerId, peerSubject: subject as never });
      out.push({ customerId, subject });
    }
    return out;
  }

  it('beyond maxSetsPerWindow a peer’s SETs are acknowledged but their actions held; an operator releases or drops them', async () => {
    const customers = await linkedCustomers(5);
    const jtis: string[] = [];
    for (const c of customers) jtis.push(await takeover('burst', c.subject));
    // The first three acted; the fourth opened the breaker; the fourth and fifth did nothing.
    for (const jti of jtis.slice(0, 3)) expect(await queued(jti)).toBeGreaterThan(0);
    for (const jti of jtis.slice(3)) expect(await queued(jti)).toBe(0);
    expect(await revoked(customers[4]!.customerId)).toBe(0);
    expect(await audits('ssf.peer.circuit_open')).toBe(1);
    expect(
      await count(
        "SELECT count(*)::int AS n FROM audit_events WHERE type = 'ssf.actions.held' AND actor = 'peer:burst'",
        [],
      ),
    ).toBe(2);
    expect(await listPeerBreakers(t.hub.db)).toEqual([
      expect.objectContaining({ peerId: 'burst', openedAt: expect.any(Date), openedCount: 3, held: 2 }),
    ]);

    // The operator's view through the CLI, then release: the held actions run, once.
    const lines: string[] = [];
    const log = console.log;
    console.log = (line: string) => lines.push(line);
    try {
      expect(await ssfCommand(t.hub.db, ['held'], { operator: 'operator:sato' })).toBe(0);
      expect(await ssfCommand(t.hub.db, ['release', 'burst'], { operator: 'operator:sato' })).toBe(0);
    } finally {
      console.log = log;
    }
    expect(lines.join('\n')).toMatch(/burst\s+open\s+2/);
    expect(lines.join('\n')).toContain('peer burst: 2 held SETs released, breaker closed');
    for (const jti of jtis.slice(3)) expect(await queued(jti)).toBeGreaterThan(0);
    expect(await revoked(customers[4]!.customerId)).toBe(1);
    expect(await resolvePeerBreaker(t.hub.db, 'nobody', 'release', 'operator:sato')).toBeUndefined();
    expect(
      await count(
        "SELECT count(*)::int AS n FROM audit_events WHERE type = 'ssf.peer.circuit_closed' AND actor = 'operator:sato'",
        [],
      ),
    ).toBe(1);

    // Counting starts again once the operator closed it: 3 more act, the next is held; dropped, it never acts.
    const more = await linkedCustomers(4);
    const next: string[] = [];
    for (const c of more) next.push(await takeover('burst', c.subject));
    for (const jti of next.slice(0, 3)) expect(await queued(jti)).toBeGreaterThan(0);
    expect(await queued(next[3]!)).toBe(0);
    expect(await resolvePeerBreaker(t.hub.db, 'burst', 'drop', 'operator:sato')).toBe(1);
    expect(await queued(next[3]!)).toBe(0);
    expect(await revoked(more[3]!.customerId)).toBe(0);
    expect(await audits('ssf.peer.circuit_open')).toBe(2);
  });

  it('forward re-signs only the members the event schema defines, never the peer’s free text', async () => {
    const customerId = await insertCustomer(t.hub.db);
    const subject = { format: 'opaque', id: `forward-${randomUUID()}` };
    await linkCustomer(t.hub.db, { peerId: 'peer', customerId, peerSubject: subject as never });
    const txn = randomUUID();
    const jwt = await signSet(
      EVENT.credentialCompromise,
      {
        credential_type: 'password',
        event_timestamp: 1_700_000_000,
        reason_admin: { en: 'Call +81-3-0000-0000 to restore the account' },
        reason_user: { en: 'Your account is locked, visit example.com' },
        unknown_member: 'x',
      },
      { subId: subject, txn },
    );
    expect((await push('peer', jwt)).status).toBe(202);
    const forwarded = await t.hub.db.query<{ payload: { claims: Record<string, unknown> } }>(
      "SELECT payload FROM ssf_events WHERE txn = $1 AND origin_peer = 'peer'",
      [txn],
    );
    expect(forwarded.rows.map((r) => r.payload.claims)).toEqual([
      { credential_type: 'password', event_timestamp: 1_700_000_000 },
    ]);

    // Without a valid member its schema requires (credential_type), it is not forwarded at all.
    const txn2 = randomUUID();
    const bad = await signSet(
      EVENT.credentialCompromise,
      { credential_type: 'a free text' },
      { subId: subject, txn: txn2 },
    );
    expect((await push('peer', bad)).status).toBe(202);
    expect(await count('SELECT count(*)::int AS n FROM ssf_events WHERE txn = $1', [txn2])).toBe(0);
    expect(
      await count(
        "SELECT count(*)::int AS n FROM audit_events WHERE type = 'ssf.action.forward_skipped' AND data->>'txn' = $1",
        [txn2],
      ),
    ).toBe(1);
  });
});
