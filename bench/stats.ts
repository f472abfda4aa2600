/**
 * The few statistics the benchmark reports: rounding for the JSON, medians over runs, and
 * percentiles of latency samples. Non-finite values (a process gone, a counter missing) are left
 * out of a median rather than poisoning it.
 */

/** Rounds `n` to `digits` decimal places. */
export function round(n: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(n * f) / f;
}

/** The median of the finite `values`, or NaN when there are none. */
export function median(values: number[]): number {
  const sorted = values.filter((v) => Number.isFinite(v)).sort((a, b) => a - b);
  if (sorted.length === 0) return NaN;
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/**
 * The `p` quantile (0–1) of ascending `sorted`: the sample at index ⌊p·n⌋, or the last one when
 * that runs past the end; NaN when there are none.
 */
export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]!;
}
