import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { listAudit } from '../../src/audit/index.ts';
import { decryptAtRest } from '../../src/keys/index.ts';
import {
  addEmailChannel,
  enqueueNotification,
  getNotificationSettings,
  listChannels,
  NotifyError,
  removeChannel,
  updateNotificationSettings,
} from '../../src/notify/index.ts';
import { insertCustomer, type TestDb, testDb } from '../support/db.ts';

const kek = randomBytes(32);
let t: TestDb;
let n = 0;

/** A customer of its own for each test, with the given e-mail addresses as channels. */
async function customer(...emails: string[]): Promise<{ id: string; channels: string[] }> {
  const id = `cust_${++n}`;
  await insertCustomer(t.db, { id, nameKanji: '山田 太郎', nameKana: 'ヤマダ タロウ' });
  const channels: string[] = [];
  for (const address of emails)
    channels.push(
      (await t.db.transaction((tx) => addEmailChannel(tx, kek, { customerId: id, address, actor: 'system' })))
        .id,
    );
  // Adding the second and later addresses queued contact notices; start each test from an empty outbox.
  await t.db.query('DELETE FROM notify_outbox WHERE customer_id = $1', [id]);
  return { id, channels };
}

async function outbox(customerId: string) {
  return (
    await t.db.query<{ channel_id: string; kind: string; language: string; data: Record<string, unknown> }>(
      'SELECT channel_id, kind, language, data FROM notify_outbox WHERE customer_id = $1 ORDER BY id',
      [customerId],
    )
  ).rows;
}

async function thrown(fn: () => Promise<unknown>): Promise<NotifyError> {
  try {
    await fn();
  } catch (err) {
    expect(err).toBeInstanceOf(NotifyError);
    return err as NotifyError;
  }
  throw new Error('expected a NotifyError');
}

beforeAll(async () => {
  t = await testDb();
  await t.db.query(
    "INSERT INTO institutions (id, kind, name_ja, name_en) VALUES ('inst', 'brokerage', 'かけはし証券', 'Kakehashi Securities')",
  );
});
afterAll(async () => {
  await t?.close();
});

describe('enqueueNotification', () => {
  it('queues one row per active channel in the caller’s transaction, and nothing when it rolls back', async () => {
    const c = await customer('taro@example.jp', 'taro.work@example.co.jp');
    await expect(
      t.db.transaction(async (tx) => {
        const r = await enqueueNotification(tx, {
          customerId: c.id,
          kind: 'login',
          data: { method: 'passkey' },
        });
        expect(r.outboxIds).toHaveLength(2);
        throw new Error('the event failed');
      }),
    ).rejects.toThrow('the event failed');
    expect(await outbox(c.id)).toEqual([]);

    await t.db.transaction((tx) =>
      enqueueNotification(tx, {
        customerId: c.id,
        kind: 'login',
        data: { method: 'passkey', device: 'Pixel 8' },
      }),
    );
    const rows = await outbox(c.id);
    expect(rows.map((r) => r.channel_id).sort()).toEqual([...c.channels].sort());
    expect(rows[0]).toMatchObject({
      kind: 'login',
      language: 'ja',
      data: { method: 'passkey', device: 'Pixel 8' },
    });
  });

  it('rejects data that does not fit the kind before writing anything', async () => {
    const c = await customer('hanako@example.jp');
    const err = await thrown(() =>
      t.db.transaction((tx) =>
        enqueueNotification(tx, {
          customerId: c.id,
          kind: 'withdrawal_requested',
          // @ts-expect-error amount must be a number of yen
          data: { amount: '1000' },
        }),
      ),
    );
    expect(err.code).toBe('ERR_NOTIFY_DATA');
    expect(await outbox(c.id)).toEqual([]);
  });

  it('is idempotent per kind and dedupe key', async () => {
    const c = await customer('jiro@example.jp');
    const first = await enqueueNotification(t.db, {
      customerId: c.id,
      kind: 'login',
      data: {},
      dedupeKey: 'login:session-1',
    });
    const again = await enqueueNotification(t.db, {
      customerId: c.id,
      kind: 'login',
      data: {},
      dedupeKey: 'login:session-1',
    });
    const otherKind = await enqueueNotification(t.db, {
      customerId: c.id,
      kind: 'new_device',
      data: {},
      dedupeKey: 'login:session-1',
    });
    const noKey = await enqueueNotification(t.db, { customerId: c.id, kind: 'login', data: {} });
    expect([
      first.outboxIds.length,
      again.outboxIds.length,
      otherKind.outboxIds.length,
      noKey.outboxIds.length,
    ]).toEqual([1, 0, 1, 1]);
    expect(await outbox(c.id)).toHaveLength(3);
  });

  it('honours opt-outs for ordinary kinds but always queues security-critical ones', async () => {
    const c = await customer('saburo@example.jp');
    await t.db.transaction((tx) =>
      updateNotificationSettings(tx, {
        customerId: c.id,
        kinds: { login: false, consent_granted: false },
        language: 'en',
        actor: `customer:${c.id}`,
        ip: '203.0.113.5',
      }),
    );
    expect(
      (await enqueueNotification(t.db, { customerId: c.id, kind: 'login', data: {} })).outboxIds,
    ).toEqual([]);
    expect(
      (await enqueueNotification(t.db, { customerId: c.id, kind: 'new_device', data: {} })).outboxIds,
    ).toHaveLength(1);

    const refused = await thrown(() =>
      updateNotificationSettings(t.db, { customerId: c.id, kinds: { account_locked: false }, actor: 'x' }),
    );
    expect(refused.code).toBe('ERR_NOTIFY_CRITICAL');
    // Even a row that says otherwise (written by hand, or by an older version) cannot silence them.
    await t.db.query(
      "INSERT INTO notify_preferences (customer_id, kind, enabled) VALUES ($1, 'account_locked', false)",
      [c.id],
    );
    expect(
      (await enqueueNotification(t.db, { customerId: c.id, kind: 'account_locked', data: {} })).outboxIds,
    ).toHaveLength(1);

    const rows = await outbox(c.id);
    expect(rows.map((r) => [r.kind, r.language])).toEqual([
      ['new_device', 'en'],
      ['account_locked', 'en'],
    ]);
    expect(rows[1]?.data).toEqual({ reason: 'failed_attempts' });
  });

  it('records in the audit log when a security-critical notice has nowhere to go', async () => {
    const c = await customer();
    const r = await enqueueNotification(t.db, {
      customerId: c.id,
      kind: 'security_alert',
      data: { reason: 'peer_signal' },
    });
    expect(r.outboxIds).toEqual([]);
    const [event] = await listAudit(t.db, { customerId: c.id, type: 'notify.undeliverable' });
    expect(event?.data).toEqual({ kind: 'security_alert', reason: 'no active channel' });
  });
});

describe('settings', () => {
  it('show every kind with its critical flag, and audit only what changed', async () => {
    const c = await customer('shiro@example.jp');
    const before = await getNotificationSettings(t.db, c.id);
    expect(before.language).toBe('ja');
    expect(before.channels.map((ch) => ch.masked)).toEqual(['s***@e******.jp']);
    expect(before.kinds.find((k) => k.kind === 'login')).toEqual({
      kind: 'login',
      critical: false,
      enabled: true,
    });
    expect(before.kinds.find((k) => k.kind === 'recovery')).toEqual({
      kind: 'recovery',
      critical: true,
      enabled: true,
    });
    expect(before.kinds.filter((k) => k.critical).map((k) => k.kind)).toEqual([
      'passkey_added',
      'passkey_removed',
      'account_locked',
      'recovery',
      'contact_changed',
      'withdrawal_account_changed',
      'security_alert',
      'bank_link',
      'channel_changed',
      'products_changed',
      // Declared travel quiets the abroad rules: the customer is always told (security review).
      'travel_declared',
    ]);

    const after = await updateNotificationSettings(t.db, {
      customerId: c.id,
      kinds: { login: false, limit_changed: true, recovery: true },
      actor: `customer:${c.id}`,
    });
    expect(after.kinds.find((k) => k.kind === 'login')?.enabled).toBe(false);
    await updateNotificationSettings(t.db, {
      customerId: c.id,
      kinds: { login: false },
      actor: `customer:${c.id}`,
    });
    await updateNotificationSettings(t.db, {
      customerId: c.id,
      kinds: { login: true },
      language: 'en',
      actor: `customer:${c.id}`,
    });

    const audits = (
      await t.db.query<{ actor: string; data: unknown }>(
        "SELECT actor, data FROM audit_events WHERE customer_id = $1 AND type = 'notify.settings.changed' ORDER BY id",
        [c.id],
      )
    ).rows;
    expect(audits.map((a) => a.data)).toEqual([
      { changes: { login: { from: true, to: false } } },
      { changes: { language: { from: 'ja', to: 'en' }, login: { from: false, to: true } } },
    ]);
    expect(audits[0]?.actor).toBe(`customer:${c.id}`);
    const unknown = await thrown(() =>
      // @ts-expect-error not a kind
      updateNotificationSettings(t.db, { customerId: c.id, kinds: { newsletter: false }, actor: 'x' }),
    );
    expect(unknown.code).toBe('ERR_NOTIFY_KIND');
  });
});

describe('channels', () => {
  it('keep the address sealed and masked, and refuse duplicates without breaking the transaction', async () => {
    const c = await customer('Goro@Example.JP');
    const [row] = (
      await t.db.query<{ id: string; address_enc: string; address_masked: string }>(
        'SELECT id, address_enc, address_masked FROM notify_channels WHERE customer_id = $1',
        [c.id],
      )
    ).rows;
    expect(row?.address_enc).not.toContain('Goro');
    expect(row?.address_enc).not.toContain('example');
    expect(decryptAtRest(kek, row!.address_enc, `notify-channel:${row!.id}`)).toBe('Goro@example.jp');
    expect(row?.address_masked).toBe('G***@e******.jp');
    // Sealed to its row: moved to another row it does not open.
    expect(() => decryptAtRest(kek, row!.address_enc, 'notify-channel:ch_other')).toThrow();

    await t.db.transaction(async (tx) => {
      const dup = await thrown(() =>
        addEmailChannel(tx, kek, { customerId: c.id, address: ' goro@EXAMPLE.jp ', actor: 'x' }),
      );
      expect(dup.code).toBe('ERR_NOTIFY_DUPLICATE');
      // Still usable (a unique violation would have aborted it on PostgreSQL).
      await tx.query('SELECT 1');
    });
    const bad = await thrown(() =>
      addEmailChannel(t.db, kek, { customerId: c.id, address: 'goro at example', actor: 'x' }),
    );
    expect(bad.code).toBe('ERR_NOTIFY_ADDRESS');
    expect(await listChannels(t.db, c.id)).toHaveLength(1);
  });

  it('tell the old and the new address about a change, then stop using the old one', async () => {
    const c = await customer('rokuro@example.jp');
    const added = await t.db.transaction((tx) =>
      addEmailChannel(tx, kek, {
        customerId: c.id,
        address: 'rokuro@example.net',
        replaces: c.channels[0],
        actor: `customer:${c.id}`,
      }),
    );
    expect(added.masked).toBe('r***@e******.net');
    const rows = await outbox(c.id);
    expect(rows.map((r) => r.channel_id).sort()).toEqual([c.channels[0], added.id].sort());
    expect(rows.every((r) => r.kind === 'contact_changed' && r.data.change === 'changed')).toBe(true);
    expect((await listChannels(t.db, c.id)).map((ch) => ch.id)).toEqual([added.id]);

    const audit = await listAudit(t.db, { customerId: c.id, type: 'notify.channel.replaced' });
    expect(audit[0]?.data).toMatchObject({
      channelId: added.id,
      replaces: c.channels[0],
      masked: 'r***@e******.net',
    });
    expect(JSON.stringify(audit)).not.toContain('rokuro@');

    const unknown = await thrown(() =>
      addEmailChannel(t.db, kek, {
        customerId: c.id,
        address: 'x@example.org',
        replaces: c.channels[0],
        actor: 'x',
      }),
    );
    expect(unknown.code).toBe('ERR_NOTIFY_CHANNEL_UNKNOWN');
  });

  it('notify a removal to the removed address too, and never remove the last one', async () => {
    const c = await customer('nanako@example.jp', 'nanako@example.org');
    await t.db.transaction((tx) =>
      removeChannel(tx, { customerId: c.id, channelId: c.channels[1]!, actor: `customer:${c.id}` }),
    );
    const rows = await outbox(c.id);
    expect(rows.map((r) => r.channel_id).sort()).toEqual([...c.channels].sort());
    expect(rows[0]?.data).toEqual({ field: 'email', change: 'removed' });
    const last = await thrown(() =>
      removeChannel(t.db, { customerId: c.id, channelId: c.channels[0]!, actor: `customer:${c.id}` }),
    );
    expect(last.code).toBe('ERR_NOTIFY_LAST_CHANNEL');
    const other = await customer('someone@example.jp', 'someone@example.org');
    const notTheirs = await thrown(() =>
      removeChannel(t.db, { customerId: other.id, channelId: c.channels[0]!, actor: 'x' }),
    );
    expect(notTheirs.code).toBe('ERR_NOTIFY_CHANNEL_UNKNOWN');
    expect(await listAudit(t.db, { customerId: c.id, type: 'notify.channel.removed' })).toHaveLength(1);
  });
});
