/**
 * Hand-built client requests for the checks that must break a rule on purpose: client
 * assertions with chosen aud/iat/nbf/exp/alg (jose SignJWT), DPoP proofs with chosen headers and
 * claims (raw JWS over WebCrypto, so that even a missing `alg` or a broken signature can be sent),
 * PAR and token requests with exactly the body a check wants, and resource calls with exactly
 * the headers it wants (including repeated header lines).
 */
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { calculateJwkThumbprint, exportJWK, generateKeyPair, importJWK, type JWK, SignJWT } from 'jose';
import type { Dispatcher } from 'undici';
import { request as undiciRequest } from 'undici';
import type { TestCert } from '../../test/support/certificates.ts';
import type { ClientAuthVariant, SenderConstraintVariant } from './types.ts';

export const now = () => Math.floor(Date.now() / 1000);

/** The parts of the hub's discovery document the plan uses. */
export interface HubMetadata {
  issuer: string;
  authorization_endpoint: string;
  token_endpoint: string;
  pushed_authorization_request_endpoint: string;
  jwks_uri: string;
  [k: string]: unknown;
}

/** Where and how to talk to the hub under test. */
export interface HubConnection {
  issuer: string;
  /** fetch that trusts the hub's CA. */
  fetch: typeof globalThis.fetch;
  /** undici dispatcher that trusts the hub's CA (for requests fetch cannot shape). */
  dispatcher: Dispatcher;
  metadata: HubMetadata;
}

/** The demo client file's shape (<dataDir>/demo/aggregator-client*.json). */
export interface ClientFile {
  issuer: string;
  client_id: string;
  redirect_uris: string[];
  scope: string;
  private_jwk: JsonWebKey & { kid: string; alg?: string };
}

/**
 * A registered client: its id, redirect URI, how it authenticates, what its tokens are bound to,
 * and its signing key (private_key_jwt assertions, request objects; every client here registers one).
 */
export interface ClientIdentity {
  clientId: string;
  redirectUri: string;
  scope: string;
  kid: string;
  alg: string;
  privateKey: CryptoKey;
  authMethod: ClientAuthVariant;
  senderConstraint: SenderConstraintVariant;
  /**
   * The TLS client certificate it presents (clients that use mTLS for authentication or binding);
   * such a client talks to the hub's mtls_endpoint_aliases.
   */
  certificate?: TestCert;
  /**
   * A second certificate of the same client: it authenticates the client where the method allows
   * (tls_client_auth: the same subject; self-signed: also in its jwks) but binds none of its tokens.
   */
  otherCertificate?: TestCert;
}

/** `redirect: false` for a client without redirect URIs (a resource server): its redirectUri is then ''. */
export async function clientFromFile(
  file: ClientFile,
  o: { redirect?: boolean } = {},
): Promise<ClientIdentity> {
  const { kid, alg = 'ES256', ...jwk } = file.private_jwk as JWK & { kid: string; alg?: string };
  delete (jwk as { use?: unknown }).use;
  delete (jwk as { key_ops?: unknown }).key_ops;
  const privateKey = (await importJWK({ ...jwk, alg }, alg)) as CryptoKey;
  const redirectUri = o.redirect === false ? '' : file.redirect_uris[0];
  if (redirectUri === undefined || (o.redirect !== false && !redirectUri))
    throw new Error(`client ${file.client_id} has no redirect_uri`);
  return {
    clientId: file.client_id,
    redirectUri,
    scope: file.scope,
    kid,
    alg,
    privateKey,
    authMethod: 'private_key_jwt',
    senderConstraint: 'dpop',
  };
}

// ---------------------------------------------------------------------------------------------
// Client assertions (RFC 7523, private_key_jwt)

export interface AssertionOptions {
  /** Default: the issuer string (FAPI 2.0 §5.3.2.1). */
  aud?: string | string[];
  /** Default client_id; null omits the claim. */
  iss?: string | null;
  /** Default client_id; null omits the claim. */
  sub?: string | null;
  /** Default now; null omits. */
  iat?: number | null;
  /** Default absent. */
  nbf?: number | null;
  /** Default now + 60; null omits. */
  exp?: number | null;
  /** Default random; null omits. */
  jti?: string | null;
  /** Sign with this key and alg instead of the client's own (e.g. an RS256 key, or another client's key). */
  key?: CryptoKey;
  alg?: string;
  /** Default the client's kid; null omits. */
  kid?: string | null;
}

export async function clientAssertion(
  issuer: string,
  client: ClientIdentity,
  o: AssertionOptions = {},
): Promise<string> {
  const t = now();
  const claims: Record<string, unknown> = {
    iss: o.iss === undefined ? client.clientId : o.iss,
    sub: o.sub === undefined ? client.clientId : o.sub,
    aud: o.aud ?? issuer,
    iat: o.iat === undefined ? t : o.iat,
    nbf: o.nbf ?? null,
    exp: o.exp === undefined ? t + 60 : o.exp,
    jti: o.jti === undefined ? randomUUID() : o.jti,
  };
  for (const k of Object.keys(claims)) if (claims[k] === null) delete claims[k];
  const kid = o.kid === undefined ? client.kid : o.kid;
  return new SignJWT(claims)
    .setProtectedHeader({ alg: o.alg ?? client.alg, ...(kid !== null ? { kid } : {}) })
    .sign(o.key ?? client.privateKey);
}

/** The form fields that authenticate a client with private_key_jwt. */
export function assertionFields(assertion: string): Record<string, string> {
  return {
    client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
    client_assertion: assertion,
  };
}

// ---------------------------------------------------------------------------------------------
// DPoP proofs (RFC 9449)

export type ProofAlg = 'ES256' | 'PS256' | 'EdDSA' | 'RS256';

export interface DpopKey {
  alg: ProofAlg;
  /** For openid-client's getDPoPHandle. */
  pair: CryptoKeyPair;
  /** Public JWK as it goes into the proof header. */
  publicJwk: JWK;
  /** The full private JWK (only to build the "private key inside jwk" proof). */
  privateJwk: JWK;
  /** RFC 7638 thumbprint, the `dpop_jkt` / `cnf.jkt` of this key. */
  jkt: string;
}

export async function generateDpopKey(alg: ProofAlg = 'ES256'): Promise<DpopKey> {
  const pair = (await generateKeyPair(alg, { extractable: true })) as CryptoKeyPair;
  const publicJwk = await exportJWK(pair.publicKey);
  return {
    alg,
    pair,
    publicJwk,
    privateJwk: await exportJWK(pair.privateKey),
    jkt: await calculateJwkThumbprint(publicJwk),
  };
}

export interface ProofOptions {
  htm: string;
  htu: string;
  /** Adds `ath` = base64url(SHA-256(accessToken)). */
  accessToken?: string;
  nonce?: string;
  /** Default now. */
  iat?: number;
  /** Default random. */
  jti?: string;
  /** Merged over {typ: 'dpop+jwt', alg, jwk}; a member set to undefined is removed. */
  header?: Record<string, unknown>;
  /** Merged over {jti, htm, htu, iat, ath?, nonce?}; a member set to undefined is removed. */
  claims?: Record<string, unknown>;
  /** 'corrupt' flips a bit of a valid signature; 'none' sends an empty signature. */
  signature?: 'valid' | 'corrupt' | 'none';
}

export const ath = (accessToken: string) => createHash('sha256').update(accessToken).digest('base64url');

const b64json = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url');

function signParams(key: CryptoKey): AlgorithmIdentifier | EcdsaParams | RsaPssParams {
  switch (key.algorithm.name) {
    case 'ECDSA':
      return { name: 'ECDSA', hash: 'SHA-256' };
    case 'RSA-PSS':
      return { name: 'RSA-PSS', saltLength: 32 };
    default:
      return { name: key.algorithm.name };
  }
}

/** Signs `header.payload` with `key` as a compact JWS (the header is taken as given). */
async function rawJws(
  header: Record<string, unknown>,
  payload: Record<string, unknown>,
  key: CryptoKey,
): Promise<string> {
  const input = `${b64json(header)}.${b64json(payload)}`;
  const sig = new Uint8Array(await crypto.subtle.sign(signParams(key), key, Buffer.from(input)));
  return `${input}.${Buffer.from(sig).toString('base64url')}`;
}

function merge(
  base: Record<string, unknown>,
  extra: Record<string, unknown> | undefined,
): Record<string, unknown> {
  const out = { ...base, ...extra };
  for (const [k, v] of Object.entries(out)) if (v === undefined) delete out[k];
  return out;
}

export async function dpopProof(key: DpopKey, o: ProofOptions): Promise<string> {
  const header = merge({ typ: 'dpop+jwt', alg: key.alg, jwk: key.publicJwk }, o.header);
  const claims = merge(
    {
      jti: o.jti ?? randomBytes(16).toString('base64url'),
      htm: o.htm,
      htu: o.htu,
      iat: o.iat ?? now(),
      ...(o.accessToken !== undefined ? { ath: ath(o.accessToken) } : {}),
      ...(o.nonce !== undefined ? { nonce: o.nonce } : {}),
    },
    o.claims,
  );
  if (o.signature === 'none') return `${b64json(header)}.${b64json(claims)}.`;
  const jws = await rawJws(header, claims, key.pair.privateKey);
  if (o.signature !== 'corrupt') return jws;
  const [h, p, s] = jws.split('.') as [string, string, string];
  const sig = Buffer.from(s, 'base64url');
  sig[sig.length >> 1]! ^= 0x01;
  return `${h}.${p}.${sig.toString('base64url')}`;
}

// ---------------------------------------------------------------------------------------------
// HTTP

export interface HttpResult {
  status: number;
  headers: Headers;
  text: string;
  /** Parsed JSON body, or undefined when the body is not JSON. */
  body: Record<string, unknown> | undefined;
}

export interface SendOptions {
  method?: string;
  headers?: Record<string, string>;
  form?: Record<string, string | string[]> | URLSearchParams;
  query?: Record<string, string>;
}

function formBody(form: NonNullable<SendOptions['form']>): string {
  if (form instanceof URLSearchParams) return form.toString();
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(form)) for (const one of Array.isArray(v) ? v : [v]) p.append(k, one);
  return p.toString();
}

function parseJson(text: string): Record<string, unknown> | undefined {
  try {
    const v: unknown = JSON.parse(text);
    return typeof v === 'object' && v !== null && !Array.isArray(v)
      ? (v as Record<string, unknown>)
      : undefined;
  } catch {
    return undefined;
  }
}

export async function send(hub: HubConnection, url: string | URL, o: SendOptions = {}): Promise<HttpResult> {
  const target = new URL(url);
  for (const [k, v] of Object.entries(o.query ?? {})) target.searchParams.set(k, v);
  const headers: Record<string, string> = { accept: 'application/json', ...o.headers };
  if (o.form) headers['content-type'] = 'application/x-www-form-urlencoded';
  const res = await hub.fetch(target, {
    method: o.method ?? (o.form ? 'POST' : 'GET'),
    headers,
    ...(o.form ? { body: formBody(o.form) } : {}),
    redirect: 'manual',
  });
  const text = await res.text();
  return { status: res.status, headers: res.headers, text, body: parseJson(text) };
}

/** A JSON request (RFC 7591/7592 style), with an optional Bearer token; the answer parsed. */
export async function sendJson(
  hub: HubConnection,
  method: string,
  url: string | URL,
  body?: unknown,
  bearer?: string,
): Promise<HttpResult> {
  const res = await hub.fetch(url, {
    method,
    headers: {
      accept: 'application/json',
      ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
      ...(bearer ? { authorization: `Bearer ${bearer}` } : {}),
    },
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  });
  const text = await res.text();
  return { status: res.status, headers: res.headers, text, body: parseJson(text) };
}

/**
 * A request whose header lines are sent exactly as listed, repeated names included (fetch's
 * Headers would fold `DPoP: a` + `DPoP: b` into one line).
 */
export async function sendRawHeaders(
  hub: HubConnection,
  url: string | URL,
  o: { method: string; headers: Record<string, string | string[]>; form?: Record<string, string> },
): Promise<HttpResult> {
  const headers: Record<string, string | string[]> = { accept: 'application/json', ...o.headers };
  if (o.form) headers['content-type'] = 'application/x-www-form-urlencoded';
  const res = await undiciRequest(url, {
    method: o.method as Dispatcher.HttpMethod,
    headers,
    ...(o.form ? { body: new URLSearchParams(o.form).toString() } : {}),
    dispatcher: hub.dispatcher,
  });
  const text = await res.body.text();
  const h = new Headers();
  for (const [k, v] of Object.entries(res.headers)) {
    if (v === undefined) continue;
    for (const one of Array.isArray(v) ? v : [v]) h.append(k, one);
  }
  return { status: res.statusCode, headers: h, text, body: parseJson(text) };
}

// ---------------------------------------------------------------------------------------------
// PKCE, PAR, token

export interface Pkce {
  verifier: string;
  challenge: string;
}

export function pkce(): Pkce {
  const verifier = randomBytes(32).toString('base64url');
  return { verifier, challenge: createHash('sha256').update(verifier).digest('base64url') };
}

export interface ClientAuthOptions {
  /**
   * The assertion to send, options to build one, or null to send only client_id. Default: a valid
   * assertion for a private_key_jwt client, none for an mTLS-authenticated one (its certificate is it).
   */
  assertion?: string | AssertionOptions | null;
  /** client_id form field; default the client's id (private_key_jwt sends it alongside). */
  clientId?: string | null;
}

/** The form fields that authenticate `client` (client_id, and its assertion for private_key_jwt). */
export async function clientAuthFields(
  hub: HubConnection,
  client: ClientIdentity,
  o: ClientAuthOptions = {},
): Promise<Record<string, string>> {
  const fields: Record<string, string> = {};
  const clientId = o.clientId === undefined ? client.clientId : o.clientId;
  if (clientId !== null) fields.client_id = clientId;
  if (o.assertion === null || (o.assertion === undefined && client.authMethod !== 'private_key_jwt'))
    return fields;
  const assertion =
    typeof o.assertion === 'string' ? o.assertion : await clientAssertion(hub.issuer, client, o.assertion);
  return { ...fields, ...assertionFields(assertion) };
}

export interface EndpointRequestOptions extends ClientAuthOptions {
  /** DPoP header value, or a key to build a valid proof for this request with. */
  dpop?: string | DpopKey;
}

async function endpointRequest(
  hub: HubConnection,
  url: string,
  client: ClientIdentity,
  params: Record<string, string | string[]>,
  o: EndpointRequestOptions,
): Promise<HttpResult> {
  const headers: Record<string, string> = {};
  if (o.dpop !== undefined)
    headers.dpop = typeof o.dpop === 'string' ? o.dpop : await dpopProof(o.dpop, { htm: 'POST', htu: url });
  const form = { ...(await clientAuthFields(hub, client, o)), ...params };
  return send(hub, url, { method: 'POST', headers, form });
}

/** POST to the PAR endpoint (RFC 9126); `params` are the authorization request parameters. */
export function pushAuthorizationRequest(
  hub: HubConnection,
  client: ClientIdentity,
  params: Record<string, string | string[]>,
  o: EndpointRequestOptions = {},
): Promise<HttpResult> {
  return endpointRequest(hub, hub.metadata.pushed_authorization_request_endpoint, client, params, o);
}

export function tokenRequest(
  hub: HubConnection,
  client: ClientIdentity,
  params: Record<string, string | string[]>,
  o: EndpointRequestOptions = {},
): Promise<HttpResult> {
  return endpointRequest(hub, hub.metadata.token_endpoint, client, params, o);
}

/** The authorization URL for a request_uri (what the client sends the browser to). */
export function authorizationUrl(
  hub: HubConnection,
  clientId: string,
  requestUri: string,
  extra: Record<string, string> = {},
): URL {
  const url = new URL(hub.metadata.authorization_endpoint);
  url.searchParams.set('client_id', clientId);
  url.searchParams.set('request_uri', requestUri);
  for (const [k, v] of Object.entries(extra)) url.searchParams.set(k, v);
  return url;
}

/** A signed request object (RFC 9101) from `client`, with the claims given (iss/aud/exp/nbf/iat/jti defaulted). */
export async function requestObject(
  issuer: string,
  client: ClientIdentity,
  claims: Record<string, unknown>,
): Promise<string> {
  const t = now();
  return new SignJWT({
    iss: client.clientId,
    aud: issuer,
    client_id: client.clientId,
    iat: t,
    nbf: t,
    exp: t + 60,
    jti: randomUUID(),
    ...claims,
  })
    .setProtectedHeader({ alg: client.alg, kid: client.kid, typ: 'oauth-authz-req+jwt' })
    .sign(client.privateKey);
}
