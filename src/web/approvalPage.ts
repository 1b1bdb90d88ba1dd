/**
 * The page where a customer approves one withdrawal or withdrawal-account change with a passkey.
 * It shows exactly what the passkey will commit to: a new withdrawal account in full, so the customer
 * can check every digit of what they register; the withdrawal's and source accounts masked.
 */
import { html } from './html.ts';
import type { Lang } from './i18n.ts';
import { layout } from './pages.ts';

export interface ApprovalView {
  kind: 'withdrawal' | 'withdrawal_account_change';
  clientName: string;
  /** Whole yen (withdrawals). */
  amount?: number;
  sourceAccount: string;
  bankName: string;
  bankCode: string;
  branchCode: string;
  accountType: 'ordinary' | 'current' | 'savings';
  /** A new withdrawal account's number in full; a withdrawal's destination masked (`****223`). */
  accountShown: string;
  holderName: string;
  /**
   * The customer is exempted from passkeys and has an authenticator app: a withdrawal can be
   * approved with a one-time code (lower cap); a new withdrawal account cannot.
   */
  oneTimeCode?: boolean;
}

const TEXT = {
  ja: {
    title: { withdrawal: '出金の承認', withdrawal_account_change: '出金先口座の変更の承認' },
    lead: (c: string) => `「${c}」から、次の内容の承認を求められています。内容をよく確認してください。`,
    amount: '金額',
    from: '出金元の口座',
    to: { withdrawal: '出金先', withdrawal_account_change: '新しい出金先口座' },
    holder: '口座名義',
    types: { ordinary: '普通', current: '当座', savings: '貯蓄' },
    caution:
      'お心当たりのない依頼は承認しないでください。承認すると、この内容だけに有効な署名がパスキーで作成されます。',
    approve: 'パスキーで承認する',
    reject: '承認しない',
    working: '確認しています…',
    unsupported: 'このブラウザはパスキーに対応していません。',
    codeLead:
      'パスキーをお使いでない場合は、認証アプリのワンタイムパスワードで承認できます。ワンタイムパスワードはフィッシングの恐れがあるため、この方法での出金は1日10万円までです。',
    code: 'ワンタイムパスワード（6桁）',
    approveCode: 'ワンタイムパスワードで承認する',
    noCode:
      '出金先口座の変更は、ワンタイムパスワードでは承認できません。お取引の証券会社の書面でのお手続きをご利用ください。',
  },
  en: {
    title: {
      withdrawal: 'Approve a withdrawal',
      withdrawal_account_change: 'Approve a new withdrawal account',
    },
    lead: (c: string) => `"${c}" asks you to approve the following. Check every detail.`,
    amount: 'Amount',
    from: 'From account',
    to: { withdrawal: 'To', withdrawal_account_change: 'New withdrawal account' },
    holder: 'Account holder',
    types: { ordinary: 'ordinary', current: 'current', savings: 'savings' },
    caution:
      'Do not approve a request you did not make. Approving makes your passkey sign exactly these details and nothing else.',
    approve: 'Approve with passkey',
    reject: 'Do not approve',
    working: 'Checking…',
    unsupported: 'This browser does not support passkeys.',
    codeLead:
      'Without a passkey you can approve with a one-time code from your authenticator app. One-time codes can be phished, so withdrawals approved this way are limited to 100,000 yen a day.',
    code: 'One-time code (6 digits)',
    approveCode: 'Approve with one-time code',
    noCode:
      'A new withdrawal account cannot be approved with a one-time code. Please use your brokerage’s written procedure.',
  },
} as const;

export function approvalPage(p: { lang: Lang; uid: string; view: ApprovalView }): string {
  const t = TEXT[p.lang];
  const v = p.view;
  const yen = (n: number) =>
    p.lang === 'ja' ? `${n.toLocaleString('ja-JP')}円` : `¥${n.toLocaleString('en-US')}`;
  return layout(
    p.lang,
    t.title[v.kind],
    html`<p>${t.lead(v.clientName)}</p>
<dl id="approval-details">
${v.amount !== undefined ? html`<dt>${t.amount}</dt><dd id="approval-amount">${yen(v.amount)}</dd>` : ''}
<dt>${t.from}</dt><dd>${v.sourceAccount}</dd>
<dt>${t.to[v.kind]}</dt><dd id="approval-destination">${v.bankName} (${v.bankCode}) ${v.branchCode} ${t.types[v.accountType]} ${v.accountShown}</dd>
<dt>${t.holder}</dt><dd id="approval-holder">${v.holderName}</dd>
</dl>
<p class="notice">${t.caution}</p>
<p id="error" class="error" role="alert" hidden></p>
<button type="button" id="passkey-login" data-endpoint="/interaction/${p.uid}/approval" data-working="${t.working}" data-unsupported="${t.unsupported}">${t.approve}</button>
${
  v.oneTimeCode
    ? v.kind === 'withdrawal'
      ? html`<section id="approval-code"><p class="notice">${t.codeLead}</p>
<form id="approval-totp-form" data-uid="${p.uid}" data-working="${t.working}">
<label>${t.code}<input name="code" id="approval-code-input" required autocomplete="one-time-code" inputmode="numeric" maxlength="6"></label>
<button type="submit" id="approval-totp-button">${t.approveCode}</button>
</form></section>`
      : html`<p class="notice" id="approval-no-code">${t.noCode}</p>`
    : ''
}
<form method="post" action="/interaction/${p.uid}/abort"><button type="submit" class="secondary" id="cancel">${t.reject}</button></form>`,
    { scripts: ['/assets/simplewebauthn-browser.js', '/assets/passkey.js'] },
  );
}
