/**
 * A real upstream OpenID provider for tests (oidc-provider on loopback HTTPS with its own test CA):
 * a bank the hub links accounts at, an eKYC provider, any OP the hub is a relying party of.
 * The "customer" at this OP is one configured account; its sign-in is automatic, with the acr and
 * amr the test chooses, so tests decide what the OP asserts. Clients can be added after start
 * (e.g. once the hub's RP key is known). Everything is mutable between requests: `account`,
 * `login`, `decision`.
 */
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import Provider, { type Adapter, type AdapterPayload } from 'oidc-provider';
import { ensureDevTls } from '../../src/tls/index.ts';

/** What the OP's automatic sign-in asserts. */
export interface UpstreamLogin {
  acr?: string;
  amr?: string[];
  /**
   * When the customer signed in (epoch seconds), for the next sign-in only: a session the customer
   * opened at the OP long ago. Later sign-ins are fresh (as when the OP asks again for max_age).
   */
  authTime?: number;
}

export interface UpstreamOpOptions {
  /** Claims of the one account (besides `sub`), e.g. names and a bank account. */
  claims?: Record<string, unknown>;
  /** acr and amr of the automatic sign-in. */
  login?: UpstreamLogin;
  /** Offer PAR (pushed_authorization_request_endpoint) and require it. Default false. */
  requirePar?: boolean;
  /** Offer PAR at all. Default true (false: a bank without PAR). */
  offerPar?: boolean;
  /** Accept signed request objects (JAR, ES256) without requiring them. Default false. */
  offerSignedRequestObject?: boolean;
  /** Extra claim names the OP may release under the `profile` scope. */
  profileClaims?: string[];
  /** Accept signed request objects (JAR) and require them of every client. Default false. */
  requireSignedRequestObject?: boolean;
  /**
   * Host of the issuer URL. Default `localhost`; a browser test uses `127.0.0.1` so that the browser
   * keeps this OP's cookies apart from the hub's (cookies ignore ports).
   */
  hostname?: 'localhost' | '127.0.0.1';
  /**
   * ID token signing algorithm. Default ES256 (RS256: what a relying party without settings expects;
   * HS256: signed with the client's secret, which proves nothing the token endpoint's TLS does not).
   */
  idTokenAlg?: 'ES256' | 'RS256' | 'HS256';
  /** More claims the OP knows, by name, for the claims parameter (e.g. `verified_claims`). */
  claimNames?: string[];
}

export interface UpstreamOp {
  issuer: string;
  /** PEM of the CA that issued the OP's certificate, and its file. */
  caPem: string;
  caPath: string;
  /** The OP's TLS server certificate (a browser test pins it, see test/support/browser.ts). */
  certPem: string;
  provider: Provider;
  /** The account the OP signs in (claims are read at every request). */
  account: { sub: string; claims: Record<string, unknown> };
  login: UpstreamLogin;
  /** Sign-ins the OP has performed (each login prompt answered). */
  signIns: number;
  /** What the customer does at the OP: approve, or deny (the OP answers access_denied). */
  decision: 'approve' | 'deny';
  /**
   * When set, the OP's jwks_uri serves these keys instead of the one it signs with (a bank that
   * rotated badly, or an ID token that is not the bank's): relying parties must refuse its tokens.
   */
  publishedJwks: { keys: Array<Record<string, unknown>> } | undefined;
  /** Registers a client (oidc-provider client metadata). */
  addClient(metadata: Record<string, unknown>): Promise<void>;
  close(): Promise<void>;
}

/** A per-instance in-memory adapter (the library's own one is shared by every instance). */
function memoryAdapter() {
  const store = new Map<string, AdapterPayload>();
  const uids = new Map<string, string>();
  return class MemoryAdapter implements Adapter {
    readonly name: string;
    constructor(name: string) {
      this.name = name;
    }
    key(id: string) {
      return `${this.name}:${id}`;
    }
    async upsert(id: string, payload: AdapterPayload) {
      store.set(this.key(id), payload);
      if (payload.uid) uids.set(payload.uid, id);
    }
    async find(id: string) {
      return store.get(this.key(id));
    }
    async findByUid(uid: string) {
      const id = uids.get(uid);
      return id ? store.get(this.key(id)) : undefined;
    }
    async findByUserCode() {
      return undefined;
    }
    async consume(id: string) {
      const p = store.get(this.key(id));
      if (p) p.consumed = Math.floor(Date.now() / 1000);
    }
    async destroy(id: string) {
      store.delete(this.key(id));
    }
    async revokeByGrantId(grantId: string) {
      for (const [k, p] of store) if (p.grantId === grantId) store.delete(k);
    }
  };
}

const NAME_CLAIMS = [
  'name',
  'family_name',
  'given_name',
  'name#ja-Kana-JP',
  'family_name#ja-Kana-JP',
  'given_name#ja-Kana-JP',
];

export async function startUpstreamOp(options: UpstreamOpOptions = {}): Promise<UpstreamOp> {
  const dir = mkdtempSync(path.join(tmpdir(), 'kakehashi-upstream-op-'));
  const tls = await ensureDevTls(dir);
  const server = https.createServer({ cert: tls.certPem, key: tls.keyPem });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const issuer = `https://${options.hostname ?? 'localhost'}:${(server.address() as AddressInfo).port}`;
  const idTokenAlg = options.idTokenAlg ?? 'ES256';
  // The OP's own key (HS256 ID tokens are signed with the client's secret instead).
  const keyAlg = idTokenAlg === 'RS256' ? 'RS256' : 'ES256';
  const signing = (
    keyAlg === 'RS256'
      ? generateKeyPairSync('rsa', { modulusLength: 2048 })
      : generateKeyPairSync('ec', { namedCurve: 'P-256' })
  ).privateKey.export({ format: 'jwk' });
  const Adapter = memoryAdapter();
  const clientStore = new Adapter('Client');

  const op: UpstreamOp = {
    issuer,
    caPem: tls.caPem,
    caPath: tls.caPath,
    certPem: tls.certPem,
    provider: undefined as unknown as Provider,
    account: { sub: `upstream-${randomBytes(6).toString('hex')}`, claims: { ...options.claims } },
    login: { ...options.login },
    signIns: 0,
    decision: 'approve',
    publishedJwks: undefined,
    async addClient(metadata) {
      await clientStore.upsert(String(metadata.client_id), metadata as AdapterPayload);
    },
    async close() {
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
      rmSync(dir, { recursive: true, force: true });
    },
  };

  const provider = new Provider(issuer, {
    adapter: Adapter,
    jwks: {
      keys: [{ ...signing, kid: `upstream-${keyAlg.toLowerCase()}`, alg: keyAlg, use: 'sig' }],
    },
    cookies: { keys: [randomBytes(32).toString('base64url')] },
    features: {
      devInteractions: { enabled: false },
      claimsParameter: { enabled: true },
      pushedAuthorizationRequests: {
        enabled: options.offerPar !== false,
        requirePushedAuthorizationRequests: !!options.requirePar,
      },
      requestObjects: {
        enabled: !!options.requireSignedRequestObject || !!options.offerSignedRequestObject,
        requireSignedRequestObject: !!options.requireSignedRequestObject,
      },
    },
    pkce: { required: () => true },
    clientAuthMethods: ['private_key_jwt', 'client_secret_basic'],
    enabledJWA: {
      clientAuthSigningAlgValues: ['ES256', 'PS256'],
      idTokenSigningAlgValues: [idTokenAlg],
      requestObjectSigningAlgValues: ['ES256'],
    },
    acrValues: op.login.acr ? [op.login.acr] : [],
    claims: {
      openid: ['sub', 'acr', 'amr', 'auth_time'],
      profile: [...NAME_CLAIMS, ...(options.profileClaims ?? [])],
      ...Object.fromEntries((options.claimNames ?? []).map((name) => [name, null])),
    },
    conformIdTokenClaims: false,
    findAccount: (_ctx, sub) =>
      sub === op.account.sub
        ? { accountId: sub, claims: async () => ({ sub, ...op.account.claims }) }
        : undefined,
    interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
    renderError: (ctx, out) => {
      ctx.type = 'json';
      ctx.body = out;
    },
  });
  provider.proxy = false;
  op.provider = provider;
  const callback = provider.callback();

  server.on('request', async (req, res) => {
    if (req.url === '/jwks' && op.publishedJwks) {
      res.setHeader('content-type', 'application/jwk-set+json');
      res.end(JSON.stringify(op.publishedJwks));
      return;
    }
    if (!req.url?.startsWith('/interaction/')) return callback(req, res);
    try {
      const details = await provider.interactionDetails(req, res);
      let result: Record<string, unknown>;
      if (op.decision === 'deny') {
        result = { error: 'access_denied', error_description: 'the customer cancelled at the bank' };
      } else if (details.prompt.name === 'login') {
        op.signIns++;
        result = {
          login: {
            accountId: op.account.sub,
            ...(op.login.acr ? { acr: op.login.acr } : {}),
            ...(op.login.amr ? { amr: op.login.amr } : {}),
            ...(op.login.authTime ? { ts: op.login.authTime } : {}),
          },
        };
        op.login.authTime = undefined;
      } else {
        const grant = new provider.Grant({
          accountId: op.account.sub,
          clientId: String(details.params.client_id),
        });
        grant.addOIDCScope(String(details.params.scope));
        const missing = (details.prompt.details.missingOIDCClaims as string[] | undefined) ?? [];
        if (missing.length) grant.addOIDCClaims(missing);
        result = { consent: { grantId: await grant.save() } };
      }
      await provider.interactionFinished(req, res, result, { mergeWithLastSubmission: false });
    } catch (err) {
      res.statusCode = 400;
      res.end(String((err as Error).message));
    }
  });
  return op;
}
