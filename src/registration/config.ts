/**
 * Configuration of dynamic client registration (RFC 7591/7592): the `registration` key of the hub's
 * configuration.
 */
import { z } from 'zod';

const jwkSet = z.strictObject({ keys: z.array(z.record(z.string(), z.unknown())).min(1) });

/**
 * A software-statement directory (the UK / Brazil open-banking model): a registration that carries a
 * statement signed by one of its keys needs no initial access token.
 */
const directorySchema = z
  .strictObject({
    /** The statement's `iss` must be exactly this. */
    issuer: z.string().min(1),
    /** The directory's public keys, inline … */
    jwks: jwkSet.optional(),
    /** … or a JSON file holding them (read at start). */
    jwksFile: z.string().min(1).optional(),
    /** How old a statement (its `iat`) may be; statements with `exp` must also not have expired. */
    maxAgeSeconds: z
      .number()
      .int()
      .positive()
      .default(365 * 24 * 3600),
  })
  .refine((d) => !!d.jwks !== !!d.jwksFile, { message: 'exactly one of jwks and jwksFile is required' });

export const registrationConfigSchema = z.strictObject({
  /** Serve /reg (RFC 7591) and /reg/:client_id (RFC 7592). */
  enabled: z.boolean().default(true),
  /** Lifetime of an initial access token when the operator names none (`clients iat create`). */
  initialAccessTokenTtl: z
    .number()
    .int()
    .positive()
    .max(30 * 24 * 3600)
    .default(24 * 3600),
  directories: z.array(directorySchema).default([]),
});

export type RegistrationConfig = z.output<typeof registrationConfigSchema>;
export type DirectoryConfig = RegistrationConfig['directories'][number];
