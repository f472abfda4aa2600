import assert from "node:assert/strict";
import { Queue, QueueClosedError } from "./queue.ts";

async function drain<T>(queue: Queue<T>): Promise<T[]> {
  const items: T[] = [];
  for await (const item of queue) items.push(item);
  return items;
}

Deno.test("Queue yields items in the order they were accepted", async () => {
  const queue = new Queue<number>(8);
  for (let i = 0; i < 5; i++) assert.ok(queue.trySend(i));
  queue.close();
  assert.deepEqual(await drain(queue), [0, 1, 2, 3, 4]);
});

Deno.test("Queue.trySend() returns false when full and accepts again after a take", async () => {
  const queue = new Queue<string>(2);
  assert.ok(queue.trySend("a"));
  assert.ok(queue.trySend("b"));
  assert.equal(queue.trySend("c"), false);
  assert.equal(queue.size, 2);
  const iterator = queue[Symbol.asyncIterator]();
  assert.deepEqual(await iterator.next(), { value: "a", done: false });
  assert.ok(queue.trySend("c"));
  queue.close();
  assert.deepEqual(await iterator.next(), { value: "b", done: false });
  assert.deepEqual(await iterator.next(), { value: "c", done: false });
  assert.equal((await iterator.next()).done, true);
});

Deno.test("Queue.send() waits for space and keeps FIFO order ahead of later trySend", async () => {
  const queue = new Queue<number>(1);
  assert.ok(queue.trySend(1));
  let accepted = false;
  const waiting = queue.send(2).then(() => accepted = true);
  assert.equal(queue.waiting, 1);
  // A newcomer may not overtake the waiting sender, even once space frees.
  assert.equal(queue.trySend(3), false);
  const iterator = queue[Symbol.asyncIterator]();
  assert.deepEqual(await iterator.next(), { value: 1, done: false });
  await waiting;
  assert.ok(accepted);
  assert.equal(queue.trySend(3), false); // full again: 2 is buffered
  assert.deepEqual(await iterator.next(), { value: 2, done: false });
  assert.ok(queue.trySend(3));
  queue.close();
  assert.deepEqual(await iterator.next(), { value: 3, done: false });
  assert.equal((await iterator.next()).done, true);
});

Deno.test("Queue hands an item straight to a consumer waiting on an empty queue", async () => {
  const queue = new Queue<string>(1);
  const iterator = queue[Symbol.asyncIterator]();
  const next = iterator.next();
  assert.ok(queue.trySend("x"));
  assert.equal(queue.size, 0);
  assert.deepEqual(await next, { value: "x", done: false });
  // The handed item did not use the buffer: one more fits.
  assert.ok(queue.trySend("y"));
  queue.close();
  assert.deepEqual(await iterator.next(), { value: "y", done: false });
});

Deno.test("Queue.close() drains buffered and waiting items, then ends the iteration", async () => {
  const queue = new Queue<number>(1);
  assert.ok(queue.trySend(1));
  const waiting = queue.send(2);
  queue.close();
  assert.equal(queue.trySend(3), false);
  await assert.rejects(queue.send(4), QueueClosedError);
  assert.deepEqual(await drain(queue), [1, 2]);
  await waiting;
});

Deno.test("Queue.close() ends a consumer parked on an empty queue", async () => {
  const queue = new Queue<number>(4);
  const items = drain(queue);
  await Promise.resolve();
  queue.close();
  assert.deepEqual(await items, []);
  assert.ok(queue.closed);
});

Deno.test("Queue keeps its order across many wrap-arounds of the internal buffer", async () => {
  const queue = new Queue<number>(3000);
  const seen: number[] = [];
  const consumer = (async () => {
    for await (const item of queue) seen.push(item);
  })();
  for (let i = 0; i < 10_000; i++) await queue.send(i);
  queue.close();
  await consumer;
  assert.equal(seen.length, 10_000);
  assert.ok(seen.every((value, index) => value === index));
});

Deno.test("new Queue() refuses a capacity below one", () => {
  assert.throws(() => new Queue(0), RangeError);
  assert.throws(() => new Queue(1.5), RangeError);
});
