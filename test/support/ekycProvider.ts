/**
 * An upstream eKYC provider for tests: a real oidc-provider instance over HTTPS on loopback (its
 * own dev CA, made by src/tls), issuing OpenID Connect for Identity Assurance `verified_claims`
 * through the claims parameter. The person it vouches for is set by the test (`person`); its
 * login and consent are automatic (the hub only sees the protocol).
 */

import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:https';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { exportJWK, generateKeyPair } from 'jose';
import Provider from 'oidc-provider';
import { ensureDevTls } from '../../src/tls/index.ts';
import { freePort } from './hub.ts';

export interface EkycPerson {
  sub: string;
  verified_claims: unknown;
}

export interface EkycProvider {
  issuer: string;
  caPem: string;
  caPath: string;
  /** Its TLS server certificate (a browser test pins it, see test/support/browser.ts). */
  certPem: string;
  clientId: string;
  clientSecret: string;
  /** Who the next login at the provider is. */
  person: EkycPerson;
  close(): Promise<void>;
}

/** `verified_claims` as a Japanese eKYC provider would return them. */
export function jpAmlClaims(claims: Record<string, unknown>, trustFramework = 'jp_aml'): unknown {
  return {
    verification: {
      trust_framework: trustFramework,
      time: '2026-11-20T10:00:00Z',
      evidence: [{ type: 'electronic_record', record: { type: 'mynumber_card' } }],
    },
    claims,
  };
}

export async function startEkycProvider(o: { redirectUri: string }): Promise<EkycProvider> {
  const dir = mkdtempSync(path.join(tmpdir(), 'kakehashi-ekyc-'));
  const tls = await ensureDevTls(dir);
  const port = await freePort();
  // 127.0.0.1, not localhost: a browser keeps its cookies apart from the hub's (cookies ignore ports).
  const issuer = `https://127.0.0.1:${port}`;
  const { privateKey } = await generateKeyPair('RS256', { extractable: true });
  const clientId = 'kakehashi-hub';
  const clientSecret = 'ekyc-test-client-secret-0123456789';
  const state: { person: EkycPerson } = { person: { sub: 'nobody', verified_claims: undefined } };

  const provider = new Provider(issuer, {
    clients: [
      {
        client_id: clientId,
        client_secret: clientSecret,
        redirect_uris: [o.redirectUri],
        grant_types: ['authorization_code'],
        response_types: ['code'],
        token_endpoint_auth_method: 'client_secret_basic',
      },
    ],
    jwks: { keys: [{ ...(await exportJWK(privateKey)), kid: 'ekyc-1', alg: 'RS256', use: 'sig' }] },
    cookies: { keys: ['ekyc-test-cookie-key-0123456789abcdef'] },
    features: { claimsParameter: { enabled: true }, devInteractions: { enabled: false } },
    claims: { openid: ['sub'], verified_claims: null },
    pkce: { required: () => true },
    ttl: {
      AccessToken: 300,
      AuthorizationCode: 60,
      Grant: 600,
      IdToken: 300,
      Interaction: 600,
      Session: 600,
    },
    interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
    async findAccount(_ctx, sub) {
      return {
        accountId: sub,
        async claims() {
          return sub === state.person.sub ? { sub, verified_claims: state.person.verified_claims } : { sub };
        },
      };
    },
  });
  provider.use(async (ctx, next) => {
    if (!/^\/interaction\/[^/]+$/.test(ctx.path)) return next();
    const details = await provider.interactionDetails(ctx.req, ctx.res);
    let result: Record<string, unknown>;
    if (details.prompt.name === 'login') {
      result = { login: { accountId: state.person.sub } };
    } else {
      const grant = new provider.Grant({
        accountId: details.session!.accountId,
        clientId: String(details.params.client_id),
      });
      grant.addOIDCScope('openid');
      const missing = details.prompt.details.missingOIDCClaims as string[] | undefined;
      if (missing?.length) grant.addOIDCClaims(missing);
      result = { consent: { grantId: await grant.save() } };
    }
    ctx.redirect(
      await provider.interactionResult(ctx.req, ctx.res, result, { mergeWithLastSubmission: true }),
    );
    ctx.status = 303;
  });

  const server: Server = createServer({ key: tls.keyPem, cert: tls.certPem }, provider.callback());
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  return {
    issuer,
    caPem: tls.caPem,
    caPath: tls.caPath,
    certPem: tls.certPem,
    clientId,
    clientSecret,
    get person() {
      return state.person;
    },
    set person(p: EkycPerson) {
      state.person = p;
    },
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
