/**
 * The durable {@link MessageStore} for `--store sqlite:PATH` (the default), on `node:sqlite`.
 *
 * It owns one SQLite file and the only connection this process keeps to it. The file, its schema
 * and statements live in `sqlite_schema.ts`; writes go through the group commit of
 * `sqlite_commit.ts`; this class reads, enforces retention and closes. Invariants:
 * - **Ids**: the `conversations` table holds each conversation's `last_id`; it only grows, so ids
 *   are never reused after pruning or a restart. Ids are reserved and rows inserted in the same
 *   transaction, so a failed batch leaves no gap and no message.
 * - **Group commit**: every append of one event-loop turn is written in one transaction, and
 *   their promises resolve after it, in call order (see `sqlite_commit.ts`).
 * - **Durability**: WAL journal with `synchronous=FULL`. An append resolves only after its batch's
 *   commit has been fsynced to the WAL, so an acknowledged message survives a process crash
 *   (SIGKILL) *and* an OS crash or power loss, which is what "every ack means committed" promises
 *   and what `mod.ts` says ("committed to disk"). `NORMAL` would survive SIGKILL but could lose
 *   the last commits on power loss. Group commit pays one fsync per batch, not per message.
 *   `SqliteTuning.synchronous` exists for the bench and for operators who accept the risk.
 * - **The fsync runs on the event loop**, inside `COMMIT`. The loop is blocked while the senders'
 *   next messages arrive, so those are read, stored and fanned out together; acks released from
 *   an fsync on a thread pool would reach the fan-out in smaller groups, and per-frame cost
 *   dominates. At saturation each round's messages arrive together, so the loop has nothing to
 *   overlap with the commit anyway (docs/BENCHMARKS.md has the measurements). The time commits
 *   hold the loop is exported as `parley_store_write_seconds_total`
 *   ({@link SqliteMessageStore.writeStats}).
 * - **Retention never blocks for long**: reads filter out what retention already condemns
 *   (`id > last_id - historyLimit`, and `ts >= now - historyDays`), so pruning is only physical
 *   clean-up and may lag. Each batch deletes a bounded number of over-limit rows per conversation
 *   it touched (so it keeps pace with inserts), and a timer walks every conversation deleting at
 *   most {@link PRUNE_TICK_ROWS} rows per tick (age-based pruning, quiet conversations, expired
 *   idempotency refs), re-arming quickly while behind.
 * - **Idempotency**: `refs` maps `(user, ref)` to the conversation and id it produced, for
 *   {@link IDEMPOTENCY_WINDOW_MS}.
 * - **Schema**: versioned and migrated at open; a file from a newer server is refused.
 * - The connection is synchronous: every statement runs on the event loop. Reads are bounded by
 *   the page limit (≤ 101 rows), writes by the batch and prune bounds.
 */
import type { DatabaseSync } from "node:sqlite";
import {
  type AppendInput,
  type AppendResult,
  DAY_MS,
  type HistoryPage,
  type HistoryQuery,
  IDEMPOTENCY_WINDOW_MS,
  type MessageStore,
  type Replay,
  type StoreOptions,
  type StoreWriteStats,
} from "./mod.ts";
import { type FlushMode, GroupCommit } from "./sqlite_commit.ts";
import {
  type ConversationRow,
  describe,
  type MessageRow,
  openDatabase,
  prepareStatements,
  type Statements,
  type Synchronous,
  toMessage,
  transaction,
} from "./sqlite_schema.ts";

/** Interval of the background retention pass, in milliseconds. */
export const PRUNE_INTERVAL_MS = 60_000;
/** Delay before the next retention pass while the last one ran out of budget, in milliseconds;
 * far below PRUNE_INTERVAL_MS so a backlog drains in small slices. */
export const PRUNE_CATCHUP_MS = 10;
/** Most rows (messages plus refs) one background retention pass deletes; it bounds how long a
 * pass holds the event loop. */
export const PRUNE_TICK_ROWS = 500;
/** Most conversations one background retention pass visits. */
export const PRUNE_TICK_CONVERSATIONS = 500;

/** Knobs for benchmarks and operators; the defaults are the documented behaviour. */
export interface SqliteTuning {
  /** `FULL` (default): an ack survives power loss. `NORMAL`: it survives a process crash only. */
  synchronous?: Synchronous;
  /** When a batch is written: `immediate` (default: `setImmediate`, after this loop iteration's
   * I/O and timer callbacks), `timeout` (`setTimeout(0)`) or `microtask` (end of this task). */
  flush?: FlushMode;
}

/** Counters for tests, metrics and the bench; they only grow. */
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

/** Keeps history in a SQLite file: durable, group-committed, pruned in bounded slices. */
export class SqliteMessageStore implements MessageStore {
  readonly #db: DatabaseSync;
  readonly #options: StoreOptions;
  readonly #now: () => number;
  readonly #sql: Statements;
  readonly #writes: GroupCommit;
  #pruneTimer: ReturnType<typeof setTimeout> | undefined;
  /** The last conversation id the background pass visited. */
  #pruneCursor = 0;
  /** Rows the background pass deleted; the batches count their own. */
  #prunedRows = 0;
  #maxPruneMs = 0;
  #closed = false;

  private constructor(db: DatabaseSync, options: StoreOptions, tuning: SqliteTuning) {
    this.#db = db;
    this.#options = options;
    this.#now = options.now ?? Date.now;
    this.#sql = prepareStatements(db);
    this.#writes = new GroupCommit({
      db,
      sql: this.#sql,
      now: this.#now,
      floor: (lastId) => this.#floor(lastId),
      flush: tuning.flush ?? "immediate",
    });
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
    const db = openDatabase(path, tuning.synchronous ?? "FULL");
    try {
      return new SqliteMessageStore(db, options, tuning);
    } catch (error) {
      db.close();
      throw new Error(`Cannot open store: ${JSON.stringify(path)}: ${describe(error)}`, {
        cause: error,
      });
    }
  }

  /** Returns a snapshot of the write and retention counters. */
  stats(): SqliteStoreStats {
    const writes = this.#writes.stats();
    return {
      ...writes,
      prunedRows: writes.prunedRows + this.#prunedRows,
      maxPruneMs: this.#maxPruneMs,
    };
  }

  writeStats(): StoreWriteStats {
    const writes = this.#writes.stats();
    return { batches: writes.batches, seconds: writes.totalBatchMs / 1000 };
  }

  append(input: AppendInput): Promise<AppendResult> {
    return this.#writes.append(input);
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
    clearTimeout(this.#pruneTimer);
    this.#pruneTimer = undefined;
    this.#writes.close();
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

  /** Runs the background retention pass now; for tests and the bench. */
  pruneNow(): void {
    if (this.#closed) throw new Error("Cannot prune: store is closed");
    clearTimeout(this.#pruneTimer);
    this.#pruneTick();
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
      transaction(this.#db, () => {
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
      this.#prunedRows += PRUNE_TICK_ROWS - budget;
    } catch {
      // Pruning is best effort: reads already hide condemned rows. Try again next interval.
      budget = 1;
    }
    this.#maxPruneMs = Math.max(this.#maxPruneMs, performance.now() - started);
    this.#schedulePrune(budget <= 0 ? PRUNE_CATCHUP_MS : PRUNE_INTERVAL_MS);
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
