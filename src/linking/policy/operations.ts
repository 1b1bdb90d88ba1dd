/**
 * The operations the withdrawal-strength policy decides, and the facts each one is decided on.
 * A rule may only test facts its operation has, with values of the fact's kind: a typo in the
 * policy file stops the hub at start instead of silently never matching.
 */

import { PRODUCTS } from '../productCatalogue.ts';

/** Assurance of the customer's sign-in or approval (see src/oidc/provider.ts ACR_VALUES). */
export const ACR_FACT_VALUES = ['phrh', 'phr', 'otp', 'none'] as const;
/** Risk of the session or customer (src/risk). */
export const RISK_LEVELS = ['low', 'medium', 'high'] as const;
/**
 * How strongly a bank authenticates its own funds movements, from what its ID token asserts:
 * passkeys/PKI, OTP-class MFA, a password alone, or nothing we recognise.
 */
export const BANK_STRENGTHS = ['phishing_resistant', 'otp', 'password', 'unknown'] as const;

export type FactKind = { kind: 'boolean' } | { kind: 'number' } | { kind: 'enum'; values: readonly string[] };

const bool = { kind: 'boolean' } as const;
const num = { kind: 'number' } as const;
const acr = { kind: 'enum', values: ACR_FACT_VALUES } as const;
const risk = { kind: 'enum', values: RISK_LEVELS } as const;

/** Operation → fact name → kind. Facts are documented where they are derived (src/linking). */
export const OPERATIONS = {
  /** An aggregator reads consented data (decided inline by the read API; here for the record). */
  aggregator_read: { consentActive: bool, firstConsent: bool, acr, channelDisabled: bool },
  /** Money leaves a brokerage account to the registered withdrawal account. */
  withdrawal: {
    acr,
    /** Seconds since the passkey assertion (or, exempted customers, the TOTP code) that approved it. */
    authAgeSeconds: num,
    /** The approval's WebAuthn challenge committed to exactly these amount and destination. */
    detailsBound: bool,
    destinationNameMatches: bool,
    /** The destination is the customer's registered withdrawal account. */
    destinationRegistered: bool,
    destinationInCoolOff: bool,
    amount: num,
    overDailyCap: bool,
    /** Yen withdrawn today (Japan) including this amount: the exempted customers' lower cap. */
    dailyTotal: num,
    newDevice: bool,
    riskLevel: risk,
    frozen: bool,
    /** The customer switched withdrawals off (src/linking/channels.ts). */
    channelDisabled: bool,
    /** The customer holds an operator's exemption from passkeys (TOTP instead; src/authn/exemptions.ts). */
    exempted: bool,
  },
  /** The customer registers a new withdrawal bank account. */
  change_withdrawal_account: {
    acr,
    authAgeSeconds: num,
    detailsBound: bool,
    nameMatches: bool,
    accountLocked: bool,
    frozen: bool,
  },
  /** A bank account is linked to a brokerage account for sweeps. */
  create_sweep_link: {
    brokerageAcr: acr,
    bankStrength: { kind: 'enum', values: BANK_STRENGTHS },
    nameMatches: bool,
    frozen: bool,
  },
  /** Money is pulled from a linked bank account at a purchase. */
  sweep_pull: {
    amount: num,
    /** Today's pulls on this link plus this amount exceed the link's own daily cap. */
    overDailyCap: bool,
    /**
     * Today's pulls over all the customer's links plus this amount exceed the customer's own daily
     * sweep limit (sweep_daily, src/linking/limits.ts).
     */
    overCustomerLimit: bool,
    /**
     * The bank authenticated this pull with a phishing-resistant method bound to the amount: the
     * brokerage's claim counts only for a link whose bank authenticates phishing-resistantly.
     */
    bankApprovalBound: bool,
    /** Days since the customer's last credential or contact change (large when never). */
    daysSinceCredentialChange: num,
    linkSuspended: bool,
    frozen: bool,
    /** The customer switched sweeps off. */
    channelDisabled: bool,
  },
  /** A brokerage is about to execute an order in a product for the customer. */
  trade: {
    product: { kind: 'enum', values: PRODUCTS },
    /** The customer allows trading in this product (src/linking/products.ts). */
    productAllowed: bool,
    /** The customer asked to allow it and the cool-off has not ended yet. */
    productPending: bool,
    riskLevel: risk,
    frozen: bool,
  },
  /** A limit goes up, a channel (e.g. sweeps) is switched on, a product is allowed. */
  raise_limit: { acr, authAgeSeconds: num, frozen: bool },
  /** A limit goes down, a channel or product is switched off, a link is removed: never held back. */
  lower_limit: {},
} as const satisfies Record<string, Record<string, FactKind>>;

export type Operation = keyof typeof OPERATIONS;
export const OPERATION_NAMES = Object.keys(OPERATIONS) as Operation[];

type FactValue<K> = K extends { kind: 'boolean' }
  ? boolean
  : K extends { kind: 'number' }
    ? number
    : K extends { kind: 'enum'; values: readonly (infer V)[] }
      ? V
      : never;

/** The facts an operation is decided on, typed per operation. */
export type FactsOf<O extends Operation> = {
  -readonly [F in keyof (typeof OPERATIONS)[O]]: FactValue<(typeof OPERATIONS)[O][F]>;
};

export const isOperation = (value: unknown): value is Operation =>
  typeof value === 'string' && Object.hasOwn(OPERATIONS, value);
