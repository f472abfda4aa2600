/**
 * The message store: the one place that assigns message ids and keeps history.
 *
 * Backends: `memory.ts` (`memory:`), `sqlite.ts` (`sqlite:./parley.db`, the default),
 * `redis.ts` (`redis://…`). Every backend passes the shared suite in `_contract.ts`.
 * {@link openStore} picks one by URL with string-literal dynamic imports so `deno compile` bundles
 * all of them and a run loads only the one it uses.
 */
import type { ChatMessage, Draft } from "../../message.ts";

/** How long a `(user, ref)` pair is remembered for idempotent sends, in milliseconds. */
export const IDEMPOTENCY_WINDOW_MS = 5 * 60 * 1000;
/** Milliseconds in a day: `historyDays` counts these. */
export const DAY_MS = 86_400_000;

/** A message to store, with the identity used for idempotent retries. */
export interface AppendInput {
  /** The message without id and timestamp. */
  draft: Draft;
  /** The client's `ref`; with it, a retry by the same user within the window is stored once. */
  ref?: string;
  /** The stamped identity that sent it; idempotency is keyed by `(user, ref)`. */
  user: string;
}

/** The result of {@link MessageStore.append}. */
export interface AppendResult {
  /** The stored message: new, or the original one when `duplicate` is true. */
  message: ChatMessage;
  /** True when `(user, ref)` was seen within the window and nothing new was stored. */
  duplicate: boolean;
}

/** A page request; `before` and `after` are exclusive message ids, at most one of them. */
export interface HistoryQuery {
  /** A conversation key from `roomKey()` or `directKey()`. */
  conversation: string;
  before?: number;
  after?: number;
  /** Page size, 1 to 100. */
  limit: number;
}

/** One page of history. */
export interface HistoryPage {
  /** Ascending by id. */
  messages: ChatMessage[];
  /** True when more messages exist in the paging direction beyond this page. */
  hasMore: boolean;
}

/** Messages missed since a known id, for resuming after a reconnect. */
export interface Replay {
  /** Every retained message with id > `since`, ascending, at most `limit` of them. */
  messages: ChatMessage[];
  /** False when messages after `since` were pruned or more than `limit` exist: the client must
   * page `history` to fill the gap. */
  complete: boolean;
  /** The conversation's last assigned id at the time of the read (0 when empty). */
  lastId: number;
}

/**
 * Durable, ordered history of rooms and DM conversations.
 *
 * Contract (checked by `_contract.ts` for every backend):
 * - `append` assigns ids 1, 2, 3… per conversation: strictly increasing, never reused, even
 *   after pruning or a restart. `ts` is the server clock in ISO 8601 UTC.
 * - When `append` resolves, the message is durable for that backend (committed to disk for
 *   SQLite, accepted by Redis with its configured persistence) and visible to every reader.
 * - Appends from one caller resolve in call order; their ids are in the same order.
 * - Idempotency: an append with a `ref` already seen from the same `user` within
 *   {@link IDEMPOTENCY_WINDOW_MS} stores nothing and resolves with the original message and
 *   `duplicate: true`.
 * - Retention: at most `historyLimit` messages per conversation are kept (oldest pruned first),
 *   and when `historyDays` is set, none older than that.
 * - Rooms and DM conversations never see each other's messages.
 * - `close` waits for pending appends, then releases resources; later calls reject.
 */
export interface MessageStore {
  /** True when `append` also publishes the stored message to the broker atomically (Redis, when
   * the broker runs on the same server); callers must not publish it again. */
  readonly publishesOnAppend?: boolean;
  /** Stores a message and assigns its id and timestamp. */
  append(input: AppendInput): Promise<AppendResult>;
  /** Reads one page of a conversation: the newest `limit` before `before` (or the newest overall
   * when neither bound is given), or the oldest `limit` after `after`. */
  history(query: HistoryQuery): Promise<HistoryPage>;
  /** Reads everything after `since` for a resume, up to `limit` messages. */
  since(conversation: string, since: number, limit: number): Promise<Replay>;
  /** The last id assigned in a conversation, 0 when none. */
  lastId(conversation: string): Promise<number>;
  /** Resolves when the backend answers; rejects with the reason when it does not. */
  ping(): Promise<void>;
  /** Flushes pending writes and releases the backend. */
  close(): Promise<void>;
  /**
   * Backends that write in batches on the event loop (SQLite) report their batches and the time
   * those held the loop, for `parley_store_write_*`; the others leave it out.
   */
  writeStats?(): StoreWriteStats;
}

/** Write batches committed so far, and the event-loop time write batches took (failed ones
 * too); both only grow. */
export interface StoreWriteStats {
  batches: number;
  seconds: number;
}

/** Retention and clock settings shared by every backend. */
export interface StoreOptions {
  /** Messages kept per conversation. */
  historyLimit: number;
  /** Days a message is kept; 0 keeps messages regardless of age. */
  historyDays: number;
  /** The clock, injectable for tests; milliseconds since the epoch. */
  now?: () => number;
}

/** Options of {@link openStore}: retention and clock, plus the broker URL it will run beside. */
export interface OpenStoreOptions extends StoreOptions {
  /** The broker's URL. When it names the same Redis as a `redis://` store, the store publishes
   * each message from inside its append, which keeps publish order equal to id order across
   * nodes (`publishesOnAppend`). */
  broker?: string;
}

/** Opens the store named by a URL: `memory:`, `sqlite:PATH`, or `redis://…`/`rediss://…`. */
export async function openStore(url: string, options: OpenStoreOptions): Promise<MessageStore> {
  if (url === "memory:" || url === "memory") {
    const { MemoryMessageStore } = await import("./memory.ts");
    return new MemoryMessageStore(options);
  }
  if (url.startsWith("sqlite:")) {
    const { SqliteMessageStore } = await import("./sqlite.ts");
    return SqliteMessageStore.open(sqlitePath(url), options);
  }
  if (url.startsWith("redis://") || url.startsWith("rediss://")) {
    const { RedisMessageStore, eventsChannel } = await import("./redis.ts");
    const { broker, ...storeOptions } = options;
    return RedisMessageStore.open(
      url,
      broker === url ? { ...storeOptions, channel: eventsChannel() } : storeOptions,
    );
  }
  throw new Error(`Cannot open store: unsupported URL ${JSON.stringify(url)}`);
}

/** The file path of a `sqlite:` URL (`sqlite:./parley.db`, `sqlite:/var/lib/parley/parley.db`). */
export function sqlitePath(url: string): string {
  const path = url.slice("sqlite:".length);
  if (path === "") throw new Error('Cannot open store: "sqlite:" needs a file path');
  return path;
}
