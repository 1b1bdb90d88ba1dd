import { describe, expect, it } from 'vitest';
import { createAccessTokenCache, type FoundAccessToken } from '../../src/api/accessTokenCache.ts';

const token = (jti: string, exp: number, extra: Partial<FoundAccessToken> = {}): FoundAccessToken => ({
  jti,
  exp,
  isExpired: false,
  clientId: 'c',
  accountId: 'a',
  grantId: 'g',
  scope: 'openid accounts',
  extra: { acr: 'phr' },
  jkt: 'thumb',
  ...extra,
});

describe('access token cache', () => {
  it('looks a token up once, then answers from memory with the facts the API reads', async () => {
    let calls = 0;
    const cache = createAccessTokenCache(
      async (v) => {
        calls += 1;
        return token(v, 2_000);
      },
      { now: () => 1_000_000 },
    );
    const first = await cache.get('t1');
    const second = await cache.get('t1');
    expect(calls).toBe(1);
    expect(second).toBe(first);
    expect(first).toMatchObject({ jti: 't1', acr: 'phr', jkt: 'thumb', grantId: 'g', exp: 2_000 });
  });

  it('does not keep unknown or expired tokens, and drops a cached one once it expires', async () => {
    let now = 1_000_000;
    const found = new Map<string, FoundAccessToken>([
      ['live', token('live', 1_001)],
      ['expired', token('expired', 999, { isExpired: true })],
    ]);
    let calls = 0;
    const cache = createAccessTokenCache(
      async (v) => {
        calls += 1;
        return found.get(v);
      },
      { now: () => now },
    );
    expect(await cache.get('nope')).toBeUndefined();
    expect(await cache.get('expired')).toBeUndefined();
    expect(await cache.get('live')).toBeDefined();
    expect(cache.size).toBe(1);
    now = 1_001_000;
    found.delete('live');
    expect(await cache.get('live')).toBeUndefined();
    expect(cache.size).toBe(0);
    // An expired entry is answered from memory: no look-up for a token that cannot count any more.
    expect(calls).toBe(3);
  });

  it('forgets a token on request and holds at most maxEntries, oldest out first', async () => {
    let calls = 0;
    const cache = createAccessTokenCache(
      async (v) => {
        calls += 1;
        return token(v, 9_999_999_999);
      },
      { maxEntries: 2 },
    );
    await cache.get('a');
    await cache.get('b');
    await cache.get('c');
    expect(cache.size).toBe(2);
    await cache.get('b');
    expect(calls).toBe(3);
    await cache.get('a');
    expect(calls).toBe(4);
    cache.forget('a');
    await cache.get('a');
    expect(calls).toBe(5);
  });
});
