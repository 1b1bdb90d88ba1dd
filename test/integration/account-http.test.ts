/** The security page's endpoints refuse what a browser page of someone else could send. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createUserAgent, type UserAgent } from '../../conformance/lib/userAgent.ts';
import { listPasskeys } from '../../src/authn/index.ts';
import { enrollDemoCustomer } from '../support/customer.ts';
import { startTestHub, type TestHub } from '../support/hub.ts';
import type { PasskeyEmulator } from '../support/passkeyEmulator.ts';

let t: TestHub;
let device: PasskeyEmulator;
beforeAll(async () => {
  t = await startTestHub();
  device = await enrollDemoCustomer(t);
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

describe('/account notifications and contacts', () => {
  const outboxKinds = async () =>
    (
      await t.hub.db.query<{ kind: string; masked: string }>(
        `SELECT o.kind, c.address_masked AS masked FROM notify_outbox o JOIN notify_channels c ON c.id = o.channel_id
         WHERE o.customer_id = $1 ORDER BY o.id`,
        [t.hub.demo!.customerId],
      )
    ).rows;

  it('adds and changes the e-mail address only after a fresh sign-in, telling the old address', async () => {
    const { ua, csrf } = await signedIn();
    const add = await ua.postForm(`${t.issuer}/account/contacts/add`, { csrf, address: 'taro@example.jp' });
    expect(add.status).toBe(303);
    const page = await ua.get(`${t.issuer}/account`);
    expect(page.text).toContain('t***@e******.jp');
    expect(page.text).not.toContain('taro@example.jp');
    const channel = /data-channel="([^"]+)"/.exec(page.text)![1]!;
    const change = await ua.postForm(`${t.issuer}/account/contacts/add`, {
      csrf,
      address: 'hanako@example.com',
      replaces: channel,
    });
    expect(change.status).toBe(303);
    const notices = (await outboxKinds()).filter((r) => r.kind === 'contact_changed').map((r) => r.masked);
    expect(notices.sort()).toEqual(['h***@e******.com', 't***@e******.jp']);
    // The only address left cannot be removed: security notices must reach someone.
    const only = /data-channel="([^"]+)"/.exec((await ua.get(`${t.issuer}/account`)).text)![1]!;
    const remove = await ua.postForm(`${t.issuer}/account/contacts/remove`, { csrf, channelId: only });
    expect(remove.status).toBe(400);

    // An old sign-in is not enough to change where notices go.
    await t.hub.db.query(
      `UPDATE oidc_payloads SET payload = jsonb_set(payload, '{loginTs}', to_jsonb((payload ->> 'loginTs')::bigint - 3600))
       WHERE model = 'Session' AND payload ->> 'accountId' = $1`,
      [t.hub.demo!.customerId],
    );
    const stale = await ua.postForm(`${t.issuer}/account/contacts/add`, {
      csrf,
      address: 'mallory@example.net',
    });
    expect(stale.status).toBe(403);
    expect(stale.text).toContain('ERR_REAUTH');
  });

  it('saves notification choices but keeps security notifications on', async () => {
    const { ua, csrf } = await signedIn();
    const res = await ua.postForm(
      `${t.issuer}/account/notifications`,
      new URLSearchParams([
        ['csrf', csrf],
        ['language', 'en'],
        ['kind', 'consent_granted'],
      ]),
    );
    expect(res.status).toBe(303);
    const prefs = await t.hub.db.query<{ kind: string; enabled: boolean }>(
      'SELECT kind, enabled FROM notify_preferences WHERE customer_id = $1 ORDER BY kind',
      [t.hub.demo!.customerId],
    );
    const off = prefs.rows.filter((r) => !r.enabled).map((r) => r.kind);
    expect(off).toContain('login');
    expect(off).not.toContain('passkey_added');
    expect(off).not.toContain('consent_granted');
    const page = await ua.get(`${t.issuer}/account`);
    expect(page.text).toMatch(/value="login"\s*>/);
    expect(page.text).toMatch(/value="passkey_added" checked disabled>/);
  });
});
