import type { Config } from '../config/index.ts';
import type { Db } from '../db/index.ts';
import type { ProofingMethod } from './method.ts';
import { type EkycAnswer, type EkycStart, ekycMethod } from './methods/ekyc.ts';
import { type JpkiAnswer, type JpkiStart, jpkiMethod } from './methods/jpki.ts';

/** The configured proofing methods (the ticket method is always on; it is built per request). */
export interface ProofingContext {
  db: Db;
  ekyc: ProofingMethod<EkycStart, EkycAnswer> | undefined;
  jpki: ProofingMethod<JpkiStart, JpkiAnswer> | undefined;
}

/** Where the eKYC provider sends the browser back (register it with the provider). */
export const EKYC_CALLBACK_PATH = '/proofing/ekyc/callback';

export function createProofingContext(db: Db, config: Config): ProofingContext {
  const p = config.proofing;
  return {
    db,
    ekyc: p.ekyc
      ? ekycMethod(p.ekyc, { redirectUri: `${config.issuer}${EKYC_CALLBACK_PATH}`, ttlSeconds: p.flowTtl })
      : undefined,
    jpki: p.jpki ? jpkiMethod(p.jpki) : undefined,
  };
}
