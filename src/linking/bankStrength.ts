/**
 * How strongly a bank authenticates its own funds movements, from what its ID token asserts. A
 * bank's own acr values are mapped by its configuration (`linking.banks[].acrStrength`) first; then
 * the well-known acr values `phr` / `phrh` (OpenID EAP ACR Values 1.0, the hub's own) exactly, then
 * the `amr` values (RFC 8176). An acr is never read for words: `urn:bank:no-passkey` or
 * `…:passkey-or-password` say nothing a bank has committed to, so an unmapped acr only falls back
 * to amr.
 *   phishing_resistant  a key (hwk/swk/pop) used with user verification (user, pin, fpt, face, iris,
 *                       retina, vbm), or acr exactly `phr` or `phrh`
 *   otp                 one-time codes: otp, sms, tel, or `mfa` without anything stronger named
 *   password            pwd (or kba) alone
 *   unknown             nothing we recognise: treated like a password by the policy
 */
import type { BANK_STRENGTHS } from './policy/operations.ts';

export type BankStrength = (typeof BANK_STRENGTHS)[number];

const KEYS = ['hwk', 'swk', 'pop'];
const USER_VERIFICATION = ['user', 'pin', 'fpt', 'face', 'iris', 'retina', 'vbm'];
const OTP = ['otp', 'sms', 'tel'];
/** OpenID EAP ACR Values 1.0: phishing-resistant (`phrh`: with a hardware-protected key). */
const PHISHING_RESISTANT_ACR = ['phr', 'phrh'];

export interface BankAssertion {
  acr?: unknown;
  amr?: unknown;
}

export function bankStrength(
  assertion: BankAssertion,
  acrStrength: Readonly<Record<string, BankStrength>> = {},
): BankStrength {
  const acr = typeof assertion.acr === 'string' ? assertion.acr : undefined;
  if (acr !== undefined && Object.hasOwn(acrStrength, acr)) return acrStrength[acr]!;
  const amr = Array.isArray(assertion.amr)
    ? assertion.amr.filter((v): v is string => typeof v === 'string').map((v) => v.toLowerCase())
    : [];
  const has = (list: string[]) => amr.some((v) => list.includes(v));
  if ((has(KEYS) && has(USER_VERIFICATION)) || (acr !== undefined && PHISHING_RESISTANT_ACR.includes(acr)))
    return 'phishing_resistant';
  if (has(OTP) || amr.includes('mfa')) return 'otp';
  if (amr.includes('pwd') || amr.includes('kba')) return 'password';
  return 'unknown';
}
