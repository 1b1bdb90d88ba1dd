/**
 * What stands in front of oidc-provider's registration endpoints (RFC 7591 `POST /reg`, RFC 7592
 * `GET|PUT|DELETE /reg/:client_id`):
 *  - a registration needs an initial access token (Bearer) or a software statement from a
 *    configured directory; the statement's claims then take precedence over the request;
 *  - the FAPI 2.0 client policy of src/oidc/clients.ts applies to every registered or updated
 *    client, and metadata only an operator may set (resource_server, institution_id) is refused;
 *  - a disabled client cannot manage its registration (oidc-provider would not find it and would
 *    destroy its registration access token);
 *  - a client that deletes itself loses its tokens and consents, as with the operator's `remove`;
 *  - every registration, update and deletion, and every refusal, goes to the audit log.
 * oidc-provider then does the rest (its own metadata checks, registration access tokens).
 */
import { randomBytes } from 'node:crypto';
import type { Context, Next } from 'koa';
import type Provider from 'oidc-provider';
import { recordAudit } from '../audit/index.ts';
import { recordSampledAudit } from '../audit/sampled.ts';
import type { Db } from '../db/index.ts';
import { BodyError, readBody } from '../http/index.ts';
import { ClientPolicyError, endClientAccess, validateClientMetadata } from '../oidc/clients.ts';
import {
  claimInitialAccessToken,
  completeInitialAccessToken,
  reference,
  releaseInitialAccessToken,
} from './initialAccessTokens.ts';
import {
  applySoftwareStatement,
  type Directory,
  SoftwareStatementError,
  verifySoftwareStatement,
} from './softwareStatement.ts';

/** Client metadata that only an operator may set (`clients add`), never the client itself. */
const OPERATOR_ONLY = ['resource_server', 'institution_id'];
/** What a registration that omits them gets (the same as oidc-provider's clientDefaults). */
const REGISTRATION_DEFAULTS = {
  grant_types: ['authorization_code', 'refresh_token'],
  token_endpoint_auth_method: 'private_key_jwt',
  dpop_bound_access_tokens: true,
};
/** oidc-provider's own limit for request bodies. */
const BODY_LIMIT = 56 * 1024;
const CREATE = /^\/reg\/?$/;
const MANAGE = /^\/reg\/([^/]+)$/;
const MANAGE_ACTIONS: Record<string, string> = { GET: 'read', PUT: 'update', DELETE: 'delete' };

class Refused extends Error {
  override name = 'RegistrationRefused';
  readonly status: number;
  readonly error: string;
  constructor(status: number, error: string, description: string) {
    super(description);
    this.status = status;
    this.error = error;
  }
}

const invalidToken = (description: string) => new Refused(401, 'invalid_token', description);
const invalidMetadata = (description: string) => new Refused(400, 'invalid_client_metadata', description);

export interface RegistrationGuardOptions {
  db: Db;
  directories: Directory[];
  clockToleranceSeconds: number;
}

export interface RegistrationGuard {
  /** The provider whose registration access tokens the guard checks (set before serving). */
  attach(provider: Provider): void;
  middleware(ctx: Context, next: Next): Promise<void>;
  /** For features.registration.idFactory: the client_id chosen (and policy-checked) for this request. */
  clientIdFor(ctx: unknown): string;
}

export function createRegistrationGuard(o: RegistrationGuardOptions): RegistrationGuard {
  const assigned = new WeakMap<object, string>();
  // Requests that presented a live credential (a verified software statement, an initial or a
  // registration access token): their refusals are always audited; the others' are sampled.
  const credentialed = new WeakSet<Context>();
  let provider: Provider | undefined;

  async function create(ctx: Context, next: Next): Promise<void> {
    const body = await readJsonObject(ctx);
    const bearer = bearerToken(ctx);
    let via: { actor: string; data: Record<string, unknown> };
    let request = body;
    if (body.software_statement !== undefined) {
      const statement = await verified(o, body.software_statement);
      credentialed.add(ctx);
      request = statementApplied(body, statement.claims);
      via = {
        actor: `directory:${statement.directory}`,
        data: { directory: statement.directory, softwareId: statement.claims.software_id },
      };
    } else if (bearer === undefined) {
      throw invalidToken('an initial access token or a software statement is required');
    } else {
      via = { actor: `registration:iat:${reference(bearer)}`, data: {} };
    }
    // Without a statement the token admits the registration (checked before the metadata, so a
    // caller without one learns nothing); with one, a token sent along is spent as well.
    const claimed = bearer !== undefined && (await claimInitialAccessToken(o.db, bearer));
    if (bearer !== undefined && !claimed && body.software_statement === undefined)
      throw invalidToken('initial access token unknown, expired or already used');
    if (claimed) {
      credentialed.add(ctx);
      via.data.initialAccessToken = reference(bearer);
    }
    const clientId = `dcr-${randomBytes(12).toString('base64url')}`;
    try {
      replayBody(ctx, policyChecked({ ...request, client_id: clientId }));
      assigned.set(ctx, clientId);
      await next();
    } catch (err) {
      // Refused here (audited by the middleware) or failed: the token stays usable.
      if (claimed) await releaseInitialAccessToken(o.db, bearer);
      throw err;
    }
    const ok = ctx.status === 201;
    if (claimed)
      await (ok
        ? completeInitialAccessToken(o.db, bearer, clientId)
        : releaseInitialAccessToken(o.db, bearer));
    await audit(
      ctx,
      ok ? 'client.registered' : 'client.registration.refused',
      via.actor,
      clientId,
      ok,
      via.data,
    );
  }

  async function manage(ctx: Context, next: Next, clientId: string): Promise<void> {
    // The registration access token first, so nothing below answers a caller without one.
    const bearer = bearerToken(ctx);
    const rat = bearer && provider ? await provider.RegistrationAccessToken.find(bearer) : undefined;
    if (!rat || rat.clientId !== clientId) throw invalidToken('invalid registration access token');
    credentialed.add(ctx);
    const row = (
      await o.db.query<{ enabled: boolean; metadata: Record<string, unknown> }>(
        'SELECT enabled, metadata FROM clients WHERE client_id = $1',
        [clientId],
      )
    ).rows[0];
    if (row && !row.enabled) throw invalidToken('the client is disabled');
    const method = ctx.method;
    if (method === 'PUT') {
      const body = await readJsonObject(ctx);
      let request = body;
      if (body.software_statement !== undefined)
        request = statementApplied(body, (await verified(o, body.software_statement)).claims);
      const registered = row?.metadata.software_id;
      if (registered !== undefined) {
        // What the directory vouched for (redirect URIs, keys) changes only with a statement again.
        if (body.software_statement === undefined)
          throw invalidMetadata('a client registered with a software statement updates with one');
        if (request.software_id !== registered) throw invalidMetadata('software_id cannot change');
        request = { software_version: row?.metadata.software_version, ...request, software_id: registered };
      }
      replayBody(ctx, policyChecked(request));
    }
    await next();
    if (method === 'PUT' || method === 'DELETE') {
      const ok = ctx.status === (method === 'PUT' ? 200 : 204);
      if (ok && method === 'DELETE') {
        // As the operator's `clients remove` (removeClient; oidc-provider has deleted the client's
        // row already): nothing issued to a deleted client stays usable.
        await endClientAccess(o.db, clientId, `client:${clientId}`, 'client deleted its registration');
      }
      const [done, refused] =
        method === 'PUT'
          ? ['client.updated', 'client.update.refused']
          : ['client.deleted', 'client.delete.refused'];
      await audit(ctx, ok ? done : refused, `client:${clientId}`, clientId, ok, {});
    }
  }

  async function audit(
    ctx: Context,
    type: string,
    actor: string,
    clientId: string,
    ok: boolean,
    data: Record<string, unknown>,
  ) {
    const error = (ctx.body as { error?: unknown } | undefined)?.error;
    await recordAudit(o.db, {
      type,
      outcome: ok ? 'success' : 'failure',
      actor,
      clientId,
      ip: ctx.ip,
      userAgent: ctx.get('user-agent') || undefined,
      data: ok ? data : { ...data, error },
    });
  }

  return {
    attach(p) {
      provider = p;
    },
    async middleware(ctx, next) {
      const manageMatch = MANAGE.exec(ctx.path);
      const isCreate = ctx.method === 'POST' && CREATE.test(ctx.path);
      if (!isCreate && !(manageMatch && ctx.method in MANAGE_ACTIONS)) return next();
      try {
        if (isCreate) await create(ctx, next);
        else await manage(ctx, next, decodeURIComponent(manageMatch![1]!));
      } catch (err) {
        if (!(err instanceof Refused)) throw err;
        ctx.status = err.status;
        ctx.set('cache-control', 'no-store');
        if (err.status === 401)
          ctx.set('www-authenticate', `Bearer realm="registration", error="${err.error}"`);
        ctx.body = { error: err.error, error_description: err.message };
        const clientId = manageMatch ? decodeURIComponent(manageMatch[1]!) : undefined;
        // Without a credential anyone can cause this refusal as fast as they send: sampled.
        await (credentialed.has(ctx) ? recordAudit : recordSampledAudit)(o.db, {
          type: isCreate ? 'client.registration.refused' : `client.${MANAGE_ACTIONS[ctx.method]}.refused`,
          outcome: 'failure',
          actor: clientId ? `client:${clientId}` : 'anonymous',
          clientId,
          ip: ctx.ip,
          userAgent: ctx.get('user-agent') || undefined,
          data: { error: err.error, reason: err.message },
        });
      }
    },
    clientIdFor(ctx) {
      return (
        (typeof ctx === 'object' && ctx !== null && assigned.get(ctx)) ||
        `dcr-${randomBytes(12).toString('base64url')}`
      );
    },
  };
}

async function verified(o: RegistrationGuardOptions, statement: unknown) {
  try {
    return await verifySoftwareStatement(o.directories, statement, o.clockToleranceSeconds);
  } catch (err) {
    if (err instanceof SoftwareStatementError) throw new Refused(400, err.error, err.message);
    throw err;
  }
}

function statementApplied(body: Record<string, unknown>, claims: Record<string, unknown>) {
  try {
    return applySoftwareStatement(body, claims);
  } catch (err) {
    throw invalidMetadata((err as Error).message);
  }
}

/** The FAPI client policy on the request (hub defaults for what it omits), as oidc-provider will store it. */
function policyChecked(request: Record<string, unknown>): Record<string, unknown> {
  const operatorOnly = OPERATOR_ONLY.filter((k) => request[k] !== undefined);
  if (operatorOnly.length) throw invalidMetadata(`${operatorOnly.join(', ')}: set by the operator only`);
  try {
    // DPoP unless the client asks for certificate-bound tokens (exactly one sender constraint).
    const mtlsBound =
      (request as Record<string, unknown>).tls_client_certificate_bound_access_tokens === true;
    return validateClientMetadata({
      ...REGISTRATION_DEFAULTS,
      ...(mtlsBound ? { dpop_bound_access_tokens: false } : {}),
      ...request,
    }) as Record<string, unknown>;
  } catch (err) {
    if (err instanceof ClientPolicyError) throw invalidMetadata(err.message);
    throw err;
  }
}

function bearerToken(ctx: Context): string | undefined {
  const header = ctx.get('authorization');
  if (!header) return undefined;
  const m = /^Bearer ([\x21-\x7e]+)$/i.exec(header);
  if (!m) throw invalidToken('the Authorization header must carry a Bearer token');
  return m[1];
}

/**
 * Hands the checked metadata to oidc-provider as this request's body. Its body reader takes the
 * stream while `readable` (reading `content-length` bytes); giving it the parsed object instead
 * (`request.body`) works too but makes it warn about an upstream body parser. So the consumed
 * request is made to stream the new JSON once more.
 */
function replayBody(ctx: Context, body: Record<string, unknown>): void {
  const json = Buffer.from(JSON.stringify(body));
  const req = ctx.req as unknown as { headers: Record<string, string>; iterator: unknown };
  req.headers['content-length'] = String(json.length);
  Object.defineProperty(req, 'readable', { value: true, configurable: true });
  req.iterator = async function* replay() {
    yield json;
  };
}

/**
 * The JSON object body, read by the hub's one body reader (replayBody hands the checked version on),
 * its refusals in RFC 7591's words: 400 invalid_request (413 for a body too large).
 */
async function readJsonObject(ctx: Context): Promise<Record<string, unknown>> {
  try {
    return await readBody(ctx, 'json', BODY_LIMIT);
  } catch (err) {
    if (!(err instanceof BodyError)) throw err;
    throw new Refused(err.code === 'ERR_BODY_TOO_LARGE' ? 413 : 400, 'invalid_request', err.message);
  }
}
