/**
 * A customer exempted from passkeys who set up an authenticator app (TOTP), and their code sign-in
 * over HTTPS at /interaction/:uid/alternative/verify (acr `otp`).
 */
import * as OTPAuth from 'otpauth';
import type { UaResponse, UserAgent } from '../../conformance/lib/userAgent.ts';
import {
  confirmTotpSetup,
  grantExemption,
  issueEnrollmentTicket,
  startTotpSetup,
} from '../../src/authn/index.ts';
import { insertCustomer } from './db.ts';
import type { TestHub } from './hub.ts';
import { demoRp, startAuthorization } from './rp.ts';

export interface ExemptCustomer {
  customerId: string;
  customerNumber: string;
  /** The current code; unless `fresh` is false the replay guard is reset first (one code per time step). */
  code(fresh?: boolean): Promise<string>;
  /** Starts an authorization in `ua`; returns the interaction's uid (the sign-in page). */
  interaction(ua: UserAgent): Promise<string>;
  /** Posts customer number + `code` (default: the current one) at the interaction `uid`. */
  verify(ua: UserAgent, uid: string, code?: string): Promise<UaResponse>;
  /** Signs in with the current code and follows on until the session is stored (the consent page). */
  signIn(ua: UserAgent): Promise<void>;
}

export async function enrollExemptCustomer(t: TestHub, id: string): Promise<ExemptCustomer> {
  const customerId = await insertCustomer(t.hub.db, { id });
  await grantExemption(t.hub.db, {
    customerId,
    reason: 'スマートフォンを持っていない',
    grantedBy: 'operator:a',
  });
  const ticket = await issueEnrollmentTicket(t.hub.authn, { customerId, issuedBy: 'operator:a' });
  const { secret } = await startTotpSetup(t.hub.authn, {
    customerId,
    ticketId: ticket.ticketId,
    interactionId: `setup-${id}`,
  });
  const code = async (fresh = true) => {
    if (fresh)
      await t.hub.db.query('UPDATE totp_credentials SET last_step = 0 WHERE customer_id = $1', [customerId]);
    return new OTPAuth.TOTP({ secret: OTPAuth.Secret.fromBase32(secret), digits: 6, period: 30 }).generate();
  };
  await confirmTotpSetup(t.hub.authn, { interactionId: `setup-${id}`, code: await code() });
  const customer: ExemptCustomer = {
    customerId,
    customerNumber: id,
    code,
    async interaction(ua) {
      const { response } = await ua.follow((await startAuthorization(await demoRp(t))).url);
      return response.url.pathname.split('/').pop()!;
    },
    async verify(ua, uid, given) {
      return ua.postJson(`${t.issuer}/interaction/${uid}/alternative/verify`, {
        customerNumber: id,
        code: given ?? (await code()),
      });
    },
    async signIn(ua) {
      const res = await customer.verify(ua, await customer.interaction(ua));
      if (res.status !== 200) throw new Error(`code sign-in failed: ${res.status} ${res.text}`);
      await ua.follow(new URL(res.json<{ redirectTo: string }>().redirectTo, t.issuer));
    },
  };
  return customer;
}
