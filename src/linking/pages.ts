/** The bank-link pages under /account/links (ja + en). No secrets and no tokens in any of them. */
import type { BankConfig } from '../federation/index.ts';
import { html, type Lang, layout } from '../web/index.ts';
import type { BankLink, LinkOutcome } from './bankLinks.ts';

const M = {
  ja: {
    title: '銀行口座の連携（スイープ入金）',
    lead: '証券口座への入金に使う銀行口座を連携します。銀行でのログイン後、銀行側の認証の強さとご名義を確認し、当社の基準に沿って連携します。',
    bank: '銀行',
    account: '入金先の証券口座',
    start: '銀行で認証して連携する',
    none: '連携している銀行口座はありません。',
    bankAccount: '銀行口座',
    holder: '名義',
    strength: '銀行側の認証',
    cap: '1日の上限',
    status: '状態',
    remove: '連携を解除する',
    back: 'セキュリティ設定に戻る',
    links: '銀行口座の連携に戻る',
    strengths: {
      phishing_resistant: 'パスキー等',
      otp: 'ワンタイムパスワード',
      password: 'パスワード',
      unknown: '不明',
    },
    statuses: { active: '有効', suspended: '停止中', removed: '解除済み' },
    linked: '銀行口座を連携しました。',
    exists: 'この銀行口座はすでに連携されています。',
    refused: '銀行口座を連携できませんでした。',
    stepUp:
      '連携には、パスキーでのログインし直しが必要です。もう一度パスキーでログインしてから、連携をやり直してください。',
    signIn: 'パスキーでログインする',
    yen: (n: number) => `${n.toLocaleString('ja-JP')}円`,
  },
  en: {
    title: 'Bank account links (sweeps)',
    lead: 'Link the bank account that pays into your brokerage account. After you sign in at the bank, we check how strongly the bank authenticates transfers and the account holder name, and link under our rules.',
    bank: 'Bank',
    account: 'Brokerage account to pay into',
    start: 'Sign in at the bank and link',
    none: 'No bank account is linked.',
    bankAccount: 'Bank account',
    holder: 'Holder',
    strength: 'Bank authentication',
    cap: 'Daily limit',
    status: 'Status',
    remove: 'Remove the link',
    back: 'Back to security settings',
    links: 'Back to bank account links',
    strengths: {
      phishing_resistant: 'Passkey or similar',
      otp: 'One-time code',
      password: 'Password',
      unknown: 'Unknown',
    },
    statuses: { active: 'Active', suspended: 'Suspended', removed: 'Removed' },
    linked: 'The bank account is linked.',
    exists: 'This bank account is already linked.',
    refused: 'The bank account could not be linked.',
    stepUp:
      'Linking needs a fresh passkey sign-in. Sign in with your passkey again, then start the link again.',
    signIn: 'Sign in with a passkey',
    yen: (n: number) => `JPY ${n.toLocaleString('en-US')}`,
  },
} as const;

export interface LinksPageInput {
  lang: Lang;
  csrf: string;
  banks: readonly BankConfig[];
  accounts: Array<{ id: string; nickname: string; masked: string }>;
  links: BankLink[];
}

export function linksPage(p: LinksPageInput): string {
  const t = M[p.lang];
  const live = p.links.filter((l) => l.status !== 'removed');
  return layout(
    p.lang,
    t.title,
    html`<p>${t.lead}</p>
<section id="links">
${
  live.length
    ? html`<table><thead><tr><th>${t.bank}</th><th>${t.bankAccount}</th><th>${t.holder}</th><th>${t.strength}</th><th>${t.cap}</th><th>${t.status}</th><th></th></tr></thead><tbody>
${live.map(
  (
    l,
  ) => html`<tr data-link="${l.id}" data-status="${l.status}"><td>${l.bankName}</td><td>${l.bankAccountMasked ?? '-'}</td><td>${l.holderName}</td>
<td>${t.strengths[l.bankStrength as keyof typeof t.strengths] ?? l.bankStrength}</td><td>${t.yen(l.capAmount)}</td><td>${t.statuses[l.status]}</td>
<td><form method="post" action="/account/links/remove"><input type="hidden" name="csrf" value="${p.csrf}"><input type="hidden" name="linkId" value="${l.id}"><button type="submit">${t.remove}</button></form></td></tr>`,
)}
</tbody></table>`
    : html`<p id="no-links">${t.none}</p>`
}
</section>
${
  p.banks.length && p.accounts.length
    ? html`<form method="post" action="/account/links/start" id="link-start">
<input type="hidden" name="csrf" value="${p.csrf}">
<label>${t.bank}<select name="bankId">${p.banks.map((b) => html`<option value="${b.id}">${b.name[p.lang]}</option>`)}</select></label>
<label>${t.account}<select name="accountId">${p.accounts.map((a) => html`<option value="${a.id}">${a.nickname} ${a.masked}</option>`)}</select></label>
<button type="submit">${t.start}</button>
</form>`
    : ''
}
<p><a href="/account">${t.back}</a></p>`,
  );
}

/** What the callback shows: linked (with the policy's notice), refused (with reasons), or step-up. */
export function linkResultPage(p: { lang: Lang; outcome: LinkOutcome }): string {
  const t = M[p.lang];
  const o = p.outcome;
  const body =
    o.kind === 'linked'
      ? html`<p id="result" data-result="linked">${t.linked}</p>
<p>${o.link.bankName} ${o.link.bankAccountMasked ?? ''} · ${t.cap}: ${t.yen(o.link.capAmount)}</p>
${o.notice ? html`<p class="notice" id="policy-notice">${o.notice[p.lang]}</p>` : ''}`
      : o.kind === 'exists'
        ? html`<p id="result" data-result="exists">${t.exists}</p>`
        : o.kind === 'refused'
          ? html`<p id="result" data-result="refused" data-reason="${o.reason}">${t.refused}</p>
<ul id="reasons">${o.reasons.map((r) => html`<li>${r[p.lang]}</li>`)}</ul>`
          : html`<p id="result" data-result="step_up">${t.stepUp}</p>
<ul id="reasons">${o.reasons.map((r) => html`<li>${r[p.lang]}</li>`)}</ul>
<p><a href="/account">${t.signIn}</a></p>`;
  return layout(p.lang, t.title, html`${body}<p><a href="/account/links">${t.links}</a></p>`);
}
