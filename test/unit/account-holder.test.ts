import { describe, expect, it } from 'vitest';
// Holder names (withdrawal destinations, registered withdrawal accounts) are compared by proofing's namesMatch.
import { namesMatch, normalizeName as normalizeHolderName } from '../../src/proofing/index.ts';

describe('名義一致 (holder-name matching)', () => {
  it.each([
    ['ヤマダ タロウ', 'ﾔﾏﾀﾞ ﾀﾛｳ'],
    ['ヤマダ タロウ', 'やまだ　たろう'],
    ['キョウコ', 'キヨウコ'],
    ['ヤマダ・タロウ', 'ヤマダタロウ'],
    ['ｽｽﾞｷ ｲﾁﾛｰ', 'スズキ イチロー'],
  ])('%s matches %s', (a, b) => {
    expect(namesMatch(a, b)).toBe(true);
  });

  it.each([
    ['ヤマダ タロウ', 'ヤマダ ジロウ'],
    ['ヤマダ タロウ', 'ヤマダ タロ'],
    ['スズキ イチロー', 'スズキ イチロ'],
    ['', ''],
  ])('%s does not match %s', (a, b) => {
    expect(namesMatch(a, b)).toBe(false);
  });

  it('keeps the long-vowel mark and voicing, which change the name', () => {
    expect(normalizeHolderName('ﾀﾞｲｽｹ')).toBe('ダイスケ');
    expect(normalizeHolderName('タイスケ')).not.toBe(normalizeHolderName('ダイスケ'));
  });
});
