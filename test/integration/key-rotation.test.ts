/**
 * Signing-key rotation on a running hub (no restart), with real sign-ins by the demo aggregator, the
 * `keys` CLI, and the key-encryption key's rotation (`keys rekey`). docs/key-rotation.md.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createLocalJWKSet, decodeProtectedHeader, type JSONWebKeySet, jwtVerify } from 'jose';
import * as client from 'openid-client';
import { Agent, fetch as undiciFetch } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { completeLogin } from '../../conformance/lib/login.ts';
import { loadConfig } from '../../src/config/index.ts';
import type { Queryable } from '../../src/db/index.ts';
import {
  type BankConfig,
  createBankFederation,
  FederationError,
  loadRpKey,
  stageRpKey,
} from '../../src/federation/index.ts';
import { runKeysCommand } from '../../src/keys/command.ts';
import {
  advanceKeyLifecycle,
  encryptAtRest,
  keyLifecycleSettings,
  listSigningKeys,
  loadKeyEncryptionKey,
  loadKeyMaterial,
  rekeyAtRest,
} from '../../src/keys/index.ts';
import { SEALED_COLUMNS } from '../../src/keys/rekey.ts';
import { LinkError, loadPolicy, startBankLink } from '../../src/linking/index.ts';
import { enrollDemoCustomer } from '../support/customer.ts';
import { testDb } from '../support/db.ts';
import { startTestHub, type TestHub } from '../support/hub.ts';
import type { PasskeyEmulator } from '../support/passkeyEmulator.ts';
import { demoRp, redeem, startAuthorization } from '../support/rp.ts';
import { startUpstreamOp } from '../support/upstreamOp.ts';
import { waitFor } from '../support/waitFor.ts';

let t: TestHub;
let device: PasskeyEmulator;

/** fetch that trusts a test CA (an upstream OP's). */
const fetchWithCa = (ca: string) => {
  const dispatcher = new Agent({ connect: { ca } });
  return (url: string, init: Parameters<typeof undiciFetch>[1] = {}) =>
    undiciFetch(url, { ...init, dispatcher });
};

beforeAll(async () => {
  t = await startTestHub({ keys: { pollSeconds: 1 } });
  device = await enrollDemoCustomer(t);
});
afterAll(() => t?.close());

async function jwks(): Promise<JSONWebKeySet> {
  const res = await t.fetch(`${t.issuer}/jwks`);
  expect(res.status).toBe(200);
  return (await res.json()) as JSONWebKeySet;
}
const kidsOf = (set: JSONWebKeySet) => set.keys.map((k) => k.kid);

/** A full sign-in of the demo customer at the demo aggregator: the ID token it gets. */
async function idToken(): Promise<string> {
  const rp = await demoRp(t);
  const auth = await startAuthorization(rp, 'openid');
  const callback = await completeLogin({ fetch: t.fetch, authorizationUrl: auth.url, device });
  const tokens = await redeem(rp, auth, callback);
  return tokens.id_token!;
}

async function verifies(token: string, set: JSONWebKeySet): Promise<boolean> {
  try {
    await jwtVerify(token, createLocalJWKSet(set), { issuer: t.issuer, audience: t.demoClient.client_id });
    return true;
  } catch {
    return false;
  }
}

async function keysCli(...args: string[]): Promise<{ code: number; out: string[]; err: string[] }> {
  const out: string[] = [];
  const err: string[] = [];
  const [action = 'list', ...rest] = args;
  const algs = rest.flatMap((a, i) => (rest[i - 1] === '--alg' ? [a] : []));
  const activateAfter = rest.find((_a, i) => rest[i - 1] === '--activate-after');
  const code = await runKeysCommand({
    db: t.hub.db,
    config: t.hub.config,
    args: [action],
    algs,
    activateAfter,
    operator: 'operator:test',
    out: (l) => out.push(l),
    err: (l) => err.push(l),
  });
  return { code, out, err };
}

/** The logout page accepts the token as id_token_hint (it verifies with the hub's keystore). */
async function acceptedAsHint(token: string): Promise<boolean> {
  const res = await t.fetch(
    `${t.issuer}/session/end?id_token_hint=${token}&client_id=${t.demoClient.client_id}`,
  );
  await res.text();
  return res.status === 200;
}

describe('signing-key rotation on a running hub', () => {
  it('publishes the next key first, then signs with it, keeps the old one until its tokens expired, then retires it', async () => {
    const before = await jwks();
    const oldToken = await idToken();
    const oldKid = decodeProtectedHeader(oldToken).kid!;
    expect(before.keys.find((k) => k.kid === oldKid)?.alg).toBe('ES256');
    expect(await verifies(oldToken, before)).toBe(true);

    const rotated = await keysCli('rotate', '--alg', 'ES256', '--activate-after', '8');
    expect(rotated.code).toBe(0);
    const next = (await listSigningKeys(t.hub.db)).find((k) => k.status === 'next');
    expect(next?.alg).toBe('ES256');
    expect(rotated.out[0]).toContain(next!.kid);
    // Only ES256 rotates: PS256 and EdDSA keep their keys.
    expect((await listSigningKeys(t.hub.db)).filter((k) => k.status === 'next')).toHaveLength(1);

    // The node's own poll (keys.pollSeconds = 1) publishes it; nobody calls refresh here.
    await expect
      .poll(async () => kidsOf(await jwks()), { timeout: 5000, interval: 200 })
      .toContain(next!.kid);
    const published = await jwks();
    expect(kidsOf(published)).toEqual([...kidsOf(before), next!.kid]);
    // Published, but not signing yet (it activates 8 s after the rotation).
    const meanwhile = await idToken();
    expect(decodeProtectedHeader(meanwhile).kid).toBe(oldKid);
    expect((await listSigningKeys(t.hub.db)).find((k) => k.kid === next!.kid)?.status).toBe('next');

    // Promotion, by the poll.
    await expect
      .poll(async () => (await listSigningKeys(t.hub.db)).find((k) => k.kid === next!.kid)?.status, {
        timeout: 10_000,
        interval: 250,
      })
      .toBe('current');
    await t.hub.signingKeys.refresh();
    const newToken = await idToken();
    expect(decodeProtectedHeader(newToken).kid).toBe(next!.kid);
    const after = await jwks();
    expect(kidsOf(after)).toContain(oldKid);
    expect(kidsOf(after)).toContain(next!.kid);
    // A client that fetched the JWKS before the rotation verifies nothing new, one that refreshes verifies both.
    for (const token of [oldToken, meanwhile, newToken]) expect(await verifies(token, after)).toBe(true);

    // The old key stays published exactly as long as what it signed can live.
    const keys = await listSigningKeys(t.hub.db);
    const previous = keys.find((k) => k.kid === oldKid)!;
    const current = keys.find((k) => k.kid === next!.kid)!;
    expect(previous.status).toBe('previous');
    const retainSeconds = keyLifecycleSettings(t.hub.config).retainSeconds;
    expect(retainSeconds).toBe(Math.max(600, 120) + 10 + 1);
    expect((previous.retiredAt!.getTime() - current.activatedAt!.getTime()) / 1000).toBeCloseTo(
      retainSeconds,
      0,
    );
    const listed = await keysCli('list');
    expect(listed.out.find((l) => l.includes(oldKid))).toMatch(/^previous +ES256 .* published until /);
    expect(listed.out.find((l) => l.includes(next!.kid))).toMatch(/^current +ES256 .* signing since /);

    // Before that time a poll keeps it...
    await t.hub.signingKeys.refresh();
    expect(kidsOf(await jwks())).toContain(oldKid);
    // ...and once it has passed (the schedule is moved instead of waiting ten minutes), it retires.
    await t.hub.db.query("UPDATE signing_keys SET retired_at = now() - interval '1 second' WHERE kid = $1", [
      oldKid,
    ]);
    await t.hub.signingKeys.refresh();
    expect(kidsOf(await jwks())).not.toContain(oldKid);
    expect(kidsOf(await jwks())).toHaveLength(3);
    const row = await t.hub.db.query<{ status: string; private_jwk_enc: string }>(
      'SELECT status, private_jwk_enc FROM signing_keys WHERE kid = $1',
      [oldKid],
    );
    expect(row.rows[0]).toEqual({ status: 'retired', private_jwk_enc: '' });
    // A relying party may still name an old ID token as id_token_hint at logout.
    expect(await acceptedAsHint(oldToken)).toBe(true);
    expect(await acceptedAsHint(`${oldToken.slice(0, -4)}AAAA`)).toBe(false);
    const audit = await t.hub.db.query<{ type: string }>(
      "SELECT type FROM audit_events WHERE type IN ('keys.rotation_started', 'keys.lifecycle') ORDER BY id",
    );
    expect(audit.rows.map((r) => r.type)).toEqual([
      'keys.rotation_started',
      'keys.lifecycle',
      'keys.lifecycle',
    ]);
  });

  it('rotates every algorithm by default, once until the waiting keys activate, and refuses unknown ones', async () => {
    expect((await keysCli('rotate', '--alg', 'RS256')).code).toBe(2);
    const first = await keysCli('rotate', '--activate-after', '3600');
    expect(first.code).toBe(0);
    const again = await keysCli('rotate');
    expect(again.out.slice(0, 3).every((l) => l.includes('key already waiting'))).toBe(true);
    const next = (await listSigningKeys(t.hub.db)).filter((k) => k.status === 'next');
    expect(next.map((k) => k.alg).sort()).toEqual(['ES256', 'EdDSA', 'PS256']);
    await t.hub.signingKeys.refresh();
    const published = await jwks();
    for (const k of next) expect(kidsOf(published)).toContain(k.kid);
    // An hour away: the current keys still sign.
    expect(decodeProtectedHeader(await idToken()).kid).not.toBe(next.find((k) => k.alg === 'ES256')!.kid);
  });
});

describe('scheduled rotation (keys.rotateEveryDays)', () => {
  it('adds a next key for an algorithm whose current key is older, once', async () => {
    const d = await testDb();
    try {
      const kek = randomBytes(32);
      await loadKeyMaterial(d.db, kek);
      const settings = { activateAfterSeconds: 60, retainSeconds: 620, rotateEveryDays: 30 };
      expect(await advanceKeyLifecycle(d.db, kek, settings)).toEqual({
        promoted: [],
        retired: [],
        rotated: [],
      });
      await d.db.query(
        "UPDATE signing_keys SET activated_at = now() - interval '31 days' WHERE alg = 'PS256'",
      );
      // Not without the setting.
      expect(
        (await advanceKeyLifecycle(d.db, kek, { ...settings, rotateEveryDays: undefined })).rotated,
      ).toEqual([]);
      const changes = await advanceKeyLifecycle(d.db, kek, settings);
      expect(changes.rotated.map((r) => r.alg)).toEqual(['PS256']);
      const next = (await listSigningKeys(d.db)).filter((k) => k.status === 'next');
      expect(next.map((k) => k.kid)).toEqual([changes.rotated[0]!.kid]);
      expect((next[0]!.activatedAt!.getTime() - next[0]!.createdAt.getTime()) / 1000).toBeCloseTo(60, 0);
      // The waiting key is enough: no second one at the next poll.
      expect((await advanceKeyLifecycle(d.db, kek, settings)).rotated).toEqual([]);
    } finally {
      await d.close();
    }
  });
});

/** A bank the hub authenticates to with private_key_jwt (its RP key). */
const fapiBank = (id: string, issuer: string, o: { clientId?: string; caFile?: string } = {}) =>
  ({
    id,
    name: { ja: '銀行', en: 'Bank' },
    issuer,
    clientId: o.clientId ?? 'kakehashi',
    auth: { method: 'private_key_jwt' },
    scope: 'openid',
    acrStrength: {},
    accountClaim: 'bank_account',
    ...(o.caFile ? { caFile: o.caFile } : {}),
  }) satisfies BankConfig;

/** The hub's bank federation (as src/linking builds it) for these banks. */
function federationOf(banks: BankConfig[]) {
  const config = { ...t.hub.config, linking: { ...t.hub.config.linking, banks } };
  return { config, federation: createBankFederation({ config, db: t.hub.db, kek: t.hub.authn.kek! }) };
}

describe('the bank-federation signing key (keys rotate-rp / promote-rp; security review)', () => {
  it('is staged and published first, then promoted: requests sign with it within keys.pollSeconds', async () => {
    const bankOp = await startUpstreamOp({ requirePar: true });
    try {
      const published = async () => {
        const res = await t.fetch(`${t.issuer}/federation/jwks.json`);
        expect(res.status).toBe(200);
        return ((await res.json()) as { keys: Array<{ kid: string }> }).keys;
      };
      const [current] = await published();
      const register = (clientId: string, keys: unknown[]) =>
        bankOp.addClient({
          client_id: clientId,
          redirect_uris: [`${t.issuer}/account/links/callback/${clientId}`],
          token_endpoint_auth_method: 'private_key_jwt',
          token_endpoint_auth_signing_alg: 'ES256',
          id_token_signed_response_alg: 'ES256',
          jwks: { keys },
        });
      // One bank registered the key once; the other learns the next one while it is staged.
      await register('stays', [current]);
      const { federation } = federationOf([
        fapiBank('stays', bankOp.issuer, { clientId: 'stays', caFile: bankOp.caPath }),
        fapiBank('learns', bankOp.issuer, { clientId: 'learns', caFile: bankOp.caPath }),
      ]);
      const start = (bankId: string) =>
        federation.authorizationUrl(bankId, {
          state: client.randomState(),
          nonce: client.randomNonce(),
          codeVerifier: client.randomPKCECodeVerifier(),
        });
      // PAR authenticates the hub with a client assertion.
      await expect(start('stays')).resolves.toBeInstanceOf(URL);

      const staged = await keysCli('rotate-rp');
      expect(staged.out[0]).toMatch(/^new key \S+ is published now/);
      // Each node follows the sealed keys every keys.pollSeconds (1 s here) rather than per request.
      const stagedAt = Date.now();
      const [, next] = await waitFor('the staged key to be published', async () => {
        const keys = await published();
        return keys.length === 2 && keys;
      });
      expect(Date.now() - stagedAt).toBeLessThan(1_000 + 1_000);
      expect((await published()).map((k) => k.kid)).toEqual([current!.kid, next!.kid]);
      expect((await keysCli('rotate-rp')).out[0]).toContain(`key already waiting ${next!.kid}`);
      await register('learns', [current, next]);
      // Staged keys sign nothing yet.
      await expect(start('stays')).resolves.toBeInstanceOf(URL);

      expect((await keysCli('promote-rp')).out[0]).toMatch(new RegExp(`^${next!.kid} signs from now on`));
      const promotedAt = Date.now();
      await waitFor(
        'the promoted key to be published first',
        async () => (await published())[0]!.kid === next!.kid,
      );
      expect(Date.now() - promotedAt).toBeLessThan(1_000 + 1_000);
      expect((await published()).map((k) => k.kid)).toEqual([next!.kid, current!.kid]);
      // Within keys.pollSeconds (1 s here) the promoted key signs: the bank that knows only the old
      // key refuses the hub, the one that learned the new key takes it.
      await waitFor('the promoted key to sign', () =>
        start('stays').then(
          () => false,
          (e: unknown) => e instanceof FederationError,
        ),
      );
      await expect(start('learns')).resolves.toBeInstanceOf(URL);
      expect((await keysCli('promote-rp')).code).toBe(2);
      const audited = await t.hub.db.query<{ type: string; data: { kid: string } }>(
        "SELECT type, data FROM audit_events WHERE type LIKE 'keys.federation.%' ORDER BY id",
      );
      expect(audited.rows.map((r) => [r.type, r.data.kid])).toEqual([
        ['keys.federation.staged', next!.kid],
        ['keys.federation.promoted', next!.kid],
      ]);

      // A rotation now would unpublish the replaced key while a node may still sign with it (its
      // client-authentication key is reloaded only every keys.pollSeconds): refused, naming when.
      const tooSoon = await keysCli('rotate-rp');
      expect(tooSoon.code).toBe(2);
      const promoted = await t.hub.db.query<{ until: Date }>(
        "SELECT created_at + interval '31 seconds' AS until FROM secrets WHERE name = 'federation.rp_signing_key.previous'",
      );
      expect(tooSoon.err).toEqual([
        `refused: the previous key ${current!.kid} was promoted away less than keys.pollSeconds + 30 s ago and a node may still sign with it; a new rotation would unpublish it: run keys rotate-rp again after ${new Date(promoted.rows[0]!.until).toISOString()}`,
      ]);
      expect((await published()).map((k) => k.kid)).toEqual([next!.kid, current!.kid]);
      // Once keys.pollSeconds + 30 s have passed (moved into the past here), it goes ahead.
      await t.hub.db.query(
        "UPDATE secrets SET created_at = created_at - interval '31 seconds' WHERE name = 'federation.rp_signing_key.previous'",
      );
      const later = await keysCli('rotate-rp');
      expect(later.code).toBe(0);
      const third = /^new key (\S+) is published now/.exec(later.out[0]!)![1];
      await waitFor(
        'the third key to be published',
        async () => (await published()).map((k) => k.kid).join() === [next!.kid, third].join(),
      );
    } finally {
      await bankOp.close();
    }
  });

  it('rotate-rp and promote-rp refuse a key that does not open (exit 2, the key named), nothing changed', async () => {
    const d = await testDb();
    try {
      const dataDir = mkdtempSync(path.join(tmpdir(), 'kakehashi-rp-kek-'));
      const kek = randomBytes(32).toString('base64url');
      const config = loadConfig({
        env: {},
        configDir: path.join(dataDir, 'none'),
        overrides: { dataDir, keyEncryptionKey: kek },
      });
      const cli = async (action: string) => {
        const err: string[] = [];
        const code = await runKeysCommand({
          db: d.db,
          config,
          args: [action],
          operator: 'operator:test',
          out: () => {},
          err: (l) => err.push(l),
        });
        return { code, err };
      };
      const sealed = async () =>
        (await d.db.query("SELECT name, value_enc FROM secrets WHERE name LIKE 'federation.%' ORDER BY name"))
          .rows;
      // Sealed with another KEK (a node started with the wrong one, or a restored backup).
      const foreign = (name: string) => encryptAtRest(randomBytes(32), '{}', name);
      await d.db.query('INSERT INTO secrets (name, value_enc) VALUES ($1, $2)', [
        'federation.rp_signing_key',
        foreign('federation.rp_signing_key'),
      ]);
      let before = await sealed();
      for (const action of ['rotate-rp', 'promote-rp']) {
        if (action === 'promote-rp')
          await d.db.query('INSERT INTO secrets (name, value_enc) VALUES ($1, $2)', [
            'federation.rp_signing_key.next',
            foreign('federation.rp_signing_key.next'),
          ]);
        before = await sealed();
        const r = await cli(action);
        expect(r.code, action).toBe(2);
        expect(r.err.join('\n'), action).toMatch(/^refused: .*federation\.rp_signing_key/);
        expect(await sealed(), action).toEqual(before);
      }
    } finally {
      await d.close();
    }
  });
});

/** The JWKS once the node noticed its key is out (within keys.pollSeconds): the 503 answer. */
const jwksFailing = () =>
  waitFor('the JWKS to fail', async () => {
    const r = await t.fetch(`${t.issuer}/federation/jwks.json`);
    if (r.status === 503) return r;
    await r.arrayBuffer();
    return undefined;
  });

/** The demo customer starts linking a private_key_jwt bank nobody can reach. */
async function startLinkAtUnreachableBank() {
  const bank = fapiBank('fapi-bank', 'https://localhost:1');
  const { config, federation } = federationOf([bank]);
  const customerId = t.hub.demo!.customerId;
  const account = await t.hub.db.query<{ id: string }>(
    "SELECT id FROM accounts WHERE customer_id = $1 AND kind = 'securities' LIMIT 1",
    [customerId],
  );
  return startBankLink(
    { db: t.hub.db, config, policy: loadPolicy(), federation, kek: t.hub.authn.kek! },
    {
      customerId,
      sessionUid: 's',
      sessionAcr: 'phr',
      sessionLoginTs: Date.now() / 1000,
      bankId: bank.id,
      accountId: account.rows[0]!.id,
    },
  );
}

/** A second node on the same database: its own bank federation, counting its queries of `secrets`. */
function otherNode(pollSeconds: number) {
  const counted = { secrets: 0 };
  const db: Queryable = {
    query: (sql, params) => {
      if (/\bsecrets\b/.test(sql)) counted.secrets++;
      return t.hub.db.query(sql, params);
    },
    exec: (sql) => t.hub.db.exec(sql),
    afterCommit: (fn) => t.hub.db.afterCommit(fn),
  } as Queryable;
  const config = { ...t.hub.config, keys: { ...t.hub.config.keys, pollSeconds } };
  return { counted, federation: createBankFederation({ config, db, kek: t.hub.authn.kek! }) };
}
const kidsIn = (set: { keys: JsonWebKey[] }) => set.keys.map((k) => (k as { kid: string }).kid);

describe('bank-federation key hygiene (docs/key-rotation.md)', () => {
  it('the published JWKS is opened only when the sealed keys change, and followed on every node within keys.pollSeconds', async () => {
    // Before: every request read and decrypted up to three sealed keys, whoever asked.
    const res = await t.fetch(`${t.issuer}/federation/jwks.json`);
    expect(res.status).toBe(200);
    expect(res.headers.get('cache-control')).toBe('public, max-age=300');
    expect(res.headers.get('content-type')).toContain('application/jwk-set+json');
    const served = (await res.json()) as { keys: JsonWebKey[] };

    const quiet = otherNode(60);
    expect(kidsIn(await quiet.federation.jwks())).toEqual(kidsIn(served));
    const opened = quiet.counted.secrets;
    await Promise.all(Array.from({ length: 20 }, () => quiet.federation.jwks()));
    for (let i = 0; i < 20; i++) await quiet.federation.jwks();
    expect(quiet.counted.secrets).toBe(opened);

    const node = otherNode(1);
    expect(kidsIn(await node.federation.jwks())).toEqual(kidsIn(served));
    const before = node.counted.secrets;
    await new Promise((r) => setTimeout(r, 1_100));
    // Unchanged keys after keys.pollSeconds: one look at the sealed rows, nothing opened.
    expect(kidsIn(await node.federation.jwks())).toEqual(kidsIn(served));
    expect(node.counted.secrets).toBe(before + 1);

    // A promotion (from the CLI, another process in production) reaches both nodes within 1 s.
    const [current, waiting] = kidsIn(served);
    expect((await keysCli('promote-rp')).code).toBe(0);
    const promotedAt = Date.now();
    await waitFor(
      'the other node to publish the promotion',
      async () => kidsIn(await node.federation.jwks()).join() === [waiting, current].join(),
    );
    await waitFor('the hub to publish the promotion', async () => {
      const r = await t.fetch(`${t.issuer}/federation/jwks.json`);
      return kidsIn((await r.json()) as { keys: JsonWebKey[] }).join() === [waiting, current].join();
    });
    expect(Date.now() - promotedAt).toBeLessThan(1_000 + 1_000);
    // A staged key as well, once the replaced key may go.
    await t.hub.db.query(
      "UPDATE secrets SET created_at = created_at - interval '31 seconds' WHERE name = 'federation.rp_signing_key.previous'",
    );
    const staged = /^new key (\S+) is published now/.exec((await keysCli('rotate-rp')).out[0]!)![1];
    const stagedAt = Date.now();
    await waitFor(
      'the other node to publish the staged key',
      async () => kidsIn(await node.federation.jwks()).join() === [waiting, staged].join(),
    );
    expect(Date.now() - stagedAt).toBeLessThan(1_000 + 1_000);
    // The node that looks every 60 s still answers from its copy, without a query.
    expect(kidsIn(await quiet.federation.jwks())).toEqual(kidsIn(served));
    expect(quiet.counted.secrets).toBe(opened);
  });

  it('sends a signed request object only over PAR: a bank without PAR gets plain parameters with PKCE, state and nonce', async () => {
    // Before: a request object signed with the client-authentication key, in the browser's URL.
    const bankOp = await startUpstreamOp({ offerPar: false, offerSignedRequestObject: true });
    try {
      const published = (await (await t.fetch(`${t.issuer}/federation/jwks.json`)).json()) as {
        keys: unknown[];
      };
      await bankOp.addClient({
        client_id: 'no-par',
        redirect_uris: [`${t.issuer}/account/links/callback/no-par`],
        token_endpoint_auth_method: 'private_key_jwt',
        token_endpoint_auth_signing_alg: 'ES256',
        id_token_signed_response_alg: 'ES256',
        jwks: { keys: published.keys },
      });
      const discovery = await fetchWithCa(bankOp.caPem)(`${bankOp.issuer}/.well-known/openid-configuration`);
      const metadata = (await discovery.json()) as Record<string, unknown>;
      // The bank would take a request object, but has no PAR endpoint.
      expect(metadata.request_object_signing_alg_values_supported).toContain('ES256');
      expect(metadata.pushed_authorization_request_endpoint).toBeUndefined();
      const { federation } = federationOf([
        fapiBank('no-par', bankOp.issuer, { clientId: 'no-par', caFile: bankOp.caPath }),
      ]);
      const checks = {
        state: client.randomState(),
        nonce: client.randomNonce(),
        codeVerifier: client.randomPKCECodeVerifier(),
      };
      const url = await federation.authorizationUrl('no-par', checks);
      expect(url.origin + url.pathname).toBe(metadata.authorization_endpoint);
      expect(url.searchParams.has('request')).toBe(false);
      expect(url.searchParams.has('request_uri')).toBe(false);
      expect(Object.fromEntries(url.searchParams)).toMatchObject({
        client_id: 'no-par',
        response_type: 'code',
        redirect_uri: `${t.issuer}/account/links/callback/no-par`,
        state: checks.state,
        nonce: checks.nonce,
        code_challenge: await client.calculatePKCECodeChallenge(checks.codeVerifier),
        code_challenge_method: 'S256',
      });
      // And the bank takes it: on to its sign-in, not an error back to the hub.
      const answer = await fetchWithCa(bankOp.caPem)(url.href, { redirect: 'manual' });
      expect(answer.status).toBe(303);
      expect(answer.headers.get('location')).not.toContain('error=');
    } finally {
      await bankOp.close();
    }
  });
});

describe('key-encryption key rotation (keys rekey)', () => {
  it('re-seals every sealed value with the new KEK in one transaction, the old one readable meanwhile', async () => {
    const d = await testDb();
    try {
      const dataDir = mkdtempSync(path.join(tmpdir(), 'kakehashi-rekey-'));
      const oldKek = randomBytes(32).toString('base64url');
      const newKek = randomBytes(32).toString('base64url');
      const configOf = (keyEncryptionKey: string, additionalKeyEncryptionKeys: string[] = []) =>
        loadConfig({
          env: {},
          configDir: path.join(dataDir, 'none'),
          overrides: { dataDir, keyEncryptionKey, additionalKeyEncryptionKeys },
        });
      const original = await loadKeyMaterial(d.db, loadKeyEncryptionKey(configOf(oldKek)));
      const sealedNow = async () =>
        (
          await d.db.query<{ v: string }>(
            'SELECT private_jwk_enc AS v FROM signing_keys UNION ALL SELECT value_enc FROM secrets ORDER BY 1',
          )
        ).rows.map((r) => r.v);
      const sealedBefore = await sealedNow();

      // Step 1 of the procedure: the new KEK only opens (nodes learn it before anything is sealed with it).
      const learning = loadKeyEncryptionKey(configOf(oldKek, [newKek]));
      expect((await loadKeyMaterial(d.db, learning)).cookieKeys).toEqual(original.cookieKeys);

      // A KEK that opens nothing: refused, and nothing changed.
      const stranger = await runKeysCommand({
        db: d.db,
        config: configOf(randomBytes(32).toString('base64url')),
        args: ['rekey'],
        operator: 'operator:test',
        out: () => {},
        err: () => {},
      });
      expect(stranger).toBe(2);
      expect(await sealedNow()).toEqual(sealedBefore);

      // Step 2: new KEK seals, the old one still opens. Step 3: rekey.
      const switching = configOf(newKek, [oldKek]);
      expect((await loadKeyMaterial(d.db, loadKeyEncryptionKey(switching))).cookieKeys).toEqual(
        original.cookieKeys,
      );
      const out: string[] = [];
      expect(
        await runKeysCommand({
          db: d.db,
          config: switching,
          args: ['rekey'],
          operator: 'operator:test',
          out: (l) => out.push(l),
        }),
      ).toBe(0);
      expect(out[0]).toMatch(/^6 sealed values re-sealed .* 0 already were$/);

      // Step 4: the old KEK is gone; everything opens with the new one alone.
      const after = await loadKeyMaterial(d.db, loadKeyEncryptionKey(configOf(newKek)));
      expect(after.signingJwks).toEqual(original.signingJwks);
      expect(after.cookieKeys).toEqual(original.cookieKeys);
      expect(after.dpopNonceSecret.equals(original.dpopNonceSecret)).toBe(true);
      expect(after.pairwiseSecret.equals(original.pairwiseSecret)).toBe(true);
      await expect(loadKeyMaterial(d.db, loadKeyEncryptionKey(configOf(oldKek)))).rejects.toMatchObject({
        code: 'ERR_KEY_DECRYPT',
      });
      // Idempotent.
      const again = await rekeyAtRest(d.db, loadKeyEncryptionKey(configOf(newKek)), 'operator:test');
      expect(again).toEqual({ resealed: {}, unchanged: 6 });
    } finally {
      await d.close();
    }
  });

  it('re-seals the bank-federation keys; a node whose KEK does not open them says so, never a 500 (security review)', async () => {
    const d = await testDb();
    try {
      const oldKek = randomBytes(32);
      const newKek = randomBytes(32).toString('base64url');
      const signing = await loadRpKey(d.db, oldKek);
      const dpop = await loadRpKey(d.db, oldKek, 'federation.rp_dpop_key');
      expect(signing.kid).not.toBe(dpop.kid);
      const rotating = loadKeyEncryptionKey({
        keyEncryptionKey: newKek,
        additionalKeyEncryptionKeys: [oldKek.toString('base64url')],
        dataDir: '',
      });
      expect((await rekeyAtRest(d.db, rotating, 'operator:test')).resealed['secrets.value_enc']).toBe(2);
      const newOnly = loadKeyEncryptionKey({ keyEncryptionKey: newKek, dataDir: '' });
      expect((await loadRpKey(d.db, newOnly)).kid).toBe(signing.kid);
      expect((await loadRpKey(d.db, newOnly, 'federation.rp_dpop_key')).kid).toBe(dpop.kid);
      // The old KEK alone: a clear error naming the key, and the key is not replaced by a new one.
      const sealed = async () =>
        (await d.db.query("SELECT value_enc FROM secrets WHERE name LIKE 'federation.%' ORDER BY name")).rows;
      const before = await sealed();
      const err = await loadRpKey(d.db, oldKek).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(FederationError);
      expect(err).toMatchObject({
        code: 'ERR_RP_KEY',
        message: expect.stringContaining('federation.rp_signing_key'),
      });
      expect(await sealed()).toEqual(before);
    } finally {
      await d.close();
    }
  });

  it('a relying-party key that does not open: the JWKS answers 503 and a link start blames the hub, not the bank', async () => {
    // Before the fix: a 500 at /federation/jwks.json, and "the bank cannot be reached" at a link start.
    await t.hub.db.query(
      `INSERT INTO secrets (name, value_enc) VALUES ('federation.rp_signing_key', $1)
       ON CONFLICT (name) DO UPDATE SET value_enc = EXCLUDED.value_enc`,
      [encryptAtRest(randomBytes(32), '{}', 'federation.rp_signing_key')],
    );
    // The node notices within keys.pollSeconds.
    const res = await jwksFailing();
    expect(res.headers.get('cache-control')).toBe('no-store');
    expect(await res.json()).toEqual({
      error: 'temporarily_unavailable',
      error_description: 'the relying-party key is unavailable',
    });
    const started = startLinkAtUnreachableBank();
    await expect(started).rejects.toBeInstanceOf(LinkError);
    await expect(started).rejects.toMatchObject({ code: 'ERR_LINK_HUB_UNAVAILABLE' });
    const audited = await t.hub.db.query<{ type: string }>(
      "SELECT type FROM audit_events WHERE type IN ('federation.rp_key.unavailable', 'linking.link.hub_unavailable') ORDER BY id",
    );
    expect(audited.rows.map((r) => r.type)).toEqual([
      'federation.rp_key.unavailable',
      'linking.link.hub_unavailable',
    ]);
    await t.hub.db.query("DELETE FROM secrets WHERE name = 'federation.rp_signing_key'");
  });

  it('knows every sealed column of the schema', async () => {
    const columns = await t.hub.db.query<{ t: string; c: string }>(
      `SELECT table_name AS t, column_name AS c FROM information_schema.columns
       WHERE table_schema = current_schema() AND column_name LIKE '%\\_enc' ORDER BY 1, 2`,
    );
    expect(columns.rows.map((r) => `${r.t}.${r.c}`)).toEqual(
      SEALED_COLUMNS.map((s) => `${s.table}.${s.column}`).sort(),
    );
  });
});

describe('a deleted bank-federation signing key (docs/key-rotation.md)', () => {
  it('is generated at first start only: once one was published, the same error as a key that does not open, until keys rotate-rp', async () => {
    const d = await testDb();
    try {
      const kek = randomBytes(32);
      const generated = async () =>
        (
          await d.db.query<{ data: { secrets: string[] } }>(
            "SELECT data FROM audit_events WHERE type = 'keys.generated' ORDER BY id",
          )
        ).rows.map((r) => r.data.secrets.join());
      const sealedNames = async () =>
        (
          await d.db.query<{ name: string }>(
            "SELECT name FROM secrets WHERE name LIKE 'federation.%' ORDER BY name",
          )
        ).rows.map((r) => r.name);
      // First start: no key ever, so one is generated.
      const first = await loadRpKey(d.db, kek);
      await loadRpKey(d.db, kek, 'federation.rp_dpop_key');
      expect(await generated()).toEqual(['federation.rp_signing_key', 'federation.rp_dpop_key']);

      // Deleted (not corrupt): no silent new key banks would refuse.
      await d.db.query("DELETE FROM secrets WHERE name = 'federation.rp_signing_key'");
      const err = await loadRpKey(d.db, kek).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(FederationError);
      expect(err).toMatchObject({
        code: 'ERR_RP_KEY',
        message: expect.stringMatching(/federation\.rp_signing_key is missing .*keys rotate-rp/),
      });
      expect(await sealedNames()).toEqual(['federation.rp_dpop_key']);
      // The DPoP key is published nowhere (a bank binds short-lived tokens to it): generated again.
      await d.db.query("DELETE FROM secrets WHERE name = 'federation.rp_dpop_key'");
      await loadRpKey(d.db, kek, 'federation.rp_dpop_key');
      expect(await generated()).toEqual([
        'federation.rp_signing_key',
        'federation.rp_dpop_key',
        'federation.rp_dpop_key',
      ]);

      // keys rotate-rp makes a new signing key at once (nothing signs meanwhile anyway).
      const replaced = await stageRpKey(d.db, kek, 'operator:test', { pollSeconds: 10 });
      expect(replaced).toMatchObject({ created: true, replacedMissing: true });
      expect(replaced.kid).not.toBe(first.kid);
      expect((await loadRpKey(d.db, kek)).kid).toBe(replaced.kid);
      // A key that was staged when the signing key went: that one signs (banks may know it already).
      const staged = await stageRpKey(d.db, kek, 'operator:test', { pollSeconds: 10 });
      expect(staged).toMatchObject({ created: true, replacedMissing: false });
      await d.db.query("DELETE FROM secrets WHERE name = 'federation.rp_signing_key'");
      expect(await stageRpKey(d.db, kek, 'operator:test', { pollSeconds: 10 })).toEqual({
        kid: staged.kid,
        created: false,
        replacedMissing: true,
      });
      expect((await loadRpKey(d.db, kek)).kid).toBe(staged.kid);
      expect(await sealedNames()).toEqual(['federation.rp_dpop_key', 'federation.rp_signing_key']);
      // Only the first start and the DPoP key were generated silently; the replacements are audited.
      expect(await generated()).toHaveLength(3);
      const replacements = await d.db.query<{ actor: string; data: { kid: string; wasStaged: boolean } }>(
        "SELECT actor, data FROM audit_events WHERE type = 'keys.federation.replaced' ORDER BY id",
      );
      expect(replacements.rows).toEqual([
        expect.objectContaining({
          actor: 'operator:test',
          data: expect.objectContaining({ kid: replaced.kid, wasStaged: false }),
        }),
        expect.objectContaining({
          actor: 'operator:test',
          data: expect.objectContaining({ kid: staged.kid, wasStaged: true }),
        }),
      ]);
    } finally {
      await d.close();
    }
  });

  it('on a running hub: the JWKS answers 503 and a link start blames the hub until keys rotate-rp, which publishes the new key', async () => {
    await t.hub.db.query("DELETE FROM secrets WHERE name = 'federation.rp_signing_key'");
    const res = await jwksFailing();
    expect(await res.json()).toEqual({
      error: 'temporarily_unavailable',
      error_description: 'the relying-party key is unavailable',
    });
    const started = startLinkAtUnreachableBank();
    await expect(started).rejects.toMatchObject({ code: 'ERR_LINK_HUB_UNAVAILABLE' });
    const rows = await t.hub.db.query("SELECT 1 FROM secrets WHERE name = 'federation.rp_signing_key'");
    expect(rows.rows).toHaveLength(0);

    const r = await keysCli('rotate-rp');
    expect(r.code).toBe(0);
    const kid = /^the signing key was missing: (?:new key|the waiting key) (\S+) signs from now on/.exec(
      r.out[0]!,
    )?.[1];
    expect(kid).toBeDefined();
    await waitFor('the new key to be published', async () => {
      const got = await t.fetch(`${t.issuer}/federation/jwks.json`);
      if (got.status !== 200) return (await got.arrayBuffer()) && false;
      return ((await got.json()) as { keys: Array<{ kid: string }> }).keys[0]!.kid === kid;
    });
  });
});
