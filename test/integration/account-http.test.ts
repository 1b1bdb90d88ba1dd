/** The security page's endpoints refuse what a browser page of someone else could send. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { completeLogin } from '../../conformance/lib/login.ts';
import { createUserAgent, type UserAgent } from '../../conformance/lib/userAgent.ts';
import { issueEnrollmentTicket, listPasskeys } from '../../src/authn/index.ts';
import { startTestHub, type TestHub } from '../support/hub.ts';
import { createEmulator, type PasskeyEmulator } from '../support/passkeyEmulator.ts';
import { demoRp, startAuthorization } from '../support/rp.ts';

let t: TestHub;
let device: PasskeyEmulator;
beforeAll(async () => {
  t = await startTestHub();
  device = createEmulator();
  const ticket = await issueEnrollmentTicket(t.hub.authn, {
    customerId: t.hub.demo!.customerId,
    issuedBy: 'operator:test',
  });
  await completeLogin({
    fetch: t.fetch,
    authorizationUrl: (await startAuthorization(await demoRp(t))).url,
    device,
    enroll: { customerNumber: t.hub.demo!.customerNumber, ticket: ticket.ticket },
  });
});
afterAll(() => t?.close());

/** Signs in at /account in a fresh browser profile; returns it with the page's CSRF token. */
async function signedIn(): Promise<{ ua: UserAgent; csrf: string }> {
  const ua = createUserAgent({ fetch: t.fetch });
  const login = await ua.get(`${t.issuer}/account`);
  expect(login.status).toBe(200);
  const options = await ua.postJson(`${t.issuer}/account/login/options`, {});
  const verify = await ua.postJson(
    `${t.issuer}/account/login/verify`,
    device.authenticate(options.json(), new URL(t.issuer).origin),
  );
  expect(verify.status).toBe(200);
  const page = await ua.get(`${t.issuer}/account`);
  const csrf = /name="csrf" value="([^"]+)"/.exec(page.text)?.[1];
  expect(csrf).toBeTruthy();
  return { ua, csrf: csrf! };
}

describe('/account', () => {
  it('shows the sign-in page to a browser without a session and refuses its form posts', async () => {
    const ua = createUserAgent({ fetch: t.fetch });
    const page = await ua.get(`${t.issuer}/account`);
    expect(page.text).toContain('id="passkey-login"');
    const post = await ua.postForm(`${t.issuer}/account/sessions/end-all`, { csrf: 'x' });
    expect(post.status).toBe(302);
    expect(post.location?.pathname).toBe('/account');
    const add = await ua.postJson(`${t.issuer}/account/passkeys/options`, {});
    expect(add.status).toBe(401);
  });

  it('refuses verify without the ceremony cookie', async () => {
    const ua = createUserAgent({ fetch: t.fetch });
    const res = await ua.postJson(`${t.issuer}/account/login/verify`, {});
    expect(res.status).toBe(400);
    expect(res.json<{ error: string }>().error).toBe('invalid_request');
  });

  it('refuses form posts without the right CSRF token, changing nothing', async () => {
    const { ua } = await signedIn();
    const [pk] = await listPasskeys(t.hub.db, t.hub.demo!.customerId);
    for (const csrf of [undefined, 'forged', '']) {
      const res = await ua.postForm(`${t.issuer}/account/passkeys/rename`, {
        ...(csrf === undefined ? {} : { csrf }),
        credentialId: pk!.credentialId,
        name: 'pwned',
      });
      expect(res.status).toBe(403);
      expect(res.text).toContain('ERR_CSRF');
    }
    expect((await listPasskeys(t.hub.db, t.hub.demo!.customerId))[0]!.name).toBe(pk!.name);
  });

  it('answers 404 for passkeys and sessions that are not the customer’s', async () => {
    const { ua, csrf } = await signedIn();
    const rename = await ua.postForm(`${t.issuer}/account/passkeys/rename`, {
      csrf,
      credentialId: 'nope',
      name: 'x',
    });
    expect(rename.status).toBe(404);
    const remove = await ua.postForm(`${t.issuer}/account/passkeys/remove`, { csrf, credentialId: 'nope' });
    expect(remove.status).toBe(404);
    const end = await ua.postForm(`${t.issuer}/account/sessions/end`, { csrf, uid: 'not-a-session' });
    expect(end.status).toBe(404);
  });

  it('refuses to remove the only passkey', async () => {
    const { ua, csrf } = await signedIn();
    const [pk] = await listPasskeys(t.hub.db, t.hub.demo!.customerId);
    const res = await ua.postForm(`${t.issuer}/account/passkeys/remove`, {
      csrf,
      credentialId: pk!.credentialId,
    });
    expect(res.status).toBe(400);
    expect(res.text).toContain('ERR_PASSKEY_LAST');
    expect(await listPasskeys(t.hub.db, t.hub.demo!.customerId)).toHaveLength(1);
  });

  it('signs out: the session is gone and the page asks to sign in again', async () => {
    const { ua, csrf } = await signedIn();
    const out = await ua.postForm(`${t.issuer}/account/logout`, { csrf });
    expect(out.status).toBe(303);
    const page = await ua.get(`${t.issuer}/account`);
    expect(page.text).toContain('id="passkey-login"');
  });
});
