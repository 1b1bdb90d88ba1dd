import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { notifyConfigSchema } from '../../src/notify/index.ts';

const issues = (input: unknown) => {
  const r = notifyConfigSchema.safeParse(input);
  return r.success ? [] : r.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`);
};

describe('notifyConfigSchema', () => {
  it('defaults to a worker without a relay, and fits under the hub configuration with prefault', () => {
    const parsed = z.object({ notify: notifyConfigSchema.prefault({}) }).parse({});
    expect(parsed.notify).toMatchObject({ enabled: true, maxAttempts: 12, batchSize: 20, concurrency: 4 });
    expect(parsed.notify.smtp).toBeUndefined();
    const smtp = notifyConfigSchema.parse({
      from: { address: 'no-reply@bank.example' },
      smtp: { host: 'relay.example' },
    });
    expect(smtp.smtp).toMatchObject({ port: 587, security: 'starttls', timeoutMs: 20_000 });
  });

  it('refuses a relay without a sender, plain SMTP off loopback, and a lease shorter than a batch', () => {
    expect(issues({ smtp: { host: 'relay.example' } })).toEqual(['from: required when smtp is configured']);
    expect(
      issues({ from: { address: 'a@b.example' }, smtp: { host: 'relay.example', security: 'none' } }),
    ).toEqual(['smtp.security: "none" (no TLS) is allowed only for a relay on loopback']);
    expect(
      issues({ from: { address: 'a@b.example' }, smtp: { host: '127.0.0.1', port: 25, security: 'none' } }),
    ).toEqual([]);
    expect(
      issues({ from: { address: 'a@b.example' }, smtp: { host: 'relay.example' }, leaseSeconds: 60 }),
    ).toEqual(['leaseSeconds: must be at least 300 (batchSize/concurrency × 3 × smtp.timeoutMs)']);
    expect(issues({ retryBaseMs: 5000, retryMaxMs: 1000 })).toEqual([
      'retryMaxMs: must be at least retryBaseMs',
    ]);
    expect(issues({ from: { address: 'not an address' } })).toHaveLength(1);
    expect(issues({ smpt: {} })).toHaveLength(1);
  });
});
