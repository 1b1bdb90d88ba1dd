/**
 * How strong the sign-in behind a security-page change must be (security review, issue 4 items 1
 * and 9). The page shares the oidc-provider session with the authorization endpoint, so a session
 * may come from an exempted customer's one-time code (acr otp) — which a phishing proxy can relay.
 * Adding a passkey needs a fresh passkey sign-in (a code must not become phr); contact changes and
 * travel declarations need one too, unless the customer is exempted and has no usable passkey.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { completeLogin } from '../../conformance/lib/login.ts';
import { createUserAgent, type UserAgent } from '../../conformance/lib/userAgent.ts';
import { issueEnrollmentTicket, startAdditionalPasskeyRegistration } from '../../src/authn/index.ts';
import { addEmailChannel } from '../../src/notify/index.ts';
import { enrollDemoCustomer } from '../support/customer.ts';
import { type ExemptCustomer, enrollExemptCustomer } from '../support/exempt.ts';
import { startTestHub, type TestHub } from '../support/hub.ts';
import { createEmulator, type PasskeyEmulator } from '../support/passkeyEmulator.ts';
import { demoRp, startAuthorization } from '../support/rp.ts';

let t: TestHub;
let origin: string;
/** The demo customer: passkeys only. */
let demoDevice: PasskeyEmulator;
/** Exempted, with an authenticator app AND a passkey (the phishing victim of the review). */
let both: ExemptCustomer;
let bothDevice: PasskeyEmulator;
/** Exempted, with an authenticator app and no passkey. */
let codeOnly: ExemptCustomer;

beforeAll(async () => {
  t = await startTestHub();
  origin = new URL(t.issuer).origin;
  demoDevice = await enrollDemoCustomer(t);
  both = await enrollExemptCustomer(t, 'cus_exempt_both');
  bothDevice = await enrollPasskey(both);
  codeOnly = await enrollExemptCustomer(t, 'cus_exempt_code');
  for (const [customerId, address] of [
    [t.hub.demo!.customerId, 'taro@example.jp'],
    [both.customerId, 'both@example.jp'],
    [codeOnly.customerId, 'code@example.jp'],
  ] as const)
    await addEmailChannel(t.hub.db, t.hub.authn.kek!, { customerId, address, actor: 'system' });
});
afterAll(() => t?.close());

/** Enrolls a passkey for `customer` with a ticket, as a customer does; returns the device. */
async function enrollPasskey(customer: ExemptCustomer): Promise<PasskeyEmulator> {
  const device = createEmulator();
  const ticket = await issueEnrollmentTicket(t.hub.authn, {
    customerId: customer.customerId,
    issuedBy: 'operator:a',
  });
  await completeLogin({
    fetch: t.fetch,
    authorizationUrl: (await startAuthorization(await demoRp(t))).url,
    device,
    enroll: { customerNumber: customer.customerNumber, ticket: ticket.ticket },
  });
  return device;
}

/** The security page's CSRF token for a signed-in browser. */
async function csrfOf(ua: UserAgent): Promise<string> {
  const page = await ua.get(`${t.issuer}/account`);
  const csrf = /name="csrf" value="([^"]+)"/.exec(page.text)?.[1];
  expect(csrf).toBeTruthy();
  return csrf!;
}

/** A browser signed in at /account with `device`'s passkey. */
async function passkeySession(device: PasskeyEmulator): Promise<{ ua: UserAgent; csrf: string }> {
  const ua = createUserAgent({ fetch: t.fetch });
  await ua.get(`${t.issuer}/account`);
  const options = await ua.postJson(`${t.issuer}/account/login/options`, {});
  const verify = await ua.postJson(
    `${t.issuer}/account/login/verify`,
    device.authenticate(options.json(), origin),
  );
  expect(verify.status).toBe(200);
  return { ua, csrf: await csrfOf(ua) };
}

/** A browser signed in with `customer`'s one-time code (acr otp), as the security page then sees it. */
async function codeSession(customer: ExemptCustomer): Promise<{ ua: UserAgent; csrf: string }> {
  const ua = createUserAgent({ fetch: t.fetch });
  await customer.signIn(ua);
  return { ua, csrf: await csrfOf(ua) };
}

/** Makes the customer's stored sessions look `seconds` older, or signed in with another acr. */
async function alterSessions(customerId: string, change: { ageBy?: number; acr?: string; amr?: string[] }) {
  if (change.ageBy)
    await t.hub.db.query(
      `UPDATE oidc_payloads SET payload = jsonb_set(payload, '{loginTs}', to_jsonb((payload ->> 'loginTs')::bigint - $2))
       WHERE model = 'Session' AND payload ->> 'accountId' = $1`,
      [customerId, change.ageBy],
    );
  if (change.acr)
    await t.hub.db.query(
      `UPDATE oidc_payloads SET payload = payload || jsonb_build_object('acr', $2::text, 'amr', $3::jsonb)
       WHERE model = 'Session' AND payload ->> 'accountId' = $1`,
      [customerId, change.acr, JSON.stringify(change.amr ?? [])],
    );
}

const errorCode = (res: { json<T>(): T }) => res.json<{ error_code?: string }>().error_code;
const passkeyCount = async (customerId: string) =>
  (await t.hub.db.query('SELECT 1 FROM passkeys WHERE customer_id = $1', [customerId])).rowCount;

describe('adding a passkey', () => {
  it('is refused to a one-time-code session, even a fresh one of a customer who has a passkey', async () => {
    const { ua, csrf } = await codeSession(both);
    const page = await ua.get(`${t.issuer}/account`);
    expect(page.text).toContain('id="add-passkey"');
    const options = await ua.postJson(`${t.issuer}/account/passkeys/options`, { csrf });
    expect(options.status).toBe(403);
    expect(errorCode(options)).toBe('ERR_REAUTH');
    expect(await passkeyCount(both.customerId)).toBe(1);
  });

  it('works after a fresh passkey sign-in; the registration step checks the sign-in again', async () => {
    const { ua, csrf } = await passkeySession(bothDevice);
    const newDevice = createEmulator();
    const options = await ua.postJson(`${t.issuer}/account/passkeys/options`, { csrf });
    expect(options.status).toBe(200);
    const added = await ua.postJson(`${t.issuer}/account/passkeys/verify`, {
      csrf,
      response: newDevice.register(options.json(), origin),
      passkeyName: 'second',
    });
    expect(added.status).toBe(200);
    expect(await passkeyCount(both.customerId)).toBe(2);

    // Options fetched under a passkey sign-in, then the session is a code sign-in (or an old one):
    // the registration itself is refused.
    for (const change of [{ acr: 'otp', amr: ['otp'] }, { ageBy: 3600 }]) {
      const s = await passkeySession(bothDevice);
      const opts = await s.ua.postJson(`${t.issuer}/account/passkeys/options`, { csrf: s.csrf });
      expect(opts.status).toBe(200);
      await alterSessions(both.customerId, change);
      const res = await s.ua.postJson(`${t.issuer}/account/passkeys/verify`, {
        csrf: s.csrf,
        response: createEmulator().register(opts.json(), origin),
      });
      expect(res.status).toBe(403);
      expect(errorCode(res)).toBe('ERR_REAUTH');
    }
    expect(await passkeyCount(both.customerId)).toBe(2);
  });

  it('needs a usable passkey: disabled ones (e.g. a cloned authenticator) do not count', async () => {
    await enrollPasskey(codeOnly);
    await t.hub.db.query('UPDATE passkeys SET disabled_at = now() WHERE customer_id = $1', [
      codeOnly.customerId,
    ]);
    await expect(
      startAdditionalPasskeyRegistration(t.hub.authn, {
        customerId: codeOnly.customerId,
        interactionId: 'account_test',
      }),
    ).rejects.toMatchObject({ code: 'ERR_PASSKEY_UNKNOWN' });
  });
});

describe('changing contacts', () => {
  it('needs a passkey sign-in from a customer who has a usable passkey, a code one will not do', async () => {
    const { ua, csrf } = await codeSession(both);
    const res = await ua.postForm(`${t.issuer}/account/contacts/add`, {
      csrf,
      address: 'mallory@example.net',
    });
    expect(res.status).toBe(403);
    expect(res.text).toContain('ERR_REAUTH');
    const channels = await t.hub.db.query('SELECT 1 FROM notify_channels WHERE customer_id = $1', [
      both.customerId,
    ]);
    expect(channels.rowCount).toBe(1);
    const ok = await passkeySession(bothDevice);
    const added = await ok.ua.postForm(`${t.issuer}/account/contacts/add`, {
      csrf: ok.csrf,
      address: 'both2@example.jp',
    });
    expect(added.status).toBe(303);
  });

  it('takes a fresh code sign-in from an exempted customer without a usable passkey, not an old one', async () => {
    const { ua, csrf } = await codeSession(codeOnly);
    const added = await ua.postForm(`${t.issuer}/account/contacts/add`, {
      csrf,
      address: 'code2@example.jp',
    });
    expect(added.status).toBe(303);
    await alterSessions(codeOnly.customerId, { ageBy: 3600 });
    const stale = await ua.postForm(`${t.issuer}/account/contacts/add`, {
      csrf,
      address: 'code3@example.jp',
    });
    expect(stale.status).toBe(403);
    expect(stale.text).toContain('ERR_REAUTH');
  });
});

describe('notification choices and removing a passkey', () => {
  it('need a fresh passkey sign-in from a customer who has one: a code or an old sign-in will not do', async () => {
    const passkeys = await t.hub.db.query<{ credential_id: string }>(
      'SELECT credential_id FROM passkeys WHERE customer_id = $1 AND disabled_at IS NULL',
      [both.customerId],
    );
    expect(passkeys.rowCount).toBe(2);
    const offers = await t.hub.db.query('SELECT 1 FROM notify_preferences WHERE customer_id = $1', [
      both.customerId,
    ]);
    const code = await codeSession(both);
    const silenced = await code.ua.postForm(`${t.issuer}/account/notifications`, { csrf: code.csrf });
    expect(silenced.status).toBe(403);
    expect(silenced.text).toContain('ERR_REAUTH');
    const removed = await code.ua.postForm(`${t.issuer}/account/passkeys/remove`, {
      csrf: code.csrf,
      credentialId: passkeys.rows[0]!.credential_id,
    });
    expect(removed.status).toBe(403);
    expect(removed.text).toContain('ERR_REAUTH');
    expect(await passkeyCount(both.customerId)).toBe(2);
    expect(
      (await t.hub.db.query('SELECT 1 FROM notify_preferences WHERE customer_id = $1', [both.customerId]))
        .rowCount,
    ).toBe(offers.rowCount);

    const fresh = await passkeySession(bothDevice);
    const saved = await fresh.ua.postForm(`${t.issuer}/account/notifications`, { csrf: fresh.csrf });
    expect(saved.status).toBe(303);
    await alterSessions(both.customerId, { ageBy: 3600 });
    const old = await fresh.ua.postForm(`${t.issuer}/account/notifications`, { csrf: fresh.csrf });
    expect(old.status).toBe(403);
  });
});

describe('declaring travel', () => {
  const trip = { country: 'US', from: '2026-12-01', to: '2026-12-10' };
  const declarations = async (customerId: string) =>
    (await t.hub.db.query('SELECT 1 FROM travel_declarations WHERE customer_id = $1', [customerId])).rowCount;
  const notices = async (customerId: string) =>
    (
      await t.hub.db.query<{ data: unknown }>(
        "SELECT data FROM notify_outbox WHERE customer_id = $1 AND kind = 'travel_declared'",
        [customerId],
      )
    ).rows;

  it('needs a fresh passkey sign-in and tells the customer on every channel', async () => {
    const customerId = t.hub.demo!.customerId;
    await addEmailChannel(t.hub.db, t.hub.authn.kek!, {
      customerId,
      address: 'taro2@example.jp',
      actor: 'system',
    });
    // A security notice: it reaches every channel even where the customer switched the kind off.
    await t.hub.db.query(
      "INSERT INTO notify_preferences (customer_id, kind, enabled) VALUES ($1, 'travel_declared', false)",
      [customerId],
    );
    const { ua, csrf } = await passkeySession(demoDevice);
    const res = await ua.postForm(`${t.issuer}/account/travel`, { csrf, ...trip });
    expect(res.status).toBe(303);
    expect(await declarations(customerId)).toBe(1);
    expect(await notices(customerId)).toEqual([{ data: trip }, { data: trip }]);

    await alterSessions(customerId, { ageBy: 3600 });
    const stale = await ua.postForm(`${t.issuer}/account/travel`, { csrf, ...trip, country: 'FR' });
    expect(stale.status).toBe(403);
    expect(stale.text).toContain('ERR_REAUTH');
    expect(await declarations(customerId)).toBe(1);
  });

  it('is refused to a code sign-in of a customer with a passkey, allowed to one without', async () => {
    const refused = await codeSession(both);
    const res = await refused.ua.postForm(`${t.issuer}/account/travel`, { csrf: refused.csrf, ...trip });
    expect(res.status).toBe(403);
    expect(res.text).toContain('ERR_REAUTH');
    expect(await declarations(both.customerId)).toBe(0);
    expect(await notices(both.customerId)).toEqual([]);

    // codeOnly's passkey was disabled above: the code is what it has.
    const allowed = await codeSession(codeOnly);
    const ok = await allowed.ua.postForm(`${t.issuer}/account/travel`, { csrf: allowed.csrf, ...trip });
    expect(ok.status).toBe(303);
    expect(await declarations(codeOnly.customerId)).toBe(1);
    expect((await notices(codeOnly.customerId)).length).toBeGreaterThan(0);
  });
});
