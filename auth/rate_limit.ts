/**
 * Per-connection rate limiting: a token bucket per client, and a strike count that turns
 * persistent abuse into a close with 1008.
 *
 * The limiter owns its buckets, keyed weakly by client so a closed client's state goes with it.
 * Time comes from an injected clock, so tests need no sleeps.
 */

/** The verdict on one frame. */
export type Admission = "ok" | "limited" | "abuse";

/** Settings of the limiter. */
export interface RateLimitOptions {
  /** Frames per second refilled into each bucket. */
  rate: number;
  /** Bucket capacity: frames a client may send at once. */
  burst: number;
  /** Refused frames in a row (without an admitted one between) before the verdict is `abuse`. */
  strikes: number;
  /** Milliseconds since the epoch; injectable for tests. */
  now?: () => number;
}

interface Bucket {
  tokens: number;
  at: number;
  strikes: number;
}

/** A token bucket per key. */
export class RateLimiter<K extends object> {
  readonly #buckets = new WeakMap<K, Bucket>();
  readonly #options: RateLimitOptions;
  readonly #now: () => number;

  /** Creates a limiter; buckets start full. */
  constructor(options: RateLimitOptions) {
    this.#options = options;
    this.#now = options.now ?? Date.now;
  }

  /**
   * Takes one token for `key`; says whether the frame may proceed. With `strike` false a refusal
   * does not count toward `abuse`: the server passes false while it is overloaded, because frames
   * it reads late arrive bunched and the bunching is its doing, not the client's.
   */
  admit(key: K, strike = true): Admission {
    const now = this.#now();
    const { rate, burst, strikes } = this.#options;
    let bucket = this.#buckets.get(key);
    if (bucket === undefined) {
      bucket = { tokens: burst, at: now, strikes: 0 };
      this.#buckets.set(key, bucket);
    } else {
      bucket.tokens = Math.min(burst, bucket.tokens + ((now - bucket.at) / 1000) * rate);
      bucket.at = now;
    }
    if (bucket.tokens >= 1) {
      bucket.tokens -= 1;
      bucket.strikes = 0;
      return "ok";
    }
    if (!strike) return "limited";
    bucket.strikes++;
    return bucket.strikes >= strikes ? "abuse" : "limited";
  }
}
