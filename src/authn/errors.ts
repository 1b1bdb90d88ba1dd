export type AuthnErrorCode =
  | 'ERR_TICKET_MALFORMED'
  | 'ERR_TICKET_INVALID'
  | 'ERR_TICKET_EXPIRED'
  | 'ERR_TICKET_USED'
  | 'ERR_TICKET_VOIDED'
  | 'ERR_TICKET_LOCKED'
  | 'ERR_CUSTOMER_UNKNOWN'
  | 'ERR_CUSTOMER_INACTIVE'
  | 'ERR_WEBAUTHN_CHALLENGE'
  | 'ERR_WEBAUTHN_VERIFICATION'
  | 'ERR_PASSKEY_UNKNOWN'
  | 'ERR_PASSKEY_COUNTER'
  | 'ERR_PASSKEY_DISABLED'
  | 'ERR_PASSKEY_LAST'
  | 'ERR_NOT_EXEMPT'
  | 'ERR_TOTP_INVALID';

/**
 * Messages are safe to show to the customer: they never echo input, secrets or library detail
 * (the detail goes to the audit log and `cause`).
 */
const MESSAGES: Record<AuthnErrorCode, string> = {
  ERR_TICKET_MALFORMED: 'The enrollment code is not in the expected format (KKH- followed by 20 characters).',
  // One message for wrong, unknown and other customers' tickets: a guesser learns nothing.
  ERR_TICKET_INVALID: 'The customer number or the enrollment code is not correct.',
  ERR_TICKET_EXPIRED: 'This enrollment code has expired. Please ask for a new one.',
  ERR_TICKET_USED: 'This enrollment code has already been used.',
  ERR_TICKET_VOIDED: 'This enrollment code has been cancelled. Please use the newest code you received.',
  ERR_TICKET_LOCKED:
    'Enrollment is blocked after too many incorrect codes. Please contact us to receive a new enrollment code.',
  ERR_CUSTOMER_UNKNOWN: 'The customer could not be found.',
  ERR_CUSTOMER_INACTIVE: 'This account is currently not available for sign-in. Please contact us.',
  ERR_WEBAUTHN_CHALLENGE: 'This passkey request is no longer valid. Please start again.',
  ERR_WEBAUTHN_VERIFICATION: 'The passkey could not be verified. Please try again.',
  ERR_PASSKEY_UNKNOWN: 'This passkey is not registered with us.',
  ERR_PASSKEY_COUNTER: 'This passkey could not be accepted. Please contact us.',
  ERR_PASSKEY_DISABLED:
    'This passkey has been disabled for your protection. Please use another passkey or contact us.',
  ERR_NOT_EXEMPT: 'Sign-in without a passkey needs an exemption granted by us. Please contact us.',
  ERR_TOTP_INVALID: 'The customer number or the code is not correct.',
  ERR_PASSKEY_LAST: 'Your last passkey cannot be removed: you would have no way left to sign in.',
};

/** The same messages for the Japanese pages. */
const MESSAGES_JA: Record<AuthnErrorCode, string> = {
  ERR_TICKET_MALFORMED: '登録コードの形式が正しくありません（KKH- に続く20文字）。',
  ERR_TICKET_INVALID: 'お客様番号または登録コードが正しくありません。',
  ERR_TICKET_EXPIRED: 'この登録コードは有効期限が切れています。新しいコードをご請求ください。',
  ERR_TICKET_USED: 'この登録コードはすでに使用されています。',
  ERR_TICKET_VOIDED: 'この登録コードは無効になりました。最後にお届けしたコードをお使いください。',
  ERR_TICKET_LOCKED:
    '誤った登録コードの入力が続いたため、登録を停止しています。新しい登録コードをお届けしますので、当社までご連絡ください。',
  ERR_CUSTOMER_UNKNOWN: 'お客様が見つかりません。',
  ERR_CUSTOMER_INACTIVE: 'このアカウントは現在ログインできません。当社までご連絡ください。',
  ERR_WEBAUTHN_CHALLENGE: 'このパスキーの要求は無効になりました。最初からやり直してください。',
  ERR_WEBAUTHN_VERIFICATION: 'パスキーを確認できませんでした。もう一度お試しください。',
  ERR_PASSKEY_UNKNOWN: 'このパスキーは登録されていません。',
  ERR_PASSKEY_COUNTER: 'このパスキーは受け付けられません。当社までご連絡ください。',
  ERR_PASSKEY_DISABLED:
    'このパスキーは保護のため停止されています。ほかのパスキーをお使いいただくか、当社までご連絡ください。',
  ERR_NOT_EXEMPT: 'パスキーを使わないログインには、当社による免除が必要です。当社までご連絡ください。',
  ERR_TOTP_INVALID: 'お客様番号またはコードが正しくありません。',
  ERR_PASSKEY_LAST: '最後のパスキーは削除できません。ログインする方法がなくなってしまいます。',
};

/** The customer-facing message of a code, in the page's language. */
export function authnErrorMessage(code: AuthnErrorCode, lang: 'ja' | 'en'): string {
  return (lang === 'ja' ? MESSAGES_JA : MESSAGES)[code];
}

export class AuthnError extends Error {
  override name = 'AuthnError';
  readonly code: AuthnErrorCode;
  /** The customer the failure is attributable to (a registered passkey failed), for throttling. */
  customerId: string | undefined;

  constructor(code: AuthnErrorCode, options?: { cause?: unknown }) {
    super(MESSAGES[code], options);
    this.code = code;
  }
}
