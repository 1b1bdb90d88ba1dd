/**
 * Prometheus metrics (issue 8, item 7): authentications and every other security event (from the
 * audit log's one write path), risk decisions, token issuance, HTTP calls by area, and SSF push
 * delivery. One registry per process; `GET /metrics` answers only requests from loopback (scrape
 * on the node itself, or through a sidecar), never the internet.
 */
import type { Middleware } from 'koa';
import type Provider from 'oidc-provider';
import { Counter, collectDefaultMetrics, Histogram, Registry } from 'prom-client';

export const registry = new Registry();
collectDefaultMetrics({ register: registry, prefix: 'kakehashi_' });

/**
 * Audit event types are a fixed vocabulary (dotted names): sign-ins (`authn.passkey.login`,
 * `authn.totp.login`), locks (`risk.account.locked`), policy decisions (`policy.<op>.<decision>`),
 * consents, console actions, rejected SET pushes… Bounded label values, so one counter serves them all.
 */
const securityEvents = new Counter({
  name: 'kakehashi_security_events_total',
  help: 'Audit events written, by type and outcome (authentications, locks, policy decisions, …)',
  labelNames: ['type', 'outcome'] as const,
  registers: [registry],
});

const riskDecisions = new Counter({
  name: 'kakehashi_risk_decisions_total',
  help: 'Risk engine records by kind (login, operation, request) and decision',
  labelNames: ['kind', 'decision'] as const,
  registers: [registry],
});

const tokens = new Counter({
  name: 'kakehashi_tokens_issued_total',
  help: 'Tokens and codes issued by the authorization server, by type',
  labelNames: ['type'] as const,
  registers: [registry],
});

const httpRequests = new Histogram({
  name: 'kakehashi_http_request_duration_seconds',
  help: 'HTTP requests by area and status class',
  labelNames: ['area', 'status'] as const,
  buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
  registers: [registry],
});

const ssfDeliveries = new Counter({
  name: 'kakehashi_ssf_push_sets_total',
  help: 'SETs pushed to receivers (RFC 8935), by result',
  labelNames: ['result'] as const,
  registers: [registry],
});

export function countSecurityEvent(type: string, outcome: string): void {
  securityEvents.inc({ type, outcome });
}

export function countRiskDecision(kind: string, decision: string | null | undefined): void {
  riskDecisions.inc({ kind, decision: decision ?? 'none' });
}

export function countSsfDelivery(r: { delivered: number; rejected: number; retrying: boolean }): void {
  if (r.delivered) ssfDeliveries.inc({ result: 'delivered' }, r.delivered);
  if (r.rejected) ssfDeliveries.inc({ result: 'rejected' }, r.rejected);
  if (r.retrying) ssfDeliveries.inc({ result: 'retrying' });
}

/** Counts what oidc-provider issues (its own events, so every path is covered). */
export function instrumentProvider(provider: Provider): void {
  const on = (event: string, type: string) => provider.on(event as never, () => tokens.inc({ type }));
  on('access_token.saved', 'access_token');
  on('access_token.issued', 'access_token');
  on('client_credentials.saved', 'client_credentials');
  on('client_credentials.issued', 'client_credentials');
  on('refresh_token.saved', 'refresh_token');
  on('authorization_code.saved', 'authorization_code');
  on('pushed_authorization_request.saved', 'pushed_authorization_request');
}

/** The first path segment when it is one of the hub's areas; everything else is `other`. */
const AREAS = new Set([
  'api',
  'token',
  'request',
  'auth',
  'interaction',
  'account',
  'console',
  'ssf',
  'grants',
  'reg',
  'proofing',
  'linking',
  'me',
  'jwks',
]);
function areaOf(path: string): string {
  const first = path.split('/')[1] ?? '';
  if (first === '.well-known') return 'discovery';
  return AREAS.has(first) ? first : 'other';
}

const LOOPBACK = /^(127\.|::1$|::ffff:127\.)/;

/** Times every request and serves GET /metrics to loopback clients. */
export function metricsMiddleware(): Middleware {
  return async (ctx, next) => {
    if (ctx.path === '/metrics' && ctx.method === 'GET') {
      if (!LOOPBACK.test(ctx.ip)) return next();
      ctx.set('cache-control', 'no-store');
      ctx.type = registry.contentType;
      ctx.body = await registry.metrics();
      return;
    }
    const end = httpRequests.startTimer();
    try {
      await next();
    } finally {
      end({ area: areaOf(ctx.path), status: `${Math.floor(ctx.status / 100)}xx` });
    }
  };
}
