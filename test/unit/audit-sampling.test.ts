import { describe, expect, it, vi } from 'vitest';
import type { AuditEvent } from '../../src/audit/index.ts';
import { createAuditSampler } from '../../src/audit/sampled.ts';
import type { Queryable } from '../../src/db/index.ts';

/** The audit rows a sampler writes, read back from the parameters of its INSERTs. */
function recordingDb() {
  const rows: Array<{ type: string; ip: string | null; data: Record<string, unknown> }> = [];
  const db: Queryable = {
    async query(sql: string, params: unknown[] = []) {
      expect(sql).toMatch(/^INSERT INTO audit_events/);
      rows.push({
        type: params[0] as string,
        ip: params[5] as string | null,
        data: JSON.parse(params[9] as string),
      });
      return { rows: [], rowCount: 1 } as never;
    },
    async exec() {},
    afterCommit(fn) {
      fn();
    },
  };
  return { db, rows };
}

const refusal = (ip: string, n = 0): AuditEvent => ({
  type: 'ssf.management.rejected',
  outcome: 'failure',
  ip,
  data: { path: '/ssf/stream', error: 'invalid_token', n },
});

describe('the audit sampler', () => {
  it('writes the first N of a window per (type, source) and one summary of the rest when it ends', async () => {
    const { db, rows } = recordingDb();
    let t = Date.parse('2026-11-27T00:00:00Z');
    const sampler = createAuditSampler(db, { limit: 5, windowSeconds: 60, now: () => t, autoFlush: false });
    for (let i = 0; i < 200; i++) {
      await sampler.record(refusal('203.0.113.7', i));
      t += 100; // 200 events in 20 s: one window
    }
    expect(rows).toHaveLength(5);
    expect(await sampler.flush()).toBe(0); // the window has not ended yet
    t = Date.parse('2026-11-27T00:01:00Z');
    expect(await sampler.flush()).toBe(1);
    expect(rows).toHaveLength(6);
    const summary = rows[5]!;
    expect(summary.type).toBe('ssf.management.rejected.suppressed');
    expect(summary.ip).toBe('203.0.113.7');
    expect(summary.data).toMatchObject({
      source: '203.0.113.7',
      suppressed: 195,
      written: 5,
      windowSeconds: 60,
      windowStart: '2026-11-27T00:00:00.000Z',
      firstSuppressedAt: '2026-11-27T00:00:00.500Z',
      sample: { path: '/ssf/stream', error: 'invalid_token', n: 5 },
    });
    expect(sampler.size).toBe(0);
    // A new window starts over.
    await sampler.record(refusal('203.0.113.7'));
    expect(rows).toHaveLength(7);
    expect(rows[6]!.type).toBe('ssf.management.rejected');
  });

  it('counts each source network on its own: an IPv6 /64 is one source, another address its own', async () => {
    const { db, rows } = recordingDb();
    const sampler = createAuditSampler(db, { limit: 3, windowSeconds: 60, autoFlush: false });
    for (let i = 0; i < 10; i++) await sampler.record(refusal(`2001:db8:1:2::${i + 1}`));
    for (let i = 0; i < 10; i++) await sampler.record(refusal('198.51.100.9'));
    expect(rows.map((r) => r.ip)).toEqual([
      '2001:db8:1:2::1',
      '2001:db8:1:2::2',
      '2001:db8:1:2::3',
      '198.51.100.9',
      '198.51.100.9',
      '198.51.100.9',
    ]);
    await sampler.close();
    expect(rows.slice(6).map((r) => [r.data.source, r.data.suppressed])).toEqual([
      ['2001:db8:1:2::/64', 7],
      ['198.51.100.9', 7],
    ]);
  });

  it('writes a summary on the next event of a (type, source) whose window ended, without a timer', async () => {
    const { db, rows } = recordingDb();
    let t = 0;
    const sampler = createAuditSampler(db, { limit: 1, windowSeconds: 10, now: () => t, autoFlush: false });
    await sampler.record(refusal('192.0.2.1'));
    await sampler.record(refusal('192.0.2.1'));
    t = 10_000;
    await sampler.record(refusal('192.0.2.1'));
    expect(rows.map((r) => r.type)).toEqual([
      'ssf.management.rejected',
      'ssf.management.rejected',
      'ssf.management.rejected.suppressed',
    ]);
    expect(rows[2]!.data.suppressed).toBe(1);
  });

  it('writes the summary by itself when the window ends and the flood has stopped', async () => {
    vi.useFakeTimers();
    try {
      const { db, rows } = recordingDb();
      const sampler = createAuditSampler(db, { limit: 2, windowSeconds: 60 });
      for (let i = 0; i < 50; i++) await sampler.record(refusal('192.0.2.77'));
      expect(rows).toHaveLength(2);
      await vi.advanceTimersByTimeAsync(59_000);
      expect(rows).toHaveLength(2);
      await vi.advanceTimersByTimeAsync(1_000);
      expect(rows).toHaveLength(3);
      expect(rows[2]!.data).toMatchObject({ source: '192.0.2.77', suppressed: 48 });
      expect(sampler.size).toBe(0);
      expect(vi.getTimerCount()).toBe(0);
      // Dropping that begins late in a window is summed up when that window ends, not a window later.
      await sampler.record(refusal('192.0.2.78'));
      await sampler.record(refusal('192.0.2.78'));
      await vi.advanceTimersByTimeAsync(45_000);
      for (let i = 0; i < 4; i++) await sampler.record(refusal('192.0.2.78'));
      expect(rows).toHaveLength(5);
      await vi.advanceTimersByTimeAsync(15_000);
      expect(rows).toHaveLength(6);
      expect(rows[5]!.data).toMatchObject({ source: '192.0.2.78', suppressed: 4 });
    } finally {
      vi.useRealTimers();
    }
  });

  it('holds at most maxSources entries and writes an evicted entry’s pending count at once', async () => {
    const { db, rows } = recordingDb();
    const sampler = createAuditSampler(db, { limit: 1, windowSeconds: 60, maxSources: 10, autoFlush: false });
    // The first source is flooded, then 5000 other sources each send one request.
    await sampler.record(refusal('10.0.0.1'));
    await sampler.record(refusal('10.0.0.1'));
    await sampler.record(refusal('10.0.0.1'));
    for (let i = 0; i < 5000; i++) {
      await sampler.record(refusal(`10.1.${i >> 8}.${i & 255}`));
      expect(sampler.size).toBeLessThanOrEqual(10);
    }
    const summaries = rows.filter((r) => r.type.endsWith('.suppressed'));
    expect(summaries).toHaveLength(1);
    expect(summaries[0]!.data).toMatchObject({ source: '10.0.0.1', suppressed: 2 });
    expect(rows).toHaveLength(1 + 5000 + 1);
  });

  it('leaves out a large sample, and a summary that cannot be written is reported, not thrown', async () => {
    const { db, rows } = recordingDb();
    const errors: unknown[] = [];
    let failing = false;
    const flaky: Queryable = {
      ...db,
      query: (sql, params) => (failing ? Promise.reject(new Error('db down')) : db.query(sql, params)),
    };
    const sampler = createAuditSampler(flaky, { limit: 1, autoFlush: false, onError: (e) => errors.push(e) });
    await sampler.record(refusal('192.0.2.5'));
    await sampler.record({ ...refusal('192.0.2.5'), data: { path: 'x'.repeat(5000) } });
    await sampler.record(refusal('192.0.2.6'));
    await sampler.record(refusal('192.0.2.6'));
    failing = true;
    await sampler.close();
    expect(errors).toHaveLength(2);
    failing = false;
    expect(rows).toHaveLength(2);
    const s2 = createAuditSampler(db, { limit: 1, autoFlush: false });
    await s2.record(refusal('192.0.2.5'));
    await s2.record({ ...refusal('192.0.2.5'), data: { path: 'x'.repeat(5000) } });
    await s2.close();
    expect(rows.at(-1)!.data).toMatchObject({ suppressed: 1, sampleOmitted: true });
    expect(rows.at(-1)!.data.sample).toBeUndefined();
  });
});
