/**
 * The one comparison of personal names in the hub: a name confirmed by a proofing method (eKYC,
 * JPKI) against the registered one, a bank's asserted account holder against the customer (名義一致
 * when linking), and a withdrawal destination's holder against the registered names. One set of
 * rules, so a name that matches at proofing matches at linking and at a withdrawal, and the reverse.
 *
 * Japanese names arrive in many spellings of the same characters: full- and half-width
 * (ﾔﾏﾀﾞ / ヤマダ), ideographic or ASCII spaces, hiragana or katakana readings, a middle dot or comma
 * between parts, old kanji forms (髙 / 高), and banks keep holder names in 全銀 form (half-width
 * katakana, large kana only, "-" for the long vowel mark, e.g. "ｼﾞﾖ-"). Those differences are
 * removed; anything else (another kanji, voiced against unvoiced kana, a missing long vowel mark)
 * is a mismatch.
 */

/**
 * Small kana become large. The 全銀 character set has no small kana, so a bank holds キョウコ as
 * キヨウコ; and proofing folds them too: registers, My Number cards and bank records spell the same
 * reading either way, and banks themselves compare names this way. The reading alone is never what
 * identifies a person here — the kanji name and the birth date are checked as well.
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

/** Old or variant forms of kanji common in names (戸籍 and My Number cards keep them), mapped to the form most records use. */
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
/**
 * A hyphen or dash right after a kana is the long vowel mark (banks write ジョー as "ｼﾞﾖ-"; people
 * type ー with whatever dash they have); anywhere else (Mary-Ann, 山田-太郎) it only separates parts.
 */
const DASH_AFTER_KANA = /(?<=[\u30a1-\u30fa\u30fc])[-‐‑‒–—―−]/g;
/** Every space, separator, remaining dash and the middle dot some records put between family and given name. */
const SEPARATORS = /[\s\u3000・･·,，.．\-‐‑‒–—―−]/g;

/**
 * The comparable form of a name: NFKC (half-width kana become full-width with their voicing marks
 * combined, full-width letters become ASCII, ｰ becomes ー), hiragana as katakana, a dash after kana as
 * the long vowel mark, no spaces or separators, small kana large, variant kanji in their common
 * form, letters upper case.
 */
export function normalizeName(name: string): string {
  let s = name.normalize('NFKC');
  s = s.replace(HIRAGANA, (c) => String.fromCharCode(c.charCodeAt(0) + 0x60));
  s = s.replace(DASH_AFTER_KANA, 'ー');
  s = s.replace(SEPARATORS, '');
  s = [...s].map((c) => SMALL_KANA[c] ?? KANJI_VARIANTS[c] ?? c).join('');
  return s.toUpperCase();
}

/** Two spellings of one name: equal after normalisation, and not empty. */
export function namesMatch(a: string | undefined | null, b: string | undefined | null): boolean {
  if (!a || !b) return false;
  const x = normalizeName(a);
  return x.length > 0 && x === normalizeName(b);
}

/** Whether a normalised name is written in kana only (katakana and the long vowel mark). */
const isKana = (normalized: string) => /^[\u30a0-\u30ffー]+$/u.test(normalized);

export interface RegisteredName {
  kanji: string;
  kana: string;
}

/**
 * True when one of the asserted names (a bank's account holder, in whatever forms it gave) is the
 * customer's registered kana name or registered kanji name. Kana is compared with kana and anything
 * else with the kanji name: a reading cannot be derived from kanji, so a kanji name never matches
 * a kana name — even when the registered "kanji" name is itself written in kana.
 */
export function matchesRegisteredName(registered: RegisteredName, asserted: readonly string[]): boolean {
  return asserted.some((raw) => {
    const n = normalizeName(raw);
    if (!n) return false;
    return namesMatch(n, isKana(n) ? registered.kana : registered.kanji);
  });
}

/** YYYY-MM-DD from a date string as OIDC (`birthdate`) or PostgreSQL (`date::text`) spell it. */
export function normalizeBirthdate(input: unknown): string | undefined {
  if (typeof input !== 'string') return undefined;
  const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(input.normalize('NFKC').trim());
  return m ? `${m[1]}-${m[2]}-${m[3]}` : undefined;
}
