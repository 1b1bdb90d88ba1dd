/**
 * The fixed product catalogue a customer allows or blocks trading in (issue 6, item 3; JSDA IV.1.(2)
 * BP②). The policy's `trade` facts, the notification data, the security page and migrations/0023 use
 * these names; no imports, so config, notify and web can share it.
 */
export const PRODUCTS = [
  /** Japanese listed shares and ETFs (現物). */
  'domestic_equity',
  /** Foreign shares and ETFs (US, China, ASEAN …): what the 2025 takeovers bought. */
  'foreign_equity',
  /** Mutual funds (投資信託), including NISA. */
  'investment_trust',
  /** Domestic and foreign bonds. */
  'bonds',
  /** Margin trading (信用取引). */
  'margin',
  /** Futures and options (先物・オプション). */
  'derivatives',
  /** Foreign-exchange margin trading (FX). */
  'fx',
] as const;
export type Product = (typeof PRODUCTS)[number];

export const isProduct = (v: unknown): v is Product =>
  typeof v === 'string' && (PRODUCTS as readonly string[]).includes(v);

/** How customers know the products, in both languages. */
export const PRODUCT_NAMES: Record<'ja' | 'en', Record<Product, string>> = {
  ja: {
    domestic_equity: '国内株式',
    foreign_equity: '外国株式',
    investment_trust: '投資信託',
    bonds: '債券',
    margin: '信用取引',
    derivatives: '先物・オプション',
    fx: 'FX（外国為替証拠金取引）',
  },
  en: {
    domestic_equity: 'Domestic shares',
    foreign_equity: 'Foreign shares',
    investment_trust: 'Investment trusts',
    bonds: 'Bonds',
    margin: 'Margin trading',
    derivatives: 'Futures and options',
    fx: 'FX (foreign-exchange margin)',
  },
};
