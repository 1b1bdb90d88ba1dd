/**
 * How fresh, and how strong, the sign-in behind a security-page change must be (issue 4, items 1
 * and 9; FSA comments 45–46). The security page shares the oidc-provider session with the
 * authorization endpoint, so a session may come from a passkey OR from an exempted customer's
 * one-time code (acr `otp`, which a phishing proxy can relay). Two rules:
 *
 * - `passkey`: a passkey sign-in (acr phr/phrh, amr with `pop`) within RECENT_SIGN_IN_SECONDS.
 *   Adding a passkey: a one-time code must never turn into a passkey (otp → phr).
 * - `passkeyIfAny`: the same, except that a customer with no usable passkey and an open exemption
 *   may use a fresh one-time-code sign-in (that is what the exemption is for). Contact changes and
 *   travel declarations: what an attacker would use to silence notices or the risk rules.
 */
import { hasTotpAlternative, hasUsablePasskey } from '../authn/index.ts';
import type { Queryable } from '../db/index.ts';
import { HttpError } from '../http/index.ts';

/** A change needs a sign-in at most this old (FSA comments 45–46). */
export const RECENT_SIGN_IN_SECONDS = 300;
const PASSKEY_ACRS: ReadonlySet<string> = new Set(['phr', 'phrh']);

export type FreshSignInRule = 'passkey' | 'passkeyIfAny';

export interface SignInFacts {
  accountId: string;
  acr?: string | undefined;
  amr?: string[] | undefined;
  loginTs?: number | undefined;
}

/** A sign-in with a passkey: phishing-resistant acr and proof of possession (src/authn/passkeys.ts). */
export const isPasskeySignIn = (s: SignInFacts): boolean =>
  PASSKEY_ACRS.has(s.acr ?? '') && (s.amr ?? []).includes('pop');

/** Whether `session` satisfies `rule` now. */
export async function freshSignInSatisfies(
  db: Queryable,
  session: SignInFacts,
  rule: FreshSignInRule,
): Promise<boolean> {
  if (!session.loginTs || Math.floor(Date.now() / 1000) - session.loginTs > RECENT_SIGN_IN_SECONDS)
    return false;
  if (isPasskeySignIn(session)) return true;
  if (rule === 'passkey' || session.acr !== 'otp') return false;
  return (
    !(await hasUsablePasskey(db, session.accountId)) && (await hasTotpAlternative(db, session.accountId))
  );
}

/** Refuses (403 login_required, ERR_REAUTH, `message` in the page's language) unless `rule` holds. */
export async function requireFreshSignIn(
  db: Queryable,
  session: SignInFacts,
  rule: FreshSignInRule,
  message: string,
): Promise<void> {
  if (!(await freshSignInSatisfies(db, session, rule)))
    throw new HttpError(403, 'login_required', message, 'ERR_REAUTH');
}
