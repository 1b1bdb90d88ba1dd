/**
 * One typed configuration object, validated at start. Sources, later ones win:
 *   1. built-in defaults (the schema below),
 *   2. the JSON file `config/kakehashi.json` (or the path in `KAKEHASHI_CONFIG`), if present,
 *   3. environment variables (see ENVIRONMENT below).
 * A bad value stops the hub with a ConfigError naming the key and the problem.
 */
import { existsSync, readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import path from 'node:path';
import { z } from 'zod';
import { PRODUCTS } from '../linking/productCatalogue.ts';
import { notifyConfigSchema } from '../notify/config.ts';
import { registrationConfigSchema } from '../registration/config.ts';
import { riskConfigSchema } from '../risk/config.ts';

/** Where CRLs come from and what happens without one (src/tls/crl.ts); JPKI proofing and mTLS. */
const crlRevocationSchema = z.object({
  /** PEM or DER CRL files, re-read when they change. */
  crlFiles: z.array(z.string().min(1)).default([]),
  /** Fetch the CRLs the certificates name (CRL distribution points, http/https). */
  fetchDistributionPoints: z.boolean().default(true),
  fetchTimeoutMs: z.number().int().min(100).max(60_000).default(5000),
  maxCrlBytes: z
    .number()
    .int()
    .min(1024)
    .max(200 * 1024 * 1024)
    .default(50 * 1024 * 1024),
  /** No valid CRL for a certificate: refuse it (fail closed) or accept it unchecked. */
  onUnavailable: z.enum(['refuse', 'allow']).default('refuse'),
});

const seconds = z.number().int().positive();

/** Receiver-side actions a received SET may trigger (see src/signals/actions.ts). */
export const SIGNAL_ACTIONS = [
  'revoke_sessions',
  'raise_risk',
  'require_step_up',
  'require_reproofing',
  'suspend_sweeps',
  'notify',
  'forward',
] as const;

/**
 * Actions per received event type. Keys are event-type URIs, optionally narrowed by a `#value`
 * suffix (account-disabled `reason`, risk-level-change `current_level`): the narrower key wins.
 */
const actionMap = z.record(z.string().min(1), z.array(z.enum(SIGNAL_ACTIONS)));

const bankStrengthValue = z.enum(['phishing_resistant', 'otp', 'password', 'unknown']);

/** A bank's OpenID provider the hub is a relying party of, for bank linking (src/federation). */
const bankSchema = z
  .object({
    /** Stable short id (in forms, rows and the callback): letters, digits, `-`, `_`. */
    id: z.string().regex(/^[A-Za-z0-9_-]{1,64}$/),
    /** Shown to customers. */
    name: z.object({ ja: z.string().min(1), en: z.string().min(1) }),
    /** The bank's member institution (an `institutions` row of kind bank), if it is one. */
    institutionId: z.string().min(1).optional(),
    issuer: z.url({ protocol: /^https$/ }),
    clientId: z.string().min(1),
    /**
     * private_key_jwt with the key the hub generates at first start (public part at
     * /federation/jwks.json), or client_secret (basic) for banks without FAPI.
     */
    auth: z
      .discriminatedUnion('method', [
        z.object({ method: z.literal('private_key_jwt') }),
        z.object({ method: z.literal('client_secret'), secret: z.string().min(16) }),
      ])
      .default({ method: 'private_key_jwt' }),
    scope: z.string().min(1).default('openid profile'),
    /** Passed as the `claims` request parameter (e.g. verified_claims with a name). */
    claims: z.record(z.string(), z.unknown()).optional(),
    acrValues: z.array(z.string().min(1)).optional(),
    /** The bank's own acr values and the strength class each means; amr decides otherwise. */
    acrStrength: z.record(z.string(), bankStrengthValue).default({}),
    /**
     * The one JWS algorithm the bank signs ID tokens with (registered there as
     * id_token_signed_response_alg); unset: any of PS256, ES256, EdDSA (FAPI 2.0).
     */
    idTokenSigningAlg: z.enum(['PS256', 'ES256', 'EdDSA']).optional(),
    /** The ID token or userinfo claim naming the bank account ({branch_code, account_number, …}). */
    accountClaim: z.string().min(1).default('bank_account'),
    /** PEM file of the CA that issued the bank's TLS certificate, when it is not a public one. */
    caFile: z.string().min(1).optional(),
  })
  .strict();

/**
 * Per-peer circuit breaker on received SETs: once a peer's SETs acted on customers this many times
 * within windowSeconds, its further SETs are acknowledged but their actions held for an operator.
 */
const circuitBreakerSchema = z
  .object({
    maxSetsPerWindow: z.number().int().min(1).default(100),
    windowSeconds: seconds.default(600),
  })
  .strict();

/** One institution the hub shares signals with, in either direction. */
const peerSchema = z
  .object({
    /** Stable short id (used in URLs and rows): letters, digits, `-`, `_`. */
    id: z.string().regex(/^[A-Za-z0-9_-]{1,64}$/),
    name: z.string().min(1).optional(),
    /**
     * As a receiver of our events: the OAuth client (in `clients`) whose client-credentials tokens
     * manage its streams here.
     */
    clientId: z.string().min(1).optional(),
    /** `aud` of the SETs we send it; default its issuer, else its clientId. */
    audience: z.string().min(1).optional(),
    /** As a transmitter to us: its SSF issuer (https); SETs from it must carry exactly this `iss`. */
    issuer: z.url({ protocol: /^https$/ }).optional(),
    /** Its JWKS; default the `jwks_uri` of its /.well-known/ssf-configuration. */
    jwksUri: z.url({ protocol: /^https$/ }).optional(),
    /** PEM file of a CA to trust for TLS to this peer (besides the system store). */
    caFile: z.string().min(1).optional(),
    /** Origins its push endpoint_url may use; absent: any https URL. */
    endpointOrigins: z.array(z.url()).optional(),
    /** Per-peer override of the SET signing algorithm (interop streams need RS256). */
    setSigningAlg: z.enum(['RS256', 'ES256']).optional(),
    /** Receiver side: create and keep a stream at this peer's transmitter. */
    subscribe: z
      .object({
        /** Our client_id at the peer (registered there with our /ssf/client-jwks). */
        clientId: z.string().min(1),
        delivery: z.enum(['push', 'poll']).default('push'),
        events: z.array(z.string().min(1)).optional(),
      })
      .optional(),
    /** Overrides `signals.actions` for SETs from this peer (merged per key). */
    actions: actionMap.optional(),
    /** Overrides `signals.circuitBreaker` for this peer, member by member (an absent one is the global's). */
    circuitBreaker: z
      .object({
        maxSetsPerWindow: z.number().int().min(1).optional(),
        windowSeconds: seconds.optional(),
      })
      .strict()
      .optional(),
  })
  .strict();

const signalsSchema = z
  .object({
    /** Runs the delivery workers and serves the SSF endpoints. */
    enabled: z.boolean().default(true),
    /** RS256 (2048-bit) is what the CAEP interoperability profile requires; ES256 is faster. */
    setSigningAlg: z.enum(['RS256', 'ES256']).default('RS256'),
    /** Streams one receiver may hold at once. */
    maxStreamsPerReceiver: z.number().int().min(1).max(1000).default(20),
    /** While a stream is paused, at most this many SETs are held (the oldest beyond are dropped)… */
    pausedHoldMax: z.number().int().min(1).default(10_000),
    /** …and none older than this. */
    pausedHoldSeconds: seconds.default(7 * 24 * 3600),
    /** Subjects (added or removed) one stream may record; beyond, add/remove answers 409. */
    maxSubjectsPerStream: z.number().int().min(1).max(1_000_000).default(10_000),
    /** Longest a poll request with returnImmediately false waits for SETs. */
    longPollSeconds: z.number().int().min(0).max(120).default(20),
    /**
     * Long polls (returnImmediately false) one receiver may have waiting on one node, and all
     * receivers together: each waiting poll rechecks the outbox about once a second, so these bound
     * what idle receivers cost the database. Beyond either, a long poll is answered 429.
     */
    maxLongPollsPerReceiver: z.number().int().min(1).max(1000).default(10),
    maxLongPolls: z.number().int().min(1).max(100_000).default(200),
    /**
     * How often a waiting long poll looks at the outbox when nothing woke it: SETs fanned out by
     * another node (this node's own wake the poll at once) and reservations that ran out.
     */
    longPollRecheckMs: z.number().int().min(100).max(60_000).default(1000),
    /** A polled SET that was not acknowledged is handed out again after this. */
    pollRedeliverySeconds: seconds.default(60),
    /**
     * SSF 1.0 §8.1.1 inactivity_timeout, advertised in every stream: an enabled stream whose
     * receiver neither called the management API about it nor polled it for this long is paused
     * (held SETs kept as for any pause; the receiver re-enables it). Checked every 30 s.
     */
    inactivityTimeoutSeconds: seconds.default(30 * 24 * 3600),
    /**
     * A SET naming a key we do not have makes us fetch the peer's JWKS again, at most once per this
     * interval per peer (a peer rotating keys is picked up; a stream of junk kids is not a fetch each).
     */
    jwksRefetchMinIntervalSeconds: seconds.default(60),
    /** Verification requests closer together than this get 429. */
    minVerificationIntervalSeconds: z.number().int().min(0).default(5),
    push: z
      .object({
        timeoutMs: z.number().int().min(100).default(10_000),
        /** SETs in flight per stream (different subjects only: one subject's SETs go in order). */
        concurrencyPerStream: z.number().int().min(1).max(256).default(16),
        /** Streams one node pushes to at once (a slow receiver holds one slot). */
        concurrentStreams: z.number().int().min(1).max(1024).default(64),
        /** Pushes in flight on one node across all streams (bounds sockets and memory). */
        maxInFlight: z.number().int().min(1).max(10_000).default(256),
        batchSize: z.number().int().min(1).max(5000).default(500),
        retryBaseMs: z.number().int().min(10).default(1000),
        retryMaxMs: z
          .number()
          .int()
          .min(100)
          .default(5 * 60_000),
        /** A SET still undeliverable after this goes to the dead-letter view. */
        deadAfterSeconds: seconds.default(3 * 24 * 3600),
        leaseSeconds: z.number().int().min(5).default(60),
        /** Allow http:// push endpoints on loopback addresses (benchmarks, local demos). */
        allowLoopbackHttp: z.boolean().default(false),
        /**
         * Allow push endpoints (named by a receiver) at loopback, private, link-local and other
         * non-public addresses, by IP literal or by what the name resolves to when connecting. Off:
         * a receiver cannot make the hub POST into its own network (SSRF). A peer's `endpointOrigins`
         * (chosen by the operator) are trusted as listed. On for tests and local demos.
         */
        allowPrivateAddresses: z.boolean().default(false),
      })
      .prefault({}),
    /** Idle polling interval of the workers (they are also woken in-process when events arrive). */
    workerIntervalMs: z.number().int().min(10).max(60_000).default(250),
    /** Delivered SETs and received jtis are kept this long (audit, dedupe window). */
    retentionSeconds: seconds.default(30 * 24 * 3600),
    actions: actionMap.default({}),
    circuitBreaker: circuitBreakerSchema.prefault({}),
    peers: z.array(peerSchema).default([]),
  })
  .strict()
  .superRefine((s, ctx) => {
    // A peer is found by its id (push URL), its client (management) and its issuer (SETs): each must be unique.
    for (const key of ['id', 'clientId', 'issuer'] as const) {
      const seen = new Set<string>();
      s.peers.forEach((p, i) => {
        const v = p[key];
        if (v === undefined) return;
        if (seen.has(v))
          ctx.addIssue({ code: 'custom', path: ['peers', i, key], message: `duplicate ${key}` });
        seen.add(v);
      });
    }
  });

export type SignalsConfig = z.output<typeof signalsSchema>;
export type PeerConfig = z.output<typeof peerSchema>;

const schema = z
  .object({
    /** TCP port the hub listens on. `PORT` overrides. */
    port: z.number().int().min(0).max(65535).default(8443),
    /** Address to bind. Loopback by default; set `0.0.0.0` behind a load balancer. */
    host: z.string().min(1).default('127.0.0.1'),
    /** Public issuer URL (https). Defaults to https://localhost:<port>. */
    issuer: z.url({ protocol: /^https$/ }).optional(),
    /** Where PGlite, dev TLS material, the key-encryption key and demo files live. */
    dataDir: z.string().min(1).default('./data'),
    /** postgres://… — when set, a pg pool is used instead of embedded PGlite. */
    databaseUrl: z
      .string()
      .regex(/^postgres(ql)?:\/\//, 'must be a postgres:// URL')
      .optional(),
    /** Size of the pg pool (ignored for PGlite, which has exactly one connection); per worker. */
    databasePoolSize: z.number().int().min(1).max(200).default(10),
    /**
     * Processes `serve` runs (node:cluster): one primary that only supervises, and this many
     * workers, each a whole hub node sharing the listening ports. Node runs JavaScript on one core,
     * so a hub on N cores needs N workers to use them. More than one needs PostgreSQL.
     */
    workers: z.number().int().min(1).max(64).default(1),
    tls: z
      .object({
        /**
         * dev:   HTTPS with a CA and server certificate generated into <dataDir>/tls (default);
         * files: HTTPS with certFile/keyFile supplied by the operator;
         * proxy: plain HTTP behind a TLS-terminating proxy (X-Forwarded-Proto must be https).
         */
        mode: z.enum(['dev', 'files', 'proxy']).default('dev'),
        certFile: z.string().optional(),
        keyFile: z.string().optional(),
        /** Extra host names for the dev server certificate (localhost, 127.0.0.1 and ::1 are always in). */
        devHostnames: z.array(z.string()).default([]),
      })
      .prefault({}),
    /** Mutual TLS (RFC 8705): client authentication and certificate-bound tokens; see docs/mtls.md. */
    mtls: z
      .object({
        enabled: z.boolean().default(true),
        /**
         * dev/files: the second HTTPS listener (same host) that requests client certificates and serves
         * the mtls_endpoint_aliases; the main port never asks browsers for a certificate. 0: a free port
         * chosen at start (discovery names it); set a fixed one where a load balancer must know it.
         */
        port: z.number().int().min(0).max(65535).default(0),
        /** Public https origin of the aliases; default https://<issuer host>:<port> (proxy mode: none). */
        baseUrl: z.url({ protocol: /^https$/ }).optional(),
        /** PEM bundles of the CAs whose client certificates tls_client_auth accepts (none: it never passes). */
        caFiles: z.array(z.string().min(1)).default([]),
        /**
         * Revocation of CA-issued client certificates by CRL (tls_client_auth). `enabled: false` only
         * where the TLS-terminating proxy checks revocation itself; see docs/mtls.md.
         */
        revocation: crlRevocationSchema
          .extend({
            enabled: z.boolean().default(true),
            /** How long a certificate's verdict (chain, CRLs) is reused before the CRLs are consulted again. */
            recheckIntervalMs: z.number().int().min(100).max(86_400_000).default(300_000),
          })
          .strict()
          .prefault({}),
        /** proxy mode: the header carrying the URL- or PEM-encoded client certificate. */
        certificateHeader: z
          .string()
          .regex(/^[A-Za-z0-9-]{1,64}$/, 'must be an HTTP header name')
          .default('x-ssl-client-cert'),
        /** proxy mode: TCP peers (addresses or CIDR blocks) whose certificate header is believed. */
        trustedProxies: z
          .array(
            z.string().refine((v) => {
              const [addr = '', bits, ...more] = v.split('/');
              const family = isIP(addr);
              if (!family || more.length) return false;
              return (
                bits === undefined || (/^\d{1,3}$/.test(bits) && Number(bits) <= (family === 4 ? 32 : 128))
              );
            }, 'must be an IP address or CIDR block'),
          )
          .default([]),
      })
      .strict()
      .prefault({}),
    /**
     * Base64url of 32 random bytes used to encrypt private keys and secrets at rest. When absent,
     * one is generated into <dataDir>/secrets/kek at first start. Every node sharing a database
     * must use the same key.
     */
    keyEncryptionKey: z
      .string()
      .regex(/^[A-Za-z0-9_-]{43}$/, 'must be 32 bytes, base64url-encoded (43 characters)')
      .optional(),
    /**
     * KEKs that only open values, never seal them: the new one before a KEK rotation switches to it,
     * the old one until `kakehashi keys rekey` has re-sealed everything (docs/key-rotation.md).
     */
    additionalKeyEncryptionKeys: z
      .array(z.string().regex(/^[A-Za-z0-9_-]{43}$/, 'must be 32 bytes, base64url-encoded (43 characters)'))
      .default([]),
    /** Signing-key lifecycle (docs/key-rotation.md). */
    keys: z
      .object({
        /** How often each node re-reads the signing keys (a rotation by another node or the CLI). */
        pollSeconds: z.number().int().min(1).max(300).default(10),
        /** How long a new key is published as `next` before it signs (clients' JWKS caches refresh). */
        activateAfterSeconds: z
          .number()
          .int()
          .min(0)
          .max(30 * 86400)
          .default(3600),
        /** Rotate every signing key automatically when its current key is this old; unset: only by CLI. */
        rotateEveryDays: z.number().int().min(1).max(3650).optional(),
      })
      .strict()
      .prefault({}),
    /** Seed a demo institution, customer and aggregator client into an empty database. */
    demo: z.boolean().default(true),
    logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
    oidc: z
      .object({
        /** FAPI 2.0: authorization codes live at most 60 s. */
        authorizationCodeTtl: seconds.max(60).default(60),
        /** request_uri lifetime (FAPI 2.0: below 600 s; oidc-provider allows at most 60 s). */
        parTtl: seconds.max(60).default(60),
        accessTokenTtl: seconds.max(3600).default(600),
        refreshTokenTtl: seconds.default(90 * 24 * 3600),
        idTokenTtl: seconds.max(3600).default(600),
        sessionTtl: seconds.default(8 * 3600),
        interactionTtl: seconds.max(3600).default(600),
        grantTtl: seconds.default(90 * 24 * 3600),
        /** Accepted clock skew for client assertions and DPoP proofs. */
        clockToleranceSeconds: z.number().int().min(0).max(60).default(10),
        /**
         * Let the provider's outgoing requests (back-channel logout tokens, jwks_uri) reach loopback and
         * private addresses. Off by default: oidc-provider refuses them (SSRF protection); tests and
         * one-machine demos whose relying parties run on loopback turn it on.
         */
        allowPrivateNetworkFetch: z.boolean().default(false),
      })
      .prefault({}),
    enrollment: z
      .object({
        ticketTtl: seconds.default(14 * 24 * 3600),
        /** Wrong guesses against one customer's tickets before they are all voided. */
        maxFailedAttempts: z.number().int().min(1).max(20).default(5),
      })
      .prefault({}),
    /** Identity proofing before enrollment and for recovery (see docs/proofing-and-recovery.md). */
    proofing: z
      .object({
        /** How long a started proofing flow (eKYC redirect, JPKI challenge) may take. */
        flowTtl: seconds.max(3600).default(600),
        /** Upstream eKYC provider (OpenID Connect for Identity Assurance); absent: method off. */
        ekyc: z
          .object({
            issuer: z.url({ protocol: /^https$/ }),
            clientId: z.string().min(1),
            clientSecret: z.string().min(16),
            /** Extra CA certificates (PEM file) to trust for the provider's TLS, e.g. a private CA. */
            caFile: z.string().optional(),
            trustFramework: z.string().min(1).default('jp_aml'),
          })
          .strict()
          .optional(),
        /** JPKI-style certificate signatures; absent: method off. */
        jpki: z
          .object({
            /** PEM bundle of the trust anchors customer certificates must chain to. */
            trustAnchorsFile: z.string().min(1),
            /** Lifetime of a signing challenge. */
            challengeTtl: seconds.max(600).default(300),
            /** Revocation by CRL of every certificate below the anchor (src/tls/crl.ts). */
            revocation: crlRevocationSchema.strict().prefault({}),
          })
          .strict()
          .optional(),
      })
      .strict()
      .prefault({}),
    authn: z
      .object({
        attestation: z
          .object({
            /**
             * none: no attestation is asked for; every passkey is `phr`.
             * direct: registration asks for attestation and verifies it against the FIDO metadata
             * statements in metadataFile; a verified, device-bound credential is `phrh`.
             */
            policy: z.enum(['none', 'direct']).default('none'),
            /** FIDO metadata: a JSON array of metadata statements or an MDS3 BLOB payload ({entries}). */
            metadataFile: z.string().optional(),
            /** Only these AAGUIDs count (default: every AAGUID in the metadata file). */
            allowedAaguids: z.array(z.uuid()).optional(),
          })
          .strict()
          .refine((a) => a.policy === 'none' || a.metadataFile, {
            message: 'policy direct needs metadataFile',
            path: ['metadataFile'],
          })
          .prefault({}),
      })
      .strict()
      .prefault({}),
    api: z
      .object({
        /** How far a DPoP proof's iat may be from now at the resource server. */
        dpopIatWindowSeconds: z.number().int().min(5).max(300).default(60),
        /** Calls without x-fapi-customer-ip-address allowed per consent per day (per-client override in metadata). */
        unattendedCallsPerDay: z.number().int().min(0).max(1_000_000).default(4),
        /** How far back transactions can be read when the consent names no lookback. */
        transactionLookbackDays: z.number().int().min(1).max(36_500).default(730),
      })
      .prefault({}),
    /** Withdrawals, withdrawal accounts, bank links and limits (issue 6; src/linking). */
    linking: z
      .object({
        /** The withdrawal-strength policy; default: config/withdrawal-policy.json shipped with the hub. */
        policyFile: z.string().min(1).optional(),
        /** Limits of a customer who set none (yen per day in Japan). */
        defaultLimits: z
          .object({
            withdrawal_daily: z.number().int().min(0).max(1_000_000_000).default(3_000_000),
            sweep_daily: z.number().int().min(0).max(1_000_000_000).default(1_000_000),
          })
          .prefault({}),
        /**
         * Products a customer who chose none allows trading in (catalogue: src/linking/productCatalogue.ts).
         * Leveraged and FX products are off until the customer allows them (fresh passkey + cool-off).
         */
        defaultProducts: z
          .array(z.enum(PRODUCTS))
          .default(['domestic_equity', 'foreign_equity', 'investment_trust', 'bonds']),
        /** Daily sweep cap (yen) of a link the policy allows without a cap of its own. */
        defaultSweepCap: z.number().int().min(0).max(1e12).default(1_000_000),
        /** How long a customer has to finish signing in at the bank. */
        attemptTtl: seconds.max(3600).default(600),
        /**
         * A hub sign-in older than this when a link starts counts as no sign-in (acr `none`): the
         * policy then asks for a fresh passkey (its step-up window is 300 s too).
         */
        signInMaxAgeSeconds: seconds.max(86_400).default(300),
        /** The banks whose OpenID providers the hub signs customers in at to link accounts. */
        banks: z.array(bankSchema).default([]),
      })
      .prefault({})
      .superRefine((v, ctx) => {
        const ids = v.banks.map((b) => b.id);
        const dup = ids.find((id, i) => ids.indexOf(id) !== i);
        if (dup)
          ctx.addIssue({ code: 'custom', path: ['banks'], message: `bank id ${dup} is configured twice` });
      }),
    /** Sampling of audit events that callers without a credential can cause (docs/audit-sampling.md). */
    audit: z
      .object({
        sampling: z
          .object({
            /** Events written per (type, source network) and window; the rest are counted in a summary row. */
            limit: z.number().int().min(1).max(1000).default(5),
            windowSeconds: z.number().int().min(1).max(3600).default(60),
            /** (type, source) counters kept in memory per node at most (least recently seen evicted). */
            maxSources: z.number().int().min(10).max(1_000_000).default(10_000),
          })
          .strict()
          .prefault({}),
      })
      .strict()
      .prefault({}),
    /** Shared Signals (SSF 1.0 transmitter and receiver): see README "Shared Signals". */
    signals: signalsSchema.prefault({}),
    /** Customer notifications by mail (see src/notify/). */
    notify: notifyConfigSchema.prefault({}),
    /** Risk engine: rules, offline IP data, windows, forensics retention (see docs/risk.md). */
    risk: riskConfigSchema.prefault({}),
    /** Dynamic client registration (see src/registration/, docs/message-signing-and-registration.md). */
    registration: registrationConfigSchema.prefault({}),
  })
  .strict();

export type ConfigInput = z.input<typeof schema>;
export type Config = Omit<z.output<typeof schema>, 'issuer'> & {
  issuer: string;
  /** WebAuthn relying-party id: the issuer's host name. */
  rpId: string;
  /** The issuer's origin, the only origin accepted in WebAuthn client data. */
  origin: string;
};

export class ConfigError extends Error {
  override name = 'ConfigError';
  readonly code = 'ERR_CONFIG';
}

/** Environment variables and the config key each sets. */
const ENVIRONMENT: Record<string, { key: string; type: 'string' | 'int' | 'bool' | 'list' }> = {
  PORT: { key: 'port', type: 'int' },
  KAKEHASHI_HOST: { key: 'host', type: 'string' },
  KAKEHASHI_ISSUER: { key: 'issuer', type: 'string' },
  KAKEHASHI_DATA: { key: 'dataDir', type: 'string' },
  DATABASE_URL: { key: 'databaseUrl', type: 'string' },
  KAKEHASHI_DB_POOL: { key: 'databasePoolSize', type: 'int' },
  KAKEHASHI_WORKERS: { key: 'workers', type: 'int' },
  KAKEHASHI_TLS: { key: 'tls.mode', type: 'string' },
  KAKEHASHI_TLS_CERT: { key: 'tls.certFile', type: 'string' },
  KAKEHASHI_TLS_KEY: { key: 'tls.keyFile', type: 'string' },
  KAKEHASHI_TLS_HOSTNAMES: { key: 'tls.devHostnames', type: 'list' },
  KAKEHASHI_MTLS: { key: 'mtls.enabled', type: 'bool' },
  KAKEHASHI_MTLS_PORT: { key: 'mtls.port', type: 'int' },
  KAKEHASHI_MTLS_URL: { key: 'mtls.baseUrl', type: 'string' },
  KAKEHASHI_MTLS_CA: { key: 'mtls.caFiles', type: 'list' },
  KAKEHASHI_MTLS_CRL: { key: 'mtls.revocation.crlFiles', type: 'list' },
  KAKEHASHI_MTLS_CERT_HEADER: { key: 'mtls.certificateHeader', type: 'string' },
  KAKEHASHI_MTLS_TRUSTED_PROXIES: { key: 'mtls.trustedProxies', type: 'list' },
  KAKEHASHI_KEK: { key: 'keyEncryptionKey', type: 'string' },
  KAKEHASHI_KEK_ADDITIONAL: { key: 'additionalKeyEncryptionKeys', type: 'list' },
  KAKEHASHI_DEMO: { key: 'demo', type: 'bool' },
  LOG_LEVEL: { key: 'logLevel', type: 'string' },
  KAKEHASHI_SMTP_HOST: { key: 'notify.smtp.host', type: 'string' },
  KAKEHASHI_SMTP_PORT: { key: 'notify.smtp.port', type: 'int' },
  KAKEHASHI_SMTP_SECURITY: { key: 'notify.smtp.security', type: 'string' },
  KAKEHASHI_SMTP_USER: { key: 'notify.smtp.auth.user', type: 'string' },
  KAKEHASHI_SMTP_PASS: { key: 'notify.smtp.auth.pass', type: 'string' },
  KAKEHASHI_MAIL_FROM: { key: 'notify.from.address', type: 'string' },
  KAKEHASHI_POLICY: { key: 'linking.policyFile', type: 'string' },
  KAKEHASHI_SSF_ALLOW_PRIVATE_ENDPOINTS: { key: 'signals.push.allowPrivateAddresses', type: 'bool' },
};

function setPath(target: Record<string, unknown>, dotted: string, value: unknown): void {
  const parts = dotted.split('.');
  let node = target;
  for (const part of parts.slice(0, -1)) {
    const next = node[part];
    if (typeof next !== 'object' || next === null) node[part] = {};
    node = node[part] as Record<string, unknown>;
  }
  node[parts.at(-1)!] = value;
}

function fromEnvironment(env: NodeJS.ProcessEnv, into: Record<string, unknown>): void {
  for (const [name, { key, type }] of Object.entries(ENVIRONMENT)) {
    const raw = env[name];
    if (raw === undefined || raw === '') continue;
    let value: unknown = raw;
    if (type === 'int') {
      if (!/^-?\d+$/.test(raw)) throw new ConfigError(`${name} (${key}): expected an integer, got "${raw}"`);
      value = Number(raw);
    } else if (type === 'bool') {
      if (!/^(true|false|1|0|yes|no)$/i.test(raw))
        throw new ConfigError(`${name} (${key}): expected true or false, got "${raw}"`);
      value = /^(true|1|yes)$/i.test(raw);
    } else if (type === 'list') {
      value = raw
        .split(',')
        .map((s) => s.trim())
        .filter(Boolean);
    }
    setPath(into, key, value);
  }
}

export interface LoadConfigOptions {
  env?: NodeJS.ProcessEnv;
  /** Values that win over file and environment (tests use this). */
  overrides?: ConfigInput;
  /** Directory holding kakehashi.json; default ./config. */
  configDir?: string;
}

function deepMerge(base: Record<string, unknown>, extra: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...base };
  for (const [k, v] of Object.entries(extra)) {
    const prev = out[k];
    out[k] =
      v &&
      typeof v === 'object' &&
      !Array.isArray(v) &&
      prev &&
      typeof prev === 'object' &&
      !Array.isArray(prev)
        ? deepMerge(prev as Record<string, unknown>, v as Record<string, unknown>)
        : v;
  }
  return out;
}

export function loadConfig(options: LoadConfigOptions = {}): Config {
  const env = options.env ?? process.env;
  let raw: Record<string, unknown> = {};
  const file = env.KAKEHASHI_CONFIG ?? path.join(options.configDir ?? 'config', 'kakehashi.json');
  if (existsSync(file)) {
    try {
      raw = JSON.parse(readFileSync(file, 'utf8'));
    } catch (err) {
      throw new ConfigError(`${file}: not valid JSON (${(err as Error).message})`);
    }
    if (typeof raw !== 'object' || raw === null || Array.isArray(raw))
      throw new ConfigError(`${file}: must hold a JSON object`);
  } else if (env.KAKEHASHI_CONFIG) {
    throw new ConfigError(`KAKEHASHI_CONFIG: file ${file} does not exist`);
  }
  fromEnvironment(env, raw);
  if (options.overrides) raw = deepMerge(raw, options.overrides as Record<string, unknown>);

  const parsed = schema.safeParse(raw);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`);
    throw new ConfigError(`invalid configuration:\n  ${problems.join('\n  ')}`);
  }
  const c = parsed.data;
  if (c.tls.mode === 'files' && (!c.tls.certFile || !c.tls.keyFile))
    throw new ConfigError('tls.certFile and tls.keyFile: required when tls.mode is "files"');
  if (c.mtls.enabled && c.tls.mode !== 'proxy' && c.mtls.port !== 0 && c.mtls.port === c.port)
    throw new ConfigError('mtls.port: must differ from port (the mTLS listener is a second listener)');
  if (c.workers > 1 && !c.databaseUrl)
    throw new ConfigError(
      'workers: more than one worker needs databaseUrl (PostgreSQL); embedded PGlite serves one process',
    );
  const issuer = (c.issuer ?? `https://localhost:${c.port}`).replace(/\/$/, '');
  const url = new URL(issuer);
  return { ...c, issuer, rpId: url.hostname, origin: url.origin, dataDir: path.resolve(c.dataDir) };
}
