/**
 * FAPI 2.0 Message Signing on oidc-provider: signed request objects (JAR, RFC 9101) at the PAR
 * endpoint, JWT-secured authorization responses (JARM), token introspection (RFC 7662) for the
 * hub's resource servers with signed responses (RFC 9701), and revocation (RFC 7009) by the owning
 * client. What oidc-provider checks by itself is noted where the rest is added.
 */
import type { Client, Configuration, KoaContextWithOIDC } from 'oidc-provider';
import { errors } from 'oidc-provider';
import { recordAudit } from '../audit/index.ts';
import { findActiveConsent, grantedAccountInformation, termsOfConsent } from '../consent/index.ts';
import type { Db } from '../db/index.ts';
import { isOperationDetailType } from '../linking/approvals/operationDetails.ts';

/** The parts of an access or refresh token the policies read (rar is set here for the response). */
interface IntrospectedToken {
  kind?: string | undefined;
  clientId?: string | undefined;
  grantId?: string | undefined;
  rar?: unknown[] | undefined;
}

/** FAPI 2.0 Message Signing §5.3.1: exp − nbf, and the age of nbf, at most 60 minutes. */
export const REQUEST_OBJECT_MAX_LIFETIME_SECONDS = 3600;
/**
 * Client metadata set by the operator only (src/registration refuses it from clients): this client
 * is a resource server and may introspect tokens issued to other clients.
 */
export const RESOURCE_SERVER_METADATA = 'resource_server';

/** For extraClientMetadata.validator: resource_server, when present, is a boolean. */
export function validateResourceServerMetadata(key: string, value: unknown): void {
  if (key === RESOURCE_SERVER_METADATA && value !== undefined && typeof value !== 'boolean')
    throw new errors.InvalidClientMetadata('resource_server must be a boolean');
}

type Features = NonNullable<Configuration['features']>;

export interface MessageSigningOptions {
  db: Db;
  issuer: string;
  /** Only these JWS algorithms (FAPI_ALGS). */
  algs: readonly string[];
  clockToleranceSeconds: number;
  /** api.transactionLookbackDays: the lookback of a consent that names none. */
  transactionLookbackDays: number;
}

export function messageSigningFeatures(o: MessageSigningOptions) {
  return {
    requestObjects: {
      enabled: true,
      // Per client: `require_signed_request_object: true` in its metadata (invalid_request without one).
      requireSignedRequestObject: false,
      assertJwtClaimsAndHeader: async (
        ctx: KoaContextWithOIDC,
        claims: Record<string, unknown>,
        header: Record<string, unknown>,
      ) => {
        // At the authorization endpoint the request object is the one the PAR endpoint already
        // checked and stored (oidc-provider keeps plain pushed parameters as an unsigned one).
        if (ctx.oidc.route === 'pushed_authorization_request') await assertRequestObject(o, claims, header);
      },
    } satisfies Features['requestObjects'],
    jwtResponseModes: { enabled: true },
    introspection: {
      enabled: true as const,
      allowedPolicy: async (ctx: KoaContextWithOIDC, client: Client, token: IntrospectedToken) => {
        // Only registered resource servers learn about tokens; any other caller, a FAPI client
        // included (even about its own tokens), gets {active: false}.
        if (client.metadata()[RESOURCE_SERVER_METADATA] !== true) {
          await recordAudit(o.db, {
            type: 'token.introspection.refused',
            outcome: 'failure',
            actor: `client:${client.clientId}`,
            clientId: client.clientId,
            ip: ctx.ip,
            data: { reason: 'not a resource server', tokenClientId: token.clientId },
          });
          return false;
        }
        const grantId = token.grantId;
        // An operation approval (src/linking) has no consent row: its details are the approval's.
        const rar = (token.rar ?? []) as Array<{ type?: string }>;
        if (grantId && !(rar.length && rar.every((d) => isOperationDetailType(d.type)))) {
          const consent = await findActiveConsent(o.db, grantId);
          if (!consent) return false;
          // A scope-only consent, told in the shape a RAR grant carries (src/consent/terms.ts).
          if (!rar.length)
            token.rar = [
              grantedAccountInformation(
                o.issuer,
                termsOfConsent(consent, { lookbackDays: o.transactionLookbackDays }),
              ),
            ];
        }
        return true;
      },
    },
    jwtIntrospection: { enabled: true },
    revocation: {
      enabled: true,
      allowedPolicy: async (ctx: KoaContextWithOIDC, client: Client, token: IntrospectedToken) => {
        const own = token.clientId === client.clientId;
        // The token was found: revoked next (or refused), both worth a line in the audit log.
        await recordAudit(o.db, {
          type: own ? 'token.revoked' : 'token.revocation.refused',
          outcome: own ? 'success' : 'failure',
          actor: `client:${client.clientId}`,
          clientId: client.clientId,
          ip: ctx.ip,
          data: {
            kind: token.kind,
            grantId: token.grantId,
            ...(own ? {} : { tokenClientId: token.clientId }),
          },
        });
        if (!own) throw new errors.InvalidRequest('client is not authorized to revoke the presented token');
        return true;
      },
    },
  };
}

/**
 * Request-object rules beyond oidc-provider's own (which already requires iss = client_id, aud =
 * issuer or an array holding it, exp not passed, nbf not in the future, a FAPI alg, and — under the
 * FAPI 2.0 profile — exp, nbf and aud present with 0 < exp − nbf ≤ 3600): nbf at most 60 minutes old,
 * and all of it stated here too so that the rules do not hang on the profile setting.
 */
async function assertRequestObject(
  o: MessageSigningOptions,
  claims: Record<string, unknown>,
  header: Record<string, unknown>,
): Promise<void> {
  for (const claim of ['exp', 'nbf', 'aud', 'iss'])
    if (claims[claim] === undefined)
      throw new errors.InvalidRequestObject(`Request Object is missing the '${claim}' claim`);
  if (typeof header.alg !== 'string' || !o.algs.includes(header.alg))
    throw new errors.InvalidRequestObject('unsupported signed request alg');
  const exp = Number(claims.exp);
  const nbf = Number(claims.nbf);
  const now = Math.floor(Date.now() / 1000);
  const lifetime = exp - nbf;
  if (!(lifetime > 0) || lifetime > REQUEST_OBJECT_MAX_LIFETIME_SECONDS)
    throw new errors.InvalidRequestObject("Request Object 'exp' claim too far from 'nbf' claim");
  if (now - nbf > REQUEST_OBJECT_MAX_LIFETIME_SECONDS + o.clockToleranceSeconds)
    throw new errors.InvalidRequestObject("Request Object 'nbf' claim is more than 60 minutes in the past");
}
