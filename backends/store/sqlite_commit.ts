/**
 * Group commit for the SQLite store: {@link GroupCommit} owns the queue of appends not yet
 * written and is the only code that writes messages.
 *
 * Invariants:
 * - `append` never writes by itself. It queues the message; every append of one event-loop turn
 *   is written in ONE `BEGIN IMMEDIATE … COMMIT` (at most {@link MAX_BATCH_APPENDS}), and only
 *   then do their promises resolve, in call order. A busy room therefore costs one commit per
 *   turn, not one per message, and fan-out never waits on a per-message fsync.
 * - The flush is scheduled with `setImmediate` (node:timers): it runs after every I/O and timer
 *   callback of the current loop iteration, so appends issued from separate socket events share
 *   a commit. A microtask flush would commit each socket event alone, and `setTimeout(0)` adds
 *   Deno's timer latency to every commit; both stay selectable for the bench ({@link FlushMode}).
 * - Ids are reserved and rows inserted in the same transaction, so a failed batch leaves no gap
 *   and no message: every append of it rejects, and the next batch reuses the ids.
 * - Duplicates `(user, ref)` inside one batch are caught before the database; those already in
 *   `refs` within {@link IDEMPOTENCY_WINDOW_MS} answer with the original message.
 * - Each batch deletes at most its own size plus {@link PRUNE_SLACK_ROWS} over-limit rows per
 *   conversation it touched, and as many expired refs, so retention keeps pace with inserts
 *   without one batch ever paying for a large backlog.
 */
import type { DatabaseSync } from "node:sqlite";
import { clearImmediate, setImmediate } from "node:timers";
import { conversationKey } from "../../message.ts";
import { type AppendInput, type AppendResult, IDEMPOTENCY_WINDOW_MS } from "./mod.ts";
import {
  type ConversationRow,
  describe,
  original,
  type RefRow,
  stamp,
  type Statements,
  transaction,
} from "./sqlite_schema.ts";

/** Most appends written in one transaction; the rest go in the next turn's batch. It bounds how
 * long one commit holds the event loop: three statements per append. */
export const MAX_BATCH_APPENDS = 1_000;
/** Extra over-limit rows a batch may delete per conversation, beyond one per appended message. */
export const PRUNE_SLACK_ROWS = 64;

/** When a batch is written: `immediate` (`setImmediate`, after this loop iteration's I/O and
 * timer callbacks), `timeout` (`setTimeout(0)`) or `microtask` (end of this task). */
export type FlushMode = "immediate" | "timeout" | "microtask";

/** What {@link GroupCommit} writes with. */
export interface GroupCommitOptions {
  db: DatabaseSync;
  sql: Statements;
  /** The store's clock, in milliseconds since the epoch. */
  now: () => number;
  /** Ids at or below `floor(lastId)` are over `historyLimit` and may be deleted. */
  floor: (lastId: number) => number;
  flush: FlushMode;
}

/** Write counters; they only grow. */
export interface CommitStats {
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
  /** Over-limit messages and expired refs deleted by batches. */
  prunedRows: number;
}

interface Pending {
  input: AppendInput;
  resolve: (result: AppendResult) => void;
  reject: (reason: Error) => void;
}

/** Queues appends and writes each turn's in one transaction; see the module doc. */
export class GroupCommit {
  readonly #db: DatabaseSync;
  readonly #sql: Statements;
  readonly #now: () => number;
  readonly #floor: (lastId: number) => number;
  readonly #mode: FlushMode;
  #pending: Pending[] = [];
  #scheduled = false;
  #timer: ReturnType<typeof setImmediate> | ReturnType<typeof setTimeout> | undefined;
  #closed = false;
  readonly #stats: CommitStats = {
    batches: 0,
    appends: 0,
    largestBatch: 0,
    maxBatchMs: 0,
    totalBatchMs: 0,
    prunedRows: 0,
  };

  /** Creates an empty queue writing through `options.sql`. */
  constructor(options: GroupCommitOptions) {
    this.#db = options.db;
    this.#sql = options.sql;
    this.#now = options.now;
    this.#floor = options.floor;
    this.#mode = options.flush;
  }

  /** Returns a snapshot of the write counters. */
  stats(): CommitStats {
    return { ...this.#stats };
  }

  /** Queues one append; it resolves once its batch is committed, after every earlier append. */
  append(input: AppendInput): Promise<AppendResult> {
    if (this.#closed) return Promise.reject(new Error("Cannot append: store is closed"));
    const { promise, resolve, reject } = Promise.withResolvers<AppendResult>();
    this.#pending.push({ input, resolve, reject });
    this.#schedule();
    return promise;
  }

  /** Writes every pending append now, in batches, and refuses later ones; idempotent. */
  close(): void {
    this.#closed = true;
    if (this.#mode === "immediate") {
      clearImmediate(this.#timer as ReturnType<typeof setImmediate> | undefined);
    } else {
      clearTimeout(this.#timer as ReturnType<typeof setTimeout> | undefined);
    }
    this.#timer = undefined;
    while (this.#pending.length > 0) this.#flush();
  }

  #schedule(): void {
    if (this.#scheduled) return;
    this.#scheduled = true;
    switch (this.#mode) {
      case "immediate":
        this.#timer = setImmediate(() => this.#flush());
        break;
      case "timeout":
        this.#timer = setTimeout(() => this.#flush(), 0);
        break;
      case "microtask":
        queueMicrotask(() => this.#flush());
        break;
    }
  }

  /** Commits up to MAX_BATCH_APPENDS pending appends in one transaction, then settles them. */
  #flush(): void {
    this.#scheduled = false;
    this.#timer = undefined;
    // close() may have written everything already when a microtask flush arrives.
    if (this.#pending.length === 0) return;
    const batch = this.#pending.length <= MAX_BATCH_APPENDS
      ? this.#pending
      : this.#pending.slice(0, MAX_BATCH_APPENDS);
    this.#pending = this.#pending.length <= MAX_BATCH_APPENDS
      ? []
      : this.#pending.slice(MAX_BATCH_APPENDS);
    if (this.#pending.length > 0 && !this.#closed) this.#schedule();

    const started = performance.now();
    const stats = this.#stats;
    let results: AppendResult[];
    try {
      results = transaction(this.#db, () => this.#write(batch, this.#now()));
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
        const seen = sql.findRef.get(input.user, input.ref, refsFrom) as RefRow | undefined;
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
}
