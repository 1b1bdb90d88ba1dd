export type ProofingErrorCode =
  | 'ERR_PROOFING_METHOD_DISABLED'
  | 'ERR_PROOFING_FLOW'
  | 'ERR_PROOFING_MISMATCH'
  | 'ERR_PROOFING_TICKET'
  | 'ERR_PROOFING_UPSTREAM'
  | 'ERR_PROOFING_TRUST_FRAMEWORK'
  | 'ERR_PROOFING_CERTIFICATE'
  | 'ERR_PROOFING_SIGNATURE'
  | 'ERR_PROOFING_CERTIFICATE_REVOKED'
  | 'ERR_PROOFING_CERTIFICATE_NO_IDENTITY'
  | 'ERR_PROOFING_REVOCATION_UNAVAILABLE'
  | 'ERR_PROOFING_INPUT';

/**
 * Safe to show: never says which of name or birth date differed, nor whether a customer number
 * exists (one message for both), nor any upstream detail (that goes to the proofing record).
 */
const MESSAGES: Record<ProofingErrorCode, string> = {
  ERR_PROOFING_METHOD_DISABLED: 'This way of confirming your identity is not offered.',
  ERR_PROOFING_FLOW: 'This identity confirmation is no longer valid. Please start again.',
  ERR_PROOFING_MISMATCH: 'The confirmed identity does not match our records for this customer number.',
  ERR_PROOFING_TICKET: 'The enrollment code could not be accepted.',
  ERR_PROOFING_UPSTREAM: 'The identity provider did not confirm your identity. Please try again.',
  ERR_PROOFING_TRUST_FRAMEWORK:
    'The identity provider did not confirm your identity to the required standard.',
  ERR_PROOFING_CERTIFICATE: 'The certificate could not be accepted.',
  ERR_PROOFING_SIGNATURE: 'The signature could not be verified.',
  ERR_PROOFING_CERTIFICATE_REVOKED:
    'This certificate has been revoked (for example after the card was renewed or reported lost). Please use a card with a valid signature certificate.',
  ERR_PROOFING_CERTIFICATE_NO_IDENTITY:
    'This certificate does not state a name and date of birth. Please use the signature certificate of your My Number card.',
  ERR_PROOFING_REVOCATION_UNAVAILABLE:
    'The validity of the certificate cannot be checked right now. Please try again later.',
  ERR_PROOFING_INPUT: 'The request is incomplete.',
};

/** The same messages for the Japanese pages. */
const MESSAGES_JA: Record<ProofingErrorCode, string> = {
  ERR_PROOFING_METHOD_DISABLED: 'この方法での本人確認は提供していません。',
  ERR_PROOFING_FLOW: 'この本人確認の手続きは無効になりました。最初からやり直してください。',
  ERR_PROOFING_MISMATCH: '確認された本人情報が、このお客様番号の登録内容と一致しません。',
  ERR_PROOFING_TICKET: '登録コードを受け付けられませんでした。',
  ERR_PROOFING_UPSTREAM: '本人確認サービスで本人確認ができませんでした。もう一度お試しください。',
  ERR_PROOFING_TRUST_FRAMEWORK: '本人確認サービスによる確認が、必要な基準を満たしていません。',
  ERR_PROOFING_CERTIFICATE: 'この電子証明書は受け付けられません。',
  ERR_PROOFING_SIGNATURE: '署名を検証できませんでした。',
  ERR_PROOFING_CERTIFICATE_REVOKED:
    'この電子証明書は失効しています（カードの更新や紛失の届出などによる）。有効な署名用電子証明書のカードをお使いください。',
  ERR_PROOFING_CERTIFICATE_NO_IDENTITY:
    'この電子証明書には氏名と生年月日が記録されていません。マイナンバーカードの署名用電子証明書をお使いください。',
  ERR_PROOFING_REVOCATION_UNAVAILABLE:
    '現在、電子証明書の有効性を確認できません。しばらくしてからもう一度お試しください。',
  ERR_PROOFING_INPUT: '入力が不足しています。',
};

/** The customer-facing message of a code, in the page's language. */
export function proofingErrorMessage(code: ProofingErrorCode, lang: 'ja' | 'en'): string {
  return (lang === 'ja' ? MESSAGES_JA : MESSAGES)[code];
}

/**
 * The refusal when some of a method's checks of the proven identity against the registered one
 * failed: the record's reason names them (`mismatch:birthdate`), the evidence keeps the checks.
 */
export function mismatchError(checks: Record<string, boolean>, evidence: Record<string, unknown>) {
  const failed = Object.entries(checks)
    .filter(([, ok]) => !ok)
    .map(([k]) => k);
  return new ProofingError('ERR_PROOFING_MISMATCH', { reason: `mismatch:${failed.join(',')}`, evidence });
}

export class ProofingError extends Error {
  override name = 'ProofingError';
  readonly code: ProofingErrorCode;
  /** For the proofing record: a short reason and non-secret facts (never names or birth dates). */
  readonly reason: string;
  readonly evidence: Record<string, unknown>;

  constructor(
    code: ProofingErrorCode,
    o: { reason?: string; evidence?: Record<string, unknown>; message?: string; cause?: unknown } = {},
  ) {
    super(o.message ?? MESSAGES[code], o.cause === undefined ? undefined : { cause: o.cause });
    this.code = code;
    this.reason = o.reason ?? code;
    this.evidence = o.evidence ?? {};
  }
}
