/**
 * Mutual TLS (RFC 8705) for the hub: where client certificates come from (the hub's own mTLS listener
 * or a trusted proxy's header), oidc-provider's `features.mTLS` (tls_client_auth,
 * self_signed_tls_client_auth, certificate-bound tokens), `mtls_endpoint_aliases` for discovery, and
 * the resource server's check that a certificate-bound token arrives over its certificate.
 *
 * One Mtls per configuration (`mtlsFor(config)`), so the provider, the koa app and the listener
 * share it without passing it through every constructor.
 */
import { timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { IncomingMessage } from 'node:http';
import type { ServerOptions } from 'node:https';
import type { Socket } from 'node:net';
import type * as X509 from '@peculiar/x509';
import type { Context, Middleware } from 'koa';
import type { Configuration, KoaContextWithOIDC } from 'oidc-provider';
import { recordAudit } from '../audit/index.ts';
import { recordSampledAudit } from '../audit/sampled.ts';
import { type Config, ConfigError } from '../config/index.ts';
import type { Queryable } from '../db/index.ts';
import { createCrlChecker, loadX509 } from '../tls/index.ts';
import { createCertificateSource, type PresentedCertificate, parsePemBundle } from './certificate.ts';
import { subjectMatches } from './subject.ts';

export {
  type PresentedCertificate,
  parseCertificateHeader,
  proxiedCertificationPath,
  thumbprintOf,
} from './certificate.ts';
export { subjectMatches } from './subject.ts';

export const MTLS_AUTH_METHODS = ['tls_client_auth', 'self_signed_tls_client_auth'] as const;

/** oidc-provider's default routes of the endpoints a client authenticates at or presents tokens to. */
const ALIASED_ROUTES = {
  token_endpoint: '/token',
  pushed_authorization_request_endpoint: '/request',
  revocation_endpoint: '/token/revocation',
  introspection_endpoint: '/token/introspection',
  userinfo_endpoint: '/me',
} as const;

export interface Mtls {
  enabled: boolean;
  /** Public origin of the mTLS endpoint aliases; undefined when there are none (or not yet listening). */
  origin(): string | undefined;
  /** The mTLS listener's actual port (mtls.port 0 lets the system choose it). */
  listening(port: number): void;
  /**
   * Resolves each request's client certificate; audits a certificate header it does not believe, and a
   * revoked (or uncheckable) certificate once per certificate and `mtls.revocation.recheckIntervalMs`.
   */
  middleware(db: Queryable): Middleware;
  /** oidc-provider `features.mTLS`. */
  providerFeature(): NonNullable<NonNullable<Configuration['features']>['mTLS']>;
  /** Discovery members: `mtls_endpoint_aliases` (introspection only when that endpoint is on). */
  discovery(options: { introspection: boolean }): Record<string, unknown>;
  /** TLS options of the mTLS listener, on top of the FAPI server options (src/tls). */
  listenerOptions(): Pick<ServerOptions, 'requestCert' | 'rejectUnauthorized' | 'ca'>;
  /** Call for every connection the mTLS listener accepts. */
  markAliasConnection(socket: Socket): void;
  /** The certificate this request presented, if any. */
  presented(req: IncomingMessage): PresentedCertificate | undefined;
  /** The external origin the client addressed: the alias origin on the mTLS listener/host, else the issuer's. */
  requestOrigin(ctx: Context): string;
}

const instances = new WeakMap<Config, Mtls>();

export function mtlsFor(config: Config): Mtls {
  let m = instances.get(config);
  if (!m) {
    m = createMtls(config);
    instances.set(config, m);
  }
  return m;
}

function loadAnchors(files: readonly string[]) {
  const pems: string[] = [];
  const anchors = files.flatMap((file) => {
    let pem: string;
    try {
      pem = readFileSync(file, 'utf8');
    } catch (err) {
      throw new ConfigError(`mtls.caFiles: cannot read ${file} (${(err as Error).message})`);
    }
    let certs: ReturnType<typeof parsePemBundle>;
    try {
      certs = parsePemBundle(pem);
    } catch (err) {
      throw new ConfigError(
        `mtls.caFiles: ${file} holds an unreadable certificate (${(err as Error).message})`,
      );
    }
    if (!certs.length) throw new ConfigError(`mtls.caFiles: ${file} holds no PEM certificate`);
    pems.push(pem);
    return certs;
  });
  return { anchors, pems };
}

function createMtls(config: Config): Mtls {
  const proxyMode = config.tls.mode === 'proxy';
  const { anchors, pems } = config.mtls.enabled
    ? loadAnchors(config.mtls.caFiles)
    : { anchors: [], pems: [] };
  const host = new URL(config.issuer).hostname;
  const originOnPort = (port: number) =>
    `https://${host.includes(':') && !host.startsWith('[') ? `[${host}]` : host}:${port}`;
  let origin = !config.mtls.enabled
    ? undefined
    : config.mtls.baseUrl
      ? new URL(config.mtls.baseUrl).origin
      : proxyMode || config.mtls.port === 0
        ? undefined
        : originOnPort(config.mtls.port);
  let originHost = origin ? new URL(origin).host : undefined;
  const { enabled: checkRevocation, recheckIntervalMs, ...crlSettings } = config.mtls.revocation;
  const source = createCertificateSource({
    mode: proxyMode ? 'proxy' : 'tls',
    anchors,
    ...(config.mtls.enabled && checkRevocation && anchors.length
      ? { revocation: createCrlChecker(crlSettings, 'mtls.revocation') }
      : {}),
    recheckIntervalMs,
    header: config.mtls.certificateHeader,
    trustedProxies: config.mtls.trustedProxies,
  });
  const certificates = new WeakMap<IncomingMessage, PresentedCertificate>();
  const aliasSockets = new WeakSet<Socket>();
  let x509: typeof X509 | undefined;

  const presented = (req: IncomingMessage) => certificates.get(req);
  const ofCtx = (ctx: KoaContextWithOIDC) => presented(ctx.req);

  return {
    enabled: config.mtls.enabled,
    origin: () => origin,
    listening(port) {
      if (!config.mtls.enabled || config.mtls.baseUrl || proxyMode) return;
      origin = originOnPort(port);
      originHost = new URL(origin).host;
    },
    middleware(db) {
      return async (ctx, next) => {
        if (config.mtls.enabled) {
          const r = await source.resolve(ctx.req);
          if (r.presented) {
            x509 ??= await loadX509();
            certificates.set(ctx.req, r.presented);
            const problem = r.presented.revocation;
            if (problem && r.auditRevocation)
              await recordAudit(db, {
                type:
                  problem.code === 'ERR_CERT_REVOKED'
                    ? 'mtls.certificate.revoked'
                    : 'mtls.certificate.revocation_unavailable',
                outcome: 'failure',
                ip: ctx.ip,
                userAgent: ctx.get('user-agent') || undefined,
                interactionId: ctx.state.interactionId,
                data: {
                  path: ctx.path,
                  thumbprint: r.presented.thumbprint,
                  reason: problem.message,
                  ...problem.detail,
                },
              });
          }
          // Anyone can send the header, on every request: sampled (docs/audit-sampling.md).
          if (r.ignoredHeader)
            await recordSampledAudit(db, {
              type: 'mtls.certificate_header.ignored',
              outcome: 'failure',
              ip: ctx.ip,
              userAgent: ctx.get('user-agent') || undefined,
              interactionId: ctx.state.interactionId,
              data: { peer: r.ignoredHeader.peer, reason: r.ignoredHeader.reason, path: ctx.path },
            });
        }
        await next();
      };
    },
    providerFeature() {
      if (!config.mtls.enabled) return { enabled: false };
      return {
        enabled: true,
        certificateBoundAccessTokens: true,
        tlsClientAuth: true,
        selfSignedTlsClientAuth: true,
        getCertificate: (ctx) => ofCtx(ctx)?.certificate,
        certificateAuthorized: (ctx) => ofCtx(ctx)?.chainTrusted === true,
        certificateSubjectMatches: (ctx, property, expected) => {
          const p = ofCtx(ctx);
          return !!p && !!x509 && subjectMatches(x509, p, property, expected);
        },
      };
    },
    discovery({ introspection }) {
      if (!origin) return {};
      const aliases: Record<string, string> = {};
      for (const [member, path] of Object.entries(ALIASED_ROUTES)) {
        if (member === 'introspection_endpoint' && !introspection) continue;
        aliases[member] = `${origin}${path}`;
      }
      return { mtls_endpoint_aliases: aliases };
    },
    listenerOptions() {
      // Request, never require: a handshake without (or with an unknown) certificate completes, so the
      // client gets an OAuth error instead of a TLS alert, and self-signed certificates reach the
      // self_signed_tls_client_auth check. `ca` decides `socket.authorized` (tls_client_auth).
      return { requestCert: true, rejectUnauthorized: false, ...(pems.length ? { ca: pems } : {}) };
    },
    markAliasConnection(socket) {
      aliasSockets.add(socket);
    },
    presented,
    requestOrigin(ctx) {
      if (origin && (aliasSockets.has(ctx.req.socket) || (proxyMode && ctx.host === originHost)))
        return origin;
      return config.origin;
    },
  };
}

/** Why the certificate of this request does not match `x5t#S256`, or undefined when it does. */
export function certificateBindingProblem(
  presented: PresentedCertificate | undefined,
  expectedThumbprint: string,
): string | undefined {
  if (!presented)
    return 'the access token is certificate-bound: present it over mutual TLS with that certificate';
  const a = Buffer.from(presented.thumbprint, 'base64url');
  const b = Buffer.from(expectedThumbprint, 'base64url');
  // Both are SHA-256 digests; a malformed stored value simply never matches.
  if (a.length !== 32 || b.length !== 32 || !timingSafeEqual(a, b))
    return 'the client certificate does not match the access token binding';
  return undefined;
}
