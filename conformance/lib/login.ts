/**
 * The customer's side of an authorization request, without a browser: follow the authorization
 * URL to the hub's interaction pages, (enroll a passkey with a one-time ticket,) sign in with
 * the software authenticator, consent, and return the callback URL the hub redirects to.
 *
 * Used by the conformance plan and the benchmark. A passkey enrolled once stays registered, and
 * the emulator keeps its private key, so one enrollment serves every later login of a run.
 */
import { createEmulator, type PasskeyEmulator } from '../../test/support/passkeyEmulator.ts';
import { createUserAgent, type UaResponse, type UserAgent } from './userAgent.ts';

export type LoginStep = 'authorize' | 'enroll' | 'passkey' | 'consent' | 'cancel' | 'callback';

export class LoginError extends Error {
  override name = 'LoginError';
  readonly code = 'ERR_LOGIN';
  readonly step: LoginStep;
  readonly status: number;
  readonly url: string;
  /** The start of the response body (error pages and JSON errors carry no secrets). */
  readonly body: string;
  constructor(step: LoginStep, response: UaResponse, why: string) {
    super(`${step}: ${why} (${response.status} at ${response.url.pathname})`);
    this.step = step;
    this.status = response.status;
    this.url = response.url.href;
    this.body = response.text.slice(0, 500);
  }
}

export interface Enrollment {
  customerNumber: string;
  /** One-time enrollment ticket an operator issued for this customer. */
  ticket: string;
  passkeyName?: string;
}

export interface LoginOptions {
  /** A fetch that trusts the hub's CA. */
  fetch: typeof globalThis.fetch;
  /** The authorization URL (`/auth?client_id=…&request_uri=…`). */
  authorizationUrl: string | URL;
  /** The customer's authenticator. */
  device: PasskeyEmulator;
  /** Enroll `device` first, in this interaction, with a one-time ticket. */
  enroll?: Enrollment;
  /** What the customer does: approve at consent (default), deny at consent, or cancel at login. */
  decision?: 'approve' | 'deny' | 'cancel';
  /** Picks the accounts to share from those the consent page offers; default all of them. */
  accounts?: (offered: string[]) => string[];
  /** The client's redirect_uri; default: the first redirect that leaves the hub's /auth and /interaction paths. */
  redirectUri?: string;
  /** Reuse a browser profile (cookie jar); default a fresh one, i.e. no session at the hub. */
  userAgent?: UserAgent;
  /**
   * What the test means to exercise when it reuses a user agent: 'required', a sign-in with the
   * passkey (a LoginError when the hub shows no sign-in page, i.e. the session was reused; ask for
   * `prompt=login` or use a fresh user agent); 'session', riding the session the user agent holds
   * at the hub (a LoginError when a sign-in page comes). Default: whichever the hub asks for.
   */
  signIn?: 'required' | 'session';
  /** Called once the passkey is registered (before signing in with it). */
  onEnrolled?: () => void;
}

const ceremonies = new WeakMap<PasskeyEmulator, Promise<unknown>>();

/**
 * A device signs and the hub verifies one assertion at a time: a synced passkey's signature counter
 * grows with every assertion, and the hub refuses one that arrives after a higher count (two
 * concurrent logins of one customer would otherwise fail at random).
 */
function oneCeremonyAtATime<T>(device: PasskeyEmulator, ceremony: () => Promise<T>): Promise<T> {
  const run = (ceremonies.get(device) ?? Promise.resolve()).then(ceremony);
  ceremonies.set(
    device,
    run.catch(() => {}),
  );
  return run;
}

/** The uid in `/interaction/<uid>`, or undefined when `url` is not an interaction page of the hub. */
function interactionUid(url: URL, origin: string): string | undefined {
  if (url.origin !== origin) return undefined;
  return /^\/interaction\/([^/]+)$/.exec(url.pathname)?.[1];
}

/** Account ids offered as checkboxes on the consent page. */
export function offeredAccounts(html: string): string[] {
  const ids: string[] = [];
  for (const input of html.matchAll(/<input\b[^>]*>/g)) {
    const tag = input[0];
    if (!/\bname="account"/.test(tag)) continue;
    const value = /\bvalue="([^"]*)"/.exec(tag)?.[1];
    if (value) ids.push(value);
  }
  return ids;
}

async function expectJson<T>(step: LoginStep, res: UaResponse): Promise<T> {
  if (res.status !== 200) throw new LoginError(step, res, 'expected 200 JSON');
  try {
    return res.json<T>();
  } catch {
    throw new LoginError(step, res, 'response is not JSON');
  }
}

/** Where following redirects ended: at the callback (`redirect` is the answer pointing there) or at an interaction page. */
type Proceeded = { callback: URL; redirect: UaResponse } | { uid: string; page: UaResponse };

/**
 * Drives one authorization request to its end and returns the URL the hub finally redirects to
 * (the redirect_uri with `code`/`iss`/`state`, or with `error`). Throws LoginError when the hub
 * answers anything else along the way (an error page, a failed ceremony).
 */
export async function completeLogin(o: LoginOptions): Promise<URL> {
  const start = new URL(o.authorizationUrl);
  const origin = start.origin;
  const ua = o.userAgent ?? createUserAgent({ fetch: o.fetch });
  const isCallback = (u: URL) => {
    if (o.redirectUri !== undefined) return `${u.origin}${u.pathname}` === o.redirectUri.split(/[?#]/)[0];
    return u.origin !== origin || !/^\/(auth|interaction)(\/|$)/.test(u.pathname);
  };
  /** Follows redirects to the callback (returned) or to an interaction page (returned with its HTML). */
  const proceed = async (url: URL, step: LoginStep): Promise<Proceeded> => {
    const { response, stoppedAt } = await ua.follow(url, { stopAt: isCallback });
    if (stoppedAt) return { callback: stoppedAt, redirect: response };
    const uid = interactionUid(response.url, origin);
    if (!uid || response.status !== 200)
      throw new LoginError(step, response, 'expected an interaction page or the callback');
    return { uid, page: response };
  };

  const consent = (uid: string, page: string) => answerConsent(o, ua, origin, proceed, uid, page);
  let at = await proceed(start, 'authorize');
  if ('callback' in at) {
    if (o.signIn === 'required')
      throw new LoginError(
        'authorize',
        at.redirect,
        'expected a sign-in page; the session at the hub was reused (straight back to the client)',
      );
    return at.callback;
  }
  const loginUid = at.uid;
  const base = `${origin}/interaction/${loginUid}`;
  // A browser with a session at the hub skips the sign-in: it lands on the consent page (or, with
  // nothing left to ask, went straight back to the client above).
  const signInPage = at.page.text.includes('id="passkey-login"');
  if (o.signIn === 'required' && !signInPage)
    throw new LoginError('authorize', at.page, 'expected a sign-in page; the session at the hub was reused');
  if (o.signIn === 'session' && signInPage)
    throw new LoginError(
      'authorize',
      at.page,
      'expected the session at the hub to carry on; a sign-in page came',
    );

  if (o.decision === 'cancel') {
    const res = await ua.postForm(`${base}/abort`, {});
    if (!res.location) throw new LoginError('cancel', res, 'expected a redirect');
    const end = await proceed(res.location, 'cancel');
    if (!('callback' in end)) throw new LoginError('cancel', end.page, 'expected the callback');
    return end.callback;
  }

  if (!signInPage && !o.enroll) return consent(at.uid, at.page.text);

  if (o.enroll) {
    const creation = await expectJson<Parameters<PasskeyEmulator['register']>[0]>(
      'enroll',
      await ua.postJson(`${base}/enroll/options`, {
        customerNumber: o.enroll.customerNumber,
        ticket: o.enroll.ticket,
      }),
    );
    const response = o.device.register(creation, origin);
    await expectJson(
      'enroll',
      await ua.postJson(`${base}/enroll/verify`, {
        response,
        passkeyName: o.enroll.passkeyName ?? 'conformance',
      }),
    );
    o.onEnrolled?.();
  }

  const request = await expectJson<Parameters<PasskeyEmulator['authenticate']>[0]>(
    'passkey',
    await ua.postJson(`${base}/passkey/options`, {}),
  );
  const verifyResponse = await oneCeremonyAtATime(o.device, () =>
    ua.postJson(`${base}/passkey/verify`, o.device.authenticate(request, origin)),
  );
  const verified = await expectJson<{ redirectTo?: string }>('passkey', verifyResponse);
  if (!verified.redirectTo) throw new LoginError('passkey', verifyResponse, 'the answer has no redirectTo');

  at = await proceed(new URL(verified.redirectTo, origin), 'passkey');
  if ('callback' in at) return at.callback;
  return consent(at.uid, at.page.text);
}

/** Answers the consent page as `o.decision` says and returns where the hub finally redirects. */
async function answerConsent(
  o: LoginOptions,
  ua: UserAgent,
  origin: string,
  proceed: (url: URL, step: LoginStep) => Promise<Proceeded>,
  uid: string,
  page: string,
): Promise<URL> {
  const offered = offeredAccounts(page);
  const form = new URLSearchParams({ decision: o.decision === 'deny' ? 'deny' : 'approve' });
  if (o.decision !== 'deny')
    for (const id of o.accounts ? o.accounts(offered) : offered) form.append('account', id);
  const res = await ua.postForm(`${origin}/interaction/${uid}/consent`, form);
  if (!res.location) throw new LoginError('consent', res, 'expected a redirect');
  const end = await proceed(res.location, 'consent');
  if (!('callback' in end)) throw new LoginError('callback', end.page, 'expected the callback after consent');
  return end.callback;
}

export interface PasskeyUser {
  /** The customer's authenticator (one emulated device). */
  readonly device: PasskeyEmulator;
  readonly enrolled: boolean;
  /**
   * completeLogin with this customer's device, in a fresh browser profile unless one is given;
   * the first login that signs in enrolls the device with a ticket (once per user, even when
   * logins run concurrently).
   */
  login(
    authorizationUrl: string | URL,
    options?: Omit<LoginOptions, 'fetch' | 'authorizationUrl' | 'device' | 'enroll'>,
  ): Promise<URL>;
}

export interface PasskeyUserOptions {
  fetch: typeof globalThis.fetch;
  customerNumber: string;
  /** The one-time enrollment ticket, or a function that obtains one when it is first needed. */
  ticket: string | (() => Promise<string> | string);
  device?: PasskeyEmulator;
}

export function createPasskeyUser(o: PasskeyUserOptions): PasskeyUser {
  const device = o.device ?? createEmulator();
  let enrolled = false;
  let enrolling: Promise<unknown> | undefined;
  return {
    device,
    get enrolled() {
      return enrolled;
    },
    async login(authorizationUrl, options = {}) {
      const base = { ...options, fetch: o.fetch, authorizationUrl, device };
      if (enrolled || options.decision === 'cancel') return completeLogin(base);
      if (enrolling) {
        await enrolling.catch(() => {});
        if (enrolled) return completeLogin(base);
      }
      // Marked before the ticket is awaited, so that a concurrent login waits instead of enrolling too.
      const attempt = (async () => {
        const ticket = typeof o.ticket === 'string' ? o.ticket : await o.ticket();
        return completeLogin({
          ...base,
          enroll: { customerNumber: o.customerNumber, ticket },
          onEnrolled: () => {
            enrolled = true;
          },
        });
      })();
      enrolling = attempt;
      return attempt;
    },
  };
}
