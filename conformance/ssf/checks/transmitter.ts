/**
 * Transmitter checks: metadata, authorization of the management API, stream management, status
 * with hold and release, subjects, verification, poll and push delivery, and the shape of every SET.
 */
import { createPublicKey, randomUUID } from 'node:crypto';
import { changeStreamStatus, listDeadLetters } from '../../../src/signals/index.ts';
import {
  CAEP,
  type DecodedSet,
  decodeSet,
  eventOf,
  POLL,
  PUSH,
  RISC,
  SSF_EVENT,
  type SsfCheckContext,
} from '../lib/context.ts';
import { CheckFailure, check, equal, oauthError, obj, show, status } from '../lib/expect.ts';
import type { SsfCheck } from '../types.ts';

const META = 'Transmitter metadata';
const AUTH = 'Management authorization';
const STREAMS = 'Stream management';
const STATUS = 'Stream status';
const SUBJECTS = 'Subjects';
const VERIFY = 'Verification';
const POLLING = 'Poll delivery';
const PUSHING = 'Push delivery';
const SETS = 'SET format';

const byTxn = (txn: string) => (s: DecodedSet) => s.claims.txn === txn;

async function poll(ctx: SsfCheckContext, url: string, body: Record<string, unknown>) {
  const r = await ctx.manager.poll(url, body);
  status(r, 200, 'poll');
  const b = obj(r);
  check(
    b.sets && typeof b.sets === 'object' && !Array.isArray(b.sets),
    `poll response without a sets object: ${show(r)}`,
  );
  return { sets: b.sets as Record<string, string>, moreAvailable: b.moreAvailable === true, reply: r };
}

/** Polls until a SET matching `filter` comes (acknowledging everything else on the way). */
async function pollUntil(
  ctx: SsfCheckContext,
  url: string,
  filter: (s: DecodedSet) => boolean,
  timeoutMs = 8000,
) {
  const end = Date.now() + timeoutMs;
  let ack: string[] = [];
  while (Date.now() < end) {
    const { sets } = await poll(ctx, url, { maxEvents: 50, returnImmediately: true, ack });
    ack = [];
    for (const [jti, raw] of Object.entries(sets)) {
      const s = decodeSet(raw);
      if (filter(s)) return { jti, set: s };
      ack.push(jti);
    }
    await ctx.sleep(100);
  }
  throw new CheckFailure(`no matching SET came by poll within ${timeoutMs} ms`);
}

export const transmitterChecks: SsfCheck[] = [
  // ---------------------------------------------------------------------------------------------
  {
    group: META,
    id: 'ssf-config-document',
    title:
      '/.well-known/ssf-configuration: issuer, spec_version 1_0, jwks_uri, both delivery methods, every endpoint, OAuth, no empty arrays',
    expect: 'accept',
    async run(ctx) {
      const r = await ctx.manager.request(`${ctx.issuer}/.well-known/ssf-configuration`);
      status(r, 200, 'ssf-configuration');
      check((r.headers.get('content-type') ?? '').startsWith('application/json'), 'not application/json');
      const m = obj(r);
      equal(m.issuer, ctx.issuer, 'issuer (the URL it was fetched from)');
      equal(m.spec_version, '1_0', 'spec_version');
      const methods = m.delivery_methods_supported as unknown[];
      check(
        Array.isArray(methods) && methods.includes(PUSH) && methods.includes(POLL),
        'delivery_methods_supported lacks a method',
      );
      for (const k of [
        'jwks_uri',
        'configuration_endpoint',
        'status_endpoint',
        'verification_endpoint',
        'add_subject_endpoint',
        'remove_subject_endpoint',
      ])
        check(
          typeof m[k] === 'string' && (m[k] as string).startsWith('https://'),
          `${k} missing or not https`,
        );
      const schemes = m.authorization_schemes as { spec_urn?: string }[];
      check(
        Array.isArray(schemes) && schemes.some((s) => s.spec_urn === 'urn:ietf:rfc:6749'),
        'authorization_schemes lacks urn:ietf:rfc:6749',
      );
      for (const [k, v] of Object.entries(m))
        check(!(Array.isArray(v) && v.length === 0), `${k} is an empty array`);
    },
  },
  {
    group: META,
    id: 'ssf-jwks-rs256',
    title: 'jwks_uri serves an RS256 key of at least 2048 bits (interop), public members only',
    expect: 'accept',
    async run(ctx) {
      const r = await ctx.manager.request(`${ctx.issuer}/ssf/jwks`);
      status(r, 200, 'jwks');
      const keys = (obj(r).keys ?? []) as Record<string, unknown>[];
      const rsa = keys.find((k) => k.alg === 'RS256');
      check(rsa, 'no RS256 key');
      const bits =
        createPublicKey({ key: rsa as never, format: 'jwk' }).asymmetricKeyDetails?.modulusLength ?? 0;
      check(bits >= 2048, `RS256 key has ${bits} bits`);
      for (const k of keys)
        for (const m of ['d', 'p', 'q', 'dp', 'dq', 'qi']) check(!(m in k), `private member ${m} published`);
    },
  },
  // ---------------------------------------------------------------------------------------------
  {
    group: AUTH,
    id: 'auth-no-token',
    title: 'management call without an access token → 401 with a challenge',
    expect: 'fail',
    async run(ctx) {
      const r = await ctx.manager.call('GET', await ctx.manager.endpoint('configuration'), undefined, {
        token: null,
      });
      status(r, 401, 'no token');
      check(r.headers.get('www-authenticate'), 'no WWW-Authenticate');
    },
  },
  {
    group: AUTH,
    id: 'auth-invalid-token',
    title: 'invalid access token → 401 invalid_token',
    expect: 'fail',
    async run(ctx) {
      const r = await ctx.manager.call(
        'POST',
        await ctx.manager.endpoint('configuration'),
        { delivery: { method: POLL } },
        {
          token: { value: 'not-a-token', type: 'Bearer', scope: '' },
        },
      );
      oauthError(r, [401], ['invalid_token'], 'invalid token');
      check(
        /invalid_token/.test(r.headers.get('www-authenticate') ?? ''),
        'challenge lacks error="invalid_token"',
      );
    },
  },
  {
    group: AUTH,
    id: 'auth-token-in-query',
    title: 'access token in the query string (no header) → 400/401, never accepted',
    expect: 'fail',
    async run(ctx) {
      const url = new URL(await ctx.manager.endpoint('configuration'));
      url.searchParams.set('access_token', ctx.bearer.token!.value);
      const r = await ctx.bearer.request(url.href);
      status(r, [400, 401], 'token in query');
      const both = await ctx.bearer.call('GET', url.href);
      status(both, [400, 401], 'token in query and header');
    },
  },
  {
    group: AUTH,
    id: 'auth-read-only-cannot-create',
    title: 'ssf.read token cannot create a stream → 403 insufficient_scope; it can read',
    expect: 'fail',
    async run(ctx) {
      const ro = await ctx.readOnly();
      equal(ro.token?.scope, 'ssf.read', 'granted scope');
      const r = await ro.createStream({ delivery: { method: POLL } });
      oauthError(r, [403], ['insufficient_scope'], 'create with ssf.read');
      status(await ro.readStream(), 200, 'read with ssf.read');
    },
  },
  {
    group: AUTH,
    id: 'auth-dpop-token-as-bearer',
    title: 'DPoP-bound token sent as Bearer, or without its proof → 401',
    expect: 'fail',
    async run(ctx) {
      const url = await ctx.manager.endpoint('configuration');
      const tok = ctx.manager.token!;
      oauthError(
        await ctx.manager.request(url, { headers: { authorization: `Bearer ${tok.value}` } }),
        [401],
        ['invalid_token'],
        'as Bearer',
      );
      status(
        await ctx.manager.request(url, { headers: { authorization: `DPoP ${tok.value}` } }),
        401,
        'DPoP without proof',
      );
    },
  },
  {
    group: AUTH,
    id: 'auth-bearer-client',
    title: 'a peer registered without DPoP manages its streams with a Bearer token (RFC 6750 header)',
    expect: 'accept',
    async run(ctx) {
      equal(ctx.bearer.token?.type, 'Bearer', 'token_type');
      const r = await ctx.bearer.createStream({ delivery: { method: POLL } });
      status(r, 201, 'create with a Bearer token');
      status(await ctx.bearer.deleteStream(String(obj(r).stream_id)), 204, 'delete');
    },
  },
  {
    group: AUTH,
    id: 'auth-non-peer-no-ssf-token',
    title: 'a client that is not an SSF peer gets no SSF token (FAPI clients keep their grants)',
    expect: 'fail',
    async run(ctx) {
      // The SSF resource with a client that is registered but not configured as a peer.
      const { newPeerClientKey, SsfManager } = await import('../lib/manager.ts');
      const { registerPeerClient } = await import('../../../src/signals/index.ts');
      const key = newPeerClientKey(`not-a-peer-${randomUUID()}`);
      await registerPeerClient(ctx.target.hub.db, {
        clientId: key.clientId,
        jwks: { keys: [key.publicJwk] },
      });
      const m = new SsfManager({ issuer: ctx.issuer, fetch: ctx.target.t.fetch }, key);
      const r = await m.requestToken('ssf.manage');
      if (r.status === 200) {
        const scope = String(obj(r).scope ?? '');
        check(!scope.includes('ssf.'), `a non-peer client got ${scope}`);
      } else oauthError(r, [400], ['invalid_target', 'invalid_scope', 'unauthorized_client'], 'non-peer');
    },
  },
  // ---------------------------------------------------------------------------------------------
  {
    group: STREAMS,
    id: 'stream-create-push',
    title: 'create a push stream → 201 with the full configuration',
    expect: 'accept',
    async run(ctx) {
      const { config } = await ctx.pushStream({
        events: [`${CAEP}session-revoked`, `${CAEP}credential-change`, 'urn:example:unknown'],
      });
      check(typeof config.stream_id === 'string', 'stream_id');
      equal(config.iss, ctx.issuer, 'iss');
      check(typeof config.aud === 'string' || Array.isArray(config.aud), 'aud');
      equal((config.delivery as { method: string }).method, PUSH, 'delivery.method');
      const supported = config.events_supported as string[];
      const delivered = config.events_delivered as string[];
      const requested = config.events_requested as string[];
      check(Array.isArray(supported) && supported.length > 0, 'events_supported');
      check(
        delivered.every((e) => supported.includes(e) && requested.includes(e)),
        'events_delivered ⊄ supported ∩ requested',
      );
      check(!delivered.includes('urn:example:unknown'), 'an unknown requested event is delivered');
      check(
        !('authorization_header' in (config.delivery as object)),
        'the authorization header is echoed back',
      );
    },
  },
  {
    group: STREAMS,
    id: 'stream-create-poll',
    title: 'create a poll stream → 201, transmitter-supplied https endpoint_url unique per stream',
    expect: 'accept',
    async run(ctx) {
      const a = await ctx.pollStream();
      const b = await ctx.pollStream();
      check(a.pollUrl.startsWith('https://'), 'poll endpoint_url not https');
      check(a.pollUrl !== b.pollUrl, 'two streams share one poll URL');
    },
  },
  {
    group: STREAMS,
    id: 'stream-create-default-poll',
    title: 'create without delivery → poll (SSF 1.0 §8.1.1.1)',
    expect: 'accept',
    async run(ctx) {
      const r = await ctx.manager.createStream({ description: 'no delivery' });
      status(r, 201, 'create');
      equal((obj(r).delivery as { method: string }).method, POLL, 'delivery.method');
    },
  },
  {
    group: STREAMS,
    id: 'stream-create-duplicate',
    title: 'the same creation twice → 201 with a new stream_id (several streams per receiver)',
    expect: 'accept',
    async run(ctx) {
      const body = { delivery: { method: POLL }, description: 'twice' };
      const a = await ctx.manager.createStream(body);
      const b = await ctx.manager.createStream(body);
      status(a, 201, 'first');
      status(b, [201, 409], 'second');
      if (b.status === 201) check(obj(a).stream_id !== obj(b).stream_id, 'same stream_id twice');
    },
  },
  {
    group: STREAMS,
    id: 'stream-create-broken',
    title: 'broken JSON, a wrong delivery method or a non-https push URL → 400',
    expect: 'fail',
    async run(ctx) {
      const url = await ctx.manager.endpoint('configuration');
      oauthError(
        await ctx.manager.call('POST', url, undefined, { raw: ';{ broken' }),
        [400],
        ['invalid_request'],
        'broken JSON',
      );
      oauthError(
        await ctx.manager.createStream({ delivery: { method: 'urn:example:carrier-pigeon' } }),
        [400],
        ['invalid_request'],
        'method',
      );
      oauthError(
        await ctx.manager.createStream({
          delivery: { method: PUSH, endpoint_url: 'http://receiver.example/events' },
        }),
        [400],
        ['invalid_request'],
        'http push URL',
      );
      oauthError(
        await ctx.manager.createStream({ delivery: { method: PUSH } }),
        [400],
        ['invalid_request'],
        'push without URL',
      );
    },
  },
  {
    group: STREAMS,
    id: 'stream-read-unknown',
    title: "read an unknown stream → 404; another receiver's stream → 404",
    expect: 'fail',
    async run(ctx) {
      status(await ctx.manager.readStream('no-such-stream'), 404, 'unknown');
      const theirs = await ctx.other.createStream({ delivery: { method: POLL } });
      status(await ctx.manager.readStream(String(obj(theirs).stream_id)), 404, "other receiver's");
    },
  },
  {
    group: STREAMS,
    id: 'stream-read-list',
    title: "read without stream_id → array of the caller's streams only",
    expect: 'accept',
    async run(ctx) {
      const mine = await ctx.pollStream();
      const theirs = obj(await ctx.other.createStream({ delivery: { method: POLL } })).stream_id;
      const r = await ctx.manager.readStream();
      status(r, 200, 'list');
      check(Array.isArray(r.body), 'not an array');
      const ids = (r.body as { stream_id: string }[]).map((s) => s.stream_id);
      check(ids.includes(mine.streamId), 'own stream missing');
      check(!ids.includes(String(theirs)), "another receiver's stream listed");
    },
  },
  {
    group: STREAMS,
    id: 'stream-update',
    title: 'PATCH changes what it names, keeps the rest and the transmitter-supplied fields',
    expect: 'accept',
    async run(ctx) {
      const { streamId, config } = await ctx.pushStream();
      const r = await ctx.manager.call('PATCH', await ctx.manager.endpoint('configuration'), {
        stream_id: streamId,
        iss: config.iss,
        events_requested: [`${CAEP}session-revoked`],
        description: 'patched',
      });
      status(r, 200, 'PATCH');
      const b = obj(r);
      equal(b.description, 'patched', 'description');
      equal(
        JSON.stringify(b.events_delivered),
        JSON.stringify([`${CAEP}session-revoked`]),
        'events_delivered',
      );
      equal(
        (b.delivery as { endpoint_url: string }).endpoint_url,
        (config.delivery as { endpoint_url: string }).endpoint_url,
        'delivery kept',
      );
      equal(b.aud, config.aud, 'aud kept');
      equal(b.stream_id, streamId, 'stream_id');
    },
  },
  {
    group: STREAMS,
    id: 'stream-update-transmitter-field',
    title: 'PATCH/PUT with a changed transmitter-supplied field (iss, aud) → 400; unknown stream → 404',
    expect: 'fail',
    async run(ctx) {
      const { streamId } = await ctx.pollStream();
      const url = await ctx.manager.endpoint('configuration');
      oauthError(
        await ctx.manager.call('PATCH', url, { stream_id: streamId, iss: 'https://evil.example' }),
        [400],
        ['invalid_request'],
        'iss',
      );
      oauthError(
        await ctx.manager.call('PUT', url, {
          stream_id: streamId,
          aud: 'someone-else',
          delivery: { method: POLL },
        }),
        [400],
        ['invalid_request'],
        'aud',
      );
      status(
        await ctx.manager.call('PATCH', url, { stream_id: 'nope', description: 'x' }),
        404,
        'unknown stream',
      );
      oauthError(
        await ctx.manager.call('PATCH', url, { description: 'x' }),
        [400],
        ['invalid_request'],
        'no stream_id',
      );
    },
  },
  {
    group: STREAMS,
    id: 'stream-replace',
    title: 'PUT replaces: omitted receiver-supplied properties are deleted, delivery defaults to poll',
    expect: 'accept',
    async run(ctx) {
      const { streamId } = await ctx.pushStream({ events: [`${CAEP}session-revoked`] });
      const r = await ctx.manager.call('PUT', await ctx.manager.endpoint('configuration'), {
        stream_id: streamId,
      });
      status(r, 200, 'PUT');
      const b = obj(r);
      check(!('description' in b), 'description kept');
      check(!('events_requested' in b), 'events_requested kept');
      equal((b.delivery as { method: string }).method, POLL, 'delivery.method');
      equal(b.iss, ctx.issuer, 'iss');
    },
  },
  {
    group: STREAMS,
    id: 'stream-delete',
    title: 'DELETE → 204, then the stream is gone (404); delete unknown → 404',
    expect: 'accept',
    async run(ctx) {
      const { streamId } = await ctx.pollStream();
      const r = await ctx.manager.deleteStream(streamId);
      status(r, 204, 'delete');
      status(await ctx.manager.readStream(streamId), 404, 'read after delete');
      status(await ctx.manager.deleteStream(streamId), 404, 'delete again');
    },
  },
  // ---------------------------------------------------------------------------------------------
  {
    group: STATUS,
    id: 'status-read-update',
    title: 'read status (enabled); update to paused, disabled, enabled with a reason → 200 echoing it',
    expect: 'accept',
    async run(ctx) {
      const { streamId } = await ctx.pollStream();
      const r = await ctx.manager.readStatus(streamId);
      status(r, 200, 'read');
      equal(obj(r).status, 'enabled', 'initial status');
      for (const s of ['paused', 'disabled', 'enabled']) {
        const u = await ctx.manager.setStatus(streamId, s, `to ${s}`);
        status(u, 200, `update to ${s}`);
        equal(obj(u).status, s, 'status echoed');
        equal(obj(u).reason, `to ${s}`, 'reason echoed');
        equal(obj(await ctx.manager.readStatus(streamId)).status, s, 'status read back');
      }
    },
  },
  {
    group: STATUS,
    id: 'status-invalid',
    title: 'status update with an unknown value → 400; unknown stream → 404',
    expect: 'fail',
    async run(ctx) {
      const { streamId } = await ctx.pollStream();
      oauthError(
        await ctx.manager.setStatus(streamId, 'asleep'),
        [400],
        ['invalid_request'],
        'unknown status',
      );
      status(await ctx.manager.readStatus('no-such-stream'), 404, 'unknown stream');
    },
  },
  {
    group: STATUS,
    id: 'status-paused-holds',
    title: 'paused holds events (nothing pushed), enabled releases them in order',
    expect: 'accept',
    async run(ctx) {
      const { streamId, name } = await ctx.pushStream();
      status(await ctx.manager.setStatus(streamId, 'paused'), 200, 'pause');
      const txns = [await ctx.emit(), await ctx.emit({ type: 'session-revoked' } as never), await ctx.emit()];
      await ctx.sleep(800);
      equal(ctx.target.peer.pushesTo(name).length, 0, 'SETs pushed while paused');
      status(await ctx.manager.setStatus(streamId, 'enabled'), 200, 'enable');
      const sets = await ctx.pushed(name, 3, { filter: (s) => txns.includes(String(s.claims.txn)) });
      equal(sets.map((s) => s.claims.txn).join(','), txns.join(','), 'order of release');
    },
  },
  {
    group: STATUS,
    id: 'status-disabled-drops',
    title: 'disabled drops events: nothing of that time arrives after re-enabling',
    expect: 'accept',
    async run(ctx) {
      const { streamId, name } = await ctx.pushStream();
      status(await ctx.manager.setStatus(streamId, 'disabled'), 200, 'disable');
      const dropped = await ctx.emit();
      await ctx.sleep(500);
      status(await ctx.manager.setStatus(streamId, 'enabled'), 200, 'enable');
      const kept = await ctx.emit();
      await ctx.pushed(name, 1, { filter: byTxn(kept) });
      await ctx.sleep(300);
      check(
        !ctx.target.peer.pushesTo(name).some((p) => decodeSet(p.body).claims.txn === dropped),
        'an event of the disabled time arrived',
      );
    },
  },
  {
    group: STATUS,
    id: 'status-paused-poll-empty',
    title: 'a paused poll stream returns empty sets; re-enabled, the held SET comes',
    expect: 'accept',
    async run(ctx) {
      const { streamId, pollUrl } = await ctx.pollStream();
      await poll(ctx, pollUrl, { maxEvents: 100, returnImmediately: true });
      status(await ctx.manager.setStatus(streamId, 'paused'), 200, 'pause');
      const txn = await ctx.emit();
      await ctx.sleep(500);
      const { sets } = await poll(ctx, pollUrl, { maxEvents: 10, returnImmediately: true });
      equal(Object.keys(sets).length, 0, 'SETs returned while paused');
      status(await ctx.manager.setStatus(streamId, 'enabled'), 200, 'enable');
      await pollUntil(ctx, pollUrl, byTxn(txn));
    },
  },
  {
    group: STATUS,
    id: 'status-transmitter-initiated',
    title:
      'a transmitter-initiated pause sends stream-updated (delivered although paused), and so does re-enabling',
    expect: 'accept',
    async run(ctx) {
      const { streamId, name } = await ctx.pushStream();
      await changeStreamStatus(ctx.target.hub.db, streamId, 'paused', 'maintenance', 'operator:conformance');
      const isUpdate = (s: DecodedSet) => eventOf(s).type === `${SSF_EVENT}stream-updated`;
      const [paused] = await ctx.pushed(name, 1, { filter: isUpdate });
      equal(eventOf(paused!).body.status, 'paused', 'status in stream-updated');
      equal(
        JSON.stringify(paused!.claims.sub_id),
        JSON.stringify({ format: 'opaque', id: streamId }),
        'sub_id names the stream',
      );
      await changeStreamStatus(ctx.target.hub.db, streamId, 'enabled', null, 'operator:conformance');
      const both = await ctx.pushed(name, 2, { filter: isUpdate });
      equal(eventOf(both[1]!).body.status, 'enabled', 'status after re-enabling');
    },
  },
  // ---------------------------------------------------------------------------------------------
  {
    group: SUBJECTS,
    id: 'subject-add-remove',
    title:
      'add subject → 200, remove → 204, unknown subject gets the same answers (no probing); invalid → 400',
    expect: 'accept',
    async run(ctx) {
      const { streamId } = await ctx.pollStream();
      const add = await ctx.manager.endpoint('add_subject');
      const remove = await ctx.manager.endpoint('remove_subject');
      const known = ctx.target.customerSubject;
      const unknown = { format: 'email', email: 'nobody@example.com' };
      status(
        await ctx.manager.call('POST', add, { stream_id: streamId, subject: known, verified: true }),
        200,
        'add known',
      );
      status(
        await ctx.manager.call('POST', add, { stream_id: streamId, subject: unknown }),
        200,
        'add unknown',
      );
      status(
        await ctx.manager.call('POST', remove, { stream_id: streamId, subject: known }),
        204,
        'remove known',
      );
      status(
        await ctx.manager.call('POST', remove, { stream_id: streamId, subject: unknown }),
        204,
        'remove unknown',
      );
      oauthError(
        await ctx.manager.call('POST', add, { stream_id: streamId, subject: { email: 'x' } }),
        [400],
        ['invalid_request'],
        'no format',
      );
      status(
        await ctx.manager.call('POST', add, { stream_id: 'nope', subject: known }),
        404,
        'unknown stream',
      );
    },
  },
  {
    group: SUBJECTS,
    id: 'subject-removed-no-events',
    title: 'a removed subject gets no events on that stream; added back, it does again',
    expect: 'accept',
    async run(ctx) {
      const { streamId, name } = await ctx.pushStream();
      const remove = await ctx.manager.endpoint('remove_subject');
      const add = await ctx.manager.endpoint('add_subject');
      // The receiver names the customer the way we name them to it.
      const probe = await ctx.emit();
      const [first] = await ctx.pushed(name, 1, { filter: byTxn(probe) });
      const subject = first!.claims.sub_id as Record<string, unknown>;
      status(await ctx.manager.call('POST', remove, { stream_id: streamId, subject }), 204, 'remove');
      const quiet = await ctx.emit();
      await ctx.sleep(600);
      check(
        !ctx.target.peer.pushesTo(name).some((p) => decodeSet(p.body).claims.txn === quiet),
        'event for a removed subject pushed',
      );
      status(await ctx.manager.call('POST', add, { stream_id: streamId, subject }), 200, 'add back');
      await ctx.pushed(name, 1, { filter: byTxn(await ctx.emit()) });
    },
  },
  // ---------------------------------------------------------------------------------------------
  {
    group: VERIFY,
    id: 'verify-push',
    title:
      'verification over push: 204, state echoed, sub_id is the opaque stream_id, configured Authorization sent',
    expect: 'accept',
    async run(ctx) {
      const { streamId, name } = await ctx.pushStream();
      const state = randomUUID();
      status(await ctx.manager.verify(streamId, state), 204, 'verify');
      const [v] = await ctx.pushed(name, 1, {
        filter: (s) => eventOf(s).type === `${SSF_EVENT}verification`,
      });
      equal(eventOf(v!).body.state, state, 'state');
      equal(JSON.stringify(v!.claims.sub_id), JSON.stringify({ format: 'opaque', id: streamId }), 'sub_id');
      const push = ctx.target.peer.pushesTo(name).find((p) => p.body === v!.raw)!;
      equal(push.headers.authorization, `Bearer ${name}`, 'Authorization header');
      await ctx.verifySignature(v!.raw);
    },
  },
  {
    group: VERIFY,
    id: 'verify-poll',
    title: 'verification over poll: state echoed',
    expect: 'accept',
    async run(ctx) {
      const { streamId, pollUrl } = await ctx.pollStream();
      const state = randomUUID();
      status(await ctx.manager.verify(streamId, state), 204, 'verify');
      const { set } = await pollUntil(ctx, pollUrl, (s) => eventOf(s).type === `${SSF_EVENT}verification`);
      equal(eventOf(set).body.state, state, 'state');
    },
  },
  {
    group: VERIFY,
    id: 'verify-errors',
    title:
      'verification: unknown stream → 404, twice within min_verification_interval → 429, bad state → 400',
    expect: 'fail',
    async run(ctx) {
      status(await ctx.manager.verify('no-such-stream'), 404, 'unknown stream');
      const { streamId } = await ctx.pollStream();
      status(await ctx.manager.verify(streamId), 204, 'first');
      const again = await ctx.manager.verify(streamId);
      status(again, 429, 'second at once');
      const url = await ctx.manager.endpoint('verification');
      oauthError(
        await ctx.manager.call('POST', url, { stream_id: streamId, state: 42 }),
        [400],
        ['invalid_request'],
        'numeric state',
      );
    },
  },
  // ---------------------------------------------------------------------------------------------
  {
    group: POLLING,
    id: 'poll-max-events-more',
    title: 'poll with maxEvents returns at most that many and moreAvailable',
    expect: 'accept',
    async run(ctx) {
      const { pollUrl } = await ctx.pollStream();
      const txns = [await ctx.emit(), await ctx.emit(), await ctx.emit()];
      await ctx.sleep(500);
      const first = await poll(ctx, pollUrl, { maxEvents: 2, returnImmediately: true });
      equal(Object.keys(first.sets).length, 2, 'SETs in the first poll');
      equal(first.moreAvailable, true, 'moreAvailable');
      const second = await poll(ctx, pollUrl, {
        maxEvents: 10,
        returnImmediately: true,
        ack: Object.keys(first.sets),
      });
      equal(Object.keys(second.sets).length, 1, 'SETs in the second poll');
      const got = [...Object.values(first.sets), ...Object.values(second.sets)].map(
        (s) => decodeSet(s).claims.txn,
      );
      equal(got.join(','), txns.join(','), 'order');
    },
  },
  {
    group: POLLING,
    id: 'poll-ack',
    title:
      'acknowledged SETs are not returned again; unacknowledged ones come back after the redelivery time',
    expect: 'accept',
    async run(ctx) {
      const { pollUrl } = await ctx.pollStream();
      const a = await ctx.emit();
      const b = await ctx.emit();
      await ctx.sleep(400);
      const first = await poll(ctx, pollUrl, { maxEvents: 10, returnImmediately: true });
      const jtis = Object.entries(first.sets);
      equal(jtis.length, 2, 'SETs polled');
      const jtiA = jtis.find(([, s]) => decodeSet(s).claims.txn === a)![0];
      const jtiB = jtis.find(([, s]) => decodeSet(s).claims.txn === b)![0];
      await poll(ctx, pollUrl, { maxEvents: 0, ack: [jtiA] });
      await ctx.sleep(2300);
      const again = await poll(ctx, pollUrl, { maxEvents: 10, returnImmediately: true, ack: [] });
      check(!(jtiA in again.sets), 'an acknowledged SET came back');
      check(jtiB in again.sets, 'an unacknowledged SET did not come back');
    },
  },
  {
    group: POLLING,
    id: 'poll-ack-only',
    title: 'ack-only poll (maxEvents 0) acknowledges and returns no SETs',
    expect: 'accept',
    async run(ctx) {
      const { pollUrl } = await ctx.pollStream();
      await ctx.emit();
      await ctx.sleep(400);
      const first = await poll(ctx, pollUrl, { maxEvents: 10, returnImmediately: true });
      const jtis = Object.keys(first.sets);
      check(jtis.length > 0, 'nothing to acknowledge');
      const ackOnly = await poll(ctx, pollUrl, { maxEvents: 0, ack: jtis });
      equal(Object.keys(ackOnly.sets).length, 0, 'SETs in an ack-only response');
      await ctx.sleep(2300);
      equal(
        Object.keys((await poll(ctx, pollUrl, { returnImmediately: true })).sets).length,
        0,
        'acknowledged SETs redelivered',
      );
    },
  },
  {
    group: POLLING,
    id: 'poll-set-errs',
    title: 'setErrs are recorded (dead-letter view) and those SETs are not delivered again',
    expect: 'accept',
    async run(ctx) {
      const { streamId, pollUrl } = await ctx.pollStream();
      await ctx.emit();
      await ctx.sleep(400);
      const jti = Object.keys((await poll(ctx, pollUrl, { maxEvents: 1, returnImmediately: true })).sets)[0];
      check(jti, 'nothing polled');
      await poll(ctx, pollUrl, {
        maxEvents: 0,
        setErrs: { [jti]: { err: 'invalid_key', description: 'conformance' } },
      });
      const dead = await listDeadLetters(ctx.target.hub.db, { streamId });
      check(
        dead.some((d) => d.jti === jti && /invalid_key/.test(d.lastError ?? '')),
        'the reported SET is not in the dead-letter view',
      );
      await ctx.sleep(2300);
      check(
        !(jti in (await poll(ctx, pollUrl, { returnImmediately: true })).sets),
        'a SET reported in setErrs came back',
      );
    },
  },
  {
    group: POLLING,
    id: 'poll-long',
    title: 'returnImmediately false waits for an event and returns it when it comes',
    expect: 'accept',
    async run(ctx) {
      const { pollUrl } = await ctx.pollStream();
      await poll(ctx, pollUrl, { returnImmediately: true });
      const started = Date.now();
      const pending = poll(ctx, pollUrl, { maxEvents: 10, returnImmediately: false });
      await ctx.sleep(400);
      const txn = await ctx.emit();
      const r = await pending;
      const txns = Object.values(r.sets).map((s) => decodeSet(s).claims.txn);
      check(
        txns.includes(txn),
        `the long poll returned without the event (after ${Date.now() - started} ms)`,
      );
      check(Date.now() - started >= 350, 'the poll returned before the event existed');
    },
  },
  {
    group: POLLING,
    id: 'poll-auth',
    title: 'poll with a read-only token → 403; another receiver polling this stream → 404',
    expect: 'fail',
    async run(ctx) {
      const { pollUrl } = await ctx.pollStream();
      oauthError(
        await (await ctx.readOnly()).poll(pollUrl, { returnImmediately: true }),
        [403],
        ['insufficient_scope'],
        'read-only',
      );
      status(await ctx.other.poll(pollUrl, { returnImmediately: true }), 404, 'other receiver');
    },
  },
  // ---------------------------------------------------------------------------------------------
  {
    group: PUSHING,
    id: 'push-request-shape',
    title:
      'push: POST, Content-Type application/secevent+jwt, Accept application/json, configured Authorization',
    expect: 'accept',
    async run(ctx) {
      const { name } = await ctx.pushStream({ authorization: 'Bearer configured-value' });
      const [s] = await ctx.pushed(name, 1, { filter: byTxn(await ctx.emit()) });
      const push = ctx.target.peer.pushesTo(name).find((p) => p.body === s!.raw)!;
      equal(push.headers['content-type'], 'application/secevent+jwt', 'Content-Type');
      check(String(push.headers.accept).includes('application/json'), 'Accept');
      equal(push.headers.authorization, 'Bearer configured-value', 'Authorization');
    },
  },
  {
    group: PUSHING,
    id: 'push-no-auth',
    title: 'push without a configured authorization_header sends no Authorization',
    expect: 'accept',
    async run(ctx) {
      const { name } = await ctx.pushStream({ authorization: null });
      const [s] = await ctx.pushed(name, 1, { filter: byTxn(await ctx.emit()) });
      const push = ctx.target.peer.pushesTo(name).find((p) => p.body === s!.raw)!;
      equal(push.headers.authorization, undefined, 'Authorization');
    },
  },
  {
    group: PUSHING,
    id: 'push-retry-backoff',
    title: 'push retries with growing delays until 202 (503, 503, dropped connection, then 202)',
    expect: 'accept',
    async run(ctx) {
      const { name } = await ctx.pushStream();
      const peer = ctx.target.peer;
      const previous = peer.answer;
      let n = 0;
      peer.answer = (p) => {
        if (p.path !== `/push/${name}`) return previous(p);
        n++;
        return n <= 2 ? { status: 503 } : n === 3 ? { drop: true } : { status: 202 };
      };
      try {
        const txn = await ctx.emit();
        await ctx.pushed(name, 1, { filter: byTxn(txn), timeoutMs: 15_000 });
        const attempts = peer.pushesTo(name).filter((p) => decodeSet(p.body).claims.txn === txn);
        check(attempts.length >= 4, `expected ≥ 4 attempts, saw ${attempts.length}`);
        const gaps = attempts.slice(1).map((a, i) => a.at - attempts[i]!.at);
        check(
          gaps.every((g) => g >= 80),
          `retries not backed off: gaps ${gaps.join(', ')} ms`,
        );
        equal(attempts.filter((a) => a.status === 202).length, 1, 'accepted deliveries');
      } finally {
        peer.answer = previous;
      }
    },
  },
  {
    group: PUSHING,
    id: 'push-rejected-dead-letter',
    title: 'a SET the receiver rejects (400 invalid_key) goes to the dead-letter view; later SETs still flow',
    expect: 'accept',
    async run(ctx) {
      const { streamId, name } = await ctx.pushStream();
      const peer = ctx.target.peer;
      const previous = peer.answer;
      const bad = randomUUID();
      peer.answer = (p) =>
        p.path === `/push/${name}` && decodeSet(p.body).claims.txn === bad
          ? { status: 400, body: { err: 'invalid_key', description: 'conformance' } }
          : previous(p);
      try {
        await ctx.emit({ txn: bad });
        const good = await ctx.emit();
        await ctx.pushed(name, 1, { filter: byTxn(good) });
        // The hub records outcomes after the batch; give it a moment.
        let dead = await listDeadLetters(ctx.target.hub.db, { streamId });
        for (let i = 0; i < 50 && dead.length === 0; i++) {
          await ctx.sleep(100);
          dead = await listDeadLetters(ctx.target.hub.db, { streamId });
        }
        check(
          dead.length === 1 && /invalid_key/.test(dead[0]!.lastError ?? ''),
          `dead letters: ${JSON.stringify(dead)}`,
        );
      } finally {
        peer.answer = previous;
      }
    },
  },
  // ---------------------------------------------------------------------------------------------
  {
    group: SETS,
    id: 'set-claims',
    title:
      'every SET: typ secevent+jwt, RS256, iss, aud, iat not in the future, unique jti, txn, one event, sub_id, no sub/exp',
    expect: 'accept',
    async run(ctx) {
      const { name, config } = await ctx.pushStream();
      const txns = [
        await ctx.emit(),
        await ctx.emit({ type: 'session-revoked' } as never),
        await ctx.emit({ type: 'account-disabled', reason: 'hijacking' } as never),
        await ctx.emit({
          type: 'risk-level-change',
          currentLevel: 'HIGH',
          previousLevel: 'LOW',
          riskReason: 'test',
        } as never),
        await ctx.emit({
          type: 'assurance-level-change',
          namespace: 'RFC8176',
          currentLevel: 'phr',
        } as never),
        await ctx.emit({ type: 'credential-compromise', credentialType: 'fido2-roaming' } as never),
        await ctx.emit({ type: 'account-credential-change-required' } as never),
        await ctx.emit({ type: 'recovery-activated' } as never),
      ];
      const sets = await ctx.pushed(name, txns.length, {
        filter: (s) => txns.includes(String(s.claims.txn)),
      });
      const jtis = new Set<string>();
      for (const s of sets) {
        equal(s.header.typ, 'secevent+jwt', 'typ');
        equal(s.header.alg, 'RS256', 'alg');
        await ctx.verifySignature(s.raw);
        equal(s.claims.iss, ctx.issuer, 'iss');
        equal(s.claims.aud, config.aud, 'aud');
        check(typeof s.claims.iat === 'number' && s.claims.iat <= Date.now() / 1000 + 1, 'iat in the future');
        check(typeof s.claims.jti === 'string' && !jtis.has(s.claims.jti), 'jti missing or repeated');
        jtis.add(s.claims.jti as string);
        check(typeof s.claims.txn === 'string', 'txn');
        equal(Object.keys(s.claims.events as object).length, 1, 'events');
        check(s.claims.sub_id && typeof s.claims.sub_id === 'object', 'sub_id');
        check(!('sub' in s.claims) && !('exp' in s.claims), 'sub or exp present');
      }
      const types = sets.map((s) => eventOf(s).type);
      for (const t of [
        `${CAEP}credential-change`,
        `${CAEP}session-revoked`,
        `${RISC}account-disabled`,
        `${CAEP}risk-level-change`,
      ])
        check(types.includes(t), `no ${t}`);
    },
  },
  {
    group: SETS,
    id: 'set-caep-interop-fields',
    title:
      'CAEP interop: credential-change carries credential_type, change_type, non-empty reason_admin; session-revoked reason_admin',
    expect: 'accept',
    async run(ctx) {
      const { name } = await ctx.pushStream({
        events: [`${CAEP}credential-change`, `${CAEP}session-revoked`],
      });
      const a = await ctx.emit();
      const b = await ctx.emit({ type: 'session-revoked' } as never);
      const sets = await ctx.pushed(name, 2, { filter: (s) => [a, b].includes(String(s.claims.txn)) });
      for (const s of sets) {
        const { type, body } = eventOf(s);
        const reason = body.reason_admin as Record<string, string> | undefined;
        check(reason && Object.values(reason).some((v) => v.length > 0), `${type}: reason_admin empty`);
        if (type.endsWith('credential-change'))
          check(body.credential_type && body.change_type, 'credential_type/change_type');
      }
    },
  },
  {
    group: SETS,
    id: 'set-pairwise-subject',
    title:
      'subjects are pairwise per peer (iss_sub with the hub issuer, different per receiver, never the customer id)',
    expect: 'accept',
    async run(ctx) {
      const mine = await ctx.pushStream();
      const theirs = await ctx.other.createStream({ delivery: { method: POLL } });
      const pollUrl = String((obj(theirs).delivery as { endpoint_url: string }).endpoint_url);
      const txn = await ctx.emit();
      const [s] = await ctx.pushed(mine.name, 1, { filter: byTxn(txn) });
      let other: DecodedSet | undefined;
      const end = Date.now() + 8000;
      while (!other && Date.now() < end) {
        const r = await ctx.other.poll(pollUrl, { maxEvents: 50, returnImmediately: true });
        other = Object.values((obj(r).sets ?? {}) as Record<string, string>)
          .map(decodeSet)
          .find(byTxn(txn));
        if (!other) await ctx.sleep(100);
      }
      check(other, 'the other receiver got no SET');
      const a = s!.claims.sub_id as Record<string, string>;
      const b = other.claims.sub_id as Record<string, string>;
      equal(a.format, 'iss_sub', 'format');
      equal(a.iss, ctx.issuer, 'sub_id.iss');
      check(a.sub !== b.sub, 'two peers see the same identifier');
      check(!JSON.stringify(a).includes(ctx.target.customerId), 'the customer id leaks');
    },
  },
  {
    group: SETS,
    id: 'set-only-linked-peers',
    title: 'events about a customer without a relationship to the peer are not sent to it',
    expect: 'accept',
    async run(ctx) {
      const { name } = await ctx.pushStream();
      const stranger = await ctx.emit({ customerId: ctx.target.strangerId });
      const marker = await ctx.emit();
      await ctx.pushed(name, 1, { filter: byTxn(marker) });
      await ctx.sleep(300);
      check(
        !ctx.target.peer.pushesTo(name).some((p) => decodeSet(p.body).claims.txn === stranger),
        "an unlinked customer's event was sent",
      );
    },
  },
];
