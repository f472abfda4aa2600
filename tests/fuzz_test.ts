/**
 * Seeded fuzzing of everything a client can send, from `helpers/frame_fuzzer.ts`.
 *
 * - {@link FrameParser.parse} gets 100,000 hostile frames: it never throws, answers every one with
 *   a frame or an error carrying a protocol code, agrees with the generator wherever the generator
 *   knows the verdict, and leaves `Object.prototype` untouched.
 * - A live server gets 5,000 such frames over real sockets from several connections, the local
 *   parser as oracle: every refused frame is answered by an `error` with the same code, every
 *   oversize one by a 1009 close (the peer reconnects and goes on), and a well-behaved client
 *   connected throughout receives every message sent to it. No unhandled rejection may occur.
 * - Transport-level garbage (invalid UTF-8, reserved opcodes, stray continuations) on raw TCP ends
 *   those connections without hurting the server.
 *
 * The seed comes from `PARLEY_FUZZ_SEED` or is random; every failure message names it, so
 * `PARLEY_FUZZ_SEED=<seed> deno test -A tests/fuzz_test.ts` replays the run.
 */
import assert from "node:assert/strict";
import { FrameFuzzer, type FuzzFrame } from "./helpers/frame_fuzzer.ts";
import { fuzzSeed, Random, serialize } from "./helpers/fuzz.ts";
import {
  clientFrame,
  closeCode,
  eventually,
  rawUpgrade,
  readServerFrames,
  startTestServer,
  TestSocket,
  writeAll,
} from "./helpers/server.ts";
import {
  CLIENT_TYPES,
  Close,
  ERROR_CODES as ALL_ERROR_CODES,
  type ErrorCode,
  FrameParser,
  utf8Bytes,
} from "../message.ts";

const SEED = fuzzSeed();
/** Appended to every assertion message: how to replay this run. */
const REPLAY = `(PARLEY_FUZZ_SEED=${SEED})`;

/** Frames fed straight to the parser. */
const PARSER_FRAMES = 100_000;
/** Frames sent to a live server, spread over {@link FUZZ_CONNECTIONS} connections. */
const LIVE_FRAMES = 5_000;
const FUZZ_CONNECTIONS = 4;
/** Messages the well-behaved client sends while the fuzzing goes on. */
const STEADY_MESSAGES = 200;
/** Raw TCP connections that each get one piece of transport-level garbage. */
const RAW_CONNECTIONS = 150;
/** The live server's limits: deep frames (about 20 KB) fit, the oversize ones do not. */
const MAX_FRAME_BYTES = 24 * 1024;
const MAX_CONTENT_CHARS = 1_000;
/** Longest wait for any one answer, in milliseconds; generous for a loaded machine. */
const ANSWER_MS = 15_000;

const ERROR_CODES: ReadonlySet<ErrorCode> = new Set<ErrorCode>(ALL_ERROR_CODES);
const PARSE_CODES: ReadonlySet<string> = new Set([
  "invalid_json",
  "invalid_message",
  "unknown_type",
]);
const CLOSE_CODES: ReadonlySet<number> = new Set(Object.values(Close).map((close) => close.code));
const FRAME_TYPES: ReadonlySet<string> = new Set(["legacy", ...CLIENT_TYPES]);

/** A short, printable excerpt of a frame for failure messages. */
function excerpt(frame: FuzzFrame): string {
  const data = frame.data;
  const text = typeof data === "string"
    ? JSON.stringify(data.slice(0, 160))
    : `<${data.length} bytes>`;
  return `${frame.kind} ${text}`;
}

/** What `Object.prototype` and friends look like; compared before and after. */
function prototypeSnapshot(): string {
  return JSON.stringify([
    Object.getOwnPropertyNames(Object.prototype).sort(),
    Object.getOwnPropertyNames(Array.prototype).sort(),
    Object.getOwnPropertyNames(Function.prototype).sort(),
  ]);
}

/** Asserts no probe key leaked onto plain objects. */
function assertUnpolluted(where: string): void {
  const probe = {} as Record<string, unknown>;
  for (const key of ["polluted", "isAdmin"]) {
    assert.equal(probe[key], undefined, `Object.prototype.${key} was set ${where} ${REPLAY}`);
  }
  assert.equal(typeof probe.toString, "function", `toString was replaced ${where} ${REPLAY}`);
}

Deno.test("the fuzzer is reproducible: one seed, one sequence of frames", () => {
  const a = new FrameFuzzer(new Random(SEED), { maxContentChars: 100, maxFrameBytes: 4096 });
  const b = new FrameFuzzer(new Random(SEED), { maxContentChars: 100, maxFrameBytes: 4096 });
  const c = new FrameFuzzer(new Random(SEED ^ 1), { maxContentChars: 100, maxFrameBytes: 4096 });
  const take = (f: FrameFuzzer) =>
    Array.from({ length: 300 }, () => {
      const frame = f.next();
      return typeof frame.data === "string" ? frame.data : `bytes:${[...frame.data].join(",")}`;
    });
  const first = take(a);
  assert.deepEqual(take(b), first, REPLAY);
  assert.notDeepEqual(take(c), first, REPLAY);
  assert.equal(serialize(JSON.parse('{"a":[1,"x",null]}')), '{"a":[1,"x",null]}');
});

Deno.test("FrameParser.parse survives 100,000 fuzzed frames and never pollutes prototypes", () => {
  const parser = new FrameParser({ maxContentChars: 500 });
  const fuzzer = new FrameFuzzer(new Random(SEED), { maxContentChars: 500 });
  const decoder = new TextDecoder();
  const before = prototypeSnapshot();
  const kinds = new Map<string, { total: number; ok: number }>();
  const started = performance.now();
  for (let i = 0; i < PARSER_FRAMES; i++) {
    const frame = fuzzer.next();
    const text = typeof frame.data === "string" ? frame.data : decoder.decode(frame.data);
    const where = `at frame ${i}: ${excerpt(frame)} ${REPLAY}`;
    let result: ReturnType<FrameParser["parse"]>;
    try {
      result = parser.parse(text);
    } catch (error) {
      throw new assert.AssertionError({ message: `parse threw ${String(error)} ${where}` });
    }
    const stats = kinds.get(frame.kind) ?? { total: 0, ok: 0 };
    stats.total++;
    kinds.set(frame.kind, stats);
    if (result.ok) {
      stats.ok++;
      const parsed = result.frame as Record<string, unknown>;
      assert.ok(FRAME_TYPES.has(String(parsed.type)), `unknown frame type ${where}`);
      assert.equal(Object.getPrototypeOf(parsed), Object.prototype, `odd prototype ${where}`);
      for (const key of ["__proto__", "constructor", "prototype"]) {
        assert.ok(!Object.hasOwn(parsed, key), `key ${key} got through ${where}`);
      }
      if ("content" in parsed) {
        const content = parsed.content;
        assert.ok(
          typeof content === "string" && content.length >= 1 && content.length <= 500,
          `content out of bounds ${where}`,
        );
      }
      assert.ok(
        frame.expect === undefined || frame.expect === "ok",
        `accepted a frame expected to fail with ${frame.expect} ${where}`,
      );
    } else {
      const { code, message, ref } = result.error;
      assert.ok(PARSE_CODES.has(code), `code ${code} ${where}`);
      assert.ok(message.length > 0 && message.length <= 200, `message ${message} ${where}`);
      assert.ok(ref === undefined || (ref.length >= 1 && ref.length <= 64), `ref ${where}`);
      assert.ok(
        frame.expect === undefined || frame.expect === "error" || frame.expect === code,
        `refused with ${code} (${message}), expected ${frame.expect} ${where}`,
      );
    }
    if (i % 5_000 === 0) assertUnpolluted(`after frame ${i}`);
  }
  const seconds = (performance.now() - started) / 1000;
  assertUnpolluted("at the end");
  assert.equal(prototypeSnapshot(), before, `a prototype changed ${REPLAY}`);
  // The generator must reach every corner, or the test proves less than it says.
  for (const kind of ["valid", "wrong_type", "pollution", "unicode", "deep", "truncated"]) {
    assert.ok((kinds.get(kind)?.total ?? 0) > 0, `no ${kind} frames ${REPLAY}`);
  }
  assert.ok((kinds.get("valid")?.ok ?? 0) > 1_000, `too few valid frames ${REPLAY}`);
  console.log(
    `parser fuzz seed=${SEED}: ${PARSER_FRAMES} frames in ${seconds.toFixed(1)} s; ` +
      [...kinds].map(([kind, { total, ok }]) => `${kind} ${ok}/${total}`).join(", "),
  );
});

/** A fuzzing connection: sends one frame, then a ping barrier, and collects what comes back. */
class FuzzPeer {
  readonly socket: WebSocket;
  readonly closed: Promise<CloseEvent>;
  readonly opened: Promise<void>;
  #collected: Record<string, unknown>[] = [];
  #waiting: { ref: string; resolve: (events: Record<string, unknown>[]) => void } | undefined;

  constructor(url: string, batching: boolean) {
    this.socket = new WebSocket(url, batching ? "parley.v1" : []);
    this.socket.binaryType = "arraybuffer";
    this.opened = new Promise((resolve, reject) => {
      this.socket.addEventListener("open", () => resolve(), { once: true });
      this.socket.addEventListener("error", () => reject(new Error("Cannot connect")), {
        once: true,
      });
    });
    this.closed = new Promise((resolve) => this.socket.addEventListener("close", resolve));
    this.socket.addEventListener("message", (event) => {
      const value = JSON.parse(String(event.data));
      for (const item of Array.isArray(value) ? value : [value]) {
        // Keep only what the checks read: errors and the barrier.
        if (item.type === "error") this.#collected.push(item);
        const waiting = this.#waiting;
        if (item.type === "pong" && waiting !== undefined && item.ref === waiting.ref) {
          const { resolve } = waiting;
          this.#waiting = undefined;
          const collected = this.#collected;
          this.#collected = [];
          resolve(collected);
        }
      }
    });
  }

  /** Sends a frame and a barrier; resolves with the errors before the barrier, or the close. */
  exchange(
    data: string | Uint8Array,
    ref: string,
  ): Promise<Record<string, unknown>[] | CloseEvent | "timeout"> {
    const answered = new Promise<Record<string, unknown>[]>((resolve) => {
      this.#waiting = { ref, resolve };
    });
    this.socket.send(data as string);
    this.socket.send(JSON.stringify({ type: "ping", ref }));
    return within(Promise.race([answered, this.closed]), ANSWER_MS);
  }

  async close(): Promise<void> {
    if (this.socket.readyState < 2) this.socket.close();
    await this.closed;
  }
}

/** Resolves with `promise`, or with "timeout" after `ms`. */
async function within<T>(promise: Promise<T>, ms: number): Promise<T | "timeout"> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<"timeout">((resolve) => {
    timer = setTimeout(() => resolve("timeout"), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

Deno.test({
  name: "a live server answers 5,000 fuzzed frames by the protocol and keeps serving a good client",
  sanitizeOps: true,
  sanitizeResources: true,
  async fn() {
    const rejections: string[] = [];
    const onRejection = (event: PromiseRejectionEvent) => {
      event.preventDefault();
      rejections.push(String(event.reason));
    };
    globalThis.addEventListener("unhandledrejection", onRejection);
    try {
      await using server = await startTestServer([
        "--rate",
        "1000000",
        "--burst",
        "1000000",
        "--max-connections-per-ip",
        "1000",
        "--max-frame-bytes",
        String(MAX_FRAME_BYTES),
        "--max-content-chars",
        String(MAX_CONTENT_CHARS),
      ]);
      const parser = new FrameParser({ maxContentChars: MAX_CONTENT_CHARS });
      const random = new Random(SEED);
      const limits = { maxContentChars: MAX_CONTENT_CHARS, maxFrameBytes: MAX_FRAME_BYTES };

      // The well-behaved pair: one sends, one only listens; both stay connected throughout.
      await using observer = await TestSocket.open(server.ws({ name: "observer" }), {
        protocols: "parley.v1",
      });
      await using steady = await TestSocket.open(server.ws({ name: "steady" }));
      let fuzzing = true;
      const steadyLoop = (async () => {
        for (let i = 0; i < STEADY_MESSAGES; i++) {
          steady.send({ type: "message", content: `steady-${i}`, ref: `s${i}` });
          await steady.next("ack", (e) => e.ref === `s${i}`, ANSWER_MS);
          steady.events.length = 0; // keep the test process small
          // Spread the messages over the fuzzing; finish regardless once it is over.
          if (fuzzing) await new Promise((resolve) => setTimeout(resolve, 5));
        }
      })();

      const stats = { frames: 0, errors: 0, closes: 0, reconnects: 0 };
      const started = performance.now();
      const peerLoop = async (index: number) => {
        const fuzzer = new FrameFuzzer(new Random(random.int(0, 0xffff_ffff)), limits);
        const connect = async () => {
          const peer = new FuzzPeer(server.ws({ name: `fuzz-${index}` }), index % 2 === 1);
          await peer.opened;
          return peer;
        };
        let peer = await connect();
        try {
          for (let n = 0; n < LIVE_FRAMES / FUZZ_CONNECTIONS; n++) {
            const frame = fuzzer.next();
            // What the server receives: the WebSocket API sends text as well-formed UTF-8.
            const data = typeof frame.data === "string" ? frame.data.toWellFormed() : frame.data;
            const size = typeof data === "string" ? utf8Bytes(data) : data.length;
            const where = `peer ${index} frame ${n}: ${excerpt(frame)} ${REPLAY}`;
            stats.frames++;
            if (size > MAX_FRAME_BYTES) {
              // Nothing may follow a frame the server closes on: Deno aborts such a peer.
              peer.socket.send(data as string);
              const closed = await within(peer.closed, ANSWER_MS);
              assert.ok(closed !== "timeout", `no close for an oversize frame ${where}`);
              assert.equal(closed.code, 1009, `close code ${where}`);
              stats.closes++;
              stats.reconnects++;
              peer = await connect();
              continue;
            }
            const answer = await peer.exchange(data, `barrier-${n}`);
            assert.ok(answer !== "timeout", `no answer ${where}`);
            if (!Array.isArray(answer)) {
              assert.ok(CLOSE_CODES.has(answer.code), `closed with ${answer.code} ${where}`);
              assert.fail(`closed with ${answer.code} "${answer.reason}" ${where}`);
            }
            for (const error of answer) {
              assert.ok(
                ERROR_CODES.has(error.code as ErrorCode),
                `error code ${error.code} ${where}`,
              );
            }
            stats.errors += answer.length;
            const expected = typeof data === "string"
              ? parser.parse(data)
              : { ok: false as const, error: { code: "unsupported_frame", ref: undefined } };
            if (!expected.ok) {
              const { code, ref } = expected.error;
              assert.ok(
                answer.some((e) => e.code === code && e.ref === ref),
                `expected error ${code} (ref ${ref}) got ${JSON.stringify(answer)} ${where}`,
              );
            }
          }
        } finally {
          await peer.close();
        }
      };
      await Promise.all(Array.from({ length: FUZZ_CONNECTIONS }, (_, i) => peerLoop(i)));
      const seconds = (performance.now() - started) / 1000;
      fuzzing = false;
      await steadyLoop;

      // The good client got every message sent to it, in order, once.
      await observer.until(
        (events) => events.filter((e) => e.sender === "steady").length >= STEADY_MESSAGES,
        ANSWER_MS,
        `the observer to receive ${STEADY_MESSAGES} messages ${REPLAY}`,
      );
      const received = observer.events.filter((e) => e.type === "message" && e.sender === "steady");
      assert.deepEqual(
        received.map((e) => e.content),
        Array.from({ length: STEADY_MESSAGES }, (_, i) => `steady-${i}`),
        REPLAY,
      );
      assert.equal(observer.socket.readyState, WebSocket.OPEN, REPLAY);
      assert.equal(steady.socket.readyState, WebSocket.OPEN, REPLAY);
      await eventually(() => server.http.connections === 2, ANSWER_MS, `fuzz peers gone ${REPLAY}`);
      assert.equal(server.hub.size, 2, REPLAY);
      const health = await fetch(new URL("healthz", server.url));
      assert.equal(health.status, 200, REPLAY);
      await health.body?.cancel();
      assert.ok(stats.closes > 0, `no oversize frame was tried ${REPLAY}`);
      console.log(
        `live fuzz seed=${SEED}: ${stats.frames} frames in ${seconds.toFixed(1)} s ` +
          `(${Math.round(stats.frames / seconds)}/s), ${stats.errors} errors, ` +
          `${stats.closes} closes with 1009, ${received.length} steady messages delivered`,
      );
    } finally {
      globalThis.removeEventListener("unhandledrejection", onRejection);
    }
    assert.deepEqual(rejections, [], `unhandled rejections ${REPLAY}`);
  },
});

Deno.test({
  name: "transport-level garbage on raw TCP ends those connections and hurts nobody else",
  sanitizeOps: true,
  sanitizeResources: true,
  async fn() {
    await using server = await startTestServer([
      "--max-frame-bytes",
      "2048",
      "--max-content-chars",
      "500",
      "--max-connections-per-ip",
      "1000",
    ]);
    await using good = await TestSocket.open(server.ws({ name: "good" }));
    const random = new Random(SEED);
    const url = new URL("ws", server.url);
    const bytes = (n: number) => Uint8Array.from({ length: n }, () => random.int(0, 255));
    const garbage: [string, () => Uint8Array][] = [
      ["invalid UTF-8 text", () => clientFrame(bytes(random.int(1, 64)))],
      ["CESU-8 surrogate", () => clientFrame(new Uint8Array([0x7b, 0xed, 0xa0, 0x80, 0x7d]))],
      ["reserved opcode", () => clientFrame("{}", random.pick([3, 4, 5, 6, 7, 11, 12, 15]))],
      ["stray continuation", () => clientFrame('{"type":"ping"}', 0)],
      ["fragmented ping", () => clientFrame("x", 9, false)],
      ["oversized ping", () => clientFrame("p".repeat(126), 9)],
      ["bad close code", () => clientFrame(new Uint8Array([0x03, 0xe7]), 8)],
      ["random bytes", () => bytes(random.int(1, 512))],
      ["unmasked frame", () => new Uint8Array([0x81, 0x02, 0x7b, 0x7d])],
      [
        "announces 2^62 bytes",
        () => new Uint8Array([0x81, 0xff, 0x40, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4]),
      ],
    ];
    // Close codes Deno itself may send for protocol errors, besides Parley's own.
    const allowed = new Set([...CLOSE_CODES, 1002, 1007]);
    for (let i = 0; i < RAW_CONNECTIONS; i++) {
      const [what, make] = random.pick(garbage);
      const { conn, response } = await rawUpgrade(url);
      try {
        assert.equal(response.status, 101, REPLAY);
        await writeAll(conn, make()).catch(() => {}); // the server may hang up first
        await conn.closeWrite().catch(() => {});
        const frames = await within(
          readServerFrames(conn, (f) => f.opcode === 8, response.rest).catch(() => []),
          ANSWER_MS,
        );
        assert.ok(frames !== "timeout", `${what}: the server never let go ${REPLAY}`);
        const close = frames.find((f) => f.opcode === 8);
        if (close !== undefined) {
          assert.ok(allowed.has(closeCode(close)), `${what}: close ${closeCode(close)} ${REPLAY}`);
        }
      } finally {
        conn.close();
      }
    }
    await eventually(() => server.http.connections === 1, ANSWER_MS, `raw peers gone ${REPLAY}`);
    good.send({ type: "ping", ref: "alive" });
    await good.next("pong", (e) => e.ref === "alive");
    await using fresh = await TestSocket.open(server.ws({ name: "fresh" }));
    fresh.send({ content: "after the garbage" });
    assert.equal((await good.next("message")).content, "after the garbage");
  },
});
