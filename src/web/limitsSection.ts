/**
 * The security page's limits section: daily withdrawal and sweep limits (lowering applies at once;
 * raising needs a passkey sign-in within 5 minutes and waits for a cool-off), raises still waiting,
 * and the registered withdrawal account with its hold.
 */

import { html, type SafeHtml } from './html.ts';
import type { Lang } from './i18n.ts';
import { when } from './pages.ts';

export interface LimitsView {
  current: { withdrawal_daily: number; sweep_daily: number };
  pending: Array<{ limit: 'withdrawal_daily' | 'sweep_daily'; to: number; effectiveAt: Date }>;
  withdrawalAccount?: { bankName: string; accountMasked: string; holdUntil: Date } | undefined;
  /** Channels the customer can switch off (switching on waits for a cool-off). */
  channels?: Array<{
    channel: 'aggregator_access' | 'withdrawals' | 'sweeps';
    enabled: boolean;
    enableAt: Date | null;
  }>;
}

const TEXT = {
  ja: {
    title: 'ご利用限度額と出金先',
    withdrawal_daily: '1日あたりの出金限度額',
    sweep_daily: '1日あたりの自動入金（スイープ）限度額',
    lead: '引き下げはすぐに反映されます。引き上げには直近のパスキー認証が必要で、一定時間後に有効になります。',
    change: '変更',
    pending: (to: string, at: string) => `${to}への引き上げは ${at} に有効になります`,
    account: '出金先口座',
    held: (at: string) => `セキュリティのため、${at} まではこの口座への出金をお受けできません`,
    none: '登録されていません',
    yen: (n: number) => `${n.toLocaleString('ja-JP')}円`,
    channels: 'ご利用チャネル',
    channelsLead:
      '使わないものは停止できます。停止はすぐに反映され、再開には直近のパスキー認証と一定時間が必要です。',
    aggregator_access: '外部サービスからの口座情報の参照',
    withdrawals: 'インターネットからの出金',
    sweeps: '銀行口座からの自動入金（スイープ）',
    on: '利用中',
    off: '停止中',
    switchOff: '停止する',
    switchOn: '再開する',
    reopens: (at: string) => `${at} に再開します`,
  },
  en: {
    title: 'Limits and withdrawal account',
    withdrawal_daily: 'Daily withdrawal limit',
    sweep_daily: 'Daily automatic transfer (sweep) limit',
    lead: 'Lowering applies at once. Raising needs a passkey sign-in within the last 5 minutes and applies after a waiting period.',
    change: 'Change',
    pending: (to: string, at: string) => `Raise to ${to} applies from ${at}`,
    account: 'Withdrawal account',
    held: (at: string) => `For your security, nothing is paid to this account before ${at}`,
    none: 'None registered',
    yen: (n: number) => `¥${n.toLocaleString('en-US')}`,
    channels: 'Channels',
    channelsLead:
      'Switch off what you do not use. Switching off applies at once; switching on needs a recent passkey sign-in and a waiting period.',
    aggregator_access: 'Access to your account information by connected services',
    withdrawals: 'Withdrawals over the internet',
    sweeps: 'Automatic transfers (sweeps) from your bank account',
    on: 'On',
    off: 'Off',
    switchOff: 'Switch off',
    switchOn: 'Switch on',
    reopens: (at: string) => `On again from ${at}`,
  },
} as const;

export function limitsSection(p: { lang: Lang; csrf: SafeHtml; view: LimitsView }): SafeHtml {
  const t = TEXT[p.lang];
  const row = (limit: 'withdrawal_daily' | 'sweep_daily') => {
    const pending = p.view.pending.find((x) => x.limit === limit);
    return html`<tr data-limit="${limit}"><td>${t[limit]}</td><td class="amount">${t.yen(p.view.current[limit])}${
      pending
        ? html`<br><small class="pending">${t.pending(t.yen(pending.to), when(pending.effectiveAt, p.lang))}</small>`
        : ''
    }</td>
<td><form method="post" action="/account/limits" class="inline">${p.csrf}<input type="hidden" name="limit" value="${limit}"><input name="amount" inputmode="numeric" pattern="[0-9]{1,10}" maxlength="10" required aria-label="${t[limit]}"><button type="submit" class="secondary">${t.change}</button></form></td></tr>`;
  };
  const account = p.view.withdrawalAccount;
  const channels = p.view.channels ?? [];
  const channelRow = (c: NonNullable<LimitsView['channels']>[number]) =>
    html`<tr data-channel-name="${c.channel}"><td>${t[c.channel]}</td><td class="state">${c.enabled ? t.on : t.off}${
      c.enableAt ? html`<br><small class="pending">${t.reopens(when(c.enableAt, p.lang))}</small>` : ''
    }</td>
<td>${
      c.enabled || !c.enableAt
        ? html`<form method="post" action="/account/channels" class="inline">${p.csrf}<input type="hidden" name="channel" value="${c.channel}"><input type="hidden" name="action" value="${c.enabled ? 'disable' : 'enable'}"><button type="submit" class="secondary">${c.enabled ? t.switchOff : t.switchOn}</button></form>`
        : ''
    }</td></tr>`;
  return html`<h2>${t.title}</h2>
<p>${t.lead}</p>
<table id="limits"><tbody>${row('withdrawal_daily')}${row('sweep_daily')}</tbody></table>
<h3>${t.account}</h3>
<p id="withdrawal-account">${
    account
      ? html`${account.bankName} ${account.accountMasked}${
          account.holdUntil.getTime() > Date.now()
            ? html`<br><small class="pending">${t.held(when(account.holdUntil, p.lang))}</small>`
            : ''
        }`
      : t.none
  }</p>
${
  channels.length
    ? html`<h3>${t.channels}</h3><p>${t.channelsLead}</p><table id="channels"><tbody>${channels.map(channelRow)}</tbody></table>`
    : ''
}`;
}
