import { html, type SafeHtml } from './html.ts';
import { errorText, type Lang, messages } from './i18n.ts';

export function layout(
  lang: Lang,
  title: string,
  body: SafeHtml,
  options: { scripts?: string[]; switchHref?: string; wide?: boolean } = {},
): string {
  const t = messages(lang);
  const other: Lang = lang === 'ja' ? 'en' : 'ja';
  const switchHref = options.switchHref ?? `?lang=${other}`;
  return `<!doctype html>${html`<html lang="${lang}">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${title} · ${t.appName}</title>
<link rel="stylesheet" href="/assets/style.css">
</head>
<body>
<header><span class="brand">${t.appName}</span> <a class="lang" href="${switchHref}" hreflang="${other}">${t.switchLanguage}</a></header>
<main${options.wide ? html` class="wide"` : ''}>
<h1>${title}</h1>
${body}
</main>
${(options.scripts ?? []).map((s) => html`<script src="${s}"></script>`)}
</body>
</html>`}`;
}

const PASSKEY_SCRIPTS = ['/assets/simplewebauthn-browser.js', '/assets/passkey.js'];

export interface LoginPageInput {
  lang: Lang;
  uid: string;
  clientName: string;
  /** Shown after a passkey was just registered. */
  enrolled?: boolean;
  /** Shown after the account was unlocked by identity proofing. */
  unlocked?: boolean;
  /** Offer the exempted customers' alternative MFA (not when the client requires phishing resistance). */
  alternative?: boolean;
}

export function loginPage(p: LoginPageInput): string {
  const t = messages(p.lang);
  return layout(
    p.lang,
    t.loginTitle,
    html`${p.enrolled ? html`<p class="notice" role="status">${t.enrolled}</p>` : ''}
${p.unlocked ? html`<p class="notice" role="status" id="unlocked">${t.unlocked}</p>` : ''}
<p>${t.loginFor(p.clientName)}</p>
<p>${t.loginLead}</p>
<p id="error" class="error" role="alert" hidden></p>
<p id="unlock" hidden><a id="unlock-link" href="/interaction/${p.uid}/proofing?purpose=unlock">${t.unlockLink}</a></p>
<button type="button" id="passkey-login" data-uid="${p.uid}" data-working="${t.working}" data-unsupported="${t.passkeyUnsupported}">${t.loginButton}</button>
<p><a id="enroll-link" href="/interaction/${p.uid}/enroll">${t.firstTime}</a></p>
<p><a id="recovery-link" href="/interaction/${p.uid}/proofing?purpose=recovery">${t.lostPasskeys}</a></p>
${p.alternative === false ? '' : html`<p><a id="alternative-link" href="/interaction/${p.uid}/alternative">${t.alt.link}</a></p>`}
<form method="post" action="/interaction/${p.uid}/abort"><button type="submit" class="secondary" id="cancel">${t.cancel}</button></form>`,
    { scripts: PASSKEY_SCRIPTS },
  );
}

/** `proofing`: the id of a verified identity-proofing flow; the code fields are then not asked. */
export function enrollPage(p: { lang: Lang; uid: string; proofing?: string | undefined }): string {
  const t = messages(p.lang);
  const ticketFields = p.proofing
    ? html`<input type="hidden" name="proofing" value="${p.proofing}">`
    : html`<label>${t.customerNumber}<input name="customerNumber" id="customerNumber" required autocomplete="username" inputmode="numeric" maxlength="32"></label>
<label>${t.ticket}<input name="ticket" id="ticket" required autocomplete="one-time-code" maxlength="64" spellcheck="false"></label>
<label class="check"><input type="checkbox" name="purpose" value="recovery" id="recovery"> ${t.recoveryCheckbox}</label>`;
  return layout(
    p.lang,
    t.enrollTitle,
    html`<p>${p.proofing ? t.proofedLead : t.enrollLead}</p>
<p id="error" class="error" role="alert" hidden></p>
<form id="enroll-form" data-uid="${p.uid}" data-working="${t.working}" data-unsupported="${t.passkeyUnsupported}">
${ticketFields}
<label>${t.passkeyName}<input name="passkeyName" id="passkeyName" maxlength="64"></label>
<button type="submit" id="enroll-button">${t.enrollButton}</button>
${p.proofing ? '' : html`<button type="button" id="totp-setup" class="secondary">${t.alt.setupButton}</button>`}
</form>
<section id="totp-setup-step" hidden>
<p>${t.alt.setupLead}</p>
<p><code id="totp-secret"></code></p>
<label>${t.alt.code}<input id="totp-confirm-code" inputmode="numeric" autocomplete="one-time-code" maxlength="6"></label>
<button type="button" id="totp-confirm" data-done="${t.alt.done}">${t.alt.confirm}</button>
</section>
${p.proofing ? '' : html`<p><a id="proofing-link" href="/interaction/${p.uid}/proofing">${t.otherProofing}</a></p>`}
<p><a href="/interaction/${p.uid}">${t.backToLogin}</a></p>`,
    { scripts: PASSKEY_SCRIPTS },
  );
}

export interface ConsentAccount {
  id: string;
  nickname: string;
  institutionName: string;
  taxCategory: string | null;
  maskedNumber: string;
}

// Built once: constructing an Intl formatter costs far more than formatting with it.
const DATE_TIME: Record<Lang, Intl.DateTimeFormat> = {
  ja: new Intl.DateTimeFormat('ja-JP', { dateStyle: 'medium', timeStyle: 'short', timeZone: 'Asia/Tokyo' }),
  en: new Intl.DateTimeFormat('en-GB', { dateStyle: 'medium', timeStyle: 'short', timeZone: 'Asia/Tokyo' }),
};

/** A date and time in Japan, in the page's language. */
export function when(d: Date | null, lang: Lang): string {
  return d ? DATE_TIME[lang].format(d) : '';
}

export interface ConsentPageInput {
  lang: Lang;
  uid: string;
  clientName: string;
  scopes: string[];
  accounts: ConsentAccount[];
  /** What the customer is asked to share (authorization_details, or the `accounts` scope's defaults). */
  data?: { dataTypes: string[]; lookbackDays: number | null; expiresAt: Date } | undefined;
  /** Accounts pre-ticked (the client's account_hints); undefined = all ticked. */
  hinted?: string[] | undefined;
  /** A Grant Management merge or replace of an earlier consent. */
  action?: 'merge' | 'replace' | undefined;
}

export function consentPage(p: ConsentPageInput): string {
  const t = messages(p.lang);
  const wantsAccounts = p.scopes.includes('accounts') || p.data !== undefined;
  const hinted = p.hinted?.length ? new Set(p.hinted) : undefined;
  const ticked = (id: string) => !hinted || hinted.has(id);
  return layout(
    p.lang,
    t.consentTitle,
    html`<p>${t.consentLead(p.clientName)}</p>
${p.action ? html`<p class="notice" id="grant-action" data-action="${p.action}">${t.data[p.action]}</p>` : ''}
<form method="post" action="/interaction/${p.uid}/consent" id="consent-form">
<h2>${t.scopesHeading}</h2>
<ul class="scopes">${p.scopes.map((s) => html`<li data-scope="${s}">${t.scope[s] ?? s}</li>`)}</ul>
${
  p.data
    ? html`<h2>${t.data.heading}</h2>
<ul class="data-types" id="data-types">${p.data.dataTypes.map((d) => html`<li data-type="${d}">${t.data.type[d] ?? d}</li>`)}</ul>
${p.data.lookbackDays !== null ? html`<p id="lookback" data-days="${String(p.data.lookbackDays)}">${t.data.lookback(p.data.lookbackDays)}</p>` : ''}
<p id="expiry" data-expires="${p.data.expiresAt.toISOString()}">${t.data.expires(when(p.data.expiresAt, p.lang))}</p>`
    : ''
}
${
  wantsAccounts
    ? html`<h2>${t.accountsHeading}</h2>
${hinted ? html`<p class="note" id="hinted">${t.data.hinted}</p>` : ''}
${
  p.accounts.length
    ? html`<ul class="accounts">${p.accounts.map((a) =>
        ticked(a.id)
          ? html`<li><label><input type="checkbox" name="account" value="${a.id}" checked> ${a.nickname} — ${a.institutionName} ${a.taxCategory ? t.taxCategory[a.taxCategory] : ''} <span class="masked">${a.maskedNumber}</span></label></li>`
          : html`<li><label><input type="checkbox" name="account" value="${a.id}"> ${a.nickname} — ${a.institutionName} ${a.taxCategory ? t.taxCategory[a.taxCategory] : ''} <span class="masked">${a.maskedNumber}</span></label></li>`,
      )}</ul>`
    : html`<p>${t.noAccounts}</p>`
}`
    : ''
}
<p class="note">${t.consentNote}</p>
<button type="submit" name="decision" value="approve" id="approve">${t.approve}</button>
<button type="submit" name="decision" value="deny" id="deny" class="secondary">${t.deny}</button>
</form>`,
  );
}

export function errorPage(p: { lang: Lang; error: string; description?: string | undefined }): string {
  const t = messages(p.lang);
  return layout(
    p.lang,
    t.errorTitle,
    html`<p>${t.errorLead}</p><p class="error" id="error-code">${p.error}</p>${p.description ? html`<p id="error-description">${errorText(p.description, p.lang)}</p>` : ''}`,
  );
}

export function alternativeLoginPage(p: { lang: Lang; uid: string }): string {
  const t = messages(p.lang);
  return layout(
    p.lang,
    t.alt.title,
    html`<p>${t.alt.lead}</p>
<p id="error" class="error" role="alert" hidden></p>
<form id="alternative-form" data-uid="${p.uid}" data-working="${t.working}">
<label>${t.customerNumber}<input name="customerNumber" id="customerNumber" required autocomplete="username" inputmode="numeric" maxlength="32"></label>
<label>${t.alt.code}<input name="code" id="code" required autocomplete="one-time-code" inputmode="numeric" maxlength="6"></label>
<button type="submit" id="alternative-button">${t.alt.button}</button>
</form>
<p><a href="/interaction/${p.uid}">${t.backToLogin}</a></p>`,
    { scripts: PASSKEY_SCRIPTS },
  );
}

export function noticesPage(p: {
  lang: Lang;
  uid: string;
  notices: Array<{ id: string; title: string; body: string }>;
}): string {
  const t = messages(p.lang);
  return layout(
    p.lang,
    t.notices.title,
    html`<p>${t.notices.lead}</p>
<form method="post" action="/interaction/${p.uid}/notices" id="notices-form">
${p.notices.map(
  (n) =>
    html`<section class="notice-item" data-notice="${n.id}"><h2>${n.title}</h2><p>${n.body}</p><input type="hidden" name="notice" value="${n.id}"></section>`,
)}
<label><input type="checkbox" name="confirmed" value="yes" required id="notices-confirmed"> ${t.notices.confirm}</label>
<button type="submit" id="notices-continue">${t.notices.continue}</button>
</form>`,
  );
}
