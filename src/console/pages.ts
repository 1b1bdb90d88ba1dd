/** The operator console's pages (Japanese and English), rendered on the server. */

import type { AuditRow, DailySecurityEvents } from '../audit/index.ts';
import type { PasskeySummary } from '../authn/index.ts';
import type { ConsentView } from '../consent/index.ts';
import type { BankLink } from '../linking/index.ts';
import type { SentNotification } from '../notify/index.ts';
import type { CustomerSession } from '../oidc/adapter.ts';
import type { ProtectiveSettingsReport } from '../report/index.ts';
import type { CustomerRiskView } from '../risk/index.ts';
import type { PeerBreaker } from '../signals/index.ts';
import { html, type Lang, layout, type SafeHtml } from '../web/index.ts';
import type { Operator, Role } from './operators.ts';
import type { ConsoleRequest } from './requests.ts';

const CONSOLE_SCRIPTS = ['/assets/simplewebauthn-browser.js', '/assets/passkey.js'];

const M = {
  ja: {
    title: 'オペレーター・コンソール',
    loginLead: '職員用のパスキーでサインインしてください。',
    login: 'パスキーでサインイン',
    enrollLink: '初めての方（登録票でパスキーを登録）',
    enrollTitle: 'オペレーターのパスキー登録',
    enrollLead: '発行された登録票と名前を入力してください。',
    name: '名前',
    ticket: '登録票',
    enroll: 'パスキーを登録',
    working: '処理中…',
    unsupported: 'このブラウザはパスキーに対応していません。',
    signedInAs: (n: string, r: string) => `${n}（${r}）としてサインイン中`,
    logout: 'サインアウト',
    search: '顧客検索',
    searchLabel: '顧客番号・顧客ID・氏名（カナ）',
    searchButton: '検索',
    noResults: '該当する顧客はいません。',
    number: '顧客番号',
    kanji: '氏名',
    kana: 'カナ',
    status: '状態',
    risk: 'リスク',
    riskEngine: (level: string) => `自社判定 ${level}`,
    peerRisk: '他機関からのリスク',
    peerRiskUntil: (level: string, peer: string, until: string) => `${level}（${peer}、${until} まで）`,
    peerRiskClear: '他機関からのリスクを解除',
    riskEvents: '最近のリスク判定',
    history: 'サインイン履歴',
    sessions: 'セッション',
    endSession: '終了',
    endAll: 'すべてのセッションを終了',
    passkeys: 'パスキー',
    links: '銀行連携',
    consents: '同意（アプリ）',
    withdrawal: '出金先口座と限度額',
    notifications: '送信した通知',
    freeze: '凍結（ログイン・取引承認・出金を停止）',
    freezeReason: '理由',
    takeover: '乗っ取りの疑い',
    freezeButton: '凍結する',
    unfreeze: '凍結解除（本人確認のやり直し後のみ）',
    unfreezeButton: '凍結を解除する',
    frozenSince: (at: string, by: string, reason: string) => `凍結中：${at}、${by}、理由「${reason}」`,
    ticketIssue: '登録票を発行（顧客用）',
    ticketButton: '登録票を発行',
    ticketOnce: 'この登録票は一度だけ表示されます。転送不要郵便などで本人に届けてください。',
    exemption: '多要素認証の例外',
    exemptionGrant: '例外を認める',
    exemptionEnd: '例外を終了',
    ticketReason: '理由（パスキー等を既に持つ顧客の再登録は、別の管理者の承認が必要です）',
    requests: '承認待ちの依頼',
    requestKind: (k: string) => (k === 'exemption_grant' ? '多要素認証の例外' : '登録票（再登録）'),
    requestedBy: (who: string, when: string) => `${who} が ${when} に依頼`,
    approve: '承認して実行',
    reject: '却下',
    noRequests: '承認待ちの依頼はありません。',
    breakers: '連携先のサーキットブレーカー',
    breakersIntro:
      '連携先から短時間に多数の共有シグナルが届くと、その処理（セッション失効、スイープ停止など）を保留します。内容を確認し、実行するか破棄してください。',
    noBreakers: 'サーキットブレーカーが作動した連携先はありません。',
    peer: '連携先',
    breakerState: (open: boolean) => (open ? '作動中（保留）' : '閉（通常どおり）'),
    held: '保留中',
    openedAt: '作動',
    closedBy: '最後に閉じた人',
    release: '保留分を実行して閉じる',
    drop: '保留分を破棄して閉じる',
    customerLink: '顧客',
    admin: '管理',
    operators: 'オペレーター',
    policies: '有効なポリシー',
    report: '管理報告',
    add: '追加',
    disable: '無効化',
    role: '権限',
    when: '日時',
    event: '事象',
    result: '結果',
    source: '接続元',
    none: 'なし',
    back: '検索に戻る',
  },
  en: {
    title: 'Operator console',
    loginLead: 'Sign in with your staff passkey.',
    login: 'Sign in with a passkey',
    enrollLink: 'First time? Register a passkey with your enrollment ticket',
    enrollTitle: 'Operator passkey enrollment',
    enrollLead: 'Enter your name and the enrollment ticket you were given.',
    name: 'Name',
    ticket: 'Enrollment ticket',
    enroll: 'Register a passkey',
    working: 'Working…',
    unsupported: 'This browser does not support passkeys.',
    signedInAs: (n: string, r: string) => `Signed in as ${n} (${r})`,
    logout: 'Sign out',
    search: 'Find a customer',
    searchLabel: 'Customer number, customer id or name (kana)',
    searchButton: 'Search',
    noResults: 'No customer matches.',
    number: 'Customer number',
    kanji: 'Name',
    kana: 'Kana',
    status: 'Status',
    risk: 'Risk',
    riskEngine: (level: string) => `own assessment ${level}`,
    peerRisk: 'Risk raised by peers',
    peerRiskUntil: (level: string, peer: string, until: string) => `${level} (${peer}, until ${until})`,
    peerRiskClear: 'Clear the risk raised by peers',
    riskEvents: 'Recent risk decisions',
    history: 'Sign-in history',
    sessions: 'Sessions',
    endSession: 'End',
    endAll: 'End all sessions',
    passkeys: 'Passkeys',
    links: 'Bank links',
    consents: 'Consents (apps)',
    withdrawal: 'Withdrawal account and limits',
    notifications: 'Notifications sent',
    freeze: 'Freeze (stops sign-in, trading approvals and withdrawals)',
    freezeReason: 'Reason',
    takeover: 'Suspected takeover',
    freezeButton: 'Freeze',
    unfreeze: 'Unfreeze (only after the customer re-proofed their identity)',
    unfreezeButton: 'Unfreeze',
    frozenSince: (at: string, by: string, reason: string) => `Frozen since ${at} by ${by}: “${reason}”`,
    ticketIssue: 'Issue an enrollment ticket (customer)',
    ticketButton: 'Issue a ticket',
    ticketOnce: 'This ticket is shown only once. Deliver it to the customer out of band (registered mail).',
    exemption: 'MFA exemption',
    exemptionGrant: 'Grant an exemption',
    exemptionEnd: 'End the exemption',
    ticketReason:
      'Reason (a new ticket for a customer who already holds a credential needs another admin’s approval)',
    requests: 'Requests awaiting approval',
    requestKind: (k: string) => (k === 'exemption_grant' ? 'MFA exemption' : 'Enrollment ticket (recovery)'),
    requestedBy: (who: string, when: string) => `requested by ${who} at ${when}`,
    approve: 'Approve and carry out',
    reject: 'Reject',
    noRequests: 'No requests await approval.',
    breakers: 'Peers’ circuit breakers',
    breakersIntro:
      'When a peer’s shared signals act on many customers within a short time, their actions (revoking sessions, stopping sweeps, …) are held. Review them, then carry them out or discard them.',
    noBreakers: 'No peer’s circuit breaker has opened.',
    peer: 'Peer',
    breakerState: (open: boolean) => (open ? 'open (holding)' : 'closed'),
    held: 'Held',
    openedAt: 'Opened',
    closedBy: 'Last closed by',
    release: 'Carry out what it held and close',
    drop: 'Discard what it held and close',
    customerLink: 'Customer',
    admin: 'Administration',
    operators: 'Operators',
    policies: 'Effective policies',
    report: 'Management report',
    add: 'Add',
    disable: 'Disable',
    role: 'Role',
    when: 'When',
    event: 'Event',
    result: 'Result',
    source: 'Source',
    none: 'none',
    back: 'Back to search',
  },
};

export const consoleMessages = (lang: Lang) => M[lang];

function at(d: Date | null | undefined, lang: Lang): string {
  if (!d) return '';
  return new Intl.DateTimeFormat(lang === 'ja' ? 'ja-JP' : 'en-GB', {
    dateStyle: 'medium',
    timeStyle: 'medium',
    timeZone: 'Asia/Tokyo',
  }).format(d);
}

export interface Viewer {
  name: string;
  role: Role;
  csrf: string;
}

function page(lang: Lang, title: string, viewer: Viewer | undefined, body: SafeHtml, scripts?: string[]) {
  const t = M[lang];
  const nav = viewer
    ? html`<nav class="console-nav" id="console-nav"><span id="signed-in-as">${t.signedInAs(viewer.name, viewer.role)}</span>
<a href="/console">${t.search}</a>
${viewer.role === 'admin' ? html`<a href="/console/requests" id="nav-requests">${t.requests}</a> <a href="/console/breakers" id="nav-breakers">${t.breakers}</a> <a href="/console/operators">${t.operators}</a> <a href="/console/policies">${t.policies}</a> <a href="/console/report">${t.report}</a>` : ''}
<form method="post" action="/console/logout" class="inline"><input type="hidden" name="csrf" value="${viewer.csrf}"><button type="submit" class="secondary" id="console-logout">${t.logout}</button></form></nav>`
    : '';
  return layout(lang, title, html`${nav}${body}`, { wide: true, ...(scripts ? { scripts } : {}) });
}

const csrfField = (v: Viewer) => html`<input type="hidden" name="csrf" value="${v.csrf}">`;

export function consoleLoginPage(lang: Lang): string {
  const t = M[lang];
  return page(
    lang,
    t.title,
    undefined,
    html`<p>${t.loginLead}</p>
<p id="error" class="error" role="alert" hidden></p>
<button type="button" id="passkey-login" data-endpoint="/console/login" data-working="${t.working}" data-unsupported="${t.unsupported}">${t.login}</button>
<p><a href="/console/enroll" id="console-enroll-link">${t.enrollLink}</a></p>`,
    CONSOLE_SCRIPTS,
  );
}

export function consoleEnrollPage(lang: Lang): string {
  const t = M[lang];
  return page(
    lang,
    t.enrollTitle,
    undefined,
    html`<p>${t.enrollLead}</p>
<p id="error" class="error" role="alert" hidden></p>
<form id="console-enroll" data-working="${t.working}" data-unsupported="${t.unsupported}">
<label>${t.name}<input name="name" id="operator-name" required maxlength="40" autocomplete="username"></label>
<label>${t.ticket}<input name="ticket" id="operator-ticket" required maxlength="64" autocomplete="one-time-code" spellcheck="false"></label>
<button type="submit" id="console-enroll-button">${t.enroll}</button>
</form>`,
    CONSOLE_SCRIPTS,
  );
}

export interface CustomerRow {
  id: string;
  customerNumber: string;
  nameKanji: string;
  nameKana: string;
  status: string;
}

export function searchPage(
  lang: Lang,
  viewer: Viewer,
  q: string | undefined,
  results: CustomerRow[] | undefined,
): string {
  const t = M[lang];
  return page(
    lang,
    t.search,
    viewer,
    html`<form method="get" action="/console" id="search-form"><label>${t.searchLabel}<input name="q" id="q" value="${q ?? ''}" maxlength="64"></label><button type="submit">${t.searchButton}</button></form>
${
  results === undefined
    ? ''
    : results.length === 0
      ? html`<p id="no-results">${t.noResults}</p>`
      : html`<table id="results"><thead><tr><th>${t.number}</th><th>${t.kanji}</th><th>${t.kana}</th><th>${t.status}</th></tr></thead><tbody>
${results.map((r) => html`<tr data-customer="${r.id}"><td><a href="/console/customers/${encodeURIComponent(r.id)}">${r.customerNumber}</a></td><td>${r.nameKanji}</td><td>${r.nameKana}</td><td class="status-${r.status}">${r.status}</td></tr>`)}
</tbody></table>`
}`,
  );
}

export interface CustomerView {
  customer: CustomerRow;
  frozen: { frozenAt: Date; frozenBy: string; reason: string } | undefined;
  risk: CustomerRiskView;
  history: AuditRow[];
  sessions: CustomerSession[];
  passkeys: PasskeySummary[];
  links: BankLink[];
  /** A peer's stop on the customer's sweeps stands (cleared with the peer levels). */
  sweepsPeerStopped: boolean;
  consents: ConsentView[];
  withdrawal:
    | { bankName: string; accountMasked: string; holdUntil: Date; limits: Record<string, number> }
    | { limits: Record<string, number> };
  notifications: SentNotification[];
  exempted: boolean;
  /** Requests for this customer awaiting a second operator (src/console/requests.ts). */
  requests?: ConsoleRequest[];
  /** A ticket just issued: shown once. */
  ticket?: { ticket: string; expiresAt: Date } | undefined;
  notice?: string | undefined;
}

export function customerPage(lang: Lang, viewer: Viewer, v: CustomerView): string {
  const t = M[lang];
  const c = v.customer;
  const canAct = viewer.role !== 'viewer';
  const base = `/console/customers/${encodeURIComponent(c.id)}`;
  const csrf = csrfField(viewer);
  const w = v.withdrawal;
  return page(
    lang,
    `${c.nameKanji} (${c.customerNumber})`,
    viewer,
    html`${v.notice ? html`<p class="notice" role="status" id="notice">${v.notice}</p>` : ''}
${v.ticket ? html`<section class="notice" id="issued-ticket"><p>${t.ticketOnce}</p><p><code id="ticket-value">${v.ticket.ticket}</code> (${at(v.ticket.expiresAt, lang)})</p></section>` : ''}
<dl id="customer" data-customer="${c.id}" data-status="${c.status}">
<dt>${t.number}</dt><dd>${c.customerNumber}</dd><dt>ID</dt><dd>${c.id}</dd><dt>${t.kana}</dt><dd>${c.nameKana}</dd>
<dt>${t.status}</dt><dd id="customer-status">${c.status}</dd>
<dt>${t.risk}</dt><dd id="risk-level" data-level="${v.risk.level}">${v.risk.level} <span id="risk-engine" data-level="${v.risk.engineLevel}">(${t.riskEngine(v.risk.engineLevel)}: ${v.risk.reasons.join(', ')})</span></dd>
${
  v.risk.peerLevels.length
    ? html`<dt>${t.peerRisk}</dt><dd><ul id="peer-risk">${v.risk.peerLevels.map((p) => html`<li data-peer="${p.peerId}" data-level="${p.level}">${t.peerRiskUntil(p.level, p.reason, at(p.expiresAt, lang))}</li>`)}</ul></dd>`
    : ''
}
</dl>
${v.frozen ? html`<p class="error" id="frozen-since">${t.frozenSince(at(v.frozen.frozenAt, lang), v.frozen.frozenBy, v.frozen.reason)}</p>` : ''}
${
  canAct
    ? html`<section id="actions">
${
  c.status === 'frozen'
    ? html`<h2>${t.unfreeze}</h2><form method="post" action="${base}/unfreeze" id="unfreeze-form">${csrf}<button type="submit" id="unfreeze">${t.unfreezeButton}</button></form>`
    : html`<h2>${t.freeze}</h2><form method="post" action="${base}/freeze" id="freeze-form">${csrf}<label>${t.freezeReason}<input name="reason" id="freeze-reason" required maxlength="500"></label><label class="check"><input type="checkbox" name="takeover" value="yes"> ${t.takeover}</label><button type="submit" id="freeze">${t.freezeButton}</button></form>`
}
${v.risk.peerLevels.length || v.sweepsPeerStopped ? html`<h2>${t.peerRisk}</h2><form method="post" action="${base}/peer-risk/clear" id="peer-risk-clear">${csrf}<button type="submit" class="secondary">${t.peerRiskClear}</button></form>` : ''}
${v.requests?.length ? html`<h2>${t.requests}</h2><ul id="customer-requests">${v.requests.map((r) => html`<li data-request="${r.id}" data-kind="${r.kind}">${t.requestKind(r.kind)} — ${t.requestedBy(r.requestedBy, at(r.requestedAt, lang))}: ${r.reason}</li>`)}</ul>` : ''}
<h2>${t.ticketIssue}</h2><form method="post" action="${base}/enrollment-ticket" id="ticket-form">${csrf}<label>${t.ticketReason}<input name="reason" maxlength="500"></label><button type="submit" class="secondary">${t.ticketButton}</button></form>
<h2>${t.exemption}</h2>${
        v.exempted
          ? html`<form method="post" action="${base}/exemption/end" id="exemption-end">${csrf}<button type="submit" class="secondary">${t.exemptionEnd}</button></form>`
          : html`<form method="post" action="${base}/exemption/grant" id="exemption-grant">${csrf}<label>${t.freezeReason}<input name="reason" required minlength="5" maxlength="500"></label><button type="submit" class="secondary">${t.exemptionGrant}</button></form>`
      }
</section>`
    : ''
}
<h2>${t.riskEvents}</h2>
<table id="risk-events"><thead><tr><th>${t.when}</th><th>${t.event}</th><th>${t.result}</th><th>${t.risk}</th><th>${t.source}</th></tr></thead><tbody>
${v.risk.events.map((e) => html`<tr><td>${at(e.at, lang)}</td><td>${e.kind} ${e.method}</td><td>${e.result}</td><td>${e.decision ?? ''} ${e.score ?? ''} <span class="reasons">${JSON.stringify(e.reasons)}</span></td><td>${e.ip ?? ''} ${e.country ?? ''}</td></tr>`)}
</tbody></table>
<h2>${t.sessions}</h2>
<table id="sessions"><tbody>
${v.sessions.map((s) => html`<tr data-session="${s.uid}"><td>${at(s.loginTs ? new Date(s.loginTs * 1000) : null, lang)}</td><td>${s.acr ?? ''} ${s.amr.join(' ')}</td><td>${canAct ? html`<form method="post" action="${base}/sessions/end">${csrf}<input type="hidden" name="uid" value="${s.uid}"><button type="submit" class="secondary">${t.endSession}</button></form>` : ''}</td></tr>`)}
</tbody></table>
${canAct && v.sessions.length ? html`<form method="post" action="${base}/sessions/end-all" id="end-all">${csrf}<button type="submit">${t.endAll}</button></form>` : ''}
<h2>${t.passkeys}</h2>
<ul id="passkeys">${v.passkeys.map((p) => html`<li data-credential="${p.credentialId}">${p.name} — ${p.synced ? 'synced' : 'device-bound'} ${p.model ?? ''}, ${at(p.createdAt, lang)} / ${at(p.lastUsedAt, lang)}${p.disabledAt ? html` <strong>disabled: ${p.disabledReason ?? ''}</strong>` : ''}</li>`)}</ul>
<h2>${t.links}</h2>
<ul id="bank-links" data-peer-stop="${v.sweepsPeerStopped ? 'yes' : 'no'}">${v.links.map((l) => html`<li data-link="${l.id}">${l.bankName} ${l.bankAccountMasked ?? ''} — ${l.status}, ${l.bankStrength}, cap ${String(l.capAmount)}</li>`)}</ul>
<h2>${t.consents}</h2>
<ul id="consents">${v.consents.map((x) => html`<li data-grant="${x.grantId}">${x.clientName ?? x.clientId} — ${x.scopes.join(' ')} (${at(x.createdAt, lang)})</li>`)}</ul>
<h2>${t.withdrawal}</h2>
<p id="withdrawal-account">${'bankName' in w ? html`${w.bankName} ${w.accountMasked} (hold until ${at(w.holdUntil, lang)})` : t.none}</p>
<ul id="limits">${Object.entries(w.limits).map(([k, n]) => html`<li data-limit="${k}">${k}: ${n.toLocaleString('ja-JP')} 円</li>`)}</ul>
<h2>${t.notifications}</h2>
<table id="notifications"><tbody>
${v.notifications.map((n) => html`<tr data-kind="${n.kind}"><td>${at(n.occurredAt, lang)}</td><td>${n.kind}</td><td>${n.channelKind}</td><td>${n.status}</td></tr>`)}
</tbody></table>
<h2>${t.history}</h2>
<table id="history"><tbody>
${v.history.map((h) => html`<tr><td>${at(new Date(h.at), lang)}</td><td>${h.type}</td><td>${h.outcome}</td><td>${h.ip ?? ''}${h.port ? `:${h.port}` : ''} ${h.user_agent ?? ''}</td></tr>`)}
</tbody></table>
<p><a href="/console">${t.back}</a></p>`,
  );
}

export function ticketShownPage(lang: Lang, viewer: Viewer, who: string, ticket: string, expiresAt: Date) {
  const t = M[lang];
  return page(
    lang,
    t.ticketIssue,
    viewer,
    html`<p>${t.ticketOnce}</p><p>${who}: <code id="ticket-value">${ticket}</code> (${at(expiresAt, lang)})</p><p><a href="/console">${t.back}</a></p>`,
  );
}

export function requestsPage(lang: Lang, viewer: Viewer, requests: ConsoleRequest[]): string {
  const t = M[lang];
  const csrf = csrfField(viewer);
  return page(
    lang,
    t.requests,
    viewer,
    html`${
      requests.length === 0
        ? html`<p id="no-requests">${t.noRequests}</p>`
        : html`<table id="requests"><tbody>
${requests.map(
  (
    r,
  ) => html`<tr data-request="${r.id}" data-kind="${r.kind}"><td>${t.requestKind(r.kind)}</td><td><a href="/console/customers/${encodeURIComponent(r.customerId)}">${t.customerLink} ${r.customerNumber}</a></td><td>${t.requestedBy(r.requestedBy, at(r.requestedAt, lang))}</td><td>${r.reason}</td>
<td>${
    r.requestedBy === `operator:${viewer.name}`
      ? ''
      : html`<form method="post" action="/console/requests/${encodeURIComponent(r.id)}/approve" class="inline">${csrf}<button type="submit">${t.approve}</button></form>
<form method="post" action="/console/requests/${encodeURIComponent(r.id)}/reject" class="inline">${csrf}<button type="submit" class="secondary">${t.reject}</button></form>`
  }</td></tr>`,
)}
</tbody></table>`
    }
<p><a href="/console">${t.back}</a></p>`,
  );
}

export function breakersPage(lang: Lang, viewer: Viewer, breakers: PeerBreaker[]): string {
  const t = M[lang];
  const csrf = csrfField(viewer);
  const actions = (peer: string) =>
    html`<form method="post" action="/console/breakers/${encodeURIComponent(peer)}/release" class="inline">${csrf}<button type="submit">${t.release}</button></form>
<form method="post" action="/console/breakers/${encodeURIComponent(peer)}/drop" class="inline">${csrf}<button type="submit" class="secondary">${t.drop}</button></form>`;
  return page(
    lang,
    t.breakers,
    viewer,
    html`<p>${t.breakersIntro}</p>${
      breakers.length === 0
        ? html`<p id="no-breakers">${t.noBreakers}</p>`
        : html`<table id="breakers"><thead><tr><th>${t.peer}</th><th>${t.status}</th><th>${t.held}</th><th>${t.openedAt}</th><th>${t.closedBy}</th><th></th></tr></thead><tbody>
${breakers.map(
  (b) =>
    html`<tr data-peer="${b.peerId}" data-held="${String(b.held)}"><td>${b.peerId}</td><td>${t.breakerState(b.openedAt !== null)}</td><td>${String(b.held)}</td><td>${b.openedAt ? at(b.openedAt, lang) : '–'}</td><td>${b.closedBy ?? '–'}</td><td>${b.openedAt !== null || b.held > 0 ? actions(b.peerId) : ''}</td></tr>`,
)}
</tbody></table>`
    }
<p><a href="/console">${t.back}</a></p>`,
  );
}

export function operatorsPage(lang: Lang, viewer: Viewer, operators: Operator[]): string {
  const t = M[lang];
  const csrf = csrfField(viewer);
  return page(
    lang,
    t.operators,
    viewer,
    html`<table id="operators"><thead><tr><th>${t.name}</th><th>${t.role}</th><th>${t.status}</th><th>${t.passkeys}</th><th></th></tr></thead><tbody>
${operators.map((o) => html`<tr data-operator="${o.name}"><td>${o.name}</td><td>${o.role}</td><td>${o.status}</td><td>${String(o.passkeys)}</td><td>${o.status === 'active' && o.name !== viewer.name ? html`<form method="post" action="/console/operators/disable">${csrf}<input type="hidden" name="name" value="${o.name}"><button type="submit" class="secondary">${t.disable}</button></form>` : ''}</td></tr>`)}
</tbody></table>
<h2>${t.add}</h2>
<form method="post" action="/console/operators/add" id="add-operator">${csrf}
<label>${t.name}<input name="name" required maxlength="40"></label>
<label>${t.role}<select name="role"><option value="viewer">viewer</option><option value="operator">operator</option><option value="admin">admin</option></select></label>
<button type="submit">${t.add}</button></form>`,
  );
}

export function policiesPage(
  lang: Lang,
  viewer: Viewer,
  withdrawalPolicy: string,
  riskRules: string,
): string {
  const t = M[lang];
  return page(
    lang,
    t.policies,
    viewer,
    html`<h2>Withdrawal-strength policy</h2><pre id="withdrawal-policy">${withdrawalPolicy}</pre>
<h2>Risk rules</h2><pre id="risk-rules">${riskRules}</pre>`,
  );
}

/** Horizontal bars as inline SVG (CSP allows no inline script; SVG needs none). */
function bars(rows: Array<{ label: string; value: number; max: number; target?: number }>): SafeHtml {
  const width = 360;
  const h = 22;
  return html`<svg class="chart" role="img" width="${String(width + 160)}" height="${String(rows.length * h + 4)}" viewBox="0 0 ${String(width + 160)} ${String(rows.length * h + 4)}">
${rows.map((r, i) => {
  const w = r.max > 0 ? Math.round((r.value / r.max) * width) : 0;
  const y = i * h + 2;
  return html`<text x="0" y="${String(y + 15)}" font-size="12">${r.label}</text><rect x="150" y="${String(y)}" width="${String(w)}" height="${String(h - 6)}" fill="#2b6cb0"></rect>${
    r.target !== undefined
      ? html`<line x1="${String(150 + Math.round((r.target / r.max) * width))}" x2="${String(150 + Math.round((r.target / r.max) * width))}" y1="${String(y - 1)}" y2="${String(y + h - 5)}" stroke="#c53030" stroke-width="2"></line>`
      : ''
  }`;
})}</svg>`;
}

export function reportPage(
  lang: Lang,
  viewer: Viewer,
  r: ProtectiveSettingsReport,
  daily: DailySecurityEvents[],
): string {
  const t = M[lang];
  const pct = (x: number) => `${(x * 100).toFixed(1)} %`;
  const max = Math.max(1, ...daily.flatMap((d) => [d.locks, d.blocks, d.freezes]));
  const q = `from=${r.from.toISOString().slice(0, 10)}&to=${r.to.toISOString().slice(0, 10)}`;
  return page(
    lang,
    t.report,
    viewer,
    html`<p>${r.from.toISOString().slice(0, 10)} … ${r.to.toISOString().slice(0, 10)} — ${String(r.customers)} customers.
<a href="/console/report?${q}&format=csv" id="report-csv">CSV</a> · <a href="/console/report?${q}&format=json" id="report-json">JSON</a></p>
<table id="measures"><thead><tr><th></th><th>value</th><th>target</th><th></th></tr></thead><tbody>
${r.measures.map((m) => html`<tr data-measure="${m.name}" data-met="${String(m.met)}"><td>${m.name}</td><td>${pct(m.value)} (${String(m.count)})</td><td>${m.name === 'exemptionRate' ? '≤' : '≥'} ${pct(m.target)}</td><td>${m.met ? 'met' : 'NOT MET'}</td></tr>`)}
</tbody></table>
${bars(r.measures.map((m) => ({ label: m.name, value: m.value, max: 1, target: m.target })))}
<h2>Events</h2>
<ul id="events"><li>sign-ins ${String(r.events.signIns)}</li><li>failed ${String(r.events.failures)}</li><li>automatic locks ${String(r.events.locks)}</li><li>refused while locked ${String(r.events.lockedRefusals)}</li></ul>
<h2>Locks, blocks and freezes per day</h2>
${
  daily.length
    ? html`<div id="per-day">${(['locks', 'blocks', 'freezes'] as const).map(
        (k) => html`<h3>${k}</h3>${bars(daily.map((d) => ({ label: d.day, value: d[k], max })))}`,
      )}</div>`
    : html`<p>${t.none}</p>`
}`,
  );
}

/** The report as CSV: one row per measure, then the event counts, then locks, blocks and freezes per day. */
export function reportCsv(r: ProtectiveSettingsReport, daily: DailySecurityEvents[]): string {
  const lines = ['section,name,value,count,target,met'];
  for (const m of r.measures) lines.push(`measure,${m.name},${m.value},${m.count},${m.target},${m.met}`);
  for (const [k, v] of Object.entries(r.events)) lines.push(`event,${k},${v},,,`);
  for (const d of daily)
    for (const k of ['locks', 'blocks', 'freezes'] as const) lines.push(`${k},${d.day},${d[k]},,,`);
  return `${lines.join('\n')}\n`;
}
