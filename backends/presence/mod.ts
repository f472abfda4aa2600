/**
 * Presence: which users are online in which room, across every node.
 *
 * Each node's Hub knows its own connections. It reports a user's first local connection entering
 * a room (`join`) and last local connection leaving it (`leave`); the presence backend combines
 * the nodes' reports and answers whether the change is visible cluster-wide, so `user_joined` /
 * `user_left` are published once per user, not once per node or tab.
 *
 * Backends: `memory.ts` (one process) and `redis.ts` (`--redis`), both checked by `_contract.ts`.
 * {@link openPresence} picks one by URL with string-literal dynamic imports so `deno compile`
 * bundles both and a run loads only the one it uses.
 */

/** Called when entries of a node that stopped heartbeating expire; only clustered backends call. */
export type ExpiryListener = (room: string, user: string) => void;

/**
 * The cluster-wide presence view.
 *
 * Contract:
 * - `join(room, user)` resolves true exactly when no node had `user` in `room` before it.
 * - `leave(room, user)` resolves true exactly when no node has `user` in `room` after it.
 * - A node's entries live `ttl` seconds unless refreshed; a node refreshes its own entries while
 *   it runs. When a node dies without leaving, its entries expire and, for each user that is then
 *   offline everywhere, one node reports it to its {@link ExpiryListener} (once per expiry).
 * - `users(room)` lists online users, sorted, each once however many tabs or nodes they use.
 * - `close()` removes this node's entries (a clean goodbye) and stops heartbeats.
 */
export interface Presence {
  /** Records that this node has `user` in `room`; true when the user just came online there. */
  join(room: string, user: string): Promise<boolean>;
  /** Records that this node no longer has `user` in `room`; true when the user went offline. */
  leave(room: string, user: string): Promise<boolean>;
  /** Online users of a room across the cluster, sorted. */
  users(room: string): Promise<string[]>;
  /** Number of online users of a room across the cluster. */
  count(room: string): Promise<number>;
  /** Registers the listener for expired entries. */
  onExpired(listener: ExpiryListener): void;
  /** Resolves when the backend answers; rejects with the reason when it does not. */
  ping(): Promise<void>;
  /** Says goodbye for this node and releases resources. */
  close(): Promise<void>;
}

/** Options of {@link openPresence}. */
export interface OpenPresenceOptions {
  /** Redis: how long a node's entries outlive its last heartbeat, in seconds. The memory
   * backend has no other node to outlive and ignores it. */
  ttlSeconds: number;
}

/**
 * Opens the presence view named by a URL: `memory:` for one process, or `redis://…`/`rediss://…`
 * to share it with every node on that Redis.
 */
export async function openPresence(url: string, options: OpenPresenceOptions): Promise<Presence> {
  if (url === "memory:" || url === "memory") {
    const { MemoryPresence } = await import("./memory.ts");
    return new MemoryPresence();
  }
  if (url.startsWith("redis://") || url.startsWith("rediss://")) {
    const { RedisPresence } = await import("./redis.ts");
    return await RedisPresence.open({ url, ttlSeconds: options.ttlSeconds });
  }
  throw new Error(`Cannot open presence: unsupported URL ${JSON.stringify(url)}`);
}
