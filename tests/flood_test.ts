/**
 * System test of the write path under a flood: one fast sender is pushed back with `overloaded`,
 * readers that keep up are never cut, and only the peer that never reads is closed with 4008.
 *
 * Each run starts `tests/clients/flood.py` (Python's `websockets`, plain clients, no
 * subprotocol) against one server process with the rate limit lifted: "a" sends 3,000 messages
 * of about 3 KB back to back and resends by `ref` whatever is refused as `overloaded`, "b" reads
 * as fast as it can, "c" is a raw socket with a small receive buffer that never reads. The script
 * reports what "a" and "b" received; "c" cannot see its own close, so the server's side is read:
 * its close log lines and `parley_connections_closed_total`.
 */
import assert from "node:assert/strict";
import { type ServerProcess, spawnServer, textChunks } from "./helpers/server.ts";

/** Flags that lift the per-connection rate limit: "a" sends in one burst. */
const UNLIMITED = ["--rate", "1000000", "--burst", "1000000"];
/** Runs of the flood against one server. */
const RUNS = 10;
/** Messages "a" sends per run. */
const MESSAGES = 3_000;
/** Bound on waiting for the server to count a run's closes, in milliseconds. "c" is cut once
 * it has lagged for its grace; its close is counted when the handshake watchdog gives up on it
 * (it never reads the close frame). Generous: the machine is shared with other test runs. */
const CLOSES_WAIT_MS = 20_000;
/** The interpreter with Debian's `websockets` package (not whatever `python3` is on PATH). */
const PYTHON = "/usr/bin/python3";
const FLOOD_CLIENT = new URL("./clients/flood.py", import.meta.url).pathname;

/** What one of the reading clients received, as flood.py reports it. */
interface Side {
  /** The close code if the server closed it during the run, else null. */
  close: number | null;
  /** `[id, index]` of every message of the run, in arrival order. */
  messages: [number, number][];
  /** `[index, id]` of every ack, in arrival order. */
  acks: [number, number][];
  errors: Record<string, number>;
  /** Whether the `pong` that follows everything queued for it arrived. */
  pong: boolean;
}

/** One run's report from flood.py. */
interface FloodReport {
  run: string;
  complete: boolean;
  retries: number;
  a: Side;
  b: Side;
}

/** The flood client of one run; "c" stays connected until {@link FloodClient.finish}. */
class FloodClient {
  readonly #child: Deno.ChildProcess;
  readonly #stdout: Promise<string>;
  readonly #stderr: Promise<string>;
  #report: Promise<string>;

  constructor(url: string) {
    this.#child = new Deno.Command(PYTHON, {
      args: [FLOOD_CLIENT, url, String(MESSAGES)],
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    let line: (text: string) => void = () => {};
    this.#report = new Promise((resolve) => line = resolve);
    const collect = async (stream: ReadableStream<Uint8Array>, first?: (text: string) => void) => {
      let text = "";
      for await (const chunk of textChunks(stream)) {
        text += chunk;
        if (first !== undefined && text.includes("\n")) first(text.slice(0, text.indexOf("\n")));
      }
      first?.("");
      return text;
    };
    this.#stdout = collect(this.#child.stdout, line);
    this.#stderr = collect(this.#child.stderr);
  }

  /** The run's report; the script bounds its own waits, so this settles. */
  async report(): Promise<FloodReport> {
    const line = await this.#report;
    if (line === "") assert.fail(`flood.py printed no report:\n${await this.#stderr}`);
    return JSON.parse(line) as FloodReport;
  }

  /** Lets "c" go and waits for the script to exit; fails with its stderr if it did not succeed. */
  async finish(): Promise<void> {
    await this.#child.stdin.close().catch(() => {});
    const [status, , stderr] = await Promise.all([this.#child.status, this.#stdout, this.#stderr]);
    assert.equal(status.code, 0, `flood.py failed:\n${stderr}`);
  }
}

/** `parley_connections_closed_total` by code, from the server's metrics. */
async function closeCounts(server: ServerProcess): Promise<Map<string, number>> {
  const response = await fetch(new URL("metrics", server.url));
  const text = await response.text();
  const counts = new Map<string, number>();
  for (const match of text.matchAll(/^parley_connections_closed_total\{code="(\w+)"\} (\d+)$/gm)) {
    counts.set(match[1]!, Number(match[2]!));
  }
  return counts;
}

/** How each count grew from `before` to `after`, omitting codes that did not. */
function growth(before: Map<string, number>, after: Map<string, number>): Record<string, number> {
  const grown: Record<string, number> = {};
  for (const [code, count] of after) {
    const delta = count - (before.get(code) ?? 0);
    if (delta !== 0) grown[code] = delta;
  }
  return grown;
}

/** The close code in the server's "Connection closed" log line for `user`, if it logged one. */
function loggedClose(server: ServerProcess, user: string): number | undefined {
  // The last piece may be a line still being written.
  for (const line of server.output().split("\n").slice(0, -1)) {
    if (!line.startsWith("{")) continue;
    const entry = JSON.parse(line);
    if (entry.message === "Connection closed" && entry.properties?.user === user) {
      return entry.properties.code;
    }
  }
  return undefined;
}

/** Asserts that `side` got every message of the run once, in id order, with the acked ids. */
function assertEveryMessageOnce(side: Side, ids: Map<number, number>, who: string): void {
  assert.equal(side.messages.length, MESSAGES, `${who}: messages received`);
  for (let i = 1; i < side.messages.length; i++) {
    assert.ok(
      side.messages[i]![0] > side.messages[i - 1]![0],
      `${who}: message ${i} has id ${side.messages[i]![0]} after ${side.messages[i - 1]![0]}`,
    );
  }
  for (const [id, index] of side.messages) {
    assert.equal(id, ids.get(index), `${who}: message ${index} carries the id of its ack`);
  }
}

Deno.test({
  name: "a flood from one sender is pushed back with overloaded: readers keep up, only the peer " +
    "that never reads is closed with 4008",
  sanitizeOps: true,
  sanitizeResources: true,
  sanitizeExit: true,
  fn: async () => {
    await using server = await spawnServer(["--store", "memory:", ...UNLIMITED]);
    const url = server.ws();
    for (let run = 1; run <= RUNS; run++) {
      const before = await closeCounts(server);
      const client = new FloodClient(url);
      try {
        const report = await client.report();
        const where = `run ${run} (${report.run})`;
        assert.equal(report.a.close, null, `${where}: the sender was closed`);
        assert.equal(report.b.close, null, `${where}: the reader was closed`);
        assert.ok(report.a.pong && report.b.pong, `${where}: both answered the final ping`);
        assert.ok(report.complete, `${where}: every message acked and received`);
        // Every ref acked exactly once, and nothing refused but as overloaded.
        const acked = report.a.acks.map(([index]) => index).sort((x, y) => x - y);
        assert.deepEqual(acked, Array.from({ length: MESSAGES }, (_, i) => i), `${where}: acks`);
        assert.deepEqual(Object.keys(report.a.errors).filter((code) => code !== "overloaded"), []);
        assert.deepEqual(report.b.errors, {}, `${where}: the reader's errors`);
        const ids = new Map(report.a.acks);
        assertEveryMessageOnce(report.b, ids, `${where}, b`);
        assertEveryMessageOnce(report.a, ids, `${where}, a`);

        // flood.py closed "a" and "b" itself (1000); "c" is the server's to close.
        const deadline = Date.now() + CLOSES_WAIT_MS;
        let grown = growth(before, await closeCounts(server));
        while (!((grown["4008"] ?? 0) >= 1 && (grown["1000"] ?? 0) >= 2)) {
          if (Date.now() > deadline) break;
          await new Promise((resolve) => setTimeout(resolve, 50));
          grown = growth(before, await closeCounts(server));
        }
        assert.deepEqual(grown, { "1000": 2, "4008": 1 }, `${where}: closes counted by code`);
        assert.equal(loggedClose(server, `c-${report.run}`), 4008, `${where}: c's close log line`);
        assert.equal(loggedClose(server, `a-${report.run}`), 1000, `${where}: a's close log line`);
        assert.equal(loggedClose(server, `b-${report.run}`), 1000, `${where}: b's close log line`);
      } finally {
        await client.finish();
      }
    }
  },
});
