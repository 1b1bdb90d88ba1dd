/**
 * Receiver checks: the hub subscribes at the plan's fake transmitter, and the plan, as that
 * transmitter, pushes (or queues for the hub's poll) valid and broken SETs.
 */
import { randomUUID } from 'node:crypto';
import { CAEP, decodeSet, eventOf, RISC, SSF_EVENT, type SsfCheckContext } from '../lib/context.ts';
import { check, equal, obj, setError, show, status } from '../lib/expect.ts';
import { newSetKey, signSet } from '../lib/peerServer.ts';
import type { SsfCheck } from '../types.ts';

const SUB = 'Receiver: subscription';
const PUSHED = 'Receiver: push endpoint';
const VERIFY = 'Receiver: verification';
const ACTIONS = 'Receiver: actions';
const POLLED = 'Receiver: poll mode';

async function count(ctx: SsfCheckContext, sql: string, params: unknown[]): Promise<number> {
  const r = await ctx.target.hub.db.query<{ n: number }>(sql, params);
  return r.rows[0]?.n ?? 0;
}

const actionRows = (ctx: SsfCheckContext, jti: string) =>
  count(ctx, 'SELECT count(*)::int AS n FROM ssf_action_outbox WHERE jti = $1', [jti]);

/** A SET about the linked customer, as the fake transmitter names them. */
async function customerSet(
  ctx: SsfCheckContext,
  event: string,
  body: Record<string, unknown>,
  extra: Record<string, unknown> = {},
) {
  return ctx.setClaims(event, body, { sub_id: ctx.target.customerSubject, ...extra });
}

export const receiverChecks: SsfCheck[] = [
  {
    group: SUB,
    id: 'recv-subscribes',
    title:
      'the hub creates a push stream at the transmitter (its receive URL, an Authorization value) and asks for verification',
    expect: 'accept',
    async run(ctx) {
      const sub = await ctx.subscription();
      check(sub.endpoint.startsWith(`${ctx.issuer}/ssf/receive/`), `endpoint_url ${sub.endpoint}`);
      check(sub.authorization.length >= 32, 'the Authorization value is weak');
      const peer = ctx.target.peer;
      const v = await peer.waitFor(
        () => peer.verifications.find((x) => x.stream_id === sub.streamId),
        10_000,
        'a verification request',
      );
      check(
        typeof v.state === 'string' && v.state.length >= 16,
        'verification request without a (strong) state',
      );
    },
  },
  {
    group: VERIFY,
    id: 'recv-verification-state',
    title: 'the verification event with the state the hub asked for → 202, the subscription is verified',
    expect: 'accept',
    async run(ctx) {
      const sub = await ctx.subscription();
      const peer = ctx.target.peer;
      const v = await peer.waitFor(
        () => peer.verifications.find((x) => x.stream_id === sub.streamId),
        10_000,
        'verification request',
      );
      const { reply } = await ctx.sendSet({
        claims: await ctx.setClaims(`${SSF_EVENT}verification`, { state: v.state }),
      });
      status(reply, 202, 'verification');
      equal(reply.text, '', 'a 202 has no body');
      const verified = await count(
        ctx,
        'SELECT count(*)::int AS n FROM ssf_subscriptions WHERE verified_at IS NOT NULL AND stream_id = $1',
        [sub.streamId],
      );
      equal(verified, 1, 'subscription verified');
    },
  },
  {
    group: VERIFY,
    id: 'recv-verification-wrong-state',
    title: 'a verification event with a state the hub never sent → 400 invalid_state',
    expect: 'fail',
    async run(ctx) {
      const { reply } = await ctx.sendSet({
        claims: await ctx.setClaims(`${SSF_EVENT}verification`, { state: 'not-what-we-asked' }),
      });
      setError(reply, 400, 'invalid_state', 'wrong state');
    },
  },
  {
    group: VERIFY,
    id: 'recv-verification-wrong-subject',
    title: 'a verification event naming another stream → 400 invalid_request',
    expect: 'fail',
    async run(ctx) {
      const claims = await ctx.setClaims(
        `${SSF_EVENT}verification`,
        {},
        { sub_id: { format: 'opaque', id: 'another-stream' } },
      );
      setError((await ctx.sendSet({ claims })).reply, 400, 'invalid_request', 'wrong subject');
    },
  },
  {
    group: VERIFY,
    id: 'recv-verification-unsolicited',
    title: 'an unsolicited verification event (no state), also queued behind other events → 202',
    expect: 'accept',
    async run(ctx) {
      status((await ctx.sendSet()).reply, 202, 'an event first');
      status(
        (await ctx.sendSet({ claims: await ctx.setClaims(`${SSF_EVENT}verification`, {}) })).reply,
        202,
        'unsolicited',
      );
    },
  },
  {
    group: PUSHED,
    id: 'recv-valid-and-repeat',
    title: 'a valid SET → 202; the same SET again → 202 with no second side effect',
    expect: 'accept',
    async run(ctx) {
      const claims = await customerSet(ctx, `${RISC}credential-compromise`, {
        credential_type: 'fido2-platform',
      });
      const first = await ctx.sendSet({ claims });
      status(first.reply, 202, 'first');
      const after1 = await actionRows(ctx, first.jti);
      check(after1 > 0, 'the event caused no action');
      const again = await ctx.sendSet({ claims });
      status(again.reply, 202, 'repeat');
      equal(await actionRows(ctx, first.jti), after1, 'actions after the repeat');
      equal(
        await count(ctx, 'SELECT count(*)::int AS n FROM ssf_received WHERE jti = $1', [first.jti]),
        1,
        'received rows',
      );
    },
  },
  {
    group: PUSHED,
    id: 'recv-bad-signature',
    title: 'a SET with a broken signature → 400 invalid_key',
    expect: 'fail',
    async run(ctx) {
      const raw = signSet(ctx.target.peer.jwks[0]!, await ctx.setClaims(`${CAEP}session-revoked`, {}));
      const [h, p, s] = raw.split('.') as [string, string, string];
      const sig = Buffer.from(s, 'base64url');
      sig[10]! ^= 0xff;
      setError(
        (await ctx.sendSet({ raw: `${h}.${p}.${sig.toString('base64url')}` })).reply,
        400,
        'invalid_key',
        'signature',
      );
    },
  },
  {
    group: PUSHED,
    id: 'recv-unknown-kid',
    title: 'a SET signed with a key not in the JWKS → the hub refetches the JWKS once, then 400 invalid_key',
    expect: 'fail',
    async run(ctx) {
      const peer = ctx.target.peer;
      await ctx.sendSet();
      const before = peer.jwksFetches;
      const stranger = newSetKey('RS256');
      setError((await ctx.sendSet({ key: stranger })).reply, 400, 'invalid_key', 'unknown kid');
      equal(peer.jwksFetches - before, 1, 'JWKS fetches for one unknown kid');
    },
  },
  {
    group: PUSHED,
    id: 'recv-key-rotation',
    title:
      'the transmitter rotates its key: the first SET with the new kid is accepted after one JWKS refetch',
    expect: 'accept',
    async run(ctx) {
      const peer = ctx.target.peer;
      const next = newSetKey('ES256');
      await ctx.sleep(1100);
      peer.jwks = [next, ...peer.jwks];
      status((await ctx.sendSet({ key: next })).reply, 202, 'SET with the new key');
    },
  },
  {
    group: PUSHED,
    id: 'recv-wrong-iss',
    title: 'a SET with another iss → 400 invalid_issuer',
    expect: 'fail',
    async run(ctx) {
      const claims = await ctx.setClaims(`${CAEP}session-revoked`, {}, { iss: 'https://impostor.example' });
      setError((await ctx.sendSet({ claims })).reply, 400, 'invalid_issuer', 'iss');
    },
  },
  {
    group: PUSHED,
    id: 'recv-wrong-aud',
    title: 'a SET for another audience → 400 invalid_audience',
    expect: 'fail',
    async run(ctx) {
      const claims = await ctx.setClaims(
        `${CAEP}session-revoked`,
        {},
        { aud: 'https://someone-else.example' },
      );
      setError((await ctx.sendSet({ claims })).reply, 400, 'invalid_audience', 'aud');
    },
  },
  {
    group: PUSHED,
    id: 'recv-not-a-jwt',
    title: 'a body that is not a JWT, a wrong typ, alg none, or another content type → 400 invalid_request',
    expect: 'fail',
    async run(ctx) {
      setError((await ctx.sendSet({ raw: 'hello, receiver' })).reply, 400, 'invalid_request', 'not a JWT');
      const claims = await ctx.setClaims(`${CAEP}session-revoked`, {});
      setError(
        (await ctx.sendSet({ claims, header: { typ: 'JWT' } })).reply,
        400,
        'invalid_request',
        'typ JWT',
      );
      const b64 = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url');
      setError(
        (await ctx.sendSet({ raw: `${b64({ alg: 'none', typ: 'secevent+jwt' })}.${b64(claims)}.` })).reply,
        400,
        'invalid_request',
        'alg none',
      );
      setError(
        (await ctx.sendSet({ claims, contentType: 'application/json' })).reply,
        400,
        'invalid_request',
        'content type',
      );
    },
  },
  {
    group: PUSHED,
    id: 'recv-missing-claims',
    title: 'a SET without jti, sub_id or events → 400 invalid_request',
    expect: 'fail',
    async run(ctx) {
      for (const drop of ['jti', 'sub_id', 'events']) {
        const claims = await ctx.setClaims(`${CAEP}session-revoked`, {});
        delete claims[drop];
        setError((await ctx.sendSet({ claims })).reply, 400, 'invalid_request', `without ${drop}`);
      }
    },
  },
  {
    group: PUSHED,
    id: 'recv-authentication',
    title:
      'a push without, or with the wrong, Authorization — or for a peer the hub polls — → 401 authentication_failed',
    expect: 'fail',
    async run(ctx) {
      setError(
        (await ctx.sendSet({ authorization: null })).reply,
        401,
        'authentication_failed',
        'no Authorization',
      );
      setError(
        (await ctx.sendSet({ authorization: 'Bearer guessed' })).reply,
        401,
        'authentication_failed',
        'wrong Authorization',
      );
      const unknown = await ctx.manager.request(`${ctx.issuer}/ssf/receive/no-such-peer`, {
        method: 'POST',
        headers: { 'content-type': 'application/secevent+jwt' },
        raw: 'x.y.z',
      });
      check(unknown.status >= 400 && unknown.status < 500, `unknown peer: ${show(unknown)}`);
      // A peer the hub receives from by poll never got a push credential: a valid SET pushed for it
      // (with or without some Authorization) is refused before it is read.
      const pollPeer = ctx.target.pollPeer;
      const raw = signSet(pollPeer.jwks[0]!, {
        iss: pollPeer.issuer,
        jti: randomUUID(),
        iat: Math.floor(Date.now() / 1000),
        aud: ctx.issuer,
        txn: randomUUID(),
        sub_id: ctx.target.customerSubject,
        events: { [`${RISC}account-disabled`]: { reason: 'hijacking' } },
      });
      for (const authorization of [undefined, 'Bearer guessed']) {
        const reply = await ctx.manager.request(`${ctx.issuer}/ssf/receive/conformance-poll`, {
          method: 'POST',
          headers: {
            'content-type': 'application/secevent+jwt',
            ...(authorization ? { authorization } : {}),
          },
          raw,
        });
        setError(reply, 401, 'authentication_failed', `push for a poll peer (${authorization ?? 'none'})`);
      }
    },
  },
  {
    group: PUSHED,
    id: 'recv-unknown-subject',
    title: 'an event about an unknown subject (or one the receiver removed) → 202, no action',
    expect: 'accept',
    async run(ctx) {
      const claims = await ctx.setClaims(
        `${RISC}account-disabled`,
        { reason: 'hijacking' },
        { sub_id: { format: 'email', email: 'nobody@example.com' } },
      );
      const r = await ctx.sendSet({ claims });
      status(r.reply, 202, 'unknown subject');
      equal(await actionRows(ctx, r.jti), 0, 'actions');
    },
  },
  {
    group: ACTIONS,
    id: 'recv-takeover-actions',
    title:
      'account-disabled (hijacking) about a linked customer: sessions revoked, risk/notify queued, audited',
    expect: 'accept',
    async run(ctx) {
      const claims = await customerSet(ctx, `${RISC}account-disabled`, { reason: 'hijacking' });
      const r = await ctx.sendSet({ claims });
      status(r.reply, 202, 'takeover');
      const actions = await ctx.target.hub.db.query<{ action: string; customer_id: string }>(
        'SELECT action, customer_id FROM ssf_action_outbox WHERE jti = $1 ORDER BY action',
        [r.jti],
      );
      equal(actions.rows.map((a) => a.action).join(','), 'notify,raise_risk', 'queued actions');
      check(
        actions.rows.every((a) => a.customer_id === ctx.target.customerId),
        'action for another customer',
      );
      equal(
        await count(
          ctx,
          "SELECT count(*)::int AS n FROM audit_events WHERE type = 'ssf.action.revoke_sessions' AND data->>'jti' = $1",
          [r.jti],
        ),
        1,
        'revocation audited',
      );
    },
  },
  {
    group: ACTIONS,
    id: 'recv-forward-no-loop',
    title:
      'a forwarded takeover goes to the other linked peers with the same txn; that txn coming back is not forwarded again',
    expect: 'accept',
    async run(ctx) {
      const other = await ctx.other.createStream({ delivery: { method: 'urn:ietf:rfc:8936' } });
      const pollUrl = String((obj(other).delivery as { endpoint_url: string }).endpoint_url);
      const { name } = await ctx.pushStream();
      const claims = await customerSet(ctx, `${RISC}account-disabled`, { reason: 'hijacking' });
      status((await ctx.sendSet({ claims })).reply, 202, 'takeover');
      const txn = String(claims.txn);
      let forwarded: ReturnType<typeof decodeSet> | undefined;
      const end = Date.now() + 8000;
      while (!forwarded && Date.now() < end) {
        const r = await ctx.other.poll(pollUrl, { maxEvents: 50, returnImmediately: true });
        forwarded = Object.values((obj(r).sets ?? {}) as Record<string, string>)
          .map(decodeSet)
          .find((s) => s.claims.txn === txn);
        if (!forwarded) await ctx.sleep(100);
      }
      check(forwarded, 'the other peer got no forwarded SET');
      equal(eventOf(forwarded).type, `${RISC}account-disabled`, 'forwarded event type');
      equal(forwarded.claims.iss, ctx.issuer, 'forwarded by the hub');
      await ctx.sleep(500);
      check(
        !ctx.target.peer.pushesTo(name).some((p) => decodeSet(p.body).claims.txn === txn),
        'forwarded back to its origin',
      );
      // The same cause comes back from the origin under a new jti: recorded, not acted on or forwarded again.
      const echo = await ctx.sendSet({ claims: { ...claims, jti: randomUUID() } });
      status(echo.reply, 202, 'echo');
      equal(await actionRows(ctx, echo.jti), 0, 'actions for an echoed txn');
      equal(
        await count(ctx, 'SELECT count(*)::int AS n FROM ssf_events WHERE txn = $1', [txn]),
        1,
        'events queued for the txn',
      );
    },
  },
  {
    group: POLLED,
    id: 'recv-poll-ack-errs',
    title: 'poll mode: the hub polls, acknowledges valid SETs and reports invalid ones in setErrs',
    expect: 'accept',
    async run(ctx) {
      const peer = ctx.target.pollPeer;
      const s = await peer.waitFor(() => peer.streams.at(-1), 15_000, 'the hub to create its poll stream');
      check(
        !s.body.delivery || (s.body.delivery as { method?: string }).method === 'urn:ietf:rfc:8936',
        'not a poll stream',
      );
      const good = {
        iss: peer.issuer,
        jti: randomUUID(),
        iat: Math.floor(Date.now() / 1000),
        aud: 'kakehashi-under-test',
        txn: randomUUID(),
        sub_id: { format: 'email', email: 'x@example.com' },
        events: { [`${CAEP}session-revoked`]: {} },
      };
      const bad = { ...good, jti: randomUUID(), aud: 'https://someone-else.example' };
      peer.queueForPoll(s.stream_id, good.jti, signSet(peer.jwks[0]!, good));
      peer.queueForPoll(s.stream_id, bad.jti, signSet(peer.jwks[0]!, bad));
      const acked = await peer.waitFor(
        () =>
          peer.polls.find((p) => Array.isArray(p.body.ack) && (p.body.ack as string[]).includes(good.jti)),
        15_000,
        'the hub to acknowledge',
      );
      const errs = (acked.body.setErrs ?? {}) as Record<string, { err?: string }>;
      equal(errs[bad.jti]?.err, 'invalid_audience', 'setErrs for the bad SET');
      check(!(acked.body.ack as string[]).includes(bad.jti), 'the bad SET was acknowledged');
    },
  },
];
