/**
 * Starts a real hub for a test file: HTTPS on a free loopback port, a temporary data directory
 * (dev CA, KEK, demo client), embedded PGlite — or a fresh database on the real PostgreSQL when
 * TEST_DATABASE_URL is set. Clients talk to it over real HTTP with the dev CA trusted.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Agent, fetch as undiciFetch } from 'undici';
import { type ConfigInput, loadConfig } from '../../src/config/index.ts';
import { type Hub, startHub } from '../../src/hub.ts';
import { createLogger } from '../../src/log.ts';
import { ensureDevTls } from '../../src/tls/index.ts';
import { createTestDatabase } from './db.ts';
import { seedPgliteDataDir } from './pgliteTemplate.ts';

export interface DemoClient {
  issuer: string;
  client_id: string;
  redirect_uris: string[];
  scope: string;
  private_jwk: JsonWebKey & { kid: string; alg: string };
}

export interface TestHub {
  hub: Hub;
  issuer: string;
  caPem: string;
  /** undici dispatcher that trusts the dev CA. */
  dispatcher: Agent;
  /** fetch that trusts the dev CA (give it to openid-client as its customFetch). */
  fetch: typeof globalThis.fetch;
  demoClient: DemoClient;
  dataDir: string;
  close(): Promise<void>;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

/** What a hub that names itself in its configuration (e.g. as its own Shared Signals peer) knows. */
export interface TestHubSelf {
  port: number;
  issuer: string;
  /** Its dev CA, made before it starts (the hub's data directory). */
  caPath: string;
}

/**
 * `overrides` may depend on the hub's own port, issuer and CA (a hub peering with itself): it is then
 * called again with each port tried.
 */
export async function startTestHub(
  overridesFor: ConfigInput | ((self: TestHubSelf) => ConfigInput) = {},
): Promise<TestHub> {
  const dataDir = mkdtempSync(path.join(tmpdir(), 'kakehashi-test-'));
  const database = await createTestDatabase();
  const caPath =
    typeof overridesFor === 'function' ? (await ensureDevTls(dataDir, ['localhost'])).caPath : '';
  const overridesAt = (port: number, issuer: string) =>
    typeof overridesFor === 'function' ? overridesFor({ port, issuer, caPath }) : overridesFor;
  const overrides = overridesAt(0, '');
  const configFor = (port: number) =>
    loadConfig({
      // Test peers listen on loopback: pushes there are allowed (tests of the refusal override it).
      env: { KAKEHASHI_SSF_ALLOW_PRIVATE_ENDPOINTS: 'true' },
      configDir: path.join(dataDir, 'no-config'),
      overrides: {
        port,
        dataDir,
        issuer: `https://localhost:${port}`,
        logLevel: 'silent',
        ...(database.url ? { databaseUrl: database.url, databasePoolSize: 10 } : {}),
        ...overridesAt(port, `https://localhost:${port}`),
      },
    });
  // freePort's port is free when it answers, not necessarily a moment later: the kernel may hand it
  // to another process's outgoing connection meanwhile (seen once in CI as EADDRINUSE). A port the
  // caller chose is used as given; a port chosen here is chosen again.
  let config = configFor(await freePort());
  if (!config.databaseUrl) seedPgliteDataDir(config.dataDir);
  let hub: Hub;
  for (let attempt = 1; ; attempt++) {
    try {
      hub = await startHub(config, { logger: createLogger(process.env.TEST_LOG_LEVEL ?? 'silent') });
      break;
    } catch (err) {
      if ((err as { code?: string }).code !== 'EADDRINUSE' || overrides.port !== undefined || attempt >= 5)
        throw err;
      config = configFor(await freePort());
    }
  }
  // Behind a proxy (tls.mode "proxy") the hub speaks plain HTTP and has no CA of its own.
  const caPem = hub.caPath ? readFileSync(hub.caPath, 'utf8') : '';
  const dispatcher = new Agent({ connect: { ca: caPem }, keepAliveTimeout: 1000 });
  const demoClient = JSON.parse(readFileSync(hub.demo!.clientFile, 'utf8')) as DemoClient;
  return {
    hub,
    issuer: config.issuer,
    caPem,
    dispatcher,
    fetch: ((url: string | URL, init?: RequestInit) =>
      undiciFetch(url, { ...(init as object), dispatcher })) as unknown as typeof globalThis.fetch,
    demoClient,
    dataDir,
    async close() {
      await dispatcher.close();
      await hub.close();
      await database.drop();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}
