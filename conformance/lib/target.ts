/**
 * The hub under test, as the plan sees it: where it is, how to reach it (a fetch and a dispatcher
 * that trust its CA), its discovery document, the two registered demo clients, the demo customer
 * with an emulated passkey device, and the code / request_uri lifetimes it was configured with.
 *
 * Either started in-process (startLocalTarget, via test/support/hub.ts) or an external hub
 * started with `npm start` (connectTarget, reading the demo client files and CA from its data dir).
 */
import { existsSync, readFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { Agent, buildConnector, fetch as undiciFetch } from 'undici';
import { issueEnrollmentTicket } from '../../src/authn/index.ts';
import type { ConfigInput } from '../../src/config/index.ts';
import { createInitialAccessToken } from '../../src/registration/index.ts';
import { startTestHub } from '../../test/support/hub.ts';
import {
  type ClientFile,
  type ClientIdentity,
  clientFromFile,
  type HubConnection,
  type HubMetadata,
} from './client.ts';
import { createPasskeyUser, type PasskeyUser } from './login.ts';
import { type MtlsFixture, prepareMtlsPki } from './mtls.ts';

export interface Target extends HubConnection {
  /** Human description for the report. */
  label: string;
  /**
   * The private_key_jwt + DPoP variants' clients: `a` is demo-aggregator, `b` is demo-aggregator-2 (for
   * cross-client misuse). The mTLS variants' clients are in `mtls`.
   */
  clients: { a: ClientIdentity; b: ClientIdentity };
  /**
   * Message Signing: demo-signed-aggregator (signed request objects required, JARM only) and
   * demo-resource-server (may introspect); undefined when the hub's data dir has no such files.
   */
  signed?: ClientIdentity | undefined;
  resourceServer?: ClientIdentity | undefined;
  /** A fresh initial access token for one dynamic registration (in-process hubs only). */
  initialAccessToken?: (() => Promise<string>) | undefined;
  /** The demo customer with one emulated passkey device (enrolled at its first login). */
  user: PasskeyUser;
  /** Authorization code lifetime the hub was configured with, seconds (the expiry check waits it out). */
  codeTtl: number;
  /** mTLS clients and certificates (in-process hubs only; the plan runs no mTLS variant without them). */
  mtls?: MtlsFixture;
  /** Where the hub terminates TLS, for the transport checks (raw handshakes). */
  tls?: { host: string; port: number; servername: string; ca?: string };
  close(): Promise<void>;
}

export const DEMO_CUSTOMER_NUMBER = '10000001';

const DEFAULT_CODE_TTL = 60;

function fetchVia(dispatcher: Agent): typeof globalThis.fetch {
  return ((url: string | URL, init?: RequestInit) =>
    undiciFetch(url, { ...(init as object), dispatcher })) as unknown as typeof globalThis.fetch;
}

async function discover(issuer: string, fetch: typeof globalThis.fetch): Promise<HubMetadata> {
  const res = await fetch(`${issuer}/.well-known/openid-configuration`, {
    headers: { accept: 'application/json' },
  });
  if (res.status !== 200) throw new Error(`discovery at ${issuer} answered HTTP ${res.status}`);
  return (await res.json()) as HubMetadata;
}

function readClientFile(file: string): ClientFile {
  return JSON.parse(readFileSync(file, 'utf8')) as ClientFile;
}

/** The Message Signing demo clients in a hub's demo directory (absent files: undefined). */
async function messageSigningClients(demoDir: string): Promise<Pick<Target, 'signed' | 'resourceServer'>> {
  const signed = path.join(demoDir, 'signed-aggregator-client.json');
  const rs = path.join(demoDir, 'resource-server-client.json');
  return {
    signed: existsSync(signed) ? await clientFromFile(readClientFile(signed)) : undefined,
    resourceServer: existsSync(rs)
      ? await clientFromFile(readClientFile(rs), { redirect: false })
      : undefined,
  };
}

export interface LocalTargetOptions {
  /** Configuration overrides for the in-process hub (e.g. short lifetimes). */
  config?: ConfigInput;
  /**
   * Give the hub the issuer `https://localhost` (default port 443, as behind a load balancer)
   * while it listens on a free port; the dispatcher connects there. This makes the "explicit
   * default port in htu" checks meaningful. The mTLS aliases get such an origin too
   * (`https://mtls.localhost`), so the checks apply to mTLS clients' token requests as well.
   */
  defaultPortIssuer?: boolean;
}

/** Starts a hub in-process (PGlite, or a fresh database on TEST_DATABASE_URL) with demo data. */
export async function startLocalTarget(o: LocalTargetOptions = {}): Promise<Target> {
  const pki = await prepareMtlsPki();
  const t = await startTestHub({
    ...(o.defaultPortIssuer ? { issuer: 'https://localhost' } : {}),
    ...o.config,
    mtls: {
      caFiles: [pki.caFile],
      revocation: { crlFiles: [pki.crlFile] },
      ...(o.defaultPortIssuer ? { baseUrl: 'https://mtls.localhost' } : {}),
      ...o.config?.mtls,
    },
  }).catch((err: unknown) => {
    pki.discard();
    throw err;
  });
  let mtls: MtlsFixture | undefined;
  try {
    const { port } = t.hub.server.address() as AddressInfo;
    const connector = buildConnector({ ca: t.caPem });
    // Every connection goes to the port the hub really listens on, whatever the URL says.
    const dispatcher = new Agent({
      keepAliveTimeout: 1000,
      connect: (opts, callback) =>
        connector(
          { ...opts, hostname: t.hub.config.host, port: String(port), servername: 'localhost' },
          callback,
        ),
    });
    const fetch = fetchVia(dispatcher);
    mtls = await pki.register(t, port);
    const demo = t.hub.demo;
    if (!demo) throw new Error('the in-process hub has no demo data');
    const metadata = await discover(t.issuer, fetch);
    const clients = {
      a: await clientFromFile(readClientFile(demo.clientFile)),
      b: await clientFromFile(
        readClientFile(path.join(path.dirname(demo.clientFile), 'aggregator-client-2.json')),
      ),
    };
    const user = createPasskeyUser({
      fetch,
      customerNumber: demo.customerNumber,
      ticket: async () =>
        (
          await issueEnrollmentTicket(t.hub.authn, {
            customerId: demo.customerId,
            issuedBy: 'operator:conformance',
          })
        ).ticket,
    });
    return {
      label: `in-process hub ${t.issuer} (${t.hub.db.kind}${t.hub.config.databaseUrl ? ', TEST_DATABASE_URL' : ''})`,
      issuer: t.issuer,
      fetch,
      dispatcher,
      metadata,
      clients,
      ...(await messageSigningClients(path.dirname(demo.clientFile))),
      initialAccessToken: async () =>
        (await createInitialAccessToken(t.hub.db, 600, 'operator:conformance')).value,
      user,
      codeTtl: t.hub.config.oidc.authorizationCodeTtl,
      mtls,
      tls: { host: t.hub.config.host, port, servername: 'localhost', ca: t.caPem },
      async close() {
        await dispatcher.close();
        await mtls?.close();
        await t.close();
      },
    };
  } catch (err) {
    await mtls?.close();
    pki.discard();
    await t.close();
    throw err;
  }
}

export interface ExternalTargetOptions {
  issuer: string;
  /** The hub's data directory: demo/aggregator-client*.json and tls/ca.pem. */
  dataDir: string;
  /** A one-time enrollment ticket for the demo customer (`npm run kakehashi -- enroll-ticket 10000001`). */
  ticket: string;
  customerNumber?: string;
  /** The hub's authorization code lifetime, if not the default 60 s. */
  codeTtl?: number;
}

/** A hub started elsewhere (`npm start`). */
export async function connectTarget(o: ExternalTargetOptions): Promise<Target> {
  const issuer = o.issuer.replace(/\/$/, '');
  const caFile = path.join(o.dataDir, 'tls', 'ca.pem');
  // A hub with operator-supplied certificates has no dev CA: trust the system store then.
  const dispatcher = new Agent({
    keepAliveTimeout: 1000,
    ...(existsSync(caFile) ? { connect: { ca: readFileSync(caFile, 'utf8') } } : {}),
  });
  const fetch = fetchVia(dispatcher);
  try {
    const metadata = await discover(issuer, fetch);
    const clients = {
      a: await clientFromFile(readClientFile(path.join(o.dataDir, 'demo', 'aggregator-client.json'))),
      b: await clientFromFile(readClientFile(path.join(o.dataDir, 'demo', 'aggregator-client-2.json'))),
    };
    return {
      label: `external hub ${issuer}`,
      issuer,
      fetch,
      dispatcher,
      metadata,
      clients,
      ...(await messageSigningClients(path.join(o.dataDir, 'demo'))),
      user: createPasskeyUser({
        fetch,
        customerNumber: o.customerNumber ?? DEMO_CUSTOMER_NUMBER,
        ticket: o.ticket,
      }),
      codeTtl: o.codeTtl ?? DEFAULT_CODE_TTL,
      tls: {
        host: new URL(issuer).hostname,
        port: Number(new URL(issuer).port || 443),
        servername: new URL(issuer).hostname,
        ...(existsSync(caFile) ? { ca: readFileSync(caFile, 'utf8') } : {}),
      },
      close: () => dispatcher.close(),
    };
  } catch (err) {
    await dispatcher.close();
    throw err;
  }
}
