/**
 * One typed configuration object, validated at start. Sources, later ones win:
 *   1. built-in defaults (the schema below),
 *   2. the JSON file `config/kakehashi.json` (or the path in `KAKEHASHI_CONFIG`), if present,
 *   3. environment variables (see ENVIRONMENT below).
 * A bad value stops the hub with a ConfigError naming the key and the problem.
 */
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { z } from 'zod';

const seconds = z.number().int().positive();

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
    /** Size of the pg pool (ignored for PGlite, which has exactly one connection). */
    databasePoolSize: z.number().int().min(1).max(200).default(10),
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
    /**
     * Base64url of 32 random bytes used to encrypt private keys and secrets at rest. When absent,
     * one is generated into <dataDir>/secrets/kek at first start. Every node sharing a database
     * must use the same key.
     */
    keyEncryptionKey: z
      .string()
      .regex(/^[A-Za-z0-9_-]{43}$/, 'must be 32 bytes, base64url-encoded (43 characters)')
      .optional(),
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
      })
      .prefault({}),
    enrollment: z
      .object({
        ticketTtl: seconds.default(14 * 24 * 3600),
        /** Wrong guesses against one customer's tickets before they are all voided. */
        maxFailedAttempts: z.number().int().min(1).max(20).default(5),
      })
      .prefault({}),
    api: z
      .object({
        /** How far a DPoP proof's iat may be from now at the resource server. */
        dpopIatWindowSeconds: z.number().int().min(5).max(300).default(60),
      })
      .prefault({}),
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
  KAKEHASHI_TLS: { key: 'tls.mode', type: 'string' },
  KAKEHASHI_TLS_CERT: { key: 'tls.certFile', type: 'string' },
  KAKEHASHI_TLS_KEY: { key: 'tls.keyFile', type: 'string' },
  KAKEHASHI_TLS_HOSTNAMES: { key: 'tls.devHostnames', type: 'list' },
  KAKEHASHI_KEK: { key: 'keyEncryptionKey', type: 'string' },
  KAKEHASHI_DEMO: { key: 'demo', type: 'bool' },
  LOG_LEVEL: { key: 'logLevel', type: 'string' },
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
  const issuer = (c.issuer ?? `https://localhost:${c.port}`).replace(/\/$/, '');
  const url = new URL(issuer);
  return { ...c, issuer, rpId: url.hostname, origin: url.origin, dataDir: path.resolve(c.dataDir) };
}
