import { describe, expect, it } from 'vitest';
import { breakerLimits } from '../../src/signals/breaker.ts';

describe('a peer’s circuit-breaker override', () => {
  const ctx = { signals: { circuitBreaker: { maxSetsPerWindow: 7, windowSeconds: 600 } } } as never;

  it('overrides member by member: an absent member is the global one', () => {
    expect(breakerLimits(ctx, { circuitBreaker: { windowSeconds: 60 } } as never)).toEqual({
      maxSetsPerWindow: 7,
      windowSeconds: 60,
    });
    expect(breakerLimits(ctx, { circuitBreaker: { maxSetsPerWindow: 2 } } as never)).toEqual({
      maxSetsPerWindow: 2,
      windowSeconds: 600,
    });
    expect(breakerLimits(ctx, {} as never)).toEqual({ maxSetsPerWindow: 7, windowSeconds: 600 });
  });
});
