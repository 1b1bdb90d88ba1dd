/** Sign-in and security-page events queue notifications to the customer's channels (JSDA IV.1.(2)②). */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { completeLogin } from '../../conformance/lib/login.ts';
import { createUserAgent } from '../../conformance/lib/userAgent.ts';
import { issueEnrollmentTicket } from '../../src/authn/index.ts';
import { loadKeyEncryptionKey } from '../../src/keys/index.ts';
import { addEmailChannel } from '../../src/notify/index.ts';
import { deviceSummary } from '../../src/oidc/securityNotices.ts';
import { startTestHub, type TestHub } from '../support/hub.ts';
import { createEmulator } from '../support/passkeyEmulator.ts';
import { demoRp, startAuthorization } from '../support/rp.ts';

let t: TestHub;
beforeAll(async () => {
  t = await startTestHub();
  await addEmailChannel(t.hub.db, loadKeyEncryptionKey(t.hub.config), {
    customerId: t.hub.demo!.customerId,
    address: 'taro@example.jp',
    actor: 'operator:test',
  });
});
afterAll(() => t?.close());

const kinds = async () =>
  (
    await t.hub.db.query<{ kind: string }>(
      'SELECT kind FROM notify_outbox WHERE customer_id = $1 ORDER BY id',
      [t.hub.demo!.customerId],
    )
  ).rows.map((r) => r.kind);

describe('security notices', () => {
  it('tells the customer about a new passkey, a sign-in from a new device, a consent, then a plain sign-in', async () => {
    const device = createEmulator();
    const browser = createUserAgent({
      fetch: t.fetch,
      userAgent: 'Mozilla/5.0 (Windows NT 10.0) Chrome/130.0',
    });
    const ticket = await issueEnrollmentTicket(t.hub.authn, {
      customerId: t.hub.demo!.customerId,
      issuedBy: 'operator:test',
    });
    await completeLogin({
      fetch: t.fetch,
      userAgent: browser,
      authorizationUrl: (await startAuthorization(await demoRp(t))).url,
      device,
      enroll: { customerNumber: t.hub.demo!.customerNumber, ticket: ticket.ticket },
    });
    expect(await kinds()).toEqual(['passkey_added', 'new_device', 'consent_granted']);
    // Same browser, asked to sign in again: a known device.
    await completeLogin({
      fetch: t.fetch,
      userAgent: browser,
      authorizationUrl: (await startAuthorization(await demoRp(t), 'openid accounts', { prompt: 'login' }))
        .url,
      device,
      signIn: 'required',
    });
    expect((await kinds()).slice(3, 4)).toEqual(['login']);
    const data = await t.hub.db.query<{ data: { device?: string; method?: string } }>(
      "SELECT data FROM notify_outbox WHERE customer_id = $1 AND kind = 'new_device'",
      [t.hub.demo!.customerId],
    );
    expect(data.rows[0]!.data).toEqual({ method: 'passkey', device: 'Chrome on Windows' });
  });

  it('summarises user agents without identifying detail', () => {
    expect(
      deviceSummary(
        'Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605 Version/17.0 Mobile Safari/604.1',
      ),
    ).toBe('Safari on iOS');
    expect(
      deviceSummary('Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/126 Safari/537.36 Edg/126'),
    ).toBe('Edge on Linux');
    expect(deviceSummary(undefined)).toBeUndefined();
    expect(deviceSummary('curl/8.0')).toBeUndefined();
  });
});
