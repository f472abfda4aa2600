/**
 * A histogram for the hot path: {@link FastHistogram} records into a plain array and is read by a
 * prom-client `Registry` at scrape time, through the same `get()` shape prom-client's own
 * histograms have (`{name, help, type, aggregator, values}`).
 *
 * Invariants:
 * - `observe()` is a short linear scan over the bounds: no allocation, no label hashing, and it
 *   never throws (prom-client's `observe()` costs about 130 ns and validates on every call).
 * - Bounds strictly increase, checked once at construction.
 * - Counts are kept per bucket and made cumulative only at scrape time.
 */
import type { Metric, Registry } from "prom-client";

/** One sample of the exposition, as prom-client's registry reads it. */
export interface HistogramSample {
  metricName: string;
  labels: Record<string, string | number>;
  value: number;
}

/** A histogram recording into a plain array, in the shape prom-client's `Registry` reads. */
export class FastHistogram {
  readonly name: string;
  readonly help: string;
  readonly type = "histogram";
  readonly aggregator = "sum";
  readonly #bounds: readonly number[];
  // counts[i] is the number of observations in (bounds[i-1], bounds[i]]; the last is +Inf.
  #counts: Float64Array;
  #sum = 0;
  #count = 0;

  /** Creates an empty histogram; throws a RangeError unless `bounds` strictly increase. */
  constructor(name: string, help: string, bounds: readonly number[]) {
    for (let i = 1; i < bounds.length; i++) {
      if (!(bounds[i]! > bounds[i - 1]!)) {
        throw new RangeError(`Cannot create histogram "${name}": buckets must increase`);
      }
    }
    this.name = name;
    this.help = help;
    this.#bounds = bounds;
    this.#counts = new Float64Array(bounds.length + 1);
  }

  /** Records one observation in the first bucket whose bound is at least `value`. */
  observe(value: number): void {
    // A NaN or negative value is a caller's bug; dropping it keeps the metric from throwing
    // inside the fan-out and keeps `_sum` meaningful.
    if (!(value >= 0)) return;
    const bounds = this.#bounds;
    let i = 0;
    while (i < bounds.length && value > bounds[i]!) i++;
    this.#counts[i]!++;
    this.#sum += value;
    this.#count++;
  }

  /** Returns the cumulative buckets, the sum and the count, as prom-client's registry reads them. */
  get(): Promise<
    {
      name: string;
      help: string;
      type: string;
      aggregator: string;
      values: HistogramSample[];
    }
  > {
    const values: HistogramSample[] = [];
    let cumulative = 0;
    for (let i = 0; i < this.#bounds.length; i++) {
      cumulative += this.#counts[i]!;
      values.push({
        metricName: `${this.name}_bucket`,
        labels: { le: this.#bounds[i]! },
        value: cumulative,
      });
    }
    values.push(
      { metricName: `${this.name}_bucket`, labels: { le: "+Inf" }, value: this.#count },
      { metricName: `${this.name}_sum`, labels: {}, value: this.#sum },
      { metricName: `${this.name}_count`, labels: {}, value: this.#count },
    );
    return Promise.resolve({
      name: this.name,
      help: this.help,
      type: this.type,
      aggregator: this.aggregator,
      values,
    });
  }

  /** Forgets every observation. */
  reset(): void {
    this.#counts = new Float64Array(this.#bounds.length + 1);
    this.#sum = 0;
    this.#count = 0;
  }

  /** Creates a histogram and registers it in `registry`. */
  static register(
    registry: Registry,
    name: string,
    help: string,
    bounds: readonly number[],
  ): FastHistogram {
    const histogram = new FastHistogram(name, help, bounds);
    // The registry reads any object with prom-client's metric shape; its type only names its
    // own classes, hence the cast.
    registry.registerMetric(histogram as unknown as Metric);
    return histogram;
  }
}
