/**
 * Tests of the benchmark's statistics: medians skip what could not be measured, and percentiles
 * pick a sample that was observed.
 */
import assert from "node:assert/strict";
import { median, percentile, round } from "./stats.ts";

Deno.test("median takes the middle value, or the mean of the two middle values", () => {
  assert.equal(median([3, 1, 2]), 2);
  assert.equal(median([4, 1, 3, 2]), 2.5);
});

Deno.test("median leaves out values that are not finite, and is NaN with none left", () => {
  assert.equal(median([NaN, 5, Infinity, 1, 3]), 3);
  assert.ok(Number.isNaN(median([NaN])));
  assert.ok(Number.isNaN(median([])));
});

Deno.test("percentile picks the sample at floor(p × n), clamped to the last", () => {
  const sorted = Array.from({ length: 100 }, (_, i) => i + 1);
  assert.equal(percentile(sorted, 0.5), 51);
  assert.equal(percentile(sorted, 0.99), 100);
  assert.equal(percentile(sorted, 1), 100);
  assert.equal(percentile([7], 0.99), 7);
  assert.ok(Number.isNaN(percentile([], 0.5)));
});

Deno.test("round keeps the given number of decimals", () => {
  assert.equal(round(1.23456, 3), 1.235);
  assert.equal(round(1234.5, 0), 1235);
});
