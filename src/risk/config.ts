/** The `risk` block of the configuration (see docs/risk.md). */
import { z } from 'zod';

const seconds = z.number().int().positive();

export const riskConfigSchema = z
  .object({
    /** Rule set file (JSON, see config/risk-rules.json, which is also the default). */
    rulesFile: z.string().min(1).optional(),
    /** Where customers live: sign-ins from elsewhere are "abroad" (FSA comment 88). ISO 3166 alpha-2. */
    homeCountry: z
      .string()
      .regex(/^[A-Z]{2}$/, 'must be an ISO 3166-1 alpha-2 code such as JP')
      .default('JP'),
    geo: z
      .object({
        /** CSV files `first,last,country` (e.g. from @ip-location-db/geo-whois-asn-country). */
        countryFiles: z.array(z.string().min(1)).default([]),
        /** CSV files `first,last,asn,organisation` (e.g. from @ip-location-db/asn). */
        asnFiles: z.array(z.string().min(1)).default([]),
        /** Autonomous systems of hosting providers and data centres. */
        hostingAsns: z.array(z.number().int().positive()).default([]),
      })
      .strict()
      .prefault({}),
    /** Failures and accounts tried are counted over this window. */
    velocityWindowSeconds: seconds.default(900),
    /** Sign-ins from two countries closer in time than this are impossible travel. */
    impossibleTravelSeconds: seconds.default(3 * 3600),
    /** Login and operation records (forensics) are kept this long, then the sweeper deletes them. */
    retentionDays: z
      .number()
      .int()
      .min(1)
      .max(36_500)
      .default(3 * 365),
    /** Tokens whose first network and user agent a node remembers (post-login detection). */
    trackedTokens: z.number().int().min(100).max(10_000_000).default(100_000),
  })
  .strict();

export type RiskConfig = z.output<typeof riskConfigSchema>;
