/**
 * Tests of the aggregation of raw results: the per-pair ratios of a paired scenario.
 */
import assert from "node:assert/strict";
import type { LoadResult } from "./measure.ts";
import type { Target } from "./scenarios.ts";
import { pairRatios } from "./summary.ts";

Deno.test("pairRatios divides each pair's server-counted rates run by run", () => {
  const targets: Target[] = [
    { label: "mem", server: "parley" },
    { label: "lite", server: "parley" },
  ];
  const result = (target: string, run: number, serverDelivered: number, windowS: number) =>
    ({ target, run, serverDelivered, windowS }) as LoadResult;
  const raw = [
    result("mem", 1, 1_000, 1),
    result("lite", 1, 900, 1),
    // Run 2 is slower for both; only the ratio within the run counts.
    result("lite", 2, 1_600, 4),
    result("mem", 2, 2_000, 4),
    result("mem", 3, 1_000, 2),
    result("lite", 3, 1_100, 2),
    // A run with only one side measured gives no ratio.
    result("mem", 4, 1_000, 1),
  ];
  assert.deepEqual(pairRatios(targets, raw), [
    { target: "lite", base: "mem", ratios: [0.9, 0.8, 1.1], median: 0.9 },
  ]);
});
