import assert from "node:assert/strict";
import { fakeClient, RecordingHandler } from "./tests/helpers/fakes.ts";
import {
  BatchCache,
  BURST_FACTOR,
  MacrotaskFlusher,
  MAX_BATCH_BYTES,
  MAX_BATCH_EVENTS,
  OpeningWatch,
  SOCKET_HIGH_WATER_BYTES,
} from "./client.ts";
import { prepare, type PreparedFrame, utf8Bytes } from "./message.ts";

const frame = (n: number): PreparedFrame => prepare({ type: "message", id: n });

Deno.test("Client.flush() sends one frame per event to a plain client", () => {
  const { client, socket, flusher } = fakeClient({ batching: false });
  for (let i = 1; i <= 3; i++) assert.ok(client.enqueue(frame(i)));
  flusher.flushAll();
  assert.deepEqual(socket.sent.map((t) => JSON.parse(t).id), [1, 2, 3]);
  assert.equal(client.pending, 0);
  assert.equal(client.backlogBytes, 0);
});

/** Resolves after the flusher's current pass: its setImmediate was queued before this one. */
const nextPass = () => new Promise<void>((resolve) => setImmediate(resolve));

Deno.test("MacrotaskFlusher spends at most its frame budget per pass, and reaches the skipped clients first", async () => {
  const flusher = new MacrotaskFlusher({ frames: 10 });
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

Deno.test("MacrotaskFlusher ends a pass at its byte budget, and close() writes everything left", async () => {
  const flusher = new MacrotaskFlusher({ bytes: 2.5 * MAX_BATCH_BYTES });
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
  assert.throws(() => new MacrotaskFlusher({ frames: 0 }), RangeError);
});

Deno.test("Client.flush() packs pending events into one JSON array for parley.v1", () => {
  const { client, socket, flusher } = fakeClient({ batching: true });
  for (let i = 1; i <= 3; i++) client.enqueue(frame(i));
  flusher.flushAll();
  assert.equal(socket.sent.length, 1);
  assert.deepEqual(JSON.parse(socket.sent[0]!).map((e: { id: number }) => e.id), [1, 2, 3]);
  // A lone event leaves as a plain object, not a one-element array.
  client.enqueue(frame(4));
  flusher.flushAll();
  assert.deepEqual(JSON.parse(socket.sent[1]!), { type: "message", id: 4 });
  assert.deepEqual(client.stats, { ...client.stats, framesOut: 2, eventsOut: 4 });
});

Deno.test("Client.flush() splits batches at the event and byte bounds, keeping order", () => {
  const { client, socket, flusher } = fakeClient({
    batching: true,
    outboxMessages: 4096,
    outboxBytes: 64 << 20,
  });
  const count = MAX_BATCH_EVENTS * 2 + 5;
  for (let i = 1; i <= count; i++) client.enqueue(frame(i));
  const big = prepare({ type: "message", content: "x".repeat(MAX_BATCH_BYTES) });
  client.enqueue(big);
  client.enqueue(frame(count + 1));
  flusher.flushAll();
  const frames = socket.sent.map((t) => JSON.parse(t));
  assert.ok(frames.slice(0, 2).every((f) => Array.isArray(f) && f.length === MAX_BATCH_EVENTS));
  assert.ok(socket.sent.every((t) => t.length <= MAX_BATCH_BYTES || !t.startsWith("[")));
  assert.deepEqual(
    socket.events.filter((e) => e.id !== undefined).map((e) => e.id),
    Array.from({ length: count + 1 }, (_, i) => i + 1),
  );
  assert.equal(socket.events.filter((e) => e.content !== undefined).length, 1);
});

Deno.test("Client.enqueue() drops a burst past BURST_FACTOR times the count bound with 4008", () => {
  const handler = new RecordingHandler();
  const { client, socket } = fakeClient({ outboxMessages: 16, handler });
  for (let i = 0; i < 16 * BURST_FACTOR; i++) assert.ok(client.enqueue(frame(i)));
  assert.equal(client.enqueue(frame(999)), false);
  assert.deepEqual(socket.closedWith, { code: 4008, reason: "Slow consumer" });
  assert.deepEqual(handler.closes, [{ code: 4008, reason: "Slow consumer" }]);
  assert.equal(socket.sent.length, 0, "a slow consumer's backlog is dropped, not sent");
  assert.equal(client.enqueue(frame(1000)), false);
});

Deno.test("Client.flush() closes with 4008 at the first flush after a stalled peer passed outboxBytes", () => {
  const outboxBytes = 64 * 1024;
  // The client's own byte count must never fall short: multi-byte characters, and batches of
  // one-byte events where the brackets and commas are half the frame.
  const shapes = [
    {
      perFlush: 2,
      event: (n: number) => prepare({ type: "message", id: n, content: "é".repeat(300) }),
    },
    { perFlush: 200, event: (n: number) => prepare(n % 10) },
  ];
  for (const { perFlush, event } of shapes) {
    const { client, socket, flusher } = fakeClient({
      batching: true,
      outboxBytes,
      outboxMessages: 1024,
    });
    socket.stalled = true;
    let flushes = 0;
    for (let n = 0; client.active; n += perFlush) {
      const unsentBefore = socket.unsentBytes;
      for (let i = 0; i < perFlush; i++) client.enqueue(event(n + i));
      flusher.flushAll();
      flushes++;
      assert.equal(
        client.active,
        unsentBefore <= outboxBytes,
        `${perFlush} per flush, flush ${flushes}: ${unsentBefore} bytes were unsent before it`,
      );
    }
    assert.deepEqual(socket.closedWith, { code: 4008, reason: "Slow consumer" });
    assert.ok(flushes > 10);
  }
});

Deno.test("Client.flush() holds back while the socket is behind and resumes when it drains", () => {
  const { client, socket, flusher } = fakeClient({ outboxBytes: 4 << 20 });
  socket.stalled = true;
  const big = (n: number) => prepare({ type: "message", id: n, content: "x".repeat(32 * 1024) });
  let n = 0;
  while (socket.unsentBytes <= SOCKET_HIGH_WATER_BYTES) {
    client.enqueue(big(++n));
    assert.equal(client.flush(), true);
  }
  const sent = socket.sent.length;
  client.enqueue(frame(1000));
  assert.equal(client.flush(), false, "held back: the peer is behind");
  assert.equal(socket.sent.length, sent);
  socket.drain();
  client.wake();
  flusher.flushAll();
  assert.equal(JSON.parse(socket.sent.at(-1)!).id, 1000);
  assert.ok(client.active);
});

Deno.test("Client.flush() reads bufferedAmount only when what it sent could have reached a bound", () => {
  const { client, socket, flusher } = fakeClient({ batching: true, outboxBytes: 4 << 20 });
  const event = (n: number) => prepare({ type: "message", id: n, content: "x".repeat(500) });
  let total = 0;
  let largest = 0;
  for (let n = 0; n < 2_000; n += 2) {
    client.enqueue(event(n));
    client.enqueue(event(n + 1));
    flusher.flushAll();
    const bytes = utf8Bytes(socket.sent.at(-1)!);
    total += bytes;
    largest = Math.max(largest, bytes);
  }
  // A peer that keeps up: about one reading per SOCKET_HIGH_WATER_BYTES sent (each reading
  // forgets the last frame's overshoot), not one per flush.
  const reads = socket.bufferedAmountReads;
  assert.ok(reads <= Math.floor(total / (SOCKET_HIGH_WATER_BYTES + 1)), `${reads} reads`);
  assert.ok(reads >= Math.floor(total / (SOCKET_HIGH_WATER_BYTES + largest)), `${reads} reads`);
  assert.ok(reads > 0);
});

Deno.test("Client.enqueue() drops droppable events first when the outbox is half full", () => {
  const { client, flusher, socket } = fakeClient({ outboxMessages: 16 });
  for (let i = 0; i < 8; i++) client.enqueue(frame(i));
  assert.equal(client.enqueue(prepare({ type: "typing" }), true), false);
  assert.ok(client.enqueue(frame(8)));
  flusher.flushAll();
  assert.equal(socket.eventsOf("typing").length, 0);
  assert.ok(client.active);
});

Deno.test("Client refuses binary frames and closes with 1009 on frames over the byte limit", () => {
  const handler = new RecordingHandler();
  const { socket } = fakeClient({ maxFrameBytes: 12, handler });
  socket.receive(new Uint8Array([1, 2]).buffer);
  socket.receive("€€€€"); // 4 characters, 12 bytes: at the limit
  socket.receive("€€€€€"); // 15 bytes
  assert.deepEqual(handler.calls.slice(1), [
    "refused:binary",
    "received",
    "refused:too_large",
    "closed:1009",
  ]);
  assert.deepEqual(socket.closedWith, { code: 1009, reason: "Message too big" });
});

Deno.test("Client reports closed once even when the close event fires twice", () => {
  const handler = new RecordingHandler();
  const { client, socket } = fakeClient({ handler });
  socket.peerClosed(1000, "bye");
  socket.peerClosed(1000, "bye");
  client.close({ code: 1000, reason: "Normal closure" });
  assert.deepEqual(handler.closes, [{ code: 1000, reason: "bye" }]);
  assert.equal(client.enqueue(frame(1)), false);
});

Deno.test("Client tears down a peer that never answers the close handshake", async () => {
  const handler = new RecordingHandler();
  const { client, socket } = fakeClient({ handler, closeTimeoutMs: 20 });
  socket.answersClose = false;
  client.close({ code: 1001, reason: "Server shutting down" });
  assert.equal(handler.closes.length, 0);
  await new Promise((resolve) => setTimeout(resolve, 60));
  assert.equal(handler.closes.length, 1);
  assert.equal(handler.closes[0]!.code, 1001);
  assert.match(handler.closes[0]!.reason, /timed out/);
});

Deno.test("Client.close() sends queued replies before a policy close, never after", () => {
  const { client, socket } = fakeClient();
  client.enqueue(prepare({ type: "error", code: "rate_limited" }));
  client.close({ code: 1008, reason: "Rate limit abuse" });
  assert.deepEqual(socket.eventsOf("error").length, 1);
  assert.deepEqual(socket.closedWith, { code: 1008, reason: "Rate limit abuse" });
});

Deno.test("Client.expireAt() closes with 4001 when the token expires, unless moved later", async () => {
  const soon = fakeClient();
  soon.client.expireAt(new Date(Date.now() + 20));
  const refreshed = fakeClient();
  refreshed.client.expireAt(new Date(Date.now() + 20));
  refreshed.client.expireAt(new Date(Date.now() + 60_000));
  await new Promise((resolve) => setTimeout(resolve, 60));
  assert.deepEqual(soon.socket.closedWith, { code: 4001, reason: "Token expired" });
  assert.equal(refreshed.socket.closedWith, undefined);
  refreshed.socket.peerClosed(); // clears the expiry timer
  const past = fakeClient();
  past.client.expireAt(new Date(Date.now() - 1));
  assert.equal(past.socket.closedWith?.code, 4001);
});

Deno.test("Client does not write before the socket is open", () => {
  const { client, socket, flusher } = fakeClient();
  socket.readyState = 0;
  client.enqueue(frame(1));
  flusher.flushAll();
  assert.equal(socket.sent.length, 0);
  socket.readyState = 1;
  client.enqueue(frame(2));
  flusher.flushAll();
  assert.deepEqual(socket.sent.map((t) => JSON.parse(t).id), [1, 2]);
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

Deno.test("Clients flushed in one pass with the same events build their batch once", () => {
  class CountingCache extends BatchCache {
    built = 0;
    override set(...args: Parameters<BatchCache["set"]>): void {
      this.built++;
      super.set(...args);
    }
  }
  const cache = new CountingCache();
  const clients = [fakeClient({ batching: true }), fakeClient({ batching: true })];
  const events = [frame(1), frame(2), frame(3)];
  for (const { client } of clients) {
    for (const event of events) client.enqueue(event);
  }
  for (const { client } of clients) client.flush(cache);
  assert.equal(cache.built, 1, "the second client reused the first one's batch");
  const [first, second] = clients.map(({ socket }) => socket.sent);
  assert.equal(first!.length, 1);
  assert.deepEqual(second, first);
  assert.deepEqual(JSON.parse(second![0]!).map((e: { id: number }) => e.id), [1, 2, 3]);
});

Deno.test("Client closes a socket on open when asked to close it while connecting", () => {
  // Deno ignores close() on a server socket that is still connecting and opens it anyway, so the
  // close must wait for `open`; a token already past its exp asks for exactly that.
  const handler = new RecordingHandler();
  const { client, socket } = fakeClient({
    handler,
    connecting: true,
    expiresAt: new Date(Date.now() - 1),
  });
  assert.equal(socket.closedWith, undefined, "nothing is sent to a connecting socket");
  socket.open();
  assert.deepEqual(socket.closedWith, { code: 4001, reason: "Token expired" });
  assert.deepEqual(handler.calls, ["closed:4001"], "never announced as opened");
  assert.equal(client.active, false);
  assert.equal(client.opened, false);
});

/** A client on a socket that stays CONNECTING until the test opens it. */
function connectingClient(opening: number | OpeningWatch) {
  const handler = new RecordingHandler();
  const { client, socket } = fakeClient({
    id: "connecting",
    handler,
    connecting: true,
    opening: typeof opening === "number" ? new OpeningWatch(opening) : opening,
  });
  return { socket, handler, client };
}

Deno.test({
  name: "Client gives up on a socket that never opens, and closes it if it opens later",
  sanitizeOps: true,
  sanitizeResources: true,
}, async () => {
  // Deno sends no event for a socket whose 101 could not be written: without the watchdog the
  // client, and its server's connection slot, would be held for good.
  const { socket, handler, client } = connectingClient(20);
  await new Promise((resolve) => setTimeout(resolve, 60));
  assert.deepEqual(handler.closes, [{ code: 1006, reason: "Connection never opened" }]);
  assert.equal(client.opened, false);
  assert.equal(client.active, false);
  socket.open();
  assert.deepEqual(socket.closedWith, { code: 1013, reason: "Server overloaded" });
  assert.deepEqual(handler.calls, ["closed:1006"], "never announced as opened");
});

Deno.test({
  name: "OpeningWatch abandons only clients past their deadline and stops when none is left",
  sanitizeOps: true,
  sanitizeResources: true,
}, async () => {
  const watch = new OpeningWatch(40);
  const early = connectingClient(watch);
  await new Promise((resolve) => setTimeout(resolve, 25));
  const late = connectingClient(watch);
  assert.equal(watch.size, 2);
  await new Promise((resolve) => setTimeout(resolve, 35));
  assert.deepEqual(early.handler.calls, ["closed:1006"], "past its deadline");
  assert.deepEqual(late.handler.calls, [], "still within its own");
  assert.equal(watch.size, 1);
  late.socket.open();
  assert.equal(watch.size, 0, "an opened socket is no longer watched");
  assert.deepEqual(late.handler.calls, ["opened:connecting"]);
  // The sanitizer fails this test if the sweep timer outlived the last watched client.
});

Deno.test({
  name: "Client stops its opening watchdog when the socket opens",
  sanitizeOps: true,
  sanitizeResources: true,
}, async () => {
  const { socket, handler, client } = connectingClient(20);
  socket.open();
  await new Promise((resolve) => setTimeout(resolve, 60));
  assert.deepEqual(handler.calls, ["opened:connecting"]);
  assert.equal(client.opened, true);
  assert.equal(client.active, true);
});

Deno.test("Client keeps only its message and close listeners once the socket is open", () => {
  const { socket } = fakeClient();
  assert.deepEqual(
    ["open", "message", "close", "error"].map((type) => socket.listenerCount(type)),
    [0, 1, 1, 0],
  );
});

Deno.test("Client rooms: one name, then a set, then one name again, in joining order", () => {
  const { client } = fakeClient();
  assert.deepEqual(client.rooms, []);
  assert.equal(client.inRoom("lobby"), false);
  client.addRoom("lobby");
  client.addRoom("lobby");
  assert.deepEqual(client.rooms, ["lobby"]);
  client.addRoom("dev");
  client.addRoom("ops");
  assert.deepEqual(client.rooms, ["lobby", "dev", "ops"]);
  assert.ok(client.inRoom("dev") && client.inRoom("lobby") && !client.inRoom("qa"));
  assert.equal(client.removeRoom("qa"), false);
  assert.equal(client.removeRoom("lobby"), true);
  assert.equal(client.removeRoom("ops"), true);
  assert.deepEqual(client.rooms, ["dev"]);
  assert.equal(client.removeRoom("dev"), true);
  assert.equal(client.removeRoom("dev"), false);
  assert.deepEqual(client.rooms, []);
  assert.equal(client.inRoom("dev"), false);
});
