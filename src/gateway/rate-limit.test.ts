import { describe, expect, it } from 'vitest';
import { RateLimiter } from './rate-limit.js';

describe('RateLimiter', () => {
  it('allows a burst, then the refill rate, per key', () => {
    let now = 0;
    const r = new RateLimiter({ requestsPerSecond: 10, burst: 3 }, () => now);
    expect([r.take('a'), r.take('a'), r.take('a'), r.take('a')]).toEqual([true, true, true, false]);
    expect(r.take('b')).toBe(true);
    now += 100; // one token
    expect([r.take('a'), r.take('a')]).toEqual([true, false]);
  });

  it('sweeps buckets that have refilled', () => {
    let now = 0;
    const r = new RateLimiter({ requestsPerSecond: 10, burst: 3 }, () => now);
    r.take('a');
    r.sweep();
    expect(r.size).toBe(1);
    now += 1000;
    r.sweep();
    expect(r.size).toBe(0);
  });

  it('rejects a nonsensical limit', () => {
    expect(() => new RateLimiter({ requestsPerSecond: 0, burst: 1 })).toThrow(RangeError);
  });
});
