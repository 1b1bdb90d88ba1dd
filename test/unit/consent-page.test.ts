/** The consent page shows what authorization_details ask for, in Japanese and English. */
import { describe, expect, it } from 'vitest';
import { consentPage } from '../../src/web/index.ts';

const accounts = ['acc_a', 'acc_b', 'acc_c'].map((id, i) => ({
  id,
  nickname: `口座${i + 1}`,
  institutionName: 'デモ証券',
  taxCategory: 'specific',
  maskedNumber: `••••00${i}`,
}));
const data = {
  dataTypes: ['balances', 'transactions'],
  lookbackDays: 90,
  expiresAt: new Date('2027-01-31T15:00:00Z'),
};

describe('consent page', () => {
  it('shows data types, lookback and expiry in Japanese, and pre-ticks only hinted accounts', () => {
    const html = consentPage({
      lang: 'ja',
      uid: 'u1',
      clientName: 'デモ家計簿アプリ',
      scopes: ['openid'],
      accounts,
      data,
      hinted: ['acc_b'],
      action: 'merge',
    });
    expect(html).toContain('<li data-type="balances">残高（現金・買付余力・出金可能額）</li>');
    expect(html).toContain('取引履歴は過去90日分まで');
    expect(html).not.toContain('data-type="holdings"');
    expect(html).toContain('data-expires="2027-01-31T15:00:00.000Z"');
    expect(html).toContain('2027/02/01');
    expect(html).toContain('すでに許可している内容に追加');
    expect(html).toContain('value="acc_b" checked');
    expect(html).toMatch(/value="acc_a">/);
    expect(html).toMatch(/value="acc_c">/);
  });

  it('shows the same in English, every account ticked without hints', () => {
    const html = consentPage({ lang: 'en', uid: 'u1', clientName: 'Demo', scopes: [], accounts, data });
    expect(html).toContain('Transactions of the last 90 days');
    expect(html).toContain('Balances (cash, buying power, withdrawable amount)');
    expect(html).toContain('Until 1 Feb 2027');
    expect(html.match(/checked/g)).toHaveLength(3);
    expect(html).not.toContain('id="grant-action"');
  });
});
