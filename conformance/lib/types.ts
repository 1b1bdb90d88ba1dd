/**
 * The shape of the plan. A check is one server-side test of the FAPI 2.0 checklist
 * (../shared/conformance/fapi2-checklist.md): it talks to a live hub as a client would and throws
 * (CheckFailure) when the hub does not do what the check expects. New variants (mTLS client auth,
 * certificate-bound tokens, message signing) add values to Variant and checks that name them.
 */
import type { CheckContext } from './context.ts';

export type ClientAuthVariant = 'private_key_jwt' | 'tls_client_auth';
export type SenderConstraintVariant = 'dpop' | 'mtls';

/** The openid_connect / plain_oauth axis is covered inside the plan (checks with and without `openid`). */
export interface Variant {
  clientAuth: ClientAuthVariant;
  senderConstraint: SenderConstraintVariant;
}

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
  /** The variants this check applies to; absent = every variant. */
  variants?: { clientAuth?: ClientAuthVariant[]; senderConstraint?: SenderConstraintVariant[] };
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
  if (!v) return true;
  return (
    (!v.clientAuth || v.clientAuth.includes(variant.clientAuth)) &&
    (!v.senderConstraint || v.senderConstraint.includes(variant.senderConstraint))
  );
}
