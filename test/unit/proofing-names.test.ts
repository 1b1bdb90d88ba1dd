import { describe, expect, it } from 'vitest';
import { namesMatch, normalizeBirthdate, normalizeName } from '../../src/proofing/index.ts';

describe('name matching for identity proofing', () => {
  it('ignores widths, spaces and hiragana/katakana, not different characters', () => {
    expect(namesMatch('山田　太郎', '山田 太郎')).toBe(true);
    expect(namesMatch('山田太郎', '山田 太郎')).toBe(true);
    expect(namesMatch('ﾔﾏﾀﾞ ﾀﾛｳ', 'ヤマダ タロウ')).toBe(true);
    expect(namesMatch('やまだ たろう', 'ヤマダ タロウ')).toBe(true);
    expect(namesMatch('ＹＡＭＡＤＡ　Taro', 'yamada taro')).toBe(true);
    expect(namesMatch('山田 次郎', '山田 太郎')).toBe(false);
    expect(namesMatch('ヤマダ タロ', 'ヤマダ タロウ')).toBe(false);
    expect(namesMatch('', '')).toBe(false);
    expect(namesMatch(undefined, '山田')).toBe(false);
    expect(normalizeName('山田・太郎')).toBe('山田太郎');
  });

  it('reads birth dates only as YYYY-MM-DD', () => {
    expect(normalizeBirthdate('1980-04-01')).toBe('1980-04-01');
    expect(normalizeBirthdate('１９８０-０４-０１')).toBe('1980-04-01');
    expect(normalizeBirthdate('1980-4-1')).toBeUndefined();
    expect(normalizeBirthdate(19800401)).toBeUndefined();
  });
});

describe('proofing and attestation configuration', () => {
  it('names the key of a bad value', async () => {
    const { loadConfig } = await import('../../src/config/index.ts');
    const load = (overrides: object) => () =>
      loadConfig({ env: {}, configDir: '/nonexistent', overrides: overrides as never });
    expect(load({ authn: { attestation: { policy: 'direct' } } })).toThrow(
      /authn\.attestation\.metadataFile/,
    );
    expect(
      load({ proofing: { ekyc: { issuer: 'http://idp', clientId: 'a', clientSecret: 'x'.repeat(16) } } }),
    ).toThrow(/proofing\.ekyc\.issuer/);
    expect(load({ proofing: { jpki: {} } })).toThrow(/proofing\.jpki\.trustAnchorsFile/);
    expect(
      load({ proofing: { jpki: { trustAnchorsFile: 'a.pem', revocation: { onUnavailable: 'ignore' } } } }),
    ).toThrow(/proofing\.jpki\.revocation\.onUnavailable/);
    expect(
      load({ proofing: { jpki: { trustAnchorsFile: 'a.pem', revocation: { fetchTimeoutMs: 0 } } } }),
    ).toThrow(/proofing\.jpki\.revocation\.fetchTimeoutMs/);
  });
});
