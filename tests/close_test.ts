/**
 * System tests of policy closes: a close the server decides on reaches the client it is meant
 * for, after the answers queued before it, even when the client was still sending when the server
 * decided; and the server logs and counts the code it sent.
 *
 * Each case sends a burst back to back, without waiting for answers, from two clients that are
 * not Deno's WebSocket: Python's `websockets` (`tests/clients/close.py`) and a raw TCP socket that
 * writes the whole burst in one write and answers the close frame as RFC 6455 asks. A client that
 * sees the connection end without a close frame reports 1006.
 */
import assert from "node:assert/strict";
import {
  clientFrame,
  closeCode,
  type Event,
  rawUpgrade,
  readServerFrames,
  type ServerProcess,
  spawnServer,
  writeAll,
} from "./helpers/server.ts";

const sanitized = { sanitizeOps: true, sanitizeResources: true, sanitizeExit: true };

/** Generous bound on every wait: the machine is shared with other test runs. */
const WAIT_MS = 20_000;
/** The interpreter with Debian's `websockets` package (not whatever `python3` is on PATH). */
const PYTHON = "/usr/bin/python3";
const CLOSE_CLIENT = new URL("./clients/close.py", import.meta.url).pathname;
/** Frame size limit of the oversized-frame case, in bytes. */
const MAX_FRAME_BYTES = 4096;

/** What a client saw: every event, and the close as it saw it (1006: no close frame). */
interface Seen {
  events: Event[];
  code: number;
  reason: string;
}

/** A burst of chat messages with refs `r0`, `r1`, … */
function messages(count: number, from = 0): string[] {
  return Array.from(
    { length: count },
    (_, i) => JSON.stringify({ type: "message", content: `m${from + i}`, ref: `r${from + i}` }),
  );
}

/** Sends the burst from the Python client and returns what it saw. */
async function viaPython(url: string, texts: string[]): Promise<Seen> {
  const child = new Deno.Command(PYTHON, {
    args: [CLOSE_CLIENT, url],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const writer = child.stdin.getWriter();
  await writer.write(new TextEncoder().encode(JSON.stringify(texts)));
  await writer.close();
  const { code, stdout, stderr } = await child.output();
  assert.equal(code, 0, `close.py failed:\n${new TextDecoder().decode(stderr)}`);
  const lines = new TextDecoder().decode(stdout).split("\n").filter((line) => line !== "");
  const events = lines.map((line) => JSON.parse(line) as Event);
  const close = events.pop()!;
  return { events, code: close.close as number, reason: close.reason as string };
}

/** Sends the burst over raw TCP in one write, reads up to the close frame and answers it. */
async function viaRawSocket(url: string, texts: string[]): Promise<Seen> {
  const { conn, response } = await rawUpgrade(new URL(url));
  let open = true;
  const hangUp = () => {
    if (open) conn.close();
    open = false;
  };
  // Ends a read that would otherwise wait for ever on a server that neither closes nor writes.
  const bound = setTimeout(hangUp, WAIT_MS);
  try {
    assert.equal(response.status, 101);
    const frames = texts.map((text) => clientFrame(text));
    const burst = new Uint8Array(frames.reduce((sum, frame) => sum + frame.length, 0));
    let offset = 0;
    for (const frame of frames) {
      burst.set(frame, offset);
      offset += frame.length;
    }
    // The welcome may come before or after the burst is written: read from the response's rest.
    await writeAll(conn, burst);
    const received = await readServerFrames(conn, (frame) => frame.opcode === 8, response.rest)
      .catch(() => []);
    const decoder = new TextDecoder();
    const events: Event[] = [];
    for (const frame of received) {
      if (frame.opcode !== 1) continue;
      const value = JSON.parse(decoder.decode(frame.payload));
      for (const event of Array.isArray(value) ? value : [value]) events.push(event);
    }
    const close = received.at(-1);
    if (close?.opcode !== 8) return { events, code: 1006, reason: "" };
    // Echo the close frame, as the closing handshake asks, so the server sees a clean close.
    await writeAll(conn, clientFrame(close.payload, 8)).catch(() => {});
    return { events, code: closeCode(close), reason: decoder.decode(close.payload.subarray(2)) };
  } finally {
    clearTimeout(bound);
    hangUp();
  }
}

/** The clients under test, by the name each connects with. */
const CLIENTS = [["python", viaPython], ["raw", viaRawSocket]] as const;

/** `parley_connections_closed_total` by code, from the server's metrics. */
async function closeCounts(server: ServerProcess): Promise<Record<string, number>> {
  const text = await (await fetch(new URL("metrics", server.url))).text();
  const counts: Record<string, number> = {};
  for (const match of text.matchAll(/^parley_connections_closed_total\{code="(\w+)"\} (\d+)$/gm)) {
    counts[match[1]!] = Number(match[2]!);
  }
  return counts;
}

/** The properties of the server's "Connection closed" log line for `user`, once it is logged. */
async function loggedClose(
  server: ServerProcess,
  user: string,
): Promise<{ code: number; reason: string }> {
  const deadline = Date.now() + WAIT_MS;
  while (true) {
    // The last piece may be a line still being written.
    for (const line of server.output().split("\n").slice(0, -1)) {
      if (!line.startsWith("{")) continue;
      const entry = JSON.parse(line);
      if (entry.message === "Connection closed" && entry.properties?.user === user) {
        return entry.properties;
      }
    }
    if (Date.now() > deadline) assert.fail(`The server logged no close for ${user}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** The refs answered with `type` (and, for errors, `code`), sorted. */
function refsOf(events: Event[], type: string, code?: string): string[] {
  return events
    .filter((event) => event.type === type && (code === undefined || event.code === code))
    .map((event) => String(event.ref))
    .sort();
}

/** The refs `r{from}` … `r{to - 1}`, sorted as {@link refsOf} sorts. */
function refs(from: number, to: number): string[] {
  return Array.from({ length: to - from }, (_, i) => `r${from + i}`).sort();
}

/**
 * Runs `texts` from every client against a server started with `args` and checks, for each, what
 * `expect` says it saw; then that the server logged `code` for each and counted exactly those.
 */
async function closesWith(
  args: string[],
  texts: string[],
  code: number,
  expect: (seen: Seen, who: string) => void,
): Promise<void> {
  await using server = await spawnServer(["--store", "memory:", ...args]);
  const before = await closeCounts(server);
  for (const [name, via] of CLIENTS) {
    expect(await via(server.ws({ name }), texts), name);
  }
  for (const [name] of CLIENTS) {
    const logged = await loggedClose(server, name);
    assert.equal(logged.code, code, `${name}: the code in the server's close log line`);
  }
  const after = await closeCounts(server);
  const grown = Object.fromEntries(
    Object.entries(after).filter(([key, count]) => count !== before[key]).map((
      [key, count],
    ) => [key, count - (before[key] ?? 0)]),
  );
  assert.deepEqual(grown, { [code]: CLIENTS.length }, "closes counted by code");
}

/** Checks the answers and the close of a client closed for rate-limit abuse. */
function abuseClosed(burst: number, strikes: number) {
  return (seen: Seen, who: string) => {
    // Every refused frame but the last strike is answered; that one closes instead.
    assert.deepEqual(
      refsOf(seen.events, "error", "rate_limited"),
      refs(burst, burst + strikes - 1),
      `${who}: rate_limited errors`,
    );
    assert.equal(refsOf(seen.events, "error").length, strikes - 1, `${who}: other errors`);
    // Every admitted frame is acked before the close frame, even when its append settles after
    // the server decided to close.
    assert.deepEqual(refsOf(seen.events, "ack"), refs(0, burst), `${who}: acks`);
    assert.deepEqual([seen.code, seen.reason], [1008, "Rate limit abuse"], `${who}: close`);
  };
}

Deno.test({
  name:
    "a client over its rate limit gets its rate_limited errors, then close 1008 with its reason",
  ...sanitized,
  fn: async () => {
    // The burst of 5 and the default --rate-limit-strikes (10), with a token a second so
    // none can refill during the 60-frame burst on a loaded machine (5/s refilled one there).
    await closesWith(["--rate", "1", "--burst", "5"], messages(60), 1008, abuseClosed(5, 10));
  },
});

Deno.test({
  name: "with --rate-limit-strikes 3, the third refused frame closes the client with 1008",
  ...sanitized,
  fn: async () => {
    await closesWith(
      // A token per second: the burst is over long before one could refill.
      ["--rate", "1", "--burst", "3", "--rate-limit-strikes", "3"],
      messages(12),
      1008,
      abuseClosed(3, 3),
    );
  },
});

Deno.test({
  name: "a frame over --max-frame-bytes in the middle of a burst closes the client with 1009",
  ...sanitized,
  fn: async () => {
    const big = JSON.stringify({
      type: "message",
      content: "x".repeat(MAX_FRAME_BYTES),
      ref: "big",
    });
    const texts = [...messages(10), big, ...messages(10, 11)];
    await closesWith(
      ["--rate", "1000000", "--burst", "1000000", "--max-frame-bytes", String(MAX_FRAME_BYTES)],
      texts,
      1009,
      (seen, who) => {
        // Frames after the oversized one are discarded: nothing of them is answered.
        const answered = seen.events.filter((e) => e.type === "ack" || e.type === "error");
        for (const event of answered) {
          assert.ok(refs(0, 10).includes(String(event.ref)), `${who}: ${JSON.stringify(event)}`);
        }
        assert.deepEqual([seen.code, seen.reason], [1009, "Message too big"], `${who}: close`);
      },
    );
  },
});
