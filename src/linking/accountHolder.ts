/**
 * 名義一致: whether a bank account holder name is the customer's. Banks record holder names in
 * (often half-width) katakana with their own spacing and small-kana conventions; the comparison
 * normalises width (NFKC), hiragana to katakana, small kana to full size, and drops spaces and
 * separators, then compares exactly.
 */
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

export function normalizeHolderName(name: string): string {
  return [...name.normalize('NFKC')]
    .map((ch) => {
      const code = ch.codePointAt(0)!;
      // Hiragana → katakana (same order, 0x60 apart).
      const kata = code >= 0x3041 && code <= 0x3096 ? String.fromCodePoint(code + 0x60) : ch;
      return SMALL_KANA[kata] ?? kata;
    })
    .join('')
    .replace(/[\s\u3000・.,，、。\-‐－ー]/gu, (c) => (c === 'ー' ? c : ''))
    .toUpperCase();
}

export const sameHolderName = (a: string, b: string) =>
  normalizeHolderName(a).length > 0 && normalizeHolderName(a) === normalizeHolderName(b);
