/**
 * End-to-end tests of the chat features over real sockets: rooms, resuming with `join … since`,
 * private messages, presence and typing, idempotent sends, history paging and the HTTP API.
 *
 * Every test starts its own in-process server on 127.0.0.1 port 0 and talks to it with real
 * WebSockets and `fetch`; tests whose point is durability (resume, stored DMs, retries across a
 * reconnect, paging) run on a real SQLite file in a temporary directory.
 *
 * "Nothing arrived" is never proven by waiting: a test sends a *fence* (a lobby message, which
 * every connection receives) after the thing that must not arrive. Events reach each connection
 * in the order they were published, so once the fence is in, anything published before it would
 * be in too.
 *
 * The last tests are unit tests of `Chat` as a ClientHandler on fake sockets: what it registers
 * and counts for connections that never open or are refused on open.
 */
import assert from "node:assert/strict";
import { type Event, eventually, startTestServer, TestSocket } from "./tests/helpers/server.ts";
import { fakeClient } from "./tests/helpers/fakes.ts";
import { MemoryBroker } from "./backends/broker/memory.ts";
import { Chat } from "./chat.ts";
import { OpeningWatch } from "./server.ts";
import { Hub } from "./hub.ts";
import { FrameParser } from "./message.ts";
import { MemoryPresence } from "./backends/presence/memory.ts";
import { MemoryMessageStore } from "./backends/store/memory.ts";

const sanitized = { sanitizeOps: true, sanitizeResources: true, sanitizeExit: true };

function test(name: string, fn: () => Promise<void>) {
  Deno.test({ name, ...sanitized, fn });
}

/** Flags that lift the per-connection rate limit: these tests send in bursts. */
const UNLIMITED = ["--rate", "1000000", "--burst", "1000000", "--max-connections-per-ip", "1000"];
/** Generous waits: the machine is shared with other test runs. */
const WAIT_MS = 15_000;

let counter = 0;
/** A ref (or content) that no other frame of this test file uses. */
function unique(prefix: string): string {
  return `${prefix}-${++counter}`;
}

/** A temporary directory removed when disposed; declare it before the server that uses it. */
async function tempDir(): Promise<{ path: string; db: string } & AsyncDisposable> {
  const path = await Deno.makeTempDir({ prefix: "parley-chat-test-" });
  return {
    path,
    db: `sqlite:${path}/parley.db`,
    [Symbol.asyncDispose]: () => Deno.remove(path, { recursive: true }),
  };
}

/** Opens a connection as a named user. */
function connect(
  server: { ws(query?: Record<string, string>): string },
  name: string,
  options: { protocols?: string } = {},
): Promise<TestSocket> {
  return TestSocket.open(server.ws({ name }), options);
}

/** Sends a frame with a fresh ref and returns the first event that carries that ref. */
async function ask(socket: TestSocket, frame: Record<string, unknown>): Promise<Event> {
  const ref = unique("ask");
  socket.send({ ...frame, ref });
  let reply: Event | undefined;
  await socket.until(
    (events) => (reply = events.find((event) => event.ref === ref)) !== undefined,
    WAIT_MS,
    `the answer to ${JSON.stringify(frame).slice(0, 80)}`,
  );
  return reply!;
}

/** Joins a room and returns the `joined` reply. */
async function join(socket: TestSocket, room: string, since?: number): Promise<Event> {
  socket.send(since === undefined ? { type: "join", room } : { type: "join", room, since });
  return await socket.next("joined", (event) => event.room === room, WAIT_MS);
}

/** Sends room messages, each with a fresh ref, and returns their acks in sending order. */
async function send(socket: TestSocket, room: string, contents: string[]): Promise<Event[]> {
  const refs = contents.map((content) => {
    const ref = unique("msg");
    socket.send({ type: "message", room, content, ref });
    return ref;
  });
  return await acks(socket, refs);
}

/** Waits for the acks of the given refs (failing on an error for any of them). */
async function acks(socket: TestSocket, refs: string[]): Promise<Event[]> {
  const wanted = new Set(refs);
  const answers = () => socket.events.filter((event) => wanted.has(String(event.ref)));
  await socket.until(
    () => {
      const found = answers();
      return found.some((event) => event.type === "error") ||
        new Set(found.map((event) => event.ref)).size === wanted.size;
    },
    WAIT_MS,
    `acks of ${refs.length} frames`,
  );
  assert.deepEqual(answers().filter((event) => event.type === "error"), []);
  return refs.map((ref) => socket.events.find((e) => e.type === "ack" && e.ref === ref)!);
}

/** Room messages a socket received for one room, in arrival order. */
function inRoom(socket: TestSocket, room: string): Event[] {
  return socket.events.filter((event) => event.type === "message" && event.room === room);
}

/**
 * Sends a lobby message from `via` and waits until every socket in `to` received it; after this,
 * anything published before the fence has reached them too.
 */
async function fence(via: TestSocket, ...to: TestSocket[]): Promise<void> {
  const content = unique("fence");
  via.send({ type: "message", room: "lobby", content });
  for (const socket of to) {
    await socket.until(
      (events) => events.some((event) => event.type === "message" && event.content === content),
      WAIT_MS,
      "the fence message",
    );
  }
}

/** Ids of a list of messages or acks. */
function ids(events: Event[]): number[] {
  return events.map((event) => Number(event.id));
}

/** The integers from `first` to `last`. */
function range(first: number, last: number): number[] {
  return Array.from({ length: Math.max(0, last - first + 1) }, (_, i) => first + i);
}

function assertAscending(values: number[], what: string): void {
  assert.ok(values.every((value, i) => i === 0 || value > values[i - 1]!), `${what} ascend`);
}

// ---------------------------------------------------------------------------------------------
// Rooms

test("join answers joined with the room's lastId and users, and no recovered without since", async () => {
  await using server = await startTestServer(UNLIMITED);
  await using alice = await connect(server, "alice");
  const first = await join(alice, "r");
  assert.deepEqual(first, { type: "joined", room: "r", lastId: 0, users: ["alice"] });
  const sent = await send(alice, "r", ["one", "two", "three"]);
  await using bob = await connect(server, "bob");
  const joined = await join(bob, "r");
  assert.deepEqual(joined, {
    type: "joined",
    room: "r",
    lastId: Math.max(...ids(sent)),
    users: ["alice", "bob"],
  });
  assert.equal("recovered" in joined, false);
  // A plain join replays nothing.
  assert.deepEqual(inRoom(bob, "r"), []);
});

test("a room message reaches every member once and never a connection outside the room", async () => {
  await using server = await startTestServer(UNLIMITED);
  await using alice = await connect(server, "alice");
  await using bob = await connect(server, "bob");
  await using carol = await connect(server, "carol");
  await join(alice, "r");
  await join(bob, "r");
  const content = unique("members-only");
  const [ack] = await send(alice, "r", [content]);
  await fence(alice, alice, bob, carol);
  for (const member of [alice, bob]) {
    const received = inRoom(member, "r");
    assert.equal(received.length, 1);
    assert.deepEqual(
      { id: received[0]!.id, sender: received[0]!.sender, content: received[0]!.content },
      { id: ack!.id, sender: "alice", content },
    );
  }
  assert.deepEqual(inRoom(carol, "r"), []);
  assert.ok(carol.frames.every((frame) => !frame.includes(content)), "carol saw the message");
});

test("leave answers left and the connection gets no more of the room's messages", async () => {
  await using server = await startTestServer(UNLIMITED);
  await using alice = await connect(server, "alice");
  await using bob = await connect(server, "bob");
  await join(alice, "r");
  await join(bob, "r");
  await send(alice, "r", ["before"]);
  await bob.until((events) => events.some((e) => e.content === "before"), WAIT_MS);
  bob.send({ type: "leave", room: "r" });
  assert.deepEqual(await bob.next("left", () => true, WAIT_MS), { type: "left", room: "r" });
  await send(alice, "r", ["after"]);
  await fence(alice, bob);
  assert.deepEqual(inRoom(bob, "r").map((e) => e.content), ["before"]);
  assert.ok(bob.frames.every((frame) => !frame.includes('"after"')));
  // Having left, bob may no longer send there.
  const refused = await ask(bob, { type: "message", room: "r", content: "late" });
  assert.equal(refused.code, "not_member");
});

test("a message to a room the connection has not joined is refused with not_member and its ref", async () => {
  await using server = await startTestServer(UNLIMITED);
  await using alice = await connect(server, "alice");
  await using bob = await connect(server, "bob");
  await join(bob, "r");
  alice.send({ type: "message", room: "r", content: "intruder", ref: "nm-1" });
  const error = await alice.next("error", () => true, WAIT_MS);
  assert.equal(error.code, "not_member");
  assert.equal(error.ref, "nm-1");
  assert.match(String(error.message), /"r"/);
  for (const frame of [{ type: "typing", room: "r" }, { type: "leave", room: "r" }]) {
    assert.equal((await ask(alice, frame)).code, "not_member", frame.type);
  }
  await fence(alice, bob);
  assert.deepEqual(inRoom(bob, "r"), []);
  const history = await ask(bob, { type: "history", room: "r" });
  assert.deepEqual(history.messages, []);
  assert.equal(alice.socket.readyState, WebSocket.OPEN);
});

test("invalid room names are refused with invalid_message naming the room field", async () => {
  await using server = await startTestServer(UNLIMITED);
  await using alice = await connect(server, "alice");
  const bad = ["x".repeat(65), "two words", "a/b", ""];
  for (const room of bad) {
    for (const type of ["join", "leave", "message", "typing", "presence", "history"]) {
      const frame = type === "message" ? { type, room, content: "x" } : { type, room };
      const error = await ask(alice, frame);
      assert.equal(error.type, "error", `${type} ${JSON.stringify(room)}`);
      assert.equal(error.code, "invalid_message");
      assert.match(String(error.message), /"room"/);
    }
  }
  // The longest valid name is accepted, and no bad name became a room.
  const longest = "y".repeat(64);
  assert.equal((await join(alice, longest)).room, longest);
  assert.deepEqual(server.hub.rooms.sort(), ["lobby", longest].sort());
});

test("a connection in several rooms receives each message once, labelled with its room", async () => {
  await using server = await startTestServer(UNLIMITED);
  await using alice = await connect(server, "alice", { protocols: "parley.v1" });
  await using bob = await connect(server, "bob");
  await using carol = await connect(server, "carol");
  const rooms = ["r1", "r2", "r3"];
  for (const room of rooms) {
    await join(alice, room);
    await join(bob, room);
  }
  await join(carol, "r2");
  const sent = new Map<string, Event[]>(rooms.map((room) => [room, []]));
  for (let i = 0; i < 5; i++) {
    for (const room of rooms) sent.get(room)!.push(...await send(bob, room, [`${room}:${i}`]));
  }
  await fence(bob, alice, carol);
  for (const room of rooms) {
    const received = inRoom(alice, room);
    assert.deepEqual(received.map((e) => e.content), range(0, 4).map((i) => `${room}:${i}`));
    assert.deepEqual(ids(received), ids(sent.get(room)!));
  }
  assert.equal(alice.of("message").filter((e) => e.room !== "lobby").length, 15);
  assert.deepEqual(
    carol.of("message").filter((e) => e.room !== "lobby").map((e) => e.content),
    range(0, 4).map((i) => `r2:${i}`),
  );
});

// ---------------------------------------------------------------------------------------------
// Resuming

test("join with since replays every missed message before joined, then live ones, without gap or duplicate", async () => {
  await using dir = await tempDir();
  await using server = await startTestServer([...UNLIMITED, "--store", dir.db]);
  await using bob = await connect(server, "bob");
  await join(bob, "r");
  await using first = await connect(server, "alice", { protocols: "parley.v1" });
  await join(first, "r");
  await send(bob, "r", range(1, 5).map((i) => `seen ${i}`));
  await first.until(() => inRoom(first, "r").length === 5, WAIT_MS, "alice's messages");
  const k = Number(inRoom(first, "r").at(-1)!.id);
  await first.close();

  const missed = await send(bob, "r", range(1, 300).map((i) => `missed ${i}`));
  await using alice = await connect(server, "alice", { protocols: "parley.v1" });
  // Start 100 more sends in chunks, and join while they are being stored and published.
  const live: Event[] = [];
  const sending = (async () => {
    for (let chunk = 0; chunk < 10; chunk++) {
      live.push(...await send(bob, "r", range(1, 10).map((i) => `live ${chunk * 10 + i}`)));
    }
  })();
  await bob.until(() => live.length > 0, WAIT_MS, "the live sends to start");
  alice.send({ type: "join", room: "r", since: k });
  await sending;
  const expected = [...missed, ...live];
  assert.deepEqual(ids(expected), range(k + 1, k + 400));
  await alice.until(() => inRoom(alice, "r").length >= 400, WAIT_MS, "400 messages");
  // One more live message: anything duplicated would have arrived before it.
  const [last] = await send(bob, "r", ["final"]);
  await alice.until((events) => events.some((e) => e.content === "final"), WAIT_MS);

  const received = inRoom(alice, "r");
  assert.deepEqual(ids(received), [...ids(expected), Number(last!.id)]);
  assert.deepEqual(
    received.map((e) => e.content),
    [...range(1, 300).map((i) => `missed ${i}`), ...range(1, 100).map((i) => `live ${i}`), "final"],
  );
  const joinedAt = alice.events.findIndex((e) => e.type === "joined" && e.room === "r");
  const joined = alice.events[joinedAt]!;
  assert.equal(joined.recovered, true);
  assert.deepEqual(joined.users, ["alice", "bob"]);
  const lastId = Number(joined.lastId);
  assert.ok(lastId >= k + 300 && lastId <= k + 400, `lastId ${lastId}`);
  // The replay (everything up to lastId) precedes joined; newer messages follow it.
  const before = alice.events.slice(0, joinedAt).filter((e) => e.type === "message");
  assert.deepEqual(ids(before.filter((e) => e.room === "r")), range(k + 1, lastId));
  const after = alice.events.slice(joinedAt).filter((e) => e.type === "message" && e.room === "r");
  assert.deepEqual(ids(after), [...range(lastId + 1, k + 400), Number(last!.id)]);
});

test("join with since past the retained history answers recovered false and replays nothing", async () => {
  await using dir = await tempDir();
  await using server = await startTestServer([
    ...UNLIMITED,
    "--store",
    dir.db,
    "--history-limit",
    "50",
  ]);
  await using bob = await connect(server, "bob");
  await join(bob, "r");
  await using first = await connect(server, "alice");
  await join(first, "r");
  const [seen] = await send(bob, "r", ["seen"]);
  await first.until(() => inRoom(first, "r").length === 1, WAIT_MS);
  await first.close();
  const missed = await send(bob, "r", range(1, 100).map((i) => `missed ${i}`));

  await using alice = await connect(server, "alice");
  const joined = await join(alice, "r", Number(seen!.id));
  assert.equal(joined.recovered, false);
  assert.equal(joined.lastId, missed.at(-1)!.id);
  const [live] = await send(bob, "r", ["live"]);
  await alice.until((events) => events.some((e) => e.content === "live"), WAIT_MS);
  // No partial replay: the only room message is the live one, after joined.
  assert.deepEqual(inRoom(alice, "r").map((e) => e.id), [live!.id]);
  assert.ok(
    alice.events.findIndex((e) => e.type === "joined") <
      alice.events.findIndex((e) => e.content === "live"),
  );
  // What is left is the newest 50, for the client to page.
  const history = await ask(alice, { type: "history", room: "r", limit: 100 });
  assert.deepEqual(
    ids(history.messages as Event[]),
    range(Number(live!.id) - 49, Number(live!.id)),
  );
});

// ---------------------------------------------------------------------------------------------
// Private messages

test("a direct message reaches every connection of both users and never a third user", async () => {
  await using dir = await tempDir();
  await using server = await startTestServer([...UNLIMITED, "--store", dir.db]);
  await using alice1 = await connect(server, "alice");
  await using alice2 = await connect(server, "alice", { protocols: "parley.v1" });
  await using bob1 = await connect(server, "bob");
  await using bob2 = await connect(server, "bob", { protocols: "parley.v1" });
  await using carol = await connect(server, "carol");
  const content = unique("secret");
  const ack = await ask(alice1, { type: "direct", to: "bob", content });
  assert.equal(ack.type, "ack");
  await fence(alice1, alice1, alice2, bob1, bob2, carol);
  for (const socket of [alice1, alice2, bob1, bob2]) {
    const directs = socket.of("direct");
    assert.equal(directs.length, 1);
    assert.deepEqual(directs[0], {
      type: "direct",
      id: ack.id,
      from: "alice",
      to: "bob",
      content,
      ts: ack.ts,
    });
  }
  assert.ok(carol.frames.every((frame) => !frame.includes(content)), "carol saw the DM");
  assert.deepEqual(carol.of("direct"), []);
  // Stored: it is in the conversation's history.
  const history = await ask(bob1, { type: "history", with: "alice" });
  assert.deepEqual(history.messages, [alice1.of("direct")[0]]);
});

test("both users read the same DM conversation from history, with ascending ids of its own", async () => {
  await using dir = await tempDir();
  await using server = await startTestServer([...UNLIMITED, "--store", dir.db]);
  await using alice = await connect(server, "alice");
  await using bob = await connect(server, "bob");
  await using carol = await connect(server, "carol");
  const sent: Event[] = [];
  for (let i = 0; i < 4; i++) {
    sent.push(await ask(alice, { type: "direct", to: "bob", content: `a→b ${i}` }));
    sent.push(await ask(bob, { type: "direct", to: "alice", content: `b→a ${i}` }));
    // Traffic elsewhere must not disturb this conversation's ids.
    await ask(alice, { type: "direct", to: "carol", content: `a→c ${i}` });
    await send(carol, "lobby", [`lobby ${i}`]);
  }
  const fromAlice = await ask(alice, { type: "history", with: "bob" });
  const fromBob = await ask(bob, { type: "history", with: "alice" });
  assert.equal(fromAlice.with, "bob");
  assert.equal(fromBob.with, "alice");
  assert.deepEqual(fromAlice.messages, fromBob.messages);
  assert.equal(fromAlice.hasMore, false);
  const messages = fromAlice.messages as Event[];
  assert.deepEqual(ids(messages), ids(sent));
  assertAscending(ids(messages), "DM ids");
  assert.deepEqual(
    messages.map((m) => [m.from, m.to, m.content]),
    range(0, 3).flatMap((i) => [["alice", "bob", `a→b ${i}`], ["bob", "alice", `b→a ${i}`]]),
  );
  // Each conversation counts on its own: alice–carol has as many ids as messages.
  const withCarol = await ask(carol, { type: "history", with: "alice" });
  assert.deepEqual(ids(withCarol.messages as Event[]), range(1, 4));
  assert.deepEqual(ids(messages), range(1, 8));
});

test("a direct message to an offline user is stored and shows in that user's history later", async () => {
  await using dir = await tempDir();
  await using server = await startTestServer([...UNLIMITED, "--store", dir.db]);
  await using alice = await connect(server, "alice");
  const content = unique("while you were out");
  const ack = await ask(alice, { type: "direct", to: "bob", content });
  assert.equal(ack.type, "ack");
  assert.equal(server.hub.connectionsOf("bob"), 0);
  await using bob = await connect(server, "bob");
  const history = await ask(bob, { type: "history", with: "alice" });
  assert.deepEqual(history.messages, [
    { type: "direct", id: ack.id, from: "alice", to: "bob", content, ts: ack.ts },
  ]);
  // Nothing is pushed on connect: the offline DM is found through history only.
  assert.deepEqual(bob.of("direct"), []);
});

// ---------------------------------------------------------------------------------------------
// Presence and typing

test("user_joined and user_left mark a user's first tab entering and last tab leaving a room", async () => {
  await using server = await startTestServer(UNLIMITED);
  await using bob = await connect(server, "bob");
  await join(bob, "r");
  const tabs = [
    await connect(server, "alice"),
    await connect(server, "alice"),
    await connect(server, "alice"),
  ];
  const [tab1, tab2, tab3] = tabs as [TestSocket, TestSocket, TestSocket];
  try {
    const aliceEvents = (type: string) =>
      bob.of(type).filter((e) => e.room === "r" && e.user === "alice");
    await join(tab1, "r");
    await bob.next("user_joined", (e) => e.room === "r" && e.user === "alice", WAIT_MS);
    for (const tab of [tab2, tab3]) {
      assert.deepEqual((await join(tab, "r")).users, ["alice", "bob"]);
    }
    // dave's arrival is announced after anything the later tabs could have caused.
    await using dave = await connect(server, "dave");
    await join(dave, "r");
    await bob.next("user_joined", (e) => e.room === "r" && e.user === "dave", WAIT_MS);
    assert.equal(aliceEvents("user_joined").length, 1);
    const { ref: _, ...presence } = await ask(bob, { type: "presence", room: "r" });
    assert.deepEqual(presence, {
      type: "presence",
      room: "r",
      users: ["alice", "bob", "dave"],
      count: 3,
    });
    // Tabs go one by one: a leave frame, a closed socket; alice stays while one tab is left.
    tab1.send({ type: "leave", room: "r" });
    await tab1.next("left", () => true, WAIT_MS);
    await tab2.close();
    await eventually(() => server.hub.connectionsOf("alice") === 2, WAIT_MS, "tab 2 to leave");
    dave.send({ type: "leave", room: "r" });
    await bob.next("user_left", (e) => e.room === "r" && e.user === "dave", WAIT_MS);
    assert.deepEqual(aliceEvents("user_left"), []);
    assert.deepEqual((await ask(bob, { type: "presence", room: "r" })).users, ["alice", "bob"]);
    tab3.send({ type: "leave", room: "r" });
    await bob.next("user_left", (e) => e.room === "r" && e.user === "alice", WAIT_MS);
    await fence(dave, bob);
    assert.equal(aliceEvents("user_left").length, 1);
    assert.deepEqual((await ask(bob, { type: "presence", room: "r" })).users, ["bob"]);
    // The announcements go to other users only.
    for (const tab of [tab1, tab3]) {
      assert.deepEqual(tab.events.filter((e) => e.user === "alice" && e.room === "r"), []);
    }
  } finally {
    await Promise.all(tabs.map((tab) => tab.close()));
  }
});

test("presence answers room, users and count, listing a user with three tabs once", async () => {
  await using server = await startTestServer(UNLIMITED);
  await using bob = await connect(server, "bob");
  await using tab1 = await connect(server, "alice");
  await using tab2 = await connect(server, "alice");
  await using tab3 = await connect(server, "alice");
  await join(bob, "r");
  const joins = [];
  for (const tab of [tab1, tab2, tab3]) joins.push(await join(tab, "r"));
  assert.deepEqual(joins.map((j) => j.users), [
    ["alice", "bob"],
    ["alice", "bob"],
    ["alice", "bob"],
  ]);
  tab1.send({ type: "presence", room: "r" });
  assert.deepEqual(await tab1.next("presence", () => true, WAIT_MS), {
    type: "presence",
    room: "r",
    users: ["alice", "bob"],
    count: 2,
  });
  // Any room may be asked about, also one nobody is in.
  bob.send({ type: "presence", room: "empty" });
  assert.deepEqual(await bob.next("presence", () => true, WAIT_MS), {
    type: "presence",
    room: "empty",
    users: [],
    count: 0,
  });
});

test("typing reaches the room's other users only and is never stored", async () => {
  await using server = await startTestServer(UNLIMITED);
  await using alice1 = await connect(server, "alice");
  await using alice2 = await connect(server, "alice");
  await using bob = await connect(server, "bob");
  await using carol = await connect(server, "carol");
  for (const socket of [alice1, alice2, bob]) await join(socket, "r");
  await send(bob, "r", ["hello"]);
  const before = await ask(bob, { type: "history", room: "r" });
  alice1.send({ type: "typing", room: "r" });
  assert.deepEqual(await bob.next("typing", () => true, WAIT_MS), {
    type: "typing",
    room: "r",
    user: "alice",
  });
  // Published after the typing hint, so delivered after it wherever the hint went.
  await send(alice1, "r", ["typed"]);
  await fence(alice1, alice1, alice2, bob, carol);
  for (const socket of [alice1, alice2, carol]) assert.deepEqual(socket.of("typing"), []);
  assert.equal(bob.of("typing").length, 1);
  const after = await ask(bob, { type: "history", room: "r" });
  assert.deepEqual(
    (after.messages as Event[]).map((m) => m.content),
    [...(before.messages as Event[]).map((m) => m.content), "typed"],
  );
});

test("--presence-events-max 1 suppresses user_joined in a room of two", async () => {
  for (const [flags, announced] of [[[], true], [["--presence-events-max", "1"], false]] as const) {
    await using server = await startTestServer([...UNLIMITED, ...flags]);
    await using alice = await connect(server, "alice");
    await using bob = await connect(server, "bob");
    await join(alice, "r");
    await join(bob, "r");
    // bob's message is published after his presence change, so it arrives after it.
    await send(bob, "r", ["hi"]);
    await alice.until((events) => events.some((e) => e.content === "hi"), WAIT_MS);
    const seen = alice.of("user_joined").filter((e) => e.room === "r" && e.user === "bob");
    assert.equal(seen.length, announced ? 1 : 0, `with flags ${JSON.stringify(flags)}`);
  }
});

// ---------------------------------------------------------------------------------------------
// Idempotent sends

test("a repeated ref is stored once and acked with the same id, also after a reconnect", async () => {
  await using dir = await tempDir();
  await using server = await startTestServer([...UNLIMITED, "--store", dir.db]);
  await using bob = await connect(server, "bob");
  await using first = await connect(server, "alice");
  const frames = [
    { type: "message", room: "lobby", content: "once", ref: "retry-1" },
    { type: "direct", to: "bob", content: "dm once", ref: "retry-2" },
  ];
  const original: Event[] = [];
  for (const frame of frames) {
    first.send(frame);
    first.send(frame);
    await first.until(
      (events) => events.filter((e) => e.ref === frame.ref).length === 2,
      WAIT_MS,
      "two acks",
    );
    const [ack, again] = first.events.filter((e) => e.ref === frame.ref);
    assert.equal(ack!.type, "ack");
    assert.deepEqual(again, ack);
    original.push(ack!);
  }
  await first.close();
  await using alice = await connect(server, "alice");
  for (const [i, frame] of frames.entries()) {
    alice.send(frame);
    assert.deepEqual(await alice.next("ack", (e) => e.ref === frame.ref, WAIT_MS), original[i]);
  }
  await fence(alice, bob);
  assert.deepEqual(bob.of("message").filter((e) => e.content === "once").map((e) => e.id), [
    original[0]!.id,
  ]);
  assert.deepEqual(ids(bob.of("direct")), [Number(original[1]!.id)]);
  const lobby = await ask(bob, { type: "history", room: "lobby" });
  assert.equal((lobby.messages as Event[]).filter((m) => m.content === "once").length, 1);
  const dms = await ask(bob, { type: "history", with: "alice" });
  assert.deepEqual(ids(dms.messages as Event[]), [Number(original[1]!.id)]);
});

test("the same ref from two users stores two messages", async () => {
  await using server = await startTestServer(UNLIMITED);
  await using alice = await connect(server, "alice");
  await using bob = await connect(server, "bob");
  alice.send({ type: "message", content: "from alice", ref: "same" });
  const fromAlice = await alice.next("ack", (e) => e.ref === "same", WAIT_MS);
  bob.send({ type: "message", content: "from bob", ref: "same" });
  const fromBob = await bob.next("ack", (e) => e.ref === "same", WAIT_MS);
  assert.notEqual(fromAlice.id, fromBob.id);
  const history = await ask(alice, { type: "history", room: "lobby" });
  assert.deepEqual((history.messages as Event[]).map((m) => [m.id, m.sender, m.content]), [
    [fromAlice.id, "alice", "from alice"],
    [fromBob.id, "bob", "from bob"],
  ]);
});

// ---------------------------------------------------------------------------------------------
// History

test("history pages through 120 messages with before, after and limit", async () => {
  await using dir = await tempDir();
  await using server = await startTestServer([...UNLIMITED, "--store", dir.db]);
  await using alice = await connect(server, "alice");
  await join(alice, "r");
  const all = ids(await send(alice, "r", range(1, 120).map((i) => `m${i}`)));
  assertAscending(all, "acked ids");
  const page = async (bounds: Record<string, number>) => {
    const reply = await ask(alice, { type: "history", room: "r", ...bounds });
    assert.equal(reply.type, "history", JSON.stringify(reply));
    assert.equal(reply.room, "r");
    const messages = reply.messages as Event[];
    for (const m of messages) assert.equal(m.content, `m${all.indexOf(Number(m.id)) + 1}`);
    return { ids: ids(messages), hasMore: reply.hasMore };
  };
  // Without bounds: the newest 50, ascending.
  assert.deepEqual(await page({}), { ids: all.slice(-50), hasMore: true });
  // Backwards to the start.
  const back: number[][] = [];
  let before: number | undefined;
  while (back.length < 10) {
    const { ids: got, hasMore } = await page(before === undefined ? {} : { before });
    back.unshift(got);
    if (!hasMore) break;
    before = got[0];
  }
  assert.deepEqual(back.map((p) => p.length), [20, 50, 50]);
  assert.deepEqual(back.flat(), all);
  // Forwards from the start.
  const forward: number[][] = [];
  let after = 0;
  while (forward.length < 10) {
    const { ids: got, hasMore } = await page({ after });
    forward.push(got);
    if (!hasMore) break;
    after = got.at(-1)!;
  }
  assert.deepEqual(forward.map((p) => p.length), [50, 50, 20]);
  assert.deepEqual(forward.flat(), all);
  // Page sizes at the bounds.
  assert.deepEqual(await page({ limit: 1 }), { ids: all.slice(-1), hasMore: true });
  assert.deepEqual(await page({ limit: 100 }), { ids: all.slice(-100), hasMore: true });
  assert.deepEqual(await page({ after: all[0]!, limit: 1 }), { ids: [all[1]], hasMore: true });
  assert.deepEqual(await page({ before: all[1]!, limit: 100 }), { ids: [all[0]], hasMore: false });
  for (const bad of [{ limit: 101 }, { limit: 0 }, { before: 5, after: 1 }, { before: -1 }]) {
    const error = await ask(alice, { type: "history", room: "r", ...bad });
    assert.equal(error.code, "invalid_message", JSON.stringify(bad));
    assert.match(String(error.message), new RegExp(`"${Object.keys(bad)[0]}"`));
  }
});

// ---------------------------------------------------------------------------------------------
// HTTP API

const API_KEY = "test-api-key-0123456789";

test("GET /api/rooms/{room}/messages returns the same pages as socket history", async () => {
  await using server = await startTestServer(UNLIMITED);
  await using alice = await connect(server, "alice");
  await join(alice, "r");
  const all = ids(await send(alice, "r", range(1, 30).map((i) => `m${i}`)));
  const queries: Record<string, number>[] = [
    {},
    { limit: 10 },
    { before: all[15]!, limit: 10 },
    { after: all[3]!, limit: 7 },
    { after: all[25]! },
    { before: all[2]! },
  ];
  for (const query of queries) {
    const url = new URL("api/rooms/r/messages", server.url);
    for (const [key, value] of Object.entries(query)) url.searchParams.set(key, String(value));
    const response = await fetch(url);
    assert.equal(response.status, 200);
    assert.match(response.headers.get("content-type") ?? "", /^application\/json/);
    const body = await response.json();
    const socket = await ask(alice, { type: "history", room: "r", ...query });
    assert.ok(body.messages.length > 0, JSON.stringify(query));
    assert.deepEqual(body, { room: "r", messages: socket.messages, hasMore: socket.hasMore });
  }
});

test("GET /api/rooms/{room}/messages answers bad parameters with 400 and a JSON error code", async () => {
  await using server = await startTestServer(UNLIMITED);
  const bad = [
    "r/messages?before=abc",
    "r/messages?after=-1",
    "r/messages?limit=0",
    "r/messages?limit=101",
    "r/messages?limit=ten",
    "r/messages?before=5&after=1",
    "r/messages?before=1.5",
    "a%2Fb/messages",
    "two%20words/messages",
    `${"x".repeat(65)}/messages`,
  ];
  for (const path of bad) {
    const response = await fetch(new URL(`api/rooms/${path}`, server.url));
    assert.equal(response.status, 400, path);
    assert.match(response.headers.get("content-type") ?? "", /^application\/json/);
    const body = await response.json();
    assert.equal(body.error.code, "invalid_message", path);
    assert.equal(typeof body.error.message, "string");
  }
  const fine = await fetch(new URL("api/rooms/r/messages?limit=100", server.url));
  assert.deepEqual(await fine.json(), { room: "r", messages: [], hasMore: false });
});

test("GET /api/rooms/{room}/presence lists the room's online users once each", async () => {
  await using server = await startTestServer(UNLIMITED);
  await using alice1 = await connect(server, "alice");
  await using alice2 = await connect(server, "alice");
  await using bob = await connect(server, "bob");
  for (const socket of [alice1, alice2, bob]) await join(socket, "r");
  const presence = async (room: string) => {
    const response = await fetch(new URL(`api/rooms/${room}/presence`, server.url));
    assert.equal(response.status, 200);
    return await response.json();
  };
  assert.deepEqual(await presence("r"), { room: "r", users: ["alice", "bob"], count: 2 });
  assert.deepEqual(await presence("nobody-here"), { room: "nobody-here", users: [], count: 0 });
  bob.send({ type: "leave", room: "r" });
  await bob.next("left", () => true, WAIT_MS);
  assert.deepEqual(await presence("r"), { room: "r", users: ["alice"], count: 1 });
  const bad = await fetch(new URL("api/rooms/a%2Fb/presence", server.url));
  assert.equal(bad.status, 400);
  assert.equal((await bad.json()).error.code, "invalid_message");
});

test("POST /api/rooms/{room}/messages with the API key stores, delivers live and honours ref", async () => {
  await using dir = await tempDir();
  await using server = await startTestServer([
    ...UNLIMITED,
    "--store",
    dir.db,
    "--api-key",
    API_KEY,
  ]);
  await using bob = await connect(server, "bob");
  await join(bob, "r");
  const post = (body: unknown) =>
    fetch(new URL("api/rooms/r/messages", server.url), {
      method: "POST",
      headers: { authorization: `Bearer ${API_KEY}`, "content-type": "application/json" },
      body: JSON.stringify(body),
    });
  const response = await post({ content: "deploy done", sender: "ci", ref: "job-1" });
  assert.equal(response.status, 201);
  const stored = await response.json();
  assert.equal(stored.type, "message");
  assert.equal(stored.room, "r");
  assert.equal(stored.sender, "ci");
  assert.equal(stored.content, "deploy done");
  assert.ok(Number.isInteger(stored.id));
  assert.equal(new Date(stored.ts).toISOString(), stored.ts);
  assert.deepEqual(await bob.next("message", (e) => e.room === "r", WAIT_MS), stored);
  // A retry with the same ref answers the original and stores and delivers nothing new.
  const retry = await post({ content: "deploy done", sender: "ci", ref: "job-1" });
  assert.equal(retry.status, 201);
  assert.deepEqual(await retry.json(), stored);
  await fence(bob, bob);
  assert.deepEqual(inRoom(bob, "r"), [stored]);
  const history = await (await fetch(new URL("api/rooms/r/messages", server.url))).json();
  assert.deepEqual(history.messages, [stored]);
  // Bad bodies are 400s with a code.
  for (const body of [{ content: "", sender: "ci" }, { content: "x" }, "not an object"]) {
    const refused = await post(body);
    assert.equal(refused.status, 400, JSON.stringify(body));
    assert.equal((await refused.json()).error.code, "invalid_message");
  }
});

test("POST /api/rooms/{room}/messages is 401 with a wrong key and 404 without --api-key", async () => {
  const body = JSON.stringify({ content: "x", sender: "ci" });
  {
    await using server = await startTestServer([...UNLIMITED, "--api-key", API_KEY]);
    const url = new URL("api/rooms/r/messages", server.url);
    for (
      const headers of [{ authorization: `Bearer ${API_KEY}x` }, {}, { authorization: API_KEY }]
    ) {
      const response = await fetch(url, { method: "POST", headers, body });
      assert.equal(response.status, 401, JSON.stringify(headers));
      assert.equal((await response.json()).error.code, "unauthorized");
    }
    const history = await (await fetch(url)).json();
    assert.deepEqual(history.messages, []);
  }
  {
    await using server = await startTestServer(UNLIMITED);
    const response = await fetch(new URL("api/rooms/r/messages", server.url), {
      method: "POST",
      headers: { authorization: `Bearer ${API_KEY}` },
      body,
    });
    assert.equal(response.status, 404);
    assert.equal(typeof (await response.json()).error.code, "string");
  }
});

/** A Chat over memory backends, counting what its observer hears. */
function chatWith(queueCapacity: number) {
  const hub = new Hub({ defaultRoom: "lobby", presenceEventsMax: 1000, queueCapacity });
  const counts = { opened: 0, closed: 0 };
  const chat = new Chat({
    hub,
    store: new MemoryMessageStore({ historyLimit: 100, historyDays: 0 }),
    broker: new MemoryBroker(),
    presence: new MemoryPresence(),
    parser: new FrameParser({ maxContentChars: 100 }),
    defaultRoom: "lobby",
    openMode: true,
    outboxMessages: 16,
    observer: {
      opened: () => counts.opened++,
      closed: () => counts.closed++,
    },
  });
  const connect = (openTimeoutMs = 10_000) =>
    fakeClient({ handler: chat, connecting: true, opening: new OpeningWatch(openTimeoutMs) });
  return { hub, chat, counts, connect };
}

test("Chat neither registers nor counts a connection that never opened", async () => {
  const { hub, counts, connect } = chatWith(16);
  const { client } = connect(10);
  await new Promise((resolve) => setTimeout(resolve, 40));
  assert.equal(client.active, false);
  assert.deepEqual(counts, { opened: 0, closed: 0 });
  assert.equal(hub.trySend({ type: "unregister", client }), true, "the hub queue is untouched");
  hub.close();
  await hub.run();
});

test("Chat counts a connection refused on open (hub queue full) in and out once", async () => {
  const { hub, counts, connect } = chatWith(1);
  // Fill the hub's queue so the register cannot be queued.
  const filler = connect();
  assert.equal(hub.trySend({ type: "unregister", client: filler.client }), true);
  const { socket, client } = connect();
  socket.open();
  assert.deepEqual(socket.closedWith, { code: 1013, reason: "Server overloaded" });
  assert.equal(client.opened, true);
  assert.deepEqual(counts, { opened: 1, closed: 1 }, "the close event counted it out again");
  filler.socket.open();
  hub.close();
  await hub.run();
});
