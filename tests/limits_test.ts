/**
 * Abuse limits on a real server over real sockets: the total and per-address connection caps
 * (HTTP 503 / 429 with `Retry-After`, slots freed on close) and the length limits of the fields a
 * client controls (`ref`, `content`, room and user names), each probed at its bound and one past.
 * The browser-Origin check lives in `server_test.ts`; token checks in `auth_server_test.ts`.
 */
import assert from "node:assert/strict";
import { eventually, rawUpgrade, startTestServer, TestSocket } from "./helpers/server.ts";
import { MAX_REF_CHARS, MAX_USER_CHARS } from "../message.ts";
import { RETRY_AFTER_S } from "../server.ts";

const sanitized = { sanitizeOps: true, sanitizeResources: true, sanitizeExit: true };

function test(name: string, fn: () => Promise<void>) {
  Deno.test({ name, ...sanitized, fn });
}

/** Tries an upgrade over raw TCP and returns status, `Retry-After` and the JSON error code. */
async function attempt(url: URL) {
  const { conn, response } = await rawUpgrade(url);
  conn.close();
  return {
    status: response.status,
    retryAfter: response.headers.get("retry-after"),
    code: response.status === 101 ? undefined : JSON.parse(response.body).error?.code,
  };
}

test("--max-connections refuses the next upgrade with 503 and Retry-After until one closes", async () => {
  await using server = await startTestServer([
    "--max-connections",
    "2",
    "--max-connections-per-ip",
    "100",
  ]);
  const url = new URL(server.ws());
  const a = await TestSocket.open(server.ws());
  await using _b = await TestSocket.open(server.ws());
  for (let i = 0; i < 3; i++) {
    assert.deepEqual(await attempt(url), {
      status: 503,
      retryAfter: String(RETRY_AFTER_S),
      code: "overloaded",
    });
  }
  assert.equal(server.http.connections, 2);
  await a.close();
  await eventually(() => server.http.connections === 1, 5_000, "the slot to be released");
  await using c = await TestSocket.open(server.ws());
  assert.equal(c.of("welcome").length, 1);
  assert.equal((await attempt(url)).status, 503, "full again");
});

test("--max-connections-per-ip refuses a second connection from one address with 429", async () => {
  await using server = await startTestServer(["--max-connections-per-ip", "1"]);
  const url = new URL(server.ws());
  const first = await TestSocket.open(server.ws({ name: "first" }));
  assert.deepEqual(await attempt(url), {
    status: 429,
    retryAfter: String(RETRY_AFTER_S),
    code: "rate_limited",
  });
  await first.close();
  await eventually(() => server.http.connections === 0, 5_000, "the slot to be released");
  await using second = await TestSocket.open(server.ws({ name: "second" }));
  assert.equal(second.of("welcome")[0]?.user, "second");
  assert.equal((await attempt(url)).status, 429);
});

test("server bounds ref, content and names in UTF-16 units and refuses control characters in names", async () => {
  const maxContent = 200;
  await using server = await startTestServer(["--max-content-chars", String(maxContent)]);
  await using a = await TestSocket.open(server.ws({ name: "a" }));
  const longest = { ref: "r".repeat(MAX_REF_CHARS), room: "R".repeat(64) };

  /** Sends a frame and returns the error answering it; a ping after it proves order. */
  const errorFor = async (frame: Record<string, unknown>) => {
    const before = a.of("error").length;
    a.send(frame);
    a.send({ type: "ping", ref: "barrier" });
    await a.next("pong", (e) => e.ref === "barrier");
    const errors = a.of("error").slice(before);
    assert.equal(errors.length, 1, `one error for ${JSON.stringify(frame).slice(0, 80)}`);
    return errors[0]!;
  };
  const assertNames = (error: Record<string, unknown>, field: string) => {
    assert.equal(error.code, "invalid_message");
    assert.match(String(error.message), new RegExp(`"${field}"`));
  };

  // At the bound: accepted.
  a.send({ type: "ping", ref: longest.ref });
  await a.next("pong", (e) => e.ref === longest.ref);
  a.send({ type: "message", content: "c".repeat(maxContent), ref: "at-bound" });
  await a.next("ack", (e) => e.ref === "at-bound");
  a.send({ type: "join", room: longest.room, ref: "long-room" });
  await a.next("joined", (e) => e.room === longest.room);

  // One past: refused, naming the field; an over-long ref is not echoed.
  const longRef = await errorFor({ type: "ping", ref: "r".repeat(MAX_REF_CHARS + 1) });
  assertNames(longRef, "ref");
  assert.equal(longRef.ref, undefined);
  assertNames(
    await errorFor({ type: "message", content: "c".repeat(maxContent + 1), ref: "c" }),
    "content",
  );
  assertNames(await errorFor({ content: "c".repeat(maxContent + 1) }), "content");
  assertNames(await errorFor({ type: "join", room: "R".repeat(65) }), "room");
  assertNames(await errorFor({ type: "message", room: "R".repeat(65), content: "x" }), "room");
  assertNames(
    await errorFor({ type: "direct", to: "u".repeat(MAX_USER_CHARS + 1), content: "x" }),
    "to",
  );
  assertNames(await errorFor({ sender: "s".repeat(MAX_USER_CHARS + 1), content: "x" }), "sender");
  assertNames(await errorFor({ type: "history", with: "u".repeat(MAX_USER_CHARS + 1) }), "with");
  // Limits count UTF-16 code units, as JavaScript does, not code points: an emoji counts twice.
  const emoji = "\u{1F600}";
  assertNames(
    await errorFor({ type: "message", content: emoji.repeat(maxContent / 2 + 1) }),
    "content",
  );
  assertNames(await errorFor({ type: "ping", ref: emoji.repeat(MAX_REF_CHARS / 2 + 1) }), "ref");
  // User names carry no control characters, wherever they come from.
  assertNames(await errorFor({ sender: "evil\nname", content: "x" }), "sender");
  assertNames(await errorFor({ type: "direct", to: "nul\u0000", content: "x" }), "to");
  assert.equal(a.socket.readyState, WebSocket.OPEN);
  // Nothing refused was stored.
  a.send({ type: "history", room: "lobby", ref: "h" });
  const history = await a.next("history");
  assert.deepEqual((history.messages as { content: string }[]).map((m) => m.content.length), [
    maxContent,
  ]);
});

test("server refuses a ?name= longer than 64 characters or with control characters", async () => {
  await using server = await startTestServer();
  for (const name of ["n".repeat(MAX_USER_CHARS + 1), "bad\nname", "nul\u0000"]) {
    const refused = await attempt(new URL(server.ws({ name })));
    assert.equal(refused.status, 400, JSON.stringify(name));
    assert.equal(refused.code, "invalid_message");
  }
  await using ok = await TestSocket.open(server.ws({ name: "n".repeat(MAX_USER_CHARS) }));
  assert.equal(ok.of("welcome")[0]?.user, "n".repeat(MAX_USER_CHARS));
  await eventually(() => server.http.connections === 1, 5_000, "refused upgrades to leave");
});
