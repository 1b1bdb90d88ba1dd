/**
 * Institution data: storage of balances, holdings and transactions per account, and their
 * ingestion from member institutions (batched, validated, idempotent, all or nothing).
 */
export { demoBatch, ingestDemoLedger } from './demoData.ts';
export {
  canonicalJson,
  IngestError,
  type IngestErrorCode,
  type IngestIssue,
  type IngestOutcome,
  type IngestResult,
  ingestBatch,
} from './ingest.ts';
export {
  ASSET_CLASSES,
  BATCH_LIMITS,
  batchJsonSchema,
  type IngestBatch,
  isValidIsin,
  NISA_FRAMES,
  plausibleDateTime,
  TAX_CATEGORIES,
  TRANSACTION_TYPES,
} from './schema.ts';
