/**
 * Tests for `frame_order.ts`: a connection's frames start in the order received, consecutive
 * appends run together, waiting frames are bounded and dropped on `forget`, and connections do
 * not wait for each other. Frames are driven by hand-resolved promises: no sockets, no sleeps.
 */
import assert from "node:assert/strict";
import type { Client } from "../client.ts";
import type { ClientFrame } from "../message.ts";
import { FrameOrder, MAX_QUEUED_BYTES, MAX_QUEUED_FRAMES } from "./frame_order.ts";

/** A FrameOrder whose frames finish only when the test says so. */
function harness() {
  const started: string[] = [];
  const refused: string[] = [];
  const finish = new Map<string, () => void>();
  const order = new FrameOrder((_client, frame) => {
    const ref = frame.ref!;
    started.push(ref);
    if (frame.type === "ping") return undefined; // took effect at once
    const { promise, resolve } = Promise.withResolvers<void>();
    finish.set(ref, resolve);
    return promise;
  }, (_client, frame) => refused.push(frame.ref!));
  const done = async (ref: string) => {
    finish.get(ref)!();
    // Let the continuation that drains the backlog run.
    await Promise.resolve();
    await Promise.resolve();
  };
  return { order, started, refused, done };
}

const alice = { id: "a" } as unknown as Client;
const bob = { id: "b" } as unknown as Client;
const message = (ref: string): ClientFrame => ({ type: "message", content: "x", ref });
const join = (ref: string): ClientFrame => ({ type: "join", room: "r", ref });
const ping = (ref: string): ClientFrame => ({ type: "ping", ref });

Deno.test("FrameOrder starts a frame only after the earlier frame of its connection", async () => {
  const { order, started, done } = harness();
  order.submit(alice, join("j"), "{}");
  order.submit(alice, message("m"), "{}");
  assert.deepEqual(started, ["j"]);
  assert.equal(order.busy, 1);
  await done("j");
  assert.deepEqual(started, ["j", "m"]);
  await done("m");
  assert.equal(order.busy, 0);
});

Deno.test("FrameOrder runs consecutive appends together and the next frame after them", async () => {
  const { order, started, done } = harness();
  order.submit(alice, message("m1"), "{}");
  order.submit(alice, message("m2"), "{}");
  order.submit(alice, join("j"), "{}");
  order.submit(alice, message("m3"), "{}");
  assert.deepEqual(started, ["m1", "m2"]);
  await done("m1");
  assert.deepEqual(started, ["m1", "m2"]);
  await done("m2");
  assert.deepEqual(started, ["m1", "m2", "j"]);
  await done("j");
  assert.deepEqual(started, ["m1", "m2", "j", "m3"]);
  await done("m3");
  assert.equal(order.busy, 0);
});

Deno.test("FrameOrder keeps no state for frames that take effect at once", () => {
  const { order, started } = harness();
  order.submit(alice, ping("p1"), "{}");
  order.submit(alice, ping("p2"), "{}");
  assert.deepEqual(started, ["p1", "p2"]);
  assert.equal(order.busy, 0);
});

Deno.test("FrameOrder does not hold one connection's frames behind another's", () => {
  const { order, started } = harness();
  order.submit(alice, join("a-join"), "{}");
  order.submit(bob, join("b-join"), "{}");
  assert.deepEqual(started, ["a-join", "b-join"]);
  assert.equal(order.busy, 2);
});

Deno.test("FrameOrder refuses frames past MAX_QUEUED_FRAMES waiting and never runs them", async () => {
  const { order, started, refused, done } = harness();
  order.submit(alice, join("j"), "{}");
  for (let i = 0; i < MAX_QUEUED_FRAMES; i++) order.submit(alice, ping(`p${i}`), "{}");
  order.submit(alice, ping("over"), "{}");
  assert.deepEqual(refused, ["over"]);
  await done("j");
  assert.equal(started.length, 1 + MAX_QUEUED_FRAMES);
  assert.ok(!started.includes("over"));
  assert.equal(order.busy, 0);
});

Deno.test("FrameOrder refuses a frame that would pass MAX_QUEUED_BYTES waiting", () => {
  const { order, refused } = harness();
  order.submit(alice, join("j"), "{}");
  order.submit(alice, ping("big"), "x".repeat(MAX_QUEUED_BYTES));
  order.submit(alice, ping("one-more"), "x");
  assert.deepEqual(refused, ["one-more"]);
});

Deno.test("FrameOrder.forget() drops the waiting frames of a closed connection", async () => {
  const { order, started, done } = harness();
  order.submit(alice, join("j"), "{}");
  order.submit(alice, message("m"), "{}");
  order.forget(alice);
  assert.equal(order.busy, 0);
  await done("j");
  assert.deepEqual(started, ["j"]);
  assert.equal(order.busy, 0);
});
