import assert from "node:assert/strict";
import { fakeClient, RecordingHandler } from "./tests/helpers/fakes.ts";
import { OpeningWatch } from "./server.ts";
import {
  BatchCache,
  MAX_BATCH_BYTES,
  MAX_BATCH_EVENTS,
  SOCKET_HIGH_WATER_BYTES,
} from "./delivery/flush.ts";
import { Close, prepare, type PreparedFrame, utf8Bytes } from "./message.ts";

const frame = (n: number): PreparedFrame => prepare({ type: "message", id: n });

Deno.test("Client.flush() sends one frame per event to a plain client", () => {
  const { client, socket, flusher } = fakeClient({ batching: false });
  for (let i = 1; i <= 3; i++) assert.ok(client.enqueue(frame(i)));
  flusher.flushAll();
  assert.deepEqual(socket.sent.map((t) => JSON.parse(t).id), [1, 2, 3]);
  assert.equal(client.pending, 0);
  assert.equal(client.backlogBytes, 0);
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

Deno.test("Client keeps a backlog the server has not written yet, however large: it is not the peer's lag", () => {
  const { client, socket, flusher } = fakeClient({ outboxMessages: 16, outboxBytes: 4096 });
  // A flood of inbound frames holds the loop: nothing flushes while 40 times the count bound and
  // several times the byte bound pile up.
  for (let i = 0; i < 16 * 40; i++) assert.ok(client.enqueue(frame(i)));
  assert.ok(client.active);
  assert.equal(socket.closedWith, undefined);
  flusher.flushAll();
  assert.deepEqual(
    socket.sent.map((t) => JSON.parse(t).id),
    Array.from({ length: 640 }, (_, i) => i),
  );
  assert.equal(client.pending, 0);
});

/** A client whose peer has stopped reading, with its socket already past the high-water mark. */
function behindClient(lagGraceMs: number) {
  const handler = new RecordingHandler();
  const made = fakeClient({ handler, outboxMessages: 16, outboxBytes: 1 << 20, lagGraceMs });
  fallBehind(made);
  return { ...made, handler };
}

/** Stalls the peer and sends until the socket is past the high-water mark. */
function fallBehind({ client, socket, flusher }: ReturnType<typeof fakeClient>): void {
  socket.stalled = true;
  const big = (n: number) => prepare({ type: "message", id: n, content: "x".repeat(32 * 1024) });
  for (let n = 0; socket.unsentBytes <= SOCKET_HIGH_WATER_BYTES; n++) {
    client.enqueue(big(n));
    flusher.flushAll();
  }
}

Deno.test("Client is closed with 4008 only after its socket stayed behind for the grace period of free time, past a bound", () => {
  const { client, socket, flusher, handler } = behindClient(100);
  const sent = socket.sent.length;
  // Past the count bound while behind, but with no free time credited yet: kept.
  for (let i = 0; i < 40; i++) assert.ok(client.enqueue(frame(1000 + i)));
  flusher.flushAll();
  assert.ok(client.active);
  client.wake(60);
  flusher.flushAll();
  assert.ok(client.active, "60 of 100 ms behind: not yet");
  client.wake(40);
  flusher.flushAll();
  assert.deepEqual(socket.closedWith, { code: 4008, reason: "Slow consumer" });
  assert.deepEqual(handler.closes, [{ code: 4008, reason: "Slow consumer" }]);
  assert.equal(socket.sent.length, sent, "a slow consumer's backlog is dropped, not sent");
  assert.equal(client.enqueue(frame(2000)), false);
});

Deno.test("Client behind but within its bounds is held, and its grace starts only past them", () => {
  const { client, socket, flusher } = behindClient(100);
  client.enqueue(frame(1));
  client.wake(500);
  flusher.flushAll();
  assert.ok(client.active, "behind, but its backlog fits the bounds");
  for (let i = 0; i < 40; i++) assert.ok(client.enqueue(frame(i)), "the grace starts now");
  client.wake(60);
  flusher.flushAll();
  assert.ok(client.active);
  client.wake(40);
  flusher.flushAll();
  assert.deepEqual(socket.closedWith, { code: 4008, reason: "Slow consumer" });
});

Deno.test("Client whose peer takes a little at a time while more comes is cut; one catching up is not", () => {
  for (const drainsFaster of [false, true]) {
    const { client, socket, flusher } = behindClient(100);
    let next = 0;
    const big = (n: number) => prepare({ type: "message", id: n, content: "x".repeat(32 * 1024) });
    for (let tick = 0; tick < 60 && client.active; tick++) {
      // Three 32 KiB frames come per tick; the peer takes 64 KiB, enough to dip under the mark
      // at every look (or, catching up, everything).
      for (let i = 0; i < 3; i++) client.enqueue(big(next++));
      if (drainsFaster) socket.drain();
      else socket.drainBytes(64 * 1024);
      client.wake(10);
      flusher.flushAll();
    }
    assert.equal(client.active, drainsFaster, drainsFaster ? "caught up" : "a trickle is lag");
  }
});

Deno.test("Client that catches up starts its grace again", () => {
  const { client, socket, flusher } = behindClient(100);
  for (let i = 0; i < 40; i++) client.enqueue(frame(i));
  client.wake(90);
  flusher.flushAll();
  socket.drain();
  client.wake(5);
  flusher.flushAll();
  assert.equal(client.pending, 0, "the peer took everything");
  fallBehind({ client, socket, flusher });
  for (let i = 0; i < 40; i++) client.enqueue(frame(i));
  client.wake(90);
  flusher.flushAll();
  assert.ok(client.active, "90 ms since it caught up, not 185");
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

Deno.test("Client closing a peer that is still sending waits until it is quiet, discarding its frames and sending late answers first", async () => {
  const handler = new RecordingHandler();
  const { client, socket, flusher } = fakeClient({ handler, closeQuietMs: 30 });
  socket.receive('{"type":"ping"}');
  assert.equal(handler.texts.length, 1);
  client.close({ code: 1008, reason: "Rate limit abuse" });
  // Deno would drop the connection without a close frame if a frame arrived after close().
  assert.equal(socket.closedWith, undefined, "the peer just sent: no close frame yet");
  socket.receive('{"type":"ping"}');
  assert.equal(handler.texts.length, 1, "frames after the decision are discarded");
  assert.ok(client.enqueue(prepare({ type: "ack", ref: "late" })), "answers still queue");
  flusher.flushAll();
  const deadline = Date.now() + 5_000;
  while (socket.closedWith === undefined && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  assert.deepEqual(socket.closedWith, { code: 1008, reason: "Rate limit abuse" });
  assert.deepEqual(socket.eventsOf("ack").map((e) => e.ref), ["late"]);
  assert.deepEqual(handler.closes, [{ code: 1008, reason: "Rate limit abuse" }]);
  assert.equal(client.enqueue(prepare({ type: "ack", ref: "after" })), false);
});

Deno.test("Client reports the code it closed with when the peer drops the connection without echoing it", () => {
  const handler = new RecordingHandler();
  const { client, socket } = fakeClient({ handler });
  socket.answersClose = false;
  client.close({ code: 4008, reason: "Slow consumer" });
  socket.peerClosed(1006, "");
  assert.deepEqual(handler.closes.map((c) => c.code), [4008]);
  const other = fakeClient();
  other.socket.peerClosed(1006, "");
  assert.equal(other.client.active, false);
});

Deno.test("Client closed for another reason while it lags sends that close once, counts no 4008 and leaves no timer", () => {
  let slowCuts = 0;
  const handler = new RecordingHandler();
  const { client, socket } = fakeClient({
    handler,
    outboxMessages: 1024,
    outboxBytes: 400_000,
    closeTimeoutMs: 50,
    observer: {
      frameOut() {},
      observeOutboxBytes() {},
      slowConsumerDisconnect: () => slowCuts++,
    },
  });
  socket.answersClose = false;
  socket.stalled = true;
  const big = (n: number) => prepare({ id: n, pad: "x".repeat(100_000) });
  for (let i = 0; i < 3; i++) client.enqueue(big(i));
  assert.equal(client.flush(), true); // 300 KB unsent: past the mark
  client.enqueue(prepare({ id: 9, pad: "y".repeat(150_000) }));
  assert.equal(client.flush(), false); // held back, not lagging yet
  client.wake(250); // its grace is up, and before its next flush a shutdown closes it
  client.close(Close.goingAway);
  assert.deepEqual(socket.closedWith, { code: 1001, reason: "Server shutting down" });
  assert.equal(slowCuts, 0);
  socket.peerClosed(1006, "");
  assert.deepEqual(handler.closes.map((c) => c.code), [1001]);
  // The op sanitizer fails this test if a second watchdog was left running.
});

Deno.test("Client lingering on a close counts no slow-consumer cut for frames it refuses meanwhile", async () => {
  let slowCuts = 0;
  const { client, socket, flusher } = fakeClient({
    closeQuietMs: 20,
    lagGraceMs: 0,
    outboxMessages: 4,
    observer: {
      frameOut() {},
      observeOutboxBytes() {},
      slowConsumerDisconnect: () => slowCuts++,
    },
  });
  socket.receive('{"type":"ping"}');
  client.close({ code: 1008, reason: "Rate limit abuse" });
  for (let i = 0; i < 20; i++) client.enqueue(frame(i));
  flusher.flushAll();
  assert.equal(slowCuts, 0);
  const deadline = Date.now() + 5_000;
  while (socket.closedWith === undefined && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  assert.deepEqual(socket.closedWith, { code: 1008, reason: "Rate limit abuse" });
});

Deno.test("Client whose send throws after a frame went out does not send it twice", () => {
  let throws = 1;
  const { client, socket } = fakeClient({
    observer: {
      frameOut() {
        if (throws-- > 0) throw new Error("observer failed");
      },
      observeOutboxBytes() {},
      slowConsumerDisconnect() {},
    },
  });
  client.enqueue(prepare({ n: 1 }));
  client.enqueue(prepare({ n: 2 }));
  client.flush();
  assert.deepEqual(socket.sent.map((t) => JSON.parse(t).n), [1, 2]);
  assert.deepEqual(socket.closedWith, { code: 1011, reason: "Internal error" });
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
  // The deadlines follow an injected clock; only the sweeps run on real timers, so a loaded
  // machine can delay them but not change what they find.
  let now = 0;
  const watch = new OpeningWatch(40, () => now);
  const early = connectingClient(watch);
  now = 25;
  const late = connectingClient(watch);
  assert.equal(watch.size, 2);
  now = 45; // past early's deadline (40), within late's (65)
  const deadline = Date.now() + 5_000;
  while (early.handler.calls.length === 0 && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
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
