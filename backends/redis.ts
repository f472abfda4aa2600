/**
 * Shared plumbing of the Redis backends (`store/redis.ts`, `broker/redis.ts`,
 * `presence/redis.ts`): connections, key naming, and Lua scripts that survive a flushed script
 * cache without reordering commands.
 *
 * Invariants:
 * - Connections never queue commands while disconnected (`disableOfflineQueue`): a call made
 *   during an outage rejects at once, so callers answer `overloaded` and `/readyz` reports 503
 *   instead of piling up work that may never run.
 * - They reconnect with capped exponential backoff and jitter for as long as the process runs,
 *   but the first connection fails fast: a node that cannot reach Redis at startup says so.
 * - {@link Script.run} issues its command synchronously, so commands leave in call order and
 *   their replies resolve in call order on one connection.
 */
import { getLogger } from "@logtape/logtape";
import { createHash } from "node:crypto";
import { createClient } from "redis";

/** Key prefix of every Parley key and channel, so one Redis can host other data too. */
export const DEFAULT_REDIS_PREFIX = "parley:";
/** First reconnect delay, in milliseconds; doubles per attempt up to {@link RECONNECT_MAX_MS}. */
const RECONNECT_BASE_MS = 50;
/** Longest pause between reconnect attempts, in milliseconds. */
const RECONNECT_MAX_MS = 2_000;
/** Connection attempts at startup before `open` gives up. */
const START_ATTEMPTS = 3;
/** Time to establish one TCP (and TLS) connection, in milliseconds. */
const CONNECT_TIMEOUT_MS = 5_000;

const log = getLogger(["parley", "redis"]);

/** A node-redis client as the backends use it. */
export type RedisClient = ReturnType<typeof createClient>;

/** The pub/sub channel that carries broker events: `{prefix}events`. The Redis store publishes
 * appended messages on it too, from inside its append script. */
export function eventsChannel(prefix: string = DEFAULT_REDIS_PREFIX): string {
  return `${prefix}events`;
}

/**
 * Connects to Redis with the backends' settings; `role` names the connection in logs and in
 * `CLIENT LIST`. Rejects with "Cannot connect to Redis: …" when the server cannot be reached.
 */
export async function connectRedis(url: string, role: string): Promise<RedisClient> {
  let ready = false;
  const client = createClient({
    url,
    name: `parley-${role}`,
    disableOfflineQueue: true,
    socket: {
      connectTimeout: CONNECT_TIMEOUT_MS,
      reconnectStrategy: (retries, cause) => {
        if (!ready && retries + 1 >= START_ATTEMPTS) {
          return new Error(`Cannot connect to Redis: ${cause.message}`, { cause });
        }
        const backoff = Math.min(RECONNECT_BASE_MS * 2 ** retries, RECONNECT_MAX_MS);
        return Math.round(backoff / 2 + Math.random() * backoff / 2);
      },
    },
  });
  let down = false;
  client.on("error", (error: Error) => {
    // Every failed attempt emits an error; log the outage once, not once per retry.
    if (ready && !down) log.warn("Redis connection lost", { role, error: error.message });
    down = true;
  });
  client.on("ready", () => {
    epochs.set(client, (epochs.get(client) ?? 0) + 1);
    if (ready && down) log.info("Redis connection restored", { role });
    ready = true;
    down = false;
  });
  try {
    await client.connect();
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    throw new Error(
      message.startsWith("Cannot connect to Redis")
        ? message
        : `Cannot connect to Redis: ${message}`,
      { cause: error },
    );
  }
  return client;
}

/**
 * A Lua script run with `EVALSHA`, sending the body with `EVAL` only until Redis confirmed it has
 * the script on the current connection.
 *
 * node-redis's own scripts retry `EVALSHA` with `EVAL` after `NOSCRIPT`. With pipelining that
 * reorders commands: calls issued after the failed one may run before its retry. Here every call
 * sends `EVAL` while the script is unconfirmed (after connecting or reconnecting, when a restarted
 * server may have lost its script cache) and switches to `EVALSHA` once an `EVAL` has answered;
 * the connection executes in order, so every later `EVALSHA` finds the script. A `NOSCRIPT`
 * anyway (someone ran `SCRIPT FLUSH`) rejects that one call, which its caller reports as
 * retryable, and the next calls send the body again.
 */
export class Script {
  readonly #source: string;
  readonly #sha: string;
  /** The connection epoch in which each client last confirmed the script. */
  readonly #confirmed = new WeakMap<RedisClient, number>();

  /** Prepares a script; `source` is its Lua body. */
  constructor(source: string) {
    this.#source = source;
    this.#sha = createHash("sha1").update(source).digest("hex");
  }

  /** Runs the script on `client`; the command is written before this returns. */
  run<T>(client: RedisClient, keys: string[], args: string[]): Promise<T> {
    const epoch = epochs.get(client) ?? 0;
    if (this.#confirmed.get(client) === epoch) {
      return (client.sendCommand([
        "EVALSHA",
        this.#sha,
        String(keys.length),
        ...keys,
        ...args,
      ]) as Promise<T>).catch((error: unknown) => {
        if (String(error).includes("NOSCRIPT")) this.#confirmed.delete(client);
        throw error;
      });
    }
    return (client.sendCommand([
      "EVAL",
      this.#source,
      String(keys.length),
      ...keys,
      ...args,
    ]) as Promise<T>).then((reply) => {
      this.#confirmed.set(client, epoch);
      return reply;
    });
  }
}

/** How many times each client's connection became ready: a new epoch may be a restarted server
 * with an empty script cache. */
const epochs = new WeakMap<RedisClient, number>();
