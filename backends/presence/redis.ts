/**
 * The Redis {@link Presence} (`--redis`): who is online in which room, across every node.
 *
 * Keys, under a prefix (default `parley:`):
 * - `{prefix}presence:nodes`: sorted set of node ids scored by the time (ms) their entries
 *   expire; each node pushes its own score forward every `ttl / HEARTBEATS_PER_TTL`.
 * - `{prefix}presence:node:{nodeId}`: set of the node's entries, each `["room","user"]` (JSON).
 * - `{prefix}presence:room:{room}`: hash of user → number of nodes that have the user in the
 *   room. A user is online in a room exactly while the field exists; `users` is `HKEYS`.
 *
 * Invariants:
 * - Every change is one Lua script, so the count and the entries agree and "came online" /
 *   "went offline" is decided once, by the script that moved a count between 0 and 1.
 * - An entry counts until a script removes it: a dead node's users stay online until a sweep
 *   removes its entries, and that sweep (on any node: the script runs once, atomically) reports
 *   each user whose count reached 0. So every expiry is reported by exactly one node.
 * - A node that was swept while alive (stalled longer than the ttl) finds its id missing at its
 *   next heartbeat or join and writes its entries back from its local copy.
 * - A join or leave that failed (Redis unreachable) leaves Redis out of step with the node: a
 *   user who disconnected meanwhile would stay online for good. After such a failure, and after
 *   every reconnect, the next heartbeat makes Redis hold exactly the node's local entries and
 *   reports users that went offline by it to the {@link ExpiryListener}, like an expiry.
 * - After its own connection to Redis comes back, a node waits one ttl before sweeping, so the
 *   other nodes have heartbeated again and an outage is not mistaken for their death.
 * - The scripts build room keys from entries, so this needs a single Redis (or a primary with
 *   replicas), not Redis Cluster.
 */
import { getLogger } from "@logtape/logtape";
import { connectRedis, DEFAULT_REDIS_PREFIX, type RedisClient, Script } from "../redis.ts";
import type { ExpiryListener, Presence } from "./mod.ts";

/** Heartbeats per ttl: a node refreshes its entries every `ttl / HEARTBEATS_PER_TTL`, and also
 * sweeps expired nodes then; 3 tolerates two lost heartbeats. */
const HEARTBEATS_PER_TTL = 3;
/** Dead nodes removed by one sweep script; the next sweep takes the rest. */
const SWEEP_BATCH = 16;

const log = getLogger(["parley", "presence"]);

/** Options of {@link RedisPresence.open}. */
export interface RedisPresenceOptions {
  /** The Redis to share presence through. */
  url: string;
  /** How long a node's entries outlive its last heartbeat, in seconds. */
  ttlSeconds: number;
  /** This node's id, unique in the cluster; a random UUID by default. */
  nodeId?: string;
  /** Prefix of every key; every node of a cluster must use the same. */
  prefix?: string;
  /** The clock, injectable for tests; milliseconds since the epoch. */
  now?: () => number;
  /** Run heartbeats and sweeps on timers (default true); tests drive `heartbeat`/`sweep`. */
  timers?: boolean;
}

// KEYS: nodes, node set. ARGV: node id, expiry ms, prefix, entry JSON…
// Registers the node and adds the entries it lacks; returns the entries whose user came online.
const RESTORE = new Script(`
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
local online = {}
for i = 4, #ARGV do
  if redis.call('SADD', KEYS[2], ARGV[i]) == 1 then
    local entry = cjson.decode(ARGV[i])
    if redis.call('HINCRBY', ARGV[3] .. 'presence:room:' .. entry[1], entry[2], 1) == 1 then
      online[#online + 1] = ARGV[i]
    end
  end
end
return online
`);

// KEYS: nodes, node set. ARGV: node id, expiry ms, prefix, entry JSON…
// Registers the node and makes its entries exactly the given ones; returns {room, user, …} of
// users now offline everywhere.
const SYNC = new Script(`
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
local wanted = {}
for i = 4, #ARGV do wanted[ARGV[i]] = true end
local offline = {}
for _, member in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  if wanted[member] then
    wanted[member] = nil
  else
    redis.call('SREM', KEYS[2], member)
    local entry = cjson.decode(member)
    local room = ARGV[3] .. 'presence:room:' .. entry[1]
    if redis.call('HINCRBY', room, entry[2], -1) <= 0 then
      redis.call('HDEL', room, entry[2])
      offline[#offline + 1] = entry[1]
      offline[#offline + 1] = entry[2]
    end
  end
end
for member in pairs(wanted) do
  redis.call('SADD', KEYS[2], member)
  local entry = cjson.decode(member)
  redis.call('HINCRBY', ARGV[3] .. 'presence:room:' .. entry[1], entry[2], 1)
end
return offline
`);

// KEYS: nodes, node set, room hash. ARGV: node id, expiry ms, entry JSON, user.
// Returns 1 when the user came online, 0 when not, -1 when this node was swept (nothing done).
const JOIN = new Script(`
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return -1 end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
if redis.call('SADD', KEYS[2], ARGV[3]) == 0 then return 0 end
return redis.call('HINCRBY', KEYS[3], ARGV[4], 1) == 1 and 1 or 0
`);

// KEYS: node set, room hash. ARGV: entry JSON, user. Returns 1 when the user went offline.
const LEAVE = new Script(`
if redis.call('SREM', KEYS[1], ARGV[1]) == 0 then return 0 end
if redis.call('HINCRBY', KEYS[2], ARGV[2], -1) > 0 then return 0 end
redis.call('HDEL', KEYS[2], ARGV[2])
return 1
`);

// KEYS: nodes. ARGV: node id, expiry ms. Returns 0 when this node was swept (nothing done).
const HEARTBEAT = new Script(`
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
return 1
`);

// Removes every entry of the given nodes; returns {room, user, …} of users now offline.
const REMOVE_NODE = `
local function remove_node(nodes, prefix, node, offline)
  local set = prefix .. 'presence:node:' .. node
  for _, member in ipairs(redis.call('SMEMBERS', set)) do
    local entry = cjson.decode(member)
    local room = prefix .. 'presence:room:' .. entry[1]
    if redis.call('HINCRBY', room, entry[2], -1) <= 0 then
      redis.call('HDEL', room, entry[2])
      offline[#offline + 1] = entry[1]
      offline[#offline + 1] = entry[2]
    end
  end
  redis.call('DEL', set)
  redis.call('ZREM', nodes, node)
  return offline
end
`;

// KEYS: nodes. ARGV: now ms, prefix, batch. Removes expired nodes; returns who went offline.
const SWEEP = new Script(
  REMOVE_NODE + `
local offline = {}
local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])
for _, node in ipairs(dead) do remove_node(KEYS[1], ARGV[2], node, offline) end
return offline
`,
);

// KEYS: nodes. ARGV: node id, prefix. A clean goodbye: removes this node's entries.
const GOODBYE = new Script(
  REMOVE_NODE + `
return remove_node(KEYS[1], ARGV[2], ARGV[1], {})
`,
);

/** Shares presence through Redis; see the module doc for keys and guarantees. */
export class RedisPresence implements Presence {
  /** This node's id. */
  readonly nodeId: string;
  readonly #client: RedisClient;
  readonly #prefix: string;
  readonly #ttlMs: number;
  readonly #now: () => number;
  /** This node's entries (JSON `["room","user"]`), updated when a call is made: the copy a
   * swept node restores from. */
  readonly #entries = new Set<string>();
  #listener: ExpiryListener | undefined;
  #timer: ReturnType<typeof setInterval> | undefined;
  #tick: Promise<void> | undefined;
  #restoring: Promise<Set<string>> | undefined;
  /** Sweeps wait until this time (ms) after this node's connection came back. */
  #sweepAfter = 0;
  /** True when Redis may not hold exactly {@link #entries}: a join or leave failed, or the
   * connection dropped. The next heartbeat synchronises. */
  #unsynced = false;
  #closed = false;

  private constructor(client: RedisClient, options: RedisPresenceOptions, nodeId: string) {
    this.#client = client;
    this.nodeId = nodeId;
    this.#prefix = options.prefix ?? DEFAULT_REDIS_PREFIX;
    this.#ttlMs = options.ttlSeconds * 1000;
    this.#now = options.now ?? Date.now;
    let lost = false;
    client.on("error", () => lost = true);
    client.on("ready", () => {
      if (!lost) return;
      lost = false;
      this.#sweepAfter = this.#now() + this.#ttlMs;
      this.#unsynced = true;
      // Catch up now rather than at the next tick: presence is wrong until then.
      if (this.#timer !== undefined) this.#startTick();
    });
  }

  /** Connects, registers this node and starts its heartbeats; rejects with "Cannot connect to
   * Redis: …" when Redis cannot be reached. */
  static async open(options: RedisPresenceOptions): Promise<RedisPresence> {
    if (!(options.ttlSeconds > 0)) {
      throw new RangeError("Cannot open presence: ttlSeconds must be positive");
    }
    const client = await connectRedis(options.url, "presence");
    const presence = new RedisPresence(client, options, options.nodeId ?? crypto.randomUUID());
    try {
      await presence.#restore();
    } catch (error) {
      client.destroy();
      throw error;
    }
    if (options.timers ?? true) {
      presence.#timer = setInterval(
        () => presence.#startTick(),
        presence.#ttlMs / HEARTBEATS_PER_TTL,
      );
    }
    return presence;
  }

  join(room: string, user: string): Promise<boolean> {
    if (this.#closed) return closed();
    const entry = JSON.stringify([room, user]);
    this.#entries.add(entry);
    const reply = JOIN.run<number>(this.#client, [
      this.#nodesKey(),
      this.#nodeKey(),
      this.#roomKey(room),
    ], [this.nodeId, this.#expiry(), entry, user]);
    return reply.then(async (result) => {
      if (result !== -1) return result === 1;
      // Swept while alive: the restore writes back every local entry, this one included.
      return (await this.#restore()).has(entry);
    }, (error) => this.#failed(error));
  }

  leave(room: string, user: string): Promise<boolean> {
    if (this.#closed) return closed();
    const entry = JSON.stringify([room, user]);
    this.#entries.delete(entry);
    return LEAVE.run<number>(this.#client, [this.#nodeKey(), this.#roomKey(room)], [entry, user])
      .then((result) => result === 1, (error) => this.#failed(error));
  }

  users(room: string): Promise<string[]> {
    if (this.#closed) return closed();
    return (this.#client.sendCommand(["HKEYS", this.#roomKey(room)]) as Promise<string[]>)
      .then((users) => users.sort(), failed);
  }

  count(room: string): Promise<number> {
    if (this.#closed) return closed();
    return (this.#client.sendCommand(["HLEN", this.#roomKey(room)]) as Promise<number>)
      .catch(failed);
  }

  onExpired(listener: ExpiryListener): void {
    this.#listener = listener;
  }

  ping(): Promise<void> {
    if (this.#closed) return closed();
    return this.#client.sendCommand(["PING"]).then(() => {}, failed);
  }

  /** Pushes this node's expiry forward, restoring its entries if another node swept them.
   * The node's timer calls it; exposed for tests and tools. */
  async heartbeat(): Promise<void> {
    if (this.#closed) return closed();
    if (this.#unsynced) return await this.#sync();
    const alive = await HEARTBEAT.run<number>(this.#client, [this.#nodesKey()], [
      this.nodeId,
      this.#expiry(),
    ]).catch(failed);
    if (alive === 0) {
      log.warn("Presence entries of this node had expired; restoring them", {
        node: this.nodeId,
      });
      await this.#restore();
    }
  }

  /** Removes the entries of nodes whose expiry passed and reports each user who went offline
   * everywhere to the {@link ExpiryListener}. The node's timer calls it; exposed for tests. */
  async sweep(): Promise<void> {
    if (this.#closed) return closed();
    const now = this.#now();
    if (now < this.#sweepAfter) return;
    const offline = await SWEEP.run<string[]>(this.#client, [this.#nodesKey()], [
      String(now),
      this.#prefix,
      String(SWEEP_BATCH),
    ]).catch(failed);
    this.#report(offline);
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#stopTimer();
    await this.#tick;
    this.#closed = true;
    try {
      await GOODBYE.run(this.#client, [this.#nodesKey()], [this.nodeId, this.#prefix]);
    } catch (error) {
      // Unreachable Redis: the entries expire after the ttl and another node reports them.
      log.warn("Cannot remove presence entries on close", { error: String(error) });
    }
    await this.#client.close().catch(() => this.#client.destroy());
  }

  /** Stops heartbeats and disconnects without a goodbye, as a crash would: the entries stay
   * until another node's sweep expires them. For tests. */
  async abandon(): Promise<void> {
    if (this.#closed) return;
    this.#stopTimer();
    await this.#tick;
    this.#closed = true;
    this.#client.destroy();
  }

  /** Starts a heartbeat and sweep unless one is running. */
  #startTick(): void {
    this.#tick ??= this.#heartbeatAndSweep().finally(() => this.#tick = undefined);
  }

  /** Makes Redis hold exactly this node's local entries (see the module doc). */
  async #sync(): Promise<void> {
    this.#unsynced = false;
    const offline = await SYNC.run<string[]>(
      this.#client,
      [this.#nodesKey(), this.#nodeKey()],
      [this.nodeId, this.#expiry(), this.#prefix, ...this.#entries],
    ).catch((error) => this.#failed(error));
    this.#report(offline);
  }

  /** Tells the listener about users that went offline everywhere (`[room, user, …]`). */
  #report(offline: string[]): void {
    for (let i = 0; i + 1 < offline.length; i += 2) {
      try {
        this.#listener?.(offline[i]!, offline[i + 1]!);
      } catch (error) {
        log.error("Presence expiry listener failed", { error: String(error) });
      }
    }
  }

  /** Marks Redis as out of step with this node, then fails like {@link failed}. */
  #failed(error: unknown): never {
    this.#unsynced = true;
    return failed(error);
  }

  async #heartbeatAndSweep(): Promise<void> {
    try {
      await this.heartbeat();
      await this.sweep();
    } catch (error) {
      if (!this.#closed) log.warn("Presence heartbeat failed", { error: String(error) });
    }
  }

  /** Registers this node and writes back its local entries; one restore at a time. */
  #restore(): Promise<Set<string>> {
    this.#restoring ??= RESTORE.run<string[]>(
      this.#client,
      [this.#nodesKey(), this.#nodeKey()],
      [this.nodeId, this.#expiry(), this.#prefix, ...this.#entries],
    ).then((online) => new Set(online), failed).finally(() => this.#restoring = undefined);
    return this.#restoring;
  }

  #stopTimer(): void {
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#timer = undefined;
  }

  #expiry(): string {
    return String(this.#now() + this.#ttlMs);
  }

  #nodesKey(): string {
    return `${this.#prefix}presence:nodes`;
  }

  #nodeKey(): string {
    return `${this.#prefix}presence:node:${this.nodeId}`;
  }

  #roomKey(room: string): string {
    return `${this.#prefix}presence:room:${room}`;
  }
}

function closed(): Promise<never> {
  return Promise.reject(new Error("Cannot use presence: it is closed"));
}

function failed(error: unknown): never {
  const reason = error instanceof Error ? error.message : String(error);
  throw new Error(`Cannot update presence: Redis failed: ${reason}`, { cause: error });
}
