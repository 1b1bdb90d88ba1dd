/**
 * The operator's view of registered clients: add (with the FAPI 2.0 policy enforced on the
 * metadata), list, disable, enable, remove. oidc-provider reads clients from the `clients` table on
 * every use (src/oidc/adapter.ts) and the resource server checks `enabled` in each read's
 * statement, so disabling takes effect with the client's next request.
 */
import { z } from 'zod';
import { recordAudit } from '../audit/index.ts';
import { revokeConsentsOfClient } from '../consent/index.ts';
import type { Queryable } from '../db/index.ts';
import { OPERATION_DETAIL_TYPES } from '../linking/approvals/operationDetails.ts';
import { MTLS_AUTH_METHODS } from '../mtls/index.ts';
import { FAPI_ALGS } from './algs.ts';

export class ClientPolicyError extends Error {
  override name = 'ClientPolicyError';
  readonly code = 'ERR_CLIENT_POLICY';
}

const PRIVATE_JWK_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'k'];
const alg = z.enum(FAPI_ALGS);
const httpsUrl = z
  .url({ protocol: /^https$/ })
  .refine((u) => !u.includes('#'), 'must not contain a fragment');

/** RFC 8705 §2.1.2: the one certificate subject value a tls_client_auth client registers. */
const TLS_SUBJECT_FIELDS = {
  tls_client_auth_subject_dn: z.string().min(1).max(1024).optional(),
  tls_client_auth_san_dns: z.string().min(1).max(253).optional(),
  tls_client_auth_san_ip: z.union([z.ipv4(), z.ipv6()]).optional(),
  tls_client_auth_san_email: z.email().optional(),
  tls_client_auth_san_uri: z.url().optional(),
};

const metadataSchema = z
  .object({
    client_id: z
      .string()
      .regex(/^[A-Za-z0-9._-]{3,64}$/, 'letters, digits, ".", "_" and "-", 3 to 64 characters'),
    client_name: z.string().min(1).max(200),
    redirect_uris: z.array(httpsUrl).default([]),
    grant_types: z.array(z.enum(['authorization_code', 'refresh_token', 'client_credentials'])).min(1),
    response_types: z.array(z.literal('code')).default([]),
    scope: z.string().optional(),
    // FAPI 2.0 §5.3.3.4: private_key_jwt or mTLS (RFC 8705; src/mtls).
    token_endpoint_auth_method: z.enum(['private_key_jwt', ...MTLS_AUTH_METHODS]),
    ...TLS_SUBJECT_FIELDS,
    token_endpoint_auth_signing_alg: alg.optional(),
    id_token_signed_response_alg: alg.optional(),
    // FAPI 2.0: sender-constrained access tokens — DPoP or certificate-bound, exactly one (refined below).
    dpop_bound_access_tokens: z.boolean().optional(),
    tls_client_certificate_bound_access_tokens: z.boolean().optional(),
    jwks: z
      .object({ keys: z.array(z.record(z.string(), z.unknown())).min(1) })
      .refine(
        (j) => j.keys.every((k) => PRIVATE_JWK_MEMBERS.every((m) => !(m in k))),
        'must hold public keys only',
      )
      .optional(),
    jwks_uri: httpsUrl.optional(),
    // Back-channel logout (issue 6): https, or plain http to a loopback address for development only.
    backchannel_logout_uri: z
      .url({ protocol: /^https?$/ })
      .refine(
        (u) => u.startsWith('https:') || /^http:\/\/(127\.0\.0\.1|localhost|\[::1\])(:\d+)?\//.test(u),
        'must be https (http only to a loopback address)',
      )
      .optional(),
    backchannel_logout_session_required: z.boolean().optional(),
  })
  .passthrough()
  .refine(
    (m) => (m.dpop_bound_access_tokens === true) !== (m.tls_client_certificate_bound_access_tokens === true),
    {
      message:
        'exactly one sender constraint: dpop_bound_access_tokens or tls_client_certificate_bound_access_tokens must be true',
      path: ['dpop_bound_access_tokens'],
    },
  )
  // tls_client_auth needs no keys to authenticate (jwks stay optional, for signed requests); the others do.
  .refine(
    (m) =>
      m.token_endpoint_auth_method === 'tls_client_auth'
        ? !(m.jwks && m.jwks_uri)
        : !!m.jwks !== !!m.jwks_uri,
    {
      message: 'exactly one of jwks and jwks_uri is required',
      path: ['jwks'],
    },
  )
  .refine(
    (m) =>
      Object.keys(TLS_SUBJECT_FIELDS).filter((k) => m[k as keyof typeof TLS_SUBJECT_FIELDS] !== undefined)
        .length === (m.token_endpoint_auth_method === 'tls_client_auth' ? 1 : 0),
    {
      message:
        'tls_client_auth needs exactly one of tls_client_auth_subject_dn / _san_dns / _san_ip / _san_email / _san_uri (other methods none)',
      path: ['token_endpoint_auth_method'],
    },
  )
  .refine(
    (m) =>
      m.token_endpoint_auth_method !== 'self_signed_tls_client_auth' ||
      !m.jwks ||
      m.jwks.keys.some((k) => Array.isArray(k.x5c) && k.x5c.length > 0),
    { message: "self_signed_tls_client_auth needs the certificate in a key's x5c", path: ['jwks'] },
  )
  .refine((m) => !m.grant_types.includes('authorization_code') || m.redirect_uris.length > 0, {
    message: 'required for the authorization_code grant',
    path: ['redirect_uris'],
  });

export type ClientMetadata = z.output<typeof metadataSchema>;

/** The metadata as it will be stored, or a ClientPolicyError naming every problem. */
export function validateClientMetadata(input: unknown): ClientMetadata {
  const parsed = metadataSchema.safeParse(input);
  if (!parsed.success)
    throw new ClientPolicyError(
      parsed.error.issues.map((i) => `${i.path.join('.') || '(metadata)'}: ${i.message}`).join('; '),
    );
  const m = parsed.data;
  const auth = m.grant_types.includes('authorization_code');
  // A brokerage's relying party (it names its institution): a customer identifier of its own unless
  // registered otherwise, and it may ask for withdrawal approvals unless it lists other types.
  const brokerage = auth && typeof (m as Record<string, unknown>).institution_id === 'string';
  return {
    ...(brokerage
      ? { subject_type: 'pairwise', authorization_details_types: [...OPERATION_DETAIL_TYPES] }
      : {}),
    ...m,
    response_types: auth ? ['code'] : [],
    // Both stated, so the provider's default (DPoP) never adds a second constraint to an mTLS-bound client.
    dpop_bound_access_tokens: m.dpop_bound_access_tokens === true,
    tls_client_certificate_bound_access_tokens: m.tls_client_certificate_bound_access_tokens === true,
    // PAR for every authorization request (FAPI 2.0 §5.3.1.2).
    require_pushed_authorization_requests: true,
  } as ClientMetadata;
}

export interface ClientSummary {
  clientId: string;
  name: string;
  enabled: boolean;
  grantTypes: string[];
  createdAt: Date;
}

export async function listClients(db: Queryable): Promise<ClientSummary[]> {
  const res = await db.query<{
    client_id: string;
    metadata: { client_name?: string; grant_types?: string[] };
    enabled: boolean;
    created_at: Date;
  }>('SELECT client_id, metadata, enabled, created_at FROM clients ORDER BY client_id');
  return res.rows.map((r) => ({
    clientId: r.client_id,
    name: r.metadata.client_name ?? r.client_id,
    enabled: r.enabled,
    grantTypes: r.metadata.grant_types ?? [],
    createdAt: r.created_at,
  }));
}

export async function addClient(db: Queryable, input: unknown, actor: string): Promise<ClientMetadata> {
  const metadata = validateClientMetadata(input);
  const res = await db.query(
    'INSERT INTO clients (client_id, metadata) VALUES ($1, $2) ON CONFLICT (client_id) DO NOTHING',
    [metadata.client_id, JSON.stringify(metadata)],
  );
  if (res.rowCount === 0)
    throw new ClientPolicyError(`client_id: ${metadata.client_id} is already registered`);
  await recordAudit(db, { type: 'client.added', outcome: 'success', actor, clientId: metadata.client_id });
  return metadata;
}

/** Disables or re-enables a client; false when there is no such client. */
export async function setClientEnabled(
  db: Queryable,
  clientId: string,
  enabled: boolean,
  actor: string,
): Promise<boolean> {
  const res = await db.query('UPDATE clients SET enabled = $2, updated_at = now() WHERE client_id = $1', [
    clientId,
    enabled,
  ]);
  if (res.rowCount === 0) return false;
  await recordAudit(db, {
    type: enabled ? 'client.enabled' : 'client.disabled',
    outcome: 'success',
    actor,
    clientId,
  });
  return true;
}

/**
 * Ends everything issued to a client (grants, codes, access, refresh and registration access tokens)
 * and every consent given to it, with who and why. Returns how many stored payloads went.
 */
export async function endClientAccess(
  db: Queryable,
  clientId: string,
  actor: string,
  reason: string,
): Promise<number> {
  const tokens = await db.query("DELETE FROM oidc_payloads WHERE payload ->> 'clientId' = $1", [clientId]);
  await revokeConsentsOfClient(db, clientId, actor, reason);
  return tokens.rowCount;
}

/** Removes a client and every grant, token and code issued to it. */
export async function removeClient(db: Queryable, clientId: string, actor: string): Promise<boolean> {
  const res = await db.query('DELETE FROM clients WHERE client_id = $1', [clientId]);
  if (res.rowCount === 0) return false;
  const revokedRows = await endClientAccess(db, clientId, actor, 'client removed');
  await recordAudit(db, {
    type: 'client.removed',
    outcome: 'success',
    actor,
    clientId,
    data: { revokedRows },
  });
  return true;
}
