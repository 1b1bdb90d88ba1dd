/**
 * RFC 9396 authorization_details types for operations a brokerage asks the customer to approve:
 *
 *   { "type": "withdrawal", "instructedAmount": { "amount": "50000", "currency": "JPY" },
 *     "sourceAccountId": "acc-…", "destination": { "bankCode": "0005", "bankName": "…",
 *     "branchCode": "123", "accountType": "ordinary", "accountNumber": "1234567", "holderName": "ヤマダ タロウ" } }
 *   { "type": "withdrawal_account_change", "sourceAccountId": "acc-…", "newAccount": { …destination… } }
 *
 * The customer sees them (account number masked) and approves with a passkey whose WebAuthn
 * challenge begins with the SHA-256 of the details' canonical JSON (see approvalChallenge).
 */
import { createHash, randomBytes } from 'node:crypto';
import { z } from 'zod';

export const OPERATION_DETAIL_TYPES = ['withdrawal', 'withdrawal_account_change'] as const;
export type OperationDetailType = (typeof OPERATION_DETAIL_TYPES)[number];

const ACCOUNT_TYPES = ['ordinary', 'current', 'savings'] as const;

/**
 * Characters a customer cannot see as they are: controls (a NUL also cannot be stored in the
 * approval's JSON), format characters (zero-width, bidirectional overrides and isolates, which
 * reorder what follows them on the approval page: bank code, branch, account), private-use,
 * unpaired surrogates, unassigned code points, line and paragraph separators.
 */
const UNSHOWABLE = /[\p{Cc}\p{Cf}\p{Co}\p{Cs}\p{Cn}\p{Zl}\p{Zp}]/u;

/** Text the approval page shows as it is, so what the customer reads is what the details say. */
const shownText = (max: number) =>
  z
    .string()
    .min(1)
    .max(max)
    .refine((s) => !UNSHOWABLE.test(s), 'control, invisible or direction-changing characters are not allowed')
    .refine((s) => s.trim() === s && s !== '', 'no leading or trailing spaces');

const bankAccount = z.strictObject({
  /** 全銀 bank code (4 digits) and branch code (3 digits). */
  bankCode: z.string().regex(/^\d{4}$/, 'a 4-digit bank code'),
  bankName: shownText(60),
  branchCode: z.string().regex(/^\d{3}$/, 'a 3-digit branch code'),
  accountType: z.enum(ACCOUNT_TYPES),
  accountNumber: z.string().regex(/^\d{7}$/, 'a 7-digit account number'),
  /** As the bank records it (カナ). */
  holderName: shownText(60),
});
export type BankAccountDetails = z.output<typeof bankAccount>;

const accountId = z.string().regex(/^[\x21-\x7e]{1,64}$/, 'an account id');

export const withdrawalDetails = z.strictObject({
  type: z.literal('withdrawal'),
  instructedAmount: z.strictObject({
    /** Whole yen as a decimal string, as RFC 9396 examples carry amounts. */
    amount: z.string().regex(/^[1-9]\d{0,11}$/, 'whole yen, 1 to 999,999,999,999'),
    currency: z.literal('JPY'),
  }),
  sourceAccountId: accountId,
  destination: bankAccount,
});
export type WithdrawalDetails = z.output<typeof withdrawalDetails>;

export const withdrawalAccountChangeDetails = z.strictObject({
  type: z.literal('withdrawal_account_change'),
  sourceAccountId: accountId,
  newAccount: bankAccount,
});
export type WithdrawalAccountChangeDetails = z.output<typeof withdrawalAccountChangeDetails>;

export const operationDetails = z.discriminatedUnion('type', [
  withdrawalDetails,
  withdrawalAccountChangeDetails,
]);
export type OperationDetails = z.output<typeof operationDetails>;

export const isOperationDetailType = (type: unknown): type is OperationDetailType =>
  typeof type === 'string' && (OPERATION_DETAIL_TYPES as readonly string[]).includes(type);

/** Parses one detail; the message names the first problem by its path (for invalid_authorization_details). */
export function parseOperationDetails(
  input: unknown,
): { ok: true; details: OperationDetails } | { ok: false; problem: string } {
  const r = operationDetails.safeParse(input);
  if (r.success) return { ok: true, details: r.data };
  const i = r.error.issues[0]!;
  return { ok: false, problem: `${i.path.join('.') || '(detail)'}: ${i.message}` };
}

/** JSON with object keys sorted at every level (RFC 8785 for the strings and integers used here). */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value !== null && typeof value === 'object')
    return `{${Object.keys(value)
      .sort()
      .filter((k) => (value as Record<string, unknown>)[k] !== undefined)
      .map((k) => `${JSON.stringify(k)}:${canonicalJson((value as Record<string, unknown>)[k])}`)
      .join(',')}}`;
  return JSON.stringify(value);
}

/** SHA-256 of the canonical JSON of exactly the approved fields (unknown members never reach here). */
export function detailsHash(details: OperationDetails): Buffer {
  return createHash('sha256')
    .update(canonicalJson(operationDetails.parse(details)))
    .digest();
}

/** A WebAuthn challenge that commits to the details: their hash, then 16 random bytes. */
export function approvalChallenge(details: OperationDetails): Uint8Array<ArrayBuffer> {
  return new Uint8Array(Buffer.concat([detailsHash(details), randomBytes(16)]));
}

/** Whether a (base64url) challenge the authenticator signed commits to these details. */
export function challengeCommitsTo(challenge: string, details: OperationDetails): boolean {
  const bytes = Buffer.from(challenge, 'base64url');
  return bytes.length === 48 && bytes.subarray(0, 32).equals(detailsHash(details));
}

/** `****567`: what pages and notices show of an account number. */
export const maskAccountNumber = (n: string) => `${'*'.repeat(Math.max(0, n.length - 3))}${n.slice(-3)}`;
