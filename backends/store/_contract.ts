/**
 * The conformance suite of {@link MessageStore}: one list of `Deno.test` cases that every backend
 * (memory, SQLite, Redis) runs unchanged, so the contract in `store.ts` is checked, not hoped for.
 *
 * A backend's test file calls {@link storeContract} with a name and an `open` function. Invariants
 * of the suite:
 * - Each case opens its own fresh store (an empty namespace: a temp file, a key prefix) and calls
 *   `cleanup` at the end, whatever happened. Cases never share state, so they may run in parallel.
 * - Time-dependent cases drive the store's injected clock (`StoreOptions.now`); none sleeps.
 * - Cases a backend cannot support are registered as ignored through {@link StoreFeatures}, so
 *   the test report shows the gap instead of hiding it.
 */
import assert from "node:assert/strict";
import type { ChatMessage, Draft } from "../../message.ts";
import { directKey, roomKey } from "../../message.ts";
import {
  type AppendResult,
  IDEMPOTENCY_WINDOW_MS,
  type MessageStore,
  type StoreOptions,
} from "./mod.ts";

/** Start of the injected clock: 2025-01-01T00:00:00Z, in milliseconds. */
const EPOCH_MS = Date.UTC(2025, 0, 1);
const MINUTE_MS = 60_000;
const DAY_MS = 86_400_000;
/** Retention large enough that no case prunes unless it means to. */
const UNLIMITED = 100_000;
/** Appends issued in one turn by the ordering cases. */
const CONCURRENT_APPENDS = 200;

/** A store opened for one case, and how to reopen and dispose of it. */
export interface StoreHandle {
  /** The store under test, empty. */
  store: MessageStore;
  /** Opens the same data again after `store.close()`: a restart. Required when `durable`. */
  reopen?: () => Promise<MessageStore>;
  /** Removes what `open` created (temp files, keys); called after every store is closed. */
  cleanup: () => Promise<void>;
}

/** Opens a fresh, empty store with the given options. */
export type OpenStore = (options: StoreOptions) => Promise<StoreHandle>;

/** What a backend supports, and how its cases must be run. */
export interface StoreFeatures {
  /** History survives close and reopen (`StoreHandle.reopen` is given). Default false. */
  durable?: boolean;
  /** Expiry follows `StoreOptions.now` (idempotency window, `historyDays`). Default true. */
  injectedClock?: boolean;
  /** Skip the whole suite, e.g. when `redis-server` is not installed. Default false. */
  ignore?: boolean;
  /** Sanitizer settings for backends whose client keeps background resources. */
  sanitizeOps?: boolean;
  sanitizeResources?: boolean;
}

/** What a case gets: its fresh store, a restart, and the store's clock. */
interface CaseContext {
  store: MessageStore;
  /** Reopens the data after `store.close()`; the suite closes the new store too. */
  reopen: () => Promise<MessageStore>;
  clock: Clock;
}

/** A controllable clock for `StoreOptions.now`. */
interface Clock {
  now: () => number;
  advance(ms: number): void;
}

function clock(): Clock {
  let t = EPOCH_MS;
  return {
    now: () => t,
    advance(ms) {
      t += ms;
    },
  };
}

function room(name: string, content: string, sender = "alice"): Draft {
  return { type: "message", room: name, sender, content };
}

function direct(from: string, to: string, content: string): Draft {
  return { type: "direct", from, to, content };
}

function ids(messages: ChatMessage[]): number[] {
  return messages.map((m) => m.id);
}

function range(from: number, to: number): number[] {
  return Array.from({ length: to - from + 1 }, (_, i) => from + i);
}

async function fill(store: MessageStore, name: string, count: number): Promise<void> {
  await Promise.all(
    Array.from(
      { length: count },
      (_, i) => store.append({ draft: room(name, `m${i + 1}`), user: "alice" }),
    ),
  );
}

/**
 * Registers the store conformance cases for one backend. Test names read
 * `store contract (<name>): <behaviour>`.
 */
export function storeContract(name: string, open: OpenStore, features: StoreFeatures = {}): void {
  const durable = features.durable ?? false;
  const injectedClock = features.injectedClock ?? true;

  /** Registers one case: opens a store, runs `body`, closes whatever is open and cleans up. */
  function contract(
    behaviour: string,
    body: (t: CaseContext) => Promise<void>,
    options: { overrides?: Partial<StoreOptions>; needs?: "clock" | "durable" } = {},
  ): void {
    const ignore = (features.ignore ?? false) ||
      (options.needs === "clock" && !injectedClock) ||
      (options.needs === "durable" && !durable);
    const definition: Deno.TestDefinition = {
      name: `store contract (${name}): ${behaviour}`,
      ignore,
      async fn() {
        const c = clock();
        const handle = await open({
          historyLimit: UNLIMITED,
          historyDays: 0,
          now: c.now,
          ...options.overrides,
        });
        const opened = [handle.store];
        const reopen = async () => {
          if (handle.reopen === undefined) throw new Error("Cannot reopen: backend has no reopen");
          const store = await handle.reopen();
          opened.push(store);
          return store;
        };
        try {
          await body({ store: handle.store, reopen, clock: c });
        } finally {
          try {
            for (const store of opened) await store.close();
          } finally {
            await handle.cleanup();
          }
        }
      },
    };
    if (features.sanitizeOps !== undefined) definition.sanitizeOps = features.sanitizeOps;
    if (features.sanitizeResources !== undefined) {
      definition.sanitizeResources = features.sanitizeResources;
    }
    Deno.test(definition);
  }

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
