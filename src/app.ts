/**
 * Composes the koa application: security headers and x-fapi-interaction-id on every response,
 * static assets, the interaction pages, the resource server, and oidc-provider underneath.
 */
import Router from '@koa/router';
import Koa from 'koa';
import mount from 'koa-mount';
import type Provider from 'oidc-provider';
import { accountRoutes } from './account/index.ts';
import { apiRoutes } from './api/index.ts';
import type { AuthnContext } from './authn/index.ts';
import type { Config } from './config/index.ts';
import { consoleRoutes } from './console/index.ts';
import type { Db } from './db/index.ts';
import { grantManagementRoutes } from './grants/index.ts';
import { fapiInteractionId, postOnly, securityHeaders } from './http/index.ts';
import { approvalRoutes, decisionRoutes, linkingRoutes, loadPolicy } from './linking/index.ts';
import type { Logger } from './log.ts';
import { metricsMiddleware } from './metrics/index.ts';
import { mtlsFor } from './mtls/index.ts';
import { interactionRoutes } from './oidc/interactions.ts';
import { DEVICE_COOKIE } from './oidc/passkeySignIn.ts';
import { proofingRoutes } from './proofing/index.ts';
import { deviceHash } from './risk/index.ts';
import type { Signals } from './signals/index.ts';
import { assetsMiddleware, errorPage, html, languageOf } from './web/index.ts';

const READ_API_PREFIX = '/api/v1/';

export interface CreateAppOptions {
  config: Config;
  db: Db;
  provider: Provider;
  authn: AuthnContext;
  logger: Logger;
  /** Shared Signals endpoints (SSF transmitter and receiver). */
  signals?: Signals;
}

export function createApp({ config, db, provider, authn, logger, signals }: CreateAppOptions): Koa {
  const app = new Koa();
  // koa-mount runs the provider on this app's context, so this app signs the provider's cookies.
  app.keys = provider.keys;
  // Trust X-Forwarded-* only when a TLS-terminating proxy is in front by configuration.
  app.proxy = config.tls.mode === 'proxy';

  app.use(async (ctx, next) => {
    try {
      await next();
    } catch (err) {
      // Client mistakes are handled where they happen; what reaches here is ours. No stack traces out.
      logger.error({ err, path: ctx.path, interactionId: ctx.state.interactionId }, 'unhandled error');
      ctx.status = 500;
      if (ctx.accepts('html', 'json') === 'html') {
        ctx.type = 'html';
        ctx.body = errorPage({ lang: languageOf(ctx), error: 'server_error' });
      } else {
        ctx.body = { error: 'server_error', error_description: 'an unexpected error occurred' };
      }
    }
  });
  app.use(metricsMiddleware());
  app.use(fapiInteractionId());
  app.use(mtlsFor(config).middleware(db));
  app.use(securityHeaders());
  app.use(assetsMiddleware());
  app.use(postOnly(['/request', '/token', '/token/revocation', '/token/introspection']));

  const misc = new Router();
  misc.get('/healthz', (ctx) => {
    ctx.body = { status: 'ok' };
  });
  // Where the demo aggregator is sent back to: shows that a code arrived, never exchanges it.
  misc.get('/demo/callback', (ctx) => {
    ctx.set('cache-control', 'no-store');
    ctx.type = 'html';
    const q = ctx.query;
    ctx.body = `<!doctype html>${html`<html lang="en"><head><meta charset="utf-8"><title>Demo callback</title><link rel="stylesheet" href="/assets/style.css"></head><body><main>
<h1>Demo aggregator callback</h1>
<p id="result">${q.error ? `error: ${String(q.error)} ${String(q.error_description ?? '')}` : 'An authorization code arrived. A real aggregator now redeems it at the token endpoint with private_key_jwt and DPoP.'}</p>
<p>iss: <code id="iss">${String(q.iss ?? '')}</code></p></main></body></html>`}`;
  });

  // A bad withdrawal-strength policy stops the hub here, at start.
  const policy = loadPolicy(config.linking.policyFile);
  const api = apiRoutes({
    provider,
    db,
    config,
    unattendedCallsPerDay: config.api.unattendedCallsPerDay,
    transactionLookbackDays: config.api.transactionLookbackDays,
  });
  // The read API is the hot path (thousands of calls a second): its requests go to its router first
  // instead of being matched against every page's routes; what it does not handle continues below.
  const apiMatch = api.routes() as Koa.Middleware;
  const apiMethods = api.allowedMethods() as Koa.Middleware;
  app.use((ctx, next) =>
    ctx.path.startsWith(READ_API_PREFIX) ? apiMatch(ctx, () => apiMethods(ctx, next)) : next(),
  );
  for (const router of [
    misc,
    approvalRoutes({
      provider,
      db,
      authn,
      deviceHashOf: (ctx) => {
        const token = ctx.cookies.get(DEVICE_COOKIE, { signed: false });
        return token ? deviceHash(token) : undefined;
      },
    }),
    interactionRoutes({ provider, db, config, authn }),
    decisionRoutes({ provider, db, config, policy, defaultLimits: config.linking.defaultLimits }),
    proofingRoutes({ provider, db, config, authn }),
    accountRoutes({ provider, db, config, authn, policy }),
    consoleRoutes({ db, config, authn, policy }),
    linkingRoutes({ provider, db, config, authn, policy }),
    api,
    grantManagementRoutes({ provider, db, config }),
    ...(signals ? [signals.routes(provider)] : []),
  ]) {
    app.use(router.routes());
    app.use(router.allowedMethods());
  }
  app.use(mount(provider));
  return app;
}
