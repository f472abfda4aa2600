import assert from "node:assert/strict";
import { fakeClient } from "../tests/helpers/fakes.ts";
import {
  BACKLOG_RETRY_MS,
  BatchCache,
  batchEnd,
  Flusher,
  MAX_BATCH_BYTES,
  MAX_BATCH_EVENTS,
  MAX_TICK_CREDIT_MS,
  SOCKET_HIGH_WATER_BYTES,
  STARVED_FRAMES,
  STARVED_MS,
} from "./flush.ts";
import { prepare, type PreparedFrame } from "../message.ts";

const frame = (n: number): PreparedFrame => prepare({ type: "message", id: n });

/** Resolves after the flusher's current pass: its setImmediate was queued before this one. */
const nextPass = () => new Promise<void>((resolve) => setImmediate(resolve));

Deno.test("Flusher spends at most its frame budget per pass, and reaches the skipped clients first", async () => {
  const flusher = new Flusher({ frames: 10 });
  const order: string[] = [];
  const clients = ["a", "b", "c"].map((name) => {
    const made = fakeClient({ batching: false, scheduler: flusher, outboxMessages: 64 });
    const send = made.socket.send.bind(made.socket);
    made.socket.send = (data: string) => {
      order.push(`${name}${JSON.parse(data).id}`);
      send(data);
    };
    return { name, ...made };
  });
  // 7 frames each: the first pass ends partway through b, and c is not reached.
  for (const { client } of clients) for (let i = 1; i <= 7; i++) client.enqueue(frame(i));
  await nextPass();
  assert.equal(order.length, 10);
  assert.deepEqual(clients.map(({ client }) => client.pending), [0, 4, 7]);
  // Frames queued meanwhile join the same outbox and keep their order.
  clients[1]!.client.enqueue(frame(8));
  await nextPass();
  // c, which the first pass did not reach, goes before the rest of b.
  assert.deepEqual(order.slice(10, 17), ["c1", "c2", "c3", "c4", "c5", "c6", "c7"]);
  assert.deepEqual(order.slice(17), ["b4", "b5", "b6"]);
  await nextPass();
  assert.deepEqual(order.slice(20), ["b7", "b8"]);
  for (const { name, socket } of clients) {
    const ids = socket.sent.map((t) => JSON.parse(t).id);
    assert.deepEqual(ids, name === "b" ? [1, 2, 3, 4, 5, 6, 7, 8] : [1, 2, 3, 4, 5, 6, 7]);
  }
  assert.deepEqual(clients.map(({ client }) => client.backlogBytes), [0, 0, 0]);
  flusher.close();
});

Deno.test("Flusher ends a pass at its byte budget, and close() writes everything left", async () => {
  const flusher = new Flusher({ bytes: 2.5 * MAX_BATCH_BYTES });
  const { client, socket } = fakeClient({
    batching: true,
    scheduler: flusher,
    maxFrameBytes: 2048,
    outboxMessages: 10_000,
    outboxBytes: 16 * MAX_BATCH_BYTES,
  });
  const big = (n: number) => prepare({ type: "message", id: n, content: "x".repeat(1000) });
  const count = 500; // about 7.8 batch frames
  for (let i = 1; i <= count; i++) client.enqueue(big(i));
  await nextPass();
  // A frame is sent whole: the third (nearly full) batch frame overspends the budget, and the
  // pass stops there.
  assert.equal(socket.sent.length, 3);
  assert.ok(client.pending > 0);
  flusher.close();
  assert.deepEqual(socket.events.map((e) => e.id), Array.from({ length: count }, (_, i) => i + 1));
  assert.equal(client.pending, 0);
  assert.throws(() => new Flusher({ frames: 0 }), RangeError);
});

Deno.test("BatchCache shares a batch between outboxes holding the same events, only those", () => {
  const cache = new BatchCache();
  const [a, b, c] = [frame(1), frame(2), frame(3)];
  cache.set([a, b, c], 0, 3, "[1,2,3]", 7);
  assert.deepEqual(cache.get([a, b, c], 0, 3), { text: "[1,2,3]", bytes: 7 });
  assert.equal(cache.get([frame(1), b, c], 0, 3), undefined, "equal text is not the same event");
  assert.equal(cache.get([a, c, b], 0, 3), undefined);
  assert.equal(cache.get([a, b], 0, 2), undefined);
  assert.deepEqual(cache.get([frame(0), a, b, c], 1, 4)?.text, "[1,2,3]");
  cache.clear();
  assert.equal(cache.get([a, b, c], 0, 3), undefined);
});

Deno.test("Flusher.overloaded reports the outboxes past their pressure bound, and clears as they drain", async () => {
  const flusher = new Flusher({ pressureBytes: 1000 });
  const { client } = fakeClient({ scheduler: flusher, outboxMessages: 1000, outboxBytes: 1 << 20 });
  const payload = (n: number) => prepare({ type: "message", id: n, content: "x".repeat(100) });
  let n = 0;
  while (flusher.egress.bytes <= 1000) {
    assert.equal(flusher.overloaded, false, `${flusher.egress.bytes} bytes queued`);
    client.enqueue(payload(n++));
  }
  assert.equal(flusher.overloaded, true);
  await nextPass();
  assert.equal(flusher.egress.bytes, 0, "every byte sent is off the account");
  assert.equal(flusher.overloaded, false);
  flusher.close();
});

Deno.test("Flusher.overloaded reports a pass held off past STARVED_MS by a flood of inbound frames, not a merely slow or idle loop", () => {
  let now = 1_000;
  const flusher = new Flusher({ now: () => now });
  const { client, socket } = fakeClient({ scheduler: flusher });
  now += 10 * STARVED_MS; // idle for long: nothing is waiting
  assert.equal(flusher.overloaded, false);
  client.enqueue(frame(1));
  assert.equal(flusher.overloaded, false, "just asked");
  now += STARVED_MS + 1;
  assert.equal(flusher.overloaded, false, "late, but few frames came: the machine is busy");
  // Inbound frames as a flood delivers them, back to back, while the pass waits.
  for (let i = 1; i < STARVED_FRAMES; i++) socket.receive('{"type":"ping"}');
  assert.equal(flusher.overloaded, false, `${STARVED_FRAMES - 1} frames`);
  socket.receive('{"type":"ping"}');
  assert.equal(flusher.overloaded, true);
  flusher.close();
  assert.equal(flusher.overloaded, false);
});

Deno.test("Flusher credits held-back clients the free time of a retry tick, capped per tick", async () => {
  let now = 0;
  const flusher = new Flusher({ now: () => now });
  const { client, socket } = fakeClient({ scheduler: flusher, outboxBytes: 4 << 20 });
  const credits: number[] = [];
  const wake = client.wake.bind(client);
  client.wake = (ms?: number) => {
    credits.push(ms ?? 0);
    wake(ms);
  };
  socket.stalled = true;
  const big = (i: number) => prepare({ type: "message", id: i, content: "x".repeat(64 * 1024) });
  for (let i = 0; i < 8; i++) client.enqueue(big(i));
  await nextPass(); // sends past the high-water mark, then holds back and arms its retry
  assert.ok(socket.unsentBytes > SOCKET_HIGH_WATER_BYTES);
  now += BACKLOG_RETRY_MS / 2;
  await new Promise((resolve) => setTimeout(resolve, 3 * BACKLOG_RETRY_MS));
  // The first tick credits the time since the hold; later ones, with the clock stopped, none.
  assert.equal(credits[0], BACKLOG_RETRY_MS / 2);
  assert.ok(credits.slice(1).every((ms) => ms === 0), String(credits));
  assert.ok(client.active);
  flusher.close();

  // A tick that fires a second late was held up by the loop, not by the peer: capped.
  const late = new Flusher({ now: () => now });
  const second = fakeClient({ scheduler: late, outboxBytes: 4 << 20 });
  const lateCredits: number[] = [];
  const lateWake = second.client.wake.bind(second.client);
  second.client.wake = (ms?: number) => {
    lateCredits.push(ms ?? 0);
    lateWake(ms);
  };
  second.socket.stalled = true;
  for (let i = 0; i < 8; i++) second.client.enqueue(big(i));
  await nextPass();
  now += 1_000;
  await new Promise((resolve) => setTimeout(resolve, 3 * BACKLOG_RETRY_MS));
  assert.equal(lateCredits[0], MAX_TICK_CREDIT_MS);
  late.close();
});

Deno.test("batchEnd() packs whole events up to MAX_BATCH_EVENTS and MAX_BATCH_BYTES, plain clients one", () => {
  const small = Array.from({ length: MAX_BATCH_EVENTS + 5 }, (_, i) => frame(i));
  assert.equal(batchEnd(small, 0, false), 1);
  assert.equal(batchEnd(small, 0, true), MAX_BATCH_EVENTS);
  assert.equal(batchEnd(small, MAX_BATCH_EVENTS, true), MAX_BATCH_EVENTS + 5);
  const big = prepare({ content: "x".repeat(MAX_BATCH_BYTES) });
  assert.equal(batchEnd([big, frame(1)], 0, true), 1, "a larger event goes alone");
});
