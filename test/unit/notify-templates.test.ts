import { describe, expect, it } from 'vitest';
import {
  findUrlLike,
  type Language,
  maskEmail,
  NOTIFICATION_KINDS,
  type NotificationKind,
  NotifyError,
  neutralize,
  renderNotification,
} from '../../src/notify/index.ts';

/**
 * Independent of the module's own guard: anything a mail client, phone or browser could turn into
 * a link, or wording that invites the customer to follow one (JSDA IV 4.(6)).
 */
const STRICT: [string, RegExp][] = [
  ['scheme://', /[a-z][a-z0-9+.-]*\s*:\s*[\\/]{2}/i],
  ['scheme:', /\b(?:https?|ftp|mailto|tel|sms|smsto|javascript|data|file|intent)\s*:/i],
  ['www.', /www\d*\s*[.．。｡]/i],
  ['host name or IP', /[\p{L}\p{N}_-]\s?[.．｡][\p{L}\p{N}]/u],
  ['ideographic dot between ASCII', /[A-Za-z0-9-]。[A-Za-z0-9]/],
  ['e-mail address', /@[\p{L}\p{N}-]+[.．][\p{L}]/u],
  ['double slash', /[\\/]{2}/],
  ['invitation', /click|tap here|クリック|こちら|下記のURL|以下のURL|リンク先|リンクから|ログインはこちら/i],
];

function urlLike(text: string): string | undefined {
  for (const [name, re] of STRICT) {
    const m = re.exec(text);
    if (m)
      return `${name}: ${JSON.stringify(m[0])} in …${text.slice(Math.max(0, m.index - 30), m.index + 30)}…`;
  }
  return undefined;
}

const ADVERSARIAL = [
  'https://evil.example/login',
  'HTTPS://EVIL.EXAMPLE',
  'ｈｔｔｐｓ：／／ｅｖｉｌ．ｅｘａｍｐｌｅ',
  'www.evil.example',
  'evil.example',
  'evil\u200b.example',
  'evil\u00ad.example',
  'evil。example',
  'evil．example',
  'evil｡example',
  'mailto:help@evil.example',
  'tel:0120123456',
  'javascript:alert(1)',
  'data:text/html,hi',
  '203.0.113.5',
  '[2001:db8::1]',
  'https:\\\\evil.example',
  '//evil.example',
  'xn--80ak6aa92e.com',
  '\u202eelpmaxe.live//:sptth',
  'Tap here\nhttps://evil.example\r\nthanks',
  'ログインはこちら→ evil.example',
  'Click to verify',
  'mailto: help',
  'www . evil . example',
  'a'.repeat(300),
];

const REALISTIC = [
  '山田 太郎',
  'iPhone 15 Pro',
  'Chrome on Windows',
  '東京都',
  'マネーフォワード ME',
  '普通 ****567',
];

/** Data for a kind with `s` in every free-text field. */
function dataFor(kind: NotificationKind, s: string): Record<string, unknown> {
  const at = '2026-12-01T09:30:00+09:00';
  switch (kind) {
    case 'login':
    case 'new_device':
      return { method: 'passkey', device: s, location: s };
    case 'passkey_added':
      return { passkeyName: s, synced: true };
    case 'passkey_removed':
      return { passkeyName: s };
    case 'account_locked':
      return { reason: 'failed_attempts' };
    case 'account_unlocked':
      return {};
    case 'recovery':
      return { method: 'jpki' };
    case 'contact_changed':
      return { field: 'email', change: 'changed' };
    case 'consent_granted':
      return { clientName: s, expiresAt: at };
    case 'consent_revoked':
      return { clientName: s, by: 'customer' };
    case 'withdrawal_requested':
      return { amount: 1_234_567, destination: s };
    case 'withdrawal_account_changed':
      return { bankName: s, accountMasked: s, holdUntil: at };
    case 'limit_changed':
      return { limit: 'withdrawal_daily', from: 500_000, to: 2_000_000 };
    case 'security_alert':
      return { reason: 'peer_signal', action: 'sessions_ended' };
    case 'bank_link':
      return { event: 'linked', bankName: s, accountMasked: s, capAmount: 100_000, reducedCap: true };
    case 'sweep':
      return { outcome: 'needs_bank_approval', amount: 250_000, bankName: s, accountMasked: s };
    case 'channel_changed':
      return { channel: 'withdrawals', enabled: true, effectiveAt: at };
    case 'products_changed':
      return { product: 'foreign_equity', allowed: true, effectiveAt: at };
    case 'travel_declared':
      return { country: 'US', from: '2026-12-01', to: '2026-12-10' };
  }
}

const occurredAt = new Date('2026-11-20T01:05:00Z');

describe('templates', () => {
  const languages: Language[] = ['ja', 'en'];

  it('render every kind in both languages without any URL-like text, even from hostile data', () => {
    let rendered = 0;
    for (const kind of NOTIFICATION_KINDS)
      for (const language of languages)
        for (const s of [...REALISTIC, ...ADVERSARIAL]) {
          const m = renderNotification(kind, language, dataFor(kind, s), {
            customerName: s,
            institutionName: s,
            occurredAt,
          });
          const where = `${kind}/${language}/${JSON.stringify(s.slice(0, 40))}`;
          expect(urlLike(m.subject), where).toBeUndefined();
          expect(urlLike(m.text), where).toBeUndefined();
          expect(m.subject, where).not.toMatch(/[\r\n]/);
          expect(m.text.toLowerCase(), where).not.toContain('evil.example');
          rendered++;
        }
    expect(rendered).toBe(NOTIFICATION_KINDS.length * 2 * (REALISTIC.length + ADVERSARIAL.length));
  });

  it('write in the language asked for, with the name, the time in Japan and the way to check safely', () => {
    const ctx = { customerName: '山田 太郎', institutionName: 'かけはし証券', occurredAt };
    const ja = renderNotification('login', 'ja', { method: 'passkey', device: 'iPhone 15 Pro' }, ctx);
    expect(ja.subject).toBe('【かけはし証券】ログインのお知らせ');
    expect(ja.text).toContain('山田 太郎 様');
    expect(ja.text).toContain('2026年11月20日 10:05');
    expect(ja.text).toContain('端末：iPhone 15 Pro');
    expect(ja.text).toContain('認証方法：パスキー');
    expect(ja.text).toContain('お手元の書類');
    expect(ja.text).toContain('ご自身で開く');

    const en = renderNotification(
      'login',
      'en',
      { method: 'passkey', device: 'iPhone 15 Pro' },
      { ...ctx, institutionName: 'Kakehashi Securities' },
    );
    expect(en.subject).toBe('[Kakehashi Securities] New sign-in to your account');
    expect(en.text).toContain('Dear 山田 太郎,');
    expect(en.text).toContain('20 Nov 2026, 10:05 (Japan time)');
    expect(en.text).toContain('Device: iPhone 15 Pro');
    expect(en.text).toContain('phone number printed in the documents');
    expect(en.text).not.toMatch(/[ぁ-んァ-ン]/);
  });

  it('give every kind its own subject in each language', () => {
    for (const language of languages) {
      const subjects = NOTIFICATION_KINDS.map(
        (kind) =>
          renderNotification(kind, language, dataFor(kind, 'x'), {
            customerName: 'x',
            institutionName: 'x',
            occurredAt,
          }).subject,
      );
      expect(new Set(subjects).size).toBe(NOTIFICATION_KINDS.length);
    }
  });

  it('leave values out rather than not notify when a value still looks like a link', () => {
    const ctx = { customerName: '山田 太郎', institutionName: 'かけはし証券', occurredAt };
    const ja = renderNotification('passkey_added', 'ja', { passkeyName: 'www . evil . example' }, ctx);
    expect(ja.text).toContain('パスキーの名前：「（表示を省略しました）」');
    expect(ja.text).not.toContain('evil');
    const en = renderNotification('login', 'en', { device: 'mailto: help' }, ctx);
    expect(en.text).toContain('Device: (not shown)');
    expect(en.text).not.toContain('mailto');
  });

  it('show amounts in whole yen and enumerated values as fixed wording', () => {
    const ctx = { customerName: 'x', institutionName: 'x', occurredAt };
    const ja = renderNotification('withdrawal_requested', 'ja', { amount: 1_234_567 }, ctx);
    expect(ja.text).toContain('金額：1,234,567円');
    const en = renderNotification(
      'limit_changed',
      'en',
      { limit: 'withdrawal_daily', from: 500_000, to: 2_000_000 },
      ctx,
    );
    expect(en.text).toContain('Your daily withdrawal limit was changed.');
    expect(en.text).toContain('Before: JPY 500,000');
    expect(en.text).toContain('Now: JPY 2,000,000');
    const locked = renderNotification('account_locked', 'ja', {}, ctx);
    expect(locked.text).toContain('認証に続けて失敗したため');
  });

  it('refuse data that does not fit the kind, naming fields but not values', () => {
    const ctx = { customerName: 'x', institutionName: 'x', occurredAt };
    const attempts: [NotificationKind, unknown][] = [
      ['login', { device: 'x', url: 'https://evil.example' }],
      ['withdrawal_requested', { amount: 10.5 }],
      ['withdrawal_requested', { amount: -1 }],
      ['contact_changed', { field: 'https://evil.example' }],
      ['consent_granted', {}],
      ['passkey_added', { passkeyName: 42 }],
    ];
    for (const [kind, data] of attempts) {
      let caught: unknown;
      try {
        renderNotification(kind, 'ja', data, ctx);
      } catch (err) {
        caught = err;
      }
      expect(caught, kind).toBeInstanceOf(NotifyError);
      expect((caught as NotifyError).code).toBe('ERR_NOTIFY_DATA');
      expect((caught as Error).message).not.toContain('evil');
    }
    expect(() => renderNotification('no_such' as NotificationKind, 'ja', {}, ctx)).toThrow(NotifyError);
  });
});

describe('neutralize', () => {
  it('defangs schemes, dots and slashes and drops invisible and line-break characters', () => {
    expect(neutralize('https://evil.example/a')).toBe('https[:]/evil[.]example/a');
    expect(neutralize('ｈｔｔｐｓ：／／ｅｖｉｌ．ｅｘａｍｐｌｅ')).toBe('https[:]/evil[.]example');
    expect(neutralize('evil。example')).toBe('evil[.]example');
    expect(neutralize('evil\u200b.example')).toBe('evil [.]example');
    expect(neutralize('a\nb\r\nc\u2028d')).toBe('a b c d');
    expect(neutralize('\u202eabc')).toBe('abc');
    expect(neutralize('Pixel 8. ')).toBe('Pixel 8.');
    expect(neutralize('   ')).toBe('-');
  });

  it('keeps ordinary names and cuts long values to 40 characters', () => {
    expect(neutralize('山田 太郎')).toBe('山田 太郎');
    expect(neutralize('iPhone 15 Pro')).toBe('iPhone 15 Pro');
    const long = neutralize('あ'.repeat(100));
    expect([...long]).toHaveLength(40);
    expect(long.endsWith('…')).toBe(true);
  });
});

describe('findUrlLike (the render guard)', () => {
  it('finds what would be a link and nothing in ordinary Japanese or English prose', () => {
    for (const s of [
      'see https://a.example',
      'go to www.example',
      'example.com',
      'mailto:x',
      'click here',
      'こちらから',
    ])
      expect(findUrlLike(s), s).toBeDefined();
    for (const s of ['ログインがありました。ご確認ください。', 'Pixel 8. Thanks', '10:05', 'JPY 1,000'])
      expect(findUrlLike(s), s).toBeUndefined();
  });
});

describe('maskEmail', () => {
  it('keeps the first characters and the top-level domain only', () => {
    expect(maskEmail('taro@example.jp')).toBe('t***@e******.jp');
    expect(maskEmail('a@b.co')).toBe('a***@b*.co');
    expect(maskEmail('hanako.yamada@mail.example.co.jp')).toBe('h***@m**************.jp');
    expect(maskEmail('not-an-address')).toBe('***');
  });
});
