/**
 * What the mTLS variants need of an in-process hub: a client CA the hub trusts for tls_client_auth
 * (made before the hub starts, so it can be configured), for every variant that uses mTLS (client
 * authentication tls_client_auth / self_signed_tls_client_auth, or certificate-bound tokens) the
 * clients its checks need — `a`, `b` (cross-client misuse) and `signed` (signed request objects and
 * JARM) — registered through the operator's policy, certificates that must not work, and
 * connections that present a given certificate, routed to the hub's main or mTLS listener.
 *
 * An external hub (`connectTarget`) has no such fixture: its operator registers clients, and the
 * plan runs only the private_key_jwt + DPoP variants there.
 */
import { createPublicKey, generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Agent, buildConnector, fetch as undiciFetch } from 'undici';
import { jwkThumbprint } from '../../src/keys/index.ts';
import { addClient } from '../../src/oidc/clients.ts';
import {
  createSelfSigned,
  createTestCa,
  type TestCa,
  type TestCert,
} from '../../test/support/certificates.ts';
import type { TestHub } from '../../test/support/hub.ts';
import type { ClientIdentity } from './client.ts';
import {
  CLIENT_AUTH_VARIANTS,
  type ClientAuthVariant,
  SENDER_CONSTRAINT_VARIANTS,
  type SenderConstraintVariant,
  usesMtls,
  type Variant,
} from './types.ts';

/** The clients of one variant. */
export interface VariantClients {
  a: ClientIdentity;
  b: ClientIdentity;
  /** Registered with require_signed_request_object and JARM response modes only. */
  signed: ClientIdentity;
  /** tls_client_auth only: a certificate with a's subject and SAN from a CA the hub does not trust. */
  impostor?: TestCert;
}

/** Connections presenting one certificate (or none). */
export interface CertificateConnection {
  fetch: typeof globalThis.fetch;
  dispatcher: Agent;
}

export interface MtlsFixture {
  /** Origin of the hub's mtls_endpoint_aliases. */
  origin: string;
  /** The mTLS listener (host and port the dispatchers connect to). */
  listener: { host: string; port: number };
  /** The clients of each variant that uses mTLS. */
  clientsFor(variant: Pick<Variant, 'clientAuth' | 'senderConstraint'>): VariantClients | undefined;
  /** Certificates that must not authenticate anybody or match any binding. */
  strangers: {
    /** Issued by the trusted CA, with a subject no client registered. */
    trustedCa: TestCert;
    /** Self-signed, in no client's jwks. */
    selfSigned: TestCert;
  };
  /** Connections presenting `cert` (none when undefined), trusting the hub's CA; one per certificate. */
  connection(cert: TestCert | undefined): CertificateConnection;
  close(): Promise<void>;
}

export interface MtlsPki {
  /** Configuration for the hub: trust this CA for tls_client_auth. */
  caFile: string;
  /** A current CRL of that CA (mtls.revocation.crlFiles), revoking nothing. */
  crlFile: string;
  /** Registers the clients on the started hub and builds the fixture. */
  register(t: TestHub, mainPort: number): Promise<MtlsFixture>;
  /** Removes the CA file (when the hub never started). */
  discard(): void;
}

const variantKey = (v: Pick<Variant, 'clientAuth' | 'senderConstraint'>) =>
  `${v.clientAuth}+${v.senderConstraint}`;

const defaultPort = (port: string) => port || '443';

export async function prepareMtlsPki(): Promise<MtlsPki> {
  const ca = await createTestCa('CN=Conformance Client CA, O=Kakehashi conformance, C=JP');
  const dir = mkdtempSync(path.join(tmpdir(), 'kkh-conformance-mtls-'));
  const caFile = path.join(dir, 'client-ca.pem');
  writeFileSync(caFile, ca.certPem);
  // The hub refuses CA-issued certificates without a current CRL (mtls.revocation): publish one.
  const crlFile = path.join(dir, 'client-ca.crl.pem');
  writeFileSync(crlFile, await ca.crl());
  return {
    caFile,
    crlFile,
    discard: () => rmSync(dir, { recursive: true, force: true }),
    async register(t, mainPort) {
      const mtlsPort = (t.hub.mtlsServer!.address() as AddressInfo).port;
      const origin = new URL(t.hub.mtlsUrl!);
      const connections = new Map<string, CertificateConnection>();
      const connection = (cert: TestCert | undefined) => {
        const key = cert?.thumbprint ?? '';
        let c = connections.get(key);
        if (c) return c;
        const connector = buildConnector({
          ca: t.caPem,
          ...(cert ? { cert: cert.certPem, key: cert.keyPem } : {}),
        });
        const dispatcher = new Agent({
          keepAliveTimeout: 1000,
          // The alias origin to the mTLS listener, every other URL (e.g. an issuer on :443) to the main one.
          connect: (opts, callback) => {
            const alias =
              opts.hostname === origin.hostname && defaultPort(opts.port) === defaultPort(origin.port);
            connector(
              {
                ...opts,
                hostname: t.hub.config.host,
                port: String(alias ? mtlsPort : mainPort),
                servername: 'localhost',
              },
              callback,
            );
          },
        });
        const fetch = ((url: string | URL, init?: RequestInit) =>
          undiciFetch(url, { ...(init as object), dispatcher })) as unknown as typeof globalThis.fetch;
        c = { fetch, dispatcher };
        connections.set(key, c);
        return c;
      };
      const redirectUri = t.demoClient.redirect_uris[0]!;
      const untrusted = await createTestCa('CN=Conformance Client CA, O=Kakehashi conformance, C=JP');
      const sets = new Map<string, VariantClients>();
      for (const clientAuth of CLIENT_AUTH_VARIANTS)
        for (const senderConstraint of SENDER_CONSTRAINT_VARIANTS) {
          if (!usesMtls({ clientAuth, senderConstraint })) continue;
          const reg = (role: Role) =>
            registerClient(t, ca, { auth: clientAuth, sender: senderConstraint, role, redirectUri });
          const a = await reg('a');
          sets.set(variantKey({ clientAuth, senderConstraint }), {
            a,
            b: await reg('b'),
            signed: await reg('signed'),
            ...(clientAuth === 'tls_client_auth'
              ? { impostor: await untrusted.issue(namesOf(a.clientId)) }
              : {}),
          });
        }
      return {
        origin: origin.origin,
        listener: { host: t.hub.config.host, port: mtlsPort },
        clientsFor: (v) => sets.get(variantKey(v)),
        strangers: {
          trustedCa: await ca.issue({ subject: 'CN=nobody, O=Kakehashi conformance, C=JP' }),
          selfSigned: await createSelfSigned({ subject: 'CN=unregistered' }),
        },
        connection,
        async close() {
          await Promise.all([...connections.values()].map((c) => c.dispatcher.close()));
          rmSync(dir, { recursive: true, force: true });
        },
      };
    },
  };
}

type Role = 'a' | 'b' | 'signed';

/** The subject DN and DNS SAN of a tls_client_auth client's certificates. */
const namesOf = (clientId: string) => ({
  subject: `CN=${clientId}, O=Kakehashi conformance, C=JP`,
  san: [{ type: 'dns' as const, value: `${clientId}.conformance.example` }],
});

async function signingKey(): Promise<{ jwk: Record<string, unknown>; kid: string; privateKey: CryptoKey }> {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const pub = publicKey.export({ format: 'jwk' }) as { kty: string };
  const kid = jwkThumbprint(pub);
  return {
    jwk: { ...pub, kid, alg: 'ES256', use: 'sig' },
    kid,
    privateKey: await crypto.subtle.importKey(
      'pkcs8',
      privateKey.export({ format: 'der', type: 'pkcs8' }),
      { name: 'ECDSA', namedCurve: 'P-256' },
      false,
      ['sign'],
    ),
  };
}

/**
 * Registers one client through the operator's FAPI policy (src/oidc/clients.ts). Every client has an
 * ES256 signing key in its jwks (assertions for private_key_jwt, request objects for all); mTLS
 * clients get two certificates that authenticate them (tls_client_auth: same subject, one client
 * naming its DN and `b` a SAN; self-signed: both in the jwks), a private_key_jwt client two
 * self-signed ones that only bind.
 */
async function registerClient(
  t: TestHub,
  ca: TestCa,
  o: { auth: ClientAuthVariant; sender: SenderConstraintVariant; role: Role; redirectUri: string },
): Promise<ClientIdentity> {
  const clientId = `conformance-${o.auth}-${o.sender}-${o.role}`.replaceAll('_', '-');
  const key = await signingKey();
  const keys: Record<string, unknown>[] = [key.jwk];
  const metadata: Record<string, unknown> = {
    client_id: clientId,
    client_name: `Conformance ${o.auth} × ${o.sender} (${o.role})`,
    redirect_uris: [o.redirectUri],
    grant_types: ['authorization_code', 'refresh_token'],
    scope: 'openid offline_access accounts',
    token_endpoint_auth_method: o.auth,
    id_token_signed_response_alg: 'ES256',
    ...(o.sender === 'dpop'
      ? { dpop_bound_access_tokens: true }
      : { tls_client_certificate_bound_access_tokens: true }),
    ...(o.role === 'signed'
      ? { require_signed_request_object: true, response_modes: ['jwt', 'query.jwt', 'form_post.jwt'] }
      : {}),
  };
  let certificate: TestCert;
  let otherCertificate: TestCert;
  if (o.auth === 'tls_client_auth') {
    const names = namesOf(clientId);
    [certificate, otherCertificate] = [await ca.issue(names), await ca.issue(names)];
    // RFC 8705 §2.1.2: one registered subject value; `b` names its SAN, the others their DN.
    if (o.role === 'b') metadata.tls_client_auth_san_dns = names.san[0]!.value;
    else metadata.tls_client_auth_subject_dn = names.subject;
  } else {
    certificate = await createSelfSigned({ subject: `CN=${clientId}` });
    otherCertificate = await createSelfSigned({ subject: `CN=${clientId}` });
    if (o.auth === 'self_signed_tls_client_auth')
      for (const cert of [certificate, otherCertificate])
        keys.push({
          ...createPublicKey(cert.certPem).export({ format: 'jwk' }),
          use: 'sig',
          x5c: [cert.x5c],
        });
    else metadata.token_endpoint_auth_signing_alg = 'ES256';
  }
  metadata.jwks = { keys };
  await addClient(t.hub.db, metadata, 'operator:conformance');
  return {
    clientId,
    redirectUri: o.redirectUri,
    scope: String(metadata.scope),
    kid: key.kid,
    alg: 'ES256',
    privateKey: key.privateKey,
    authMethod: o.auth,
    senderConstraint: o.sender,
    certificate,
    otherCertificate,
  };
}
