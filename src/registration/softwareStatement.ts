/**
 * Software statements (RFC 7591 §2.3) signed by a configured directory, as UK and Brazil open
 * banking use them: the statement vouches for the software (its id, name, redirect URIs and keys)
 * and its claims take precedence over the registration request.
 */
import { readFileSync } from 'node:fs';
import {
  createLocalJWKSet,
  decodeJwt,
  decodeProtectedHeader,
  type JSONWebKeySet,
  type JWTVerifyGetKey,
  jwtVerify,
} from 'jose';
import { ConfigError } from '../config/index.ts';
import { FAPI_ALGS } from '../oidc/algs.ts';
import type { DirectoryConfig, RegistrationConfig } from './config.ts';

export class SoftwareStatementError extends Error {
  override name = 'SoftwareStatementError';
  readonly code = 'ERR_SOFTWARE_STATEMENT';
  /** The RFC 7591 error: the statement is broken, or from no directory this hub trusts. */
  readonly error: 'invalid_software_statement' | 'unapproved_software_statement';
  constructor(error: SoftwareStatementError['error'], message: string) {
    super(message);
    this.error = error;
  }
}

export interface Directory {
  issuer: string;
  keys: JWTVerifyGetKey;
  maxAgeSeconds: number;
}

/**
 * The configured directories with their keys (files read now, so a bad file or key set stops the
 * start with a ConfigError naming the key).
 */
export function loadDirectories(config: RegistrationConfig): Directory[] {
  return config.directories.map((d: DirectoryConfig, i) => {
    const key = `registration.directories.${i}.${d.jwks ? 'jwks' : 'jwksFile'}`;
    try {
      const jwks = (d.jwks ?? JSON.parse(readFileSync(d.jwksFile!, 'utf8'))) as JSONWebKeySet;
      return { issuer: d.issuer, keys: createLocalJWKSet(jwks), maxAgeSeconds: d.maxAgeSeconds };
    } catch (err) {
      throw new ConfigError(`${key}: not a readable JSON Web Key Set (${(err as Error).message})`);
    }
  });
}

export interface VerifiedStatement {
  directory: string;
  claims: Record<string, unknown>;
}

/** Verifies a statement: signed (FAPI algorithms) by a known key of a configured directory, not expired or too old. */
export async function verifySoftwareStatement(
  directories: Directory[],
  statement: unknown,
  clockToleranceSeconds: number,
): Promise<VerifiedStatement> {
  if (typeof statement !== 'string')
    throw new SoftwareStatementError('invalid_software_statement', 'software_statement must be a JWT');
  let iss: unknown;
  try {
    const alg = decodeProtectedHeader(statement).alg;
    if (!alg || !(FAPI_ALGS as readonly string[]).includes(alg))
      throw new SoftwareStatementError(
        'invalid_software_statement',
        `software_statement must be signed with ${FAPI_ALGS.join(', ')}`,
      );
    iss = decodeJwt(statement).iss;
  } catch (err) {
    if (err instanceof SoftwareStatementError) throw err;
    throw new SoftwareStatementError('invalid_software_statement', 'software_statement is not a signed JWT');
  }
  const directory = directories.find((d) => d.issuer === iss);
  if (!directory)
    throw new SoftwareStatementError(
      'unapproved_software_statement',
      'software_statement is not from a directory this server trusts',
    );
  try {
    const { payload } = await jwtVerify(statement, directory.keys, {
      issuer: directory.issuer,
      algorithms: [...FAPI_ALGS],
      clockTolerance: clockToleranceSeconds,
      maxTokenAge: directory.maxAgeSeconds,
      requiredClaims: ['iat', 'software_id'],
    });
    if (typeof payload.software_id !== 'string' || !payload.software_id)
      throw new SoftwareStatementError('invalid_software_statement', 'software_id must be a string');
    return { directory: directory.issuer, claims: payload as Record<string, unknown> };
  } catch (err) {
    if (err instanceof SoftwareStatementError) throw err;
    const why = err instanceof Error && 'code' in err ? String(err.code) : 'verification failed';
    throw new SoftwareStatementError('invalid_software_statement', `software_statement rejected (${why})`);
  }
}

/** Statement claims and the client metadata they set (RFC 7591 names first, then UK / Brazil names). */
const STATEMENT_SOURCES: Record<string, string[]> = {
  client_name: ['client_name', 'software_client_name', 'org_name'],
  redirect_uris: ['redirect_uris', 'software_redirect_uris'],
  jwks_uri: ['jwks_uri', 'software_jwks_uri', 'software_jwks_endpoint'],
  jwks: ['jwks'],
  software_version: ['software_version'],
};

function fromStatement(claims: Record<string, unknown>, metadata: string): unknown {
  for (const name of STATEMENT_SOURCES[metadata]!) if (claims[name] !== undefined) return claims[name];
  return undefined;
}

const same = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);

/**
 * The registration request with the statement applied. The statement wins: software_id, name,
 * version and keys come from it, and a request that names different ones is refused (as UK and
 * Brazil directories require); requested redirect URIs must be among the statement's, and default to them.
 * Throws an Error whose message says which metadata conflicts.
 */
export function applySoftwareStatement(
  request: Record<string, unknown>,
  claims: Record<string, unknown>,
): Record<string, unknown> {
  const out: Record<string, unknown> = { ...request };
  delete out.software_statement;
  const conflicts: string[] = [];
  if (out.software_id !== undefined && out.software_id !== claims.software_id) conflicts.push('software_id');
  out.software_id = claims.software_id;

  const redirects = fromStatement(claims, 'redirect_uris');
  if (Array.isArray(redirects)) {
    if (Array.isArray(out.redirect_uris)) {
      if (!out.redirect_uris.every((u) => redirects.includes(u))) conflicts.push('redirect_uris');
    } else out.redirect_uris = redirects;
  }
  const jwksUri = fromStatement(claims, 'jwks_uri');
  const jwks = fromStatement(claims, 'jwks');
  if (jwksUri !== undefined || jwks !== undefined) {
    if (out.jwks_uri !== undefined && !same(out.jwks_uri, jwksUri)) conflicts.push('jwks_uri');
    if (out.jwks !== undefined && !same(out.jwks, jwks)) conflicts.push('jwks');
    delete out.jwks_uri;
    delete out.jwks;
    if (jwksUri !== undefined) out.jwks_uri = jwksUri;
    else out.jwks = jwks;
  }
  for (const key of ['client_name', 'software_version']) {
    const value = fromStatement(claims, key);
    if (value === undefined) continue;
    if (out[key] !== undefined && out[key] !== value) conflicts.push(key);
    out[key] = value;
  }
  if (conflicts.length) throw new Error(`${conflicts.join(', ')}: does not match the software statement`);
  return out;
}
