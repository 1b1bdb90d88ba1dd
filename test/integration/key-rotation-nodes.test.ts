/**
 * Two hub nodes on one database agree on the signing keys through a rotation made elsewhere (the
 * CLI): neither is restarted or told, each follows the signing_keys table by its own poll.
 * On a real PostgreSQL (TEST_DATABASE_URL) each node has its own connection pool; on PGlite, which is
 * single-process, both nodes share one embedded database (docs/key-rotation.md).
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createLocalJWKSet, decodeProtectedHeader, type JSONWebKeySet, jwtVerify } from 'jose';
import { Agent, fetch as undiciFetch } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/index.ts';
import { type Db, openDb } from '../../src/db/index.ts';
import { type Hub, startHub } from '../../src/hub.ts';
import { runKeysCommand } from '../../src/keys/command.ts';
import { listSigningKeys } from '../../src/keys/index.ts';
import { createLogger } from '../../src/log.ts';
import { createTestDatabase, realPostgresUrl } from '../support/db.ts';
import { freePort } from '../support/hub.ts';

interface Node {
  hub: Hub;
  agent: Agent;
  dataDir: string;
}

let database: Awaited<ReturnType<typeof createTestDatabase>>;
let shared: Db | undefined;
let cliDb: Db;
const nodes: Node[] = [];
let issuer: string;
let clientId: string;
const kek = randomBytes(32).toString('base64url');

beforeAll(async () => {
  database = await createTestDatabase();
  // PGlite: one embedded database for both nodes (and the CLI); a real server: a pool each.
  if (!database.url) shared = await openDb({ dataDir: '', inMemory: true });
  const ports = [await freePort(), await freePort()];
  issuer = `https://localhost:${ports[0]}`;
  for (const [i, port] of ports.entries()) {
    const dataDir = mkdtempSync(path.join(tmpdir(), 'kakehashi-node-'));
    const config = loadConfig({
      env: {},
      configDir: path.join(dataDir, 'none'),
      overrides: {
        port,
        dataDir,
        // One issuer behind a load balancer; every node has the same KEK.
        issuer,
        keyEncryptionKey: kek,
        keys: { pollSeconds: 1 },
        logLevel: 'silent',
        demo: i === 0,
        ...(database.url ? { databaseUrl: database.url, databasePoolSize: 4 } : {}),
      },
    });
    const hub = await startHub(config, { logger: createLogger('silent'), ...(shared ? { db: shared } : {}) });
    nodes.push({ hub, dataDir, agent: new Agent({ connect: { ca: readFileSync(hub.caPath!, 'utf8') } }) });
  }
  clientId = (JSON.parse(readFileSync(nodes[0]!.hub.demo!.clientFile, 'utf8')) as { client_id: string })
    .client_id;
  cliDb = shared ?? (await openDb({ databaseUrl: database.url, dataDir: '', poolSize: 1 }));
});

afterAll(async () => {
  for (const n of nodes) {
    await n.agent.close();
    await n.hub.close();
    rmSync(n.dataDir, { recursive: true, force: true });
  }
  await cliDb?.close();
  await database?.drop();
});

async function jwksOf(n: Node): Promise<JSONWebKeySet> {
  const res = await undiciFetch(`https://localhost:${n.hub.config.port}/jwks`, { dispatcher: n.agent });
  expect(res.status).toBe(200);
  return (await res.json()) as JSONWebKeySet;
}
const kidsOf = (set: JSONWebKeySet) => set.keys.map((k) => k.kid);

/** An ID token for the demo client, signed by this node's provider the way its token endpoint signs. */
async function signedBy(n: Node): Promise<string> {
  const { provider } = n.hub;
  const client = await provider.Client.find(clientId);
  const token = new provider.IdToken({ sub: 'cus_nodes' }, { client: client!, ctx: undefined as never });
  return token.issue({ use: 'idtoken' });
}
const kidOf = (jwt: string) => decodeProtectedHeader(jwt).kid;

describe('two nodes on one database', () => {
  it('publish the same next key, switch to it together, verify what was signed before, retire after the wait', async () => {
    const [a, b] = nodes as [Node, Node];
    expect(realPostgresUrl === undefined || shared === undefined).toBe(true);
    expect(await jwksOf(a)).toEqual(await jwksOf(b));
    const before = await signedBy(b);
    const oldKid = kidOf(before)!;
    expect(kidOf(await signedBy(a))).toBe(oldKid);

    // The operator rotates from a third process (its own connection); the nodes are not told.
    const out: string[] = [];
    const code = await runKeysCommand({
      db: cliDb,
      config: a.hub.config,
      args: ['rotate'],
      algs: ['ES256'],
      activateAfter: '8',
      operator: 'operator:test',
      out: (l) => out.push(l),
    });
    expect(code).toBe(0);
    const newKid = (await listSigningKeys(cliDb)).find((k) => k.status === 'next')!.kid;

    for (const n of nodes)
      await expect
        .poll(async () => kidsOf(await jwksOf(n)), { timeout: 5000, interval: 200 })
        .toContain(newKid);
    const published = await jwksOf(a);
    expect(await jwksOf(b)).toEqual(published);
    // current keys first, then the next one
    expect(kidsOf(published)).toHaveLength(4);
    expect(kidsOf(published).at(-1)).toBe(newKid);
    // Published as next: neither signs with it yet.
    expect([kidOf(await signedBy(a)), kidOf(await signedBy(b))]).toEqual([oldKid, oldKid]);
    expect((await listSigningKeys(cliDb)).find((k) => k.kid === newKid)?.status).toBe('next');

    // After activation both sign with the new key, by their own polls.
    for (const n of nodes)
      await expect
        .poll(async () => kidOf(await signedBy(n)), { timeout: 15_000, interval: 250 })
        .toBe(newKid);
    const after = await jwksOf(b);
    expect(await jwksOf(a)).toEqual(after);
    expect(kidsOf(after)).toContain(oldKid);
    // What node B signed before the rotation verifies with the JWKS node A publishes now, and vice versa.
    for (const [token, set] of [
      [before, await jwksOf(a)],
      [await signedBy(a), await jwksOf(b)],
    ] as const)
      await expect(
        jwtVerify(token, createLocalJWKSet(set), { issuer, audience: clientId }),
      ).resolves.toBeDefined();

    // The old key stays until its retirement time (the schedule is moved rather than waited for)...
    for (const n of nodes) await n.hub.signingKeys.refresh();
    expect(kidsOf(await jwksOf(a))).toContain(oldKid);
    expect(kidsOf(await jwksOf(b))).toContain(oldKid);
    await cliDb.query("UPDATE signing_keys SET retired_at = now() - interval '1 second' WHERE kid = $1", [
      oldKid,
    ]);
    // ...then one node retires it and both stop publishing it, by their polls.
    for (const n of nodes)
      await expect
        .poll(async () => kidsOf(await jwksOf(n)), { timeout: 5000, interval: 200 })
        .not.toContain(oldKid);
    expect(await jwksOf(a)).toEqual(await jwksOf(b));
    const retirements = await cliDb.query<{ n: number }>(
      "SELECT count(*)::int AS n FROM audit_events WHERE type = 'keys.lifecycle' AND data->'retired' @> $1::jsonb",
      [JSON.stringify([{ kid: oldKid }])],
    );
    expect(retirements.rows[0]?.n).toBe(1);
  });
});
