/**
 * How strongly a bank authenticates its own funds movements, from what its ID token asserts. A
 * bank's own acr values are mapped by its configuration (`linking.banks[].acrStrength`) first; then
 * the `amr` values (RFC 8176) and acr values that name passkeys decide:
 *   phishing_resistant  a key (hwk/swk/pop) used with user verification (user, pin, fpt, face, iris,
 *                       retina, vbm), or an acr naming FIDO/passkeys or the hub's own phr/phrh
 *   otp                 one-time codes: otp, sms, tel, or `mfa` without anything stronger named
 *   password            pwd (or kba) alone
 *   unknown             nothing we recognise: treated like a password by the policy
 */
import type { BANK_STRENGTHS } from './policy/operations.ts';

export type BankStrength = (typeof BANK_STRENGTHS)[number];

const KEYS = ['hwk', 'swk', 'pop'];
const USER_VERIFICATION = ['user', 'pin', 'fpt', 'face', 'iris', 'retina', 'vbm'];
const OTP = ['otp', 'sms', 'tel'];
const PASSKEY_ACR = /(?:^|[^a-z])(?:fido2?|passkeys?|webauthn|phrh?)(?:$|[^a-z])/i;

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
  if ((has(KEYS) && has(USER_VERIFICATION)) || (acr !== undefined && PASSKEY_ACR.test(acr)))
    return 'phishing_resistant';
  if (has(OTP) || amr.includes('mfa')) return 'otp';
  if (amr.includes('pwd') || amr.includes('kba')) return 'password';
  return 'unknown';
}
