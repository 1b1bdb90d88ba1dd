/**
 * Key material at rest: the key-encryption key, sealing of secrets, and the signing keys and shared
 * secrets oidc-provider needs (the same on every node that shares the database).
 */
export { decryptAtRest, encryptAtRest, loadKeyEncryptionKey } from './atRest.ts';
export { derToP1363, p1363ToDer } from './ecdsaSignature.ts';
export { KeyError, type KeyErrorCode } from './errors.ts';
export { jwkThumbprint, tryJwkThumbprint } from './jwkThumbprint.ts';
export {
  advanceKeyLifecycle,
  isSigningAlg,
  type KeyLifecycleSettings,
  keyLifecycleSettings,
  type LifecycleChanges,
  listSigningKeys,
  type RotationResult,
  rotateSigningKeys,
  type SigningKeyInfo,
  type SigningKeyWatcher,
  watchSigningKeys,
} from './lifecycle.ts';
export {
  type JsonWebKeyWithKid,
  KEYS_LOCK_ID,
  type KeyMaterial,
  loadKeyMaterial,
  SIGNING_ALGS,
  type SigningAlg,
} from './material.ts';
export { type RekeyResult, rekeyAtRest } from './rekey.ts';
