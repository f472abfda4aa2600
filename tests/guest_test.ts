/**
 * Guest names in open mode: a connection without `?name=` gets `guest-` and 12 characters of a
 * readable alphabet, drawn at random, so guests of different processes (a restart, another node)
 * never share a name, and with it their DMs, presence and idempotency keys.
 */
import assert from "node:assert/strict";
import { startTestServer, TestSocket } from "./helpers/server.ts";

const sanitized = { sanitizeOps: true, sanitizeResources: true, sanitizeExit: true };

function test(name: string, fn: () => Promise<void>) {
  Deno.test({ name, ...sanitized, fn });
}

/** The pattern docs/PROTOCOL.md gives for guest names. */
const GUEST_NAME = /^guest-[2-9a-km-np-z]{12}$/;

/** The Python interpreter that has Debian's `websockets` package. */
const PYTHON = "/usr/bin/python3";
const GUEST_CLIENT = new URL("./clients/guest.py", import.meta.url).pathname;

/** Connects one guest and returns the name its `welcome` gave it. */
async function guestName(url: string): Promise<string> {
  await using guest = await TestSocket.open(url);
  return String(guest.of("welcome")[0]?.user);
}

test("two servers give their first guests different names of the documented form", async () => {
  await using a = await startTestServer();
  await using b = await startTestServer();
  const first = await guestName(a.ws());
  const second = await guestName(b.ws());
  assert.notEqual(first, second);
  assert.match(first, GUEST_NAME);
  assert.match(second, GUEST_NAME);
});

test("a guest after a restart on the same SQLite file is not taken for the guest before it", async () => {
  const dir = await Deno.makeTempDir({ prefix: "parley-guest-" });
  try {
    const store = ["--store", `sqlite:${dir}/parley.db`];
    const send = async (content: string) => {
      await using server = await startTestServer(store);
      await using guest = await TestSocket.open(server.ws());
      // Same ref from both guests: with a shared name the second send would count as a retry.
      guest.send({ type: "message", content, ref: "r1" });
      const ack = await guest.next("ack");
      return { user: String(guest.of("welcome")[0]?.user), id: ack.id };
    };
    const before = await send("from the first guest");
    const after = await send("from the second guest");
    assert.notEqual(after.id, before.id, "the second guest's send was taken for a retry");
    assert.notEqual(after.user, before.user);

    await using server = await startTestServer(store);
    await using reader = await TestSocket.open(server.ws({ name: "reader" }));
    reader.send({ type: "history", room: "lobby" });
    const history = await reader.next("history");
    assert.deepEqual(
      (history.messages as { sender: string; content: string }[]).map((m) => [
        m.sender,
        m.content,
      ]),
      [[before.user, "from the first guest"], [after.user, "from the second guest"]],
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

test("a Python guest is welcomed with a guest name and may still name an untyped frame's sender", async () => {
  await using server = await startTestServer();
  const output = await new Deno.Command(PYTHON, {
    args: [GUEST_CLIENT, server.ws()],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stderr = new TextDecoder().decode(output.stderr);
  assert.equal(output.code, 0, stderr);
  const frames = new TextDecoder().decode(output.stdout).trim().split("\n").map((line) =>
    JSON.parse(line) as Record<string, unknown>
  );
  const welcome = frames[0]!;
  assert.equal(welcome.type, "welcome");
  assert.match(String(welcome.user), GUEST_NAME);
  const senders = Object.fromEntries(
    frames.filter((f) => f.type === "message").map((f) => [f.content, f.sender]),
  );
  // Open mode: the old untyped frame's `sender` names it; a typed frame carries the guest name.
  assert.deepEqual(senders, { legacy: "Abhi", typed: welcome.user });
});
