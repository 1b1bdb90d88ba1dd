/**
 * One virtual customer + aggregator pair driving the complete FAPI 2.0 flow over HTTP, the way a
 * browser and an RP would (no browser, no HTML parsing), and passkey enrollment for the set-up.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import type { PasskeyEmulator } from '../../support/passkeyEmulator.ts';
import { type Connection, CookieJar, request, type Target } from './http.ts';
import { type ClientAssertionSigner, createClientAssertionSigner, type DpopSigner, pkcePair } from './jws.ts';

export interface FlowSettings {
  target: Target;
  /** Endpoint paths from discovery. */
  parPath: string;
  authPath: string;
  tokenPath: string;
  parUrl: string;
  tokenUrl: string;
  clientSigner: ClientAssertionSigner;
  redirectUri: string;
  scope: string;
  /** GET the consent page's HTML before posting the decision, as a browser does. */
  consentPage: boolean;
  /** GET the login page's HTML before the passkey ceremony, as a browser does. */
  loginPage: boolean;
  /** Bind the code to the DPoP key with a DPoP proof at PAR (true) or only with dpop_jkt (false). */
  parDpopProof: boolean;
}

export interface VirtualUser {
  conn: Connection;
  dpop: DpopSigner;
  device: PasskeyEmulator;
  customerNumber: string;
  accountIds: string[];
  /** The latest access token this user obtained (the API phase reuses them). */
  accessToken?: string;
}

/** Step names in flow order, for the per-step latency breakdown. */
export const STEPS = [
  'par',
  'authorize',
  'loginPage',
  'passkeyOptions',
  'passkeyAssert',
  'passkeyVerify',
  'resumeLogin',
  'consentPage',
  'consent',
  'resumeConsent',
  'token',
] as const;
export type Step = (typeof STEPS)[number];
export type StepTimes = Partial<Record<Step, number>>;

const FORM = 'application/x-www-form-urlencoded';
const JSON_TYPE = 'application/json';

function headersFor(
  s: FlowSettings,
  jar: CookieJar | undefined,
  path: string,
  extra?: Record<string, string>,
) {
  const h: Record<string, string> = { host: s.target.host, 'user-agent': 'kakehashi-bench/1', ...extra };
  const cookie = jar?.header(path);
  if (cookie) h.cookie = cookie;
  return h;
}

function pathOf(s: FlowSettings, location: string | undefined, step: string): string {
  if (!location) throw new Error(`${step}: no Location`);
  if (location.startsWith('/')) return location;
  if (location.startsWith(s.target.issuer)) return location.slice(s.target.issuer.length);
  throw new Error(`${step}: unexpected redirect to ${location.slice(0, 120)}`);
}

/** The PAR form: the code request with PKCE S256 and a fresh private_key_jwt client assertion. */
export function parRequestBody(s: FlowSettings, challenge: string, state: string): URLSearchParams {
  return new URLSearchParams({
    client_id: s.clientSigner.clientId,
    response_type: 'code',
    redirect_uri: s.redirectUri,
    scope: s.scope,
    code_challenge: challenge,
    code_challenge_method: 'S256',
    state,
    client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
    client_assertion: s.clientSigner.assertion(s.target.issuer),
  });
}

/** PAR with private_key_jwt, PKCE S256 and a DPoP binding; returns the request_uri and PKCE verifier. */
async function pushAuthorizationRequest(s: FlowSettings, u: VirtualUser) {
  const pkce = pkcePair();
  const state = pkce.verifier.slice(0, 16);
  const form = parRequestBody(s, pkce.challenge, state);
  const extra: Record<string, string> = { 'content-type': FORM, accept: JSON_TYPE };
  if (s.parDpopProof) extra.dpop = u.dpop.proof('POST', s.parUrl);
  else form.set('dpop_jkt', u.dpop.jkt);
  const res = await request(
    u.conn,
    'par',
    201,
    'POST',
    s.parPath,
    headersFor(s, undefined, s.parPath, extra),
    form.toString(),
    true,
  );
  const requestUri = (JSON.parse(res.text!) as { request_uri?: string }).request_uri;
  if (!requestUri) throw new Error('par: no request_uri');
  return { requestUri, verifier: pkce.verifier, state };
}

/** GET /auth?client_id&request_uri: returns the interaction path and sets the interaction cookies. */
async function authorize(
  s: FlowSettings,
  u: VirtualUser,
  jar: CookieJar,
  requestUri: string,
): Promise<string> {
  const path = `${s.authPath}?client_id=${encodeURIComponent(s.clientSigner.clientId)}&request_uri=${encodeURIComponent(requestUri)}`;
  const res = await request(
    u.conn,
    'authorize',
    303,
    'GET',
    path,
    headersFor(s, jar, path, { accept: 'text/html' }),
    undefined,
    false,
  );
  jar.store(res.setCookie);
  const interaction = pathOf(s, res.location, 'authorize');
  if (!interaction.startsWith('/interaction/')) throw new Error(`authorize: redirected to ${interaction}`);
  return interaction;
}

async function postJson(
  s: FlowSettings,
  u: VirtualUser,
  jar: CookieJar,
  step: string,
  path: string,
  body: unknown,
) {
  const res = await request(
    u.conn,
    step,
    200,
    'POST',
    path,
    headersFor(s, jar, path, { 'content-type': JSON_TYPE, accept: JSON_TYPE, origin: s.target.issuer }),
    JSON.stringify(body),
    true,
  );
  jar.store(res.setCookie);
  return JSON.parse(res.text!) as Record<string, unknown>;
}

async function getPage(s: FlowSettings, u: VirtualUser, jar: CookieJar, step: string, path: string) {
  const res = await request(
    u.conn,
    step,
    200,
    'GET',
    path,
    headersFor(s, jar, path, { accept: 'text/html' }),
    undefined,
    false,
  );
  jar.store(res.setCookie);
}

/** GET a redirect the browser follows; returns where it points next. */
async function follow(
  s: FlowSettings,
  u: VirtualUser,
  jar: CookieJar,
  step: string,
  path: string,
): Promise<string> {
  const res = await request(
    u.conn,
    step,
    303,
    'GET',
    path,
    headersFor(s, jar, path, { accept: 'text/html' }),
    undefined,
    false,
  );
  jar.store(res.setCookie);
  if (!res.location) throw new Error(`${step}: no Location`);
  return res.location;
}

type Lap = (step: Step) => Promise<void> | undefined;

/** PAR through the last /auth resume: the authorization code and the PKCE verifier for it. */
async function authorizationSteps(s: FlowSettings, u: VirtualUser, lap: Lap) {
  const jar = new CookieJar();
  const origin = s.target.issuer;
  const par = await pushAuthorizationRequest(s, u);
  await lap('par');
  const loginPath = await authorize(s, u, jar, par.requestUri);
  await lap('authorize');
  if (s.loginPage) {
    await getPage(s, u, jar, 'loginPage', loginPath);
    await lap('loginPage');
  }
  const options = await postJson(s, u, jar, 'passkeyOptions', `${loginPath}/passkey/options`, {});
  await lap('passkeyOptions');
  const assertion = u.device.authenticate(options as never, origin);
  await lap('passkeyAssert');
  const verified = await postJson(s, u, jar, 'passkeyVerify', `${loginPath}/passkey/verify`, assertion);
  await lap('passkeyVerify');
  const consentPath = pathOf(
    s,
    await follow(s, u, jar, 'resumeLogin', pathOf(s, verified.redirectTo as string, 'passkeyVerify')),
    'resumeLogin',
  );
  if (!consentPath.startsWith('/interaction/')) throw new Error(`resumeLogin: redirected to ${consentPath}`);
  await lap('resumeLogin');
  if (s.consentPage) {
    await getPage(s, u, jar, 'consentPage', consentPath);
    await lap('consentPage');
  }
  let form = 'decision=approve';
  for (const id of u.accountIds) form += `&account=${encodeURIComponent(id)}`;
  const consentRes = await request(
    u.conn,
    'consent',
    303,
    'POST',
    `${consentPath}/consent`,
    headersFor(s, jar, `${consentPath}/consent`, { 'content-type': FORM, accept: 'text/html', origin }),
    form,
    false,
  );
  jar.store(consentRes.setCookie);
  await lap('consent');
  const callback = await follow(s, u, jar, 'resumeConsent', pathOf(s, consentRes.location, 'consent'));
  await lap('resumeConsent');

  if (!callback.startsWith(`${s.redirectUri}?`))
    throw new Error(`resumeConsent: redirected to ${callback.slice(0, 120)}`);
  const params = new URLSearchParams(callback.slice(s.redirectUri.length + 1));
  const code = params.get('code');
  if (!code || params.get('state') !== par.state || params.get('iss') !== s.target.issuer)
    throw new Error(`callback: ${callback.slice(0, 200)}`);
  return { code, verifier: par.verifier };
}

/** The token request's form for `code` (a fresh client assertion each time). */
export function tokenRequestBody(s: FlowSettings, code: string, verifier: string): string {
  return new URLSearchParams({
    grant_type: 'authorization_code',
    code,
    redirect_uri: s.redirectUri,
    code_verifier: verifier,
    client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
    client_assertion: s.clientSigner.assertion(s.target.issuer),
  }).toString();
}

/**
 * Everything of a flow but the token request (for checks of the token endpoint): the code and the
 * PKCE verifier it was requested with.
 */
export function obtainCode(s: FlowSettings, u: VirtualUser): Promise<{ code: string; verifier: string }> {
  return authorizationSteps(s, u, () => undefined);
}

/**
 * Runs one complete flow and returns per-step durations (ms). Throws on any deviation. Every flow
 * starts in a fresh browser profile, so each one signs in with the passkey and consents.
 */
export async function runFlow(
  s: FlowSettings,
  u: VirtualUser,
  times: StepTimes,
  onLap?: (step: Step | 'start') => Promise<void>,
): Promise<void> {
  await onLap?.('start');
  let t = performance.now();
  // Synchronous unless a probe is given (the per-step CPU table), so the hot path pays no await.
  const lap = (step: Step): Promise<void> | undefined => {
    const now = performance.now();
    times[step] = now - t;
    if (!onLap) {
      t = now;
      return undefined;
    }
    return onLap(step).then(() => {
      t = performance.now();
    });
  };

  const { code, verifier } = await authorizationSteps(s, u, lap);
  const res = await request(
    u.conn,
    'token',
    200,
    'POST',
    s.tokenPath,
    headersFor(s, undefined, s.tokenPath, {
      'content-type': FORM,
      accept: JSON_TYPE,
      dpop: u.dpop.proof('POST', s.tokenUrl),
    }),
    tokenRequestBody(s, code, verifier),
    true,
  );
  const tokens = JSON.parse(res.text!) as { access_token?: string; token_type?: string };
  if (!tokens.access_token || tokens.token_type?.toLowerCase() !== 'dpop')
    throw new Error(`token: unexpected response ${res.text!.slice(0, 200)}`);
  u.accessToken = tokens.access_token;
  await lap('token');
}

/** Enrolls the user's device with a one-time ticket in a fresh interaction (set-up, not measured). */
export async function enroll(s: FlowSettings, u: VirtualUser, ticket: string): Promise<void> {
  const jar = new CookieJar();
  const par = await pushAuthorizationRequest(s, u);
  const loginPath = await authorize(s, u, jar, par.requestUri);
  const creation = await postJson(s, u, jar, 'enrollOptions', `${loginPath}/enroll/options`, {
    customerNumber: u.customerNumber,
    ticket,
  });
  const response = u.device.register(creation as never, s.target.issuer);
  const done = await postJson(s, u, jar, 'enrollVerify', `${loginPath}/enroll/verify`, {
    response,
    passkeyName: 'bench',
  });
  if (done.registered !== true) throw new Error('enroll: not registered');
}

export interface DemoClientFile {
  client_id: string;
  redirect_uris: string[];
  private_jwk: JsonWebKey & { kid: string };
}

/**
 * Flow settings for the demo aggregator (<dataDir>/demo/aggregator-client.json) from the hub's
 * discovery document, fetched over `conn`.
 */
export async function discoverFlow(
  conn: Connection,
  target: Target,
  dataDir: string,
  options: Pick<FlowSettings, 'scope' | 'consentPage' | 'loginPage' | 'parDpopProof'>,
): Promise<FlowSettings> {
  const demoClient = JSON.parse(
    readFileSync(path.join(dataDir, 'demo', 'aggregator-client.json'), 'utf8'),
  ) as DemoClientFile;
  const res = await request(
    conn,
    'discovery',
    200,
    'GET',
    '/.well-known/openid-configuration',
    { host: target.host },
    undefined,
    true,
  );
  const discovery = JSON.parse(res.text!) as Record<string, string>;
  const pathOf = (u: string) => new URL(u).pathname;
  return {
    target,
    parPath: pathOf(discovery.pushed_authorization_request_endpoint!),
    authPath: pathOf(discovery.authorization_endpoint!),
    tokenPath: pathOf(discovery.token_endpoint!),
    parUrl: discovery.pushed_authorization_request_endpoint!,
    tokenUrl: discovery.token_endpoint!,
    clientSigner: createClientAssertionSigner(demoClient.client_id, demoClient.private_jwk),
    redirectUri: demoClient.redirect_uris[0]!,
    ...options,
  };
}
