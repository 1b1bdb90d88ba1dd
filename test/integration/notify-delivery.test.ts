/**
 * Delivery through a real SMTP server (smtp-server on loopback, STARTTLS with a test CA, AUTH):
 * what arrives, retries while the relay is down or deferring, dead letters, several workers, and
 * the at-least-once resend after a lease runs out.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { SMTPServer } from 'smtp-server';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Db, openDb } from '../../src/db/index.ts';
import { loadKeyEncryptionKey } from '../../src/keys/index.ts';
import type { Logger } from '../../src/log.ts';
import {
  addEmailChannel,
  createNotifier,
  createSmtpTransport,
  enqueueNotification,
  findUrlLike,
  type MailTransport,
  notifyConfigSchema,
  requeueDeadNotifications,
  startNotificationWorker,
  updateNotificationSettings,
} from '../../src/notify/index.ts';
import { type DevTls, ensureDevTls } from '../../src/tls/index.ts';
import { insertCustomer, type TestDb, testDb } from '../support/db.ts';
import { freePort } from '../support/hub.ts';
import { waitFor } from '../support/waitFor.ts';

interface Received {
  to: string[];
  headers: Record<string, string>;
  subject: string;
  text: string;
  secure: boolean;
  user: string | undefined;
}

/** RFC 2047 encoded words (as nodemailer writes them) back to text. */
function decodeWords(value: string): string {
  const words = [...value.matchAll(/=\?utf-8\?([bq])\?([^?]*)\?=/gi)];
  if (words.length === 0) return value;
  const parts: Buffer[] = [];
  let last = 0;
  for (const m of words) {
    const between = value.slice(last, m.index);
    if (between.trim()) parts.push(Buffer.from(between));
    parts.push(
      m[1]!.toLowerCase() === 'b'
        ? Buffer.from(m[2]!, 'base64')
        : Buffer.from(
            m[2]!
              .replace(/_/g, ' ')
              .replace(/=([0-9a-f]{2})/gi, (_, h: string) => String.fromCharCode(Number.parseInt(h, 16))),
            'latin1',
          ),
    );
    last = m.index + m[0].length;
  }
  if (value.slice(last).trim()) parts.push(Buffer.from(value.slice(last)));
  return Buffer.concat(parts).toString('utf8');
}

function parseMail(raw: string): Pick<Received, 'headers' | 'subject' | 'text'> {
  const split = raw.indexOf('\r\n\r\n');
  const headers: Record<string, string> = {};
  for (const line of raw
    .slice(0, split)
    .replace(/\r\n[ \t]+/g, ' ')
    .split('\r\n')) {
    const i = line.indexOf(':');
    headers[line.slice(0, i).toLowerCase()] = line.slice(i + 1).trim();
  }
  const body = raw.slice(split + 4);
  const text =
    headers['content-transfer-encoding'] === 'base64'
      ? Buffer.from(body.replace(/\s+/g, ''), 'base64').toString('utf8')
      : body;
  return { headers, subject: decodeWords(headers.subject ?? ''), text };
}

/** A real SMTP server on loopback: STARTTLS with the test CA's certificate, AUTH PLAIN/LOGIN required. */
class MailSink {
  received: Received[] = [];
  rcptCalls = 0;
  /** Reply code to refuse a recipient with (undefined: accept). */
  refuse: (address: string) => number | undefined = () => undefined;
  delayMs = 0;
  server!: SMTPServer;
  port = 0;

  static async start(tls: DevTls, port = 0): Promise<MailSink> {
    const sink = new MailSink();
    sink.server = new SMTPServer({
      key: tls.keyPem,
      cert: tls.certPem,
      authMethods: ['PLAIN', 'LOGIN'],
      logger: false,
      onAuth(auth, _session, cb) {
        if (auth.username === 'hub' && auth.password === 'relay-secret') return cb(null, { user: 'hub' });
        cb(Object.assign(new Error('authentication failed'), { responseCode: 535 }));
      },
      onRcptTo(address, _session, cb) {
        sink.rcptCalls++;
        const code = sink.refuse(address.address);
        if (code === undefined) return cb();
        // Real relays often echo the address: the hub must not copy it into logs unmasked.
        const message = `<${address.address}>: ${code >= 500 ? 'mailbox unavailable' : 'try again later'}`;
        cb(Object.assign(new Error(message), { responseCode: code }));
      },
      onData(stream, session, cb) {
        const chunks: Buffer[] = [];
        stream.on('data', (c: Buffer) => chunks.push(c));
        stream.on('end', () => {
          sink.received.push({
            ...parseMail(Buffer.concat(chunks).toString('utf8')),
            to: session.envelope.rcptTo.map((r) => r.address),
            secure: session.secure,
            user: session.user as string | undefined,
          });
          setTimeout(() => cb(), sink.delayMs);
        });
      },
    });
    await new Promise<void>((resolve, reject) => {
      sink.server.server.once('error', reject);
      sink.server.listen(port, '127.0.0.1', () => resolve());
    });
    sink.port = (sink.server.server.address() as { port: number }).port;
    return sink;
  }

  close(): Promise<void> {
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

function captureLogger(): { logger: Logger; lines: string[] } {
  const lines: string[] = [];
  return { logger: pino({ level: 'debug' }, { write: (s: string) => void lines.push(s) }), lines };
}

let t: TestDb;
let tls: DevTls;
let dataDir: string;
let kek: Buffer;
let kekText: string;
let n = 0;

const FROM = { address: 'no-reply@kakehashi.test', name: 'かけはし証券' };
const settings = {
  workerIntervalMs: 20,
  batchSize: 10,
  concurrency: 3,
  maxAttempts: 5,
  retryBaseMs: 50,
  retryMaxMs: 200,
  leaseSeconds: 30,
  retentionDays: 30,
};

function smtp(port: number) {
  return createSmtpTransport({
    host: '127.0.0.1',
    port,
    security: 'starttls',
    auth: { user: 'hub', pass: 'relay-secret' },
    timeoutMs: 3000,
    maxConnections: 2,
    from: FROM,
    ca: tls.caPem,
  });
}

async function customer(name: string, emails: string[], language: 'ja' | 'en' = 'ja') {
  const id = `cust_${++n}`;
  await insertCustomer(t.db, { id, nameKanji: name, nameKana: 'カナ' });
  for (const address of emails)
    await addEmailChannel(t.db, kek, { customerId: id, address, actor: 'system' });
  if (language !== 'ja')
    await updateNotificationSettings(t.db, { customerId: id, language, actor: 'system' });
  return id;
}

async function rows(customerId: string) {
  return (
    await t.db.query<{
      id: string;
      kind: string;
      status: string;
      attempts: number;
      last_error: string | null;
      claim_token: string | null;
      created_at: Date;
    }>(
      `SELECT id::text AS id, kind, status, attempts, last_error, claim_token, created_at FROM notify_outbox
       WHERE customer_id = $1 ORDER BY id`,
      [customerId],
    )
  ).rows;
}

beforeAll(async () => {
  t = await testDb();
  dataDir = mkdtempSync(path.join(tmpdir(), 'kakehashi-notify-'));
  tls = await ensureDevTls(dataDir);
  kek = loadKeyEncryptionKey({ dataDir });
  kekText = kek.toString('base64url');
  await t.db.query(
    "INSERT INTO institutions (id, kind, name_ja, name_en) VALUES ('inst', 'brokerage', 'かけはし証券', 'Kakehashi Securities')",
  );
});
afterAll(async () => {
  await t?.close();
  rmSync(dataDir, { recursive: true, force: true });
});

describe('notification delivery over SMTP', () => {
  it('delivers to every channel in the customer’s language, over STARTTLS with AUTH, without any URL', async () => {
    const sink = await MailSink.start(tls);
    const caFile = path.join(dataDir, 'relay-ca.pem');
    writeFileSync(caFile, tls.caPem);
    const { logger } = captureLogger();
    const notifier = createNotifier({
      config: {
        dataDir,
        keyEncryptionKey: kekText,
        notify: notifyConfigSchema.parse({
          from: FROM,
          smtp: {
            host: '127.0.0.1',
            port: sink.port,
            auth: { user: 'hub', pass: 'relay-secret' },
            caFile,
            timeoutMs: 3000,
          },
          workerIntervalMs: 20,
          leaseSeconds: 60,
        }),
      },
      db: t.db,
      logger,
    });
    try {
      // The second address queues a contact notice to both.
      const taro = await customer('山田 太郎', ['taro@example.jp', 'taro.work@example.co.jp']);
      const mary = await customer('スミス メアリー', ['mary@example.org'], 'en');
      // An event and its notifications commit together.
      await t.db.transaction(async (tx) => {
        await tx.query(
          "INSERT INTO audit_events (type, outcome, customer_id) VALUES ('authn.passkey.login', 'success', $1)",
          [taro],
        );
        await enqueueNotification(tx, {
          customerId: taro,
          kind: 'login',
          data: { method: 'passkey', device: 'https://evil.example/login', location: '東京都' },
          occurredAt: new Date('2026-11-20T01:05:00Z'),
        });
        await enqueueNotification(tx, {
          customerId: mary,
          kind: 'new_device',
          data: { method: 'passkey', device: 'Firefox on Linux' },
          occurredAt: new Date('2026-11-20T01:05:00Z'),
        });
      });
      notifier.start();
      const all = await waitFor('all sent', async () => {
        const r = [...(await rows(taro)), ...(await rows(mary))];
        return r.every((x) => x.status === 'sent') && r;
      });
      expect(all.map((r) => r.kind).sort()).toEqual([
        'contact_changed',
        'contact_changed',
        'login',
        'login',
        'new_device',
      ]);
      expect(sink.received).toHaveLength(5);

      for (const mail of sink.received) {
        expect(mail.secure).toBe(true);
        expect(mail.user).toBe('hub');
        expect(mail.headers.from).toContain('<no-reply@kakehashi.test>');
        expect(mail.headers['auto-submitted']).toBe('auto-generated');
        expect(mail.headers['content-type']).toBe('text/plain; charset=utf-8');
        expect(findUrlLike(mail.subject)).toBeUndefined();
        expect(findUrlLike(mail.text)).toBeUndefined();
        expect(mail.text).not.toMatch(/https?:\/\/|www\.|evil\.example/i);
        expect(mail.to).toHaveLength(1);
      }
      // Message-ID derived from the outbox row.
      const ids = sink.received.map((m) => m.headers['message-id']).sort();
      expect(ids).toEqual(
        all.map((r) => `<notify.${r.id}.${new Date(r.created_at).getTime()}@kakehashi.test>`).sort(),
      );

      const logins = sink.received.filter((m) => m.subject === '【かけはし証券】ログインのお知らせ');
      expect(logins.map((m) => m.to[0]).sort()).toEqual(['taro.work@example.co.jp', 'taro@example.jp']);
      for (const m of logins) {
        expect(m.headers['content-language']).toBe('ja');
        expect(m.text).toContain('山田 太郎 様');
        expect(m.text).toContain('2026年11月20日 10:05');
        expect(m.text).toContain('端末：https[:]/evil[.]example/login');
        expect(m.text).toContain('お手元の書類');
      }
      const changed = sink.received.filter((m) => m.subject === '【かけはし証券】お客様情報の変更のお知らせ');
      expect(changed.map((m) => m.to[0]).sort()).toEqual(['taro.work@example.co.jp', 'taro@example.jp']);
      expect(changed[0]?.text).toContain('ご登録のメールアドレスが追加されました。');

      const [en] = sink.received.filter((m) => m.to[0] === 'mary@example.org');
      expect(en?.subject).toBe('[Kakehashi Securities] Sign-in from a new device');
      expect(en?.headers['content-language']).toBe('en');
      expect(en?.text).toContain('Dear スミス メアリー,');
      expect(en?.text).toContain('Device: Firefox on Linux');
      expect(en?.text).toContain('phone number printed in the documents');
    } finally {
      await notifier.stop();
      await sink.close();
    }
  });

  it('retries while the relay is down or deferring, then delivers exactly once', async () => {
    const port = await freePort();
    const transport = smtp(port);
    const worker = startNotificationWorker({
      db: t.db,
      kek,
      transport,
      logger: captureLogger().logger,
      settings: { ...settings, maxAttempts: 30 },
      messageIdDomain: 'kakehashi.test',
    });
    let sink: MailSink | undefined;
    try {
      const id = await customer('佐藤 花子', ['hanako@example.jp']);
      await enqueueNotification(t.db, { customerId: id, kind: 'account_locked', data: {} });
      // Two attempts failed and settled (attempts counts claims, so wait for the claim to be released).
      const down = await waitFor('failed attempts while the relay is down', async () => {
        const [r] = await rows(id);
        return r && r.attempts >= 2 && r.claim_token === null && r;
      });
      expect(down.status).toBe('pending');
      expect(down.last_error).toMatch(/ECONNREFUSED|ESOCKET|ECONNECTION/);

      sink = await MailSink.start(tls, port);
      let deferrals = 2;
      sink.refuse = () => (deferrals-- > 0 ? 451 : undefined);
      const sent = await waitFor('sent', async () => {
        const [r] = await rows(id);
        return r?.status === 'sent' && r;
      });
      expect(sink.received).toHaveLength(1);
      expect(sink.rcptCalls).toBe(3);
      expect(sent.attempts).toBeGreaterThanOrEqual(5);
      expect(sent.last_error).toBeNull();
      expect(sink.received[0]?.subject).toBe('【かけはし証券】アカウントロックのお知らせ');
    } finally {
      await worker.stop();
      transport.close();
      await sink?.close();
    }
  });

  it('dead-letters after maxAttempts, or at once when the recipient is refused, with the error audited and nothing personal logged', async () => {
    const sink = await MailSink.start(tls);
    sink.refuse = (address) =>
      address.startsWith('deferred') ? 451 : address.startsWith('gone') ? 550 : undefined;
    const transport = smtp(sink.port);
    const { logger, lines } = captureLogger();
    const worker = startNotificationWorker({
      db: t.db,
      kek,
      transport,
      logger,
      settings: { ...settings, maxAttempts: 3 },
      messageIdDomain: 'kakehashi.test',
    });
    try {
      const deferred = await customer('鈴木 一郎', ['deferred@example.jp']);
      const gone = await customer('田中 次郎', ['gone@example.jp']);
      await enqueueNotification(t.db, {
        customerId: deferred,
        kind: 'withdrawal_requested',
        data: { amount: 300_000, destination: 'かけはし銀行 普通 ****567' },
      });
      await enqueueNotification(t.db, {
        customerId: gone,
        kind: 'passkey_added',
        data: { passkeyName: 'My YubiKey' },
      });
      const [d] = await waitFor('deferred dead', async () => {
        const r = await rows(deferred);
        return r[0]?.status === 'dead' && r;
      });
      const [g] = await waitFor('gone dead', async () => {
        const r = await rows(gone);
        return r[0]?.status === 'dead' && r;
      });
      expect(d?.attempts).toBe(3);
      expect(d?.last_error).toContain('451');
      expect(g?.attempts).toBe(1);
      expect(g?.last_error).toContain('550');
      expect(g?.last_error).toContain('g***@e******.jp');
      expect(g?.last_error).not.toContain('gone@example.jp');
      expect(sink.received).toHaveLength(0);

      const audit = (
        await t.db.query<{ customer_id: string; data: Record<string, unknown> }>(
          "SELECT customer_id, data FROM audit_events WHERE type = 'notify.dead_lettered' AND customer_id = ANY ($1) ORDER BY id",
          [[deferred, gone]],
        )
      ).rows;
      expect(audit.map((a) => [a.customer_id, a.data.kind, a.data.attempts, a.data.permanent])).toEqual(
        expect.arrayContaining([
          [deferred, 'withdrawal_requested', 3, false],
          [gone, 'passkey_added', 1, true],
        ]),
      );
      expect(audit.find((a) => a.customer_id === gone)?.data.error).toContain('550');

      const log = lines.join('');
      expect(log).toContain('notification dead-lettered');
      expect(log).toContain('will retry');
      for (const secret of [
        'deferred@example.jp',
        'gone@example.jp',
        '鈴木',
        'かけはし銀行',
        'YubiKey',
        'お心当たり',
        '300,000',
      ])
        expect(log, secret).not.toContain(secret);

      // An operator puts the dead ones back once the relay accepts again.
      sink.refuse = () => undefined;
      expect(await requeueDeadNotifications(t.db, { customerId: deferred, actor: 'operator:test' })).toBe(1);
      await waitFor('requeued one sent', async () => (await rows(deferred))[0]?.status === 'sent');
      expect(sink.received.map((m) => m.to[0])).toEqual(['deferred@example.jp']);
      expect((await rows(gone))[0]?.status).toBe('dead');
    } finally {
      await worker.stop();
      transport.close();
      await sink.close();
    }
  });

  it('lets two workers share the queue without sending any row twice', async () => {
    const sink = await MailSink.start(tls);
    sink.delayMs = 10;
    // Two nodes: two connection pools on a real server; PGlite has only one connection to share.
    const second: Db = t.url ? await openDb({ databaseUrl: t.url, dataDir: '', poolSize: 5 }) : t.db;
    const counts = [0, 0];
    const counted = (i: number): MailTransport => {
      const inner = smtp(sink.port);
      return {
        async send(m) {
          await inner.send(m);
          counts[i]!++;
        },
        close: () => inner.close(),
      };
    };
    const transports = [counted(0), counted(1)];
    const id = await customer('高橋 三郎', ['saburo@example.jp']);
    const total = 60;
    await t.db.transaction(async (tx) => {
      for (let i = 0; i < total; i++)
        await enqueueNotification(tx, { customerId: id, kind: 'login', data: {}, dedupeKey: `login:${i}` });
    });
    const workers = [t.db, second].map((db, i) =>
      startNotificationWorker({
        db,
        kek,
        transport: transports[i]!,
        logger: captureLogger().logger,
        settings: { ...settings, batchSize: 4, concurrency: 2 },
        messageIdDomain: 'kakehashi.test',
      }),
    );
    try {
      await Promise.all(workers.map((w) => w.drain()));
      await waitFor('all sent', async () => (await rows(id)).every((r) => r.status === 'sent'));
      const ids = sink.received.map((m) => m.headers['message-id']);
      expect(ids).toHaveLength(total);
      expect(new Set(ids).size).toBe(total);
      expect(counts[0]! + counts[1]!).toBe(total);
      expect(counts[0]).toBeGreaterThan(0);
      expect(counts[1]).toBeGreaterThan(0);
      expect((await rows(id)).every((r) => r.attempts === 1)).toBe(true);
    } finally {
      await Promise.all(workers.map((w) => w.stop()));
      for (const tr of transports) tr.close();
      if (second !== t.db) await second.close();
      await sink.close();
    }
  });

  it('turns shared-signal notify actions into one security alert each', async () => {
    const sink = await MailSink.start(tls);
    const transport = smtp(sink.port);
    const id = await customer('渡辺 五郎', ['goro@example.jp']);
    const compromise = 'https://schemas.openid.net/secevent/risc/event-type/credential-compromise';
    const changed = 'https://schemas.openid.net/secevent/caep/event-type/credential-change';
    // What the signals receiver leaves behind for two SETs from a peer (one of them seen twice).
    await t.db.query(
      `INSERT INTO ssf_received (peer_id, jti, event_type, customer_id, actions) VALUES
         ('peer-a', 'jti-1', $2, $1, '{revoke_sessions,notify}'), ('peer-a', 'jti-2', $3, $1, '{notify}')`,
      [id, compromise, changed],
    );
    await t.db.query(
      `INSERT INTO ssf_action_outbox (action, customer_id, peer_id, jti, event_type) VALUES
         ('notify', $1, 'peer-a', 'jti-1', $2), ('raise_risk', $1, 'peer-a', 'jti-1', $2),
         ('notify', $1, 'peer-a', 'jti-2', $3), ('notify', $1, 'peer-a', 'jti-2', $3)`,
      [id, compromise, changed],
    );
    const worker = startNotificationWorker({
      db: t.db,
      kek,
      transport,
      logger: captureLogger().logger,
      settings,
      messageIdDomain: 'kakehashi.test',
      signalNotices: true,
    });
    try {
      await worker.drain();
      await waitFor('two alerts sent', async () => {
        const r = await rows(id);
        return r.length === 2 && r.every((x) => x.status === 'sent');
      });
      expect(sink.received).toHaveLength(2);
      const texts = sink.received.map((m) => m.text);
      expect(
        sink.received.every((m) => m.subject === '【かけはし証券】セキュリティに関する重要なお知らせ'),
      ).toBe(true);
      expect(
        texts.filter((x) => x.includes('お客様の認証情報が第三者に知られたおそれがあります。')),
      ).toHaveLength(1);
      expect(
        texts.filter((x) => x.includes('当社の対応：すべての端末でログイン状態を終了しました')),
      ).toHaveLength(1);
      expect(texts.filter((x) => x.includes('提携する金融機関から'))).toHaveLength(1);
      const left = await t.db.query<{ action: string; processed: boolean }>(
        'SELECT action, processed_at IS NOT NULL AS processed FROM ssf_action_outbox WHERE customer_id = $1 ORDER BY id',
        [id],
      );
      expect(left.rows.map((r) => [r.action, r.processed])).toEqual([
        ['notify', true],
        ['raise_risk', false],
        ['notify', true],
        ['notify', true],
      ]);
    } finally {
      await worker.stop();
      transport.close();
      await sink.close();
    }
  });

  it('sends again, with the same Message-ID, when a worker stalls past its lease after sending', async () => {
    const sink = await MailSink.start(tls);
    const stalled = smtp(sink.port);
    let release!: () => void;
    const gate = new Promise<void>((r) => {
      release = r;
    });
    const a = captureLogger();
    const workerA = startNotificationWorker({
      db: t.db,
      kek,
      // Sent, then stuck before the worker can record it (a pause, a lost connection, a crash).
      transport: {
        async send(m) {
          await stalled.send(m);
          await gate;
        },
        close: () => stalled.close(),
      },
      logger: a.logger,
      settings: { ...settings, leaseSeconds: 1 },
      messageIdDomain: 'kakehashi.test',
    });
    const normal = smtp(sink.port);
    let workerB: ReturnType<typeof startNotificationWorker> | undefined;
    try {
      const id = await customer('伊藤 四郎', ['shiro@example.jp']);
      await enqueueNotification(t.db, { customerId: id, kind: 'recovery', data: { method: 'jpki' } });
      await waitFor('first send', async () => sink.received.length === 1);
      workerB = startNotificationWorker({
        db: t.db,
        kek,
        transport: normal,
        logger: captureLogger().logger,
        settings,
        messageIdDomain: 'kakehashi.test',
      });
      const [row] = await waitFor('resent and settled', async () => {
        const r = await rows(id);
        return r[0]?.status === 'sent' && r;
      });
      expect(sink.received).toHaveLength(2);
      expect(sink.received[0]?.headers['message-id']).toBe(sink.received[1]?.headers['message-id']);
      expect(sink.received[0]?.headers['message-id']).toBe(
        `<notify.${row!.id}.${new Date(row!.created_at).getTime()}@kakehashi.test>`,
      );
      expect(row?.attempts).toBe(2);

      // The stalled worker wakes up: its claim is gone, so it changes nothing and says so.
      release();
      await waitFor('stale settle logged', async () => a.lines.some((l) => l.includes('may be sent twice')));
      expect((await rows(id))[0]).toMatchObject({ status: 'sent', attempts: 2 });
    } finally {
      release();
      await workerA.stop();
      await workerB?.stop();
      stalled.close();
      normal.close();
      await sink.close();
    }
  });
});
