/** Tests for `fast_histogram.ts`: bucket edges, dropped values, reset, and registration. */
import assert from "node:assert/strict";
import { Registry } from "prom-client";
import { FastHistogram } from "./fast_histogram.ts";

Deno.test("FastHistogram counts a value equal to a bound in that bound's bucket", async () => {
  const histogram = new FastHistogram("h", "help", [1, 2]);
  for (const value of [0, 1, 1.5, 2, 3]) histogram.observe(value);
  const { values } = await histogram.get();
  assert.deepEqual(values.map((v) => [v.metricName, v.labels.le, v.value]), [
    ["h_bucket", 1, 2],
    ["h_bucket", 2, 4],
    ["h_bucket", "+Inf", 5],
    ["h_sum", undefined, 7.5],
    ["h_count", undefined, 5],
  ]);
});

Deno.test("FastHistogram drops NaN and negative values and forgets everything on reset", async () => {
  const histogram = new FastHistogram("h", "help", [1]);
  histogram.observe(Number.NaN);
  histogram.observe(-1);
  assert.equal((await histogram.get()).values.at(-1)!.value, 0);
  histogram.observe(0.5);
  histogram.reset();
  assert.deepEqual((await histogram.get()).values.map((v) => v.value), [0, 0, 0, 0]);
});

Deno.test("FastHistogram refuses bounds that do not strictly increase", () => {
  assert.throws(() => new FastHistogram("h", "help", [1, 1]), RangeError);
  assert.throws(() => new FastHistogram("h", "help", [2, 1]), RangeError);
});

Deno.test("FastHistogram.register() exposes the histogram in the registry's text", async () => {
  const registry = new Registry();
  const histogram = FastHistogram.register(registry, "parley_test_seconds", "Test.", [0.5]);
  histogram.observe(0.25);
  const text = await registry.metrics();
  assert.match(text, /^# TYPE parley_test_seconds histogram$/m);
  assert.match(text, /^parley_test_seconds_bucket\{le="0.5"\} 1$/m);
  assert.match(text, /^parley_test_seconds_count 1$/m);
});
