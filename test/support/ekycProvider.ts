/**
 * An upstream eKYC provider for tests: the upstream OP of ./upstreamOp.ts (a real oidc-provider over
 * HTTPS on loopback with its own dev CA), issuing OpenID Connect for Identity Assurance `verified_claims`
 * through the claims parameter. The person it vouches for is set by the test (`person`); its
 * login and consent are automatic (the hub only sees the protocol).
 */

import { startUpstreamOp } from './upstreamOp.ts';

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
  /** A JWK Set published in place of the provider's own (its ID tokens then verify against nothing). */
  publishedJwks: { keys: Array<Record<string, unknown>> } | undefined;
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
  // 127.0.0.1: a browser keeps its cookies apart from the hub's; RS256: the hub's eKYC client sets no alg.
  const op = await startUpstreamOp({
    hostname: '127.0.0.1',
    idTokenAlg: 'RS256',
    claimNames: ['verified_claims'],
  });
  const clientId = 'kakehashi-hub';
  const clientSecret = 'ekyc-test-client-secret-0123456789';
  await op.addClient({
    client_id: clientId,
    client_secret: clientSecret,
    redirect_uris: [o.redirectUri],
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
  });
  let person: EkycPerson = { sub: 'nobody', verified_claims: undefined };
  return {
    issuer: op.issuer,
    caPem: op.caPem,
    caPath: op.caPath,
    certPem: op.certPem,
    clientId,
    clientSecret,
    get person() {
      return person;
    },
    set person(p: EkycPerson) {
      person = p;
      op.account = {
        sub: p.sub,
        claims: p.verified_claims === undefined ? {} : { verified_claims: p.verified_claims },
      };
    },
    get publishedJwks() {
      return op.publishedJwks;
    },
    set publishedJwks(jwks) {
      op.publishedJwks = jwks;
    },
    close: () => op.close(),
  };
}
