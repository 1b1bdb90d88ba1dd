import { describe, expect, it } from 'vitest';
import { assertedNames, idTokenProblem, maskBankAccount } from '../../src/federation/index.ts';
import { bankStrength } from '../../src/linking/index.ts';
import { matchesRegisteredName, normalizeName } from '../../src/proofing/index.ts';

const YAMADA = { kanji: '山田 太郎', kana: 'ヤマダ タロウ' };

describe('名義一致: normalizeName / matchesRegisteredName', () => {
  it('matches across half/full width, hiragana/katakana, spaces and small kana', () => {
    for (const asserted of [
      'ﾔﾏﾀﾞ ﾀﾛｳ',
      'やまだ　たろう',
      'ヤマダタロウ',
      ' ﾔﾏﾀﾞﾀﾛｳ ',
      'ヤマダ・タロウ',
      '山田太郎',
      '山田　太郎',
    ])
      expect(matchesRegisteredName(YAMADA, [asserted]), asserted).toBe(true);
    // 全銀 has no small kana: キャ is held as キヤ, ッ as ツ.
    expect(matchesRegisteredName({ kanji: '北村 拓也', kana: 'キタムラ タクヤ' }, ['ｷﾀﾑﾗ ﾀｸﾔ'])).toBe(true);
    expect(matchesRegisteredName({ kanji: '佐藤 雪', kana: 'サトウ ユキ' }, ['ｻﾄｳ ﾕｷ'])).toBe(true);
    expect(normalizeName('キャッシュ')).toBe(normalizeName('ｷﾔﾂｼﾕ'));
    expect(normalizeName('ジョー')).toBe(normalizeName('ｼﾞﾖ-'));
    // Variant kanji in registers and bank records.
    expect(matchesRegisteredName({ kanji: '髙橋 一郎', kana: 'タカハシ イチロウ' }, ['高橋 一郎'])).toBe(
      true,
    );
    expect(matchesRegisteredName({ kanji: '渡邊 花子', kana: 'ワタナベ ハナコ' }, ['渡辺花子'])).toBe(true);
    expect(normalizeName('ｔａｒｏ　ｙａｍａｄａ')).toBe('TAROYAMADA');
  });

  it('does not match another person, a partial name, or kanji against kana', () => {
    expect(matchesRegisteredName(YAMADA, ['ヤマダ ハナコ'])).toBe(false);
    expect(matchesRegisteredName(YAMADA, ['ﾔﾏﾀﾞ'])).toBe(false);
    expect(matchesRegisteredName(YAMADA, ['山田'])).toBe(false);
    expect(matchesRegisteredName(YAMADA, ['ヤマダ タロウ 様'])).toBe(false);
    expect(matchesRegisteredName(YAMADA, [''])).toBe(false);
    expect(matchesRegisteredName(YAMADA, ['  '])).toBe(false);
    expect(matchesRegisteredName(YAMADA, [])).toBe(false);
    // A kana name is never compared with the kanji name.
    expect(matchesRegisteredName({ kanji: 'ヤマダ タロウ', kana: 'ヤマダ ジロウ' }, ['ﾔﾏﾀﾞ ﾀﾛｳ'])).toBe(false);
    // Voiced and unvoiced kana differ.
    expect(matchesRegisteredName(YAMADA, ['ﾔﾏﾀ ﾀﾛｳ'])).toBe(false);
  });

  it('reads names from plain claims, language-tagged claims and verified_claims', () => {
    expect(
      assertedNames({
        name: '山田 太郎',
        'family_name#ja-Kana-JP': 'ヤマダ',
        'given_name#ja-Kana-JP': 'タロウ',
        verified_claims: [
          {
            verification: { trust_framework: 'jp_aml' },
            claims: { family_name: '山田', given_name: '太郎' },
          },
        ],
      }),
    ).toEqual(['山田 太郎', 'ヤマダ タロウ']);
    expect(assertedNames({ verified_claims: { claims: { name: 'ﾔﾏﾀﾞ ﾀﾛｳ' } } })).toEqual(['ﾔﾏﾀﾞ ﾀﾛｳ']);
    expect(assertedNames({ name: 42, family_name: '山田' })).toEqual([]);
  });

  it('masks bank accounts to the last three digits', () => {
    expect(maskBankAccount({ branch_code: '123', account_type: '1', account_number: '7654321' })).toBe(
      '123 普通 ****321',
    );
    expect(maskBankAccount('0001112')).toBe('****112');
    expect(maskBankAccount({ account_number: '' })).toBeUndefined();
    expect(maskBankAccount(undefined)).toBeUndefined();
  });
});

describe('bankStrength', () => {
  it('classes by the bank’s own acr map first, then amr (RFC 8176)', () => {
    expect(bankStrength({ acr: 'urn:x:loa:2', amr: ['pwd'] }, { 'urn:x:loa:2': 'phishing_resistant' })).toBe(
      'phishing_resistant',
    );
    expect(bankStrength({ amr: ['hwk', 'user'] })).toBe('phishing_resistant');
    expect(bankStrength({ amr: ['swk', 'pin'] })).toBe('phishing_resistant');
    expect(bankStrength({ amr: ['hwk', 'fpt', 'mfa'] })).toBe('phishing_resistant');
    expect(bankStrength({ acr: 'urn:bank:fido2' }, { 'urn:bank:fido2': 'phishing_resistant' })).toBe(
      'phishing_resistant',
    );
    expect(bankStrength({ acr: 'phr', amr: ['pwd'] }, { phr: 'phishing_resistant' })).toBe(
      'phishing_resistant',
    );
    expect(bankStrength({ amr: ['pwd', 'otp'] })).toBe('otp');
    expect(bankStrength({ amr: ['sms'] })).toBe('otp');
    expect(bankStrength({ amr: ['pwd', 'mfa'] })).toBe('otp');
    expect(bankStrength({ amr: ['pwd'] })).toBe('password');
    expect(bankStrength({ amr: ['kba'] })).toBe('password');
  });

  it('does not take a key without user verification, or unknown values, as strong', () => {
    expect(bankStrength({ amr: ['hwk'] })).toBe('unknown');
    expect(bankStrength({ amr: ['swk', 'pwd'] })).toBe('password');
    expect(bankStrength({})).toBe('unknown');
    expect(bankStrength({ acr: 'urn:bank:loa:1', amr: 'hwk user' })).toBe('unknown');
    expect(bankStrength({ acr: 'urn:nofido2x' })).toBe('unknown');
    expect(bankStrength({ acr: 'urn:x', amr: ['user'] }, { other: 'phishing_resistant' })).toBe('unknown');
  });

  it('never reads an unmapped acr for words (security review): its amr decides', () => {
    // Each of these was phishing_resistant by pattern before.
    expect(bankStrength({ acr: 'urn:bank:no-passkey', amr: ['pwd'] })).toBe('password');
    expect(bankStrength({ acr: 'urn:bank:passkey-or-password', amr: ['pwd', 'otp'] })).toBe('otp');
    expect(bankStrength({ acr: 'urn:bank:fido2' })).toBe('unknown');
    expect(bankStrength({ acr: 'urn:bank:loa:phr' })).toBe('unknown');
    expect(bankStrength({ acr: 'webauthn' })).toBe('unknown');
    expect(bankStrength({ acr: 'PHR' })).toBe('unknown');
    // Nor the OpenID EAP values the bank did not map (security review, session 14).
    expect(bankStrength({ acr: 'phr' })).toBe('unknown');
    expect(bankStrength({ acr: 'phrh', amr: ['pwd'] })).toBe('password');
    expect(bankStrength({ acr: 'phr', amr: ['pwd', 'otp'] }, { other: 'phishing_resistant' })).toBe('otp');
    // An unmapped acr does not hide a strong amr, and the bank's own mapping still rules.
    expect(bankStrength({ acr: 'urn:bank:no-passkey', amr: ['hwk', 'user'] })).toBe('phishing_resistant');
    expect(
      bankStrength(
        { acr: 'urn:bank:no-passkey', amr: ['hwk', 'user'] },
        { 'urn:bank:no-passkey': 'password' },
      ),
    ).toBe('password');
  });
});

describe('idTokenProblem (what openid-client leaves to the hub; security review)', () => {
  const now = 1_800_000_000;
  const o = { clientId: 'kakehashi', maxAge: 300, now };
  it('takes a token issued now, with or without azp naming the hub', () => {
    expect(idTokenProblem({ iat: now }, o)).toBeUndefined();
    expect(idTokenProblem({ iat: now - 329, azp: 'kakehashi' }, o)).toBeUndefined();
    expect(idTokenProblem({ iat: now + 30 }, o)).toBeUndefined();
  });
  it('refuses another azp, a missing iat, an iat from the future or older than max_age', () => {
    expect(idTokenProblem({ iat: now, azp: 'another-client' }, o)).toMatch(/azp/);
    expect(idTokenProblem({}, o)).toMatch(/iat is missing/);
    expect(idTokenProblem({ iat: now + 31 }, o)).toMatch(/future/);
    expect(idTokenProblem({ iat: now - 331 }, o)).toMatch(/older/);
    expect(idTokenProblem({ iat: String(now) }, o)).toMatch(/iat is missing/);
  });
});
