/**
 * Upstream eKYC over OpenID Connect for Identity Assurance: the hub is a relying party of the
 * configured eKYC provider. It asks (claims parameter) for `verified_claims` under the configured
 * trust framework (`jp_aml`) with family/given name (and readings if offered) and birth date in the
 * ID token, then matches them against the customer's registered name and birth date.
 * Authorization code flow with PKCE, state (the flow id) and nonce; client_secret_basic.
 */
import { readFileSync } from 'node:fs';
import * as client from 'openid-client';
import { Agent, fetch as undiciFetch } from 'undici';
import type { RequestMeta } from '../../authn/index.ts';
import { mismatchError, ProofingError } from '../errors.ts';
import type { ProofingFlow, ProofingMethod, VerifiedIdentity } from '../method.ts';
import { namesMatch, normalizeBirthdate } from '../names.ts';

export interface EkycSettings {
  issuer: string;
  clientId: string;
  clientSecret: string;
  caFile?: string | undefined;
  trustFramework: string;
}

/** The claims the hub asks to be verified (IA "claims" object: null = requested). */
const KANA = '#ja-Kana-JP';
const REQUESTED = {
  family_name: null,
  given_name: null,
  [`family_name${KANA}`]: null,
  [`given_name${KANA}`]: null,
  birthdate: null,
};

export interface EkycStart {
  redirectTo: string;
}

/** The URL the provider redirected the browser back to (code, state, iss). */
export interface EkycAnswer {
  callbackUrl: URL;
}

interface VerifiedClaims {
  verification?: { trust_framework?: unknown; time?: unknown; evidence?: unknown };
  claims?: Record<string, unknown>;
}

export function ekycMethod(
  settings: EkycSettings,
  o: { redirectUri: string; ttlSeconds: number },
): ProofingMethod<EkycStart, EkycAnswer> {
  const dispatcher = settings.caFile
    ? new Agent({ connect: { ca: readFileSync(settings.caFile, 'utf8') } })
    : undefined;
  const customFetch = (dispatcher
    ? (url: string, init: RequestInit) => undiciFetch(url, { ...(init as object), dispatcher })
    : fetch) as unknown as client.CustomFetch;
  let discovered: Promise<client.Configuration> | undefined;
  const configuration = () => {
    discovered ??= client
      .discovery(
        new URL(settings.issuer),
        settings.clientId,
        undefined,
        client.ClientSecretBasic(settings.clientSecret),
        // The ID token's signature is verified against the provider's published keys (openid-client
        // would trust the token endpoint's TLS alone): the proofing record's verified_claims then stand
        // on the provider's signature, not only on the connection they came over.
        { [client.customFetch]: customFetch, execute: [client.enableNonRepudiationChecks] },
      )
      .catch((err: unknown) => {
        discovered = undefined; // try again next time
        throw new ProofingError('ERR_PROOFING_UPSTREAM', { reason: 'discovery_failed', cause: err });
      });
    return discovered;
  };

  return {
    name: 'ekyc',
    ttlSeconds: o.ttlSeconds,
    async begin(flow) {
      const config = await configuration();
      const codeVerifier = client.randomPKCECodeVerifier();
      const nonce = client.randomNonce();
      const url = client.buildAuthorizationUrl(config, {
        redirect_uri: o.redirectUri,
        scope: 'openid',
        state: flow.id,
        nonce,
        code_challenge: await client.calculatePKCECodeChallenge(codeVerifier),
        code_challenge_method: 'S256',
        claims: JSON.stringify({
          id_token: {
            verified_claims: {
              verification: { trust_framework: { value: settings.trustFramework } },
              claims: REQUESTED,
            },
          },
        }),
      });
      return { secret: { codeVerifier, nonce }, reply: { redirectTo: url.href } };
    },

    async verify(flow: ProofingFlow, answer: EkycAnswer, _meta: RequestMeta): Promise<VerifiedIdentity> {
      const config = await configuration();
      const evidence: Record<string, unknown> = { issuer: settings.issuer };
      const upstreamError = answer.callbackUrl.searchParams.get('error');
      if (upstreamError)
        throw new ProofingError('ERR_PROOFING_UPSTREAM', {
          reason: `provider_error:${upstreamError.slice(0, 64)}`,
          evidence,
        });
      let claims: client.IDToken | undefined;
      try {
        const tokens = await client.authorizationCodeGrant(config, answer.callbackUrl, {
          pkceCodeVerifier: String(flow.secret.codeVerifier),
          expectedNonce: String(flow.secret.nonce),
          expectedState: flow.id,
          idTokenExpected: true,
        });
        claims = tokens.claims();
      } catch (err) {
        throw new ProofingError('ERR_PROOFING_UPSTREAM', {
          reason: `token_exchange:${(err as Error).message.slice(0, 120)}`,
          evidence,
          cause: err,
        });
      }
      const raw = claims?.verified_claims as VerifiedClaims | VerifiedClaims[] | undefined;
      const candidates = Array.isArray(raw) ? raw : raw ? [raw] : [];
      const verified = candidates.find((v) => v?.verification?.trust_framework === settings.trustFramework);
      evidence.trustFramework = verified ? settings.trustFramework : null;
      evidence.offeredTrustFrameworks = candidates.map((v) => String(v?.verification?.trust_framework ?? ''));
      if (!verified?.claims)
        throw new ProofingError('ERR_PROOFING_TRUST_FRAMEWORK', { reason: 'no_verified_claims', evidence });
      if (typeof verified.verification?.time === 'string')
        evidence.verificationTime = verified.verification.time;
      // The kinds of evidence (document, electronic record …), never their numbers or contents.
      if (Array.isArray(verified.verification?.evidence))
        evidence.evidenceTypes = verified.verification.evidence
          .map((e) => (e as { type?: unknown })?.type)
          .filter((t) => typeof t === 'string');
      // Who the provider vouched for, without their name: the pairwise-or-public subject.
      evidence.subject = claims?.sub;

      const customer = flow.customer;
      const c = verified.claims;
      const name = `${String(c.family_name ?? '')}${String(c.given_name ?? '')}`;
      const kana = `${String(c[`family_name${KANA}`] ?? '')}${String(c[`given_name${KANA}`] ?? '')}`;
      const checks = {
        name: !!customer && namesMatch(name, customer.nameKanji),
        birthdate:
          !!customer?.birthDate && normalizeBirthdate(c.birthdate) === normalizeBirthdate(customer.birthDate),
        // Readings are compared when the provider gave them.
        ...(kana ? { kana: !!customer && namesMatch(kana, customer.nameKana) } : {}),
      };
      evidence.checks = checks;
      if (!customer)
        throw new ProofingError('ERR_PROOFING_MISMATCH', { reason: 'customer_unknown', evidence });
      if (!Object.values(checks).every(Boolean)) throw mismatchError(checks, evidence);
      return { customerId: customer.id, evidence };
    },
  };
}
