/** The customer's security page (passkeys, sessions, history) and its sign-in page. */
import type { PasskeySummary } from '../authn/index.ts';
import type { ConsentView } from '../consent/index.ts';
import type { NotificationSettings } from '../notify/index.ts';
import { html } from './html.ts';
import { type Lang, messages } from './i18n.ts';
import { type LimitsView, limitsSection } from './limitsSection.ts';
import { layout, when } from './pages.ts';

const PASSKEY_SCRIPTS = ['/assets/simplewebauthn-browser.js', '/assets/passkey.js'];

export function accountLoginPage(p: { lang: Lang; notice?: string | undefined }): string {
  const t = messages(p.lang);
  return layout(
    p.lang,
    t.account.loginTitle,
    html`${p.notice ? html`<p class="notice" role="status">${p.notice}</p>` : ''}
<p>${t.account.loginLead}</p>
<p id="error" class="error" role="alert" hidden></p>
<button type="button" id="passkey-login" data-endpoint="/account/login" data-working="${t.working}" data-unsupported="${t.passkeyUnsupported}">${t.loginButton}</button>`,
    { scripts: PASSKEY_SCRIPTS },
  );
}

export interface AccountSession {
  uid: string;
  loginAt: Date | null;
  amr: string[];
  current: boolean;
}

export interface HistoryEntry {
  at: Date;
  type: string;
  outcome: string;
  ip: string | null;
  port: number | null;
  userAgent: string | null;
  /** Coarse location: country and network (never an address). */
  location?: string | undefined;
}

export interface SecurityPageInput {
  lang: Lang;
  customerName: string;
  csrf: string;
  consents: ConsentView[];
  notifications: NotificationSettings;
  passkeys: PasskeySummary[];
  sessions: AccountSession[];
  history: HistoryEntry[];
  notice?: string | undefined;
  /** Limits and the withdrawal account (src/linking). */
  limits?: LimitsView | undefined;
}

export function securityPage(p: SecurityPageInput): string {
  const t = messages(p.lang);
  const a = t.account;
  const csrf = html`<input type="hidden" name="csrf" value="${p.csrf}">`;
  const usable = p.passkeys.filter((k) => !k.disabledAt).length;
  return layout(
    p.lang,
    a.title,
    html`<p>${a.signedInAs(p.customerName)}</p>
${p.notice ? html`<p class="notice" role="status">${p.notice}</p>` : ''}
<p id="error" class="error" role="alert" hidden></p>
<h2>${a.consents}</h2>
${
  p.consents.length
    ? html`<table id="consents"><thead><tr><th>${a.app}</th><th>${a.accounts}</th><th>${a.allowed}</th><th>${a.since}</th><th>${a.used}</th><th>${a.until}</th><th></th></tr></thead><tbody>
${p.consents.map(
  (c) => html`<tr data-grant="${c.grantId}"><td>${c.clientName}</td>
<td>${c.accounts.map((acc) => html`${acc.nickname} <span class="masked">${acc.maskedNumber}</span><br>`)}</td>
<td class="data">${c.dataTypes.map((d) => html`<span data-type="${d}">${t.data.type[d] ?? d}</span><br>`)}${c.lookbackDays !== null ? html`<span class="lookback">${t.data.lookback(c.lookbackDays)}</span><br>` : ''}${c.scopes.filter((s) => s !== 'openid' && s !== 'accounts').map((s) => html`${t.scope[s] ?? s}<br>`)}</td>
<td>${when(c.createdAt, p.lang)}</td><td class="last-used">${c.lastUsedAt ? when(c.lastUsedAt, p.lang) : a.never}</td><td>${when(c.expiresAt, p.lang)}</td>
<td><form method="post" action="/account/consents/revoke">${csrf}<input type="hidden" name="grantId" value="${c.grantId}"><button type="submit" class="secondary revoke">${a.revoke}</button></form></td></tr>`,
)}
</tbody></table>`
    : html`<p id="no-consents">${a.noConsents}</p>`
}
<p><a href="/account/links" id="bank-links">${a.bankLinks}</a></p>
<h2>${a.passkeys}</h2>
<table id="passkeys"><thead><tr><th>${a.name}</th><th>${a.kind}</th><th>${a.created}</th><th>${a.lastUsed}</th><th></th></tr></thead><tbody>
${p.passkeys.map(
  (k) => html`<tr data-credential="${k.credentialId}">
<td><form method="post" action="/account/passkeys/rename" class="inline">${csrf}<input type="hidden" name="credentialId" value="${k.credentialId}"><input name="name" value="${k.name}" maxlength="64" aria-label="${a.name}"><button type="submit" class="secondary">${a.rename}</button></form></td>
<td>${k.disabledAt ? html`<strong class="error">${a.disabled}</strong>` : k.synced ? a.synced : a.deviceBound}${k.model ? html`<br><small>${k.model}</small>` : ''}</td>
<td>${when(k.createdAt, p.lang)}</td>
<td>${k.lastUsedAt ? when(k.lastUsedAt, p.lang) : a.never}</td>
<td>${usable > 1 || k.disabledAt ? html`<form method="post" action="/account/passkeys/remove">${csrf}<input type="hidden" name="credentialId" value="${k.credentialId}"><button type="submit" class="secondary remove">${a.remove}</button></form>` : ''}</td>
</tr>`,
)}
</tbody></table>
<button type="button" id="add-passkey" data-csrf="${p.csrf}" data-working="${t.working}" data-unsupported="${t.passkeyUnsupported}" data-needs-recent="${a.addNeedsRecent}">${a.addPasskey}</button>
<h2>${a.notifications}</h2>
<p>${a.notificationsLead}</p>
<h3>${a.contacts}</h3>
<table id="contacts"><tbody>
${p.notifications.channels.map(
  (c) => html`<tr data-channel="${c.id}"><td>${c.masked}</td>
<td><form method="post" action="/account/contacts/add" class="inline">${csrf}<input type="hidden" name="replaces" value="${c.id}"><input name="address" type="email" maxlength="254" aria-label="${a.address}" required><button type="submit" class="secondary">${a.change}</button></form></td>
<td>${p.notifications.channels.length > 1 ? html`<form method="post" action="/account/contacts/remove">${csrf}<input type="hidden" name="channelId" value="${c.id}"><button type="submit" class="secondary">${a.remove}</button></form>` : ''}</td></tr>`,
)}
</tbody></table>
<form method="post" action="/account/contacts/add" class="inline" id="add-contact">${csrf}<input name="address" type="email" maxlength="254" aria-label="${a.address}" required><button type="submit" class="secondary">${a.addContact}</button></form>
<form method="post" action="/account/notifications" id="notification-settings">${csrf}
<label>${a.language} <select name="language"><option value="ja"${p.notifications.language === 'ja' ? html` selected` : ''}>日本語</option><option value="en"${p.notifications.language === 'en' ? html` selected` : ''}>English</option></select></label>
<ul class="kinds">${p.notifications.kinds.map(
      (k) =>
        html`<li><label><input type="checkbox" name="kind" value="${k.kind}"${k.enabled ? html` checked` : ''}${k.critical ? html` disabled` : ''}> ${a.kinds[k.kind] ?? k.kind}${k.critical ? html` <small>${a.always}</small>` : ''}</label></li>`,
    )}</ul>
<button type="submit" class="secondary">${a.save}</button>
</form>
${p.limits ? limitsSection({ lang: p.lang, csrf, view: p.limits }) : ''}
<h2>${a.sessions}</h2>
<table id="sessions"><thead><tr><th>${a.signedInAt}</th><th>${a.method}</th><th></th></tr></thead><tbody>
${p.sessions.map(
  (
    s,
  ) => html`<tr data-session="${s.uid}"><td>${when(s.loginAt, p.lang)}${s.current ? html` <strong>(${a.current})</strong>` : ''}</td><td>${s.amr.join(', ')}</td>
<td>${s.current ? '' : html`<form method="post" action="/account/sessions/end">${csrf}<input type="hidden" name="uid" value="${s.uid}"><button type="submit" class="secondary">${a.endSession}</button></form>`}</td></tr>`,
)}
</tbody></table>
<form method="post" action="/account/sessions/end-all">${csrf}<button type="submit" id="end-all">${a.endAll}</button></form>
<p class="note">${a.endAllNote}</p>
<h2>${a.travel}</h2>
<p>${a.travelLead}</p>
<form method="post" action="/account/travel" id="travel">${csrf}<label>${a.travelCountry} <input name="country" maxlength="2" pattern="[A-Za-z]{2}" required></label>
<label>${a.travelFrom} <input name="from" type="date" required></label> <label>${a.travelTo} <input name="to" type="date" required></label>
<button type="submit" class="secondary">${a.travelDeclare}</button></form>
<h2>${a.history}</h2>
<table id="history"><thead><tr><th>${a.when}</th><th>${a.event}</th><th>${a.result}</th><th>${a.source}</th></tr></thead><tbody>
${p.history.map(
  (h) =>
    html`<tr><td>${when(h.at, p.lang)}</td><td>${a.events[h.type] ?? h.type}</td><td>${h.outcome === 'success' ? a.success : h.outcome === 'failure' ? a.failure : a.info}</td><td>${h.ip ?? ''}${h.port ? `:${h.port}` : ''}${h.location ? html` <span class="location">${h.location}</span>` : ''}<br><small>${(h.userAgent ?? '').slice(0, 80)}</small></td></tr>`,
)}
</tbody></table>
<form method="post" action="/account/logout">${csrf}<button type="submit" class="secondary" id="sign-out">${a.signOut}</button></form>`,
    { scripts: PASSKEY_SCRIPTS, wide: true },
  );
}
