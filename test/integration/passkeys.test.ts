import { randomBytes } from 'node:crypto';
import type { AuthenticationResponseJSON } from '@simplewebauthn/server';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { listAudit } from '../../src/audit/index.ts';
import {
  type AuthnContext,
  AuthnError,
  type AuthnErrorCode,
  checkEnrollmentTicket,
  deleteExpiredChallenges,
  finishPasskeyAuthentication,
  finishPasskeyRegistration,
  issueEnrollmentTicket,
  listPasskeys,
  startPasskeyAuthentication,
  startPasskeyRegistration,
} from '../../src/authn/index.ts';
import type { Db } from '../../src/db/index.ts';
import { type TestDb, testDb } from '../support/db.ts';
import { createEmulator, type EmulatorOptions, type PasskeyEmulator } from '../support/passkeyEmulator.ts';

const ORIGIN = 'https://localhost:8443';
let t: TestDb;
let ctx: AuthnContext;

beforeAll(async () => {
  t = await testDb();
  ctx = {
    db: t.db,
    rpId: 'localhost',
    rpName: 'Kakehashi test',
    origin: ORIGIN,
    ticketTtlSeconds: 3600,
    maxFailedAttempts: 5,
  };
  await t.db.query(
    `INSERT INTO institutions (id, kind, name_ja, name_en) VALUES ('inst_a', 'brokerage', 'かけはし証券', 'Kakehashi Securities')`,
  );
});
afterAll(() => t.close());

const newId = (prefix: string) => `${prefix}_${randomBytes(6).toString('hex')}`;

async function newCustomer(): Promise<{ id: string; customerNumber: string }> {
  const id = newId('cus');
  const customerNumber = `${Math.floor(1e9 + Math.random() * 9e9)}`;
  await t.db.query(
    `INSERT INTO customers (id, institution_id, customer_number, name_kanji, name_kana)
     VALUES ($1, 'inst_a', $2, '佐藤 花子', 'サトウ ハナコ')`,
    [id, customerNumber],
  );
  return { id, customerNumber };
}

async function expectCode(p: Promise<unknown>, code: AuthnErrorCode): Promise<AuthnError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(AuthnError);
  expect((err as AuthnError).code).toBe(code);
  return err as AuthnError;
}

/** A customer with one enrolled passkey on `device`. */
async function enrolled(options: EmulatorOptions = {}) {
  const customer = await newCustomer();
  const device = createEmulator(options);
  const { ticket } = await issueEnrollmentTicket(ctx, { customerId: customer.id, issuedBy: 'op' });
  const checked = await checkEnrollmentTicket(ctx, { customerNumber: customer.customerNumber, ticket });
  const interactionId = newId('int');
  const creation = await startPasskeyRegistration(ctx, { ...checked, interactionId });
  const { credentialId } = await finishPasskeyRegistration(ctx, {
    interactionId,
    response: device.register(creation, ORIGIN),
  });
  return { customer, device, credentialId };
}

async function assertion(device: PasskeyEmulator, origin = ORIGIN) {
  const interactionId = newId('int');
  const options = await startPasskeyAuthentication(ctx, { interactionId });
  return { interactionId, options, response: device.authenticate(options, origin) };
}

async function storedCounter(credentialId: string): Promise<number> {
  const r = await t.db.query<{ counter: string }>(
    'SELECT counter::text AS counter FROM passkeys WHERE credential_id = $1',
    [credentialId],
  );
  return Number(r.rows[0]!.counter);
}

/** Counts statements sent through a Db (instrumentation only; every call goes to the real database). */
function counting(db: Db): { db: Db; count: () => number } {
  let n = 0;
  const wrapped: Db = {
    kind: db.kind,
    query: (sql, params) => {
      n++;
      return db.query(sql, params);
    },
    exec: (sql) => db.exec(sql),
    afterCommit: (fn) => db.afterCommit(fn),
    transaction: (fn) => {
      n++;
      return db.transaction(fn);
    },
    close: () => db.close(),
  };
  return { db: wrapped, count: () => n };
}

describe('passkey registration', () => {
  it('offers options for a discoverable, user-verified passkey under a random user handle', async () => {
    const customer = await newCustomer();
    const { ticket } = await issueEnrollmentTicket(ctx, { customerId: customer.id, issuedBy: 'op' });
    const checked = await checkEnrollmentTicket(ctx, { customerNumber: customer.customerNumber, ticket });
    const options = await startPasskeyRegistration(ctx, { ...checked, interactionId: 'int_opts' });
    expect(options.rp).toEqual({ id: 'localhost', name: 'Kakehashi test' });
    expect(options.user.name).toBe(customer.customerNumber);
    expect(options.user.displayName).toBe('佐藤 花子');
    expect(Buffer.from(options.user.id, 'base64url')).toHaveLength(32);
    expect(Buffer.from(options.user.id, 'base64url').toString('utf8')).not.toContain(customer.id);
    expect(options.authenticatorSelection).toMatchObject({
      residentKey: 'required',
      userVerification: 'required',
    });
    expect(options.attestation).toBe('none');
    expect(options.pubKeyCredParams.map((p) => p.alg)).toEqual([-7, -257, -8]);
    expect(options.excludeCredentials).toEqual([]);

    const again = await startPasskeyRegistration(ctx, { ...checked, interactionId: 'int_opts2' });
    expect(again.user.id).toBe(options.user.id);
    expect(again.challenge).not.toBe(options.challenge);

    const stored = await t.db.query<{
      interaction_id: string;
      ticket_id: string;
      purpose: string;
      ttl: number;
    }>(
      `SELECT interaction_id, ticket_id, purpose, extract(epoch FROM expires_at - now())::int AS ttl
       FROM webauthn_challenges WHERE id = $1`,
      [options.challenge],
    );
    expect(stored.rows[0]).toMatchObject({
      interaction_id: 'int_opts',
      ticket_id: checked.ticketId,
      purpose: 'registration',
    });
    expect(stored.rows[0]!.ttl).toBeGreaterThan(290);
    expect(stored.rows[0]!.ttl).toBeLessThanOrEqual(300);
  });

  it('stores the passkey with its properties and excludes it from the next registration', async () => {
    const { customer, credentialId } = await enrolled();
    const [pk] = await listPasskeys(t.db, customer.id);
    expect(pk).toMatchObject({ credentialId, deviceType: 'multiDevice', backedUp: true, lastUsedAt: null });
    expect(pk!.name).toMatch(/^Passkey \d{4}-\d{2}-\d{2}$/);
    const { ticket } = await issueEnrollmentTicket(ctx, { customerId: customer.id, issuedBy: 'op' });
    const checked = await checkEnrollmentTicket(ctx, { customerNumber: customer.customerNumber, ticket });
    const options = await startPasskeyRegistration(ctx, { ...checked, interactionId: newId('int') });
    expect(options.excludeCredentials?.map((c) => c.id)).toEqual([credentialId]);
  });

  it('rejects a response made for another origin or another RP id', async () => {
    const customer = await newCustomer();
    const { ticket } = await issueEnrollmentTicket(ctx, { customerId: customer.id, issuedBy: 'op' });
    const checked = await checkEnrollmentTicket(ctx, { customerNumber: customer.customerNumber, ticket });

    const i1 = newId('int');
    const options = await startPasskeyRegistration(ctx, { ...checked, interactionId: i1 });
    const phished = createEmulator().register(options, 'https://localhost:9443');
    const err = await expectCode(
      finishPasskeyRegistration(ctx, { interactionId: i1, response: phished }),
      'ERR_WEBAUTHN_VERIFICATION',
    );
    expect(err.message).not.toContain('9443');

    const i2 = newId('int');
    const options2 = await startPasskeyRegistration(ctx, { ...checked, interactionId: i2 });
    const otherRp = createEmulator().register(
      { ...options2, rp: { ...options2.rp, id: 'evil.example' } },
      'https://evil.example',
    );
    await expectCode(
      finishPasskeyRegistration(ctx, { interactionId: i2, response: otherRp }),
      'ERR_WEBAUTHN_VERIFICATION',
    );
    expect(await listPasskeys(t.db, customer.id)).toHaveLength(0);
  });

  it('rejects a registration without user verification', async () => {
    const customer = await newCustomer();
    const { ticket, ticketId } = await issueEnrollmentTicket(ctx, {
      customerId: customer.id,
      issuedBy: 'op',
    });
    const checked = await checkEnrollmentTicket(ctx, { customerNumber: customer.customerNumber, ticket });
    const interactionId = newId('int');
    const options = await startPasskeyRegistration(ctx, { ...checked, interactionId });
    const response = createEmulator({ userVerified: false }).register(options, ORIGIN);
    await expectCode(
      finishPasskeyRegistration(ctx, { interactionId, response }),
      'ERR_WEBAUTHN_VERIFICATION',
    );
    const used = await t.db.query('SELECT 1 FROM enrollment_tickets WHERE id = $1 AND used_at IS NULL', [
      ticketId,
    ]);
    expect(used.rowCount).toBe(1);
  });

  it('rejects a registration response presented under another interaction', async () => {
    const customer = await newCustomer();
    const { ticket } = await issueEnrollmentTicket(ctx, { customerId: customer.id, issuedBy: 'op' });
    const checked = await checkEnrollmentTicket(ctx, { customerNumber: customer.customerNumber, ticket });
    const options = await startPasskeyRegistration(ctx, { ...checked, interactionId: 'int_reg_a' });
    const response = createEmulator().register(options, ORIGIN);
    await expectCode(
      finishPasskeyRegistration(ctx, { interactionId: 'int_reg_b', response }),
      'ERR_WEBAUTHN_CHALLENGE',
    );
    // The rightful interaction can still finish.
    expect((await finishPasskeyRegistration(ctx, { interactionId: 'int_reg_a', response })).customerId).toBe(
      customer.id,
    );
  });
});

describe('passkey login', () => {
  it('logs in with a synced passkey: acr phr, amr swk, counter and last use recorded, audited', async () => {
    const { customer, device, credentialId } = await enrolled();
    const { interactionId, options, response } = await assertion(device);
    expect(options.allowCredentials).toEqual([]);
    expect(options.userVerification).toBe('required');
    expect(options.rpId).toBe('localhost');
    const before = Math.floor(Date.now() / 1000);
    const login = await finishPasskeyAuthentication(
      ctx,
      { interactionId, response },
      { ip: '198.51.100.7', userAgent: 'vitest' },
    );
    expect(login).toMatchObject({
      customerId: customer.id,
      credentialId,
      acr: 'phr',
      amr: ['pop', 'user', 'mfa', 'swk'],
      deviceType: 'multiDevice',
      backedUp: true,
    });
    expect(login.authTime).toBeGreaterThanOrEqual(before);
    expect(await storedCounter(credentialId)).toBe(1);
    expect((await listPasskeys(t.db, customer.id))[0]!.lastUsedAt).toBeInstanceOf(Date);
    const audit = await listAudit(t.db, { customerId: customer.id, type: 'authn.passkey.login' });
    expect(audit[0]).toMatchObject({
      outcome: 'success',
      ip: '198.51.100.7',
      actor: `customer:${customer.id}`,
    });

    // And again: the counter moves on.
    const second = await assertion(device);
    await finishPasskeyAuthentication(ctx, {
      interactionId: second.interactionId,
      response: second.response,
    });
    expect(await storedCounter(credentialId)).toBe(2);
  });

  it('logs in with a device-bound key whose counter stays 0: amr hwk', async () => {
    const { customer, device, credentialId } = await enrolled({ deviceBound: true });
    expect((await listPasskeys(t.db, customer.id))[0]).toMatchObject({
      deviceType: 'singleDevice',
      backedUp: false,
    });
    for (let i = 0; i < 2; i++) {
      const { interactionId, response } = await assertion(device);
      const login = await finishPasskeyAuthentication(ctx, { interactionId, response });
      expect(login).toMatchObject({
        amr: ['pop', 'user', 'mfa', 'hwk'],
        deviceType: 'singleDevice',
        backedUp: false,
      });
    }
    expect(await storedCounter(credentialId)).toBe(0);
  });

  it('rejects an assertion made for another origin (phishing)', async () => {
    const { customer, device } = await enrolled();
    const { interactionId, response } = await assertion(device, 'https://localhost:9443');
    await expectCode(
      finishPasskeyAuthentication(ctx, { interactionId, response }),
      'ERR_WEBAUTHN_VERIFICATION',
    );
    const audit = await listAudit(t.db, { customerId: customer.id, type: 'authn.passkey.login' });
    expect(audit[0]).toMatchObject({ outcome: 'failure' });
    expect(audit[0]!.data.reason).toBe('ERR_WEBAUTHN_VERIFICATION');
    expect(String(audit[0]!.data.detail)).toMatch(/origin/i);
  });

  it('rejects an assertion for another RP id', async () => {
    const { device } = await enrolled();
    const { interactionId, response } = await assertion(device);
    const authData = Buffer.from(response.response.authenticatorData, 'base64url');
    authData.fill(0, 0, 32); // the RP id hash is no longer that of localhost
    const tampered: AuthenticationResponseJSON = {
      ...response,
      response: { ...response.response, authenticatorData: authData.toString('base64url') },
    };
    const err = await expectCode(
      finishPasskeyAuthentication(ctx, { interactionId, response: tampered }),
      'ERR_WEBAUTHN_VERIFICATION',
    );
    expect(String((err.cause as Error).message)).toMatch(/rp ?id/i);
  });

  it('rejects the challenge of another interaction, an unknown interaction, and an expired challenge', async () => {
    const { device } = await enrolled();
    const a = await assertion(device);
    await expectCode(
      finishPasskeyAuthentication(ctx, { interactionId: newId('int'), response: a.response }),
      'ERR_WEBAUTHN_CHALLENGE',
    );
    // The rightful interaction is unaffected.
    await finishPasskeyAuthentication(ctx, { interactionId: a.interactionId, response: a.response });

    const b = await assertion(device);
    await t.db.query(
      `UPDATE webauthn_challenges SET expires_at = now() - interval '1 second' WHERE id = $1`,
      [b.options.challenge],
    );
    await expectCode(
      finishPasskeyAuthentication(ctx, { interactionId: b.interactionId, response: b.response }),
      'ERR_WEBAUTHN_CHALLENGE',
    );

    // A registration challenge is not a login challenge.
    const customer = await newCustomer();
    const { ticket } = await issueEnrollmentTicket(ctx, { customerId: customer.id, issuedBy: 'op' });
    const checked = await checkEnrollmentTicket(ctx, { customerNumber: customer.customerNumber, ticket });
    const regOptions = await startPasskeyRegistration(ctx, { ...checked, interactionId: 'int_purpose' });
    const crossed = device.authenticate(
      { challenge: regOptions.challenge, rpId: 'localhost', allowCredentials: [] },
      ORIGIN,
    );
    await expectCode(
      finishPasskeyAuthentication(ctx, { interactionId: 'int_purpose', response: crossed }),
      'ERR_WEBAUTHN_CHALLENGE',
    );
  });

  it('rejects a replayed assertion, in the same interaction and in a new one', async () => {
    const { device, credentialId } = await enrolled();
    const { interactionId, response } = await assertion(device);
    await finishPasskeyAuthentication(ctx, { interactionId, response });
    await expectCode(finishPasskeyAuthentication(ctx, { interactionId, response }), 'ERR_WEBAUTHN_CHALLENGE');
    const other = newId('int');
    await startPasskeyAuthentication(ctx, { interactionId: other });
    await expectCode(
      finishPasskeyAuthentication(ctx, { interactionId: other, response }),
      'ERR_WEBAUTHN_CHALLENGE',
    );
    expect(await storedCounter(credentialId)).toBe(1);
  });

  it('rejects an assertion whose counter does not move forward (cloned authenticator)', async () => {
    const { customer, device, credentialId } = await enrolled();
    const first = await assertion(device); // counter 1
    const second = await assertion(device); // counter 2
    await finishPasskeyAuthentication(ctx, {
      interactionId: second.interactionId,
      response: second.response,
    });
    await expectCode(
      finishPasskeyAuthentication(ctx, { interactionId: first.interactionId, response: first.response }),
      'ERR_PASSKEY_COUNTER',
    );
    expect(await storedCounter(credentialId)).toBe(2);
    const audit = await listAudit(t.db, { customerId: customer.id, type: 'authn.passkey.login' });
    expect(audit[0]!.data.reason).toBe('ERR_PASSKEY_COUNTER');
  });

  it('never lets the stored counter go backwards when assertions race', async () => {
    const { device, credentialId } = await enrolled();
    const assertions = [];
    for (let i = 0; i < 8; i++) assertions.push(await assertion(device)); // counters 1..8
    // Highest first: every check reads the old counter before any update lands.
    const results = await Promise.allSettled(
      assertions
        .reverse()
        .map((a) =>
          finishPasskeyAuthentication(ctx, { interactionId: a.interactionId, response: a.response }),
        ),
    );
    expect(results[0]!.status).toBe('fulfilled');
    for (const r of results)
      if (r.status === 'rejected') expect((r.reason as AuthnError).code).toBe('ERR_PASSKEY_COUNTER');
    expect(await storedCounter(credentialId)).toBe(8);
  });

  it('rejects an unknown passkey', async () => {
    const stranger = createEmulator();
    const customer = await newCustomer();
    const { ticket } = await issueEnrollmentTicket(ctx, { customerId: customer.id, issuedBy: 'op' });
    const checked = await checkEnrollmentTicket(ctx, { customerNumber: customer.customerNumber, ticket });
    // The device creates a credential but the enrollment is never finished.
    stranger.register(
      await startPasskeyRegistration(ctx, { ...checked, interactionId: newId('int') }),
      ORIGIN,
    );
    const { interactionId, response } = await assertion(stranger);
    await expectCode(finishPasskeyAuthentication(ctx, { interactionId, response }), 'ERR_PASSKEY_UNKNOWN');
  });

  it('rejects a tampered signature', async () => {
    const { device } = await enrolled();
    const { interactionId, response } = await assertion(device);
    const sig = Buffer.from(response.response.signature, 'base64url');
    sig[sig.length - 1]! ^= 0xff;
    const tampered: AuthenticationResponseJSON = {
      ...response,
      response: { ...response.response, signature: sig.toString('base64url') },
    };
    await expectCode(
      finishPasskeyAuthentication(ctx, { interactionId, response: tampered }),
      'ERR_WEBAUTHN_VERIFICATION',
    );
  });

  it('rejects an assertion without user verification', async () => {
    const { device, credentialId } = await enrolled();
    device.userVerified = false;
    const { interactionId, response } = await assertion(device);
    const err = await expectCode(
      finishPasskeyAuthentication(ctx, { interactionId, response }),
      'ERR_WEBAUTHN_VERIFICATION',
    );
    expect(String((err.cause as Error).message)).toMatch(/verif/i);
    expect(await storedCounter(credentialId)).toBe(0);
  });

  it('refuses a customer who is no longer active', async () => {
    const { customer, device } = await enrolled();
    await t.db.query(`UPDATE customers SET status = 'frozen' WHERE id = $1`, [customer.id]);
    const { interactionId, response } = await assertion(device);
    await expectCode(finishPasskeyAuthentication(ctx, { interactionId, response }), 'ERR_CUSTOMER_INACTIVE');
  });

  it('needs one statement to start and three to finish a login', async () => {
    const { device } = await enrolled();
    const counted = counting(t.db);
    const c2 = { ...ctx, db: counted.db };
    const interactionId = newId('int');
    const options = await startPasskeyAuthentication(c2, { interactionId });
    expect(counted.count()).toBe(1);
    await finishPasskeyAuthentication(c2, { interactionId, response: device.authenticate(options, ORIGIN) });
    expect(counted.count()).toBe(4);
  });
});

describe('housekeeping', () => {
  it('deletes long-expired challenges only', async () => {
    const live = await startPasskeyAuthentication(ctx, { interactionId: newId('int') });
    const old = await startPasskeyAuthentication(ctx, { interactionId: newId('int') });
    await t.db.query(`UPDATE webauthn_challenges SET expires_at = now() - interval '2 hours' WHERE id = $1`, [
      old.challenge,
    ]);
    expect(await deleteExpiredChallenges(t.db)).toBeGreaterThanOrEqual(1);
    const left = await t.db.query<{ id: string }>(
      'SELECT id FROM webauthn_challenges WHERE id = ANY($1::text[])',
      [[live.challenge, old.challenge]],
    );
    expect(left.rows.map((r) => r.id)).toEqual([live.challenge]);
  });
});
