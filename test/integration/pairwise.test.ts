/** Brokerages registered with subject_type pairwise each learn their own, stable customer identifier. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PasskeyUser } from '../../conformance/lib/login.ts';
import { demoCustomer } from '../support/customer.ts';
import { startTestHub, type TestHub } from '../support/hub.ts';
import { type Rp, redeem, registeredRp, startAuthorization } from '../support/rp.ts';

let t: TestHub;
let customer: PasskeyUser;
beforeAll(async () => {
  t = await startTestHub();
  customer = demoCustomer(t);
});
afterAll(() => t?.close());

/** Registers a brokerage client on its own host (its own sector) and returns an openid-client for it. */
const brokerage = (name: string) =>
  registeredRp(t, name, { subject_type: 'pairwise', scope: 'openid accounts' });

async function subjectAt(b: Rp): Promise<string> {
  const auth = await startAuthorization(b, 'openid accounts');
  const callback = await customer.login(auth.url, { redirectUri: b.redirectUri });
  return (await redeem(b, auth, callback)).claims()!.sub;
}

describe('pairwise subjects', () => {
  it('differ per brokerage, differ from the internal id, and stay the same across sign-ins', async () => {
    const a = await brokerage('broker-a');
    const b = await brokerage('broker-b');
    const subA = await subjectAt(a);
    const subB = await subjectAt(b);
    expect(subA).not.toBe(t.hub.demo!.customerId);
    expect(subB).not.toBe(subA);
    expect(subA).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(await subjectAt(a)).toBe(subA);
    const discovery = (await (await t.fetch(`${t.issuer}/.well-known/openid-configuration`)).json()) as {
      subject_types_supported: string[];
    };
    expect(discovery.subject_types_supported).toEqual(expect.arrayContaining(['public', 'pairwise']));
  });
});
