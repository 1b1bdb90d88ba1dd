import { createHash, randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Adapter, AdapterPayload } from 'oidc-provider';
import Provider, { errors } from 'oidc-provider';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { type Db, openDb } from '../../src/db/index.ts';
import { loadKeyMaterial } from '../../src/keys/index.ts';
import { createAdapterFactory, deleteExpiredOidcPayloads, rememberJtiOnce } from '../../src/oidc/adapter.ts';
import { type TestDb, testDb } from '../support/db.ts';

let t: TestDb;
let factory: (model: string) => Adapter;
beforeAll(async () => {
  t = await testDb();
  factory = createAdapterFactory(t.db);
});
afterAll(() => t.close());

const id = () => randomBytes(16).toString('base64url');
const now = () => Math.floor(Date.now() / 1000);

async function count(sql: string, params: unknown[] = []): Promise<number> {
  const res = await t.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${sql}`, params);
  return res.rows[0]!.n;
}

async function rejection(p: Promise<unknown>): Promise<Error & { error?: string; statusCode?: number }> {
  try {
    await p;
  } catch (err) {
    return err as Error;
  }
  throw new Error('expected a rejection');
}

describe('oidc_payloads adapter', () => {
  it('upserts, finds and destroys a payload, keyed by model', async () => {
    const session = factory('Session');
    const interaction = factory('Interaction');
    const key = id();
    const payload: AdapterPayload = {
      jti: key,
      kind: 'Session',
      accountId: 'cust-1',
      uid: 'u1',
      loginTs: now(),
    };
    await session.upsert(key, payload, 3600);
    expect(await session.find(key)).toEqual(payload);
    expect(await interaction.find(key)).toBeUndefined();

    await session.upsert(key, { ...payload, accountId: 'cust-2' }, 3600);
    expect((await session.find(key))?.accountId).toBe('cust-2');
    expect(await count("oidc_payloads WHERE model = 'Session' AND id = $1", [key])).toBe(1);

    await session.destroy(key);
    expect(await session.find(key)).toBeUndefined();
    expect(await session.find('missing')).toBeUndefined();
  });

  it('stores the indexed columns and the payload as jsonb', async () => {
    const key = id();
    await factory('DeviceCode').upsert(
      key,
      { jti: key, grantId: 'g-cols', userCode: 'ABCD-EFGH', uid: 'u-cols' },
      60,
    );
    const row = (
      await t.db.query<{ grant_id: string; uid: string; user_code: string; t: string; secs: number }>(
        `SELECT grant_id, uid, user_code, jsonb_typeof(payload) AS t,
           extract(epoch FROM expires_at - now())::float8 AS secs FROM oidc_payloads WHERE id = $1`,
        [key],
      )
    ).rows[0]!;
    expect(row).toMatchObject({ grant_id: 'g-cols', uid: 'u-cols', user_code: 'ABCD-EFGH', t: 'object' });
    expect(row.secs).toBeGreaterThan(55);
    expect(row.secs).toBeLessThanOrEqual(60);
  });

  it('answers invalid_request for a NUL character (jsonb cannot hold it), but keeps a literal backslash-u0000', async () => {
    const interactions = factory('Interaction');
    const err = await rejection(interactions.upsert(id(), { params: { state: 'a\u0000b' } }, 60));
    expect(err).toBeInstanceOf(errors.InvalidRequest);
    expect(err.statusCode).toBe(400);
    const key = id();
    const params = { state: 'a\\u0000b', nonce: 'x\\\\' };
    await interactions.upsert(key, { params }, 60);
    expect((await interactions.find(key))?.params).toEqual(params);
  });

  it('keeps payloads without expiresIn forever and hides expired ones from every finder', async () => {
    const session = factory('Session');
    const forever = id();
    await session.upsert(forever, { jti: forever, uid: 'uid-forever' });
    expect(await count('oidc_payloads WHERE id = $1 AND expires_at IS NULL', [forever])).toBe(1);

    const gone = id();
    await session.upsert(gone, { jti: gone, uid: 'uid-gone' }, 60);
    const device = factory('DeviceCode');
    const dc = id();
    await device.upsert(dc, { jti: dc, userCode: 'EXPI-RED1' }, 60);
    expect(await session.findByUid('uid-gone')).toBeDefined();
    expect(await device.findByUserCode('EXPI-RED1')).toBeDefined();
    await t.db.query(
      "UPDATE oidc_payloads SET expires_at = now() - interval '1 second' WHERE id IN ($1, $2)",
      [gone, dc],
    );
    expect(await session.find(gone)).toBeUndefined();
    expect(await session.findByUid('uid-gone')).toBeUndefined();
    expect(await device.find(dc)).toBeUndefined();
    expect(await device.findByUserCode('EXPI-RED1')).toBeUndefined();
    expect(await session.find(forever)).toBeDefined();
  });

  it('finds a session by uid and a device code by user code, within the model only', async () => {
    const key = id();
    const uid = id();
    await factory('Session').upsert(key, { jti: key, uid, accountId: 'a' }, 60);
    expect((await factory('Session').findByUid(uid))?.jti).toBe(key);
    expect(await factory('Interaction').findByUid(uid)).toBeUndefined();
    expect(await factory('Session').findByUid('nope')).toBeUndefined();

    const dc = id();
    await factory('DeviceCode').upsert(dc, { jti: dc, userCode: 'WXYZ-1234' }, 60);
    expect((await factory('DeviceCode').findByUserCode('WXYZ-1234'))?.jti).toBe(dc);
    expect(await factory('DeviceCode').findByUserCode('NOPE-0000')).toBeUndefined();
  });

  it('marks a payload consumed with epoch seconds, and a later save does not un-consume it', async () => {
    const codes = factory('AuthorizationCode');
    const key = id();
    const payload = { jti: key, clientId: 'c' };
    await codes.upsert(key, payload, 60);
    expect((await codes.find(key))?.consumed).toBeUndefined();
    const before = now();
    await codes.consume(key);
    const found = await codes.find(key);
    expect(found?.consumed).toBeTypeOf('number');
    expect(found!.consumed).toBeGreaterThanOrEqual(before - 1);
    expect(found!.consumed).toBeLessThanOrEqual(now() + 1);

    await codes.upsert(key, payload, 60); // saved again without `consumed`
    expect((await codes.find(key))?.consumed).toBe(found!.consumed);
    const stored = await t.db.query<{ payload: AdapterPayload }>(
      'SELECT payload FROM oidc_payloads WHERE id = $1',
      [key],
    );
    expect(stored.rows[0]!.payload).not.toHaveProperty('consumed');
  });

  it('records `consumed` given in a payload', async () => {
    const rts = factory('RefreshToken');
    const key = id();
    await rts.upsert(key, { jti: key, consumed: 1_700_000_000 }, 60);
    expect((await rts.find(key))?.consumed).toBe(1_700_000_000);
  });

  it('revokeByGrantId deletes every row of the grant, across models, and nothing else', async () => {
    const grantId = id();
    const other = id();
    const models = [
      'AccessToken',
      'RefreshToken',
      'AuthorizationCode',
      'DeviceCode',
      'BackchannelAuthenticationRequest',
    ];
    for (const m of models) {
      await factory(m).upsert(id(), { grantId }, 600);
      await factory(m).upsert(id(), { grantId: other }, 600);
    }
    const session = id();
    await factory('Session').upsert(session, { jti: session, uid: id() }, 600);
    expect(await count('oidc_payloads WHERE grant_id = $1', [grantId])).toBe(models.length);

    await factory('AccessToken').revokeByGrantId(grantId);
    expect(await count('oidc_payloads WHERE grant_id = $1', [grantId])).toBe(0);
    expect(await count('oidc_payloads WHERE grant_id = $1', [other])).toBe(models.length);
    expect(await factory('Session').find(session)).toBeDefined();
  });

  it('finds grant-bound tokens only while their Grant exists', async () => {
    const grantId = id();
    await factory('Grant').upsert(grantId, { jti: grantId, accountId: 'a', clientId: 'c' }, 600);
    const models = ['AccessToken', 'RefreshToken', 'AuthorizationCode', 'DeviceCode'];
    const ids = new Map(models.map((m) => [m, id()]));
    for (const [m, key] of ids) await factory(m).upsert(key, { jti: key, grantId }, 600);
    const free = id();
    await factory('ClientCredentials').upsert(free, { jti: free }, 600);
    for (const [m, key] of ids) expect((await factory(m).find(key))?.jti).toBe(key);

    await factory('Grant').destroy(grantId);
    for (const [m, key] of ids) expect(await factory(m).find(key)).toBeUndefined();
    // Rows are still there (expiry sweeps remove them), they are just dead; tokens without a grant are unaffected.
    expect(await count('oidc_payloads WHERE grant_id = $1', [grantId])).toBe(models.length);
    expect(await factory('ClientCredentials').find(free)).toBeDefined();
  });

  it('a second consume fails with invalid_grant and revokes the grant, Grant included', async () => {
    const grantId = id();
    const code = id();
    const at = id();
    const unrelated = id();
    await factory('Grant').upsert(grantId, { jti: grantId, accountId: 'a', clientId: 'c' }, 600);
    await factory('AuthorizationCode').upsert(code, { jti: code, grantId }, 60);
    await factory('AccessToken').upsert(at, { jti: at, grantId }, 600);
    const otherGrant = id();
    await factory('Grant').upsert(otherGrant, { jti: otherGrant }, 600);
    await factory('AccessToken').upsert(unrelated, { jti: unrelated, grantId: otherGrant }, 600);

    await factory('AuthorizationCode').consume(code);
    const err = await rejection(factory('AuthorizationCode').consume(code));
    expect(err).toBeInstanceOf(errors.InvalidGrant);
    expect(err.error).toBe('invalid_grant');
    expect(err.statusCode).toBe(400);
    expect(err.message).not.toContain(code);

    expect(await factory('Grant').find(grantId)).toBeUndefined();
    expect(await factory('AccessToken').find(at)).toBeUndefined();
    expect(await factory('AuthorizationCode').find(code)).toBeUndefined();
    expect(await factory('AccessToken').find(unrelated)).toBeDefined();

    const audit = await t.db.query<{ data: Record<string, unknown> }>(
      "SELECT data FROM audit_events WHERE type = 'oidc.grant_source.reused' AND data->>'grantId' = $1",
      [grantId],
    );
    expect(audit.rows).toHaveLength(1);
    expect(JSON.stringify(audit.rows[0]!.data)).not.toContain(code);

    // A third attempt finds nothing left and is still invalid_grant.
    expect(await rejection(factory('AuthorizationCode').consume(code))).toBeInstanceOf(errors.InvalidGrant);
  });

  it('consuming a missing code is invalid_grant; a reused request_uri is invalid_request_uri', async () => {
    expect(await rejection(factory('AuthorizationCode').consume('missing'))).toBeInstanceOf(
      errors.InvalidGrant,
    );
    const par = id();
    await factory('PushedAuthorizationRequest').upsert(par, { jti: par }, 60);
    await factory('PushedAuthorizationRequest').consume(par);
    const err = await rejection(factory('PushedAuthorizationRequest').consume(par));
    expect(err).toBeInstanceOf(errors.InvalidRequestUri);
    expect(err.error).toBe('invalid_request_uri');
  });

  it('lets exactly one of 20 concurrent consume() calls on one code win', async () => {
    // On a real server, a pool of 20 so the calls really run in parallel; PGlite has one connection.
    const db: Db = t.url ? await openDb({ databaseUrl: t.url, dataDir: '', poolSize: 20 }) : t.db;
    try {
      const adapters = Array.from({ length: 20 }, () => createAdapterFactory(db)('AuthorizationCode'));
      for (let round = 0; round < 5; round++) {
        const code = id();
        const grantId = id();
        await adapters[0]!.upsert(code, { jti: code, grantId }, 60);
        const results = await Promise.allSettled(adapters.map((a) => a.consume(code)));
        expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
        for (const r of results) {
          if (r.status === 'rejected') expect(r.reason).toBeInstanceOf(errors.InvalidGrant);
        }
      }
    } finally {
      if (db !== t.db) await db.close();
    }
  });
});

describe('rememberJtiOnce (client assertion and DPoP jti replay at the token endpoint)', () => {
  it('lets exactly one of 20 concurrent sightings of one jti through', async () => {
    const jti = id();
    const results = await Promise.all(
      Array.from({ length: 20 }, () => rememberJtiOnce(t.db, jti, 'client-a', 60)),
    );
    expect(results.filter(Boolean)).toHaveLength(1);
    expect(await rememberJtiOnce(t.db, jti, 'client-a', 60)).toBe(false);
  });

  it('treats an expired, not yet swept sighting as unseen', async () => {
    const jti = id();
    await t.db.query(
      `INSERT INTO oidc_payloads (model, id, payload, expires_at) VALUES ('ReplayDetection', $1, '{}', now() - interval '1 second')`,
      [jti],
    );
    expect(await rememberJtiOnce(t.db, jti, 'client-a', 60)).toBe(true);
    expect(await rememberJtiOnce(t.db, jti, 'client-a', 60)).toBe(false);
  });
});

describe('deleteExpiredOidcPayloads', () => {
  it('deletes rows expired longer than the grace period, and nothing else', async () => {
    const [old, recent, live, forever] = [id(), id(), id(), id()];
    await t.db.query(
      `INSERT INTO oidc_payloads (model, id, payload, expires_at) VALUES
       ('Session', $1, '{}', now() - interval '2 hours'), ('Session', $2, '{}', now() - interval '10 minutes'),
       ('Session', $3, '{}', now() + interval '1 hour'), ('Session', $4, '{}', NULL)`,
      [old, recent, live, forever],
    );
    expect(await deleteExpiredOidcPayloads(t.db, 3600)).toBeGreaterThanOrEqual(1);
    const left = await t.db.query<{ id: string }>('SELECT id FROM oidc_payloads WHERE id = ANY($1::text[])', [
      [old, recent, live, forever],
    ]);
    expect(left.rows.map((r) => r.id).sort()).toEqual([recent, live, forever].sort());
  });
});

describe('Client model', () => {
  const clients = () => factory('Client');

  it('reads enabled clients from the clients table, effective immediately', async () => {
    const metadata = {
      redirect_uris: ['https://rp.example/cb'],
      token_endpoint_auth_method: 'private_key_jwt',
    };
    await t.db.query('INSERT INTO clients (client_id, metadata) VALUES ($1, $2)', [
      'rp-1',
      JSON.stringify(metadata),
    ]);
    expect(await clients().find('rp-1')).toEqual({ ...metadata, client_id: 'rp-1' });
    await t.db.query("UPDATE clients SET enabled = false WHERE client_id = 'rp-1'");
    expect(await clients().find('rp-1')).toBeUndefined();
    expect(await clients().find('nobody')).toBeUndefined();
    // Clients never land in oidc_payloads.
    expect(await count("oidc_payloads WHERE model = 'Client'")).toBe(0);
  });

  it('writes registrations to the clients table and deletes them', async () => {
    await clients().upsert('rp-2', { client_id: 'rp-2', redirect_uris: ['https://a.example/cb'] });
    await clients().upsert('rp-2', { client_id: 'rp-2', redirect_uris: ['https://b.example/cb'] });
    expect((await clients().find('rp-2'))?.redirect_uris).toEqual(['https://b.example/cb']);
    await clients().destroy('rp-2');
    expect(await count("clients WHERE client_id = 'rp-2'")).toBe(0);
  });
});

describe('with a real oidc-provider', () => {
  const clientId = 'race-client';
  const clientSecret = randomBytes(32).toString('base64url');
  const redirectUri = 'https://rp.example/cb';
  let provider: Provider;
  let server: Server;
  let base: string;
  /** Holds AuthorizationCode.find until `parties` calls have found the code: forces the race. */
  let gate: { parties: number; waiting: (() => void)[] } = { parties: 1, waiting: [] };

  beforeAll(async () => {
    await t.db.query('INSERT INTO clients (client_id, metadata) VALUES ($1, $2)', [
      clientId,
      JSON.stringify({
        client_secret: clientSecret,
        redirect_uris: [redirectUri],
        grant_types: ['authorization_code', 'refresh_token'],
        response_types: ['code'],
        token_endpoint_auth_method: 'client_secret_post',
        id_token_signed_response_alg: 'ES256',
      }),
    ]);
    const keys = await loadKeyMaterial(t.db, randomBytes(32));
    const inner = createAdapterFactory(t.db);
    const gated = (model: string): Adapter => {
      const a = inner(model);
      if (model !== 'AuthorizationCode') return a;
      return {
        upsert: (...args) => a.upsert(...args),
        findByUid: (v) => a.findByUid(v),
        findByUserCode: (v) => a.findByUserCode(v),
        consume: (v) => a.consume(v),
        destroy: (v) => a.destroy(v),
        revokeByGrantId: (v) => a.revokeByGrantId(v),
        async find(v) {
          const found = await a.find(v);
          gate.waiting.push(() => {});
          await new Promise<void>((resolve) => {
            gate.waiting[gate.waiting.length - 1] = resolve;
            if (gate.waiting.length >= gate.parties) for (const release of gate.waiting.splice(0)) release();
          });
          return found;
        },
      };
    };
    server = createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    provider = new Provider(base, {
      adapter: gated,
      jwks: keys.signingJwks,
      cookies: { keys: keys.cookieKeys },
      findAccount: async (_ctx, sub) => ({ accountId: sub, claims: async () => ({ sub }) }),
    });
    server.on('request', provider.callback());
  });
  afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));
  beforeEach(() => {
    gate = { parties: 1, waiting: [] };
  });

  async function issueCode(): Promise<{ code: string; verifier: string; grantId: string }> {
    const client = await provider.Client.find(clientId);
    const grant = new provider.Grant({ accountId: 'cust-race', clientId });
    grant.addOIDCScope('openid offline_access');
    const grantId = await grant.save();
    const verifier = randomBytes(32).toString('base64url');
    const code = await new provider.AuthorizationCode({
      accountId: 'cust-race',
      grantId,
      client: client!,
      redirectUri,
      scope: 'openid offline_access',
      codeChallenge: createHash('sha256').update(verifier).digest('base64url'),
      codeChallengeMethod: 'S256',
      gty: 'authorization_code',
    }).save();
    return { code, verifier, grantId };
  }

  const token = (params: Record<string, string>) =>
    fetch(`${base}/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ client_id: clientId, client_secret: clientSecret, ...params }),
    }).then(async (r) => ({ status: r.status, body: (await r.json()) as Record<string, string> }));

  const redeem = (c: { code: string; verifier: string }) =>
    token({
      grant_type: 'authorization_code',
      code: c.code,
      redirect_uri: redirectUri,
      code_verifier: c.verifier,
    });

  async function expectDead(tokens: Record<string, string>) {
    const me = await fetch(`${base}/me`, { headers: { authorization: `Bearer ${tokens.access_token}` } });
    expect(me.status).toBe(401);
    const refreshed = await token({ grant_type: 'refresh_token', refresh_token: tokens.refresh_token! });
    expect(refreshed.status).toBe(400);
    expect(refreshed.body.error).toBe('invalid_grant');
  }

  it('issues working tokens for a single redemption', async () => {
    const res = await redeem(await issueCode());
    expect(res.status).toBe(200);
    expect(res.body.refresh_token).toBeTruthy();
    const me = await fetch(`${base}/me`, { headers: { authorization: `Bearer ${res.body.access_token}` } });
    expect(me.status).toBe(200);
    expect(((await me.json()) as { sub: string }).sub).toBe('cust-race');
  });

  it('sequential reuse: oidc-provider sees `consumed`, answers invalid_grant and revokes the grant', async () => {
    const c = await issueCode();
    const first = await redeem(c);
    expect(first.status).toBe(200);
    const second = await redeem(c);
    expect(second).toMatchObject({ status: 400, body: { error: 'invalid_grant' } });
    await expectDead(first.body);
  });

  it('concurrent reuse: exactly one request wins, the other is invalid_grant and kills the winner’s tokens', async () => {
    for (let round = 0; round < 3; round++) {
      const c = await issueCode();
      gate = { parties: 2, waiting: [] };
      const results = await Promise.all([redeem(c), redeem(c)]);
      gate = { parties: 1, waiting: [] };
      const winners = results.filter((r) => r.status === 200);
      const losers = results.filter((r) => r.status !== 200);
      expect(winners).toHaveLength(1);
      expect(losers).toHaveLength(1);
      expect(losers[0]).toMatchObject({ status: 400, body: { error: 'invalid_grant' } });
      // Both requests found the unconsumed code, so it was the adapter's check-and-set that stopped the loser.
      const audit = await t.db.query(
        "SELECT 1 FROM audit_events WHERE type = 'oidc.grant_source.reused' AND data->>'grantId' = $1",
        [c.grantId],
      );
      expect(audit.rowCount).toBe(1);
      await expectDead(winners[0]!.body);
      // What our resource server looks up:
      expect(await provider.AccessToken.find(winners[0]!.body.access_token!)).toBeUndefined();
    }
  });
});
