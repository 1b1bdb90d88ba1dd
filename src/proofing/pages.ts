/** The identity-proofing page (Japanese and English): which ways to prove who you are. */
import { html, type Lang, messages } from '../web/index.ts';
import { layout } from '../web/pages.ts';
import type { ProofingPurpose } from './method.ts';

const TEXT = {
  ja: {
    title: {
      enrollment: '本人確認',
      recovery: '本人確認によるアカウントの復旧',
      unlock: '本人確認によるロック解除',
    },
    lead: {
      enrollment: 'パスキーを登録する前に、次のいずれかの方法で本人確認を行います。',
      recovery:
        'パスキーをすべて失くした場合は、本人確認のうえ新しいパスキーを登録します。これまでのパスキーとログイン中のセッションはすべて無効になり、登録済みの連絡先すべてにお知らせします。',
      unlock: 'ロックされたアカウントは、本人確認を行うと解除されます。',
    },
    ticketHeading: '登録コード（郵送でお届けしたもの）',
    ticketLink: '登録コードで手続きする',
    ekycHeading: 'オンライン本人確認（eKYC）',
    ekycLead: '本人確認サービスで確認された氏名・生年月日を、当社に登録されたものと照合します。',
    ekycButton: '本人確認サービスへ進む',
    jpkiHeading: 'マイナンバーカードの署名用電子証明書',
    jpkiLead: 'カード読み取りアプリで、当社が表示するデータに署名してください。',
    jpkiStart: '署名するデータを表示',
    jpkiSignLead:
      '次のデータをカード読み取りアプリに貼り付け、署名用電子証明書（6〜16桁の暗証番号）で署名してください。アプリが出力した電子証明書と署名を下に貼り付けます。',
    jpkiCertificate: '署名用電子証明書（PEM）',
    jpkiChain: '中間証明書（アプリが出力した場合のみ）',
    jpkiSignature: '署名',
    jpkiVerify: '署名を送信して本人確認',
    jpkiExpires: (at: string) => `このデータの有効期限：${at}`,
  },
  en: {
    title: {
      enrollment: 'Confirm your identity',
      recovery: 'Recover your account by confirming your identity',
      unlock: 'Unlock your account by confirming your identity',
    },
    lead: {
      enrollment: 'Before you register a passkey, confirm your identity in one of these ways.',
      recovery:
        'If you lost all your passkeys, confirm your identity and register a new one. Every earlier passkey and every signed-in session will stop working, and we will tell you on every registered contact.',
      unlock: 'A locked account is unlocked once you have confirmed your identity.',
    },
    ticketHeading: 'Enrollment code (sent to you by post)',
    ticketLink: 'Use an enrollment code',
    ekycHeading: 'Online identity verification (eKYC)',
    ekycLead:
      'The name and date of birth the verification service confirmed are compared with those we hold.',
    ekycButton: 'Continue to the verification service',
    jpkiHeading: 'My Number card signature certificate',
    jpkiLead: 'Use the card reader app to sign the data we show.',
    jpkiStart: 'Show the data to sign',
    jpkiSignLead:
      'Paste this data into the card reader app and sign it with your signature certificate (6 to 16 character PIN). Then paste the certificate and the signature the app gives you below.',
    jpkiCertificate: 'Signature certificate (PEM)',
    jpkiChain: 'Intermediate certificates (only if the app gave any)',
    jpkiSignature: 'Signature',
    jpkiVerify: 'Send the signature and confirm my identity',
    jpkiExpires: (at: string) => `This data is valid until ${at}`,
  },
} as const;

export function proofingPage(p: {
  lang: Lang;
  uid: string;
  purpose: ProofingPurpose;
  ekyc: boolean;
  jpki: boolean;
}): string {
  const t = messages(p.lang);
  const x = TEXT[p.lang];
  const enrollHref = `/interaction/${p.uid}/enroll${p.purpose === 'recovery' ? '?purpose=recovery' : ''}`;
  return layout(
    p.lang,
    x.title[p.purpose],
    html`<p>${x.lead[p.purpose]}</p>
<p id="error" class="error" role="alert" hidden></p>
${p.purpose === 'unlock' ? '' : html`<h2>${x.ticketHeading}</h2><p><a id="ticket-link" href="${enrollHref}">${x.ticketLink}</a></p>`}
${
  p.ekyc
    ? html`<h2>${x.ekycHeading}</h2><p>${x.ekycLead}</p>
<form method="post" action="/interaction/${p.uid}/proofing/ekyc" id="ekyc-form">
<input type="hidden" name="purpose" value="${p.purpose}">
<label>${t.customerNumber}<input name="customerNumber" id="ekyc-customerNumber" required autocomplete="username" inputmode="numeric" maxlength="32"></label>
<button type="submit" id="ekyc-button">${x.ekycButton}</button>
</form>`
    : ''
}
${
  p.jpki
    ? html`<h2>${x.jpkiHeading}</h2><p>${x.jpkiLead}</p>
<form id="jpki-form" data-uid="${p.uid}" data-purpose="${p.purpose}" data-working="${t.working}" data-lang="${p.lang}">
<label>${t.customerNumber}<input name="customerNumber" id="jpki-customerNumber" required autocomplete="username" inputmode="numeric" maxlength="32"></label>
<button type="button" id="jpki-start">${x.jpkiStart}</button>
<section id="jpki-sign-step" hidden>
<p>${x.jpkiSignLead}</p>
<p><code id="jpki-challenge"></code></p>
<p class="note" id="jpki-expires" data-template="${x.jpkiExpires('{at}')}"></p>
<label>${x.jpkiCertificate}<textarea name="certificate" id="jpki-certificate" rows="6" spellcheck="false"></textarea></label>
<label>${x.jpkiChain}<textarea name="chain" id="jpki-chain" rows="4" spellcheck="false"></textarea></label>
<label>${x.jpkiSignature}<textarea name="signature" id="jpki-signature" rows="3" spellcheck="false"></textarea></label>
<button type="submit" id="jpki-verify">${x.jpkiVerify}</button>
</section>
</form>`
    : ''
}
<p><a href="/interaction/${p.uid}">${t.backToLogin}</a></p>`,
    { scripts: ['/assets/passkey.js'] },
  );
}
