/**
 * Scale-out with real processes: Parley nodes run as their own `deno run main.ts` processes
 * (`spawnServer`) with `--redis` pointing at a real `redis-server` (`_redis_server.ts`), and the
 * tests talk to them over real WebSockets, as clients of a deployed cluster would.
 *
 * What a cluster must guarantee: room messages and DMs reach every connection on every node once
 * and with one id; a client resumes on another node without a gap or a duplicate, also while
 * sends continue; presence is one entry per user across nodes and a crashed node's users go
 * offline once; retries with the same `ref` on another node are stored once; a Redis crash loses
 * nothing acknowledged and the nodes recover by themselves, presence included; 900 clients on 3
 * nodes see 200 concurrent sends in one order; and nginx balances clients, browsers included,
 * over two nodes that form one chat.
 *
 * Every test starts its own `redis-server` and nodes on free loopback ports and stops them (and
 * nginx) at the end, so files may run in parallel. Waits are on conditions with generous bounds:
 * the machine is shared.
 */
import assert from "node:assert/strict";
import { DEFAULT_REDIS_PREFIX } from "../backends/redis.ts";
import { freePort, RedisServer, type RedisServerOptions } from "./helpers/redis_server.ts";
import {
  type Event,
  rawUpgrade,
  type ServerProcess,
  spawnServer,
  TestSocket,
  writeAll,
} from "./helpers/server.ts";

/** Longest wait for one expected event or state, in milliseconds; generous for a busy machine. */
const WAIT_MS = 20_000;
/** Longest wait for a graceful node stop before it is killed, in milliseconds. */
const STOP_MS = 10_000;
/** Connections opened at once while filling the cluster with clients. */
const OPEN_BATCH = 30;
/** `--presence-ttl` of the crash test, in seconds. */
const PRESENCE_TTL_S = 2;
/** Longest wait for a crashed node's users to be reported gone, in milliseconds: the ttl, one
 * heartbeat period until a sweep notices, and slack for a busy machine. */
const PRESENCE_EXPIRY_MS = PRESENCE_TTL_S * 1000 + 8_000;
/** `--idle-timeout` of the nodes, in seconds; nginx's `proxy_read_timeout` must exceed it. */
const IDLE_TIMEOUT_S = 60;
/** nginx's `proxy_read_timeout`, in seconds: above {@link IDLE_TIMEOUT_S}, so nginx never cuts a
 * quiet connection that Parley still considers alive. */
const PROXY_READ_TIMEOUT_S = 2 * IDLE_TIMEOUT_S;
/** Clients per node in the scale test, and the messages they all receive. */
const SCALE_NODES = 3;
const SCALE_CLIENTS_PER_NODE = 300;
const SCALE_SENDS = 200;
/** Clients that send in the scale test, spread over the nodes. */
const SCALE_SENDERS = 20;

/** Flags of every node: many loopback clients, no rate limit, quiet logs. */
const NODE_FLAGS = [
  "--rate",
  "1000000",
  "--burst",
  "1000000",
  "--max-connections-per-ip",
  "5000",
  "--idle-timeout",
  String(IDLE_TIMEOUT_S),
  "--log-level",
  "warning",
];

function test(name: string, fn: () => Promise<void>) {
  Deno.test({ name, sanitizeOps: true, sanitizeResources: true, sanitizeExit: true, fn });
}

/** A `redis-server` and Parley nodes sharing it; disposing stops the nodes, then Redis. */
class Cluster implements AsyncDisposable {
  readonly redis: RedisServer;
  readonly nodes: ServerProcess[];

  private constructor(redis: RedisServer, nodes: ServerProcess[]) {
    this.redis = redis;
    this.nodes = nodes;
  }

  /** Starts Redis, then `count` nodes with `--redis` and {@link NODE_FLAGS} plus `flags`. */
  static async start(
    count: number,
    options: { flags?: string[]; redis?: RedisServerOptions } = {},
  ): Promise<Cluster> {
    const redis = await RedisServer.start(options.redis);
    const nodes: ServerProcess[] = [];
    const args = ["--redis", redis.url, ...NODE_FLAGS, ...(options.flags ?? [])];
    try {
      // One at a time: starting Deno is CPU-heavy, and the machine is shared.
      for (let i = 0; i < count; i++) nodes.push(await spawnNode(args));
    } catch (error) {
      await Promise.all(nodes.map((node) => node.stop("SIGKILL")));
      await redis.stop();
      throw error;
    }
    return new Cluster(redis, nodes);
  }

  /** The node at `index`; fails loudly instead of returning undefined. */
  node(index: number): ServerProcess {
    const node = this.nodes[index];
    if (node === undefined) throw new Error(`No node ${index}`);
    return node;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await Promise.all(this.nodes.map(stopNode));
    await this.redis.stop();
  }
}

/** Starts a node; when a starved machine kept it from listening in time, tries once more (a
 * node that exits on its own is not retried). */
async function spawnNode(args: string[]): Promise<ServerProcess> {
  try {
    return await spawnServer(args);
  } catch (error) {
    if (!String(error).includes("did not start")) throw error;
    return await spawnServer(args);
  }
}

/** Stops a node gracefully (SIGTERM), killing it if it does not exit within {@link STOP_MS}. */
async function stopNode(node: ServerProcess): Promise<void> {
  const stopped = node.stop("SIGTERM");
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<"late">((resolve) => timer = setTimeout(() => resolve("late"), STOP_MS));
  if (await Promise.race([stopped, late]) === "late") node.child.kill("SIGKILL");
  clearTimeout(timer);
  await stopped;
}

/** The WebSockets of one test; disposing closes every one still open. */
class Sockets implements AsyncDisposable {
  readonly #all: TestSocket[] = [];

  /** Opens a client on `node` as user `name` and waits for its welcome. */
  async open(node: ServerProcess, name: string, protocols?: string): Promise<TestSocket> {
    return await this.openUrl(node.ws({ name }), protocols);
  }

  /** Opens a client on a WebSocket URL and waits for its welcome. */
  async openUrl(url: string, protocols?: string): Promise<TestSocket> {
    const socket = await TestSocket.open(url, protocols === undefined ? {} : { protocols });
    this.#all.push(socket);
    return socket;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await Promise.all(this.#all.map((socket) => socket.close()));
  }
}

/** Chat messages of one room a client received, in order. */
function roomMessages(socket: TestSocket, room: string): Event[] {
  return socket.of("message").filter((event) => event.room === room);
}

/** Ids of a list of messages. */
function ids(messages: Event[]): number[] {
  return messages.map((message) => Number(message.id));
}

/** Sends a frame with `ref` and waits for its `ack` (failing on an `error` for it); the ack. */
async function sendAcked(socket: TestSocket, frame: Record<string, unknown>): Promise<Event> {
  const ref = String(frame.ref);
  socket.send(frame);
  await socket.until(
    (events) => events.some((e) => (e.type === "ack" || e.type === "error") && e.ref === ref),
    WAIT_MS,
    `the answer to ref ${ref}`,
  );
  const answer = socket.events.find((e) =>
    (e.type === "ack" || e.type === "error") && e.ref === ref
  );
  assert.equal(answer?.type, "ack", `ref ${ref} answered ${JSON.stringify(answer)}`);
  return answer!;
}

/** Joins a room and waits for `joined`. */
async function join(socket: TestSocket, room: string): Promise<Event> {
  socket.send({ type: "join", room });
  return await socket.next("joined", (event) => event.room === room, WAIT_MS);
}

/** Waits until a client has received a room message with this content. */
async function receive(socket: TestSocket, room: string, content: string): Promise<void> {
  await socket.until(
    (events) =>
      events.some((e) => e.type === "message" && e.room === room && e.content === content),
    WAIT_MS,
    `message "${content}" in ${room}`,
  );
}

/** Asks for a room's presence and returns the users it lists. */
async function presence(socket: TestSocket, room: string, ref: string): Promise<unknown> {
  socket.send({ type: "presence", room, ref });
  const reply = await socket.next("presence", (event) => event.ref === ref, WAIT_MS);
  return reply.users;
}

/** The HTTP status of `GET path` at `base`, or 0 when there is no answer within `ms` (a request
 * that hangs must fail the test, not stall it). */
async function status(base: URL, path: string, ms = WAIT_MS): Promise<number> {
  let conn: Deno.TcpConn | undefined;
  const timer = setTimeout(() => conn?.close(), ms);
  try {
    conn = await Deno.connect({ hostname: base.hostname, port: Number(base.port) });
    const request = `GET ${path} HTTP/1.1\r\nHost: ${base.host}\r\nConnection: close\r\n\r\n`;
    await writeAll(conn, new TextEncoder().encode(request));
    const buffer = new Uint8Array(64);
    let head = "";
    while (!head.includes("\r\n")) {
      const n = await conn.read(buffer);
      if (n === null) break;
      head += new TextDecoder().decode(buffer.subarray(0, n));
    }
    return Number(/^HTTP\/1\.[01] (\d{3})/.exec(head)?.[1] ?? 0);
  } catch {
    return 0;
  } finally {
    clearTimeout(timer);
    try {
      conn?.close();
    } catch {
      // closed by the timer
    }
  }
}

/** Waits for the server to close a client's socket; fails after `ms`. */
async function closedWithin(socket: TestSocket, ms: number): Promise<CloseEvent> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`Timed out waiting for a close`)), ms);
  });
  try {
    return await Promise.race([socket.closed, late]);
  } finally {
    clearTimeout(timer);
  }
}

/** Polls an asynchronous check until it holds; fails after `ms`. */
async function until(what: string, check: () => Promise<boolean>, ms = WAIT_MS): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`Timed out waiting until ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** The presence heartbeat of each node registered in Redis: node id → expiry score (ms). */
async function heartbeats(redis: RedisServer): Promise<Map<string, number>> {
  const key = `${DEFAULT_REDIS_PREFIX}presence:nodes`;
  const { success, stdout } = await new Deno.Command("redis-cli", {
    args: ["-p", String(redis.port), "ZRANGE", key, "0", "-1", "WITHSCORES"],
    stdin: "null",
    stdout: "piped",
    stderr: "null",
  }).output();
  assert.ok(success, "redis-cli answered");
  const lines = new TextDecoder().decode(stdout).trim().split("\n").filter((line) => line !== "");
  const scores = new Map<string, number>();
  for (let i = 0; i + 1 < lines.length; i += 2) scores.set(lines[i]!, Number(lines[i + 1]));
  return scores;
}

test("cluster delivers a room message to members on every node once, with one id", async () => {
  await using cluster = await Cluster.start(2);
  const [a, b] = [cluster.node(0), cluster.node(1)];
  await using sockets = new Sockets();
  const alice = await sockets.open(a, "alice");
  const amy = await sockets.open(a, "amy", "parley.v1");
  const bob = await sockets.open(b, "bob");
  const bea = await sockets.open(b, "bea", "parley.v1");
  const members = [alice, amy, bob, bea];
  for (const member of members) await join(member, "general");

  const fromA = await sendAcked(alice, {
    type: "message",
    room: "general",
    content: "from A",
    ref: "a1",
  });
  const fromB = await sendAcked(bob, {
    type: "message",
    room: "general",
    content: "from B",
    ref: "b1",
  });
  // The last message is a barrier: ordered behind the others on every node, so once it is in,
  // a duplicate of the earlier ones would be in too.
  const last = await sendAcked(bea, { type: "message", room: "general", content: "end", ref: "e" });
  for (const member of members) {
    await receive(member, "general", "end");
    const messages = roomMessages(member, "general");
    assert.deepEqual(messages.map((m) => m.content), ["from A", "from B", "end"]);
    assert.deepEqual(ids(messages), [fromA.id, fromB.id, last.id]);
    assert.deepEqual(messages.map((m) => m.sender), ["alice", "bob", "bea"]);
    assert.deepEqual(messages.map((m) => m.ts), [fromA.ts, fromB.ts, last.ts]);
  }
  assert.ok(Number(fromA.id) < Number(fromB.id) && Number(fromB.id) < Number(last.id));
});

test("cluster delivers a DM to every connection of both users on any node, never a third", async () => {
  await using cluster = await Cluster.start(2);
  const [a, b] = [cluster.node(0), cluster.node(1)];
  await using sockets = new Sockets();
  const aliceOnA = await sockets.open(a, "alice");
  const aliceOnB = await sockets.open(b, "alice", "parley.v1");
  const bob = await sockets.open(a, "bob");
  const carol = await sockets.open(b, "carol");
  const dave = await sockets.open(b, "dave");

  const fromBob = await sendAcked(bob, { type: "direct", to: "alice", content: "hi", ref: "d1" });
  const fromDave = await sendAcked(dave, { type: "direct", to: "alice", content: "yo", ref: "d2" });
  // Barriers, each ordered behind the DMs above on every node: carol's own DM, then one to
  // alice from carol.
  await sendAcked(bob, { type: "direct", to: "carol", content: "for carol", ref: "d3" });
  const fromCarol = await sendAcked(carol, {
    type: "direct",
    to: "alice",
    content: "end",
    ref: "d4",
  });

  for (const tab of [aliceOnA, aliceOnB]) {
    await tab.until((events) => events.some((e) => e.content === "end"), WAIT_MS, "the last DM");
    const directs = tab.of("direct");
    assert.deepEqual(directs.map((d) => [d.from, d.to, d.content]), [
      ["bob", "alice", "hi"],
      ["dave", "alice", "yo"],
      ["carol", "alice", "end"],
    ]);
    assert.deepEqual(ids(directs), [fromBob.id, fromDave.id, fromCarol.id]);
  }
  // The sender's own connections get a copy; carol sees only her conversations.
  await bob.until((events) => events.some((e) => e.content === "for carol"), WAIT_MS, "a copy");
  assert.deepEqual(bob.of("direct").map((d) => d.content), ["hi", "for carol"]);
  await dave.until((events) => events.some((e) => e.content === "yo"), WAIT_MS, "dave's copy");
  assert.deepEqual(dave.of("direct").map((d) => d.content), ["yo"]);
  await carol.until((events) => events.some((e) => e.content === "end"), WAIT_MS, "carol's copy");
  assert.deepEqual(carol.of("direct").map((d) => d.content), ["for carol", "end"]);
});

test("cluster replays exactly the missed messages when a client resumes on another node", async () => {
  await using cluster = await Cluster.start(2);
  const [a, b] = [cluster.node(0), cluster.node(1)];
  await using sockets = new Sockets();
  const sender = await sockets.open(b, "sam");
  await join(sender, "news");
  const reader = await sockets.open(a, "rita", "parley.v1");
  await join(reader, "news");
  for (let i = 1; i <= 3; i++) {
    await sendAcked(sender, { type: "message", room: "news", content: `seen ${i}`, ref: `s${i}` });
  }
  await receive(reader, "news", "seen 3");
  const seen = ids(roomMessages(reader, "news"));
  const k = seen.at(-1)!;
  await reader.close();

  const missed: Event[] = [];
  for (let i = 1; i <= 4; i++) {
    missed.push(
      await sendAcked(sender, {
        type: "message",
        room: "news",
        content: `missed ${i}`,
        ref: `m${i}`,
      }),
    );
  }
  const back = await sockets.open(b, "rita", "parley.v1");
  back.send({ type: "join", room: "news", since: k });
  const joined = await back.next("joined", (event) => event.room === "news", WAIT_MS);
  assert.equal(joined.recovered, true);
  assert.equal(joined.lastId, missed.at(-1)!.id);
  // The replay comes before `joined`, in order, and holds only what was missed.
  const beforeJoined = back.events.slice(0, back.events.indexOf(joined))
    .filter((e) => e.type === "message" && e.room === "news");
  assert.deepEqual(ids(beforeJoined), ids(missed));
  assert.deepEqual(beforeJoined.map((m) => m.content), [1, 2, 3, 4].map((i) => `missed ${i}`));
  // Live delivery continues after the replay, without repeating any of it.
  const live = await sendAcked(sender, {
    type: "message",
    room: "news",
    content: "live",
    ref: "l",
  });
  await receive(back, "news", "live");
  assert.deepEqual(ids(roomMessages(back, "news")), [...ids(missed), Number(live.id)]);
});

test("cluster resume on another node while sends continue has no gap and no duplicate", async () => {
  await using cluster = await Cluster.start(2);
  const [a, b] = [cluster.node(0), cluster.node(1)];
  await using sockets = new Sockets();
  const senders = [await sockets.open(a, "sam"), await sockets.open(b, "sue")];
  for (const sender of senders) await join(sender, "news");
  const reader = await sockets.open(a, "rita");
  await join(reader, "news");
  await sendAcked(senders[0]!, { type: "message", room: "news", content: "seen", ref: "seen" });
  await receive(reader, "news", "seen");
  const k = ids(roomMessages(reader, "news")).at(-1)!;
  await reader.close();
  for (let i = 0; i < 5; i++) {
    await sendAcked(senders[i % 2]!, {
      type: "message",
      room: "news",
      content: `gap ${i}`,
      ref: `g${i}`,
    });
  }

  // Sends from both nodes race the replay read and the join on B.
  const back = await sockets.open(b, "rita", "parley.v1");
  const concurrent = 40;
  for (let i = 0; i < concurrent; i++) {
    senders[i % 2]!.send({ type: "message", room: "news", content: `race ${i}`, ref: `r${i}` });
    if (i === concurrent / 4) back.send({ type: "join", room: "news", since: k });
  }
  const acks: number[] = [];
  for (const sender of senders) {
    await sender.until(
      (events) =>
        events.filter((e) => e.type === "ack" && String(e.ref).startsWith("r")).length >=
          concurrent / 2,
      WAIT_MS,
      "every ack",
    );
    acks.push(...ids(sender.of("ack").filter((e) => String(e.ref).startsWith("r"))));
  }
  const last = Math.max(...acks);
  await back.until(
    (events) => events.some((e) => e.type === "message" && e.id === last),
    WAIT_MS,
    `message ${last}`,
  );
  const joined = back.of("joined").find((event) => event.room === "news");
  assert.equal(joined?.recovered, true);
  // Everything after k, each once, in id order, with nothing skipped (ids are contiguous).
  const received = ids(roomMessages(back, "news"));
  assert.deepEqual(received, Array.from({ length: last - k }, (_, i) => k + 1 + i));
});

test("cluster shows a user once in presence and reports a crashed node's users gone once", async () => {
  await using cluster = await Cluster.start(3, {
    flags: ["--presence-ttl", String(PRESENCE_TTL_S)],
  });
  const [a, b, c] = [cluster.node(0), cluster.node(1), cluster.node(2)];
  await using sockets = new Sockets();
  const carol = await sockets.open(a, "carol");
  const dave = await sockets.open(c, "dave", "parley.v1");
  await sockets.open(a, "alice");
  await sockets.open(b, "alice");
  await sockets.open(b, "bob");
  const everyone = ["alice", "bob", "carol", "dave"];
  let asked = 0;
  await until(
    "presence lists every user once",
    async () =>
      JSON.stringify(await presence(carol, "lobby", `p${++asked}`)) === JSON.stringify(everyone),
  );
  assert.deepEqual(await presence(dave, "lobby", "from C"), everyone);

  // A crash: no goodbye, so only the presence ttl and a surviving node's sweep notice it.
  await b.stop("SIGKILL");
  const crashed = Date.now();
  for (const watcher of [carol, dave]) {
    await watcher.next("user_left", (event) => event.user === "bob", PRESENCE_EXPIRY_MS);
  }
  console.log(`user_left after SIGKILL: ${Date.now() - crashed} ms (ttl ${PRESENCE_TTL_S} s)`);
  // Every surviving node heartbeats, then sweeps, on each tick. Two more heartbeats from each
  // mean each has swept again since: a second report would have been published by then. A
  // message is then a barrier behind anything published meanwhile.
  const seen = await heartbeats(cluster.redis);
  assert.equal(seen.size, 2, "the crashed node is no longer registered");
  const changes = new Map([...seen.keys()].map((node) => [node, 0]));
  await until("every surviving node heartbeat twice", async () => {
    for (const [node, score] of await heartbeats(cluster.redis)) {
      if (score !== seen.get(node)) changes.set(node, (changes.get(node) ?? 0) + 1);
      seen.set(node, score);
    }
    return [...changes.values()].every((count) => count >= 2);
  });
  await sendAcked(carol, { type: "message", content: "barrier", ref: "barrier" });
  for (const watcher of [carol, dave]) {
    await receive(watcher, "lobby", "barrier");
    // alice still has a tab on A: she never left.
    assert.deepEqual(watcher.of("user_left").map((e) => [e.room, e.user]), [["lobby", "bob"]]);
  }
  assert.deepEqual(await presence(carol, "lobby", "after"), ["alice", "carol", "dave"]);
});

test("cluster stores a message retried with the same ref on another node once", async () => {
  await using cluster = await Cluster.start(2);
  const [a, b] = [cluster.node(0), cluster.node(1)];
  await using sockets = new Sockets();
  const watcher = await sockets.open(b, "walt");
  const aliceOnA = await sockets.open(a, "alice");
  const aliceOnB = await sockets.open(b, "alice");
  const frame = { type: "message", content: "once", ref: "retry-1" };
  const first = await sendAcked(aliceOnA, frame);
  const again = await sendAcked(aliceOnB, frame);
  assert.equal(again.id, first.id);
  assert.equal(again.ts, first.ts);
  const dm = { type: "direct", to: "walt", content: "dm once", ref: "retry-2" };
  const firstDm = await sendAcked(aliceOnB, dm);
  const againDm = await sendAcked(aliceOnA, dm);
  assert.equal(againDm.id, firstDm.id);

  const end = await sendAcked(watcher, { type: "message", content: "end", ref: "end" });
  for (const socket of [watcher, aliceOnA, aliceOnB]) {
    await receive(socket, "lobby", "end");
    assert.deepEqual(ids(roomMessages(socket, "lobby")), [first.id, end.id]);
  }
  assert.deepEqual(watcher.of("direct").map((d) => [d.id, d.content]), [[firstDm.id, "dm once"]]);
  watcher.send({ type: "history", room: "lobby", ref: "h" });
  const history = await watcher.next("history", (event) => event.ref === "h", WAIT_MS);
  assert.deepEqual((history.messages as Event[]).map((m) => m.content), ["once", "end"]);
});

test("cluster survives a Redis crash: acked messages kept, overloaded meanwhile, resume after", async () => {
  await using cluster = await Cluster.start(2, {
    redis: { appendonly: true, appendfsync: "always" },
  });
  const [a, b] = [cluster.node(0), cluster.node(1)];
  await using sockets = new Sockets();
  const sender = await sockets.open(a, "sam");
  const reader = await sockets.open(b, "rita", "parley.v1");
  const gina = await sockets.open(b, "gina");
  let asked = 0;
  await until(
    "presence lists gina",
    async () => (await presence(sender, "lobby", `p${++asked}`) as string[]).includes("gina"),
  );
  const before: Event[] = [];
  for (let i = 1; i <= 5; i++) {
    before.push(await sendAcked(sender, { type: "message", content: `before ${i}`, ref: `b${i}` }));
  }
  await receive(reader, "lobby", "before 5");
  const k = ids(roomMessages(reader, "lobby")).at(-1)!;
  assert.equal(k, before.at(-1)!.id);

  await cluster.redis.kill("SIGKILL");
  for (const node of [a, b]) {
    await until("/readyz answers 503", async () => await status(node.url, "/readyz") === 503);
  }
  // gina leaves while her node cannot tell Redis.
  await gina.close();
  sender.send({ type: "message", content: "not stored", ref: "during" });
  const refused = await sender.next("error", (event) => event.ref === "during", WAIT_MS);
  assert.equal(refused.code, "overloaded");

  await cluster.redis.restart();
  for (const node of [a, b]) {
    await until("/readyz answers 200", async () => await status(node.url, "/readyz") === 200);
  }
  // The nodes' subscriptions missed whatever was published during the outage: every client is
  // told to resume.
  for (const socket of [sender, reader]) {
    const closed = await closedWithin(socket, WAIT_MS);
    assert.equal(closed.code, 1011);
    assert.equal(closed.reason, "Resume required");
  }
  assert.equal(sender.of("ack").filter((ack) => ack.ref === "during").length, 0);

  const again = await sockets.open(a, "sam");
  const after: Event[] = [];
  for (let i = 1; i <= 3; i++) {
    after.push(await sendAcked(again, { type: "message", content: `after ${i}`, ref: `a${i}` }));
  }
  // The append-only file kept what was acked; ids continue after it, none reused.
  again.send({ type: "history", room: "lobby", ref: "h" });
  const history = await again.next("history", (event) => event.ref === "h", WAIT_MS);
  const stored = history.messages as Event[];
  assert.deepEqual(ids(stored), [...ids(before), ...ids(after)]);
  assert.ok(!stored.some((m) => m.content === "not stored"));
  assert.ok(Number(after[0]!.id) > k);

  const back = await sockets.open(b, "rita", "parley.v1");
  back.send({ type: "join", room: "lobby", since: k });
  const joined = await back.next("joined", (event) => event.room === "lobby", WAIT_MS);
  assert.equal(joined.recovered, true);
  const replay = back.events.slice(0, back.events.indexOf(joined))
    .filter((e) => e.type === "message");
  assert.deepEqual(ids(replay), ids(after));
  // Presence caught up with what happened during the outage: gina is gone.
  await until(
    "presence no longer lists gina",
    async () => !(await presence(back, "lobby", `p${++asked}`) as string[]).includes("gina"),
  );
  assert.deepEqual(await presence(back, "lobby", "after"), ["rita", "sam"]);
  // Live delivery between the nodes works again, and the refused send can be retried.
  const retried = await sendAcked(again, { type: "message", content: "retried", ref: "during" });
  await receive(back, "lobby", "retried");
  assert.deepEqual(ids(roomMessages(back, "lobby")), [...ids(after), Number(retried.id)]);
});

test("cluster of 3 nodes delivers 200 concurrent sends to 900 clients in one order, once", async () => {
  // Presence events would add ~900²/2 frames that say nothing about message order.
  await using cluster = await Cluster.start(SCALE_NODES, { flags: ["--presence-events-max", "0"] });
  await using sockets = new Sockets();
  const clients: TestSocket[] = [];
  const started = Date.now();
  for (let n = 0; n < SCALE_NODES; n++) {
    const node = cluster.node(n);
    for (let i = 0; i < SCALE_CLIENTS_PER_NODE; i += OPEN_BATCH) {
      const batch = Array.from(
        { length: Math.min(OPEN_BATCH, SCALE_CLIENTS_PER_NODE - i) },
        (_, j) => sockets.open(node, `u${n}-${i + j}`, (i + j) % 2 ? "parley.v1" : undefined),
      );
      clients.push(...await Promise.all(batch));
    }
  }
  const opened = Date.now();
  // Sender j sits on node j % 3, so every node appends concurrently with the others.
  const senders = Array.from(
    { length: SCALE_SENDERS },
    (_, j) => clients[(j % SCALE_NODES) * SCALE_CLIENTS_PER_NODE + Math.floor(j / SCALE_NODES)]!,
  );
  const sent: string[] = [];
  for (let i = 0; i < SCALE_SENDS; i++) {
    const content = `m${i}`;
    senders[i % SCALE_SENDERS]!.send({ type: "message", content, ref: content });
    sent.push(content);
  }
  const acked: number[] = [];
  for (const sender of senders) {
    const mine = sent.filter((_, i) => senders[i % SCALE_SENDERS] === sender);
    await sender.until(
      (events) =>
        events.filter((e) => e.type === "ack" || e.type === "error").length >= mine.length,
      WAIT_MS * 3,
      "every ack",
    );
    const answers = sender.events.filter((e) => e.type === "ack" || e.type === "error");
    assert.deepEqual(answers.map((e) => e.type), mine.map(() => "ack"));
    acked.push(...ids(answers));
  }
  // A barrier behind all 200 on every node.
  await sendAcked(senders[0]!, { type: "message", content: "end", ref: "end" });
  for (const client of clients) {
    await client.until(
      (events) => events.some((e) => e.content === "end"),
      WAIT_MS * 3,
      "the last message",
    );
  }
  const delivered = Date.now();
  const reference = ids(roomMessages(clients[0]!, "lobby")).slice(0, -1);
  assert.equal(reference.length, SCALE_SENDS);
  assert.ok(reference.every((id, i) => i === 0 || id > reference[i - 1]!), "ids increase");
  assert.deepEqual(reference, [...acked].sort((x, y) => x - y));
  for (const client of clients) {
    const messages = roomMessages(client, "lobby");
    assert.deepEqual(ids(messages).slice(0, -1), reference);
    assert.equal(messages.at(-1)?.content, "end");
  }
  assert.deepEqual(
    new Set(roomMessages(clients[0]!, "lobby").map((m) => m.content)),
    new Set([...sent, "end"]),
  );
  console.log(
    `${clients.length} clients opened in ${opened - started} ms; ` +
      `${SCALE_SENDS} sends delivered to all in ${delivered - opened} ms`,
  );
});

test("cluster behind nginx: clients land on both nodes and see one chat", async () => {
  await using cluster = await Cluster.start(2, { flags: ["--log-level", "info"] });
  await using nginx = await Nginx.start(cluster.nodes);
  await using sockets = new Sockets();
  const clients: TestSocket[] = [];
  for (let i = 0; i < 6; i++) {
    clients.push(await sockets.openUrl(nginx.ws({ name: `user${i}` }), "parley.v1"));
  }
  // nginx passed the subprotocol through both ways.
  assert.ok(clients.every((client) => client.socket.protocol === "parley.v1"));
  // Each node logs the connection ids it accepted; every client is on exactly one node.
  const placed = clients.map((client) => {
    const connection = String(client.of("welcome")[0]?.connection);
    return cluster.nodes.filter((node) => node.output().includes(`"connection":"${connection}"`));
  });
  assert.ok(placed.every((nodes) => nodes.length === 1), "each connection on one node");
  for (const node of cluster.nodes) {
    assert.ok(placed.some(([on]) => on === node), `some client on ${node.url.href}`);
  }

  // A browser on a page served through nginx sends nginx's origin; the Host nginx forwards
  // (with its port) must let the node recognise it as its own.
  const browser = await rawUpgrade(new URL(nginx.ws({ name: "browser" })), [
    `Origin: http://127.0.0.1:${nginx.port}`,
  ]);
  browser.conn.close();
  assert.equal(browser.response.status, 101);

  const first = await sendAcked(clients[0]!, { type: "message", content: "hello", ref: "h" });
  const onOther = clients.find((_, i) => placed[i]![0] !== placed[0]![0])!;
  const reply = await sendAcked(onOther, { type: "message", content: "hi back", ref: "r" });
  for (const client of clients) {
    await receive(client, "lobby", "hi back");
    assert.deepEqual(ids(roomMessages(client, "lobby")), [first.id, reply.id]);
  }
});

/** nginx in front of the nodes: its own prefix, config and logs in a temporary directory. */
class Nginx implements AsyncDisposable {
  readonly port: number;
  readonly dir: string;
  readonly #child: Deno.ChildProcess;

  private constructor(port: number, dir: string, child: Deno.ChildProcess) {
    this.port = port;
    this.dir = dir;
    this.#child = child;
  }

  /** Starts nginx balancing round-robin over `nodes` and waits until it proxies `/healthz`. */
  static async start(nodes: ServerProcess[]): Promise<Nginx> {
    const dir = await Deno.makeTempDir({ prefix: "parley-nginx-" });
    const port = freePort();
    const upstreams = nodes.map((node) => `    server ${node.url.host};`).join("\n");
    await Deno.writeTextFile(`${dir}/nginx.conf`, nginxConfig(dir, port, upstreams));
    const child = new Deno.Command("nginx", {
      args: [
        "-p",
        dir,
        "-c",
        `${dir}/nginx.conf`,
        "-e",
        `${dir}/error.log`,
        "-g",
        `daemon off; pid ${dir}/nginx.pid;`,
      ],
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).spawn();
    const nginx = new Nginx(port, dir, child);
    try {
      let exited = false;
      child.status.then(() => exited = true);
      await until("nginx proxies /healthz", async () => {
        if (exited) throw new Error(`nginx exited:\n${await nginx.errors()}`);
        return await status(new URL(`http://127.0.0.1:${port}/`), "/healthz", 2_000) === 200;
      });
    } catch (error) {
      await nginx[Symbol.asyncDispose]();
      throw error;
    }
    return nginx;
  }

  /** `ws://…/ws` through nginx, with query parameters. */
  ws(query: Record<string, string>): string {
    const url = new URL(`ws://127.0.0.1:${this.port}/ws`);
    for (const [key, value] of Object.entries(query)) url.searchParams.set(key, value);
    return url.href;
  }

  /** nginx's error log so far. */
  async errors(): Promise<string> {
    return await Deno.readTextFile(`${this.dir}/error.log`).catch(() => "");
  }

  async [Symbol.asyncDispose](): Promise<void> {
    try {
      this.#child.kill("SIGTERM");
    } catch {
      // already exited
    }
    await this.#child.status;
    await Deno.remove(this.dir, { recursive: true }).catch(() => {});
  }
}

/** The nginx configuration of the test: WebSocket-aware round-robin over the upstreams. */
function nginxConfig(dir: string, port: number, upstreams: string): string {
  return `worker_processes 1;
error_log ${dir}/error.log warn;
events {
  worker_connections 1024;
}
http {
  access_log off;
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  map $http_upgrade $connection_upgrade {
    default upgrade;
    '' close;
  }
  upstream parley {
${upstreams}
  }
  server {
    listen 127.0.0.1:${port};
    location / {
      proxy_pass http://parley;
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $connection_upgrade;
      proxy_set_header Host $http_host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_read_timeout ${PROXY_READ_TIMEOUT_S}s;
      proxy_send_timeout ${PROXY_READ_TIMEOUT_S}s;
    }
  }
}
`;
}
