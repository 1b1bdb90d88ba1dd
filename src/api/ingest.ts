/**
 * Institution ingestion over HTTP: `POST /api/institution/v1/batches`. A member institution is an
 * OAuth client whose metadata names its `institution_id`; it gets a client-credentials token for the
 * institution resource (RFC 8707) with the `institution:ingest` scope, bound to a DPoP key (RFC 9449),
 * and pushes one batch per call. The batch goes through ingestBatch: all or nothing, idempotent
 * under the Idempotency-Key. Every accepted, replayed and refused batch is audited with the
 * institution, the client and counts — never the payload.
 */
import type { Context } from 'koa';
import type Provider from 'oidc-provider';
import type { Client, KoaContextWithOIDC, ResourceServer } from 'oidc-provider';
import { errors } from 'oidc-provider';
import { recordAudit } from '../audit/index.ts';
import type { Config } from '../config/index.ts';
import type { Db } from '../db/index.ts';
import { SIGNING_ALGS } from '../keys/index.ts';
import { IngestError, type IngestIssue, ingestBatch } from '../ledger/index.ts';
import { mtlsFor } from '../mtls/index.ts';
import { createDbReplayStore, type DpopReplayStore } from './dpop.ts';
import { ApiError, dpopChallenge, presentedAccessToken } from './errors.ts';
import { checkSenderConstraint, DpopError } from './senderConstraint.ts';

/** The one scope of the institution resource. */
export const INGEST_SCOPE = 'institution:ingest';
/** Client metadata naming the member institution a client pushes data for. */
export const INSTITUTION_ID_METADATA = 'institution_id';
/** The resource indicator (RFC 8707) of the ingestion API: its tokens name it as `aud`. */
export const institutionResource = (issuer: string) => `${issuer}/api/institution`;
/** Short-lived: an institution fetches a new token for each run of pushes. */
export const INSTITUTION_TOKEN_TTL_SECONDS = 600;
/** 5,000 transactions are about 2 MB of JSON; anything much larger is not a batch we accept. */
export const INGEST_BODY_LIMIT_BYTES = 4 * 1024 * 1024;

/** Institution ids are operator-chosen slugs such as `demo-securities`. */
const INSTITUTION_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
const IDEMPOTENCY_KEY = /^[\x21-\x7e]{1,255}$/;
/** A batch is at most 5 levels deep (holdings[i].positions[j].field); far deeper input is junk. */
const MAX_DEPTH = 16;
const SECTIONS = ['balances', 'holdings', 'transactions'] as const;

export const isInstitutionId = (value: unknown): value is string =>
  typeof value === 'string' && INSTITUTION_ID.test(value);

/** The institution a client pushes data for, when its metadata names a well-formed one. */
export function institutionIdOf(client: Client | undefined): string | undefined {
  const value = (client as unknown as Record<string, unknown> | undefined)?.[INSTITUTION_ID_METADATA];
  return isInstitutionId(value) ? value : undefined;
}

/**
 * oidc-provider's `extraClientMetadata.validator` for `institution_id` (synchronous, so existence
 * is checked at request time): a well-formed id, on a client that only uses client credentials —
 * an institution's ingestion client is never also an aggregator.
 */
export function validateInstitutionMetadata(key: string, value: unknown, metadata: Record<string, unknown>) {
  if (key !== INSTITUTION_ID_METADATA || value === undefined) return;
  if (!isInstitutionId(value))
    throw new errors.InvalidClientMetadata(
      'institution_id must be 1–64 letters, digits, dots, underscores or hyphens',
    );
  const grants = metadata.grant_types;
  if (!Array.isArray(grants) || grants.length !== 1 || grants[0] !== 'client_credentials')
    throw new errors.InvalidClientMetadata(
      'a client with institution_id must use the client_credentials grant only',
    );
}

/**
 * What oidc-provider issues for the institution resource: `institution:ingest`, only at the token
 * endpoint with client credentials, only to a client whose metadata names an institution and lists
 * the scope.
 */
export function institutionResourceServer(
  issuer: string,
  ctx: KoaContextWithOIDC,
  client: Client,
): ResourceServer {
  const params = ctx.oidc?.params as { grant_type?: unknown } | undefined;
  const scopes = String((client as unknown as { scope?: string }).scope ?? '').split(' ');
  if (
    params?.grant_type !== 'client_credentials' ||
    !institutionIdOf(client) ||
    !scopes.includes(INGEST_SCOPE)
  )
    throw new errors.InvalidTarget();
  return {
    scope: INGEST_SCOPE,
    audience: institutionResource(issuer),
    accessTokenTTL: INSTITUTION_TOKEN_TTL_SECONDS,
    accessTokenFormat: 'opaque',
  };
}

export interface IngestRouteOptions {
  provider: Provider;
  db: Db;
  config: Config;
  /** Largest request body accepted (bytes); more is 413. Default 4 MiB. */
  maxBodyBytes?: number;
}

interface Caller {
  clientId: string;
  institutionId: string;
}

/** What is known of a request for its audit record (never the payload). */
interface Trace {
  clientId?: string;
  institutionId?: string;
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
  const resource = institutionResource(config.issuer);
  const replay: DpopReplayStore = createDbReplayStore(db);
  const mtls = mtlsFor(config);
  const invalidToken = (description: string) =>
    new ApiError(
      401,
      'invalid_token',
      description,
      dpopChallenge('invalid_token', description, SIGNING_ALGS),
    );

  /** The client-credentials token of a member institution, DPoP- (with its proof) or certificate-bound. */
  async function authenticate(ctx: Context, trace: Trace): Promise<Caller> {
    const { scheme, value } = presentedAccessToken(ctx, SIGNING_ALGS);
    const token = await provider.ClientCredentials.find(value);
    if (!token || token.isExpired) throw invalidToken('the access token is invalid, expired or revoked');
    trace.clientId = token.clientId;
    const aud = token.aud;
    if (!(Array.isArray(aud) ? aud.includes(resource) : aud === resource))
      throw invalidToken('the access token is not for the institution API');
    try {
      await checkSenderConstraint({ ctx, config, mtls, scheme, value, token, replay, invalid: invalidToken });
    } catch (err) {
      if (!(err instanceof DpopError)) throw err;
      throw new ApiError(
        401,
        'invalid_dpop_proof',
        err.message,
        dpopChallenge('invalid_dpop_proof', err.message, SIGNING_ALGS),
      );
    }
    const scopes = new Set(String(token.scope ?? '').split(' '));
    if (!scopes.has(INGEST_SCOPE))
      throw new ApiError(
        403,
        'insufficient_scope',
        `the token lacks the ${INGEST_SCOPE} scope`,
        `${dpopChallenge('insufficient_scope', undefined, SIGNING_ALGS)}, scope="${INGEST_SCOPE}"`,
      );
    // The client's metadata now, not at issuance: a disabled client or a removed institution stops at
    // once, and a registration the provider no longer accepts (a malformed institution_id) is no client.
    const client = await provider.Client.find(token.clientId!).catch((err: unknown) => {
      if (err instanceof errors.OIDCProviderError) return undefined;
      throw err;
    });
    if (!client) throw invalidToken('the client of this token is no longer registered');
    const institutionId = institutionIdOf(client);
    if (!institutionId)
      throw new ApiError(403, 'access_denied', 'this client is not registered for a member institution');
    trace.institutionId = institutionId;
    const known = await db.query('SELECT 1 FROM institutions WHERE id = $1', [institutionId]);
    if (known.rowCount !== 1)
      throw new ApiError(403, 'unknown_institution', 'the institution of this client is not known here');
    return { clientId: client.clientId, institutionId };
  }

  /** The JSON body, read as it streams in and never beyond the limit. */
  async function readJson(ctx: Context): Promise<unknown> {
    if (ctx.request.type !== 'application/json')
      throw new ApiError(415, 'unsupported_media_type', 'the batch must be sent as application/json');
    const tooLarge = () => {
      // The rest of the body is not read: the connection closes after this answer.
      ctx.set('connection', 'close');
      return new ApiError(413, 'payload_too_large', `a batch must be at most ${maxBodyBytes} bytes`);
    };
    const declared = Number(ctx.get('content-length') || Number.NaN);
    if (declared > maxBodyBytes) throw tooLarge();
    const req = ctx.req;
    const text = await new Promise<string>((resolve, reject) => {
      const chunks: Buffer[] = [];
      let size = 0;
      const done = (err?: unknown) => {
        req.off('data', onData).off('end', onEnd).off('error', onError).off('aborted', onAborted);
        if (err) reject(err);
        else resolve(Buffer.concat(chunks).toString('utf8'));
      };
      const onData = (chunk: Buffer) => {
        size += chunk.length;
        if (size > maxBodyBytes) {
          req.pause();
          done(tooLarge());
        } else chunks.push(chunk);
      };
      const onEnd = () => done();
      const onError = (err: Error) =>
        done(new ApiError(400, 'invalid_request', `the request body could not be read: ${err.message}`));
      const onAborted = () => done(new ApiError(400, 'invalid_request', 'the request was aborted'));
      req.on('data', onData).on('end', onEnd).on('error', onError).on('aborted', onAborted);
    });
    try {
      return JSON.parse(text);
    } catch {
      throw new ApiError(400, 'invalid_request', 'the request body is not JSON');
    }
  }

  async function audit(ctx: Context, trace: Trace, outcome: 'success' | 'info' | 'failure', data: object) {
    await recordAudit(db, {
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
    const caller = await authenticate(ctx, trace);
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
