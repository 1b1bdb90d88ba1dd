import { describe, expect, it } from 'vitest';
import { matchesRegisteredName, namesMatch } from '../../src/proofing/index.ts';

/**
 * One table of (proven or asserted name, registered name, same person?) run through every place the
 * hub compares names: proofing (eKYC/JPKI name against the registered one: namesMatch), bank linking
 * (the bank's asserted holder against the registered kanji/kana names: matchesRegisteredName) and the
 * withdrawal holder check (destination holder against the registered kana name and the registered
 * account's holder: namesMatch, src/linking/decisionsApi.ts). They must all give the same answer.
 */
const TABLE: [asserted: string, registered: string, same: boolean][] = [
  // widths, spaces, hiragana
  ['ﾔﾏﾀﾞ ﾀﾛｳ', 'ヤマダ タロウ', true],
  ['やまだ　たろう', 'ヤマダ タロウ', true],
  ['ヤマダ・タロウ', 'ヤマダ タロウ', true],
  ['ヤマダ,タロウ', 'ヤマダ タロウ', true],
  ['山田　太郎', '山田 太郎', true],
  ['山田・太郎', '山田太郎', true],
  ['ＹＡＭＡＤＡ　Taro', 'yamada taro', true],
  // old kanji forms (戸籍 / My Number card against the registered form)
  ['髙橋 一郎', '高橋 一郎', true],
  ['渡邊 花子', '渡辺花子', true],
  ['山﨑 亮', '山崎 亮', true],
  // small kana (全銀 has none)
  ['ｷﾖｳｺ', 'キョウコ', true],
  ['ｷﾔﾂｼﾕ', 'キャッシュ', true],
  // dashes: the long vowel mark after kana, a separator elsewhere
  ['ｼﾞﾖ-', 'ジョー', true],
  ['ｽｽﾞｷ ｲﾁﾛｰ', 'スズキ イチロー', true],
  ['スズキ イチロ－', 'スズキ イチロー', true],
  ['ヤマダ－タロウ', 'ヤマダ タロウ', false],
  ['Mary-Ann Smith', 'MARY ANN SMITH', true],
  ['山田-太郎', '山田 太郎', true],
  // another person, a part of the name, voicing, a missing long vowel
  ['ヤマダ ジロウ', 'ヤマダ タロウ', false],
  ['ヤマダ タロ', 'ヤマダ タロウ', false],
  ['ﾔﾏﾀ ﾀﾛｳ', 'ヤマダ タロウ', false],
  ['スズキ イチロ', 'スズキ イチロー', false],
  ['山田 次郎', '山田 太郎', false],
  ['山田', '山田 太郎', false],
  ['', '', false],
  ['  ', 'ヤマダ タロウ', false],
];

const isKanaRow = (registered: string) =>
  /^[\p{Script=Katakana}\p{Script=Hiragana}ー\s・]+$/u.test(registered);

describe('one name rule for proofing, bank linking and withdrawal holders', () => {
  it.each(TABLE)('%s / %s → %s at every caller', (asserted, registered, same) => {
    // Proofing: a proven name against the registered one.
    const proofing = namesMatch(asserted, registered);
    // Bank linking: the registered name sits in the column of its script; the other column holds
    // someone else's name, so only the row's own comparison can make it match.
    const link = matchesRegisteredName(
      isKanaRow(registered)
        ? { kanji: '別人 花子', kana: registered }
        : { kanji: registered, kana: 'ベツジン ハナコ' },
      [asserted],
    );
    // Withdrawal holder: destination holder against the registered holder (and the reverse).
    const holder = namesMatch(registered, asserted);
    expect({ proofing, link, holder }).toEqual({ proofing: same, link: same, holder: same });
  });

  it('never takes a kana name for a kanji name at linking, even when the kanji column holds kana', () => {
    expect(matchesRegisteredName({ kanji: 'ヤマダ タロウ', kana: 'ヤマダ ジロウ' }, ['ﾔﾏﾀﾞ ﾀﾛｳ'])).toBe(false);
    expect(matchesRegisteredName({ kanji: '山田 太郎', kana: 'ヤマダ タロウ' }, ['山田太郎'])).toBe(true);
    expect(matchesRegisteredName({ kanji: '山田 太郎', kana: 'ヤマダ タロウ' }, ['ヤマダタロウ'])).toBe(true);
  });
});
