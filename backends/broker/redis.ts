/**
 * The Redis {@link Broker} (`--redis`): pub/sub on one channel, `{prefix}events`, shared by every
 * node of a cluster.
 *
 * It owns two connections: a publisher, and a subscriber that Redis dedicates to pub/sub. Events
 * travel as their JSON; the Redis store publishes stored chat messages on the same channel from
 * inside its append script, so this broker delivers those too.
 *
 * Invariants:
 * - The listener is called for one event at a time, in the order the subscriber connection
 *   received them, each call awaited before the next (an internal promise chain). Redis sends a
 *   channel's messages to a subscriber in the order it executed the `PUBLISH`es, so a
 *   conversation's messages reach every hub in id order.
 * - `publish` and `ping` reject while either connection is down: senders get `overloaded`, no
 *   ack is sent for a message that was not delivered, and `/readyz` reports 503.
 * - Both connections reconnect with backoff; node-redis subscribes again on reconnect. Pub/sub
 *   does not replay what was published during the outage, so the gap listener given to
 *   `subscribe` is told, and the node makes its clients resume from the store.
 * - After `close`, `publish` rejects and the listener is never called again.
 */
import { getLogger } from "@logtape/logtape";
import type { Broker, BrokerEvent, BrokerListener, GapListener } from "./mod.ts";
import { connectRedis, DEFAULT_REDIS_PREFIX, eventsChannel, type RedisClient } from "../redis.ts";

/** Deliveries waiting for the listener before the broker logs that this node falls behind. */
const BACKLOG_WARNING = 10_000;

const log = getLogger(["parley", "broker"]);

/** Options of {@link RedisBroker.open}. */
export interface RedisBrokerOptions {
  /** Prefix of the channel name; every node of a cluster must use the same. */
  prefix?: string;
}

/** Carries events between nodes through Redis pub/sub. */
export class RedisBroker implements Broker {
  readonly #publisher: RedisClient;
  readonly #subscriber: RedisClient;
  readonly #channel: string;
  #onGap: GapListener | undefined;
  #listener: BrokerListener | undefined;
  /** Settles when the last queued delivery was handed to the listener. */
  #deliveries: Promise<void> = Promise.resolve();
  #backlog = 0;
  #subscribed = false;
  #closed = false;

  private constructor(
    publisher: RedisClient,
    subscriber: RedisClient,
    options: RedisBrokerOptions,
  ) {
    this.#publisher = publisher;
    this.#subscriber = subscriber;
    this.#channel = eventsChannel(options.prefix ?? DEFAULT_REDIS_PREFIX);
    let lost = false;
    subscriber.on("error", () => lost = this.#subscribed);
    subscriber.on("ready", () => {
      if (!lost || this.#closed) return;
      lost = false;
      log.warn("Broker resubscribed after an outage; events in between were missed", {
        channel: this.#channel,
      });
      this.#onGap?.();
    });
  }

  /** Connects the publisher and the subscriber; rejects with "Cannot connect to Redis: …". */
  static async open(url: string, options: RedisBrokerOptions = {}): Promise<RedisBroker> {
    const publisher = await connectRedis(url, "publisher");
    let subscriber: RedisClient;
    try {
      subscriber = await connectRedis(url, "subscriber");
    } catch (error) {
      publisher.destroy();
      throw error;
    }
    return new RedisBroker(publisher, subscriber, options);
  }

  publish(event: BrokerEvent): Promise<void> {
    if (this.#closed) return Promise.reject(new Error("Cannot publish: broker is closed"));
    if (this.#subscribed && !this.#subscriber.isReady) {
      // This node would not see its own event; refuse rather than half-deliver.
      return Promise.reject(new Error("Cannot publish: Redis subscriber is disconnected"));
    }
    return this.#publisher.sendCommand(["PUBLISH", this.#channel, JSON.stringify(event)]).then(
      () => {},
      (error: unknown) => {
        throw new Error(`Cannot publish: Redis failed: ${errorMessage(error)}`, { cause: error });
      },
    );
  }

  async subscribe(listener: BrokerListener, onGap?: GapListener): Promise<void> {
    if (this.#closed) throw new Error("Cannot subscribe: broker is closed");
    if (this.#listener !== undefined) throw new Error("Cannot subscribe: already subscribed");
    this.#listener = listener;
    this.#onGap = onGap;
    await this.#subscriber.subscribe(this.#channel, (text: string) => this.#receive(text));
    this.#subscribed = true;
  }

  async ping(): Promise<void> {
    if (this.#closed) throw new Error("Broker is closed");
    if (!this.#subscriber.isReady) throw new Error("Redis subscriber is disconnected");
    try {
      await this.#publisher.sendCommand(["PING"]);
    } catch (error) {
      throw new Error(`Cannot reach Redis: ${errorMessage(error)}`, { cause: error });
    }
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#listener = undefined;
    await Promise.allSettled([
      this.#publisher.close().catch(() => this.#publisher.destroy()),
      this.#subscriber.close().catch(() => this.#subscriber.destroy()),
    ]);
    await this.#deliveries;
  }

  /** Queues one received event behind the ones before it. */
  #receive(text: string): void {
    let event: BrokerEvent;
    try {
      event = JSON.parse(text) as BrokerEvent;
    } catch {
      log.error("Broker received an event that is not JSON", { channel: this.#channel });
      return;
    }
    if (++this.#backlog === BACKLOG_WARNING) {
      log.warn("Broker deliveries are backing up", { backlog: this.#backlog });
    }
    this.#deliveries = this.#deliveries.then(async () => {
      this.#backlog--;
      const listener = this.#listener;
      if (listener === undefined) return;
      try {
        await listener(event);
      } catch (error) {
        log.error("Broker listener failed", { error: errorMessage(error) });
      }
    });
  }
}

function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
