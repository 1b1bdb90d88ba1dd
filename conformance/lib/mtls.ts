/**
 * What the mTLS group (checks/mtls.ts) needs of an in-process hub: a client CA the hub trusts for
 * tls_client_auth (made before the hub starts, so it can be configured), clients registered through the
 * operator's policy for each mTLS variant, certificates that must not work, and fetches that present a
 * given certificate — routed to the hub's main or mTLS listener by the port the URL names.
 *
 * An external hub (`connectTarget`) has no such fixture: its operator registers clients, and the
 * mTLS checks report themselves not applicable there.
 */
import { createPublicKey, generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Agent, buildConnector, fetch as undiciFetch } from 'undici';
import { jwkThumbprint } from '../../src/keys/index.ts';
import { addClient } from '../../src/oidc/clients.ts';
import type { TestHub } from '../../test/support/hub.ts';
import { createSelfSigned, createTestCa, type TestCa, type TestCertificate } from '../../test/support/pki.ts';

export type MtlsAuth = 'private_key_jwt' | 'tls_client_auth' | 'self_signed_tls_client_auth';
export type MtlsSender = 'dpop' | 'mtls';

export interface MtlsClient {
  clientId: string;
  auth: MtlsAuth;
  sender: MtlsSender;
  redirectUri: string;
  /** The certificate it presents (authentication and/or token binding). */
  cert: TestCertificate;
  /** private_key_jwt only. */
  signingKey?: CryptoKey;
  kid?: string;
}

export interface MtlsFixture {
  /** Origin of the hub's mtls_endpoint_aliases. */
  origin: string;
  clients: {
    tlsDpop: MtlsClient;
    tlsBound: MtlsClient;
    selfSignedDpop: MtlsClient;
    selfSignedBound: MtlsClient;
    privateKeyJwtBound: MtlsClient;
  };
  /** Certificates that must not authenticate anybody or match any binding. */
  strangers: {
    /** Issued by the trusted CA, with a subject no client registered. */
    trustedCa: TestCertificate;
    /** tlsBound's subject and SAN, issued by a CA the hub does not trust. */
    untrustedCa: TestCertificate;
    /** Self-signed, in no client's jwks. */
    selfSigned: TestCertificate;
  };
  /** A fetch presenting `cert` (none when undefined), trusting the hub's CA. */
  fetchWith(cert: TestCertificate | undefined): typeof globalThis.fetch;
  close(): Promise<void>;
}

export interface MtlsPki {
  /** Configuration for the hub: trust this CA for tls_client_auth. */
  caFile: string;
  /** Registers the clients on the started hub and builds the fixture. */
  register(t: TestHub, mainPort: number): Promise<MtlsFixture>;
  /** Removes the CA file (when the hub never started). */
  discard(): void;
}

export async function prepareMtlsPki(): Promise<MtlsPki> {
  const ca = await createTestCa('CN=Conformance Client CA, O=Kakehashi conformance, C=JP');
  const dir = mkdtempSync(path.join(tmpdir(), 'kkh-conformance-mtls-'));
  const caFile = path.join(dir, 'client-ca.pem');
  writeFileSync(caFile, ca.certPem);
  return {
    caFile,
    discard: () => rmSync(dir, { recursive: true, force: true }),
    async register(t, mainPort) {
      const mtlsPort = (t.hub.mtlsServer!.address() as AddressInfo).port;
      const agents: Agent[] = [];
      const fetchWith = (cert: TestCertificate | undefined) => {
        const connector = buildConnector({
          ca: t.caPem,
          ...(cert ? { cert: cert.certPem, key: cert.keyPem } : {}),
        });
        const agent = new Agent({
          keepAliveTimeout: 1000,
          // The mTLS port as named; every other URL (e.g. an issuer on :443) to the main listener.
          connect: (opts, callback) =>
            connector(
              {
                ...opts,
                hostname: t.hub.config.host,
                port: opts.port === String(mtlsPort) ? String(mtlsPort) : String(mainPort),
                servername: 'localhost',
              },
              callback,
            ),
        });
        agents.push(agent);
        return ((url: string | URL, init?: RequestInit) =>
          undiciFetch(url, { ...(init as object), dispatcher: agent })) as unknown as typeof globalThis.fetch;
      };
      const redirectUri = t.demoClient.redirect_uris[0]!;
      const reg = (auth: MtlsAuth, sender: MtlsSender) =>
        registerClient(t, ca, { auth, sender, redirectUri });
      const clients = {
        tlsDpop: await reg('tls_client_auth', 'dpop'),
        tlsBound: await reg('tls_client_auth', 'mtls'),
        selfSignedDpop: await reg('self_signed_tls_client_auth', 'dpop'),
        selfSignedBound: await reg('self_signed_tls_client_auth', 'mtls'),
        privateKeyJwtBound: await reg('private_key_jwt', 'mtls'),
      };
      const untrusted = await createTestCa('CN=Conformance Client CA, O=Kakehashi conformance, C=JP');
      return {
        origin: t.hub.mtlsUrl!,
        clients,
        strangers: {
          trustedCa: await ca.issue({ subject: 'CN=nobody, O=Kakehashi conformance, C=JP' }),
          untrustedCa: await untrusted.issue(subjectOf(clients.tlsBound.clientId)),
          selfSigned: await createSelfSigned({ subject: 'CN=unregistered' }),
        },
        fetchWith,
        async close() {
          await Promise.all(agents.map((a) => a.close()));
          rmSync(dir, { recursive: true, force: true });
        },
      };
    },
  };
}

const subjectOf = (clientId: string) => ({
  subject: `CN=${clientId}, O=Kakehashi conformance, C=JP`,
  san: [{ type: 'dns' as const, value: `${clientId}.conformance.example` }],
});

/** Registers one client through the operator's FAPI policy (src/oidc/clients.ts). */
async function registerClient(
  t: TestHub,
  ca: TestCa,
  o: { auth: MtlsAuth; sender: MtlsSender; redirectUri: string },
): Promise<MtlsClient> {
  const clientId = `conformance-${o.auth}-${o.sender}`.replaceAll('_', '-');
  const metadata: Record<string, unknown> = {
    client_id: clientId,
    client_name: `Conformance ${o.auth} × ${o.sender}`,
    redirect_uris: [o.redirectUri],
    grant_types: ['authorization_code', 'refresh_token'],
    scope: 'openid offline_access accounts',
    token_endpoint_auth_method: o.auth,
    ...(o.sender === 'dpop'
      ? { dpop_bound_access_tokens: true }
      : { tls_client_certificate_bound_access_tokens: true }),
  };
  const out: MtlsClient = {
    clientId,
    auth: o.auth,
    sender: o.sender,
    redirectUri: o.redirectUri,
  } as MtlsClient;
  if (o.auth === 'tls_client_auth') {
    out.cert = await ca.issue(subjectOf(clientId));
    // One client names its subject DN, the other a SAN (RFC 8705 §2.1.2).
    if (o.sender === 'dpop') metadata.tls_client_auth_subject_dn = subjectOf(clientId).subject;
    else metadata.tls_client_auth_san_dns = `${clientId}.conformance.example`;
  } else if (o.auth === 'self_signed_tls_client_auth') {
    out.cert = await createSelfSigned({ subject: `CN=${clientId}` });
    const jwk = createPublicKey(out.cert.certPem).export({ format: 'jwk' });
    metadata.jwks = { keys: [{ ...jwk, use: 'sig', x5c: [out.cert.x5c] }] };
  } else {
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const pub = publicKey.export({ format: 'jwk' }) as { kty: string };
    out.kid = jwkThumbprint(pub);
    metadata.jwks = { keys: [{ ...pub, kid: out.kid, alg: 'ES256', use: 'sig' }] };
    metadata.token_endpoint_auth_signing_alg = 'ES256';
    out.signingKey = await crypto.subtle.importKey(
      'pkcs8',
      privateKey.export({ format: 'der', type: 'pkcs8' }),
      { name: 'ECDSA', namedCurve: 'P-256' },
      false,
      ['sign'],
    );
    // Only binds tokens: nobody needs to trust it.
    out.cert = await createSelfSigned({ subject: `CN=${clientId}` });
  }
  await addClient(t.hub.db, metadata, 'operator:conformance');
  return out;
}
