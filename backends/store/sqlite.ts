/**
 * The durable {@link MessageStore} for `--store sqlite:PATH` (the default), on `node:sqlite`.
 *
 * It owns one SQLite file and the only connection this process keeps to it. Invariants:
 * - **Ids**: the `conversations` table holds each conversation's `last_id`; it only grows, so ids
 *   are never reused after pruning or a restart. Ids are reserved and rows inserted in the same
 *   transaction, so a failed batch leaves no gap and no message.
 * - **Group commit**: `append` never writes by itself. It queues the message; every append of one
 *   event-loop turn is written in ONE `BEGIN IMMEDIATE … COMMIT` (at most
 *   {@link MAX_BATCH_APPENDS}), and only then do their promises resolve, in call order. A busy
 *   room therefore costs one commit per turn, not one per message, and fan-out never waits on a
 *   per-message fsync. The flush is scheduled with `setImmediate` (node:timers): it runs after
 *   every I/O and timer callback of the current loop iteration, so appends issued from separate
 *   socket events share a commit, and it adds only ~7 µs of latency. Measured in
 *   `bench/store_bench.ts`: a microtask flush commits each socket event alone (batch size 1 in
 *   the "spread" rows, ~20x fewer appends/s at 100 per loop iteration), and `setTimeout(0)` adds
 *   ~2 ms of timer latency per commit in Deno (~3x fewer appends/s at one append per turn).
 * - **Durability**: WAL journal with `synchronous=FULL`. An append resolves only after its batch's
 *   commit has been fsynced to the WAL, so an acknowledged message survives a process crash
 *   (SIGKILL) *and* an OS crash or power loss, which is what "every ack means committed" promises
 *   and what `store.ts` says ("committed to disk"). `NORMAL` would survive SIGKILL but could lose
 *   the last commits on power loss. Group commit pays one fsync per batch, so FULL costs about
 *   2x at one append per turn (~0.5 ms per commit here) and ~25% at 100 per turn.
 *   `SqliteTuning.synchronous` exists for the bench and for operators who accept the risk.
 *   Moving the fsync off the event loop was built and measured (2026-11-26): `synchronous=NORMAL`
 *   plus the store's own `FsFile.syncData()` of the WAL on Deno's blocking pool, acks released
 *   when it completes, readers clamped to synced ids. At saturation it delivered 71% of
 *   `memory:`'s throughput against 101% for this inline commit in the same kind of run: acks
 *   released by a thread-pool completion reach the fan-out in smaller groups (12 instead of 16
 *   events per frame), and per-frame cost dominates. Deferring the next commit until the running
 *   fsync ends (group commit at the fsync) did no better: 82%. The blocking commit holds the loop
 *   while the senders' next messages arrive, so they are read, stored and fanned out together.
 *   Inline it stays. At saturation each round's messages arrive together, so the loop has nothing
 *   to overlap with the commit anyway; full runs at 3f3a296 and 5ce8354 measured 92% and 99.9%
 *   of `memory:`'s throughput, with the commits holding the loop 7.5% and 8.0% of the time
 *   (BENCHMARKS.md). That time is exported as `parley_store_write_seconds_total`
 *   ({@link SqliteMessageStore.writeStats}).
 * - **Retention never blocks for long**: reads filter out what retention already condemns
 *   (`id > last_id - historyLimit`, and `ts >= now - historyDays`), so pruning is only physical
 *   clean-up and may lag. Each batch deletes at most its own size plus {@link PRUNE_SLACK_ROWS}
 *   over-limit rows per conversation it touched (so it keeps pace with inserts), and a timer
 *   walks every conversation deleting at most {@link PRUNE_TICK_ROWS} rows per tick (age-based
 *   pruning, quiet conversations, expired idempotency refs), re-arming quickly while behind.
 * - **Idempotency**: `refs` maps `(user, ref)` to the conversation and id it produced, for
 *   {@link IDEMPOTENCY_WINDOW_MS}. Duplicates inside one batch are caught before the database.
 * - **Schema**: versioned by `PRAGMA user_version`; {@link MIGRATIONS} run in order at open, each
 *   in its own transaction. A file from a newer server is refused, never modified.
 * - The connection is synchronous: every statement runs on the event loop. Reads are bounded by
 *   the page limit (≤ 101 rows), writes by the batch and prune bounds above.
 *
 * One process owns the file. `busy_timeout` only covers outside tools (a `sqlite3` shell, a
 * backup) briefly holding the lock, and it stalls the event loop while it waits, so it is short.
 */
import { DatabaseSync, type StatementSync } from "node:sqlite";
import { dirname } from "node:path";
import { clearImmediate, setImmediate } from "node:timers";
import type { ChatMessage, Draft } from "../../message.ts";
import { conversationKey } from "../../message.ts";
import {
  type AppendInput,
  type AppendResult,
  type HistoryPage,
  type HistoryQuery,
  IDEMPOTENCY_WINDOW_MS,
  type MessageStore,
  type Replay,
  type StoreOptions,
  type StoreWriteStats,
} from "./mod.ts";

/** How long a statement waits for a lock held by another process, in milliseconds. */
export const BUSY_TIMEOUT_MS = 1_000;
/** Most appends written in one transaction; the rest go in the next turn's batch. A commit of
 * 1,000 appends holds the event loop ~15–25 ms (node:sqlite costs ~10 µs per statement, three
 * statements per append); 100 appends ~3–6 ms (see the bench). */
export const MAX_BATCH_APPENDS = 1_000;
/** Extra over-limit rows a batch may delete per conversation, beyond one per appended message. */
export const PRUNE_SLACK_ROWS = 64;
/** Interval of the background retention pass, in milliseconds. */
export const PRUNE_INTERVAL_MS = 60_000;
/** Delay before the next retention pass while the last one ran out of budget, in milliseconds;
 * far below PRUNE_INTERVAL_MS so a backlog drains in small slices. */
export const PRUNE_CATCHUP_MS = 10;
/** Most rows (messages plus refs) one background retention pass deletes: ~3–5 ms a pass. */
export const PRUNE_TICK_ROWS = 500;
/** Most conversations one background retention pass visits. */
export const PRUNE_TICK_CONVERSATIONS = 500;
/** The WAL file is truncated back to this size after a checkpoint, in bytes. */
export const WAL_SIZE_LIMIT_BYTES = 64 * 1024 * 1024;

const DAY_MS = 86_400_000;

/** Knobs for benchmarks and operators; the defaults are the documented behaviour. */
export interface SqliteTuning {
  /** `FULL` (default): an ack survives power loss. `NORMAL`: it survives a process crash only. */
  synchronous?: "FULL" | "NORMAL";
  /** When a batch is written: `immediate` (default: `setImmediate`, after this loop iteration's
   * I/O and timer callbacks), `timeout` (`setTimeout(0)`) or `microtask` (end of this task). */
  flush?: "immediate" | "timeout" | "microtask";
}

/** Counters for tests, metrics and the bench; they only grow, except `pending`. */
export interface SqliteStoreStats {
  /** Append batches committed, one transaction each. */
  batches: number;
  /** Appends resolved by those batches, duplicates included. */
  appends: number;
  /** Most appends committed in one transaction. */
  largestBatch: number;
  /** Longest time one batch held the event loop, in milliseconds, failed batches included. */
  maxBatchMs: number;
  /** Time all batches held the event loop, in milliseconds, failed ones included. */
  totalBatchMs: number;
  /** Rows deleted by retention and idempotency expiry. */
  prunedRows: number;
  /** Longest time one background retention pass held the event loop, in milliseconds. */
  maxPruneMs: number;
}

/**
 * The schema migrations, in order: entry `i` moves `user_version` from `i` to `i + 1`.
 * Append new entries; never edit a released one.
 */
export const MIGRATIONS: readonly ((db: DatabaseSync) => void)[] = [
  (db) =>
    db.exec(`
      CREATE TABLE conversations (
        id      INTEGER PRIMARY KEY,
        key     TEXT    NOT NULL UNIQUE,
        last_id INTEGER NOT NULL
      );
      CREATE TABLE messages (
        conversation INTEGER NOT NULL,
        id           INTEGER NOT NULL,
        type         TEXT    NOT NULL CHECK (type IN ('message', 'direct')),
        sender       TEXT    NOT NULL,
        recipient    TEXT,
        room         TEXT,
        content      TEXT    NOT NULL,
        ts           INTEGER NOT NULL
      );
      CREATE UNIQUE INDEX messages_by_conversation ON messages (conversation, id);
      CREATE TABLE refs (
        user         TEXT    NOT NULL,
        ref          TEXT    NOT NULL,
        at           INTEGER NOT NULL,
        conversation INTEGER NOT NULL,
        id           INTEGER NOT NULL,
        PRIMARY KEY (user, ref)
      );
      CREATE INDEX refs_by_age ON refs (at);
    `),
];

/** The schema version this code writes: the number of {@link MIGRATIONS}. */
export const SCHEMA_VERSION = MIGRATIONS.length;

interface Pending {
  input: AppendInput;
  resolve: (result: AppendResult) => void;
  reject: (reason: Error) => void;
}

interface MessageRow {
  id: number;
  type: string;
  sender: string;
  recipient: string | null;
  room: string | null;
  content: string;
  ts: number;
}

interface ConversationRow {
  id: number;
  last_id: number;
}

const COLUMNS = "id, type, sender, recipient, room, content, ts";

/** Keeps history in a SQLite file: durable, group-committed, pruned in bounded slices. */
export class SqliteMessageStore implements MessageStore {
  readonly #db: DatabaseSync;
  readonly #options: StoreOptions;
  readonly #now: () => number;
  readonly #flushMode: NonNullable<SqliteTuning["flush"]>;
  readonly #sql: ReturnType<typeof prepare>;
  #pending: Pending[] = [];
  #flushScheduled = false;
  #flushTimer: ReturnType<typeof setImmediate> | ReturnType<typeof setTimeout> | undefined;
  #pruneTimer: ReturnType<typeof setTimeout> | undefined;
  /** The last conversation id the background pass visited. */
  #pruneCursor = 0;
  #closed = false;
  readonly #stats: SqliteStoreStats = {
    batches: 0,
    appends: 0,
    largestBatch: 0,
    maxBatchMs: 0,
    totalBatchMs: 0,
    prunedRows: 0,
    maxPruneMs: 0,
  };

  private constructor(db: DatabaseSync, options: StoreOptions, tuning: SqliteTuning) {
    this.#db = db;
    this.#options = options;
    this.#now = options.now ?? Date.now;
    this.#flushMode = tuning.flush ?? "immediate";
    this.#sql = prepare(db);
    this.#schedulePrune(PRUNE_INTERVAL_MS);
  }

  /**
   * Opens (creating if needed) the store at `path`, applies pending migrations and starts the
   * background retention pass. Throws `Cannot open store: …` when the file cannot be used.
   */
  static open(
    path: string,
    options: StoreOptions,
    tuning: SqliteTuning = {},
  ): SqliteMessageStore {
    if (path !== ":memory:") {
      const dir = dirname(path);
      try {
        if (!Deno.statSync(dir).isDirectory) {
          throw new Error(`Cannot open store: ${JSON.stringify(dir)} is not a directory`);
        }
      } catch (error) {
        if (error instanceof Deno.errors.NotFound) {
          throw new Error(
            `Cannot open store: directory ${JSON.stringify(dir)} of ${
              JSON.stringify(path)
            } does not exist`,
          );
        }
        throw error;
      }
    }
    let db: DatabaseSync;
    try {
      db = new DatabaseSync(path);
    } catch (error) {
      throw new Error(`Cannot open store: ${JSON.stringify(path)}: ${describe(error)}`, {
        cause: error,
      });
    }
    try {
      configure(db, tuning.synchronous ?? "FULL");
      migrate(db);
      return new SqliteMessageStore(db, options, tuning);
    } catch (error) {
      db.close();
      const reason = describe(error).replace(/^Cannot open store: /, "");
      throw new Error(`Cannot open store: ${JSON.stringify(path)}: ${reason}`, { cause: error });
    }
  }

  /** Returns a snapshot of the write and retention counters. */
  stats(): SqliteStoreStats {
    return { ...this.#stats };
  }

  writeStats(): StoreWriteStats {
    return { batches: this.#stats.batches, seconds: this.#stats.totalBatchMs / 1000 };
  }

  append(input: AppendInput): Promise<AppendResult> {
    if (this.#closed) return Promise.reject(new Error("Cannot append: store is closed"));
    const { promise, resolve, reject } = Promise.withResolvers<AppendResult>();
    this.#pending.push({ input, resolve, reject });
    this.#scheduleFlush();
    return promise;
  }

  history(query: HistoryQuery): Promise<HistoryPage> {
    return this.#read("Cannot read history", () => {
      const conversation = this.#sql.conversation.get(query.conversation) as
        | ConversationRow
        | undefined;
      if (conversation === undefined) return { messages: [], hasMore: false };
      const floor = this.#floor(conversation.last_id);
      const cutoff = this.#cutoff();
      const limit = query.limit;
      if (query.after !== undefined) {
        const rows = this.#sql.after.all(
          conversation.id,
          Math.max(query.after, floor),
          cutoff,
          limit + 1,
        ) as unknown as MessageRow[];
        return { messages: rows.slice(0, limit).map(toMessage), hasMore: rows.length > limit };
      }
      const rows = this.#sql.before.all(
        conversation.id,
        query.before ?? Number.MAX_SAFE_INTEGER,
        floor,
        cutoff,
        limit + 1,
      ) as unknown as MessageRow[];
      return {
        messages: rows.slice(0, limit).reverse().map(toMessage),
        hasMore: rows.length > limit,
      };
    });
  }

  since(key: string, since: number, limit: number): Promise<Replay> {
    return this.#read("Cannot read history", () => {
      const conversation = this.#sql.conversation.get(key) as ConversationRow | undefined;
      if (conversation === undefined) return { messages: [], complete: since === 0, lastId: 0 };
      const lastId = conversation.last_id;
      const rows = this.#sql.after.all(
        conversation.id,
        Math.max(since, this.#floor(lastId)),
        this.#cutoff(),
        limit,
      ) as unknown as MessageRow[];
      // Complete only when every id in (since, lastId] is still here and within the limit.
      const complete = since <= lastId && rows.length === lastId - since;
      return { messages: rows.map(toMessage), complete, lastId };
    });
  }

  lastId(key: string): Promise<number> {
    return this.#read("Cannot read history", () => {
      const row = this.#sql.conversation.get(key) as ConversationRow | undefined;
      return row?.last_id ?? 0;
    });
  }

  ping(): Promise<void> {
    return this.#read("Cannot ping store", () => {
      this.#sql.ping.get();
    });
  }

  /** Writes every pending append, stops the retention timer and closes the file; idempotent. */
  close(): Promise<void> {
    if (this.#closed) return Promise.resolve();
    this.#closed = true;
    if (this.#flushMode === "immediate") {
      clearImmediate(this.#flushTimer as ReturnType<typeof setImmediate> | undefined);
    } else {
      clearTimeout(this.#flushTimer as ReturnType<typeof setTimeout> | undefined);
    }
    clearTimeout(this.#pruneTimer);
    this.#flushTimer = this.#pruneTimer = undefined;
    while (this.#pending.length > 0) this.#flush();
    try {
      this.#db.exec("PRAGMA optimize");
      this.#db.close();
    } catch (error) {
      return Promise.reject(
        new Error(`Cannot close store: ${describe(error)}`, { cause: error }),
      );
    }
    return Promise.resolve();
  }

  // -------------------------------------------------------------------------------------------
  // Writes

  #scheduleFlush(): void {
    if (this.#flushScheduled) return;
    this.#flushScheduled = true;
    switch (this.#flushMode) {
      case "immediate":
        this.#flushTimer = setImmediate(() => this.#flush());
        break;
      case "timeout":
        this.#flushTimer = setTimeout(() => this.#flush(), 0);
        break;
      case "microtask":
        queueMicrotask(() => this.#flush());
        break;
    }
  }

  /** Commits up to MAX_BATCH_APPENDS pending appends in one transaction, then settles them. */
  #flush(): void {
    this.#flushScheduled = false;
    this.#flushTimer = undefined;
    // close() may have written everything already when a microtask flush arrives.
    if (this.#pending.length === 0) return;
    const batch = this.#pending.length <= MAX_BATCH_APPENDS
      ? this.#pending
      : this.#pending.slice(0, MAX_BATCH_APPENDS);
    this.#pending = this.#pending.length <= MAX_BATCH_APPENDS
      ? []
      : this.#pending.slice(MAX_BATCH_APPENDS);
    if (this.#pending.length > 0 && !this.#closed) this.#scheduleFlush();

    const started = performance.now();
    const stats = this.#stats;
    let results: AppendResult[];
    try {
      results = this.#transaction(() => this.#write(batch, this.#now()));
    } catch (error) {
      const reason = new Error(`Cannot append: ${describe(error)}`, { cause: error });
      for (const pending of batch) pending.reject(reason);
      return;
    } finally {
      // A failed batch held the loop too (a lock wait holds it longest): its time counts as well.
      const elapsed = performance.now() - started;
      stats.maxBatchMs = Math.max(stats.maxBatchMs, elapsed);
      stats.totalBatchMs += elapsed;
    }
    stats.batches++;
    stats.appends += batch.length;
    stats.largestBatch = Math.max(stats.largestBatch, batch.length);
    for (let i = 0; i < batch.length; i++) batch[i]!.resolve(results[i]!);
  }

  /** Writes one batch inside an open transaction; returns one result per input, in order. */
  #write(batch: Pending[], now: number): AppendResult[] {
    const sql = this.#sql;
    const ts = new Date(now).toISOString();
    const refsFrom = now - IDEMPOTENCY_WINDOW_MS;
    const results: (AppendResult | undefined)[] = new Array(batch.length);
    /** Batch index of the first append with a given `(user, ref)`, for in-batch duplicates. */
    const firstByRef = new Map<string, number>();
    const duplicateOf = new Map<number, number>();
    /** Fresh appends per conversation key, in call order. */
    const fresh = new Map<string, number[]>();

    for (let i = 0; i < batch.length; i++) {
      const { input } = batch[i]!;
      if (input.ref !== undefined) {
        const refKey = JSON.stringify([input.user, input.ref]);
        const first = firstByRef.get(refKey);
        if (first !== undefined) {
          duplicateOf.set(i, first);
          continue;
        }
        const seen = sql.findRef.get(input.user, input.ref, refsFrom) as
          | (Partial<MessageRow> & { ref_id: number; at: number })
          | undefined;
        if (seen !== undefined) {
          results[i] = { message: original(seen, input.draft), duplicate: true };
          continue;
        }
        firstByRef.set(refKey, i);
      }
      const key = conversationKey(input.draft);
      const list = fresh.get(key);
      if (list === undefined) fresh.set(key, [i]);
      else list.push(i);
    }

    for (const [key, indices] of fresh) {
      const conversation = sql.reserve.get(key, indices.length) as unknown as ConversationRow;
      let id = conversation.last_id - indices.length;
      for (const i of indices) {
        const { input } = batch[i]!;
        const message = stamp(input.draft, ++id, ts);
        const d = input.draft;
        sql.insert.run(
          conversation.id,
          id,
          d.type,
          d.type === "message" ? d.sender : d.from,
          d.type === "direct" ? d.to : null,
          d.type === "message" ? d.room : null,
          d.content,
          now,
        );
        if (input.ref !== undefined) {
          sql.putRef.run(input.user, input.ref, now, conversation.id, id);
        }
        results[i] = { message, duplicate: false };
      }
      const floor = this.#floor(conversation.last_id);
      if (floor > 0) {
        const budget = indices.length + PRUNE_SLACK_ROWS;
        this.#stats.prunedRows += Number(
          sql.pruneBelow.run(conversation.id, floor, budget).changes,
        );
      }
    }
    for (const [i, first] of duplicateOf) {
      results[i] = { message: results[first]!.message, duplicate: true };
    }
    // Expired refs accrue at most one per append: delete a little more than we add.
    this.#stats.prunedRows += Number(
      sql.expireRefs.run(refsFrom, batch.length + PRUNE_SLACK_ROWS).changes,
    );
    return results as AppendResult[];
  }

  #transaction<T>(body: () => T): T {
    this.#db.exec("BEGIN IMMEDIATE");
    try {
      const result = body();
      this.#db.exec("COMMIT");
      return result;
    } catch (error) {
      if (this.#db.isTransaction) this.#db.exec("ROLLBACK");
      throw error;
    }
  }

  // -------------------------------------------------------------------------------------------
  // Retention

  /** Ids at or below this are over `historyLimit`: invisible now, deleted eventually. */
  #floor(lastId: number): number {
    return Math.max(0, lastId - this.#options.historyLimit);
  }

  /** Messages with `ts` below this (ms) are over `historyDays`. */
  #cutoff(): number {
    const days = this.#options.historyDays;
    return days > 0 ? this.#now() - days * DAY_MS : Number.MIN_SAFE_INTEGER;
  }

  #schedulePrune(delay: number): void {
    const timer = setTimeout(() => this.#pruneTick(), delay);
    // Retention is housekeeping: it must not keep a process alive on its own.
    Deno.unrefTimer(timer);
    this.#pruneTimer = timer;
  }

  /** One bounded background retention pass over the next slice of conversations. */
  #pruneTick(): void {
    this.#pruneTimer = undefined;
    if (this.#closed) return;
    const started = performance.now();
    let budget = PRUNE_TICK_ROWS;
    try {
      this.#transaction(() => {
        const sql = this.#sql;
        const now = this.#now();
        budget -= Number(sql.expireRefs.run(now - IDEMPOTENCY_WINDOW_MS, budget).changes);
        const cutoff = this.#cutoff();
        const conversations = sql.conversationsAfter.all(
          this.#pruneCursor,
          PRUNE_TICK_CONVERSATIONS,
        ) as unknown as ConversationRow[];
        this.#pruneCursor = conversations.length < PRUNE_TICK_CONVERSATIONS
          ? 0 // wrapped: start over next time
          : conversations.at(-1)!.id;
        for (const conversation of conversations) {
          if (budget <= 0) {
            this.#pruneCursor = conversation.id - 1;
            break;
          }
          const floor = this.#floor(conversation.last_id);
          // Only the oldest `budget` rows are read, so a conversation with nothing to prune
          // costs one short index range scan.
          const oldest = sql.oldest.all(conversation.id, budget) as unknown as {
            id: number;
            ts: number;
          }[];
          let upTo = 0;
          for (const row of oldest) {
            if (row.id > floor && row.ts >= cutoff) break;
            upTo = row.id;
          }
          if (upTo > 0) {
            budget -= Number(sql.deleteUpTo.run(conversation.id, upTo).changes);
          }
        }
      });
      this.#stats.prunedRows += PRUNE_TICK_ROWS - budget;
    } catch {
      // Pruning is best effort: reads already hide condemned rows. Try again next interval.
      budget = 1;
    }
    this.#stats.maxPruneMs = Math.max(this.#stats.maxPruneMs, performance.now() - started);
    this.#schedulePrune(budget <= 0 ? PRUNE_CATCHUP_MS : PRUNE_INTERVAL_MS);
  }

  /** Runs for the background pass now; for tests and the bench. */
  pruneNow(): void {
    if (this.#closed) throw new Error("Cannot prune: store is closed");
    clearTimeout(this.#pruneTimer);
    this.#pruneTick();
  }

  // -------------------------------------------------------------------------------------------
  // Reads

  #read<T>(what: string, body: () => T): Promise<T> {
    if (this.#closed) return Promise.reject(new Error(`${what}: store is closed`));
    try {
      return Promise.resolve(body());
    } catch (error) {
      return Promise.reject(new Error(`${what}: ${describe(error)}`, { cause: error }));
    }
  }
}

/** Sets the connection's journal, durability and locking behaviour. */
function configure(db: DatabaseSync, synchronous: "FULL" | "NORMAL"): void {
  db.exec(`PRAGMA busy_timeout = ${BUSY_TIMEOUT_MS}`);
  const { journal_mode } = db.prepare("PRAGMA journal_mode = WAL").get() as {
    journal_mode: string;
  };
  if (journal_mode !== "wal" && journal_mode !== "memory") {
    throw new Error(`WAL journal not supported here (got ${JSON.stringify(journal_mode)})`);
  }
  db.exec(`PRAGMA synchronous = ${synchronous}`);
  db.exec(`PRAGMA journal_size_limit = ${WAL_SIZE_LIMIT_BYTES}`);
}

/** Applies every migration above the file's `user_version`, each in its own transaction. */
function migrate(db: DatabaseSync): void {
  for (;;) {
    db.exec("BEGIN IMMEDIATE");
    try {
      // Read inside the write lock, so two processes starting at once migrate once.
      const { user_version: version } = db.prepare("PRAGMA user_version").get() as {
        user_version: number;
      };
      if (version > MIGRATIONS.length) {
        throw new Error(
          `schema version ${version} is newer than this server's (${MIGRATIONS.length})`,
        );
      }
      const migration = MIGRATIONS[version];
      if (migration === undefined) {
        db.exec("COMMIT");
        return;
      }
      migration(db);
      db.exec(`PRAGMA user_version = ${version + 1}`);
      db.exec("COMMIT");
    } catch (error) {
      if (db.isTransaction) db.exec("ROLLBACK");
      throw error;
    }
  }
}

/** Prepares every statement once. */
function prepare(db: DatabaseSync) {
  const statements = {
    ping: db.prepare("SELECT 1"),
    conversation: db.prepare("SELECT id, last_id FROM conversations WHERE key = ?"),
    conversationsAfter: db.prepare(
      "SELECT id, last_id FROM conversations WHERE id > ? ORDER BY id LIMIT ?",
    ),
    reserve: db.prepare(
      `INSERT INTO conversations (key, last_id) VALUES (?1, ?2)
       ON CONFLICT (key) DO UPDATE SET last_id = last_id + ?2
       RETURNING id, last_id`,
    ),
    insert: db.prepare(
      `INSERT INTO messages (conversation, id, type, sender, recipient, room, content, ts)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
    ),
    before: db.prepare(
      `SELECT ${COLUMNS} FROM messages
       WHERE conversation = ? AND id < ? AND id > ? AND ts >= ?
       ORDER BY id DESC LIMIT ?`,
    ),
    after: db.prepare(
      `SELECT ${COLUMNS} FROM messages
       WHERE conversation = ? AND id > ? AND ts >= ?
       ORDER BY id LIMIT ?`,
    ),
    findRef: db.prepare(
      `SELECT r.id AS ref_id, r.at, m.id, m.type, m.sender, m.recipient, m.room, m.content, m.ts
       FROM refs r LEFT JOIN messages m ON m.conversation = r.conversation AND m.id = r.id
       WHERE r.user = ? AND r.ref = ? AND r.at > ?`,
    ),
    putRef: db.prepare(
      `INSERT INTO refs (user, ref, at, conversation, id) VALUES (?, ?, ?, ?, ?)
       ON CONFLICT (user, ref) DO UPDATE
       SET at = excluded.at, conversation = excluded.conversation, id = excluded.id`,
    ),
    expireRefs: db.prepare(
      `DELETE FROM refs WHERE rowid IN
       (SELECT rowid FROM refs WHERE at <= ? ORDER BY at LIMIT ?)`,
    ),
    // Deletes over-limit rows from the oldest end, at most `budget` of them: ids are dense
    // above the oldest retained one, so the range (min, min + budget) bounds the work.
    pruneBelow: db.prepare(
      `DELETE FROM messages WHERE conversation = ?1 AND id <= min(?2,
       (SELECT min(id) FROM messages WHERE conversation = ?1) + ?3 - 1)`,
    ),
    oldest: db.prepare("SELECT id, ts FROM messages WHERE conversation = ? ORDER BY id LIMIT ?"),
    deleteUpTo: db.prepare("DELETE FROM messages WHERE conversation = ? AND id <= ?"),
  } satisfies Record<string, StatementSync>;
  return statements;
}

/** Builds the wire shape of a stored message from a draft. */
function stamp(draft: Draft, id: number, ts: string): ChatMessage {
  return draft.type === "message"
    ? {
      type: "message",
      id,
      room: draft.room,
      sender: draft.sender,
      content: draft.content,
      ts,
    }
    : { type: "direct", id, from: draft.from, to: draft.to, content: draft.content, ts };
}

function toMessage(row: MessageRow): ChatMessage {
  const ts = new Date(row.ts).toISOString();
  return row.type === "message"
    ? {
      type: "message",
      id: row.id,
      room: row.room ?? "",
      sender: row.sender,
      content: row.content,
      ts,
    }
    : {
      type: "direct",
      id: row.id,
      from: row.sender,
      to: row.recipient ?? "",
      content: row.content,
      ts,
    };
}

/** The message a remembered ref produced; when retention already deleted it, the retry's own
 * draft stamped with the original id and time stands in (same content for a true retry). */
function original(
  seen: Partial<MessageRow> & { ref_id: number; at: number },
  draft: Draft,
): ChatMessage {
  if (seen.id !== undefined && seen.id !== null) return toMessage(seen as MessageRow);
  return stamp(draft, seen.ref_id, new Date(seen.at).toISOString());
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
