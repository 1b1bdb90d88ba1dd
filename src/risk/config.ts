/** The `risk` block of the configuration (see docs/risk.md). */
import { z } from 'zod';

const seconds = z.number().int().positive();

export const riskConfigSchema = z
  .object({
    /**
     * Login and post-login behaviour detection (JSDA IV.5: mandatory). Off only to measure what it
     * costs (test/bench); a hub started with it off logs a warning and audits `risk.detection.disabled`.
     * Throttling and the account lock stay on either way.
     */
    enabled: z.boolean().default(true),
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
        /**
         * CSV files with city coordinates, in the layout of @ip-location-db's city CSVs:
         * `first,last,country,state1,state2,city,postcode,latitude,longitude[,timezone]`.
         */
        cityFiles: z.array(z.string().min(1)).default([]),
        /**
         * Country centroids `country,latitude,longitude[,accuracy_km]`; default the file shipped in
         * config/country-centroids.csv.
         */
        centroidsFile: z.string().min(1).optional(),
        /** Autonomous systems of hosting providers and data centres. */
        hostingAsns: z.array(z.number().int().positive()).default([]),
      })
      .strict()
      .prefault({}),
    /** Failures and accounts tried are counted over this window. */
    velocityWindowSeconds: seconds.default(900),
    /**
     * Impossible travel: the great-circle distance between the previous successful sign-in's place
     * and this one's, less both places' uncertainty and `toleranceKm`, needs a speed above
     * `maxSpeedKmh`. Places come from `geo.cityFiles` (city coordinates) or the country centroids.
     */
    travel: z
      .object({
        /** Faster than this is impossible (an airliner cruises at about 900 km/h). */
        maxSpeedKmh: z.number().positive().max(100_000).default(900),
        /** Distance always allowed (neighbouring places, IP location error). */
        toleranceKm: z.number().min(0).max(20_000).default(200),
        /** Uncertainty of a city-level place (geo.cityFiles). */
        cityAccuracyKm: z.number().min(0).max(5000).default(50),
        /** Uncertainty of a country centroid whose file row names none. */
        countryAccuracyKm: z.number().min(0).max(10_000).default(500),
      })
      .strict()
      .prefault({}),
    /** Only sign-ins closer in time than this are compared for impossible travel. */
    impossibleTravelSeconds: seconds.default(24 * 3600),
    /**
     * How long a risk level a peer institution raised (shared signal raise_risk / require_step_up)
     * stands, unless the customer re-proves their identity or an operator clears it first.
     */
    peerRiskTtlSeconds: seconds.max(365 * 24 * 3600).default(7 * 24 * 3600),
    /** Login and operation records (forensics) are kept this long, then the sweeper deletes them. */
    retentionDays: z
      .number()
      .int()
      .min(1)
      .max(36_500)
      .default(3 * 365),
    /** Tokens whose stored first network and user agent a node keeps in memory (post-login detection). */
    trackedTokens: z.number().int().min(100).max(10_000_000).default(100_000),
  })
  .strict();

export type RiskConfig = z.output<typeof riskConfigSchema>;
