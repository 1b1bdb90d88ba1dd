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
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { completeLogin } from '../../conformance/lib/login.ts';
import { loadConfig } from '../../src/config/index.ts';
import {
  type BankConfig,
  createBankFederation,
  FederationError,
  loadRpKey,
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
      const [, next] = await published();
      expect((await published()).map((k) => k.kid)).toEqual([current!.kid, next!.kid]);
      expect((await keysCli('rotate-rp')).out[0]).toContain(`key already waiting ${next!.kid}`);
      await register('learns', [current, next]);
      // Staged keys sign nothing yet.
      await expect(start('stays')).resolves.toBeInstanceOf(URL);

      expect((await keysCli('promote-rp')).out[0]).toMatch(new RegExp(`^${next!.kid} signs from now on`));
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
    const res = await t.fetch(`${t.issuer}/federation/jwks.json`);
    expect(res.status).toBe(503);
    expect(await res.json()).toEqual({
      error: 'temporarily_unavailable',
      error_description: 'the relying-party key is unavailable',
    });
    const bank = fapiBank('fapi-bank', 'https://localhost:1');
    const { config, federation } = federationOf([bank]);
    const customerId = t.hub.demo!.customerId;
    const account = await t.hub.db.query<{ id: string }>(
      "SELECT id FROM accounts WHERE customer_id = $1 AND kind = 'securities' LIMIT 1",
      [customerId],
    );
    const started = startBankLink(
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
