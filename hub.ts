/**
 * The Hub: the registry of connected clients, the rooms they are in and the users behind them,
 * and the local fan-out of everything the broker delivers.
 *
 * Ownership and invariants:
 * - The Hub is the only writer of its registry (`#clients`, `#rooms`, `#users`) and of every
 *   client's room list (`Client.addRoom`). It changes them only inside {@link Hub.run}, one
 *   {@link HubEvent} at a time, in the private synchronous `#apply`, which never awaits. Store
 *   and broker calls happen before an event reaches the hub.
 * - Each broadcast is encoded once ({@link prepare}) and the same string is enqueued to every
 *   recipient; enqueueing never blocks, so one slow client cannot hold up the others.
 * - A join is pending until its `join_ready` event arrives with the replay read from the store.
 *   While pending, live messages for that room are buffered for the client; on `join_ready` the
 *   client receives the replay, then the buffered messages newer than the replay, then live ones
 *   newer than all of those: no gap, no duplicate, in id order. A message the store read already
 *   returned may still be on its way through the broker (with Redis the read is faster than
 *   pub/sub); until a newer delivery arrives, the client's floor drops such late copies.
 * - Presence: when a user's first connection on this node enters a room, or its last one leaves,
 *   the hub reports the change through `onPresence`; the composition root asks the presence
 *   backend whether the change is cluster-wide and publishes `user_joined` / `user_left` through
 *   the broker. Those come back here as deliveries and reach the room's other members, only in
 *   rooms of at most `presenceEventsMax` members.
 *
 * Events from sockets are offered with `trySend` (callers answer `overloaded` when it fails);
 * events that must not be lost (broker deliveries, join completions, unregistrations) use `send`.
 * The events that end a client frame's effect (`join_ready`, `join_failed`, `leave`) may carry a
 * `done` callback, called synchronously once the event is applied (also when it changed nothing):
 * the chat layer runs a connection's next frame only after it.
 */
import type { BrokerEvent } from "./backends/broker/mod.ts";
import type { Client } from "./client.ts";
import {
  type ChatMessage,
  Close,
  prepare,
  type PreparedFrame,
  PROTOCOL_VERSION,
  type ServerFrame,
} from "./message.ts";
import { Queue } from "./delivery/queue.ts";

/** Default capacity of the hub's event queue. */
export const HUB_QUEUE_CAPACITY = 65_536;

/** Everything that changes the hub's state or asks it something. */
export type HubEvent =
  | { type: "register"; client: Client }
  | { type: "unregister"; client: Client }
  | { type: "join"; client: Client; room: string }
  | {
    type: "join_ready";
    client: Client;
    room: string;
    replay: ChatMessage[];
    lastId: number;
    /** Online users across the cluster when the join was read; merged with local members. */
    users?: string[];
    recovered?: boolean;
    /** The `join` frame's ref, echoed on `joined`. */
    ref?: string;
    /** Called once the event is applied, whatever its outcome. */
    done?: () => void;
  }
  | { type: "join_failed"; client: Client; room: string; ref?: string; done?: () => void }
  | { type: "leave"; client: Client; room: string; ref?: string; done?: () => void }
  | { type: "deliver"; event: BrokerEvent };

/** Settings of the hub. */
export interface HubOptions {
  /** The room every connection joins on open. */
  defaultRoom: string;
  /** Rooms above this many members get no `user_joined`/`user_left` broadcasts. */
  presenceEventsMax: number;
  /** Capacity of the event queue. */
  queueCapacity?: number;
  /** Observes fan-out work, for metrics; called once per delivered event. */
  onFanout?: (recipients: number, started: number) => void;
  /** Told when a user's first local connection entered (`online`) or last one left a room. */
  onPresence?: (room: string, user: string, online: boolean) => void;
}

interface Room {
  /** Live members; receive deliveries directly. */
  readonly live: Set<Client>;
  /** Members whose join is pending, with the deliveries held back for them. */
  readonly pending: Map<Client, ChatMessage[]>;
  /** Connections per user among live members. */
  readonly users: Map<string, number>;
  /** Live members that joined recently, with the last id they were sent at `join_ready`: a
   * delivery up to it is a late copy. Deliveries of a room arrive in id order, so the first one
   * above the floor removes it. */
  readonly floors: Map<Client, number>;
}

/** The registry and fan-out of one node. */
export class Hub {
  readonly #queue: Queue<HubEvent>;
  readonly #options: HubOptions;
  readonly #clients = new Set<Client>();
  readonly #rooms = new Map<string, Room>();
  /** Each user's connections on this node: the client itself while it is the only one (the usual
   * case, and a Set per user would cost ~150 bytes), a Set from the second on. */
  readonly #users = new Map<string, Client | Set<Client>>();

  /** Creates a hub with an empty registry. */
  constructor(options: HubOptions) {
    this.#options = options;
    this.#queue = new Queue(options.queueCapacity ?? HUB_QUEUE_CAPACITY);
  }

  /** Events waiting in the queue. */
  get queueDepth(): number {
    return this.#queue.size + this.#queue.waiting;
  }

  /** Connected clients. */
  get size(): number {
    return this.#clients.size;
  }

  /** Offers an event without waiting; false when the queue is full or closed. */
  trySend(event: HubEvent): boolean {
    return this.#queue.trySend(event);
  }

  /** Queues an event, waiting for space; rejects once the hub is closed. */
  send(event: HubEvent): Promise<void> {
    return this.#queue.send(event);
  }

  /** The broker listener of this node: queues a delivery, waiting for space. */
  deliver = (event: BrokerEvent): Promise<void> => this.#queue.send({ type: "deliver", event });

  /**
   * Applies events until the source ends; by default the hub's own queue, until
   * {@link Hub.close}. Tests pass a finite iterable.
   */
  async run(source: AsyncIterable<HubEvent> | Iterable<HubEvent> = this.#queue): Promise<void> {
    for await (const event of source) this.#apply(event);
  }

  /** Stops accepting events; `run()` returns once the queue has drained. */
  close(): void {
    this.#queue.close();
  }

  /** Closes every connected client with the given close code (shutdown: 1001). */
  closeAll(close: typeof Close[keyof typeof Close] = Close.goingAway): void {
    for (const client of this.#clients) client.close(close);
  }

  /** The (room, user) pairs this node has online, for saying goodbye at shutdown. */
  localPresence(): { room: string; user: string }[] {
    const pairs: { room: string; user: string }[] = [];
    for (const [room, state] of this.#rooms) {
      for (const user of state.users.keys()) pairs.push({ room, user });
    }
    return pairs;
  }

  /** Online user names of a room on this node, sorted; a snapshot for tests. */
  usersIn(room: string): string[] {
    return [...(this.#rooms.get(room)?.users.keys() ?? [])].sort();
  }

  /** Connections of a user on this node. */
  connectionsOf(user: string): number {
    const connections = this.#users.get(user);
    return connections === undefined ? 0 : connections instanceof Set ? connections.size : 1;
  }

  /** Rooms with at least one live or pending member. */
  get rooms(): string[] {
    return [...this.#rooms.keys()];
  }

  #apply(event: HubEvent): void {
    switch (event.type) {
      case "register":
        return this.#register(event.client);
      case "unregister":
        return this.#unregister(event.client);
      case "join":
        return this.#join(event.client, event.room);
      case "join_ready":
        this.#joinReady(event);
        return event.done?.();
      case "join_failed":
        this.#joinFailed(event.client, event.room, event.ref);
        return event.done?.();
      case "leave":
        this.#leave(event.client, event.room, true, event.ref);
        return event.done?.();
      case "deliver":
        return this.#deliver(event.event);
      default: {
        const unknown: never = event;
        throw new Error(`Cannot apply hub event: ${JSON.stringify(unknown)}`);
      }
    }
  }

  #register(client: Client): void {
    if (!client.active || this.#clients.has(client)) return;
    this.#clients.add(client);
    const connections = this.#users.get(client.user);
    if (connections === undefined) this.#users.set(client.user, client);
    else if (connections instanceof Set) connections.add(client);
    else this.#users.set(client.user, new Set([connections, client]));
    const room = this.#options.defaultRoom;
    const welcome: ServerFrame = {
      type: "welcome",
      user: client.user,
      connection: client.id,
      rooms: [room],
      protocol: PROTOCOL_VERSION,
    };
    if (client.expiresAt !== undefined) welcome.expiresAt = client.expiresAt.toISOString();
    client.enqueue(prepare(welcome));
    this.#addLive(client, room);
  }

  #unregister(client: Client): void {
    if (!this.#clients.delete(client)) return;
    for (const room of client.rooms) this.#leave(client, room, false);
    const connections = this.#users.get(client.user);
    if (connections === client) this.#users.delete(client.user);
    else if (connections instanceof Set && connections.delete(client) && connections.size === 1) {
      this.#users.set(client.user, connections.values().next().value!);
    }
  }

  #join(client: Client, name: string): void {
    if (!this.#clients.has(client)) return;
    const room = this.#room(name);
    // A join of a room already joined is a resume: hold live messages until the replay is sent.
    room.pending.set(client, []);
    client.addRoom(name);
  }

  #joinReady(event: Extract<HubEvent, { type: "join_ready" }>): void {
    const { client, replay, lastId } = event;
    const room = this.#rooms.get(event.room);
    const held = room?.pending.get(client);
    if (room === undefined || held === undefined) return; // left or disconnected meanwhile
    room.pending.delete(client);
    this.#addLive(client, event.room);
    // Online users: this node's, and the cluster's when presence reported them; sorted once.
    const local = room.users.keys();
    const users = event.users === undefined
      ? [...local].sort()
      : [...new Set([...event.users, ...local])].sort();
    const joined: ServerFrame = { type: "joined", room: event.room, lastId, users };
    if (event.recovered !== undefined) joined.recovered = event.recovered;
    if (event.ref !== undefined) joined.ref = event.ref;
    // Replay first, then what arrived while the join was pending and is newer than the replay.
    let last = lastId;
    for (const message of replay) {
      client.enqueue(prepare(message));
      last = Math.max(last, message.id);
    }
    client.enqueue(prepare(joined));
    for (const message of held) {
      if (message.id > last) {
        client.enqueue(prepare(message));
        last = message.id;
      }
    }
    room.floors.set(client, last);
  }

  #joinFailed(client: Client, name: string, ref: string | undefined): void {
    const room = this.#rooms.get(name);
    if (room === undefined || !room.pending.delete(client)) return;
    if (!room.live.has(client)) client.removeRoom(name);
    this.#dropIfEmpty(name, room);
    client.enqueue(prepare({
      type: "error",
      code: "internal",
      message: `Cannot join room "${name}": history is unavailable`,
      ...(ref === undefined ? {} : { ref }),
    }));
  }

  #leave(client: Client, name: string, reply: boolean, ref?: string): void {
    const room = this.#rooms.get(name);
    if (room === undefined || !client.removeRoom(name)) return;
    room.pending.delete(client);
    room.floors.delete(client);
    if (room.live.delete(client)) {
      const left = (room.users.get(client.user) ?? 1) - 1;
      if (left > 0) room.users.set(client.user, left);
      else {
        room.users.delete(client.user);
        this.#options.onPresence?.(name, client.user, false);
      }
    }
    this.#dropIfEmpty(name, room);
    if (reply) {
      client.enqueue(prepare(
        ref === undefined ? { type: "left", room: name } : {
          type: "left",
          room: name,
          ref,
        },
      ));
    }
  }

  #deliver(event: BrokerEvent): void {
    const started = performance.now();
    let recipients = 0;
    if (event.type === "message") {
      const room = this.#rooms.get(event.room);
      if (room === undefined) return;
      const frame = prepare(event);
      const { pending, floors } = room;
      if (pending.size === 0 && floors.size === 0) {
        for (const client of room.live) client.enqueue(frame);
        recipients = room.live.size;
      } else {
        // A live member that re-joins to resume gets this message from its replay or buffer.
        for (const client of room.live) {
          if (pending.has(client)) continue;
          const floor = floors.get(client);
          if (floor !== undefined) {
            if (event.id <= floor) continue; // already sent from the store
            floors.delete(client);
          }
          if (client.enqueue(frame)) recipients++;
        }
        for (const held of pending.values()) held.push(event);
      }
    } else if (event.type === "direct") {
      const frame = prepare(event);
      recipients += this.#sendToUser(event.to, frame);
      if (event.from !== event.to) recipients += this.#sendToUser(event.from, frame);
    } else {
      const room = this.#rooms.get(event.room);
      if (room === undefined) return;
      // Typing and presence changes: to the room's other users; typing is the first thing
      // dropped under pressure, presence goes quiet in big rooms.
      const typing = event.type === "typing";
      // Count the departed member too, so a room's joins and leaves are judged alike.
      const size = room.live.size + (event.type === "user_left" ? 1 : 0);
      if (!typing && size > this.#options.presenceEventsMax) return;
      const frame = prepare(event);
      for (const client of room.live) {
        if (client.user !== event.user && client.enqueue(frame, typing)) recipients++;
      }
    }
    this.#options.onFanout?.(recipients, started);
  }

  #sendToUser(user: string, frame: PreparedFrame): number {
    const connections = this.#users.get(user);
    if (connections === undefined) return 0;
    if (!(connections instanceof Set)) {
      connections.enqueue(frame);
      return 1;
    }
    for (const client of connections) client.enqueue(frame);
    return connections.size;
  }

  /** Makes a client a live member. (The room's user list is built only where it is sent: every
   * connection joins the default room, and sorting its users per connection costs O(n²).) */
  #addLive(client: Client, name: string): void {
    const room = this.#room(name);
    client.addRoom(name);
    if (!room.live.has(client)) {
      room.live.add(client);
      const count = room.users.get(client.user) ?? 0;
      room.users.set(client.user, count + 1);
      if (count === 0) this.#options.onPresence?.(name, client.user, true);
    }
  }

  #room(name: string): Room {
    let room = this.#rooms.get(name);
    if (room === undefined) {
      room = { live: new Set(), pending: new Map(), users: new Map(), floors: new Map() };
      this.#rooms.set(name, room);
    }
    return room;
  }

  #dropIfEmpty(name: string, room: Room): void {
    if (room.live.size === 0 && room.pending.size === 0) this.#rooms.delete(name);
  }
}
