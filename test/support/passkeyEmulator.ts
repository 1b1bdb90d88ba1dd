/**
 * A software authenticator for tests and benchmarks, wrapping nid-webauthn-emulator: real
 * registration and assertion responses, produced in-process, that @simplewebauthn/server verifies.
 * Each emulator is one device with its own credential store (the library's default store is
 * shared process-wide, so we never use it).
 */
import type {
  AuthenticationResponseJSON,
  PublicKeyCredentialCreationOptionsJSON,
  PublicKeyCredentialRequestOptionsJSON,
  RegistrationResponseJSON,
} from '@simplewebauthn/server';
import nid, { AuthenticatorEmulator, PasskeysCredentialsMemoryRepository } from 'nid-webauthn-emulator';

// CommonJS package: under Node's ESM loader the default import is module.exports (the class is its
// `.default`); under vitest's interop it is the class itself.
const WebAuthnEmulator = (typeof nid === 'function' ? nid : nid.default) as typeof nid.default;

export interface EmulatorOptions {
  /**
   * A device-bound key (backup-ineligible, counter stays 0), like a security key; default is a
   * synced passkey (backup-eligible and backed up, counter +1 per assertion). A device-bound
   * emulator keeps no discoverable credential store, so `authenticate` names its credentials in
   * allowCredentials itself — the server never sees a difference.
   */
  deviceBound?: boolean;
  /** false: the authenticator reports no user verification (the UV flag is clear). */
  userVerified?: boolean;
}

export interface PasskeyEmulator {
  register(options: PublicKeyCredentialCreationOptionsJSON, origin: string): RegistrationResponseJSON;
  authenticate(options: PublicKeyCredentialRequestOptionsJSON, origin: string): AuthenticationResponseJSON;
  /** Credential ids this device created, oldest first. */
  readonly credentialIds: string[];
  /** Whether the next ceremonies report user verification (like CDP's setUserVerified). */
  userVerified: boolean;
}

export function createEmulator(options: EmulatorOptions = {}): PasskeyEmulator {
  const state = { userVerified: options.userVerified ?? true };
  const interaction = () => ({ options: { uv: state.userVerified, up: true } });
  const authenticator = new AuthenticatorEmulator({
    ...(options.deviceBound
      ? { stateless: true }
      : { credentialsRepository: new PasskeysCredentialsMemoryRepository() }),
    userMakeCredentialInteraction: interaction,
    userGetAssertionInteraction: interaction,
  });
  const emulator = new WebAuthnEmulator(authenticator);
  const credentialIds: string[] = [];
  return {
    credentialIds,
    get userVerified() {
      return state.userVerified;
    },
    set userVerified(value: boolean) {
      state.userVerified = value;
    },
    register(creationOptions, origin) {
      const response = emulator.createJSON(
        origin,
        creationOptions as Parameters<typeof emulator.createJSON>[1],
      ) as unknown as RegistrationResponseJSON;
      credentialIds.push(response.id);
      return response;
    },
    authenticate(requestOptions, origin) {
      let opts = requestOptions;
      if (options.deviceBound && !opts.allowCredentials?.length)
        opts = {
          ...opts,
          allowCredentials: credentialIds.slice(-1).map((id) => ({ id, type: 'public-key' })),
        };
      return emulator.getJSON(
        origin,
        opts as Parameters<typeof emulator.getJSON>[1],
      ) as unknown as AuthenticationResponseJSON;
    },
  };
}
