/**
 * 名義一致 between two bank-account holder names (a withdrawal destination and the registered
 * withdrawal account): both normalised as bank links compare names (nameMatch.ts), then equal.
 */
import { normalizeName } from './nameMatch.ts';

export function sameHolderName(a: string, b: string): boolean {
  const x = normalizeName(a);
  return x.length > 0 && x === normalizeName(b);
}
