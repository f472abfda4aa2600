import assert from "node:assert/strict";
import { fakeClient, ManualFlusher } from "./tests/helpers/fakes.ts";
import { Hub, type HubEvent } from "./hub.ts";
import type { ChatMessage, RoomMessage } from "./message.ts";

function setup(presenceEventsMax = 1000) {
  const hub = new Hub({ defaultRoom: "lobby", presenceEventsMax });
  const flusher = new ManualFlusher();
  const connect = (options: Parameters<typeof fakeClient>[0] = {}) =>
    fakeClient({ scheduler: flusher, outboxMessages: 1024, outboxBytes: 1 << 20, ...options });
  return { hub, flusher, connect };
}

function roomMessage(id: number, room = "lobby", content = `m${id}`): RoomMessage {
  return { type: "message", id, room, sender: "bob", content, ts: new Date(0).toISOString() };
}

const deliver = (event: ChatMessage): HubEvent => ({ type: "deliver", event });

Deno.test("Hub.run() welcomes a registered client first and puts it in the default room", async () => {
  const { hub, flusher, connect } = setup();
  const { client, socket } = connect({ user: "alice" });
  await hub.run([{ type: "register", client }]);
  flusher.flushAll();
  const [welcome] = socket.events;
  assert.equal(welcome?.type, "welcome");
  assert.equal(welcome?.user, "alice");
  assert.equal(welcome?.connection, client.id);
  assert.deepEqual(welcome?.rooms, ["lobby"]);
  assert.equal(welcome?.protocol, 1);
  assert.deepEqual([...client.rooms], ["lobby"]);
  assert.deepEqual(hub.usersIn("lobby"), ["alice"]);
  assert.equal(hub.size, 1);
});

Deno.test("Hub.run() delivers a room message to every member once", async () => {
  const { hub, flusher, connect } = setup();
  const a = connect({ user: "a" });
  const b = connect({ user: "b" });
  const c = connect({ user: "c" });
  await hub.run([
    { type: "register", client: a.client },
    { type: "register", client: b.client },
    { type: "register", client: c.client },
    { type: "leave", client: c.client, room: "lobby" },
    deliver(roomMessage(1)),
    deliver(roomMessage(2)),
  ]);
  flusher.flushAll();
  for (const { socket } of [a, b]) {
    assert.deepEqual(socket.eventsOf("message").map((m) => m.id), [1, 2]);
  }
  assert.deepEqual(c.socket.eventsOf("message"), []);
  assert.deepEqual(c.socket.eventsOf("left"), [{ type: "left", room: "lobby" }]);
});

Deno.test("Hub.run() encodes a broadcast once and shares the string", async () => {
  const { hub, flusher, connect } = setup();
  const a = connect({ user: "a" });
  const b = connect({ user: "b" });
  await hub.run([
    { type: "register", client: a.client },
    { type: "register", client: b.client },
  ]);
  flusher.flushAll();
  await hub.run([deliver(roomMessage(7))]);
  flusher.flushAll();
  const last = (s: string[]) => s[s.length - 1];
  assert.equal(last(a.socket.sent), last(b.socket.sent));
  assert.equal(JSON.parse(last(a.socket.sent)!).id, 7);
});

Deno.test("Hub.run() batches pending events for parley.v1 clients only", async () => {
  const { hub, flusher, connect } = setup();
  const v1 = connect({ user: "v1", batching: true });
  const plain = connect({ user: "plain", batching: false });
  await hub.run([
    { type: "register", client: v1.client },
    { type: "register", client: plain.client },
  ]);
  flusher.flushAll();
  const before = { v1: v1.socket.sent.length, plain: plain.socket.sent.length };
  await hub.run([1, 2, 3].map((id) => deliver(roomMessage(id))));
  flusher.flushAll();
  const v1Frames = v1.socket.sent.slice(before.v1).map((t) => JSON.parse(t));
  assert.equal(v1Frames.length, 1);
  assert.ok(Array.isArray(v1Frames[0]));
  assert.deepEqual(v1Frames[0].map((m: RoomMessage) => m.id), [1, 2, 3]);
  const plainFrames = plain.socket.sent.slice(before.plain).map((t) => JSON.parse(t));
  assert.deepEqual(plainFrames.map((m: RoomMessage) => m.id), [1, 2, 3]);
});

Deno.test("Hub.run() delivers a DM to every connection of both users and nobody else", async () => {
  const { hub, flusher, connect } = setup();
  const alice1 = connect({ user: "alice" });
  const alice2 = connect({ user: "alice" });
  const bob = connect({ user: "bob" });
  const carol = connect({ user: "carol" });
  const dm: ChatMessage = {
    type: "direct",
    id: 1,
    from: "alice",
    to: "bob",
    content: "secret",
    ts: new Date(0).toISOString(),
  };
  await hub.run([
    ...[alice1, alice2, bob, carol].map((c) => ({ type: "register" as const, client: c.client })),
    deliver(dm),
  ]);
  flusher.flushAll();
  for (const { socket } of [alice1, alice2, bob]) {
    assert.deepEqual(socket.eventsOf("direct"), [dm]);
  }
  assert.ok(!carol.socket.sent.some((text) => text.includes("secret")));
});

Deno.test("Hub.run() replays, then sends held live messages newer than the replay, once each", async () => {
  const { hub, flusher, connect } = setup();
  const a = connect({ user: "a" });
  await hub.run([
    { type: "register", client: a.client },
    { type: "join", client: a.client, room: "dev" },
    // Live messages while the store read is in flight; 4 and 5 are also in the replay.
    deliver(roomMessage(4, "dev")),
    deliver(roomMessage(5, "dev")),
    deliver(roomMessage(6, "dev")),
    {
      type: "join_ready",
      client: a.client,
      room: "dev",
      replay: [3, 4, 5].map((id) => roomMessage(id, "dev")),
      lastId: 5,
      recovered: true,
    },
    deliver(roomMessage(7, "dev")),
  ]);
  flusher.flushAll();
  const dev = a.socket.events.filter((e) => e.room === "dev");
  assert.deepEqual(
    dev.map((e) => e.type === "message" ? e.id : e.type),
    [3, 4, 5, "joined", 6, 7],
  );
  const joined = dev.find((e) => e.type === "joined");
  assert.equal(joined?.lastId, 5);
  assert.equal(joined?.recovered, true);
  assert.deepEqual(joined?.users, ["a"]);
});

Deno.test("Hub.run() does not duplicate messages when a live member re-joins to resume", async () => {
  const { hub, flusher, connect } = setup();
  const a = connect({ user: "a" });
  await hub.run([
    { type: "register", client: a.client },
    deliver(roomMessage(1)),
    { type: "join", client: a.client, room: "lobby" },
    deliver(roomMessage(2)),
    {
      type: "join_ready",
      client: a.client,
      room: "lobby",
      replay: [roomMessage(2)],
      lastId: 2,
      recovered: true,
    },
    deliver(roomMessage(3)),
  ]);
  flusher.flushAll();
  assert.deepEqual(a.socket.eventsOf("message").map((m) => m.id), [1, 2, 3]);
  assert.deepEqual(hub.usersIn("lobby"), ["a"]);
});

Deno.test("Hub.run() drops a replayed message that the broker delivers after the join", async () => {
  const { hub, flusher, connect } = setup();
  const a = connect({ user: "a" });
  const b = connect({ user: "b" });
  await hub.run([
    { type: "register", client: a.client },
    { type: "register", client: b.client },
    { type: "join", client: b.client, room: "dev" },
    { type: "join_ready", client: b.client, room: "dev", replay: [], lastId: 1 },
    { type: "join", client: a.client, room: "dev" },
    // The store read returned 2 and 3 before their broker deliveries reached the hub.
    {
      type: "join_ready",
      client: a.client,
      room: "dev",
      replay: [1, 2, 3].map((id) => roomMessage(id, "dev")),
      lastId: 3,
      recovered: true,
    },
    deliver(roomMessage(2, "dev")),
    deliver(roomMessage(3, "dev")),
    deliver(roomMessage(4, "dev")),
    deliver(roomMessage(5, "dev")),
  ]);
  flusher.flushAll();
  const dev = (events: Record<string, unknown>[]) =>
    events.filter((e) => e.room === "dev").map((e) => e.type === "message" ? e.id : e.type);
  assert.deepEqual(dev(a.socket.events), [1, 2, 3, "joined", 4, 5]);
  assert.deepEqual(dev(b.socket.events), ["joined", 2, 3, 4, 5]);
});

Deno.test("Hub.run() ignores a join completion for a client that left meanwhile", async () => {
  const { hub, flusher, connect } = setup();
  const a = connect({ user: "a" });
  await hub.run([
    { type: "register", client: a.client },
    { type: "join", client: a.client, room: "dev" },
    { type: "unregister", client: a.client },
    { type: "join_ready", client: a.client, room: "dev", replay: [], lastId: 0 },
  ]);
  flusher.flushAll();
  assert.deepEqual(a.socket.eventsOf("joined"), []);
  assert.deepEqual(hub.rooms, []);
  assert.equal(hub.size, 0);
});

Deno.test("Hub.run() reports a user's first local connection and last departure only", async () => {
  const changes: string[] = [];
  const hub = new Hub({
    defaultRoom: "lobby",
    presenceEventsMax: 1000,
    onPresence: (room, user, online) => changes.push(`${online ? "+" : "-"}${user}@${room}`),
  });
  const flusher = new ManualFlusher();
  const connect = (user: string) => fakeClient({ scheduler: flusher, user, outboxMessages: 64 });
  const watcher = connect("watcher");
  const tabs = [connect("alice"), connect("alice"), connect("alice")];
  await hub.run([
    { type: "register", client: watcher.client },
    ...tabs.map((t) => ({ type: "register" as const, client: t.client })),
    { type: "join", client: tabs[0]!.client, room: "dev" },
    { type: "join_ready", client: tabs[0]!.client, room: "dev", replay: [], lastId: 0 },
    { type: "unregister", client: tabs[0]!.client },
    { type: "unregister", client: tabs[1]!.client },
    { type: "unregister", client: tabs[1]!.client }, // idempotent
    { type: "unregister", client: tabs[2]!.client },
  ]);
  assert.deepEqual(changes, [
    "+watcher@lobby",
    "+alice@lobby",
    "+alice@dev",
    "-alice@dev",
    "-alice@lobby",
  ]);
  assert.deepEqual(hub.usersIn("lobby"), ["watcher"]);
  assert.deepEqual(hub.localPresence(), [{ room: "lobby", user: "watcher" }]);
  assert.equal(hub.connectionsOf("alice"), 0);
});

Deno.test("Hub.run() counts a user's connections up and down and reaches each one", async () => {
  const hub = new Hub({ defaultRoom: "lobby", presenceEventsMax: 1000 });
  const flusher = new ManualFlusher();
  const tabs = [1, 2, 3].map(() => fakeClient({ scheduler: flusher, user: "alice" }));
  const dm = (id: number) =>
    deliver({ type: "direct", id, from: "bob", to: "alice", content: "hi", ts: "" });
  const counts: number[] = [];
  // The hub applies each event before it asks for the next one.
  function* script(): Generator<HubEvent> {
    for (
      const event of [
        ...tabs.map((t): HubEvent => ({ type: "register", client: t.client })),
        dm(1),
        { type: "unregister", client: tabs[0]!.client },
        { type: "unregister", client: tabs[1]!.client },
        dm(2),
        { type: "unregister", client: tabs[2]!.client },
        dm(3),
      ] satisfies HubEvent[]
    ) {
      yield event;
      counts.push(hub.connectionsOf("alice"));
    }
  }
  await hub.run(script());
  flusher.flushAll();
  assert.deepEqual(counts, [1, 2, 3, 3, 2, 1, 1, 0, 0]);
  const ids = tabs.map((t) => t.socket.events.filter((e) => e.type === "direct").map((e) => e.id));
  assert.deepEqual(ids, [[1], [1], [1, 2]]);
});

Deno.test("Hub.run() relays presence changes to the room's other users, not in big rooms", async () => {
  const { hub, flusher, connect } = setup(2);
  const small = [connect({ user: "a" }), connect({ user: "b" })];
  await hub.run([
    ...small.map((m) => ({ type: "register" as const, client: m.client })),
    { type: "deliver", event: { type: "user_joined", room: "lobby", user: "b" } },
  ]);
  flusher.flushAll();
  assert.deepEqual(small[0]!.socket.eventsOf("user_joined"), [
    { type: "user_joined", room: "lobby", user: "b" },
  ]);
  assert.deepEqual(small[1]!.socket.eventsOf("user_joined"), []);
  // With 3 members the room is over the limit of 2: nobody hears about "d".
  const third = connect({ user: "c" });
  await hub.run([
    { type: "register", client: third.client },
    { type: "deliver", event: { type: "user_joined", room: "lobby", user: "d" } },
    { type: "deliver", event: { type: "user_left", room: "lobby", user: "d" } },
  ]);
  flusher.flushAll();
  for (const member of [...small, third]) {
    assert.ok(!member.socket.events.some((e) => e.user === "d"));
  }
});

Deno.test("Hub.run() relays typing to other members only and drops it under pressure", async () => {
  const { hub, flusher, connect } = setup();
  const typer = connect({ user: "typer" });
  const reader = connect({ user: "reader" });
  const busy = connect({ user: "busy", outboxMessages: 4 });
  await hub.run([
    { type: "register", client: typer.client },
    { type: "register", client: reader.client },
    { type: "register", client: busy.client },
  ]);
  flusher.flushAll();
  // Fill "busy" past half its outbox without flushing.
  busy.client.enqueue({ text: "{}", bytes: 2 });
  busy.client.enqueue({ text: "{}", bytes: 2 });
  await hub.run([{ type: "deliver", event: { type: "typing", room: "lobby", user: "typer" } }]);
  flusher.flushAll();
  assert.deepEqual(reader.socket.eventsOf("typing"), [
    { type: "typing", room: "lobby", user: "typer" },
  ]);
  assert.deepEqual(typer.socket.eventsOf("typing"), []);
  assert.deepEqual(busy.socket.eventsOf("typing"), []);
  assert.equal(busy.client.active, true);
});

Deno.test("Hub.run() closes a client whose outbox overflows and keeps serving the others", async () => {
  const { hub, flusher, connect } = setup();
  // No grace: the client counts as lagging from the start, so passing its bound closes it.
  const slow = connect({ user: "slow", outboxMessages: 8, lagGraceMs: 0 });
  const fast = connect({ user: "fast" });
  await hub.run([
    { type: "register", client: slow.client },
    { type: "register", client: fast.client },
  ]);
  const events: HubEvent[] = [];
  // Nothing flushes in between: the burst passes the bound and drops "slow".
  for (let id = 1; id <= 40; id++) events.push(deliver(roomMessage(id)));
  events.push({ type: "unregister", client: slow.client });
  await hub.run(events);
  flusher.flushAll();
  assert.deepEqual(slow.socket.closedWith, { code: 4008, reason: "Slow consumer" });
  assert.deepEqual(
    fast.socket.eventsOf("message").map((m) => m.id),
    Array.from({ length: 40 }, (_, i) => i + 1),
  );
  assert.deepEqual(hub.usersIn("lobby"), ["fast"]);
});

Deno.test("Hub.run() reports a failed join and forgets the pending membership", async () => {
  const { hub, flusher, connect } = setup();
  const a = connect({ user: "a" });
  await hub.run([
    { type: "register", client: a.client },
    { type: "join", client: a.client, room: "dev" },
    { type: "join_failed", client: a.client, room: "dev", ref: "j1" },
    deliver(roomMessage(1, "dev")),
  ]);
  flusher.flushAll();
  assert.deepEqual(a.socket.eventsOf("error").map((e) => [e.code, e.ref]), [["internal", "j1"]]);
  assert.deepEqual(a.socket.eventsOf("message"), []);
  assert.ok(!a.client.inRoom("dev"));
});

Deno.test("Hub.closeAll() closes every client with 1001 and trySend fails once closed", async () => {
  const { hub, connect } = setup();
  const a = connect({ user: "a" });
  const b = connect({ user: "b" });
  assert.ok(hub.trySend({ type: "register", client: a.client }));
  assert.ok(hub.trySend({ type: "register", client: b.client }));
  hub.close();
  await hub.run();
  hub.closeAll();
  assert.deepEqual(a.socket.closedWith, { code: 1001, reason: "Server shutting down" });
  assert.deepEqual(b.socket.closedWith, { code: 1001, reason: "Server shutting down" });
  assert.equal(hub.trySend({ type: "unregister", client: a.client }), false);
});

Deno.test("Hub.trySend() refuses events when the queue is full instead of growing", () => {
  const hub = new Hub({ defaultRoom: "lobby", presenceEventsMax: 10, queueCapacity: 2 });
  const { client } = fakeClient();
  assert.ok(hub.trySend({ type: "register", client }));
  assert.ok(hub.trySend({ type: "join", client, room: "dev" }));
  assert.equal(hub.trySend({ type: "join", client, room: "dev" }), false);
  assert.equal(hub.queueDepth, 2);
});

Deno.test("Hub.run() lists a room's users in joined sorted, this node's and the cluster's once each", async () => {
  const { hub, flusher, connect } = setup();
  // Joined in an order that is not alphabetical.
  const carol = connect({ user: "carol" });
  const alice = connect({ user: "alice" });
  const bob = connect({ user: "bob" });
  const joinDev = (client: typeof carol, users?: string[]): HubEvent[] => [
    { type: "join", client: client.client, room: "dev" },
    {
      type: "join_ready",
      client: client.client,
      room: "dev",
      replay: [],
      lastId: 0,
      ...(users === undefined ? {} : { users }),
    },
  ];
  await hub.run([
    ...[carol, alice, bob].map((c): HubEvent => ({ type: "register", client: c.client })),
    ...joinDev(carol),
    ...joinDev(alice),
    // The cluster's presence adds a user on another node, and repeats one of this node's.
    ...joinDev(bob, ["zed", "alice", "dave"]),
  ]);
  flusher.flushAll();
  const joined = (c: typeof carol) => c.socket.eventsOf("joined")[0]!.users;
  assert.deepEqual(joined(carol), ["carol"]);
  assert.deepEqual(joined(alice), ["alice", "carol"]);
  assert.deepEqual(joined(bob), ["alice", "bob", "carol", "dave", "zed"]);
});

Deno.test("Hub.run() calls done once the event is applied, also when it changes nothing", async () => {
  const { hub, flusher, connect } = setup();
  const a = connect({ user: "a" });
  const gone = connect({ user: "gone" });
  const calls: string[] = [];
  // Each done records the room list the client has at that moment: the event is applied first.
  const done = (name: string, client: typeof a.client) => () =>
    calls.push(`${name}:${[...client.rooms].sort().join(",")}`);
  await hub.run([
    { type: "register", client: a.client },
    { type: "join", client: a.client, room: "r" },
    {
      type: "join_ready",
      client: a.client,
      room: "r",
      replay: [],
      lastId: 0,
      done: done("ready", a.client),
    },
    { type: "join", client: a.client, room: "s" },
    { type: "join_failed", client: a.client, room: "s", done: done("failed", a.client) },
    { type: "leave", client: a.client, room: "r", done: done("leave", a.client) },
    // Never registered: nothing changes, and done is still called.
    { type: "leave", client: gone.client, room: "r", done: done("no-op leave", gone.client) },
    {
      type: "join_ready",
      client: gone.client,
      room: "r",
      replay: [],
      lastId: 0,
      done: done("no-op ready", gone.client),
    },
  ]);
  flusher.flushAll();
  assert.deepEqual(calls, [
    "ready:lobby,r",
    "failed:lobby,r",
    "leave:lobby",
    "no-op leave:",
    "no-op ready:",
  ]);
  assert.deepEqual(a.socket.eventsOf("joined").map((event) => event.room), ["r"]);
  assert.deepEqual(a.socket.eventsOf("left").map((event) => event.room), ["r"]);
});
