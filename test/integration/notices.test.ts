/** Important notices the customer must acknowledge before continuing (JSDA IV.7.(2)④). */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { completeLogin } from '../../conformance/lib/login.ts';
import { createUserAgent } from '../../conformance/lib/userAgent.ts';
import { NoticeError, pendingNotices, publishNotice } from '../../src/notices/index.ts';
import { enrollDemoCustomer } from '../support/customer.ts';
import { startTestHub, type TestHub } from '../support/hub.ts';
import type { PasskeyEmulator } from '../support/passkeyEmulator.ts';
import { demoRp, startAuthorization } from '../support/rp.ts';

let t: TestHub;
let device: PasskeyEmulator;
beforeAll(async () => {
  t = await startTestHub();
  device = await enrollDemoCustomer(t);
});
afterAll(() => t?.close());

const notice = {
  title: { ja: 'フィッシングにご注意ください', en: 'Beware of phishing' },
  body: {
    ja: '当社がメールやSMSでログインを求めることはありません。',
    en: 'We never ask you to sign in through a link in an e-mail or SMS.',
  },
};

describe('notices', () => {
  it('refuses notices with links or missing languages', async () => {
    await expect(
      publishNotice(t.hub.db, { ...notice, body: { ja: 'https://evil.example', en: 'x' } }, 'operator:a'),
    ).rejects.toThrow(NoticeError);
    await expect(
      publishNotice(t.hub.db, { title: { ja: 'x' }, body: notice.body }, 'operator:a'),
    ).rejects.toThrow(/title\.en/);
  });

  it('are shown after sign-in and before consent, acknowledged once, then no longer shown', async () => {
    const published = await publishNotice(t.hub.db, notice, 'operator:a');
    const ua = createUserAgent({ fetch: t.fetch, language: 'ja' });
    const start = await ua.follow((await startAuthorization(await demoRp(t))).url);
    const uid = start.response.url.pathname.split('/').pop()!;
    const options = await ua.postJson(`${t.issuer}/interaction/${uid}/passkey/options`, {});
    const verify = await ua.postJson(
      `${t.issuer}/interaction/${uid}/passkey/verify`,
      device.authenticate(options.json(), new URL(t.issuer).origin),
    );
    const page = await ua.follow(new URL(verify.json<{ redirectTo: string }>().redirectTo, t.issuer));
    expect(page.response.text).toContain('フィッシングにご注意ください');
    expect(page.response.text).toContain(`data-notice="${published.id}"`);
    const noticesUid = page.response.url.pathname.split('/').pop()!;

    // Not confirmed: refused, nothing recorded.
    const unconfirmed = await ua.postForm(`${t.issuer}/interaction/${noticesUid}/notices`, {
      notice: published.id,
    });
    expect(unconfirmed.status).toBe(400);
    expect(await pendingNotices(t.hub.db, t.hub.demo!.customerId)).toHaveLength(1);

    const ack = await ua.postForm(`${t.issuer}/interaction/${noticesUid}/notices`, {
      notice: published.id,
      confirmed: 'yes',
    });
    expect(ack.status).toBe(303);
    const next = await ua.follow(ack.location!);
    expect(next.response.text).toContain('id="consent-form"');
    expect(await pendingNotices(t.hub.db, t.hub.demo!.customerId)).toHaveLength(0);
    const audit = await t.hub.db.query(
      "SELECT 1 FROM audit_events WHERE type = 'notice.acknowledged' AND customer_id = $1",
      [t.hub.demo!.customerId],
    );
    expect(audit.rowCount).toBe(1);

    // The next sign-in goes straight on.
    const again = await completeLogin({
      fetch: t.fetch,
      authorizationUrl: (await startAuthorization(await demoRp(t), 'openid accounts', { prompt: 'login' }))
        .url,
      device,
    });
    expect(again.searchParams.get('code')).toBeTruthy();
  });
});
