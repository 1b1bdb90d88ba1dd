/**
 * The shape of the plan. A check is one server-side test of the FAPI 2.0 checklist
 * (../shared/conformance/fapi2-checklist.md): it talks to a live hub as a client would and throws
 * (CheckFailure) when the hub does not do what the check expects. The plan runs under every
 * certification variant: client authentication × sender constraint × flow (openid / plain OAuth).
 */
import type { CheckContext } from './context.ts';

export type ClientAuthVariant = 'private_key_jwt' | 'tls_client_auth' | 'self_signed_tls_client_auth';
export type SenderConstraintVariant = 'dpop' | 'mtls';
/** `openid`: scope with openid, id_token and nonce; `plain_oauth`: scope without openid, no nonce. */
export type FlowVariant = 'openid' | 'plain_oauth';

export interface Variant {
  clientAuth: ClientAuthVariant;
  senderConstraint: SenderConstraintVariant;
  flow: FlowVariant;
}

export const CLIENT_AUTH_VARIANTS: readonly ClientAuthVariant[] = [
  'private_key_jwt',
  'tls_client_auth',
  'self_signed_tls_client_auth',
];
export const SENDER_CONSTRAINT_VARIANTS: readonly SenderConstraintVariant[] = ['dpop', 'mtls'];
export const FLOW_VARIANTS: readonly FlowVariant[] = ['openid', 'plain_oauth'];
/** For checks the checklist distinguishes by flow (`variants.flow`). */
export const BOTH_FLOWS: FlowVariant[] = ['openid', 'plain_oauth'];
/** `variants` of the checks of private_key_jwt client assertions. */
export const PRIVATE_KEY_JWT_ONLY: Check['variants'] = { clientAuth: ['private_key_jwt'] };
/** `variants` of the checks of client authentication by certificate (RFC 8705 §2). */
export const CERTIFICATE_AUTH_ONLY: Check['variants'] = {
  clientAuth: ['tls_client_auth', 'self_signed_tls_client_auth'],
};

/** Every variant, the default (private_key_jwt + DPoP + openid) first. */
export const VARIANTS: readonly Variant[] = CLIENT_AUTH_VARIANTS.flatMap((clientAuth) =>
  SENDER_CONSTRAINT_VARIANTS.flatMap((senderConstraint) =>
    FLOW_VARIANTS.map((flow) => ({ clientAuth, senderConstraint, flow })),
  ),
);

/** e.g. `private_key_jwt+dpop+openid` — printed with every table and failure. */
export const variantTag = (v: Variant) => `${v.clientAuth}+${v.senderConstraint}+${v.flow}`;

/** Does the variant use mTLS at all (client authentication or token binding)? */
export const usesMtls = (v: Pick<Variant, 'clientAuth' | 'senderConstraint'>) =>
  v.clientAuth !== 'private_key_jwt' || v.senderConstraint === 'mtls';

export interface Check {
  /** Checklist group, e.g. "Token endpoint". */
  group: string;
  /** Stable id, unique in the plan, e.g. "token-code-reuse". */
  id: string;
  title: string;
  /** What the hub must do: succeed, or reject. */
  expect: 'accept' | 'fail';
  /**
   * `short-lifetimes`: run against a hub whose authorization codes and request_uris expire within
   * seconds (the plan starts one), so expiry can be observed without waiting a minute.
   */
  hub?: 'main' | 'short-lifetimes';
  /**
   * The variants this check applies to. An absent client authentication or sender constraint list
   * means every one. An absent `flow` means the check does not depend on the flow: it runs once per
   * client authentication × sender constraint, in the openid variant; checks the checklist
   * distinguishes by flow (the code flow's outcome: id_token or not, nonce, token lifecycle) name
   * `BOTH_FLOWS` or one flow.
   */
  variants?: {
    clientAuth?: ClientAuthVariant[];
    senderConstraint?: SenderConstraintVariant[];
    flow?: FlowVariant[];
  };
  /** A further condition on the variant that the lists above cannot say (e.g. "uses mTLS at all"). */
  when?(variant: Variant): boolean;
  /**
   * Started when the plan starts, while the other checks run (to let a code or a request_uri
   * expire meanwhile instead of idling); the runner then calls `run` after the other checks, with
   * what `prepare` resolved to.
   */
  prepare?(ctx: CheckContext): Promise<unknown>;
  run(ctx: CheckContext, prepared?: unknown): Promise<void>;
}

export function appliesTo(check: Check, variant: Variant): boolean {
  const v = check.variants;
  return (
    (!v?.clientAuth || v.clientAuth.includes(variant.clientAuth)) &&
    (!v?.senderConstraint || v.senderConstraint.includes(variant.senderConstraint)) &&
    (v?.flow ?? ['openid']).includes(variant.flow) &&
    (!check.when || check.when(variant))
  );
}
