/**
 * Institution ingestion over HTTP: `POST /api/institution/v1/batches`. A member institution
 * (see institution.ts) with a DPoP-bound token carrying the `institution:ingest` scope pushes one
 * batch per call. The batch goes through ingestBatch: all or nothing, idempotent
 * under the Idempotency-Key. Every accepted, replayed and refused batch is audited with the
 * institution, the client and counts — never the payload.
 */
import type { Context } from 'koa';
import type Provider from 'oidc-provider';
import { recordAudit } from '../audit/index.ts';
import { recordSampledAudit } from '../audit/sampled.ts';
import type { Config } from '../config/index.ts';
import type { Db } from '../db/index.ts';
import { BodyError, readBodyText } from '../http/index.ts';
import { IngestError, type IngestIssue, ingestBatch } from '../ledger/index.ts';
import { createDbReplayStore } from './dpop.ts';
import { ApiError } from './errors.ts';
import { createInstitutionAuthenticator, INGEST_SCOPE, type InstitutionTrace } from './institution.ts';

/** 5,000 transactions are about 2 MB of JSON; anything much larger is not a batch we accept. */
export const INGEST_BODY_LIMIT_BYTES = 4 * 1024 * 1024;

const IDEMPOTENCY_KEY = /^[\x21-\x7e]{1,255}$/;
/** A batch is at most 5 levels deep (holdings[i].positions[j].field); far deeper input is junk. */
const MAX_DEPTH = 16;
const SECTIONS = ['balances', 'holdings', 'transactions'] as const;

export interface IngestRouteOptions {
  provider: Provider;
  db: Db;
  config: Config;
  /** Largest request body accepted (bytes); more is 413. Default 4 MiB. */
  maxBodyBytes?: number;
}

/** What is known of a request for its audit record (never the payload). */
interface Trace extends InstitutionTrace {
  idempotencyKey?: string;
  received?: Record<string, number>;
}

/** A 422 carrying the refused records. */
class RejectedBatch extends Error {
  readonly issues: IngestIssue[];
  constructor(message: string, issues: IngestIssue[]) {
    super(message);
    this.issues = issues;
  }
}

const pathText = (path: readonly (string | number)[]) => {
  let text = '';
  for (const p of path) text += typeof p === 'number' ? `[${p}]` : text ? `.${p}` : p;
  return text;
};

function issueAt(path: (string | number)[], reason: string): IngestIssue {
  const section = SECTIONS.find((s) => s === path[0]);
  const index = typeof path[1] === 'number' ? path[1] : undefined;
  return {
    path: pathText(path),
    ...(section ? { section } : {}),
    ...(index !== undefined ? { index } : {}),
    reason,
  };
}

/**
 * What the database cannot store or the hashing cannot walk, found without recursion: strings
 * holding NUL (PostgreSQL text refuses it) and nesting far deeper than any batch.
 */
function unstorable(value: unknown): IngestIssue[] {
  const issues: IngestIssue[] = [];
  const stack: Array<{ v: unknown; path: (string | number)[] }> = [{ v: value, path: [] }];
  while (stack.length && issues.length < 100) {
    const { v, path } = stack.pop()!;
    if (typeof v === 'string') {
      if (v.includes('\0')) issues.push(issueAt(path, 'must not contain NUL characters'));
    } else if (v !== null && typeof v === 'object') {
      if (path.length >= MAX_DEPTH) {
        issues.push(issueAt(path, 'nested too deeply'));
        continue;
      }
      if (Array.isArray(v)) for (let i = 0; i < v.length; i++) stack.push({ v: v[i], path: [...path, i] });
      else
        for (const [k, item] of Object.entries(v)) {
          if (k.includes('\0')) issues.push(issueAt(path, 'member names must not contain NUL characters'));
          stack.push({ v: item, path: [...path, k] });
        }
    }
  }
  return issues;
}

/** How many records of each section a (possibly refused) batch holds: auditable, unlike the records. */
function receivedCounts(batch: unknown): Record<string, number> | undefined {
  if (batch === null || typeof batch !== 'object' || Array.isArray(batch)) return undefined;
  const counts: Record<string, number> = {};
  for (const s of SECTIONS) {
    const section = (batch as Record<string, unknown>)[s];
    if (Array.isArray(section)) counts[s] = section.length;
  }
  return counts;
}

/** The handler of `POST /api/institution/v1/batches`; errors are ApiErrors for the API's envelope. */
export function ingestHandler({
  provider,
  db,
  config,
  maxBodyBytes = INGEST_BODY_LIMIT_BYTES,
}: IngestRouteOptions): (ctx: Context) => Promise<void> {
  const authenticate = createInstitutionAuthenticator({
    provider,
    db,
    config,
    replay: createDbReplayStore(db),
  });

  /** The JSON body, read as it streams in and never beyond the limit. */
  async function readJson(ctx: Context): Promise<unknown> {
    if (ctx.request.type !== 'application/json')
      throw new ApiError(415, 'unsupported_media_type', 'the batch must be sent as application/json');
    let text: string;
    try {
      text = await readBodyText(ctx, maxBodyBytes);
    } catch (err) {
      if (!(err instanceof BodyError)) throw err;
      // Over the limit the rest is not read: the connection closes after this answer.
      throw err.code === 'ERR_BODY_TOO_LARGE'
        ? new ApiError(413, 'payload_too_large', `a batch must be at most ${maxBodyBytes} bytes`)
        : new ApiError(400, 'invalid_request', err.message);
    }
    try {
      return JSON.parse(text);
    } catch {
      throw new ApiError(400, 'invalid_request', 'the request body is not JSON');
    }
  }

  async function audit(ctx: Context, trace: Trace, outcome: 'success' | 'info' | 'failure', data: object) {
    // A refusal before any live token was presented can come from anyone, as fast as they send: sampled.
    await (trace.clientId ? recordAudit : recordSampledAudit)(db, {
      type: `api.ingest.${outcome === 'success' ? 'accepted' : outcome === 'info' ? 'replayed' : 'refused'}`,
      outcome,
      actor: trace.clientId ? `client:${trace.clientId}` : undefined,
      clientId: trace.clientId,
      ip: ctx.ip,
      userAgent: ctx.get('user-agent') || undefined,
      interactionId: ctx.state.interactionId,
      data: {
        institutionId: trace.institutionId ?? null,
        ...(trace.idempotencyKey !== undefined ? { idempotencyKey: trace.idempotencyKey } : {}),
        ...(trace.received ? { received: trace.received } : {}),
        ...data,
      },
    });
  }

  async function handle(ctx: Context, trace: Trace): Promise<void> {
    const caller = await authenticate(ctx, INGEST_SCOPE, trace);
    const key = ctx.get('idempotency-key');
    if (!key) throw new ApiError(400, 'invalid_request', 'the Idempotency-Key header is required');
    if (!IDEMPOTENCY_KEY.test(key))
      throw new ApiError(
        400,
        'invalid_request',
        'the Idempotency-Key must be 1–255 printable ASCII characters',
      );
    trace.idempotencyKey = key;
    const batch = await readJson(ctx);
    trace.received = receivedCounts(batch);
    const junk = unstorable(batch);
    if (junk.length) throw new RejectedBatch('the batch was refused: nothing was stored', junk);
    let outcome: Awaited<ReturnType<typeof ingestBatch>>;
    try {
      outcome = await ingestBatch(db, caller.institutionId, batch, key);
    } catch (err) {
      if (!(err instanceof IngestError)) throw err;
      switch (err.code) {
        case 'ERR_INGEST_INVALID':
          throw new RejectedBatch(err.message, err.issues);
        case 'ERR_INGEST_IDEMPOTENCY_CONFLICT':
          throw new ApiError(409, 'idempotency_conflict', err.message);
        case 'ERR_INGEST_IDEMPOTENCY_KEY':
          throw new ApiError(400, 'invalid_request', err.message);
        case 'ERR_INGEST_INSTITUTION':
          throw new ApiError(403, 'unknown_institution', 'the institution of this client is not known here');
      }
    }
    const { result, replayed } = outcome;
    ctx.status = replayed ? 200 : 201;
    if (replayed) ctx.set('idempotent-replayed', 'true');
    ctx.body = result;
    await audit(ctx, trace, replayed ? 'info' : 'success', {
      batchId: result.batchId,
      balances: result.balances,
      holdings: result.holdings,
      transactions: result.transactions,
    });
  }

  return async (ctx) => {
    const trace: Trace = {};
    try {
      await handle(ctx, trace);
    } catch (err) {
      if (err instanceof RejectedBatch) {
        ctx.status = 422;
        ctx.body = {
          error: { status: 422, code: 'invalid_batch', message: err.message, issues: err.issues },
          meta: { interactionId: ctx.state.interactionId },
        };
        await audit(ctx, trace, 'failure', { status: 422, code: 'invalid_batch', issues: err.issues.length });
        return;
      }
      if (err instanceof ApiError)
        await audit(ctx, trace, 'failure', { status: err.status, code: err.code, reason: err.message });
      throw err;
    }
  };
}
