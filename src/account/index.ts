/**
 * The customer's security page at /account: passkeys (add after a fresh sign-in, rename, remove),
 * active sessions (end one or all), sign-in history. The customer signs in with a passkey under
 * the same rules as everywhere else (src/oidc/passkeySignIn.ts); the sign-in is an oidc-provider
 * session, so it is the same session the authorization endpoint sees.
 */
import { randomBytes } from 'node:crypto';
import Router from '@koa/router';
import type { Context } from 'koa';
import type Provider from 'oidc-provider';
import { listAudit, recordAudit } from '../audit/index.ts';
import {
  type AuthnContext,
  AuthnError,
  finishPasskeyRegistration,
  listPasskeys,
  removePasskey,
  renamePasskey,
  startAdditionalPasskeyRegistration,
  startPasskeyAuthentication,
} from '../authn/index.ts';
import type { Config } from '../config/index.ts';
import { listActiveConsents, revokeConsent } from '../consent/index.ts';
import type { Db } from '../db/index.ts';
import { HttpError, readBody } from '../http/index.ts';
import {
  activeWithdrawalAccount,
  changeChannel,
  changeLimit,
  changeProduct,
  channelStates,
  customerLimits,
  isChannel,
  isProduct,
  LIMIT_NAMES,
  type LimitName,
  LinkingError,
  maskAccountNumber,
  type Policy,
  productStates,
} from '../linking/index.ts';
import {
  addEmailChannel,
  enqueueNotification,
  getNotificationSettings,
  isCriticalKind,
  NOTIFICATION_KINDS,
  NotifyError,
  removeChannel,
  updateNotificationSettings,
} from '../notify/index.ts';
import { endCustomerSession, listCustomerSessions, revokeCustomerSessions } from '../oidc/adapter.ts';
import { jsonEndpoint } from '../oidc/jsonEndpoint.ts';
import { guardOperation, requestMeta, type SignInDeps, signInWithPasskey } from '../oidc/passkeySignIn.ts';
import { notifyCustomer } from '../oidc/securityNotices.ts';
import {
  DEFAULT_THROTTLE_POLICY,
  declareTravel,
  riskEngineFor,
  type ThrottlePolicy,
  TravelError,
} from '../risk/index.ts';
import { accountLoginPage, languageOf, messages, securityPage } from '../web/index.ts';
import { accountCsrfToken, checkAccountCsrf, createAccountForms, type SignedInSession } from './forms.ts';
import { requireFreshSignIn } from './freshSignIn.ts';

export {
  type AccountForms,
  accountCsrfToken,
  checkAccountCsrf,
  createAccountForms,
  type SignedInSession,
} from './forms.ts';

export interface AccountRoutesOptions {
  provider: Provider;
  db: Db;
  config: Config;
  authn: AuthnContext;
  throttle?: ThrottlePolicy;
  /** The withdrawal-strength policy, loaded once at start (src/app.ts). */
  policy: Policy;
}

export { RECENT_SIGN_IN_SECONDS } from './freshSignIn.ts';

const CEREMONY_COOKIE = 'kkh_account_ceremony';
/** History shows these event families only (notify: contact changes must be visible, JSDA IV.1.(2)④). */
const HISTORY_FAMILIES = ['authn', 'risk', 'consent', 'account', 'enrollment', 'proofing', 'notify'];

export function accountRoutes({
  provider,
  db,
  config,
  authn,
  throttle = DEFAULT_THROTTLE_POLICY,
  policy,
}: AccountRoutesOptions): Router {
  const router = new Router({ prefix: '/account' });
  const signIn: SignInDeps = { db, authn, throttle, risk: riskEngineFor(config) };
  const sessionCookie = provider.cookieName('session');

  const geo = riskEngineFor(config).geo;
  /** "JP · AS2516 KDDI" from the offline IP data (src/risk/geo.ts), or undefined when unknown. */
  function coarseLocation(ip: string | null): string | undefined {
    const l = geo.locate(ip ?? undefined);
    const parts = [l.country, l.asn ? `AS${l.asn}${l.org ? ` ${l.org}` : ''}` : undefined].filter(Boolean);
    return parts.length ? parts.join(' · ') : undefined;
  }

  const forms = createAccountForms({
    provider,
    risk: signIn,
    errorOf: (err) =>
      err instanceof AuthnError || err instanceof NotifyError
        ? { status: 400, code: err.code }
        : err instanceof LinkingError
          ? { status: err.code === 'ERR_LIMIT_NEEDS_FRESH_PASSKEY' ? 403 : 400, code: err.code }
          : undefined,
  });
  const { signedIn } = forms;
  const csrfFor = accountCsrfToken;
  const checkCsrf = checkAccountCsrf;

  /** The ceremony id binding a WebAuthn challenge to this browser (no interaction exists here). */
  function ceremonyId(ctx: Context, create: boolean): string {
    let nonce = ctx.cookies.get(CEREMONY_COOKIE, { signed: false });
    if (!nonce || !/^[A-Za-z0-9_-]{32}$/.test(nonce)) {
      if (!create) throw new HttpError(400, 'invalid_request', 'start the sign-in again');
      nonce = randomBytes(24).toString('base64url');
      ctx.cookies.set(CEREMONY_COOKIE, nonce, {
        httpOnly: true,
        secure: true,
        sameSite: 'strict',
        signed: false,
        overwrite: true,
        path: '/account',
        maxAge: 10 * 60 * 1000,
      });
    }
    return `account_${nonce}`;
  }

  /** Form posts (src/account/forms.ts): back to the page, with the notice `work` returns if any. */
  const form = (
    ctx: Context,
    work: (session: SignedInSession, body: URLSearchParams) => Promise<string | undefined>,
  ) =>
    forms.handle(ctx, async (session, body) => {
      const notice = await work(session, body);
      return notice ? `/account?notice=${encodeURIComponent(notice)}` : '/account';
    });

  router.get('/', async (ctx) => {
    ctx.set('cache-control', 'no-store');
    ctx.type = 'html';
    const lang = languageOf(ctx);
    const notice = typeof ctx.query.notice === 'string' ? ctx.query.notice.slice(0, 200) : undefined;
    const session = await signedIn(ctx);
    if (!session) {
      ceremonyId(ctx, true);
      ctx.body = accountLoginPage({ lang, notice });
      return;
    }
    const [
      customer,
      limits,
      withdrawalAccount,
      channels,
      products,
      consents,
      notifications,
      passkeys,
      sessions,
      history,
    ] = await Promise.all([
      db.query<{ name_kanji: string }>('SELECT name_kanji FROM customers WHERE id = $1', [session.accountId]),
      customerLimits(db, session.accountId, config.linking.defaultLimits),
      activeWithdrawalAccount(db, session.accountId),
      channelStates(db, session.accountId),
      productStates(db, session.accountId, config.linking.defaultProducts),
      listActiveConsents(db, session.accountId),
      getNotificationSettings(db, session.accountId),
      listPasskeys(db, session.accountId),
      listCustomerSessions(db, session.accountId),
      listAudit(db, { customerId: session.accountId, typePrefixes: HISTORY_FAMILIES, limit: 50 }),
    ]);
    ctx.body = securityPage({
      lang,
      limits: {
        current: limits.current,
        pending: limits.pending,
        withdrawalAccount: withdrawalAccount && {
          bankName: withdrawalAccount.bankName,
          accountMasked: maskAccountNumber(withdrawalAccount.accountNumber),
          holdUntil: withdrawalAccount.holdUntil,
        },
        channels,
        products,
      },
      customerName: customer.rows[0]?.name_kanji ?? '',
      csrf: csrfFor(session),
      notice,
      consents,
      notifications,
      passkeys,
      sessions: sessions.map((s) => ({
        uid: s.uid,
        loginAt: s.loginTs ? new Date(s.loginTs * 1000) : null,
        amr: s.amr,
        current: s.uid === session.uid,
      })),
      history: history.map((h) => ({
        at: new Date(h.at),
        type: h.type,
        outcome: h.outcome,
        ip: h.ip,
        port: h.port,
        userAgent: h.user_agent,
        // Coarse location (JSDA IV.5.(1)): country and network from the operator's offline data.
        location: coarseLocation(h.ip),
      })),
    });
  });

  router.post('/login/options', (ctx) =>
    jsonEndpoint(ctx, async () =>
      startPasskeyAuthentication(authn, { interactionId: ceremonyId(ctx, false) }),
    ),
  );

  router.post('/login/verify', (ctx) =>
    jsonEndpoint(ctx, async () => {
      const body = await readBody(ctx, 'json');
      const result = await signInWithPasskey(signIn, ctx, {
        ceremonyId: ceremonyId(ctx, false),
        response: body,
      });
      const session = await provider.Session.get(ctx);
      // A new identifier at every sign-in: a session id planted before it (fixation) is worthless.
      session.resetIdentifier();
      session.loginAccount({
        accountId: result.customerId,
        acr: result.acr,
        amr: result.amr,
        loginTs: result.authTime,
      });
      await session.save(config.oidc.sessionTtl);
      ctx.cookies.set(sessionCookie, session.jti, {
        httpOnly: true,
        secure: true,
        sameSite: 'lax',
        signed: true,
        overwrite: true,
        maxAge: config.oidc.sessionTtl * 1000,
      });
      return { redirectTo: '/account' };
    }),
  );

  router.post('/passkeys/options', (ctx) =>
    jsonEndpoint(ctx, async () => {
      const session = await signedIn(ctx);
      if (!session) throw new HttpError(401, 'login_required', 'sign in first');
      const body = await readBody(ctx, 'json');
      checkCsrf(session, body.csrf);
      await guardOperation(signIn, ctx, {
        customerId: session.accountId,
        sessionUid: session.uid,
        operation: 'account.passkeys.add',
        sensitive: true,
      });
      await requirePasskeySignIn(ctx, session);
      return startAdditionalPasskeyRegistration(authn, {
        customerId: session.accountId,
        interactionId: `account_${session.uid}`,
      });
    }),
  );

  router.post('/passkeys/verify', (ctx) =>
    jsonEndpoint(ctx, async () => {
      const session = await signedIn(ctx);
      if (!session) throw new HttpError(401, 'login_required', 'sign in first');
      const body = await readBody(ctx, 'json');
      checkCsrf(session, body.csrf);
      await requirePasskeySignIn(ctx, session);
      if (typeof body.response !== 'object' || body.response === null)
        throw new HttpError(400, 'invalid_request', 'response is required');
      const name = typeof body.passkeyName === 'string' ? body.passkeyName : undefined;
      const result = await finishPasskeyRegistration(
        authn,
        { interactionId: `account_${session.uid}`, response: body.response as never, passkeyName: name },
        requestMeta(ctx, `account_${session.uid}`),
      );
      if (result.customerId !== session.accountId)
        throw new HttpError(400, 'invalid_request', 'customer mismatch');
      return { registered: true, credentialId: result.credentialId };
    }),
  );

  router.post('/passkeys/rename', (ctx) =>
    form(ctx, async (session, body) => {
      const ok = await renamePasskey(
        db,
        {
          customerId: session.accountId,
          credentialId: body.get('credentialId') ?? '',
          name: body.get('name') ?? '',
        },
        requestMeta(ctx),
      );
      if (!ok) throw new HttpError(404, 'invalid_request', 'no such passkey');
      return undefined;
    }),
  );

  router.post('/passkeys/remove', (ctx) =>
    form(ctx, async (session, body) => {
      await requireRecentSignIn(ctx, session, 'other');
      const credentialId = body.get('credentialId') ?? '';
      const removed = (await listPasskeys(db, session.accountId)).find(
        (k) => k.credentialId === credentialId,
      );
      const ok = await removePasskey(db, { customerId: session.accountId, credentialId }, requestMeta(ctx));
      if (!ok) throw new HttpError(404, 'invalid_request', 'no such passkey');
      await notifyCustomer(db, {
        customerId: session.accountId,
        kind: 'passkey_removed',
        data: { ...(removed ? { passkeyName: removed.name } : {}) },
      });
      return undefined;
    }),
  );

  // One click ends an app's access: the consent is marked revoked (who, why) and its grant, access
  // and refresh tokens are deleted, so the very next call with them fails, on every node.
  router.post('/consents/revoke', (ctx) =>
    form(ctx, async (session, body) => {
      const grantId = body.get('grantId') ?? '';
      const revoked = await revokeConsent(db, {
        grantId,
        customerId: session.accountId,
        by: { customer: true },
        reason: 'revoked by the customer on the security page',
        request: requestMeta(ctx),
      });
      if (!revoked) throw new HttpError(404, 'invalid_request', 'no such consent');
      return messages(languageOf(ctx)).account.revoked;
    }),
  );

  /**
   * Another passkey only after a sign-in with a current one in the last 5 minutes (issue 4, item 1):
   * a one-time-code session (acr otp, relayable by a phishing proxy) must not become a passkey (phr).
   */
  const requirePasskeySignIn = (ctx: Context, session: SignedInSession) =>
    requireFreshSignIn(db, session, 'passkey', messages(languageOf(ctx)).account.addNeedsRecent);

  /**
   * Changes an intruder would make to stay unnoticed — where we notify (JSDA IV.1.(2)④; the old
   * contact is told), which notices are sent, declared travel, removing a passkey — need a fresh
   * passkey sign-in; an exempted customer without a usable passkey, a fresh code sign-in.
   */
  const requireRecentSignIn = (
    ctx: Context,
    session: SignedInSession,
    change: 'contact' | 'travel' | 'other',
  ) => {
    const t = messages(languageOf(ctx)).account;
    const message = {
      contact: t.contactNeedsRecent,
      travel: t.travelNeedsRecent,
      other: t.changeNeedsRecent,
    };
    return requireFreshSignIn(db, session, 'passkeyIfAny', message[change]);
  };

  router.post('/contacts/add', (ctx) =>
    form(ctx, async (session, body) => {
      await requireRecentSignIn(ctx, session, 'contact');
      const replaces = body.get('replaces') || undefined;
      const kek = authn.kek;
      if (!kek) throw new Error('no key-encryption key for contact data');
      await db.transaction((tx) =>
        addEmailChannel(tx, kek, {
          customerId: session.accountId,
          address: body.get('address') ?? '',
          replaces,
          actor: `customer:${session.accountId}`,
          ...requestMeta(ctx),
        }),
      );
      return undefined;
    }),
  );

  router.post('/contacts/remove', (ctx) =>
    form(ctx, async (session, body) => {
      await requireRecentSignIn(ctx, session, 'contact');
      await db.transaction((tx) =>
        removeChannel(tx, {
          customerId: session.accountId,
          channelId: body.get('channelId') ?? '',
          actor: `customer:${session.accountId}`,
          ...requestMeta(ctx),
        }),
      );
      return undefined;
    }),
  );

  router.post('/notifications', (ctx) =>
    form(ctx, async (session, body) => {
      await requireRecentSignIn(ctx, session, 'other');
      const on = new Set(body.getAll('kind'));
      const language = body.get('language');
      await db.transaction((tx) =>
        updateNotificationSettings(tx, {
          customerId: session.accountId,
          ...(language === 'ja' || language === 'en' ? { language } : {}),
          // Unchecked boxes are not sent: every kind not listed is switched off (critical ones stay on).
          kinds: Object.fromEntries(
            NOTIFICATION_KINDS.filter((k) => !isCriticalKind(k)).map((k) => [k, on.has(k)]),
          ),
          actor: `customer:${session.accountId}`,
          ...requestMeta(ctx),
        }),
      );
      return undefined;
    }),
  );

  router.post('/sessions/end', (ctx) =>
    form(ctx, async (session, body) => {
      const uid = body.get('uid') ?? '';
      if (uid === session.uid)
        throw new HttpError(400, 'invalid_request', 'use sign out to end this session');
      if (!(await endCustomerSession(db, session.accountId, uid)))
        throw new HttpError(404, 'invalid_request', 'no such session');
      await recordAudit(db, {
        type: 'account.sessions.ended',
        outcome: 'success',
        actor: `customer:${session.accountId}`,
        customerId: session.accountId,
        ...requestMeta(ctx),
        data: { sessions: 1 },
      });
      return undefined;
    }),
  );

  router.post('/sessions/end-all', (ctx) =>
    form(ctx, async (session) => {
      // Every session, grant and token of the customer: apps must ask for permission again.
      const revoked = await revokeCustomerSessions(db, session.accountId);
      await recordAudit(db, {
        type: 'account.sessions.ended',
        outcome: 'success',
        actor: `customer:${session.accountId}`,
        customerId: session.accountId,
        ...requestMeta(ctx),
        data: { ...revoked, all: true },
      });
      ctx.cookies.set(sessionCookie, null, { signed: true, overwrite: true });
      return undefined;
    }),
  );

  /** Who asks for a limit, channel or product change: how they signed in, frozen or not (for the policy). */
  async function changer(ctx: Context, session: SignedInSession) {
    const customer = await db.query<{ status: string }>('SELECT status FROM customers WHERE id = $1', [
      session.accountId,
    ]);
    return {
      acr: session.acr,
      authTime: session.loginTs,
      frozen: customer.rows[0]?.status === 'frozen',
      actor: `customer:${session.accountId}`,
      ip: ctx.ip,
    };
  }

  /**
   * Channels the customer does not use (issue 4, item 8): off at once; on again after a passkey
   * sign-in within 5 minutes and the policy's cool-off, like raising a limit.
   */
  router.post('/channels', (ctx) =>
    form(ctx, async (session, body) => {
      const channel = body.get('channel');
      const action = body.get('action');
      if (!isChannel(channel) || (action !== 'disable' && action !== 'enable'))
        throw new HttpError(400, 'invalid_request', 'unknown channel or action');
      await changeChannel(db, policy, {
        customerId: session.accountId,
        channel,
        enable: action === 'enable',
        ...(await changer(ctx, session)),
      });
      return undefined;
    }),
  );

  /**
   * Products the customer allows trading in (issue 6, item 3): blocking applies at once; allowing is
   * decided like raising a limit (a passkey sign-in within 5 minutes, then the cool-off).
   */
  router.post('/products', (ctx) =>
    form(ctx, async (session, body) => {
      const product = body.get('product');
      const action = body.get('action');
      if (!isProduct(product) || (action !== 'block' && action !== 'allow'))
        throw new HttpError(400, 'invalid_request', 'unknown product or action');
      const result = await changeProduct(db, policy, config.linking.defaultProducts, {
        customerId: session.accountId,
        product,
        allow: action === 'allow',
        ...(await changer(ctx, session)),
      });
      const t = messages(languageOf(ctx)).account;
      return result.status === 'pending'
        ? t.productPending
        : result.status === 'blocked'
          ? t.productBlocked
          : undefined;
    }),
  );

  /**
   * Daily limits (issue 6): lowering applies at once; raising is decided by the withdrawal-strength
   * policy (a passkey sign-in within 5 minutes) and waits for its cool-off. Both are notified.
   */
  router.post('/limits', (ctx) =>
    form(ctx, async (session, body) => {
      const limit = body.get('limit');
      const amount = body.get('amount') ?? '';
      if (!LIMIT_NAMES.includes(limit as LimitName) || !/^\d{1,10}$/.test(amount))
        throw new LinkingError('ERR_LIMIT_INVALID');
      const result = await changeLimit(db, policy, config.linking.defaultLimits, {
        customerId: session.accountId,
        limit: limit as LimitName,
        amount: Number(amount),
        ...(await changer(ctx, session)),
      });
      const t = messages(languageOf(ctx)).account;
      return result.status === 'pending' ? t.limitPending : t.limitLowered;
    }),
  );

  /**
   * Declared travel (FSA comment 88): sign-ins from that country in that period are expected, so the
   * abroad-undeclared and new-country rules stay quiet. That is worth something to an intruder: a
   * fresh passkey sign-in (a code for an exempted customer without one), and every channel is told.
   */
  router.post('/travel', (ctx) =>
    form(ctx, async (session, body) => {
      await requireRecentSignIn(ctx, session, 'travel');
      const isDay = (v: string | null): v is string => /^\d{4}-\d{2}-\d{2}$/.test(v ?? '');
      const day = (v: string | null) => new Date(isDay(v) ? `${v}T00:00:00+09:00` : 'x');
      const [fromDay, toDay] = [body.get('from'), body.get('to')];
      const to = day(toDay);
      const country = (body.get('country') ?? '').trim().toUpperCase();
      try {
        await db.transaction(async (tx) => {
          await declareTravel(tx, {
            customerId: session.accountId,
            country,
            from: day(fromDay),
            // The last day of the trip counts in full (Japan time).
            to: new Date(to.getTime() + 24 * 3600 * 1000),
            declaredBy: `customer:${session.accountId}`,
          });
          // Validated above (declareTravel refuses bad dates and countries).
          if (isDay(fromDay) && isDay(toDay))
            await enqueueNotification(tx, {
              customerId: session.accountId,
              kind: 'travel_declared',
              data: { country, from: fromDay, to: toDay },
            });
        });
      } catch (err) {
        if (err instanceof TravelError) throw new HttpError(400, 'invalid_request', err.message, err.code);
        throw err;
      }
      return undefined;
    }),
  );

  router.post('/logout', (ctx) =>
    form(ctx, async (session) => {
      await session.destroy();
      ctx.cookies.set(sessionCookie, null, { signed: true, overwrite: true });
      return undefined;
    }),
  );

  return router;
}
