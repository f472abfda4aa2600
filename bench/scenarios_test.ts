/**
 * Tests of the order in which a run measures servers. The measurements themselves run in
 * `deno task bench`, never in the test suite.
 */
import assert from "node:assert/strict";
import { runOrder } from "./scenarios.ts";

Deno.test("runOrder rotates unpaired targets by one per run", () => {
  const targets = ["a", "b", "c"];
  assert.deepEqual(runOrder(targets, 1, false), ["a", "b", "c"]);
  assert.deepEqual(runOrder(targets, 2, false), ["b", "c", "a"]);
  assert.deepEqual(runOrder(targets, 3, false), ["c", "a", "b"]);
  assert.deepEqual(runOrder(targets, 4, false), ["a", "b", "c"]);
});

Deno.test("runOrder keeps pairs adjacent, rotates them and alternates which goes first", () => {
  const targets = ["m1", "s1", "m2", "s2"];
  const orders = [1, 2, 3, 4].map((run) => runOrder(targets, run, true));
  assert.deepEqual(orders, [
    ["m1", "s1", "m2", "s2"],
    ["s2", "m2", "s1", "m1"],
    ["m1", "s1", "m2", "s2"],
    ["s2", "m2", "s1", "m1"],
  ]);
  for (const order of orders) {
    for (const [a, b] of [["m1", "s1"], ["m2", "s2"]]) {
      assert.equal(Math.abs(order.indexOf(a!) - order.indexOf(b!)), 1, `${a} beside ${b}`);
    }
  }
  // Over two runs, each side of a pair goes first once.
  const first = (order: string[], a: string, b: string) =>
    order.indexOf(a) < order.indexOf(b) ? a : b;
  assert.deepEqual(orders.slice(0, 2).map((o) => first(o, "m1", "s1")), ["m1", "s1"]);
  assert.deepEqual(orders.slice(0, 2).map((o) => first(o, "m2", "s2")), ["m2", "s2"]);
});

Deno.test("runOrder refuses an odd number of paired targets", () => {
  assert.throws(() => runOrder(["a", "b", "c"], 1, true), /even target count/);
});
