/**
 * Configuration of notifications: the `notify` key of the hub's configuration.
 */
import { z } from 'zod';

const LOOPBACK = /^(localhost|127(?:\.\d{1,3}){3}|::1)$/i;

const smtpSchema = z.strictObject({
  host: z.string().min(1),
  port: z.number().int().min(1).max(65535).default(587),
  /**
   * starttls: plain connection upgraded with STARTTLS, which is required (port 587);
   * tls:      TLS from the first byte (port 465);
   * none:     no TLS — only to a relay on this machine (loopback host).
   */
  security: z.enum(['starttls', 'tls', 'none']).default('starttls'),
  auth: z.strictObject({ user: z.string().min(1), pass: z.string().min(1) }).optional(),
  /** PEM file of a CA to trust for the relay's certificate (besides the system store). */
  caFile: z.string().min(1).optional(),
  /** Host name this hub announces in EHLO; default the machine's. */
  clientName: z.string().min(1).optional(),
  /** Connection, greeting and socket timeout (each). */
  timeoutMs: z.number().int().min(100).max(120_000).default(20_000),
  /** Pooled connections to the relay per node. */
  maxConnections: z.number().int().min(1).max(50).default(3),
});

export const notifyConfigSchema = z
  .strictObject({
    /** Queue notifications and run this node's delivery worker. */
    enabled: z.boolean().default(true),
    /** The sender: an address the institution's customers know (SPF/DKIM/DMARC aligned). */
    from: z
      .strictObject({
        address: z.email(),
        name: z.string().min(1).max(64).optional(),
      })
      .optional(),
    /** The mail relay. Absent: notifications are queued but not sent until one is configured. */
    smtp: smtpSchema.optional(),
    /** Idle polling interval of the worker (it is also woken in-process when something is queued). */
    workerIntervalMs: z.number().int().min(10).max(60_000).default(1000),
    /** Rows one worker claims at a time… */
    batchSize: z.number().int().min(1).max(1000).default(20),
    /** …and sends in parallel. */
    concurrency: z.number().int().min(1).max(64).default(4),
    /** Attempts before a notification is dead-lettered (recorded in the audit log). */
    maxAttempts: z.number().int().min(1).max(100).default(12),
    /** Backoff: base·2^(attempt−1), capped at retryMaxMs, with jitter (half to all of it). */
    retryBaseMs: z.number().int().min(10).default(10_000),
    retryMaxMs: z.number().int().min(10).default(3_600_000),
    /** A claimed row comes due again after this (a worker died mid-send). */
    leaseSeconds: z.number().int().min(1).default(600),
    /** Sent and dead rows are deleted after this many days. */
    retentionDays: z.number().int().min(1).default(30),
  })
  .superRefine((c, ctx) => {
    if (c.smtp && !c.from)
      ctx.addIssue({ code: 'custom', path: ['from'], message: 'required when smtp is configured' });
    if (c.smtp?.security === 'none' && !LOOPBACK.test(c.smtp.host))
      ctx.addIssue({
        code: 'custom',
        path: ['smtp', 'security'],
        message: '"none" (no TLS) is allowed only for a relay on loopback',
      });
    if (c.retryMaxMs < c.retryBaseMs)
      ctx.addIssue({ code: 'custom', path: ['retryMaxMs'], message: 'must be at least retryBaseMs' });
    // A worker must settle its whole batch within the lease, or another worker sends it again.
    const worstBatchMs = Math.ceil(c.batchSize / c.concurrency) * 3 * (c.smtp?.timeoutMs ?? 20_000);
    if (c.leaseSeconds * 1000 < worstBatchMs)
      ctx.addIssue({
        code: 'custom',
        path: ['leaseSeconds'],
        message: `must be at least ${Math.ceil(worstBatchMs / 1000)} (batchSize/concurrency × 3 × smtp.timeoutMs)`,
      });
  });

export type NotifyConfig = z.output<typeof notifyConfigSchema>;
export type NotifyConfigInput = z.input<typeof notifyConfigSchema>;
export type SmtpConfig = z.output<typeof smtpSchema>;
