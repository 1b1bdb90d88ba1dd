import { describe, expect, it } from 'vitest';
import { streamWidth } from '../../src/signals/delivery.ts';

describe('streamWidth (SETs of one stream pushed at once)', () => {
  const push = { concurrencyPerStream: 16, maxInFlight: 256 };

  it('is the configured width while few streams are delivered', () => {
    expect(streamWidth(push, 1)).toBe(16);
    expect(streamWidth(push, 10)).toBe(16);
  });

  it('shrinks to about the stream share of the push slots when many streams are delivered at once', () => {
    expect(streamWidth(push, 64)).toBe(4);
    expect(streamWidth(push, 100)).toBe(3);
    expect(streamWidth(push, 1000)).toBe(1);
  });

  it('never takes more than half the slots, and is at least one', () => {
    expect(streamWidth({ concurrencyPerStream: 64, maxInFlight: 8 }, 1)).toBe(4);
    expect(streamWidth({ concurrencyPerStream: 64, maxInFlight: 1 }, 0)).toBe(1);
  });
});
