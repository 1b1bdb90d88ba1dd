/**
 * How strongly a bank authenticates its own funds movements, from what its ID token asserts. A
 * bank's acr values count only as its configuration maps them (`linking.banks[].acrStrength`): the
 * operator's record of what that bank's value means for funds movement. An acr the bank did not
 * map never counts as phishing-resistant — not `urn:bank:no-passkey` or `…:passkey-or-password`
 * (never read for words), and not the OpenID EAP values `phr` / `phrh` either (a bank using them
 * maps them like any other value); the `amr` values (RFC 8176) decide then.
 *   phishing_resistant  a key (hwk/swk/pop) used with user verification (user, pin, fpt, face, iris,
 *                       retina, vbm)
 *   otp                 one-time codes: otp, sms, tel, or `mfa` without anything stronger named
 *   password            pwd (or kba) alone
 *   unknown             nothing we recognise: treated like a password by the policy
 */
import type { BANK_STRENGTHS } from './policy/operations.ts';

export type BankStrength = (typeof BANK_STRENGTHS)[number];

const KEYS = ['hwk', 'swk', 'pop'];
const USER_VERIFICATION = ['user', 'pin', 'fpt', 'face', 'iris', 'retina', 'vbm'];
const OTP = ['otp', 'sms', 'tel'];

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
  if (has(KEYS) && has(USER_VERIFICATION)) return 'phishing_resistant';
  if (has(OTP) || amr.includes('mfa')) return 'otp';
  if (amr.includes('pwd') || amr.includes('kba')) return 'password';
  return 'unknown';
}
