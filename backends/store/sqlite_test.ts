/**
 * Tests of {@link SqliteMessageStore}: the shared store contract, plus what only SQLite has —
 * schema migrations, group commit of one turn's appends, bounded retention and open errors.
 *
 * Every case works in its own temp directory and removes it; stores are always closed, so the
 * op and resource sanitizers stay on.
 */
import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { join } from "node:path";
import { roomKey } from "../../message.ts";
import { DAY_MS, openStore, type StoreOptions } from "./mod.ts";
import { storeContract } from "./_contract.ts";
import { SqliteMessageStore } from "./sqlite.ts";
import { BUSY_TIMEOUT_MS, MIGRATIONS, SCHEMA_VERSION } from "./sqlite_schema.ts";

const OPTIONS: StoreOptions = { historyLimit: 1_000, historyDays: 0 };

storeContract("sqlite", async (options) => {
  const dir = await Deno.makeTempDir({ prefix: "parley_store_" });
  const path = join(dir, "parley.db");
  return {
    store: SqliteMessageStore.open(path, options),
    reopen: () => Promise.resolve(SqliteMessageStore.open(path, options)),
    cleanup: () => Deno.remove(dir, { recursive: true }),
  };
}, { durable: true });

/** Runs `body` with a fresh temp directory, removed afterwards. */
async function withDir(body: (dir: string) => void | Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "parley_store_" });
  try {
    await body(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

function userVersion(path: string): number {
  const db = new DatabaseSync(path);
  try {
    return (db.prepare("PRAGMA user_version").get() as { user_version: number }).user_version;
  } finally {
    db.close();
  }
}

function draft(content: string, room = "lobby") {
  return { type: "message" as const, room, sender: "alice", content };
}

Deno.test("SqliteMessageStore.open() applies migrations once and reopens an existing file", async () => {
  await withDir(async (dir) => {
    const path = join(dir, "parley.db");
    const first = SqliteMessageStore.open(path, OPTIONS);
    await first.append({ draft: draft("kept"), user: "alice" });
    await first.close();
    assert.equal(SCHEMA_VERSION, MIGRATIONS.length);
    assert.equal(userVersion(path), SCHEMA_VERSION);

    // Running migration 1 again would fail on CREATE TABLE: reopening must skip it.
    const second = SqliteMessageStore.open(path, OPTIONS);
    const page = await second.history({ conversation: roomKey("lobby"), limit: 10 });
    assert.deepEqual(page.messages.map((m) => m.content), ["kept"]);
    await second.close();
    assert.equal(userVersion(path), SCHEMA_VERSION);
  });
});

Deno.test("SqliteMessageStore.open() refuses a file from a newer schema", async () => {
  await withDir((dir) => {
    const path = join(dir, "parley.db");
    const db = new DatabaseSync(path);
    db.exec(`PRAGMA user_version = ${SCHEMA_VERSION + 1}`);
    db.close();
    assert.throws(
      () => SqliteMessageStore.open(path, OPTIONS),
      /^Error: Cannot open store: .*schema version \d+ is newer/,
    );
    assert.equal(userVersion(path), SCHEMA_VERSION + 1);
  });
});

Deno.test("SqliteMessageStore.open() names a missing directory", async () => {
  await withDir(async (dir) => {
    const path = join(dir, "missing", "parley.db");
    assert.throws(
      () => SqliteMessageStore.open(path, OPTIONS),
      (error: Error) =>
        error.message.startsWith("Cannot open store: directory") &&
        error.message.includes("missing") && error.message.includes("does not exist"),
    );
    await assert.rejects(openStore(`sqlite:${path}`, OPTIONS), /Cannot open store/);
  });
});

Deno.test("SqliteMessageStore.open() puts the file in WAL mode", async () => {
  await withDir(async (dir) => {
    const path = join(dir, "parley.db");
    const store = SqliteMessageStore.open(path, OPTIONS);
    const db = new DatabaseSync(path);
    try {
      assert.deepEqual({ ...db.prepare("PRAGMA journal_mode").get() }, { journal_mode: "wal" });
    } finally {
      db.close();
      await store.close();
    }
  });
});

Deno.test("SqliteMessageStore commits 1000 appends issued in one turn in one transaction", async () => {
  await withDir(async (dir) => {
    const store = SqliteMessageStore.open(join(dir, "parley.db"), OPTIONS);
    try {
      const pending = Array.from(
        { length: 1000 },
        (_, i) => store.append({ draft: draft(`m${i}`), user: "alice", ref: `r${i % 900}` }),
      );
      assert.equal(store.stats().batches, 0, "nothing is written before the turn ends");
      const results = await Promise.all(pending);
      assert.deepEqual(store.stats().batches, 1);
      assert.equal(store.stats().largestBatch, 1000);
      // The last 100 repeat refs r0..r99 of the same batch: duplicates, not new rows.
      assert.deepEqual(results.slice(900).map((r) => r.duplicate), Array(100).fill(true));
      assert.deepEqual(
        results.slice(900).map((r) => r.message.id),
        results.slice(0, 100).map((r) => r.message.id),
      );
      assert.equal(await store.lastId(roomKey("lobby")), 900);

      await store.append({ draft: draft("next turn"), user: "alice" });
      assert.equal(store.stats().batches, 2);
    } finally {
      await store.close();
    }
  });
});

Deno.test("SqliteMessageStore fails a batch another process keeps locked, and counts its time", async () => {
  await withDir(async (dir) => {
    const path = join(dir, "parley.db");
    const store = SqliteMessageStore.open(path, OPTIONS);
    const other = new DatabaseSync(path);
    try {
      await store.append({ draft: draft("before"), user: "alice" });
      const before = store.writeStats();
      assert.equal(before.batches, 1);
      // An outside tool holding the write lock past BUSY_TIMEOUT_MS fails the batch.
      other.exec("BEGIN IMMEDIATE");
      await assert.rejects(
        store.append({ draft: draft("locked"), user: "alice" }),
        /Cannot append: .*locked/,
      );
      other.exec("ROLLBACK");
      const after = store.writeStats();
      assert.equal(after.batches, 1, "a failed batch is not a committed one");
      assert.ok(
        after.seconds - before.seconds >= BUSY_TIMEOUT_MS / 1000 * 0.9,
        `the lock wait held the loop and counts: ${after.seconds - before.seconds} s`,
      );
      // The store still works once the lock is gone, and the failed message took no id.
      const next = await store.append({ draft: draft("after"), user: "alice" });
      assert.equal(next.message.id, 2);
    } finally {
      other.close();
      await store.close();
    }
  });
});

Deno.test("SqliteMessageStore keeps ids after close and reopen", async () => {
  await withDir(async (dir) => {
    const path = join(dir, "parley.db");
    const first = SqliteMessageStore.open(path, OPTIONS);
    const unawaited = [1, 2, 3].map((i) => first.append({ draft: draft(`m${i}`), user: "alice" }));
    await first.close();
    assert.deepEqual((await Promise.all(unawaited)).map((r) => r.message.id), [1, 2, 3]);
    const second = await openStore(`sqlite:${path}`, OPTIONS);
    try {
      assert.equal(await second.lastId(roomKey("lobby")), 3);
      assert.equal((await second.append({ draft: draft("m4"), user: "alice" })).message.id, 4);
    } finally {
      await second.close();
    }
  });
});

Deno.test("SqliteMessageStore deletes over-limit rows in bounded slices", async () => {
  await withDir(async (dir) => {
    const path = join(dir, "parley.db");
    // Write 500 messages with no limit, then reopen with a limit of 10: 490 rows are condemned.
    const loose = SqliteMessageStore.open(path, OPTIONS);
    await Promise.all(
      Array.from({ length: 500 }, (_, i) => loose.append({ draft: draft(`m${i}`), user: "a" })),
    );
    await loose.close();

    const strict = SqliteMessageStore.open(path, { ...OPTIONS, historyLimit: 10 });
    try {
      const page = await strict.history({ conversation: roomKey("lobby"), limit: 100 });
      assert.deepEqual(
        page.messages.map((m) => m.id),
        Array.from({ length: 10 }, (_, i) => 491 + i),
      );
      const oldest = await strict.history({ conversation: roomKey("lobby"), after: 0, limit: 3 });
      assert.deepEqual(oldest.messages.map((m) => m.id), [491, 492, 493]);
      const replay = await strict.since(roomKey("lobby"), 100, 100);
      assert.deepEqual([replay.messages.length, replay.complete], [10, false]);
      // One append deletes at most 1 + PRUNE_SLACK_ROWS rows; the background pass does the rest.
      await strict.append({ draft: draft("m500"), user: "a" });
      const afterAppend = strict.stats().prunedRows;
      assert.ok(afterAppend > 0 && afterAppend < 491, `pruned ${afterAppend}`);
      strict.pruneNow();
      assert.equal(strict.stats().prunedRows, 491);
      assert.equal(countRows(path), 10);
      const again = await strict.history({ conversation: roomKey("lobby"), limit: 100 });
      assert.deepEqual(
        again.messages.map((m) => m.id),
        Array.from({ length: 10 }, (_, i) => 492 + i),
      );
    } finally {
      await strict.close();
    }
  });
});

Deno.test("SqliteMessageStore's background pass deletes messages past historyDays", async () => {
  await withDir(async (dir) => {
    const path = join(dir, "parley.db");
    let now = Date.UTC(2025, 0, 1);
    const store = SqliteMessageStore.open(path, { ...OPTIONS, historyDays: 1, now: () => now });
    try {
      await store.append({ draft: draft("old"), user: "a", ref: "x" });
      now += 2 * DAY_MS;
      await store.append({ draft: draft("new", "other"), user: "a" });
      store.pruneNow();
      assert.equal(countRows(path), 1);
      assert.equal(countRows(path, "refs"), 0);
    } finally {
      await store.close();
    }
  });
});

function countRows(path: string, table = "messages"): number {
  const db = new DatabaseSync(path);
  try {
    return (db.prepare(`SELECT count(*) AS n FROM ${table}`).get() as { n: number }).n;
  } finally {
    db.close();
  }
}
