/**
 * The broker: carries events from the node that produced them to the hub of every node.
 *
 * Every chat message takes one path, whether Parley runs as one process or many:
 * validate → `store.append` (assigns the id) → `broker.publish` → each node's hub → local fan-out.
 * Backends: `memory.ts` (one process) and `redis.ts` (`--redis`). Both pass the shared suite in
 * `_contract.ts`.
 */
import type { ChatMessage } from "../../message.ts";

/** An ephemeral room event: never stored, delivered to the room's members on every node. */
export interface TypingEvent {
  type: "typing";
  room: string;
  user: string;
}

/** A user came online in a room (first connection on any node) or went offline (last one). */
export interface PresenceEvent {
  type: "user_joined" | "user_left";
  room: string;
  user: string;
}

/** What travels through the broker. */
export type BrokerEvent = ChatMessage | TypingEvent | PresenceEvent;

/** Receives the broker's events on one node; the returned promise is awaited before the next. */
export type BrokerListener = (event: BrokerEvent) => void | Promise<void>;

/** Told that events may have been missed (the transport reconnected after an outage): the
 * node's clients should reconnect and resume from the store. Only clustered backends call it. */
export type GapListener = () => void;

/**
 * Fan-out between nodes.
 *
 * Contract:
 * - Every published event reaches the listener of every subscribed node exactly once while the
 *   broker is connected; the publishing node's listener included.
 * - Events published by one node reach each listener in publish order. Chat messages of one
 *   conversation therefore arrive in id order, because ids are assigned in publish order.
 * - `publish` resolves once the event has been handed to the transport (for the memory broker:
 *   once every listener accepted it); it rejects when the transport is down, so the caller can
 *   answer `overloaded` instead of acknowledging.
 * - After `close`, `publish` rejects and no listener is called.
 */
export interface Broker {
  /** Sends an event to every node. */
  publish(event: BrokerEvent): Promise<void>;
  /** Registers this node's listener (the hub) and who to tell about gaps; call once. */
  subscribe(listener: BrokerListener, onGap?: GapListener): Promise<void>;
  /** Resolves when the transport answers; rejects with the reason when it does not. */
  ping(): Promise<void>;
  /** Stops delivery and releases the transport. */
  close(): Promise<void>;
}

/** Opens the broker named by a URL: `memory:`, or `redis://…`/`rediss://…` for a cluster. */
export async function openBroker(url: string): Promise<Broker> {
  if (url === "memory:" || url === "memory") {
    const { MemoryBroker } = await import("./memory.ts");
    return new MemoryBroker();
  }
  if (url.startsWith("redis://") || url.startsWith("rediss://")) {
    const { RedisBroker } = await import("./redis.ts");
    return RedisBroker.open(url);
  }
  throw new Error(`Cannot open broker: unsupported URL ${JSON.stringify(url)}`);
}
