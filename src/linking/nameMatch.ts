/**
 * 名義一致: does the name a bank asserts for its account holder match the customer's registered name?
 * Banks keep holder names in 全銀 form (half-width katakana, large kana only, e.g. "ﾔﾏﾀﾞ ﾀﾛｳ"), identity
 * providers in kanji or full-width kana, customers type with or without spaces. Both sides are reduced
 * to one form before an exact comparison; kanji are compared with kanji and kana with kana — a reading
 * cannot be derived from kanji, so a kanji name never matches a kana name.
 */

/** Small kana become large, as the 全銀 character set has no small kana. */
const SMALL_KANA: Record<string, string> = {
  ァ: 'ア',
  ィ: 'イ',
  ゥ: 'ウ',
  ェ: 'エ',
  ォ: 'オ',
  ッ: 'ツ',
  ャ: 'ヤ',
  ュ: 'ユ',
  ョ: 'ヨ',
  ヮ: 'ワ',
  ヵ: 'カ',
  ヶ: 'ケ',
};

/** Old or variant forms of kanji common in names, mapped to the form most records use. */
const KANJI_VARIANTS: Record<string, string> = {
  髙: '高',
  﨑: '崎',
  嵜: '崎',
  邊: '辺',
  邉: '辺',
  齋: '斎',
  齊: '斉',
  濱: '浜',
  澤: '沢',
  嶋: '島',
  廣: '広',
  櫻: '桜',
  國: '国',
  眞: '真',
  德: '徳',
  冨: '富',
  藪: '薮',
  槇: '槙',
};

const HIRAGANA = /[\u3041-\u3096]/g;
/** Hyphens, dashes and the half-width long mark that banks and people use for the long vowel mark. */
const LONG_MARKS = /[-‐‑‒–—―−ｰ]/g;
/** Every space, separator and the middle dot some records put between family and given name. */
const SEPARATORS = /[\s\u3000・･,，.．]/g;

/**
 * The comparable form of a name: NFKC (half-width kana become full-width with their voicing marks
 * combined, full-width letters become ASCII), hiragana as katakana, small kana large, dashes as the
 * long vowel mark, variant kanji in their common form, no spaces or separators, letters upper case.
 */
export function normalizeName(name: string): string {
  let s = name.normalize('NFKC');
  s = s.replace(HIRAGANA, (c) => String.fromCharCode(c.charCodeAt(0) + 0x60));
  s = s.replace(LONG_MARKS, 'ー');
  s = s.replace(SEPARATORS, '');
  s = [...s].map((c) => SMALL_KANA[c] ?? KANJI_VARIANTS[c] ?? c).join('');
  return s.toUpperCase();
}

/** Whether a normalised name is written in kana only (katakana and the long vowel mark). */
const isKana = (normalized: string) => /^[\u30a0-\u30ffー]+$/u.test(normalized);

export interface RegisteredName {
  kanji: string;
  kana: string;
}

/**
 * True when one of the names the bank asserted equals the customer's registered kanji name or kana
 * name after normalisation (kana compared with kana, anything else with the kanji name).
 */
export function namesMatch(registered: RegisteredName, asserted: readonly string[]): boolean {
  const kanji = normalizeName(registered.kanji);
  const kana = normalizeName(registered.kana);
  return asserted.some((raw) => {
    const n = normalizeName(raw);
    if (!n) return false;
    return isKana(n) ? n === kana : n === kanji;
  });
}
