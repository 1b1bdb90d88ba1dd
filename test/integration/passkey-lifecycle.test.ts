/**
 * Passkey lifecycle: another passkey only for a customer who already has one, rename, remove but
 * never the last usable one, and a cloned authenticator disables its passkey.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { listAudit } from '../../src/audit/index.ts';
import {
  type AuthnContext,
  AuthnError,
  checkEnrollmentTicket,
  finishPasskeyAuthentication,
  finishPasskeyRegistration,
  issueEnrollmentTicket,
  listPasskeys,
  removePasskey,
  renamePasskey,
  startAdditionalPasskeyRegistration,
  startPasskeyAuthentication,
  startPasskeyRegistration,
} from '../../src/authn/index.ts';
import { type TestDb, testDb } from '../support/db.ts';
import { createEmulator, type PasskeyEmulator } from '../support/passkeyEmulator.ts';

const ORIGIN = 'https://localhost:8443';
let t: TestDb;
let ctx: AuthnContext;
const id = (p: string) => `${p}_${randomBytes(6).toString('hex')}`;

beforeAll(async () => {
  t = await testDb();
  ctx = {
    db: t.db,
    rpId: 'localhost',
    rpName: 'test',
    origin: ORIGIN,
    ticketTtlSeconds: 3600,
    maxFailedAttempts: 5,
  };
  await t.db.query(
    "INSERT INTO institutions (id, kind, name_ja, name_en) VALUES ('i', 'brokerage', 'i', 'i')",
  );
});
afterAll(() => t.close());

async function customer(): Promise<string> {
  const cid = id('cus');
  await t.db.query(
    "INSERT INTO customers (id, institution_id, customer_number, name_kanji, name_kana) VALUES ($1, 'i', $1, '山田', 'ヤマダ')",
    [cid],
  );
  return cid;
}

async function enroll(customerId: string, device: PasskeyEmulator): Promise<string> {
  const { ticket } = await issueEnrollmentTicket(ctx, { customerId, issuedBy: 'op' });
  const checked = await checkEnrollmentTicket(ctx, { customerNumber: customerId, ticket });
  const interactionId = id('int');
  const options = await startPasskeyRegistration(ctx, { ...checked, interactionId });
  return (await finishPasskeyRegistration(ctx, { interactionId, response: device.register(options, ORIGIN) }))
    .credentialId;
}

async function addAnother(customerId: string, device: PasskeyEmulator, name?: string): Promise<string> {
  const interactionId = id('acct');
  const options = await startAdditionalPasskeyRegistration(ctx, { customerId, interactionId });
  return (
    await finishPasskeyRegistration(ctx, {
      interactionId,
      response: device.register(options, ORIGIN),
      passkeyName: name,
    })
  ).credentialId;
}

async function login(device: PasskeyEmulator) {
  const interactionId = id('int');
  const options = await startPasskeyAuthentication(ctx, { interactionId });
  return { interactionId, response: device.authenticate(options, ORIGIN) };
}

const code = (p: Promise<unknown>) =>
  p.then(
    () => 'ok',
    (e: unknown) => (e instanceof AuthnError ? e.code : String(e)),
  );

describe('passkey lifecycle', () => {
  it('adds another passkey without a ticket only for a customer who already has one', async () => {
    const fresh = await customer();
    expect(
      await code(startAdditionalPasskeyRegistration(ctx, { customerId: fresh, interactionId: id('acct') })),
    ).toBe('ERR_PASSKEY_UNKNOWN');
    const cid = await customer();
    await enroll(cid, createEmulator());
    const phone = createEmulator({ deviceBound: true });
    const second = await addAnother(cid, phone, '仕事用のセキュリティキー');
    const list = await listPasskeys(t.db, cid);
    expect(list).toHaveLength(2);
    expect(list[1]).toMatchObject({
      credentialId: second,
      name: '仕事用のセキュリティキー',
      synced: false,
      disabledAt: null,
    });
    // The new passkey signs in.
    const a = await login(phone);
    expect((await finishPasskeyAuthentication(ctx, a)).customerId).toBe(cid);
    // Registering uses no ticket: none was consumed or audited as used.
    const used = await listAudit(t.db, { customerId: cid, type: 'enrollment.ticket.used' });
    expect(used).toHaveLength(1);
  });

  it('renames only the customer’s own passkey', async () => {
    const cid = await customer();
    const other = await customer();
    const cred = await enroll(cid, createEmulator());
    expect(await renamePasskey(t.db, { customerId: other, credentialId: cred, name: 'stolen' })).toBe(false);
    expect(
      await renamePasskey(t.db, { customerId: cid, credentialId: cred, name: '  iPhone\u0000 15 ' }),
    ).toBe(true);
    expect((await listPasskeys(t.db, cid))[0]!.name).toBe('iPhone 15');
  });

  it('removes a passkey but never the last usable one, also under concurrency', async () => {
    const cid = await customer();
    const a = await enroll(cid, createEmulator());
    const b = await addAnother(cid, createEmulator());
    expect(await removePasskey(t.db, { customerId: await customer(), credentialId: a })).toBe(false);
    const results = await Promise.all([
      code(removePasskey(t.db, { customerId: cid, credentialId: a })),
      code(removePasskey(t.db, { customerId: cid, credentialId: b })),
    ]);
    expect(results.sort()).toEqual(['ERR_PASSKEY_LAST', 'ok']);
    expect(await listPasskeys(t.db, cid)).toHaveLength(1);
    const removed = await listAudit(t.db, { customerId: cid, type: 'authn.passkey.removed' });
    expect(removed).toHaveLength(1);
  });

  it('disables a passkey whose counter goes backwards (cloned authenticator) and refuses it afterwards', async () => {
    const cid = await customer();
    const device = createEmulator();
    const cred = await enroll(cid, device);
    const early = await login(device);
    const late = await login(device);
    await finishPasskeyAuthentication(ctx, late);
    // Moments after a use, a lower counter is two of the customer's own ceremonies crossing: refused, not disabled.
    const crossed = await login(device);
    const crossedEarly = await login(device);
    await finishPasskeyAuthentication(ctx, crossedEarly);
    expect(await code(finishPasskeyAuthentication(ctx, crossed))).toBe('ERR_PASSKEY_COUNTER');
    expect((await listPasskeys(t.db, cid))[0]!.disabledAt).toBeNull();
    // Later, an assertion whose counter lags is another authenticator holding the key: a clone.
    await t.db.query(
      "UPDATE passkeys SET last_used_at = now() - interval '1 hour' WHERE credential_id = $1",
      [cred],
    );
    expect(await code(finishPasskeyAuthentication(ctx, early))).toBe('ERR_PASSKEY_COUNTER');
    const [pk] = await listPasskeys(t.db, cid);
    expect(pk).toMatchObject({ credentialId: cred, disabledReason: 'clone_suspected' });
    expect(pk!.disabledAt).toBeInstanceOf(Date);
    // Even a perfectly fresh assertion from it is refused now.
    expect(await code(finishPasskeyAuthentication(ctx, await login(device)))).toBe('ERR_PASSKEY_DISABLED');
    expect(await listAudit(t.db, { customerId: cid, type: 'authn.passkey.clone_suspected' })).toHaveLength(1);
    // A disabled passkey can be removed even though it is the only one: it no longer signs in anyway.
    expect(await removePasskey(t.db, { customerId: cid, credentialId: cred })).toBe(true);
  });
});
