/**
 * Comparing a name or birth date confirmed by a proofing method with the customer's registered
 * ones. Japanese names arrive in many spellings of the same characters: full- and half-width
 * (ﾔﾏﾀﾞ / ヤマダ), ideographic or ASCII spaces, hiragana or katakana readings, a middle dot
 * between parts. Those differences are removed; anything else (a different kanji) is a mismatch.
 */

/** NFKC (widths), no spaces or separators, hiragana → katakana, upper-case Latin. */
export function normalizeName(input: string): string {
  return input
    .normalize('NFKC')
    .replace(/[\s\u3000・･·\-‐]/g, '')
    .replace(/[\u3041-\u3096]/g, (c) => String.fromCharCode(c.charCodeAt(0) + 0x60))
    .toUpperCase();
}

export function namesMatch(a: string | undefined | null, b: string | undefined | null): boolean {
  if (!a || !b) return false;
  const x = normalizeName(a);
  return x.length > 0 && x === normalizeName(b);
}

/** YYYY-MM-DD from a date string as OIDC (`birthdate`) or PostgreSQL (`date::text`) spell it. */
export function normalizeBirthdate(input: unknown): string | undefined {
  if (typeof input !== 'string') return undefined;
  const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(input.normalize('NFKC').trim());
  return m ? `${m[1]}-${m[2]}-${m[3]}` : undefined;
}
