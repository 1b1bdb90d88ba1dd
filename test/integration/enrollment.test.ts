import { createHash, randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { listAudit } from '../../src/audit/index.ts';
import {
  type AuthnContext,
  AuthnError,
  type AuthnErrorCode,
  checkEnrollmentTicket,
  finishPasskeyRegistration,
  issueEnrollmentTicket,
  listPasskeys,
  normalizeTicket,
  startPasskeyRegistration,
} from '../../src/authn/index.ts';
import { type TestDb, testDb } from '../support/db.ts';
import { createEmulator } from '../support/passkeyEmulator.ts';

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
    maxFailedAttempts: 3,
  };
  await t.db.query(
    `INSERT INTO institutions (id, kind, name_ja, name_en) VALUES
     ('inst_a', 'brokerage', 'かけはし証券', 'Kakehashi Securities'), ('inst_b', 'bank', 'はし銀行', 'Hashi Bank')`,
  );
});
afterAll(() => t.close());

let seq = 0;
async function newCustomer(
  opts: { status?: string; institutionId?: string; customerNumber?: string } = {},
): Promise<{ id: string; customerNumber: string }> {
  seq++;
  const id = `cus_${seq}_${randomBytes(4).toString('hex')}`;
  const customerNumber = opts.customerNumber ?? `${100000 + seq}`;
  await t.db.query(
    `INSERT INTO customers (id, institution_id, customer_number, name_kanji, name_kana, status)
     VALUES ($1, $2, $3, '山田 太郎', 'ヤマダ タロウ', $4)`,
    [id, opts.institutionId ?? 'inst_a', customerNumber, opts.status ?? 'active'],
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

async function failures(customerId: string): Promise<number> {
  const r = await t.db.query<{ failed_attempts: number }>(
    'SELECT failed_attempts FROM enrollment_failures WHERE customer_id = $1',
    [customerId],
  );
  return r.rows[0]?.failed_attempts ?? 0;
}

async function ticketRow(ticketId: string) {
  const r = await t.db.query<{
    used_at: Date | null;
    voided_at: Date | null;
    void_reason: string | null;
    secret_hash: string;
  }>('SELECT used_at, voided_at, void_reason, secret_hash FROM enrollment_tickets WHERE id = $1', [ticketId]);
  return r.rows[0]!;
}

/** A wrong but well-formed ticket. */
function wrongTicket(): string {
  return `KKH-00000-11111-${randomBytes(5).toString('hex').toUpperCase()}`;
}

/** Check → start → emulator → finish; returns the finish promise's result. */
async function enroll(
  customerNumber: string,
  ticket: string,
  interactionId = `int_${randomBytes(6).toString('hex')}`,
) {
  const checked = await checkEnrollmentTicket(ctx, { customerNumber, ticket });
  const options = await startPasskeyRegistration(ctx, { ...checked, interactionId });
  const response = createEmulator().register(options, ORIGIN);
  return finishPasskeyRegistration(ctx, { interactionId, response, passkeyName: 'iPhone' });
}

describe('enrollment tickets', () => {
  it('issues a KKH- ticket of 4 × 5 Crockford characters and stores only its SHA-256', async () => {
    const c = await newCustomer();
    const issued = await issueEnrollmentTicket(
      ctx,
      { customerId: c.id, issuedBy: 'alice' },
      { ip: '192.0.2.1' },
    );
    expect(issued.ticket).toMatch(/^KKH(-[0-9A-HJKMNP-TV-Z]{5}){4}$/);
    expect(issued.expiresAt.getTime() - Date.now()).toBeGreaterThan(3500_000);
    expect(issued.expiresAt.getTime() - Date.now()).toBeLessThan(3700_000);
    const secret = issued.ticket.slice(4).replaceAll('-', '');
    const row = await ticketRow(issued.ticketId);
    expect(row.secret_hash).toBe(createHash('sha256').update(secret).digest('hex'));
    expect(JSON.stringify(row)).not.toContain(secret);
    const audit = await listAudit(t.db, { customerId: c.id, type: 'enrollment.ticket.issued' });
    expect(audit).toHaveLength(1);
    expect(audit[0]).toMatchObject({ outcome: 'success', actor: 'operator:alice', ip: '192.0.2.1' });
    expect(audit[0]!.data.ticketId).toBe(issued.ticketId);
    // Two tickets never collide (100 random bits).
    const again = await issueEnrollmentTicket(ctx, { customerId: c.id, issuedBy: 'alice' });
    expect(again.ticket).not.toBe(issued.ticket);
  });

  it('normalizes case, spaces, dashes, full-width input and Crockford look-alikes', () => {
    const canonical = 'A1B2C3D4E5F6G7H8J9K0';
    expect(normalizeTicket('KKH-A1B2C-3D4E5-F6G7H-8J9K0')).toBe(canonical);
    expect(normalizeTicket('kkh a1b2c 3d4e5 f6g7h 8j9k0')).toBe(canonical);
    expect(normalizeTicket('a1b2c3d4e5f6g7h8j9k0')).toBe(canonical);
    expect(normalizeTicket('ＫＫＨ－Ａ１Ｂ２Ｃ－３Ｄ４Ｅ５－Ｆ６Ｇ７Ｈ－８Ｊ９Ｋ０')).toBe(canonical);
    expect(normalizeTicket('KKH-AIB2C-3D4E5-F6G7H-8J9KO')).toBe('A1B2C3D4E5F6G7H8J9K0');
    expect(normalizeTicket('KKH-A1B2C-3D4E5-F6G7H-8J9K')).toBeUndefined();
    expect(normalizeTicket('KKH-A1B2C-3D4E5-F6G7H-8J9KU')).toBeUndefined();
    expect(normalizeTicket('x'.repeat(1000))).toBeUndefined();
  });

  it('accepts the ticket as typed by a person and returns the customer and ticket id', async () => {
    const c = await newCustomer();
    const { ticket, ticketId } = await issueEnrollmentTicket(ctx, { customerId: c.id, issuedBy: 'op' });
    const typed = ` ${ticket.toLowerCase().replaceAll('-', ' ')} `;
    expect(await checkEnrollmentTicket(ctx, { customerNumber: c.customerNumber, ticket: typed })).toEqual({
      customerId: c.id,
      ticketId,
    });
    // Full-width customer number as typed with a Japanese IME.
    const wide = c.customerNumber.replace(/[0-9]/g, (d) => String.fromCharCode(d.charCodeAt(0) + 0xfee0));
    expect((await checkEnrollmentTicket(ctx, { customerNumber: wide, ticket })).customerId).toBe(c.id);
    // Checking does not consume.
    expect((await ticketRow(ticketId)).used_at).toBeNull();
  });

  it('rejects a wrong ticket, an unknown customer number and a malformed ticket, counting only real guesses', async () => {
    const c = await newCustomer();
    await issueEnrollmentTicket(ctx, { customerId: c.id, issuedBy: 'op' });
    await expectCode(
      checkEnrollmentTicket(ctx, { customerNumber: c.customerNumber, ticket: wrongTicket() }),
      'ERR_TICKET_INVALID',
    );
    expect(await failures(c.id)).toBe(1);
    await expectCode(
      checkEnrollmentTicket(ctx, { customerNumber: c.customerNumber, ticket: 'KKH-123' }),
      'ERR_TICKET_MALFORMED',
    );
    expect(await failures(c.id)).toBe(1);
    await expectCode(
      checkEnrollmentTicket(ctx, { customerNumber: 'no-such-number', ticket: wrongTicket() }),
      'ERR_TICKET_INVALID',
    );
    const rejected = await listAudit(t.db, { customerId: c.id, type: 'enrollment.ticket.rejected' });
    expect(rejected).toHaveLength(1);
    expect(rejected[0]!.data).toMatchObject({ reason: 'ERR_TICKET_INVALID', failedAttempts: 1 });
  });

  it('rejects the ticket of customer A presented with the customer number of B, counting against B', async () => {
    const a = await newCustomer();
    const b = await newCustomer();
    const ta = await issueEnrollmentTicket(ctx, { customerId: a.id, issuedBy: 'op' });
    await issueEnrollmentTicket(ctx, { customerId: b.id, issuedBy: 'op' });
    const err = await expectCode(
      checkEnrollmentTicket(ctx, { customerNumber: b.customerNumber, ticket: ta.ticket }),
      'ERR_TICKET_INVALID',
    );
    // Same code and message as any wrong ticket.
    expect(err.message).toBe(new AuthnError('ERR_TICKET_INVALID').message);
    expect(await failures(b.id)).toBe(1);
    expect(await failures(a.id)).toBe(0);
    // A's ticket still works for A.
    expect(
      (await checkEnrollmentTicket(ctx, { customerNumber: a.customerNumber, ticket: ta.ticket })).customerId,
    ).toBe(a.id);
  });

  it('locks after maxFailedAttempts wrong tickets: open tickets voided, even the right one fails, until a new ticket', async () => {
    const c = await newCustomer();
    const good = await issueEnrollmentTicket(ctx, { customerId: c.id, issuedBy: 'op' });
    for (let i = 1; i < ctx.maxFailedAttempts; i++)
      await expectCode(
        checkEnrollmentTicket(ctx, { customerNumber: c.customerNumber, ticket: wrongTicket() }),
        'ERR_TICKET_INVALID',
      );
    await expectCode(
      checkEnrollmentTicket(ctx, { customerNumber: c.customerNumber, ticket: wrongTicket() }),
      'ERR_TICKET_LOCKED',
    );
    const row = await ticketRow(good.ticketId);
    expect(row.voided_at).not.toBeNull();
    expect(row.void_reason).toBe('too many failed attempts');
    await expectCode(
      checkEnrollmentTicket(ctx, { customerNumber: c.customerNumber, ticket: good.ticket }),
      'ERR_TICKET_LOCKED',
    );
    await expectCode(
      checkEnrollmentTicket(ctx, { customerNumber: c.customerNumber, ticket: wrongTicket() }),
      'ERR_TICKET_LOCKED',
    );
    const locked = await listAudit(t.db, { customerId: c.id, type: 'enrollment.ticket.locked' });
    expect(locked).toHaveLength(1);
    expect(locked[0]!.data).toMatchObject({ failedAttempts: ctx.maxFailedAttempts, voidedTickets: 1 });

    // The operator issues a new ticket: that unlocks; the old letter stays void.
    const fresh = await issueEnrollmentTicket(ctx, { customerId: c.id, issuedBy: 'op' });
    expect(await failures(c.id)).toBe(0);
    await expectCode(
      checkEnrollmentTicket(ctx, { customerNumber: c.customerNumber, ticket: good.ticket }),
      'ERR_TICKET_VOIDED',
    );
    expect(
      (await checkEnrollmentTicket(ctx, { customerNumber: c.customerNumber, ticket: fresh.ticket })).ticketId,
    ).toBe(fresh.ticketId);
  });

  it('counts concurrent guesses without letting any slip past the limit', async () => {
    const c = await newCustomer();
    const good = await issueEnrollmentTicket(ctx, { customerId: c.id, issuedBy: 'op' });
    const results = await Promise.allSettled(
      Array.from({ length: 8 }, () =>
        checkEnrollmentTicket(ctx, { customerNumber: c.customerNumber, ticket: wrongTicket() }),
      ),
    );
    expect(results.every((r) => r.status === 'rejected')).toBe(true);
    // Every guess up to the limit counts; guesses racing past it may count too, never fewer.
    expect(await failures(c.id)).toBeGreaterThanOrEqual(ctx.maxFailedAttempts);
    expect((await ticketRow(good.ticketId)).voided_at).not.toBeNull();
    await expectCode(
      checkEnrollmentTicket(ctx, { customerNumber: c.customerNumber, ticket: good.ticket }),
      'ERR_TICKET_LOCKED',
    );
  });

  it('resets the failure count when the right ticket is checked', async () => {
    const c = await newCustomer();
    const good = await issueEnrollmentTicket(ctx, { customerId: c.id, issuedBy: 'op' });
    await expectCode(
      checkEnrollmentTicket(ctx, { customerNumber: c.customerNumber, ticket: wrongTicket() }),
      'ERR_TICKET_INVALID',
    );
    await expectCode(
      checkEnrollmentTicket(ctx, { customerNumber: c.customerNumber, ticket: wrongTicket() }),
      'ERR_TICKET_INVALID',
    );
    expect(await failures(c.id)).toBe(2);
    await checkEnrollmentTicket(ctx, { customerNumber: c.customerNumber, ticket: good.ticket });
    expect(await failures(c.id)).toBe(0);
  });

  it('rejects an expired ticket', async () => {
    const c = await newCustomer();
    const { ticket, ticketId } = await issueEnrollmentTicket(ctx, { customerId: c.id, issuedBy: 'op' });
    await t.db.query(`UPDATE enrollment_tickets SET expires_at = now() - interval '1 second' WHERE id = $1`, [
      ticketId,
    ]);
    await expectCode(
      checkEnrollmentTicket(ctx, { customerNumber: c.customerNumber, ticket }),
      'ERR_TICKET_EXPIRED',
    );
    expect(await failures(c.id)).toBe(0);
  });

  it('expires tickets after ticketTtlSeconds', async () => {
    const c = await newCustomer();
    const issued = await issueEnrollmentTicket(
      { ...ctx, ticketTtlSeconds: 1 },
      { customerId: c.id, issuedBy: 'op' },
    );
    expect(issued.expiresAt.getTime() - Date.now()).toBeLessThanOrEqual(1000);
    await new Promise((r) => setTimeout(r, 1100));
    await expectCode(
      checkEnrollmentTicket(ctx, { customerNumber: c.customerNumber, ticket: issued.ticket }),
      'ERR_TICKET_EXPIRED',
    );
  });

  it('voids the previous open ticket when a new one is issued', async () => {
    const c = await newCustomer();
    const first = await issueEnrollmentTicket(ctx, { customerId: c.id, issuedBy: 'op' });
    const second = await issueEnrollmentTicket(ctx, { customerId: c.id, issuedBy: 'op' });
    expect((await ticketRow(first.ticketId)).void_reason).toBe('superseded by a newer ticket');
    await expectCode(
      checkEnrollmentTicket(ctx, { customerNumber: c.customerNumber, ticket: first.ticket }),
      'ERR_TICKET_VOIDED',
    );
    expect(
      (await checkEnrollmentTicket(ctx, { customerNumber: c.customerNumber, ticket: second.ticket }))
        .ticketId,
    ).toBe(second.ticketId);
  });

  it('refuses unknown and inactive customers', async () => {
    await expectCode(
      issueEnrollmentTicket(ctx, { customerId: 'cus_missing', issuedBy: 'op' }),
      'ERR_CUSTOMER_UNKNOWN',
    );
    const frozen = await newCustomer({ status: 'frozen' });
    await expectCode(
      issueEnrollmentTicket(ctx, { customerId: frozen.id, issuedBy: 'op' }),
      'ERR_CUSTOMER_INACTIVE',
    );
    // Frozen after issuance: the right ticket is recognised but enrollment is refused.
    const c = await newCustomer();
    const { ticket } = await issueEnrollmentTicket(ctx, { customerId: c.id, issuedBy: 'op' });
    await t.db.query(`UPDATE customers SET status = 'locked' WHERE id = $1`, [c.id]);
    await expectCode(
      checkEnrollmentTicket(ctx, { customerNumber: c.customerNumber, ticket }),
      'ERR_CUSTOMER_INACTIVE',
    );
    const failed = await listAudit(t.db, { type: 'enrollment.ticket.issued' });
    expect(failed.filter((e) => e.outcome === 'failure').map((e) => e.data.reason)).toEqual(
      expect.arrayContaining(['ERR_CUSTOMER_UNKNOWN', 'ERR_CUSTOMER_INACTIVE']),
    );
  });

  it('scopes customer numbers by institution when asked, and lets the ticket decide otherwise', async () => {
    const a = await newCustomer({ institutionId: 'inst_a', customerNumber: 'SHARED-1' });
    const b = await newCustomer({ institutionId: 'inst_b', customerNumber: 'SHARED-1' });
    const tb = await issueEnrollmentTicket(ctx, { customerId: b.id, issuedBy: 'op' });
    expect(
      (await checkEnrollmentTicket(ctx, { customerNumber: 'SHARED-1', ticket: tb.ticket })).customerId,
    ).toBe(b.id);
    expect(
      (
        await checkEnrollmentTicket(ctx, {
          customerNumber: 'SHARED-1',
          ticket: tb.ticket,
          institutionId: 'inst_b',
        })
      ).customerId,
    ).toBe(b.id);
    await expectCode(
      checkEnrollmentTicket(ctx, { customerNumber: 'SHARED-1', ticket: tb.ticket, institutionId: 'inst_a' }),
      'ERR_TICKET_INVALID',
    );
    expect(await failures(a.id)).toBe(1);
    expect(await failures(b.id)).toBe(0);
  });

  it('never writes the ticket secret to the audit log', async () => {
    const c = await newCustomer();
    const { ticket } = await issueEnrollmentTicket(ctx, { customerId: c.id, issuedBy: 'op' });
    await checkEnrollmentTicket(ctx, { customerNumber: c.customerNumber, ticket });
    await enroll(c.customerNumber, ticket);
    const secret = ticket.slice(4).replaceAll('-', '');
    const all = await t.db.query<{ dump: string }>(
      "SELECT string_agg(row_to_json(a)::text, '\n') AS dump FROM audit_events a",
    );
    const dump = all.rows[0]!.dump;
    expect(dump).not.toContain(secret);
    expect(dump).not.toContain(secret.slice(0, 10));
  });
});

describe('enrollment ceremony with a ticket', () => {
  it('enrolls a passkey, consumes the ticket, audits use, and refuses reuse', async () => {
    const c = await newCustomer();
    const { ticket, ticketId } = await issueEnrollmentTicket(ctx, { customerId: c.id, issuedBy: 'op' });
    const result = await enroll(c.customerNumber, ticket);
    expect(result.customerId).toBe(c.id);
    expect((await ticketRow(ticketId)).used_at).not.toBeNull();
    expect((await listPasskeys(t.db, c.id)).map((p) => p.credentialId)).toEqual([result.credentialId]);
    expect(await listAudit(t.db, { customerId: c.id, type: 'enrollment.ticket.used' })).toHaveLength(1);
    const registered = await listAudit(t.db, { customerId: c.id, type: 'authn.passkey.register' });
    expect(registered[0]).toMatchObject({ outcome: 'success' });
    expect(registered[0]!.data).toMatchObject({ credentialId: result.credentialId, ticketId });

    await expectCode(
      checkEnrollmentTicket(ctx, { customerNumber: c.customerNumber, ticket }),
      'ERR_TICKET_USED',
    );
    await expectCode(
      startPasskeyRegistration(ctx, { customerId: c.id, ticketId, interactionId: 'int_reuse' }),
      'ERR_TICKET_USED',
    );
    // Reuse is not a guess.
    expect(await failures(c.id)).toBe(0);
  });

  it('lets exactly one of two concurrent enrollments with the same ticket succeed', async () => {
    const c = await newCustomer();
    const { ticket } = await issueEnrollmentTicket(ctx, { customerId: c.id, issuedBy: 'op' });
    const checked = await checkEnrollmentTicket(ctx, { customerNumber: c.customerNumber, ticket });
    const ceremonies = await Promise.all(
      ['int_race_1', 'int_race_2'].map(async (interactionId) => {
        const options = await startPasskeyRegistration(ctx, { ...checked, interactionId });
        return { interactionId, response: createEmulator().register(options, ORIGIN) };
      }),
    );
    const results = await Promise.allSettled(ceremonies.map((c2) => finishPasskeyRegistration(ctx, c2)));
    expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
    const rejected = results.find((r) => r.status === 'rejected') as PromiseRejectedResult;
    expect(rejected.reason).toBeInstanceOf(AuthnError);
    expect((rejected.reason as AuthnError).code).toBe('ERR_TICKET_USED');
    expect(await listPasskeys(t.db, c.id)).toHaveLength(1);
  });

  it('leaves the ticket unused and stores nothing when the ceremony fails, so the customer can retry', async () => {
    const c = await newCustomer();
    const { ticket, ticketId } = await issueEnrollmentTicket(ctx, { customerId: c.id, issuedBy: 'op' });
    const checked = await checkEnrollmentTicket(ctx, { customerNumber: c.customerNumber, ticket });
    const options = await startPasskeyRegistration(ctx, { ...checked, interactionId: 'int_fail' });
    const response = createEmulator().register(options, 'https://localhost:9443');
    await expectCode(
      finishPasskeyRegistration(ctx, { interactionId: 'int_fail', response }),
      'ERR_WEBAUTHN_VERIFICATION',
    );
    expect((await ticketRow(ticketId)).used_at).toBeNull();
    expect(await listPasskeys(t.db, c.id)).toHaveLength(0);
    // The challenge is spent: the same response cannot be tried again.
    await expectCode(
      finishPasskeyRegistration(ctx, { interactionId: 'int_fail', response }),
      'ERR_WEBAUTHN_CHALLENGE',
    );
    const audit = await listAudit(t.db, { customerId: c.id, type: 'authn.passkey.register' });
    expect(audit[0]).toMatchObject({ outcome: 'failure' });
    expect(audit.map((a) => a.data.reason)).toContain('ERR_WEBAUTHN_VERIFICATION');
    // Retry with a fresh challenge works.
    expect((await enroll(c.customerNumber, ticket)).customerId).toBe(c.id);
  });

  it('refuses to finish when the ticket expired or was locked after the ceremony started', async () => {
    const c = await newCustomer();
    const { ticket, ticketId } = await issueEnrollmentTicket(ctx, { customerId: c.id, issuedBy: 'op' });
    const checked = await checkEnrollmentTicket(ctx, { customerNumber: c.customerNumber, ticket });
    const options = await startPasskeyRegistration(ctx, { ...checked, interactionId: 'int_exp' });
    const response = createEmulator().register(options, ORIGIN);
    await t.db.query(`UPDATE enrollment_tickets SET expires_at = now() - interval '1 second' WHERE id = $1`, [
      ticketId,
    ]);
    await expectCode(
      finishPasskeyRegistration(ctx, { interactionId: 'int_exp', response }),
      'ERR_TICKET_EXPIRED',
    );
    expect(await listPasskeys(t.db, c.id)).toHaveLength(0);
    expect((await ticketRow(ticketId)).used_at).toBeNull();

    const fresh = await issueEnrollmentTicket(ctx, { customerId: c.id, issuedBy: 'op' });
    const checked2 = await checkEnrollmentTicket(ctx, {
      customerNumber: c.customerNumber,
      ticket: fresh.ticket,
    });
    const options2 = await startPasskeyRegistration(ctx, { ...checked2, interactionId: 'int_lock' });
    const response2 = createEmulator().register(options2, ORIGIN);
    for (let i = 0; i < ctx.maxFailedAttempts; i++)
      await checkEnrollmentTicket(ctx, { customerNumber: c.customerNumber, ticket: wrongTicket() }).catch(
        () => {},
      );
    await expectCode(
      finishPasskeyRegistration(ctx, { interactionId: 'int_lock', response: response2 }),
      'ERR_TICKET_LOCKED',
    );
    expect(await listPasskeys(t.db, c.id)).toHaveLength(0);
  });

  it('refuses a ticket id that belongs to another customer', async () => {
    const a = await newCustomer();
    const b = await newCustomer();
    const ta = await issueEnrollmentTicket(ctx, { customerId: a.id, issuedBy: 'op' });
    await expectCode(
      startPasskeyRegistration(ctx, { customerId: b.id, ticketId: ta.ticketId, interactionId: 'int_x' }),
      'ERR_TICKET_INVALID',
    );
    await expectCode(
      startPasskeyRegistration(ctx, {
        customerId: 'cus_missing',
        ticketId: ta.ticketId,
        interactionId: 'int_x',
      }),
      'ERR_CUSTOMER_UNKNOWN',
    );
  });
});
