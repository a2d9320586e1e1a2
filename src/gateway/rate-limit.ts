/**
 * Per-microVM request rate limit: a token bucket refilled at `requestsPerSecond` up to `burst`.
 * Buckets that are full again are dropped by `sweep()`, so idle microVMs cost nothing.
 */
export interface RateLimit {
  requestsPerSecond: number;
  burst: number;
}

/** Default: generous; a single app rarely serves more than this. */
export const DEFAULT_RATE_LIMIT: RateLimit = { requestsPerSecond: 10_000, burst: 20_000 };

export class RateLimiter {
  private readonly buckets = new Map<string, { tokens: number; atMs: number }>();

  constructor(
    readonly limit: RateLimit,
    private readonly now: () => number = () => performance.now(),
  ) {
    if (!(limit.requestsPerSecond > 0) || !(limit.burst >= 1))
      throw new RangeError('rate limit: requestsPerSecond must be > 0 and burst >= 1');
  }

  /** Takes one request from `key`'s bucket; false when it is empty (answer 429). */
  take(key: string): boolean {
    const t = this.now();
    let b = this.buckets.get(key);
    if (!b) {
      b = { tokens: this.limit.burst, atMs: t };
      this.buckets.set(key, b);
    } else {
      b.tokens = Math.min(this.limit.burst, b.tokens + ((t - b.atMs) / 1000) * this.limit.requestsPerSecond);
      b.atMs = t;
    }
    if (b.tokens < 1) return false;
    b.tokens -= 1;
    return true;
  }

  /** Drops buckets that have refilled completely. */
  sweep(): void {
    const t = this.now();
    for (const [k, b] of this.buckets)
      if (b.tokens + ((t - b.atMs) / 1000) * this.limit.requestsPerSecond >= this.limit.burst)
        this.buckets.delete(k);
  }

  get size(): number {
    return this.buckets.size;
  }
}
