/**
 * The security page's limits section: daily withdrawal and sweep limits (lowering applies at once;
 * raising needs a passkey sign-in within 5 minutes and waits for a cool-off), raises still waiting,
 * the registered withdrawal account with its hold, channels and the products the customer allows.
 */

import { PRODUCT_NAMES, type Product } from '../linking/productCatalogue.ts';
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
  /** Products the customer allows trading in (blocking applies at once; allowing waits). */
  products?: Array<{ product: Product; allowed: boolean; allowAt: Date | null }>;
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
    products: 'お取引する商品',
    productsLead:
      'お取引しない商品は停止できます。停止はすぐに反映され、許可には直近のパスキー認証と一定時間が必要です。停止中の商品のご注文はお受けしません。',
    allowed: '取引可',
    blocked: '停止中',
    block: '停止する',
    allow: '許可する',
    opens: (at: string) => `${at} からお取引いただけます`,
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
    products: 'Products you trade',
    productsLead:
      'Switch off products you do not trade. Switching off applies at once; allowing needs a recent passkey sign-in and a waiting period. Orders in a switched-off product are refused.',
    allowed: 'Allowed',
    blocked: 'Off',
    block: 'Switch off',
    allow: 'Allow',
    opens: (at: string) => `Allowed from ${at}`,
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
  /** Something switched off at once and on again after a cool-off: its state, the wait, one button. */
  const switchRow = (r: {
    attrs: SafeHtml;
    name: string;
    on: boolean;
    state: string;
    waitsUntil: string | undefined;
    path: string;
    field: string;
    value: string;
    action: string;
    button: string;
  }) =>
    html`<tr ${r.attrs}><td>${r.name}</td><td class="state">${r.state}${
      r.waitsUntil ? html`<br><small class="pending">${r.waitsUntil}</small>` : ''
    }</td>
<td>${
      r.on || !r.waitsUntil
        ? html`<form method="post" action="${r.path}" class="inline">${p.csrf}<input type="hidden" name="${r.field}" value="${r.value}"><input type="hidden" name="action" value="${r.action}"><button type="submit" class="secondary">${r.button}</button></form>`
        : ''
    }</td></tr>`;
  const channelRow = (c: NonNullable<LimitsView['channels']>[number]) =>
    switchRow({
      attrs: html`data-channel-name="${c.channel}"`,
      name: t[c.channel],
      on: c.enabled,
      state: c.enabled ? t.on : t.off,
      waitsUntil: c.enableAt ? t.reopens(when(c.enableAt, p.lang)) : undefined,
      path: '/account/channels',
      field: 'channel',
      value: c.channel,
      action: c.enabled ? 'disable' : 'enable',
      button: c.enabled ? t.switchOff : t.switchOn,
    });
  const products = p.view.products ?? [];
  const productRow = (x: NonNullable<LimitsView['products']>[number]) =>
    switchRow({
      attrs: html`data-product="${x.product}" data-allowed="${String(x.allowed)}"`,
      name: PRODUCT_NAMES[p.lang][x.product],
      on: x.allowed,
      state: x.allowed ? t.allowed : t.blocked,
      waitsUntil: x.allowAt ? t.opens(when(x.allowAt, p.lang)) : undefined,
      path: '/account/products',
      field: 'product',
      value: x.product,
      action: x.allowed ? 'block' : 'allow',
      button: x.allowed ? t.block : t.allow,
    });
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
}
${
  products.length
    ? html`<h3>${t.products}</h3><p>${t.productsLead}</p><table id="products"><tbody>${products.map(productRow)}</tbody></table>`
    : ''
}`;
}
