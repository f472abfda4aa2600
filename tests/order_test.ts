/**
 * System tests of per-connection order: the frames of one connection take effect in the order
 * they were sent, whatever the store's latency, and one connection's slow frame holds up only
 * that connection.
 *
 * One script of pipelined frames (joins each followed by a message, a message followed by a
 * history, join → message → leave → message) is sent back to back, without waiting for any
 * answer, by three kinds of client: Deno's WebSocket, a Python `websockets` client
 * (`tests/clients/pipeline.py`) and a raw TCP socket that writes every frame in one write. It
 * runs against the memory, SQLite and Redis stores; Redis tests start their own `redis-server`.
 *
 * A stuck store is made by stopping `redis-server` with SIGSTOP: nothing is timed, the test
 * checks what was answered while the store could not answer.
 */
import assert from "node:assert/strict";
import { MAX_QUEUED_FRAMES } from "../chat.ts";
import { RedisServer } from "./helpers/redis_server.ts";
import {
  clientFrame,
  closeCode,
  type Event,
  rawUpgrade,
  readServerFrames,
  startTestServer,
  TestSocket,
  writeAll,
} from "./helpers/server.ts";

const sanitized = { sanitizeOps: true, sanitizeResources: true, sanitizeExit: true };

/** Flags that lift the per-connection rate limit: these tests send in bursts. */
const UNLIMITED = ["--rate", "1000000", "--burst", "1000000"];
/** Generous waits: the machine is shared with other test runs. */
const WAIT_MS = 20_000;
/** Rooms joined, each followed at once by a message, in one script. */
const PIPELINED_JOINS = 20;
/** The interpreter with Debian's `websockets` package (not whatever `python3` is on PATH). */
const PYTHON = "/usr/bin/python3";
const PIPELINE_CLIENT = new URL("./clients/pipeline.py", import.meta.url).pathname;

/** The reply that completes each frame type; an `error` completes any of them. */
const ANSWERS: Record<string, string> = {
  message: "ack",
  join: "joined",
  leave: "left",
  history: "history",
  ping: "pong",
};

type Frame = Record<string, unknown> & { type: string; ref: string };

/** A store for one test: the `--store` flag's value, and clean-up. */
interface StoreUnderTest extends AsyncDisposable {
  url: string;
}

function memoryStore(): Promise<StoreUnderTest> {
  return Promise.resolve({ url: "memory:", [Symbol.asyncDispose]: () => Promise.resolve() });
}

async function sqliteStore(): Promise<StoreUnderTest> {
  const dir = await Deno.makeTempDir({ prefix: "parley-order-test-" });
  return {
    url: `sqlite:${dir}/parley.db`,
    [Symbol.asyncDispose]: () => Deno.remove(dir, { recursive: true }),
  };
}

async function redisStore(): Promise<StoreUnderTest & { redis: RedisServer }> {
  const redis = await RedisServer.start();
  return { url: redis.url, redis, [Symbol.asyncDispose]: () => redis.stop() };
}

const STORES = { "memory:": memoryStore, SQLite: sqliteStore, Redis: redisStore };

/**
 * The pipelined script, with unique room names under `prefix`, and the check of what one
 * connection received for it.
 */
function script(prefix: string): { frames: Frame[]; check(events: Event[]): void } {
  const frames: Frame[] = [];
  for (let i = 0; i < PIPELINED_JOINS; i++) {
    const room = `${prefix}-pipe${i}`;
    frames.push({ type: "join", room, ref: `join${i}` });
    frames.push({ type: "message", room, content: `hello ${i}`, ref: `msg${i}` });
  }
  const first = `${prefix}-pipe0`;
  frames.push({ type: "message", room: first, content: "then history", ref: "stored" });
  frames.push({ type: "history", room: first, ref: "history" });
  const brief = `${prefix}-brief`;
  frames.push({ type: "join", room: brief, ref: "join-brief" });
  frames.push({ type: "message", room: brief, content: "while in", ref: "inside" });
  frames.push({ type: "leave", room: brief, ref: "leave-brief" });
  frames.push({ type: "message", room: brief, content: "after leaving", ref: "outside" });

  // Each scenario is checked on its own, so a failure names every broken one.
  const check = (events: Event[]) => {
    const at = (ref: string) => {
      const index = events.findIndex((event) => event.ref === ref);
      assert.ok(index >= 0, `an answer to ${ref}`);
      return index;
    };
    const answer = (ref: string) => events[at(ref)]!;
    const failures: string[] = [];
    const scenario = (name: string, body: () => void) => {
      try {
        body();
      } catch (error) {
        failures.push(`${name}: ${String(error).split("\n")[0]}`);
      }
    };
    scenario("join then message", () => {
      for (let i = 0; i < PIPELINED_JOINS; i++) {
        assert.equal(answer(`join${i}`).type, "joined");
        const ack = answer(`msg${i}`);
        assert.equal(
          ack.type,
          "ack",
          `the message after join ${i} is acked: ${JSON.stringify(ack)}`,
        );
        assert.ok(at(`join${i}`) < at(`msg${i}`), `joined ${i} comes before its message's ack`);
        const own = events.filter((event) =>
          event.type === "message" && event.room === `${prefix}-pipe${i}` &&
          event.content === `hello ${i}`
        );
        assert.equal(own.length, 1, `the sender, a member, receives message ${i} once`);
      }
    });
    scenario("message then history", () => {
      const stored = answer("stored");
      assert.equal(stored.type, "ack");
      const history = answer("history");
      assert.equal(history.type, "history");
      const messages = history.messages as Event[];
      assert.deepEqual(
        messages.map((message) => message.content).at(-1),
        "then history",
        "the history holds the message sent before it",
      );
      assert.equal(messages.at(-1)!.id, stored.id);
    });
    scenario("join, message, leave, message", () => {
      assert.equal(answer("join-brief").type, "joined");
      assert.equal(answer("inside").type, "ack", "the message while a member is acked");
      assert.equal(answer("leave-brief").type, "left");
      assert.ok(at("inside") < at("leave-brief"), "the message is acked before the leave");
      const outside = answer("outside");
      assert.equal(outside.type, "error");
      assert.equal(outside.code, "not_member", "the message after the leave is refused");
    });
    assert.deepEqual(failures, []);
  };
  return { frames, check };
}

/** True once every frame of the script has had its final answer. */
function answered(frames: Frame[], events: Event[]): boolean {
  return frames.every((frame) =>
    events.some((event) =>
      event.ref === frame.ref && (event.type === ANSWERS[frame.type] || event.type === "error")
    )
  );
}

/** Sends the script from a Deno WebSocket, back to back, and returns what came back. */
async function viaWebSocket(url: string, frames: Frame[]): Promise<Event[]> {
  await using socket = await TestSocket.open(url, { protocols: "parley.v1" });
  for (const frame of frames) socket.send(frame);
  await socket.until((events) => answered(frames, events), WAIT_MS, "every answer");
  return socket.events;
}

/** Sends the script from the Python client and returns what it printed. */
async function viaPython(url: string, frames: Frame[]): Promise<Event[]> {
  const child = new Deno.Command(PYTHON, {
    args: [PIPELINE_CLIENT, url],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const writer = child.stdin.getWriter();
  await writer.write(new TextEncoder().encode(JSON.stringify(frames)));
  await writer.close();
  const { code, stdout, stderr } = await child.output();
  const err = new TextDecoder().decode(stderr);
  assert.equal(code, 0, `pipeline.py failed:\n${err}`);
  const lines = new TextDecoder().decode(stdout).split("\n").filter((line) => line !== "");
  return lines.map((line) => JSON.parse(line) as Event);
}

/** Sends the script over raw TCP, every frame in one write, and returns what came back. */
async function viaRawSocket(url: string, frames: Frame[]): Promise<Event[]> {
  const { conn, response } = await rawUpgrade(new URL(url));
  try {
    assert.equal(response.status, 101);
    const encoded = frames.map((frame) => clientFrame(JSON.stringify(frame)));
    const bytes = new Uint8Array(encoded.reduce((sum, frame) => sum + frame.length, 0));
    let offset = 0;
    for (const frame of encoded) {
      bytes.set(frame, offset);
      offset += frame.length;
    }
    const written = await conn.write(bytes);
    assert.equal(written, bytes.length, "the whole script went out in one write");
    const events: Event[] = [];
    const decoder = new TextDecoder();
    await readServerFrames(conn, (frame) => {
      if (frame.opcode === 1) events.push(JSON.parse(decoder.decode(frame.payload)));
      return frame.opcode === 8 || answered(frames, events);
    }, response.rest);
    // Close cleanly so the server is not left with a half-open socket.
    await writeAll(conn, clientFrame(new Uint8Array([0x03, 0xe8]), 8));
    const closing = await readServerFrames(conn, (frame) => frame.opcode === 8);
    assert.equal(closing.length > 0 ? closeCode(closing.at(-1)!) : 1000, 1000);
    return events;
  } finally {
    conn.close();
  }
}

const CLIENTS = { WebSocket: viaWebSocket, Python: viaPython, "a raw socket": viaRawSocket };

/** Which clients run the script against which stores. */
const RUNS: [keyof typeof CLIENTS, keyof typeof STORES][] = [
  ["WebSocket", "memory:"],
  ["WebSocket", "SQLite"],
  ["WebSocket", "Redis"],
  ["Python", "SQLite"],
  ["Python", "memory:"],
  ["a raw socket", "memory:"],
  ["a raw socket", "SQLite"],
];

for (const [client, store] of RUNS) {
  Deno.test({
    name: `Pipelined frames from ${client} take effect in the order sent (${store} store)`,
    ...sanitized,
    fn: async () => {
      await using backend = await STORES[store]();
      await using server = await startTestServer(["--store", backend.url, ...UNLIMITED]);
      const { frames, check } = script(`${client.replaceAll(" ", "")}-${store.slice(0, 3)}`);
      const events = await CLIENTS[client](server.ws({ name: "piper" }), frames);
      check(events);
      assert.equal(server.chat.busyConnections, 0, "a drained connection keeps no queue");
    },
  });
}

Deno.test({
  name: "A connection's stuck frame holds up only its own later frames, up to the queue bound",
  ...sanitized,
  fn: async () => {
    await using backend = await redisStore();
    await using server = await startTestServer(["--store", backend.url, ...UNLIMITED]);
    await using slow = await TestSocket.open(server.ws({ name: "slow" }));
    await using other = await TestSocket.open(server.ws({ name: "other" }));
    const pid = await redisPid(backend.redis);
    // The store cannot answer while redis-server is stopped: the history frame is stuck.
    await signal(pid, "STOP");
    let resumed = false;
    try {
      slow.send({ type: "history", room: "lobby", ref: "stuck" });
      const refused = 10;
      for (let i = 0; i < MAX_QUEUED_FRAMES + refused; i++) {
        slow.send({ type: "ping", ref: `slow${i}` });
      }
      other.send({ type: "ping", ref: "other" });
      await other.next("pong", (event) => event.ref === "other", WAIT_MS);
      // Presence events about the other connection may arrive too; answers carry a ref.
      const answers = () => slow.events.filter((event) => event.ref !== undefined);
      // Answered at once, while the store is stopped: the frames past the bound.
      await slow.until(() => answers().length >= refused, WAIT_MS, "the refusals");
      assert.deepEqual(
        answers().map((event) => [event.type, event.code, event.ref]),
        Array.from(
          { length: refused },
          (_, i) => ["error", "overloaded", `slow${MAX_QUEUED_FRAMES + i}`],
        ),
        "only the frames past the bound are answered while the history is stuck",
      );
      assert.equal(server.chat.busyConnections, 1, "only the stuck connection has a queue");
      await signal(pid, "CONT");
      resumed = true;
      await slow.until(
        (events) => events.some((event) => event.ref === `slow${MAX_QUEUED_FRAMES - 1}`),
        WAIT_MS,
        "the last queued pong",
      );
      assert.deepEqual(answers().slice(refused).map((event) => `${event.type}:${event.ref}`), [
        "history:stuck",
        ...Array.from({ length: MAX_QUEUED_FRAMES }, (_, i) => `pong:slow${i}`),
      ]);
      assert.equal(server.chat.busyConnections, 0);
    } finally {
      if (!resumed) await signal(pid, "CONT");
    }
  },
});

/** The process id of a test `redis-server`, from its own INFO. */
async function redisPid(redis: RedisServer): Promise<number> {
  const { success, stdout } = await new Deno.Command("redis-cli", {
    args: ["-p", String(redis.port), "INFO", "server"],
    stdout: "piped",
    stderr: "null",
  }).output();
  assert.ok(success, "redis-cli answered");
  const pid = Number(/process_id:(\d+)/.exec(new TextDecoder().decode(stdout))?.[1]);
  assert.ok(pid > 0, "INFO names the process");
  return pid;
}

/** Stops or resumes a process this test started. */
async function signal(pid: number, name: "STOP" | "CONT"): Promise<void> {
  const { success } = await new Deno.Command("kill", { args: [`-${name}`, String(pid)] }).output();
  assert.ok(success, `kill -${name} ${pid}`);
}
