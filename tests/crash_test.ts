/**
 * Crash safety: an acknowledged message is committed. A real server process on a SQLite file is
 * killed with SIGKILL right after its last ack, restarted on the same file, and must still hold
 * every acknowledged message, in order, and go on numbering above them.
 */
import assert from "node:assert/strict";
import { type Event, spawnServer, TestSocket } from "./helpers/server.ts";

/** Flags that lift the per-connection rate limit: the test sends in one burst. */
const UNLIMITED = ["--rate", "1000000", "--burst", "1000000"];
/** Messages sent before the kill. */
const MESSAGES = 500;
/** Generous waits: the machine is shared with other test runs. */
const WAIT_MS = 20_000;

Deno.test({
  name: "every acknowledged message survives SIGKILL and ids continue above them after restart",
  sanitizeOps: true,
  sanitizeResources: true,
  sanitizeExit: true,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "parley-crash-test-" });
    try {
      // The file is where `deno task start`'s scoped permissions allow it: ./parley.db.
      const args = [...UNLIMITED, "--store", "sqlite:./parley.db", "--log-level", "warning"];
      const options = { cwd: dir };
      const acked: Event[] = [];
      {
        await using server = await spawnServer(args, options);
        await using alice = await TestSocket.open(server.ws({ name: "alice" }));
        alice.send({ type: "join", room: "r" });
        await alice.next("joined", (e) => e.room === "r", WAIT_MS);
        for (let i = 1; i <= MESSAGES; i++) {
          alice.send({ type: "message", room: "r", content: `m${i}`, ref: `ref-${i}` });
        }
        await alice.until(
          (events) =>
            events.filter((e) => e.type === "ack" || e.type === "error").length >= MESSAGES,
          WAIT_MS,
          `${MESSAGES} acks`,
        );
        // Kill at once: nothing gets a chance to flush after the last ack.
        const status = await server.stop("SIGKILL");
        assert.equal(status.signal, "SIGKILL");
        assert.deepEqual(alice.of("error"), []);
        acked.push(...alice.of("ack"));
        await alice.closed;
      }
      assert.deepEqual(acked.map((ack) => ack.ref), acked.map((_, i) => `ref-${i + 1}`));
      const ackedIds = acked.map((ack) => Number(ack.id));
      assert.ok(ackedIds.every((id, i) => i === 0 || id > ackedIds[i - 1]!), "acked ids ascend");

      await using server = await spawnServer(args, options);
      await using alice = await TestSocket.open(server.ws({ name: "alice" }));
      const stored: Event[] = [];
      for (let after = 0, page = 0; page < 20; page++) {
        alice.send({ type: "history", room: "r", after, limit: 100, ref: `page-${page}` });
        const reply = await alice.next("history", (e) => e.ref === `page-${page}`, WAIT_MS);
        const messages = reply.messages as Event[];
        stored.push(...messages);
        if (reply.hasMore !== true) break;
        after = Number(messages.at(-1)!.id);
      }
      assert.deepEqual(stored.map((m) => Number(m.id)), ackedIds);
      assert.deepEqual(stored.map((m) => m.content), acked.map((_, i) => `m${i + 1}`));
      assert.ok(stored.every((m) => m.sender === "alice" && m.room === "r"));

      alice.send({ type: "join", room: "r" });
      const joined = await alice.next("joined", (e) => e.room === "r", WAIT_MS);
      assert.equal(joined.lastId, ackedIds.at(-1));
      alice.send({ type: "message", room: "r", content: "after restart", ref: "after" });
      const next = await alice.next("ack", (e) => e.ref === "after", WAIT_MS);
      assert.ok(Number(next.id) > ackedIds.at(-1)!, `new id ${next.id} continues the sequence`);
      // A ref from before the crash is still remembered: its retry is not stored again.
      alice.send({ type: "message", room: "r", content: "m1", ref: "ref-1" });
      const retry = await alice.next("ack", (e) => e.ref === "ref-1", WAIT_MS);
      assert.deepEqual(retry, acked[0]);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
