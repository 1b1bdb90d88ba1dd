/**
 * Swaps oidc-provider's signing keys at run time (docs/key-rotation.md).
 *
 * oidc-provider 9 builds its keystore once from `configuration.jwks` and its author recommends a
 * rolling restart to change keys (panva/node-oidc-provider#651, #449). A rotation here must not need
 * one, and building a second Provider would mean re-wiring everything that holds the first (routes,
 * listeners, patched prototypes). Every use of the keys inside the library reads them at call time
 * from the provider's internal record (`instance(provider).keystore` to sign and verify, `.jwks` for
 * the jwks endpoint: lib/models/id_token.js, lib/models/formats/jwt.js, lib/actions/jwks.js), so the
 * contents of that record are replaced in one synchronous step: no request sees a half-changed set.
 *
 * This reaches into the library's internals; `applySigningKeys` checks their shape and fails loudly
 * (at start, before serving) if an upgrade changed them, and test/integration/key-rotation.test.ts
 * proves the behaviour end to end.
 */
import type Provider from 'oidc-provider';
import instance from 'oidc-provider/lib/helpers/weak_cache.js';
import type { Config } from '../config/index.ts';
import type { Db } from '../db/index.ts';
import {
  type JsonWebKeyWithKid,
  type KeyMaterial,
  type SigningKeyWatcher,
  watchSigningKeys,
} from '../keys/index.ts';
import type { Logger } from '../log.ts';

interface InternalKeyStore {
  clear(): void;
  add(key: object): void;
  selectForSign(options: { alg: string; use?: string }): object[];
}

function internalsOf(provider: Provider): { keystore: InternalKeyStore; jwks: { keys: unknown[] } } {
  const internals = instance(provider) as
    | { keystore?: Partial<InternalKeyStore>; jwks?: { keys?: unknown } }
    | undefined;
  const ks = internals?.keystore;
  if (
    !internals ||
    typeof ks?.clear !== 'function' ||
    typeof ks.add !== 'function' ||
    typeof ks.selectForSign !== 'function' ||
    !Array.isArray(internals.jwks?.keys)
  )
    throw new Error(
      'oidc-provider internals changed: cannot swap signing keys at run time (see docs/key-rotation.md)',
    );
  return internals as { keystore: InternalKeyStore; jwks: { keys: unknown[] } };
}

/**
 * Makes the provider sign with the current keys only, verify with current, next, previous and
 * recently retired ones (id_token_hint), and publish current, next and previous at its jwks endpoint.
 */
export function applySigningKeys(provider: Provider, keys: KeyMaterial): void {
  const internals = internalsOf(provider);
  // The same normalisation oidc-provider applies to configured keys (alg and use set, copies).
  const signing = keys.signingJwks.keys.map((k) => structuredClone(k));
  // key_ops ['verify']: the keystore's selectForSign skips them (lib/helpers/keystore.js).
  const verifyOnly = keys.verifyOnlyJwks.keys.map((k) => ({ ...structuredClone(k), key_ops: ['verify'] }));
  const published = keys.publicJwks.keys.map(publicMembers);
  internals.keystore.clear();
  for (const k of [...signing, ...verifyOnly]) internals.keystore.add(k);
  internals.jwks = { keys: published };
}

/** The members oidc-provider itself publishes (lib/helpers/initialize_keystore.js). */
function publicMembers(k: JsonWebKeyWithKid): Record<string, unknown> {
  const { kty, use, kid, alg, crv, e, n, x, y } = k as JsonWebKeyWithKid & Record<string, string>;
  return Object.fromEntries(Object.entries({ kty, use, kid, alg, crv, e, n, x, y }).filter(([, v]) => v));
}

/** Keeps this node's provider on whatever the signing_keys table says (src/keys/lifecycle.ts). */
export function followSigningKeys(o: {
  provider: Provider;
  db: Db;
  kek: Buffer;
  config: Config;
  logger: Logger;
}): SigningKeyWatcher {
  return watchSigningKeys({
    db: o.db,
    kek: o.kek,
    config: o.config,
    onChange: (material) => {
      applySigningKeys(o.provider, material);
      o.logger.info({ kids: material.signingJwks.keys.map((k) => k.kid) }, 'signing keys loaded');
    },
    onLifecycle: (changes) => o.logger.info(changes, 'signing key lifecycle advanced'),
    onError: (err) => o.logger.error({ err }, 'signing keys: poll failed; keeping the keys in use'),
  });
}
