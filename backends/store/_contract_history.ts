/**
 * Store conformance cases about what readers see: id assignment and ordering, history paging in
 * both directions, and `since` for resuming after a reconnect, including its completeness.
 */
import assert from "node:assert/strict";
import { roomKey } from "../../message.ts";
import type { AppendResult } from "./mod.ts";
import { fill, ids, range, type RegisterCase, room } from "./_contract_helpers.ts";

/** Appends issued in one turn by the ordering cases. */
const CONCURRENT_APPENDS = 200;

/** Registers the id, paging and resume cases through `contract`. */
export function historyCases(contract: RegisterCase): void {
  // --- ids ------------------------------------------------------------------------------------

  contract("append assigns increasing ids per conversation", async ({ store }) => {
    const a1 = await store.append({ draft: room("a", "one"), user: "alice" });
    const a2 = await store.append({ draft: room("a", "two"), user: "alice" });
    const b1 = await store.append({ draft: room("b", "uno"), user: "bob" });
    const a3 = await store.append({ draft: room("a", "three"), user: "alice" });
    assert.deepEqual([a1, a2, a3].map((r) => r.message.id), [1, 2, 3]);
    assert.equal(b1.message.id, 1);
    assert.equal(await store.lastId(roomKey("a")), 3);
    assert.equal(await store.lastId(roomKey("b")), 1);
    assert.equal(await store.lastId(roomKey("never")), 0);
  });

  contract(
    "append returns the stored message with its ts in ISO 8601 UTC",
    async ({ store, clock }) => {
      const { message, duplicate } = await store.append({ draft: room("a", "hi"), user: "alice" });
      assert.equal(duplicate, false);
      assert.deepEqual(message, {
        type: "message",
        id: 1,
        room: "a",
        sender: "alice",
        content: "hi",
        ts: new Date(clock.now()).toISOString(),
      });
      const page = await store.history({ conversation: roomKey("a"), limit: 10 });
      assert.deepEqual(page.messages, [message]);
    },
  );

  contract(
    "appends issued in one turn resolve in call order with ids in call order",
    async ({ store }) => {
      const settled: string[] = [];
      const pending: Promise<AppendResult>[] = [];
      for (let i = 0; i < CONCURRENT_APPENDS; i++) {
        // Two conversations interleaved: each keeps its own sequence.
        const name = i % 3 === 0 ? "b" : "a";
        const p = store.append({ draft: room(name, `m${i}`), user: "alice" });
        p.then(() => settled.push(`${i}`));
        pending.push(p);
      }
      const results = await Promise.all(pending);
      assert.deepEqual(settled, range(0, CONCURRENT_APPENDS - 1).map(String));
      const byRoom = (name: string) =>
        results.filter((r) => r.message.type === "message" && r.message.room === name).map((r) =>
          r.message.id
        );
      assert.deepEqual(byRoom("a"), range(1, byRoom("a").length));
      assert.deepEqual(byRoom("b"), range(1, byRoom("b").length));
      const page = await store.history({ conversation: roomKey("a"), limit: 100 });
      for (const m of page.messages) {
        const call = Number(m.content.slice(1));
        assert.equal(results[call]!.message.id, m.id, "stored order matches call order");
      }
    },
  );

  contract("appends issued across turns keep increasing ids", async ({ store }) => {
    const first = Array.from(
      { length: 5 },
      (_, i) => store.append({ draft: room("a", `x${i}`), user: "u" }),
    );
    await Promise.resolve();
    const second = Array.from(
      { length: 5 },
      (_, i) => store.append({ draft: room("a", `y${i}`), user: "u" }),
    );
    const results = await Promise.all([...first, ...second]);
    assert.deepEqual(results.map((r) => r.message.id), range(1, 10));
  });

  // --- history paging ---------------------------------------------------------------------

  contract("history of an empty conversation is empty in every direction", async ({ store }) => {
    const conversation = roomKey("empty");
    for (const bounds of [{}, { before: 10 }, { after: 0 }, { after: 10 }]) {
      assert.deepEqual(await store.history({ conversation, limit: 50, ...bounds }), {
        messages: [],
        hasMore: false,
      });
    }
  });

  contract(
    "history without bounds returns the newest `limit` messages ascending",
    async ({ store }) => {
      await fill(store, "a", 150);
      const page = await store.history({ conversation: roomKey("a"), limit: 100 });
      assert.deepEqual(ids(page.messages), range(51, 150));
      assert.equal(page.hasMore, true);
      const all = await store.history({ conversation: roomKey("a"), limit: 100, after: 50 });
      assert.deepEqual(ids(all.messages), range(51, 150));
      assert.equal(all.hasMore, false);
    },
  );

  contract(
    "history `before` is exclusive and hasMore tells whether older remain",
    async ({ store }) => {
      await fill(store, "a", 150);
      const conversation = roomKey("a");
      const page = await store.history({ conversation, before: 10, limit: 3 });
      assert.deepEqual(ids(page.messages), [7, 8, 9]);
      assert.equal(page.hasMore, true);
      const first = await store.history({ conversation, before: 51, limit: 100 });
      assert.deepEqual(ids(first.messages), range(1, 50));
      assert.equal(first.hasMore, false);
      const exact = await store.history({ conversation, before: 4, limit: 3 });
      assert.deepEqual(ids(exact.messages), [1, 2, 3]);
      assert.equal(exact.hasMore, false);
      assert.deepEqual(await store.history({ conversation, before: 1, limit: 50 }), {
        messages: [],
        hasMore: false,
      });
      const beyond = await store.history({ conversation, before: 1_000, limit: 2 });
      assert.deepEqual(ids(beyond.messages), [149, 150]);
    },
  );

  contract(
    "history `after` is exclusive and hasMore tells whether newer remain",
    async ({ store }) => {
      await fill(store, "a", 150);
      const conversation = roomKey("a");
      const page = await store.history({ conversation, after: 10, limit: 3 });
      assert.deepEqual(ids(page.messages), [11, 12, 13]);
      assert.equal(page.hasMore, true);
      const oldest = await store.history({ conversation, after: 0, limit: 100 });
      assert.deepEqual(ids(oldest.messages), range(1, 100));
      assert.equal(oldest.hasMore, true);
      const rest = await store.history({ conversation, after: 100, limit: 100 });
      assert.deepEqual(ids(rest.messages), range(101, 150));
      assert.equal(rest.hasMore, false);
      const exact = await store.history({ conversation, after: 147, limit: 3 });
      assert.deepEqual(ids(exact.messages), [148, 149, 150]);
      assert.equal(exact.hasMore, false);
      assert.deepEqual(await store.history({ conversation, after: 150, limit: 10 }), {
        messages: [],
        hasMore: false,
      });
    },
  );

  contract("history with limit 1 pages one message at a time", async ({ store }) => {
    await fill(store, "a", 3);
    const conversation = roomKey("a");
    const newest = await store.history({ conversation, limit: 1 });
    assert.deepEqual([ids(newest.messages), newest.hasMore], [[3], true]);
    const older = await store.history({ conversation, before: 2, limit: 1 });
    assert.deepEqual([ids(older.messages), older.hasMore], [[1], false]);
    const first = await store.history({ conversation, after: 0, limit: 1 });
    assert.deepEqual([ids(first.messages), first.hasMore], [[1], true]);
    const last = await store.history({ conversation, after: 2, limit: 1 });
    assert.deepEqual([ids(last.messages), last.hasMore], [[3], false]);
  });

  // --- since --------------------------------------------------------------------------------

  contract(
    "since replays every retained message after the id and reports completeness",
    async ({ store }) => {
      await fill(store, "a", 5);
      const conversation = roomKey("a");
      const all = await store.since(conversation, 0, 100);
      assert.deepEqual([ids(all.messages), all.complete, all.lastId], [[1, 2, 3, 4, 5], true, 5]);
      const tail = await store.since(conversation, 3, 100);
      assert.deepEqual([ids(tail.messages), tail.complete, tail.lastId], [[4, 5], true, 5]);
      const none = await store.since(conversation, 5, 100);
      assert.deepEqual([none.messages, none.complete, none.lastId], [[], true, 5]);
    },
  );

  contract("since is incomplete when more than `limit` messages were missed", async ({ store }) => {
    await fill(store, "a", 5);
    const replay = await store.since(roomKey("a"), 0, 2);
    assert.deepEqual([ids(replay.messages), replay.complete, replay.lastId], [[1, 2], false, 5]);
    const fits = await store.since(roomKey("a"), 3, 2);
    assert.deepEqual([ids(fits.messages), fits.complete], [[4, 5], true]);
  });

  contract("since beyond the last id is incomplete", async ({ store }) => {
    await fill(store, "a", 2);
    const replay = await store.since(roomKey("a"), 7, 100);
    assert.deepEqual([replay.messages, replay.complete, replay.lastId], [[], false, 2]);
    const empty = await store.since(roomKey("nothing"), 0, 100);
    assert.deepEqual([empty.messages, empty.complete, empty.lastId], [[], true, 0]);
    const ahead = await store.since(roomKey("nothing"), 3, 100);
    assert.deepEqual([ahead.messages, ahead.complete, ahead.lastId], [[], false, 0]);
  });

  contract("since is incomplete when messages after it were pruned", async ({ store }) => {
    await fill(store, "a", 5); // historyLimit 3 keeps 3, 4, 5
    const conversation = roomKey("a");
    const gap = await store.since(conversation, 1, 100);
    assert.deepEqual([ids(gap.messages), gap.complete, gap.lastId], [[3, 4, 5], false, 5]);
    const kept = await store.since(conversation, 2, 100);
    assert.deepEqual([ids(kept.messages), kept.complete], [[3, 4, 5], true]);
  }, { overrides: { historyLimit: 3 } });
}
