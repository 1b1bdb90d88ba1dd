/**
 * Dynamic client registration (RFC 7591) and management (RFC 7592) on oidc-provider's
 * `features.registration` / `registrationManagement`, behind the guard in guard.ts (initial access
 * tokens or directory-signed software statements, FAPI client policy, audit).
 */
import type Provider from 'oidc-provider';
import type { Configuration } from 'oidc-provider';
import type { Config } from '../config/index.ts';
import type { Db } from '../db/index.ts';
import { createRegistrationGuard, type RegistrationGuard } from './guard.ts';
import { loadDirectories } from './softwareStatement.ts';

export type { RegistrationConfig } from './config.ts';
export {
  claimInitialAccessToken,
  createInitialAccessToken,
  INITIAL_ACCESS_TOKEN_PREFIX,
  type IssuedInitialAccessToken,
} from './initialAccessTokens.ts';
export { SoftwareStatementError, verifySoftwareStatement } from './softwareStatement.ts';

type Features = NonNullable<Configuration['features']>;

/** RFC 7591 metadata a software statement sets, stored with the client (oidc-provider's extraClientMetadata). */
export const SOFTWARE_METADATA = ['software_id', 'software_version'] as const;

export interface Registration {
  /** `features.registration` and `features.registrationManagement` for the provider's configuration. */
  features: Pick<Features, 'registration' | 'registrationManagement'>;
  /** Puts the guard in front of the provider's registration routes. */
  install(provider: Provider): void;
}

export function createRegistration(config: Config, db: Db): Registration {
  const enabled = config.registration.enabled;
  let guard: RegistrationGuard | undefined;
  if (enabled)
    guard = createRegistrationGuard({
      db,
      directories: loadDirectories(config.registration),
      clockToleranceSeconds: config.oidc.clockToleranceSeconds,
    });
  return {
    features: {
      registration: {
        enabled,
        // The guard checks initial access tokens itself (its own table, hashed, single use) because
        // a software statement is the other way in, which oidc-provider's option cannot express.
        initialAccessToken: false,
        issueRegistrationAccessToken: true,
        idFactory: (ctx) => guard!.clientIdFor(ctx),
      },
      registrationManagement: { enabled, rotateRegistrationAccessToken: true },
    },
    install(provider) {
      if (!guard) return;
      guard.attach(provider);
      provider.use(guard.middleware);
    },
  };
}
