/**
 * Starting and stopping one hub node: storage, migrations, keys, demo data, the provider, the
 * koa app and the HTTPS (or, behind a proxy, HTTP) listener.
 */
import { mkdirSync, readFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import type Provider from 'oidc-provider';
import { deleteExpiredDpopProofs, deleteOldUnattendedCounts } from './api/index.ts';
import { createApp } from './app.ts';
import { type AuditSampler, startAuditSampling, stopAuditSampling } from './audit/sampled.ts';
import { type AuthnContext, createAuthnContext, deleteExpiredChallenges } from './authn/index.ts';
import type { Config } from './config/index.ts';
import { type Db, migrate, openDb } from './db/index.ts';
import { type DemoInfo, seedDemo } from './demo/seed.ts';
import { loadKeyEncryptionKey, loadKeyMaterial, type SigningKeyWatcher } from './keys/index.ts';
import { applyDueLimitRaises, applySweepSuspensions, deleteExpiredLinkAttempts } from './linking/index.ts';
import { createLogger, type Logger } from './log.ts';
import { instrumentProvider } from './metrics/index.ts';
import { mtlsFor } from './mtls/index.ts';
import { createNotifier, type Notifier } from './notify/index.ts';
import { deleteExpiredOidcPayloads } from './oidc/adapter.ts';
import { startBackchannelLogouts } from './oidc/backchannelLogout.ts';
import { createProvider } from './oidc/provider.ts';
import { applySigningKeys, followSigningKeys } from './oidc/signingKeys.ts';
import { deleteExpiredProofingFlows } from './proofing/index.ts';
import { announceDetectionOff, deleteExpiredRiskEvents } from './risk/index.ts';
import { startActionConsumers } from './signals/consumers.ts';
import { createSignals, type Signals } from './signals/index.ts';
import { ensureDevTls, secureTlsOptions } from './tls/index.ts';

export interface Hub {
  config: Config;
  db: Db;
  provider: Provider;
  authn: AuthnContext;
  /** Shared Signals (SSF): its context, peer subscriptions, and a handle on this node's worker. */
  signals: Signals;
  /** Customer notifications: this node's delivery worker. */
  notifier: Notifier;
  logger: Logger;
  /** This node's view of the signing keys: follows rotations made anywhere (docs/key-rotation.md). */
  signingKeys: SigningKeyWatcher;
  server: http.Server | https.Server;
  /** The mTLS listener (mtls_endpoint_aliases) when the hub terminates TLS and mTLS is on. */
  mtlsServer: https.Server | undefined;
  /** Public origin of the mtls_endpoint_aliases, if any. */
  mtlsUrl: string | undefined;
  /** Where this node listens (may differ from the issuer behind a proxy). */
  listenUrl: string;
  demo: DemoInfo | undefined;
  /** Path of the dev CA certificate when the hub made its own TLS material. */
  caPath: string | undefined;
  /** This node's counts of sampled audit events (docs/audit-sampling.md). */
  auditSampling: AuditSampler;
  close(): Promise<void>;
}

export interface StartHubOptions {
  logger?: Logger;
  /** Use this database instead of opening one from the configuration (tests). */
  db?: Db;
}

export async function startHub(config: Config, options: StartHubOptions = {}): Promise<Hub> {
  const logger = options.logger ?? createLogger(config.logLevel);
  mkdirSync(config.dataDir, { recursive: true, mode: 0o700 });
  const db =
    options.db ??
    (await openDb({
      databaseUrl: config.databaseUrl,
      dataDir: config.dataDir,
      poolSize: config.databasePoolSize,
    }));
  try {
    const applied = await migrate(db);
    if (applied.length) logger.info({ applied }, 'migrations applied');
    await announceDetectionOff(db, config, logger);
    const kek = loadKeyEncryptionKey(config);
    const keys = await loadKeyMaterial(db, kek, { verifyRetiredForSeconds: config.oidc.sessionTtl });
    const demo = config.demo ? await seedDemo(db, config) : undefined;
    const provider = createProvider({ config, db, keys });
    // Next and previous keys too (published, verify only); rotations follow (followSigningKeys).
    applySigningKeys(provider, keys);
    instrumentProvider(provider);
    provider.on('server_error', (ctx, err) =>
      logger.error({ err, path: ctx.path }, 'oidc-provider server_error'),
    );
    const auditSampling = startAuditSampling(db, {
      ...config.audit.sampling,
      onError: (err) => logger.warn({ err }, 'an audit summary (suppressed events) could not be written'),
    });
    const authn = createAuthnContext(db, config);
    const signals = await createSignals({ config, db, logger });
    const notifier = createNotifier({ config, db, logger });
    const app = createApp({ config, db, provider, authn, logger, signals });

    let server: http.Server | https.Server;
    let mtlsServer: https.Server | undefined;
    let caPath: string | undefined;
    const mtls = mtlsFor(config);
    if (config.tls.mode === 'proxy') {
      server = http.createServer(app.callback());
    } else {
      let tls: { certPem: string; keyPem: string };
      if (config.tls.mode === 'files') {
        tls = {
          certPem: readFileSync(config.tls.certFile!, 'utf8'),
          keyPem: readFileSync(config.tls.keyFile!, 'utf8'),
        };
      } else {
        const dev = await ensureDevTls(config.dataDir, [
          new URL(config.issuer).hostname,
          ...config.tls.devHostnames,
        ]);
        caPath = dev.caPath;
        tls = dev;
      }
      server = https.createServer(secureTlsOptions(tls), app.callback());
      if (mtls.enabled) {
        // Same app, second port: the one that asks for client certificates (see docs/mtls.md).
        mtlsServer = https.createServer(
          { ...secureTlsOptions(tls), ...mtls.listenerOptions() },
          app.callback(),
        );
        mtlsServer.on('secureConnection', (socket) => mtls.markAliasConnection(socket));
      }
    }
    const sweeper = startSweeper(db, logger, config);
    const signingKeys = followSigningKeys({ provider, db, kek, config, logger });
    const logouts = startBackchannelLogouts({ provider, db, logger });
    try {
      for (const [s, port] of [
        [server, config.port],
        [mtlsServer, config.mtls.port],
      ] as const) {
        if (!s) continue;
        s.keepAliveTimeout = 65_000;
        await new Promise<void>((resolve, reject) => {
          s.once('error', reject);
          s.listen(port, config.host, () => resolve());
        });
      }
      if (mtlsServer) mtls.listening((mtlsServer.address() as AddressInfo).port);
    } catch (err) {
      clearInterval(sweeper);
      signingKeys.stop();
      logouts.stop();
      server.close();
      mtlsServer?.close();
      throw err;
    }
    signals.start();
    // Peers' signals act here through the modules that own each action (src/signals/consumers.ts).
    const consumers = config.signals.enabled ? startActionConsumers({ config, db, logger }) : undefined;
    notifier.start();
    const { port } = server.address() as AddressInfo;
    const scheme = config.tls.mode === 'proxy' ? 'http' : 'https';
    const host = config.host.includes(':') ? `[${config.host}]` : config.host;
    return {
      config,
      db,
      provider,
      authn,
      signals,
      notifier,
      logger,
      signingKeys,
      server,
      mtlsServer,
      mtlsUrl: mtls.origin(),
      listenUrl: `${scheme}://${host}:${port}`,
      demo,
      caPath,
      auditSampling,
      async close() {
        clearInterval(sweeper);
        signingKeys.stop();
        logouts.stop();
        await signals.stop();
        await consumers?.stop();
        await notifier.stop();
        for (const s of [server, mtlsServer]) {
          if (!s) continue;
          await new Promise<void>((resolve) => {
            s.close(() => resolve());
            s.closeAllConnections();
          });
        }
        // Pending `<type>.suppressed` counts are written before the database goes.
        await stopAuditSampling(db, auditSampling);
        if (!options.db) await db.close();
      },
    };
  } catch (err) {
    if (!options.db) await db.close().catch(() => {});
    throw err;
  }
}

const SWEEP_INTERVAL_MS = 5 * 60_000;

/**
 * Deletes expired tokens, sessions and challenges now and then. Finders already ignore expired
 * rows, so this only keeps tables small; every node may run it, deletes are idempotent.
 */
function startSweeper(db: Db, logger: Logger, config: Config): NodeJS.Timeout {
  const timer = setInterval(async () => {
    try {
      // Bank-link housekeeping, and sweeps stopped by peers' signals (sweepPullFacts sees them at once).
      await deleteExpiredLinkAttempts(db);
      await applySweepSuspensions(db, config);
      await applyDueLimitRaises(db, config.linking.defaultLimits); // records raises that came into force
      const oidc = await deleteExpiredOidcPayloads(db);
      const challenges = (await deleteExpiredChallenges(db)) + (await deleteExpiredProofingFlows(db));
      const proofs = await deleteExpiredDpopProofs(db);
      const unattended = await deleteOldUnattendedCounts(db);
      const risk = await deleteExpiredRiskEvents(db, config.risk.retentionDays, {
        baselineMaxAgeSeconds: Math.max(config.oidc.accessTokenTtl, config.oidc.sessionTtl),
        // Up to 500,000 rows per table per sweep (≈ 1,700 a second per node): a token's baseline and
        // a sign-in's event each are one row; one batch per five minutes would fall behind.
        batches: 100,
      });
      if (oidc + challenges + proofs + unattended + risk > 0)
        logger.debug({ oidc, challenges, proofs, unattended, risk }, 'expired rows swept');
    } catch (err) {
      logger.warn({ err }, 'sweep of expired rows failed');
    }
  }, SWEEP_INTERVAL_MS);
  timer.unref();
  return timer;
}
