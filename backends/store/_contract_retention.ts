/**
 * Store conformance cases about what is kept, for how long and where: retention by count and by
 * age, idempotent retries within the window, isolation of conversations, and what survives
 * close and reopen.
 */
import assert from "node:assert/strict";
import { directKey, roomKey } from "../../message.ts";
import { DAY_MS, IDEMPOTENCY_WINDOW_MS } from "./mod.ts";
import { direct, fill, ids, type RegisterCase, room } from "./_contract_helpers.ts";

const MINUTE_MS = 60_000;

/** Registers the retention, idempotency, isolation and lifecycle cases through `contract`. */
export function retentionCases(contract: RegisterCase): void {
  // --- retention ----------------------------------------------------------------------------

  contract(
    "historyLimit keeps the newest messages and never reuses pruned ids",
    async ({ store }) => {
      await fill(store, "a", 5);
      const conversation = roomKey("a");
      const page = await store.history({ conversation, limit: 100 });
      assert.deepEqual([ids(page.messages), page.hasMore], [[3, 4, 5], false]);
      const older = await store.history({ conversation, before: 3, limit: 100 });
      assert.deepEqual(older, { messages: [], hasMore: false });
      const after = await store.history({ conversation, after: 0, limit: 2 });
      assert.deepEqual([ids(after.messages), after.hasMore], [[3, 4], true]);
      const next = await store.append({ draft: room("a", "six"), user: "alice" });
      assert.equal(next.message.id, 6);
      assert.equal(await store.lastId(conversation), 6);
      const now = await store.history({ conversation, limit: 100 });
      assert.deepEqual(ids(now.messages), [4, 5, 6]);
    },
    { overrides: { historyLimit: 3 } },
  );

  contract("historyLimit applies to each conversation separately", async ({ store }) => {
    await fill(store, "a", 4);
    await store.append({ draft: room("b", "only"), user: "bob" });
    assert.deepEqual(
      ids((await store.history({ conversation: roomKey("a"), limit: 10 })).messages),
      [
        3,
        4,
      ],
    );
    assert.deepEqual(
      ids((await store.history({ conversation: roomKey("b"), limit: 10 })).messages),
      [
        1,
      ],
    );
  }, { overrides: { historyLimit: 2 } });

  contract(
    "historyDays hides messages older than the window, ids continue",
    async ({ store, clock }) => {
      const conversation = roomKey("a");
      await fill(store, "a", 2);
      clock.advance(DAY_MS / 2);
      const young = await store.append({ draft: room("a", "young"), user: "alice" });
      clock.advance(DAY_MS / 2 + 1); // the first two are now a day and 1 ms old
      const page = await store.history({ conversation, limit: 100 });
      assert.deepEqual(page.messages, [young.message]);
      assert.equal(page.hasMore, false);
      const replay = await store.since(conversation, 0, 100);
      assert.deepEqual([ids(replay.messages), replay.complete, replay.lastId], [[3], false, 3]);
      clock.advance(DAY_MS);
      assert.deepEqual(await store.history({ conversation, limit: 100 }), {
        messages: [],
        hasMore: false,
      });
      const next = await store.append({ draft: room("a", "fresh"), user: "alice" });
      assert.equal(next.message.id, 4);
      assert.equal(await store.lastId(conversation), 4);
    },
    { overrides: { historyDays: 1 }, needs: "clock" },
  );

  // --- idempotency --------------------------------------------------------------------------

  contract(
    "a repeated (user, ref) within the window returns the original, stored once",
    async ({ store, clock }) => {
      const first = await store.append({ draft: room("a", "hello"), user: "alice", ref: "r1" });
      clock.advance(IDEMPOTENCY_WINDOW_MS - MINUTE_MS);
      const again = await store.append({ draft: room("a", "hello"), user: "alice", ref: "r1" });
      assert.equal(first.duplicate, false);
      assert.equal(again.duplicate, true);
      assert.deepEqual(again.message, first.message);
      const page = await store.history({ conversation: roomKey("a"), limit: 10 });
      assert.deepEqual(page.messages, [first.message]);
      assert.equal(await store.lastId(roomKey("a")), 1);
    },
    { needs: "clock" },
  );

  contract(
    "a retry answers with the original message even when its content differs",
    async ({ store }) => {
      const first = await store.append({ draft: room("a", "original"), user: "alice", ref: "r" });
      const retry = await store.append({ draft: room("a", "edited"), user: "alice", ref: "r" });
      assert.equal(retry.duplicate, true);
      assert.deepEqual(retry.message, first.message);
    },
  );

  contract("a repeated ref inside one batch is stored once", async ({ store }) => {
    const [a, b, c] = await Promise.all([
      store.append({ draft: room("a", "x"), user: "alice", ref: "same" }),
      store.append({ draft: room("a", "y"), user: "bob", ref: "other" }),
      store.append({ draft: room("a", "x"), user: "alice", ref: "same" }),
    ]);
    assert.deepEqual([a!.duplicate, b!.duplicate, c!.duplicate], [false, false, true]);
    assert.deepEqual(c!.message, a!.message);
    assert.deepEqual([a!.message.id, b!.message.id], [1, 2]);
    assert.equal(await store.lastId(roomKey("a")), 2);
  });

  contract("the same ref from another user is a new message", async ({ store }) => {
    const alice = await store.append({ draft: room("a", "hi"), user: "alice", ref: "r1" });
    const bob = await store.append({ draft: room("a", "hi"), user: "bob", ref: "r1" });
    assert.equal(bob.duplicate, false);
    assert.deepEqual([alice.message.id, bob.message.id], [1, 2]);
  });

  contract("appends without a ref are never duplicates", async ({ store }) => {
    const one = await store.append({ draft: room("a", "same"), user: "alice" });
    const two = await store.append({ draft: room("a", "same"), user: "alice" });
    assert.deepEqual([one.duplicate, two.duplicate, two.message.id], [false, false, 2]);
  });

  contract("a repeated ref after the window is a new message", async ({ store, clock }) => {
    const first = await store.append({ draft: room("a", "hi"), user: "alice", ref: "r1" });
    clock.advance(IDEMPOTENCY_WINDOW_MS + 1);
    const later = await store.append({ draft: room("a", "hi"), user: "alice", ref: "r1" });
    assert.equal(later.duplicate, false);
    assert.deepEqual([first.message.id, later.message.id], [1, 2]);
    // The new message restarts the window for that ref.
    clock.advance(MINUTE_MS);
    const retry = await store.append({ draft: room("a", "hi"), user: "alice", ref: "r1" });
    assert.deepEqual([retry.duplicate, retry.message.id], [true, 2]);
  }, { needs: "clock" });

  contract("a duplicate direct message returns the original direct message", async ({ store }) => {
    const first = await store.append({
      draft: direct("alice", "bob", "psst"),
      user: "alice",
      ref: "d",
    });
    const again = await store.append({
      draft: direct("alice", "bob", "psst"),
      user: "alice",
      ref: "d",
    });
    assert.equal(again.duplicate, true);
    assert.deepEqual(again.message, first.message);
    assert.equal(await store.lastId(directKey("alice", "bob")), 1);
  });

  // --- isolation ----------------------------------------------------------------------------

  contract("DM conversations are isolated from rooms and from other pairs", async ({ store }) => {
    await store.append({ draft: room("lobby", "public"), user: "alice" });
    const ab = await store.append({ draft: direct("alice", "bob", "hi bob"), user: "alice" });
    const ba = await store.append({ draft: direct("bob", "alice", "hi alice"), user: "bob" });
    const ac = await store.append({ draft: direct("alice", "carol", "hi carol"), user: "alice" });
    assert.deepEqual([ab.message.id, ba.message.id, ac.message.id], [1, 2, 1]);
    assert.equal(directKey("alice", "bob"), directKey("bob", "alice"));

    const pair = await store.history({ conversation: directKey("bob", "alice"), limit: 50 });
    assert.deepEqual(pair.messages, [ab.message, ba.message]);
    assert.deepEqual(pair.messages[1], {
      type: "direct",
      id: 2,
      from: "bob",
      to: "alice",
      content: "hi alice",
      ts: ba.message.ts,
    });
    const other = await store.history({ conversation: directKey("carol", "alice"), limit: 50 });
    assert.deepEqual(other.messages, [ac.message]);
    const lobby = await store.history({ conversation: roomKey("lobby"), limit: 50 });
    assert.deepEqual(lobby.messages.map((m) => m.content), ["public"]);
    assert.equal(await store.lastId(directKey("bob", "carol")), 0);
  });

  contract("room and user names that look alike never share a conversation", async ({ store }) => {
    // A room called like a DM key's parts, and user names with separators and quotes.
    await store.append({ draft: room("alice", "room named alice"), user: "x" });
    await store.append({ draft: direct('a"b', "c", "one"), user: 'a"b' });
    await store.append({ draft: direct("a", 'b","c', "two"), user: "a" });
    await store.append({ draft: direct('b","c', "a", "three"), user: 'b","c' });
    const odd = await store.history({ conversation: directKey("c", 'a"b'), limit: 10 });
    assert.deepEqual(odd.messages.map((m) => m.content), ["one"]);
    const other = await store.history({ conversation: directKey("a", 'b","c'), limit: 10 });
    assert.deepEqual(other.messages.map((m) => m.content), ["two", "three"]);
    assert.equal(await store.lastId(directKey("a", "b")), 0);
    assert.equal(await store.lastId(directKey("b", "c")), 0);
    const named = await store.history({ conversation: roomKey("alice"), limit: 10 });
    assert.deepEqual(named.messages.map((m) => m.content), ["room named alice"]);
  });

  // --- durability and lifecycle -------------------------------------------------------------

  contract("history and ids survive close and reopen", async ({ store, reopen }) => {
    await fill(store, "a", 3);
    const dm = await store.append({
      draft: direct("alice", "bob", "kept"),
      user: "alice",
      ref: "k",
    });
    const before = await store.history({ conversation: roomKey("a"), limit: 10 });
    await store.close();
    const reopened = await reopen();
    assert.deepEqual(await reopened.history({ conversation: roomKey("a"), limit: 10 }), before);
    assert.equal(await reopened.lastId(roomKey("a")), 3);
    const next = await reopened.append({ draft: room("a", "after restart"), user: "alice" });
    assert.equal(next.message.id, 4);
    // Idempotency survives the restart too: a client retrying after reconnect.
    const retry = await reopened.append({
      draft: direct("alice", "bob", "kept"),
      user: "alice",
      ref: "k",
    });
    assert.deepEqual([retry.duplicate, retry.message], [true, dm.message]);
  }, { needs: "durable" });

  contract("ids continue above pruned ones after reopen", async ({ store, reopen }) => {
    await fill(store, "a", 6);
    await store.close();
    const reopened = await reopen();
    const page = await reopened.history({ conversation: roomKey("a"), limit: 10 });
    assert.deepEqual(ids(page.messages), [5, 6]);
    const next = await reopened.append({ draft: room("a", "seven"), user: "alice" });
    assert.equal(next.message.id, 7);
  }, { overrides: { historyLimit: 2 }, needs: "durable" });

  contract("close waits for pending appends, and later calls reject", async ({ store }) => {
    const resolved: number[] = [];
    const pending = Array.from(
      { length: 5 },
      (_, i) =>
        store.append({ draft: room("a", `m${i}`), user: "alice" }).then((r) => {
          resolved.push(r.message.id);
          return r;
        }),
    );
    await store.close();
    assert.deepEqual(resolved, [1, 2, 3, 4, 5]);
    assert.deepEqual((await Promise.all(pending)).map((r) => r.message.id), [1, 2, 3, 4, 5]);
    await assert.rejects(store.append({ draft: room("a", "late"), user: "alice" }));
    await assert.rejects(store.history({ conversation: roomKey("a"), limit: 10 }));
    await assert.rejects(store.since(roomKey("a"), 0, 10));
    await assert.rejects(store.lastId(roomKey("a")));
    await assert.rejects(store.ping());
    await store.close(); // idempotent
  });

  contract("ping resolves while the store is open", async ({ store }) => {
    await store.ping();
    await store.append({ draft: room("a", "x"), user: "alice" });
    await store.ping();
  });
}
