/**
 * Plain-text notification templates, Japanese and English.
 *
 * JSDA guideline IV 4.(6): no URL and no sign-in link in any mail or SMS. Our own wording has none,
 * and nothing interpolated can add one: every value that did not come from these templates (names,
 * device and app names, bank names) goes through `neutralize`, which defangs dots and colons so a
 * name such as "https://evil.example" reads "https[:]/evil[.]example" and no mail client turns it
 * into a link. As a last guard `renderNotification` checks its output with `findUrlLike`.
 * Instead of links, every message tells the customer to open the app or website themselves and to
 * call the number in the documents they already have.
 */
import { PRODUCT_NAMES } from '../linking/productCatalogue.ts';
import { NotifyError } from './errors.ts';
import { type NotificationKind, type ParsedNotificationData, parseNotificationData } from './kinds.ts';

export type Language = 'ja' | 'en';
export const LANGUAGES: readonly Language[] = ['ja', 'en'];

export interface RenderContext {
  /** The customer's registered name (as on their documents). */
  customerName: string;
  /** The institution the customer has the account with, in the message's language. */
  institutionName: string;
  occurredAt: Date;
}

export interface RenderedMessage {
  subject: string;
  text: string;
}

const MAX_VALUE_LENGTH = 40;

/**
 * Makes a value safe to show in a notification: NFKC (so full-width "ｈｔｔｐｓ：／／" becomes
 * ASCII and is caught), no control, format (zero-width, bidi override) or line-break characters,
 * whitespace collapsed, an ideographic full stop between ASCII labels read as the dot IDNA makes
 * of it, runs of slashes made one, then every dot or colon followed by a non-space defanged as
 * "[.]" / "[:]" — without a dot there is no host name and without "://" no scheme. Cut to 40
 * characters.
 */
export function neutralize(value: string, max = MAX_VALUE_LENGTH): string {
  let s = value.normalize('NFKC');
  s = s.replace(/[\p{Cc}\p{Cf}\p{Zl}\p{Zp}]/gu, ' ');
  s = s.replace(/(?<=[A-Za-z0-9-])\u3002(?=[A-Za-z0-9])/g, '.');
  s = s.replace(/\s+/g, ' ').trim();
  // Browsers read backslashes as slashes; "//" only ever introduces an authority.
  s = s.replace(/[\\/]{2,}/g, '/');
  s = s.replace(/([.:])(?=\S)/g, '[$1]');
  // Someone else's words must not tell the customer to click anything either.
  s = s.replace(/click|tap(?=\s*here)|こちら|クリック|リンク/giu, '…');
  const chars = [...s];
  if (chars.length > max) s = `${chars.slice(0, max - 1).join('')}…`;
  return s || '-';
}

const URL_LIKE: RegExp[] = [
  // scheme://…
  /[a-z][a-z0-9+.-]*:\/\//i,
  // schemes that work without slashes
  /\b(?:https?|ftp|mailto|tel|sms|smsto|javascript|data|file|intent|market)\s*:/i,
  /\bwww\d{0,3}\s*\./i,
  // a dot inside a word: host names, IP addresses, file names
  /[\p{L}\p{N}_-]\.[\p{L}\p{N}]/u,
  // ideographic or full-width dots between ASCII labels
  /[a-z0-9-][\u3002\uff0e\uff61][a-z0-9]/i,
  // invitations to follow something
  /\b(?:click|tap)\s+(?:here|below|the\s+link)|こちらをクリック|こちらから|リンクをクリック|リンクから|下記のURL|以下のURL/i,
];

/** The first URL-like or link-like piece of `text`, or undefined. */
export function findUrlLike(text: string): string | undefined {
  for (const re of URL_LIKE) {
    const m = re.exec(text);
    if (m) return m[0];
  }
  return undefined;
}

interface Parts {
  /** Subject without the institution. */
  title: string;
  lead: string;
  details?: [label: string, value: string | undefined][];
  advice?: string;
}

interface Fmt {
  v(value: string | undefined): string | undefined;
  time(iso: string | undefined): string | undefined;
  yen(amount: number | undefined): string | undefined;
}

type Catalogue = {
  [K in NotificationKind]: (d: ParsedNotificationData<K>, f: Fmt) => Parts;
};

interface LanguagePack {
  catalogue: Catalogue;
  subject(institution: string, title: string): string;
  greeting(name: string, institution: string): string;
  when: string;
  detail(label: string, value: string): string;
  footer(institution: string): string;
  time(d: Date): string;
  yen(n: number): string;
}

/** "アメリカ合衆国 (US)": the name in the message's language, and the code the customer entered. */
function regionName(language: Language, code: string): string {
  let name: string | undefined;
  try {
    name = new Intl.DisplayNames([language], { type: 'region' }).of(code);
  } catch {
    name = undefined;
  }
  return name && name !== code ? `${name} (${code})` : code;
}

const JA_CONTACT_US = 'お心当たりがない場合は、直ちに以下の方法で当社にご連絡ください。';
const JA_METHOD = {
  passkey: 'パスキー',
  totp: '認証アプリのワンタイムパスワード',
  recovery_code: '復旧コード',
};

// Built once: constructing an Intl formatter costs far more than formatting with it (every sign-in and
// consent sends a notification).
const TIME_JA = new Intl.DateTimeFormat('ja-JP', {
  dateStyle: 'long',
  timeStyle: 'short',
  timeZone: 'Asia/Tokyo',
});
const TIME_EN = new Intl.DateTimeFormat('en-GB', {
  year: 'numeric',
  month: 'short',
  day: 'numeric',
  hour: '2-digit',
  minute: '2-digit',
  hourCycle: 'h23',
  timeZone: 'Asia/Tokyo',
});
const YEN_JA = new Intl.NumberFormat('ja-JP');
const YEN_EN = new Intl.NumberFormat('en-US');

const ja: LanguagePack = {
  subject: (inst, title) => `【${inst}】${title}`,
  greeting: (name, inst) => `${name} 様\n\nいつも${inst}をご利用いただき、ありがとうございます。`,
  when: '日時',
  detail: (label, value) => `${label}：${value}`,
  time: (d) => TIME_JA.format(d),
  yen: (n) => `${YEN_JA.format(n)}円`,
  footer: (inst) =>
    [
      '――――――――――',
      'ご確認やお問い合わせは、このメールに返信せず、次のいずれかの方法でお願いいたします。',
      '・いつもお使いの公式アプリを、ご自身で開く',
      '・当社のウェブサイトを、ご自身で登録したブックマークから開く',
      '・お手元の書類（口座開設時のご案内など）に記載の当社電話番号に電話する',
      '当社がメールやSMSに、URLやログインのためのリンクを記載することはありません。そのようなメッセージを当社名義で受け取った場合は、開かずに削除してください。',
      'このメールは送信専用のアドレスからお送りしています。',
      '',
      inst,
    ].join('\n'),
  catalogue: {
    login: (d, f) => ({
      title: 'ログインのお知らせ',
      lead: 'お客様のアカウントにログインがありました。',
      details: [
        ['認証方法', d.method && JA_METHOD[d.method]],
        ['端末', f.v(d.device)],
        ['場所（推定）', f.v(d.location)],
      ],
    }),
    new_device: (d, f) => ({
      title: '新しい端末からのログインのお知らせ',
      lead: 'これまでにご利用のなかった端末から、お客様のアカウントにログインがありました。',
      details: [
        ['認証方法', d.method && JA_METHOD[d.method]],
        ['端末', f.v(d.device)],
        ['場所（推定）', f.v(d.location)],
      ],
      advice: JA_CONTACT_US,
    }),
    passkey_added: (d, f) => ({
      title: 'パスキー登録のお知らせ',
      lead: 'お客様のアカウントに新しいパスキーが登録されました。',
      details: [
        ['パスキーの名前', d.passkeyName && `「${f.v(d.passkeyName)}」`],
        [
          '種類',
          d.synced === undefined
            ? undefined
            : d.synced
              ? '同期パスキー（複数の端末で利用可能）'
              : 'この端末専用のパスキー',
        ],
      ],
      advice:
        'お心当たりがない場合、第三者がお客様のアカウントにログインの手段を追加したおそれがあります。直ちに以下の方法で当社にご連絡ください。',
    }),
    passkey_removed: (d, f) => ({
      title: 'パスキー削除のお知らせ',
      lead: 'お客様のアカウントからパスキーが削除されました。',
      details: [['パスキーの名前', d.passkeyName && `「${f.v(d.passkeyName)}」`]],
      advice: JA_CONTACT_US,
    }),
    account_locked: (d) => ({
      title: 'アカウントロックのお知らせ',
      lead: {
        failed_attempts: '認証に続けて失敗したため、お客様のアカウントをロックしました。',
        operator: '当社の判断により、お客様のアカウントを一時的にロックしました。',
        security: '不正なアクセスのおそれがあるため、お客様のアカウントをロックしました。',
      }[d.reason],
      advice:
        'ロックの解除には、あらためて本人確認が必要です。公式アプリまたはウェブサイトをご自身で開き、画面の案内に従ってください。お客様ご自身の操作でない場合は、以下の方法で当社にご連絡ください。',
    }),
    account_unlocked: () => ({
      title: 'アカウントロック解除のお知らせ',
      lead: 'お客様のアカウントのロックを解除しました。',
      advice: JA_CONTACT_US,
    }),
    recovery: (d) => ({
      title: 'アカウント復旧のお知らせ',
      lead: '本人確認のうえ、お客様のアカウントの復旧（パスキーの再登録）が行われました。以前のパスキーは使えなくなり、すべての端末でログイン状態を終了しました。',
      details: [
        [
          '本人確認の方法',
          d.method &&
            {
              ticket: '郵送した登録コード',
              ekyc: 'オンラインでの本人確認（eKYC）',
              jpki: 'マイナンバーカード',
            }[d.method],
        ],
      ],
      advice: JA_CONTACT_US,
    }),
    contact_changed: (d) => ({
      title: 'お客様情報の変更のお知らせ',
      lead: `ご登録の${{ email: 'メールアドレス', phone: '電話番号', postal_address: 'ご住所', name: 'お名前' }[d.field]}が${{ added: '追加', changed: '変更', removed: '削除' }[d.change]}されました。`,
      advice: JA_CONTACT_US,
    }),
    consent_granted: (d, f) => ({
      title: '外部サービス連携のお知らせ',
      lead: `「${f.v(d.clientName)}」に、お客様の口座情報を提供することに同意されました。`,
      details: [['有効期限', f.time(d.expiresAt)]],
      advice:
        'お心当たりがない場合は、公式アプリまたはウェブサイトをご自身で開き、セキュリティ設定の画面で連携を解除したうえで、以下の方法で当社にご連絡ください。',
    }),
    consent_revoked: (d, f) => ({
      title: '外部サービス連携解除のお知らせ',
      lead: `「${f.v(d.clientName)}」への、お客様の口座情報の提供を終了しました。`,
      details: [
        [
          '解除の理由',
          d.by &&
            {
              customer: 'お客様のお手続き',
              client: '連携先サービスからの解除',
              operator: '当社による解除',
              expiry: '有効期限の到来',
            }[d.by],
        ],
      ],
    }),
    withdrawal_requested: (d, f) => ({
      title: '出金受付のお知らせ',
      lead: '出金のご依頼を受け付けました。',
      details: [
        ['金額', f.yen(d.amount)],
        ['出金先', f.v(d.destination)],
      ],
      advice: JA_CONTACT_US,
    }),
    withdrawal_account_changed: (d, f) => ({
      title: '出金先口座の変更のお知らせ',
      lead: '出金先の口座が変更されました。',
      details: [
        ['金融機関', f.v(d.bankName)],
        ['口座', f.v(d.accountMasked)],
        ['新しい口座へ出金できるようになる日時', f.time(d.holdUntil)],
      ],
      advice: d.holdUntil
        ? `セキュリティのため、上記の日時までは新しい口座への出金をお受けできません。${JA_CONTACT_US}`
        : JA_CONTACT_US,
    }),
    limit_changed: (d, f) => ({
      title: 'ご利用限度額の変更のお知らせ',
      lead: `${{ withdrawal_daily: '1日あたりの出金限度額', sweep_daily: '1日あたりの自動入金（スイープ）限度額', order_daily: '1日あたりの注文限度額' }[d.limit]}が変更されました。`,
      details: [
        ['変更前', f.yen(d.from)],
        ['変更後', f.yen(d.to)],
        ['変更後の限度額が有効になる日時', f.time(d.effectiveAt)],
      ],
      advice: JA_CONTACT_US,
    }),
    security_alert: (d) => ({
      title: 'セキュリティに関する重要なお知らせ',
      lead: {
        risk_block: 'お客様のアカウントへの、普段と異なるログインを検知しました。',
        peer_signal:
          '提携する金融機関から、お客様に関するセキュリティ上の連絡（認証方法の変更、アカウントの停止など）を受けました。',
        credential_compromise: 'お客様の認証情報が第三者に知られたおそれがあります。',
        suspicious_activity: 'お客様のアカウントで、普段と異なる操作を検知しました。',
      }[d.reason],
      details: [
        [
          '当社の対応',
          {
            none: undefined,
            login_blocked: 'ログインを止めました',
            sessions_ended: 'すべての端末でログイン状態を終了しました',
            account_frozen: 'お取引と出金を一時的に停止しました',
          }[d.action],
        ],
      ],
      advice: JA_CONTACT_US,
    }),
    bank_link: (d, f) => ({
      title: {
        linked: '銀行口座連携のお知らせ',
        unlinked: '銀行口座連携の解除のお知らせ',
        suspended: '銀行口座連携の停止のお知らせ',
        resumed: '銀行口座連携の再開のお知らせ',
        refused: '銀行口座連携をお受けできませんでした',
      }[d.event],
      lead: {
        linked: 'お客様の証券口座に、入金（スイープ）用の銀行口座が連携されました。',
        unlinked: '入金（スイープ）用の銀行口座の連携を解除しました。以後この口座からの入金は行われません。',
        suspended: '金融機関の判断により、入金（スイープ）用の銀行口座の連携を一時停止しました。',
        resumed: '停止していた入金（スイープ）用の銀行口座の連携を再開しました。',
        refused: '銀行口座の連携のお申し込みがありましたが、連携しませんでした。',
      }[d.event],
      details: [
        ['銀行', f.v(d.bankName)],
        ['口座', f.v(d.accountMasked)],
        ['1日の入金上限', f.yen(d.capAmount)],
        [
          '理由',
          d.reason &&
            {
              bank_strength: '銀行側の資金移動の認証が、フィッシングに耐性のある方法ではないため',
              name_mismatch: '銀行口座の名義がお客様のご登録のお名前と一致しないため',
              frozen: 'お客様の口座が凍結されているため',
              bank_error: '銀行での認証が完了しなかったため',
              policy: '当社の基準を満たさないため',
            }[d.reason],
        ],
      ],
      advice: d.reducedCap
        ? `この銀行の振込認証はワンタイムパスワード等のため、フィッシングの恐れがあります。そのため1日の入金上限を引き下げています。${JA_CONTACT_US}`
        : JA_CONTACT_US,
    }),
    channel_changed: (d, f) => ({
      title: d.enabled ? 'ご利用チャネルの再開のお知らせ' : 'ご利用チャネルの停止のお知らせ',
      lead: `${{ aggregator_access: '外部サービスからの口座情報の参照', withdrawals: 'インターネットからの出金', sweeps: '銀行口座からの自動入金（スイープ）' }[d.channel]}を${d.enabled ? '再開します' : '停止しました'}。`,
      details: [['再開される日時', f.time(d.effectiveAt)]],
      advice: JA_CONTACT_US,
    }),
    products_changed: (d, f) => ({
      title: d.allowed ? 'お取引商品の許可のお知らせ' : 'お取引商品の停止のお知らせ',
      lead: `${PRODUCT_NAMES.ja[d.product]}のお取引を${d.allowed ? '許可します' : '停止しました'}。`,
      details: [['お取引できる日時', f.time(d.effectiveAt)]],
      advice: JA_CONTACT_US,
    }),
    travel_declared: (d) => ({
      title: '海外渡航予定の登録のお知らせ',
      lead: '海外渡航の予定が登録されました。この期間、その国・地域からのログインは通常のご利用として扱われます。',
      details: [
        ['国・地域', regionName('ja', d.country)],
        ['期間', `${d.from} ～ ${d.to}`],
      ],
      advice: JA_CONTACT_US,
    }),
    sweep: (d, f) => ({
      title: {
        allowed: '銀行口座からの入金（スイープ）のお知らせ',
        refused: '銀行口座からの入金（スイープ）をお受けできませんでした',
        needs_bank_approval: '銀行口座からの入金（スイープ）に銀行での承認が必要です',
      }[d.outcome],
      lead: {
        allowed: 'ご注文に伴い、連携している銀行口座からの入金を受け付けました。',
        refused: 'ご注文に伴う、連携している銀行口座からの入金をお受けできませんでした。',
        needs_bank_approval:
          '1日の上限を超えるため、この入金にはお取引銀行での承認が必要です。銀行の公式アプリをご自身で開いてご確認ください。',
      }[d.outcome],
      details: [
        ['金額', f.yen(d.amount)],
        ['銀行', f.v(d.bankName)],
        ['口座', f.v(d.accountMasked)],
      ],
      advice: JA_CONTACT_US,
    }),
  },
};

const EN_CONTACT_US = 'If this was not you, contact us at once as described below.';
const EN_METHOD = {
  passkey: 'Passkey',
  totp: 'One-time code from an authenticator app',
  recovery_code: 'Recovery code',
};

const en: LanguagePack = {
  subject: (inst, title) => `[${inst}] ${title}`,
  greeting: (name, inst) => `Dear ${name},\n\nThis is a message from ${inst}.`,
  when: 'Date and time',
  detail: (label, value) => `${label}: ${value}`,
  time: (d) => `${TIME_EN.format(d)} (Japan time)`,
  yen: (n) => `JPY ${YEN_EN.format(n)}`,
  footer: (inst) =>
    [
      '----------',
      'To check your account or to contact us, do not reply to this message. Instead:',
      '- open our official app yourself, or',
      '- open our website from a bookmark you made yourself, or',
      '- call us on the phone number printed in the documents you received from us (for example when you opened your account).',
      'We never put web addresses or sign-in links in our e-mails or text messages. If you receive such a message in our name, delete it without opening anything in it.',
      'This message was sent from an address that does not accept replies.',
      '',
      inst,
    ].join('\n'),
  catalogue: {
    login: (d, f) => ({
      title: 'New sign-in to your account',
      lead: 'Your account was signed in to.',
      details: [
        ['Method', d.method && EN_METHOD[d.method]],
        ['Device', f.v(d.device)],
        ['Approximate location', f.v(d.location)],
      ],
    }),
    new_device: (d, f) => ({
      title: 'Sign-in from a new device',
      lead: 'Your account was signed in to from a device that had not been used with it before.',
      details: [
        ['Method', d.method && EN_METHOD[d.method]],
        ['Device', f.v(d.device)],
        ['Approximate location', f.v(d.location)],
      ],
      advice: EN_CONTACT_US,
    }),
    passkey_added: (d, f) => ({
      title: 'A passkey was added to your account',
      lead: 'A new passkey was registered for your account.',
      details: [
        ['Passkey name', d.passkeyName && `"${f.v(d.passkeyName)}"`],
        [
          'Type',
          d.synced === undefined
            ? undefined
            : d.synced
              ? 'Synced passkey (usable on several devices)'
              : 'Passkey bound to one device',
        ],
      ],
      advice:
        'If this was not you, someone else may have added a way to sign in to your account. Contact us at once as described below.',
    }),
    passkey_removed: (d, f) => ({
      title: 'A passkey was removed from your account',
      lead: 'A passkey was removed from your account.',
      details: [['Passkey name', d.passkeyName && `"${f.v(d.passkeyName)}"`]],
      advice: EN_CONTACT_US,
    }),
    account_locked: (d) => ({
      title: 'Your account has been locked',
      lead: {
        failed_attempts: 'We locked your account after several failed sign-in attempts.',
        operator: 'We have temporarily locked your account.',
        security: 'We locked your account because someone may be trying to access it without permission.',
      }[d.reason],
      advice:
        'To unlock it, you need to prove your identity again: open our official app or website yourself and follow the instructions. If you did not cause this, contact us as described below.',
    }),
    account_unlocked: () => ({
      title: 'Your account has been unlocked',
      lead: 'We unlocked your account.',
      advice: EN_CONTACT_US,
    }),
    recovery: (d) => ({
      title: 'Your account was recovered',
      lead: 'After an identity check, your account was recovered and a new passkey was registered. Your previous passkeys no longer work, and you were signed out on every device.',
      details: [
        [
          'Identity check',
          d.method &&
            {
              ticket: 'Enrollment code sent by post',
              ekyc: 'Online identity verification (eKYC)',
              jpki: 'My Number Card',
            }[d.method],
        ],
      ],
      advice: EN_CONTACT_US,
    }),
    contact_changed: (d) => ({
      title: 'Your registered details were changed',
      lead: `Your registered ${{ email: 'e-mail address', phone: 'phone number', postal_address: 'postal address', name: 'name' }[d.field]} was ${d.change}.`,
      advice: EN_CONTACT_US,
    }),
    consent_granted: (d, f) => ({
      title: 'A service was connected to your account',
      lead: `You agreed to share your account information with "${f.v(d.clientName)}".`,
      details: [['Valid until', f.time(d.expiresAt)]],
      advice:
        'If this was not you, open our official app or website yourself, disconnect the service in the security settings, and contact us as described below.',
    }),
    consent_revoked: (d, f) => ({
      title: 'A connected service was disconnected',
      lead: `Your account information is no longer shared with "${f.v(d.clientName)}".`,
      details: [
        [
          'Ended by',
          d.by &&
            {
              customer: 'You',
              client: 'The connected service',
              operator: 'Us',
              expiry: 'Expiry of your consent',
            }[d.by],
        ],
      ],
    }),
    withdrawal_requested: (d, f) => ({
      title: 'Withdrawal request received',
      lead: 'We received a request to withdraw money from your account.',
      details: [
        ['Amount', f.yen(d.amount)],
        ['To', f.v(d.destination)],
      ],
      advice: EN_CONTACT_US,
    }),
    withdrawal_account_changed: (d, f) => ({
      title: 'Your withdrawal account was changed',
      lead: 'The bank account your withdrawals are paid to was changed.',
      details: [
        ['Bank', f.v(d.bankName)],
        ['Account', f.v(d.accountMasked)],
        ['Withdrawals to it possible from', f.time(d.holdUntil)],
      ],
      advice: d.holdUntil
        ? `For your security, we pay nothing to the new account before that time. ${EN_CONTACT_US}`
        : EN_CONTACT_US,
    }),
    limit_changed: (d, f) => ({
      title: 'Your limit was changed',
      lead: `Your ${{ withdrawal_daily: 'daily withdrawal limit', sweep_daily: 'daily automatic transfer (sweep) limit', order_daily: 'daily order limit' }[d.limit]} was changed.`,
      details: [
        ['Before', f.yen(d.from)],
        ['Now', f.yen(d.to)],
        ['The new limit applies from', f.time(d.effectiveAt)],
      ],
      advice: EN_CONTACT_US,
    }),
    security_alert: (d) => ({
      title: 'Important security notice',
      lead: {
        risk_block: 'We noticed an unusual sign-in to your account.',
        peer_signal:
          'A partner financial institution told us of a security-relevant change concerning you (such as a new sign-in method or a suspended account).',
        credential_compromise: 'Your sign-in credentials may be known to someone else.',
        suspicious_activity: 'We noticed unusual activity in your account.',
      }[d.reason],
      details: [
        [
          'What we did',
          {
            none: undefined,
            login_blocked: 'We stopped the sign-in',
            sessions_ended: 'We signed you out on every device',
            account_frozen: 'We suspended trading and withdrawals for now',
          }[d.action],
        ],
      ],
      advice: EN_CONTACT_US,
    }),
    bank_link: (d, f) => ({
      title: {
        linked: 'A bank account was linked',
        unlinked: 'A bank account link was removed',
        suspended: 'A bank account link was suspended',
        resumed: 'A bank account link was resumed',
        refused: 'A bank account could not be linked',
      }[d.event],
      lead: {
        linked: 'A bank account was linked to your brokerage account for automatic transfers (sweeps).',
        unlinked:
          'The bank account link for automatic transfers (sweeps) was removed. Nothing more is transferred from it.',
        suspended:
          'A financial institution suspended the bank account link for automatic transfers (sweeps).',
        resumed: 'The suspended bank account link for automatic transfers (sweeps) was resumed.',
        refused: 'Someone asked to link a bank account to your brokerage account; we did not link it.',
      }[d.event],
      details: [
        ['Bank', f.v(d.bankName)],
        ['Account', f.v(d.accountMasked)],
        ['Daily transfer limit', f.yen(d.capAmount)],
        [
          'Reason',
          d.reason &&
            {
              bank_strength: 'the bank does not authenticate transfers with a phishing-resistant method',
              name_mismatch: 'the account holder name differs from your registered name',
              frozen: 'your account is frozen',
              bank_error: 'the sign-in at the bank was not completed',
              policy: 'the link does not meet our rules',
            }[d.reason],
        ],
      ],
      advice: d.reducedCap
        ? `Your bank authenticates transfers with one-time codes, which can be phished, so the daily limit is reduced. ${EN_CONTACT_US}`
        : EN_CONTACT_US,
    }),
    channel_changed: (d, f) => ({
      title: d.enabled ? 'A channel will be switched on again' : 'A channel was switched off',
      lead: `${{ aggregator_access: 'Access to your account information by connected services', withdrawals: 'Withdrawals over the internet', sweeps: 'Automatic transfers (sweeps) from your bank account' }[d.channel]} ${d.enabled ? 'will be possible again' : 'was switched off'}.`,
      details: [['Possible again from', f.time(d.effectiveAt)]],
      advice: EN_CONTACT_US,
    }),
    products_changed: (d, f) => ({
      title: d.allowed ? 'A product will be allowed for trading' : 'A product was blocked for trading',
      lead: `Trading in ${PRODUCT_NAMES.en[d.product].toLowerCase()} ${d.allowed ? 'will be possible' : 'was switched off'}.`,
      details: [['Possible from', f.time(d.effectiveAt)]],
      advice: EN_CONTACT_US,
    }),
    travel_declared: (d) => ({
      title: 'Travel abroad was declared',
      lead: 'A trip abroad was declared for your account. Sign-ins from that country or region in that period are treated as expected.',
      details: [
        ['Country or region', regionName('en', d.country)],
        ['Period', `${d.from} to ${d.to}`],
      ],
      advice: EN_CONTACT_US,
    }),
    sweep: (d, f) => ({
      title: {
        allowed: 'Automatic transfer (sweep) from your bank account',
        refused: 'An automatic transfer (sweep) was not made',
        needs_bank_approval: 'Your bank must approve an automatic transfer (sweep)',
      }[d.outcome],
      lead: {
        allowed: 'For your order, a transfer from your linked bank account was accepted.',
        refused: 'For your order, a transfer from your linked bank account was refused.',
        needs_bank_approval:
          "The transfer is above the daily limit: approve it at your bank. Open your bank's official app yourself to do so.",
      }[d.outcome],
      details: [
        ['Amount', f.yen(d.amount)],
        ['Bank', f.v(d.bankName)],
        ['Account', f.v(d.accountMasked)],
      ],
      advice: EN_CONTACT_US,
    }),
  },
};

const PACKS: Record<Language, LanguagePack> = { ja, en };

/**
 * Renders one notification. `data` is validated against the kind (stored rows are checked again
 * here, so a row written by an older version cannot slip past). Throws NotifyError ERR_NOTIFY_DATA
 * for bad data, and should our own wording ever look like it holds a URL.
 */
export function renderNotification(
  kind: NotificationKind,
  language: Language,
  data: unknown,
  ctx: RenderContext,
): RenderedMessage {
  const pack = PACKS[language] ?? ja;
  const parsed = parseNotificationData(kind, data);
  const fmt: Fmt = {
    v: (value) => (value === undefined ? undefined : neutralize(value)),
    time: (iso) => (iso === undefined ? undefined : pack.time(new Date(iso))),
    yen: (n) => (n === undefined ? undefined : pack.yen(n)),
  };
  // The catalogue is keyed by kind, so the cast only restates what the index already guarantees.
  const build = pack.catalogue[kind] as (d: unknown, f: Fmt) => Parts;
  const message = compose(pack, build(parsed, fmt), ctx);
  if (findUrlLike(message.subject) === undefined && findUrlLike(message.text) === undefined) return message;
  // Should a value still slip through, the notice goes out without the values rather than not at
  // all: failing here would let whoever chose a device or app name suppress the customer's notices.
  const hidden = language === 'ja' ? '（表示を省略しました）' : '(not shown)';
  const redacted = compose(
    pack,
    build(parsed, { ...fmt, v: (value) => (value === undefined ? undefined : hidden) }),
    {
      ...ctx,
      customerName: hidden,
      institutionName: hidden,
    },
  );
  if (findUrlLike(redacted.subject) === undefined && findUrlLike(redacted.text) === undefined)
    return redacted;
  throw new NotifyError('ERR_NOTIFY_DATA', `notification ${kind} (${language}) would contain link-like text`);
}

function compose(pack: LanguagePack, parts: Parts, ctx: RenderContext): RenderedMessage {
  const institution = neutralize(ctx.institutionName, 60);
  const details = [[pack.when, pack.time(ctx.occurredAt)] as const, ...(parts.details ?? [])]
    .filter((d): d is readonly [string, string] => d[1] !== undefined)
    .map(([label, value]) => pack.detail(label, value));
  const text = [
    pack.greeting(neutralize(ctx.customerName), institution),
    '',
    parts.lead,
    '',
    ...details,
    ...(parts.advice ? ['', parts.advice] : []),
    '',
    pack.footer(institution),
    '',
  ].join('\n');
  return { subject: pack.subject(institution, parts.title), text };
}
