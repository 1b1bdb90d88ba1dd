/** The demo customer with a passkey, enrolled the way a customer does it: over HTTPS, with a ticket. */
import { completeLogin, createPasskeyUser, type PasskeyUser } from '../../conformance/lib/login.ts';
import { issueEnrollmentTicket } from '../../src/authn/index.ts';
import type { TestHub } from './hub.ts';
import { createEmulator, type PasskeyEmulator } from './passkeyEmulator.ts';
import { demoRp, startAuthorization } from './rp.ts';

/**
 * Issues an enrollment ticket for the demo customer and goes through one authorization with it:
 * register the passkey on `device`, sign in, consent. Returns the device, which now signs in.
 */
export async function enrollDemoCustomer(
  t: TestHub,
  device: PasskeyEmulator = createEmulator(),
): Promise<PasskeyEmulator> {
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
  return device;
}

/** The demo customer as a passkey user: the first login enrolls a new device with a fresh ticket. */
export function demoCustomer(t: TestHub): PasskeyUser {
  return createPasskeyUser({
    fetch: t.fetch,
    customerNumber: t.hub.demo!.customerNumber,
    ticket: async () =>
      (
        await issueEnrollmentTicket(t.hub.authn, {
          customerId: t.hub.demo!.customerId,
          issuedBy: 'operator:test',
        })
      ).ticket,
  });
}
