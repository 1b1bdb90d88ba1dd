/**
 * /console: the operator console. Operators sign in with their own passkeys (not customers'); a
 * session cookie (Secure, HttpOnly, SameSite=strict, path /console) names a row of
 * operator_sessions; every form carries the session's CSRF token; every page view and action is
 * audited as `operator:<name>`. Roles: viewer reads, operator acts on customers, admin also
 * manages operators and reads the effective policies and the management report.
 */
import { randomBytes } from 'node:crypto';
import Router from '@koa/router';
import type { Context } from 'koa';
import { accountCsrfToken, checkAccountCsrf } from '../account/index.ts';
import { listAudit, recordAudit, securityEventsPerDay } from '../audit/index.ts';
import {
  type AuthnContext,
  AuthnError,
  activeExemption,
  auditTicketRefusal,
  endExemption,
  grantExemption,
  issueEnrollmentTicket,
  listPasskeys,
  type RequestMeta,
  startPasskeyAuthentication,
} from '../authn/index.ts';
import type { Config } from '../config/index.ts';
import { listActiveConsents } from '../consent/index.ts';
import { type Db, lockCustomer } from '../db/index.ts';
import { BodyError, HttpError, readBody } from '../http/index.ts';
import {
  activeWithdrawalAccount,
  customerLimits,
  describePolicy,
  listBankLinks,
  maskAccountNumber,
  type Policy,
  sweepsPeerStopped,
} from '../linking/index.ts';
import { listCustomerNotifications } from '../notify/index.ts';
import { endCustomerSession, listCustomerSessions, revokeCustomerSessions } from '../oidc/adapter.ts';
import { jsonEndpoint } from '../oidc/jsonEndpoint.ts';
import { refuseThrottledSource, requestMeta } from '../oidc/passkeySignIn.ts';
import { protectiveSettingsReport } from '../report/index.ts';
import {
  clearPeerLevels,
  customerRisk,
  DEFAULT_THROTTLE_POLICY,
  recordAuthFailure,
  riskEngineFor,
} from '../risk/index.ts';
import { listPeerBreakers, resolvePeerBreaker } from '../signals/index.ts';
import { errorPage, type Lang, languageOf } from '../web/index.ts';
import { ConsoleError } from './errors.ts';
import { freezeCustomer, openFreeze, unfreezeCustomer } from './freeze.ts';
import {
  addOperator,
  CONSOLE_SESSION_SECONDS,
  createOperatorSession,
  disableOperator,
  endOperatorSession,
  finishOperatorEnrollment,
  finishOperatorLogin,
  hasRole,
  listOperators,
  type OperatorSession,
  operatorSession,
  ROLES,
  type Role,
  startOperatorEnrollment,
} from './operators.ts';
import {
  breakersPage,
  type CustomerRow,
  consoleEnrollPage,
  consoleLoginPage,
  customerPage,
  operatorsPage,
  policiesPage,
  reportCsv,
  reportPage,
  requestsPage,
  searchPage,
  ticketShownPage,
  type Viewer,
} from './pages.ts';
import {
  decideRequest,
  fileRequest,
  holdsCredential,
  pendingRequests,
  type RequestKind,
} from './requests.ts';

export const CONSOLE_COOKIE = 'kkh_console';
const CEREMONY_COOKIE = 'kkh_console_ceremony';
const COOKIE = {
  httpOnly: true,
  secure: true,
  sameSite: 'strict',
  signed: false,
  overwrite: true,
  path: '/console',
} as const;

export interface ConsoleRoutesOptions {
  db: Db;
  config: Config;
  authn: AuthnContext;
  /** The withdrawal-strength policy, loaded once at start (src/app.ts). */
  policy: Policy;
}

const forbidden = () => new HttpError(403, 'access_denied', 'your role does not allow this', 'ERR_ROLE');

export function consoleRoutes({ db, config, authn, policy }: ConsoleRoutesOptions): Router {
  const router = new Router({ prefix: '/console' });

  const viewerOf = (s: OperatorSession): Viewer => ({
    name: s.name,
    role: s.role,
    csrf: accountCsrfToken(s),
  });
  const actorOf = (s: OperatorSession) => `operator:${s.name}`;
  const audit = (
    ctx: Context,
    s: OperatorSession,
    type: string,
    data: Record<string, unknown>,
    customerId?: string,
    outcome: 'info' | 'success' = 'info',
  ) =>
    recordAudit(db, {
      type,
      outcome,
      actor: actorOf(s),
      ...(customerId ? { customerId } : {}),
      ...requestMeta(ctx),
      data,
    });

  function ceremonyId(ctx: Context, create: boolean): string {
    let nonce = ctx.cookies.get(CEREMONY_COOKIE, { signed: false });
    if (!nonce || !/^[A-Za-z0-9_-]{32}$/.test(nonce)) {
      if (!create) throw new HttpError(400, 'invalid_request', 'start again from the console page');
      nonce = randomBytes(24).toString('base64url');
      ctx.cookies.set(CEREMONY_COOKIE, nonce, { ...COOKIE, maxAge: 10 * 60 * 1000 });
    }
    return `console_${nonce}`;
  }

  const current = (ctx: Context) => operatorSession(db, ctx.cookies.get(CONSOLE_COOKIE, { signed: false }));

  function fail(ctx: Context, lang: Lang, err: unknown): void {
    const status =
      err instanceof HttpError || err instanceof BodyError
        ? err.status
        : err instanceof ConsoleError
          ? err.code === 'ERR_CUSTOMER_UNKNOWN' ||
            err.code === 'ERR_REQUEST_UNKNOWN' ||
            err.code === 'ERR_PEER_UNKNOWN'
            ? 404
            : err.code === 'ERR_REQUEST_OWN'
              ? 403
              : err.code === 'ERR_REPROOFING_REQUIRED' ||
                  err.code === 'ERR_ALREADY_FROZEN' ||
                  err.code === 'ERR_NOT_FROZEN'
                ? 409
                : 400
          : err instanceof AuthnError
            ? 400
            : 0;
    if (!status) throw err;
    ctx.status = status;
    ctx.type = 'html';
    ctx.body = errorPage({
      lang,
      error:
        err instanceof ConsoleError || err instanceof AuthnError
          ? err.code
          : err instanceof HttpError
            ? (err.code ?? err.error)
            : 'invalid_request',
      description: (err as Error).message,
    });
  }

  /** A page: signed-in operator with at least `role`; otherwise the sign-in page or 403. */
  function view(role: Role, render: (ctx: Context, s: OperatorSession, lang: Lang) => Promise<void>) {
    return async (ctx: Context) => {
      ctx.set('cache-control', 'no-store');
      const lang = languageOf(ctx);
      try {
        const s = await current(ctx);
        if (!s) {
          ctx.status = 303;
          return ctx.redirect('/console');
        }
        if (!hasRole(s.role, role)) throw forbidden();
        ctx.type = 'html';
        await render(ctx, s, lang);
      } catch (err) {
        fail(ctx, lang, err);
      }
    };
  }

  /** A form post: session, role, CSRF; the work returns where to go next (or renders a page itself). */
  function action(
    role: Role,
    work: (
      ctx: Context,
      s: OperatorSession,
      body: URLSearchParams,
      lang: Lang,
    ) => Promise<string | undefined>,
  ) {
    return async (ctx: Context) => {
      ctx.set('cache-control', 'no-store');
      const lang = languageOf(ctx);
      try {
        const s = await current(ctx);
        if (!s) throw new HttpError(401, 'login_required', 'sign in to the console first');
        const body = await readBody(ctx, 'form');
        checkAccountCsrf(s, body.get('csrf'));
        if (!hasRole(s.role, role)) {
          await recordAudit(db, {
            type: 'console.forbidden',
            outcome: 'failure',
            actor: actorOf(s),
            ...requestMeta(ctx),
            data: { path: ctx.path, role: s.role, needs: role },
          });
          throw forbidden();
        }
        const next = await work(ctx, s, body, lang);
        if (next !== undefined) {
          ctx.status = 303;
          ctx.redirect(next);
        }
      } catch (err) {
        fail(ctx, lang, err);
      }
    };
  }

  /** Customers matching a WHERE clause over `customers` (parameters $1…). */
  async function findCustomers(where: string, params: unknown[]): Promise<CustomerRow[]> {
    const r = await db.query<{
      id: string;
      customer_number: string;
      name_kanji: string;
      name_kana: string;
      status: string;
    }>(
      `SELECT id, customer_number, name_kanji, name_kana, status FROM customers WHERE ${where}
       ORDER BY customer_number LIMIT 50`,
      params,
    );
    return r.rows.map((c) => ({
      id: c.id,
      customerNumber: c.customer_number,
      nameKanji: c.name_kanji,
      nameKana: c.name_kana,
      status: c.status,
    }));
  }

  async function customerById(id: string): Promise<CustomerRow> {
    const [c] = await findCustomers('id = $1', [id]);
    if (!c) throw new ConsoleError('ERR_CUSTOMER_UNKNOWN');
    return c;
  }

  // --- sign-in and enrollment ------------------------------------------------------------------

  router.get('/', async (ctx) => {
    ctx.set('cache-control', 'no-store');
    ctx.type = 'html';
    const lang = languageOf(ctx);
    const s = await current(ctx);
    if (!s) {
      ceremonyId(ctx, true);
      ctx.body = consoleLoginPage(lang);
      return;
    }
    const q = typeof ctx.query.q === 'string' ? ctx.query.q.normalize('NFKC').trim().slice(0, 64) : '';
    let results: CustomerRow[] | undefined;
    if (q) {
      const kana = q.replace(/\s+/g, '');
      // Number or id exactly, or the kana reading by prefix, spaces ignored.
      results = await findCustomers(
        "id = $1 OR customer_number = $1 OR replace(replace(name_kana, ' ', ''), '　', '') LIKE $2",
        [q, `${kana.replace(/[\\%_]/g, (m) => `\\${m}`)}%`],
      );
      await audit(ctx, s, 'console.customer.searched', { query: q, results: results.length });
    }
    ctx.body = searchPage(lang, viewerOf(s), q || undefined, results);
  });

  router.get('/enroll', (ctx) => {
    ctx.set('cache-control', 'no-store');
    ctx.type = 'html';
    ceremonyId(ctx, true);
    ctx.body = consoleEnrollPage(languageOf(ctx));
  });

  const asHttp = (err: unknown): never => {
    if (err instanceof ConsoleError) throw new HttpError(400, 'access_denied', err.message, err.code);
    throw err;
  };

  /** The browser's answer to a WebAuthn ceremony started in this browser (its ceremony cookie). */
  async function answer<R>(
    ctx: Context,
    finish: (a: AuthnContext, i: { ceremonyId: string; response: never }, m: RequestMeta) => Promise<R>,
  ): Promise<R> {
    const body = await readBody(ctx, 'json');
    return throttled(ctx, () =>
      finish(authn, { ceremonyId: ceremonyId(ctx, false), response: body as never }, requestMeta(ctx)),
    );
  }

  /**
   * Ticket guesses and failed passkey assertions slow the source down, under the same per-source
   * throttle as customers' sign-ins (429 with Retry-After while it lasts).
   */
  async function throttled<R>(ctx: Context, work: () => Promise<R>): Promise<R> {
    const source = await refuseThrottledSource({ db, authn, throttle: DEFAULT_THROTTLE_POLICY }, ctx);
    try {
      return await work();
    } catch (err) {
      if (err instanceof ConsoleError && (err.code === 'ERR_WEBAUTHN' || err.code === 'ERR_OPERATOR_TICKET'))
        await recordAuthFailure(db, { source }, { ...requestMeta(ctx), reason: `console:${err.code}` });
      return asHttp(err);
    }
  }

  router.post('/enroll/options', (ctx) =>
    jsonEndpoint(ctx, async () => {
      const body = await readBody(ctx, 'json');
      return throttled(ctx, () =>
        startOperatorEnrollment(
          authn,
          {
            name: typeof body.name === 'string' ? body.name.trim() : '',
            ticket: typeof body.ticket === 'string' ? body.ticket : '',
            ceremonyId: ceremonyId(ctx, false),
          },
          requestMeta(ctx),
        ),
      );
    }),
  );

  router.post('/enroll/verify', (ctx) =>
    jsonEndpoint(ctx, async () => {
      const done = await answer(ctx, finishOperatorEnrollment);
      return { registered: true, operator: done.operator, redirectTo: '/console' };
    }),
  );

  router.post('/login/options', (ctx) =>
    jsonEndpoint(ctx, () => startPasskeyAuthentication(authn, { interactionId: ceremonyId(ctx, false) })),
  );

  router.post('/login/verify', (ctx) =>
    jsonEndpoint(ctx, async () => {
      const op = await answer(ctx, finishOperatorLogin);
      const secret = await createOperatorSession(db, op.operatorId, requestMeta(ctx));
      ctx.cookies.set(CONSOLE_COOKIE, secret, { ...COOKIE, maxAge: CONSOLE_SESSION_SECONDS * 1000 });
      return { redirectTo: '/console' };
    }),
  );

  router.post(
    '/logout',
    action('viewer', async (ctx, s) => {
      await endOperatorSession(db, s.jti);
      await audit(ctx, s, 'console.logout', {});
      ctx.cookies.set(CONSOLE_COOKIE, null, COOKIE);
      return '/console';
    }),
  );

  // --- customers -------------------------------------------------------------------------------

  async function renderCustomer(
    ctx: Context,
    s: OperatorSession,
    lang: Lang,
    id: string,
    extra: { ticket?: { ticket: string; expiresAt: Date }; notice?: string } = {},
  ) {
    const customer = await customerById(id);
    const [
      frozen,
      risk,
      history,
      sessions,
      passkeys,
      links,
      sweepsStopped,
      consents,
      account,
      limits,
      notifications,
      exemption,
      requests,
    ] = await Promise.all([
      openFreeze(db, id),
      customerRisk(db, id),
      listAudit(db, {
        customerId: id,
        typePrefixes: ['authn', 'risk', 'console', 'proofing', 'account'],
        limit: 50,
      }),
      listCustomerSessions(db, id),
      listPasskeys(db, id),
      listBankLinks(db, id),
      sweepsPeerStopped(db, id),
      listActiveConsents(db, id),
      activeWithdrawalAccount(db, id),
      customerLimits(db, id, config.linking.defaultLimits),
      listCustomerNotifications(db, id),
      activeExemption(db, id),
      pendingRequests(db, id),
    ]);
    await audit(ctx, s, 'console.customer.viewed', {}, id);
    ctx.type = 'html';
    ctx.body = customerPage(lang, viewerOf(s), {
      customer,
      frozen,
      risk,
      history,
      sessions,
      passkeys,
      links,
      sweepsPeerStopped: sweepsStopped,
      consents,
      withdrawal: account
        ? {
            bankName: account.bankName,
            accountMasked: maskAccountNumber(account.accountNumber),
            holdUntil: account.holdUntil,
            limits: { ...limits.current },
          }
        : { limits: { ...limits.current } },
      notifications,
      exempted: exemption !== undefined,
      requests,
      ...extra,
    });
  }

  router.get(
    '/customers/:id',
    view('viewer', async (ctx, s, lang) => {
      const notice = typeof ctx.query.notice === 'string' ? ctx.query.notice.slice(0, 200) : undefined;
      await renderCustomer(ctx, s, lang, String(ctx.params.id), notice ? { notice } : {});
    }),
  );

  const back = (id: string, notice: string) =>
    `/console/customers/${encodeURIComponent(id)}?notice=${encodeURIComponent(notice)}`;

  router.post(
    '/customers/:id/freeze',
    action('operator', async (ctx, s, body) => {
      const id = String(ctx.params.id);
      const r = await freezeCustomer(
        db,
        {
          customerId: id,
          operator: s.name,
          reason: body.get('reason') ?? '',
          suspectedTakeover: body.get('takeover') === 'yes',
        },
        requestMeta(ctx),
      );
      return back(id, `frozen; ended ${r.sessions} sessions, ${r.grants} grants, ${r.tokens} tokens`);
    }),
  );

  router.post(
    '/customers/:id/unfreeze',
    action('operator', async (ctx, s) => {
      const id = String(ctx.params.id);
      const r = await unfreezeCustomer(db, { customerId: id, operator: s.name }, requestMeta(ctx));
      return back(id, `unfrozen after proofing ${r.proofingId}`);
    }),
  );

  // The customer confirmed by phone, or the peer withdrew its signal: the peer-raised level ends now.
  router.post(
    '/customers/:id/peer-risk/clear',
    action('operator', async (ctx, s) => {
      const id = String(ctx.params.id);
      const n = await clearPeerLevels(db, id, actorOf(s));
      await audit(ctx, s, 'console.customer.peer_risk_cleared', { cleared: n }, id, 'success');
      return back(id, `cleared ${n} peer risk level(s)`);
    }),
  );

  router.post(
    '/customers/:id/sessions/end',
    action('operator', async (ctx, s, body) => {
      const id = String(ctx.params.id);
      const uid = body.get('uid') ?? '';
      if (!(await endCustomerSession(db, id, uid)))
        throw new HttpError(404, 'invalid_request', 'no such session');
      await audit(ctx, s, 'console.customer.sessions_ended', { sessions: 1 }, id, 'success');
      return back(id, 'session ended');
    }),
  );

  router.post(
    '/customers/:id/sessions/end-all',
    action('operator', async (ctx, s) => {
      const id = String(ctx.params.id);
      await customerById(id);
      const r = await revokeCustomerSessions(db, id);
      await audit(ctx, s, 'console.customer.sessions_ended', { ...r, all: true }, id, 'success');
      return back(id, `ended ${r.sessions} sessions, ${r.grants} grants`);
    }),
  );

  /** Files a four-eyes request (src/console/requests.ts) and says so on the customer's page. */
  async function request(s: OperatorSession, id: string, kind: RequestKind, body: URLSearchParams) {
    const what = kind === 'exemption_grant' ? 'exemption' : 'ticket';
    const r = await fileRequest(db, {
      kind,
      customerId: id,
      reason: body.get('reason') ?? '',
      requestedBy: actorOf(s),
    });
    return back(
      id,
      r.created
        ? `${what} requested: another operator with the admin role must approve it`
        : `a ${what} request for this customer is already open`,
    );
  }

  router.post(
    '/customers/:id/enrollment-ticket',
    action('operator', async (ctx, s, body, lang) => {
      const id = String(ctx.params.id);
      const customer = await customerById(id);
      // A customer who holds a credential is recovering: a second operator (admin) must approve.
      if (await holdsCredential(db, id)) return request(s, id, 'enrollment_ticket', body);
      // issueEnrollmentTicket audits it as operator:<name>.
      const t = await issueEnrollmentTicket(authn, { customerId: id, issuedBy: s.name }, requestMeta(ctx));
      ctx.status = 200;
      ctx.type = 'html';
      ctx.body = ticketShownPage(lang, viewerOf(s), customer.customerNumber, t.ticket, t.expiresAt);
      return undefined;
    }),
  );

  router.post(
    '/customers/:id/exemption/grant',
    action('operator', async (ctx, s, body) => {
      const id = String(ctx.params.id);
      await customerById(id);
      return request(s, id, 'exemption_grant', body);
    }),
  );

  router.post(
    '/customers/:id/exemption/end',
    action('operator', async (ctx, s) => {
      const id = String(ctx.params.id);
      const ended = await endExemption(db, id, actorOf(s));
      return back(id, ended ? 'exemption ended' : 'no open exemption');
    }),
  );

  // --- four eyes (src/console/requests.ts) -------------------------------------------------------

  router.get(
    '/requests',
    view('admin', async (ctx, s, lang) => {
      ctx.body = requestsPage(lang, viewerOf(s), await pendingRequests(db));
    }),
  );

  router.post(
    '/requests/:rid/approve',
    action('admin', async (ctx, s, _body, lang) => {
      const id = String(ctx.params.rid);
      const by = actorOf(s);
      // Decided and carried out in one transaction: an approval never stands without its exemption or
      // its ticket, and a refused issuance (e.g. a frozen customer) leaves the request open.
      let issuing: { customerId: string; issuedBy: string } | undefined;
      const done = await db
        .transaction(async (tx) => {
          const request = await decideRequest(tx, { id, approve: true, decidedBy: by });
          if (request.kind !== 'exemption_grant') {
            issuing = { customerId: request.customerId, issuedBy: s.name };
            const ticket = await issueEnrollmentTicket(authn, issuing, requestMeta(ctx), { within: tx });
            return { request, ticket };
          }
          // Under the customer's row lock, which money decisions take before they read the exemption.
          await lockCustomer(tx, request.customerId);
          await grantExemption(tx, {
            customerId: request.customerId,
            reason: request.reason,
            grantedBy: `${request.requestedBy}+${by}`,
          });
          return { request, ticket: undefined };
        })
        .catch(async (err: unknown) => {
          // The refusal is recorded once the approval has rolled back (src/authn/tickets.ts).
          if (err instanceof AuthnError && issuing)
            await auditTicketRefusal(db, issuing, err, requestMeta(ctx));
          throw err;
        });
      const { request: approved, ticket: t } = done;
      if (!t)
        return back(approved.customerId, `exemption granted (${approved.requestedBy}, approved by ${by})`);
      ctx.status = 200;
      ctx.type = 'html';
      ctx.body = ticketShownPage(lang, viewerOf(s), approved.customerNumber, t.ticket, t.expiresAt);
      return undefined;
    }),
  );

  router.post(
    '/requests/:rid/reject',
    action('admin', async (_ctx, s) => {
      const r = await decideRequest(db, {
        id: String(_ctx.params.rid),
        approve: false,
        decidedBy: actorOf(s),
      });
      return back(r.customerId, `request rejected (${r.requestedBy})`);
    }),
  );

  // --- administration --------------------------------------------------------------------------

  // Peers' circuit breakers (src/signals/breaker.ts): what each held, released or dropped here as by
  // `kakehashi ssf release|drop <peer>` — every held SET's actions run (or are discarded) and the
  // breaker closes, audited as ssf.peer.circuit_closed with the admin's name.
  router.get(
    '/breakers',
    view('admin', async (ctx, s, lang) => {
      ctx.body = breakersPage(lang, viewerOf(s), await listPeerBreakers(db));
    }),
  );

  router.post(
    '/breakers/:peer/:how',
    action('admin', async (ctx, s) => {
      const how = String(ctx.params.how);
      if (how !== 'release' && how !== 'drop') throw new HttpError(404, 'not_found', 'no such action');
      const n = await resolvePeerBreaker(db, String(ctx.params.peer), how, actorOf(s));
      if (n === undefined) throw new ConsoleError('ERR_PEER_UNKNOWN');
      return '/console/breakers';
    }),
  );

  router.get(
    '/operators',
    view('admin', async (ctx, s, lang) => {
      ctx.body = operatorsPage(lang, viewerOf(s), await listOperators(db));
    }),
  );

  router.post(
    '/operators/add',
    action('admin', async (ctx, s, body, lang) => {
      const name = (body.get('name') ?? '').trim();
      const role = body.get('role') as Role;
      if (!ROLES.includes(role)) throw new ConsoleError('ERR_OPERATOR_ROLE');
      const t = await addOperator(db, { name, role, by: actorOf(s) });
      ctx.status = 200;
      ctx.type = 'html';
      ctx.body = ticketShownPage(lang, viewerOf(s), name, t.ticket, t.expiresAt);
      return undefined;
    }),
  );

  router.post(
    '/operators/disable',
    action('admin', async (_ctx, s, body) => {
      const name = body.get('name') ?? '';
      if (name === s.name) throw new HttpError(400, 'invalid_request', 'you cannot disable yourself');
      if (!(await disableOperator(db, name, actorOf(s)))) throw new ConsoleError('ERR_OPERATOR_UNKNOWN');
      return '/console/operators';
    }),
  );

  router.get(
    '/policies',
    view('admin', async (ctx, s, lang) => {
      await audit(ctx, s, 'console.policies.viewed', {});
      ctx.body = policiesPage(
        lang,
        viewerOf(s),
        describePolicy(policy, lang),
        JSON.stringify(riskEngineFor(config).rules, null, 2),
      );
    }),
  );

  router.get(
    '/report',
    view('admin', async (ctx, s, lang) => {
      const day = (v: unknown) =>
        typeof v === 'string' && /^\d{4}-\d{2}-\d{2}$/.test(v) ? new Date(v) : undefined;
      const to = day(ctx.query.to) ?? new Date();
      const from = day(ctx.query.from) ?? new Date(to.getTime() - 30 * 24 * 3600 * 1000);
      if (from >= to) throw new HttpError(400, 'invalid_request', 'from must be before to');
      const [report, daily] = await Promise.all([
        protectiveSettingsReport(db, { from, to }),
        securityEventsPerDay(db, from, to),
      ]);
      const format = ctx.query.format;
      await audit(ctx, s, 'console.report.viewed', {
        from: from.toISOString(),
        to: to.toISOString(),
        format: typeof format === 'string' ? format : 'html',
      });
      if (format === 'csv') {
        ctx.type = 'text/csv; charset=utf-8';
        ctx.set('content-disposition', 'attachment; filename="protective-settings.csv"');
        ctx.body = reportCsv(report, daily);
      } else if (format === 'json') {
        ctx.type = 'json';
        ctx.body = { ...report, perDay: daily };
      } else ctx.body = reportPage(lang, viewerOf(s), report, daily);
    }),
  );

  return router;
}
