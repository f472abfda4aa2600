/**
 * The chat protocol: what each validated client frame does.
 *
 * `Chat` is the {@link ClientHandler} of every connection. It owns no registry state: it reads
 * `client.inRoom()` (membership is written by the Hub), asks the Hub to change membership
 * through its queue, and sends every chat message down the single delivery path
 * validate → `store.append` (assigns the id) → `broker.publish` → each node's Hub → outboxes.
 *
 * Invariants:
 * - An `ack` is sent only after the store resolved the append (the message is durable) and the
 *   broker accepted it. A failure in either answers `error` with the frame's `ref` and no ack.
 * - Publishes happen in store order: each append's continuation calls `publish` synchronously,
 *   and the store resolves appends in call order.
 * - Nothing here throws into the socket layer; every failure becomes an `error` frame or a close.
 * - The frames of one connection take effect in the order received. Each handler returns a
 *   promise when its effect completes later (stored and published, applied by the hub, answered);
 *   the connection's later frames wait for it, except that consecutive `message`/`direct` frames
 *   run together (the store resolves appends in call order, so their ids and publishes keep the
 *   order). {@link FrameOrder} (delivery/frame_order.ts) keeps that order; only connections with
 *   work in flight have state there, bounded by {@link MAX_QUEUED_FRAMES} and
 *   {@link MAX_QUEUED_BYTES}, and dropped when the connection closes.
 */
import { getLogger } from "@logtape/logtape";
import type { Verifier } from "./auth/mod.ts";
import type { Broker } from "./backends/broker/mod.ts";
import type { Client, ClientHandler } from "./client.ts";
import { FrameOrder, MAX_QUEUED_BYTES, MAX_QUEUED_FRAMES } from "./delivery/frame_order.ts";
import type { Hub } from "./hub.ts";
import {
  type ChatMessage,
  type ClientFrame,
  Close,
  DEFAULT_HISTORY_LIMIT,
  directKey,
  type Draft,
  type ErrorCode,
  errorFrame,
  type FrameParser,
  prepare,
  roomKey,
  type ServerFrame,
} from "./message.ts";
import type { Presence } from "./backends/presence/mod.ts";
import type { AppendInput, MessageStore } from "./backends/store/mod.ts";

export { MAX_QUEUED_BYTES, MAX_QUEUED_FRAMES };

/** Most appends in flight on one node before new sends are answered `overloaded`. */
export const MAX_PENDING_APPENDS = 10_000;
/** Upper bound on messages replayed by one `join … since`; also capped at half the outbox. */
export const MAX_REPLAY = 5_000;

const log = getLogger(["parley", "chat"]);
const connectionLog = getLogger(["parley", "connection"]);

/** Observers of what the chat layer does, for metrics; every member optional. */
export interface ChatObserver {
  opened?(client: Client): void;
  closed?(client: Client, code: number): void;
  frameIn?(type: string): void;
  error?(code: ErrorCode): void;
  stored?(message: ChatMessage, seconds: number): void;
  rateLimited?(): void;
}

/** What the chat layer needs from the rest of the server. */
export interface ChatOptions {
  hub: Hub;
  store: MessageStore;
  broker: Broker;
  presence: Presence;
  parser: FrameParser;
  defaultRoom: string;
  /** True in open mode: an untyped frame's `sender` names the sender when `?name=` did not. */
  openMode: boolean;
  /** The outbox bound; replays are capped at half of it. */
  outboxMessages: number;
  observer?: ChatObserver;
  /** Token mode: checks `refresh` tokens. */
  verifier?: Verifier;
  /** Decides whether a client may send one more frame now (rate limiting); true by default. */
  admit?: (client: Client) => "ok" | "limited" | "abuse";
  /** True while the server cannot take more fan-out (its outboxes are full or its loop is held
   * by inbound frames): chat messages are then answered `overloaded`, not stored. */
  overloaded?: () => boolean;
}

/** Handles the frames of every connection of one server. */
export class Chat implements ClientHandler {
  readonly #o: ChatOptions;
  readonly #replayLimit: number;
  #pendingAppends = 0;
  readonly #order: FrameOrder;

  /** Creates the handler; it holds references only. */
  constructor(options: ChatOptions) {
    this.#o = options;
    this.#replayLimit = Math.max(1, Math.min(MAX_REPLAY, Math.floor(options.outboxMessages / 2)));
    this.#order = new FrameOrder(
      (client, frame) => this.#run(client, frame),
      (client, frame) =>
        this.#error(
          client,
          "overloaded",
          "Cannot accept frame: too many frames in flight on this connection, retry later",
          frame.ref,
        ),
    );
  }

  /** Appends in flight, for readiness and tests. */
  get pendingAppends(): number {
    return this.#pendingAppends;
  }

  /** Connections with frames in flight, for tests: 0 once every connection is idle. */
  get busyConnections(): number {
    return this.#order.busy;
  }

  opened(client: Client): void {
    // Counted before anything can refuse it: `closed` counts every opened client out again.
    this.#o.observer?.opened?.(client);
    if (!this.#o.hub.trySend({ type: "register", client })) {
      client.close(Close.overloaded);
      return;
    }
    connectionLog.info("Connection opened", {
      connection: client.id,
      user: client.user,
      remote: client.remote,
      protocol: client.batching ? "parley.v1" : "plain",
    });
  }

  closed(client: Client, code: number, reason: string): void {
    if (!client.opened) {
      // Never opened (closed while connecting, or abandoned by the opening watchdog): it was
      // neither registered nor counted.
      connectionLog.info("Connection never opened", {
        connection: client.id,
        user: client.user,
        remote: client.remote,
        code,
        reason,
      });
      return;
    }
    // Its waiting frames are dropped; running ones finish, and their answers go nowhere.
    this.#order.forget(client);
    // Must reach the hub even when its queue is busy; rejected only once the hub has closed.
    this.#o.hub.send({ type: "unregister", client }).catch(() => {});
    this.#o.observer?.closed?.(client, code);
    connectionLog.info("Connection closed", {
      connection: client.id,
      user: client.user,
      remote: client.remote,
      code,
      reason,
      durationMs: Date.now() - client.stats.openedAt,
      framesIn: client.stats.framesIn,
      framesOut: client.stats.framesOut,
    });
  }

  refused(client: Client, reason: "binary" | "too_large"): void {
    this.#o.observer?.frameIn?.("invalid");
    if (reason === "binary") {
      this.#error(
        client,
        "unsupported_frame",
        "Cannot handle frame: binary frames are not supported",
      );
    } else {
      this.#o.observer?.error?.("too_large");
      connectionLog.info("Frame too large", { connection: client.id, user: client.user });
    }
  }

  received(client: Client, text: string): void {
    const parsed = this.#o.parser.parse(text);
    if (!parsed.ok) {
      this.#o.observer?.frameIn?.("invalid");
      this.#error(client, parsed.error.code, parsed.error.message, parsed.error.ref);
      return;
    }
    const frame = parsed.frame;
    this.#o.observer?.frameIn?.(frame.type);
    const admitted = this.#o.admit?.(client) ?? "ok";
    if (admitted !== "ok") {
      this.#o.observer?.rateLimited?.();
      if (admitted === "abuse") {
        client.close(Close.policy);
        return;
      }
      this.#error(client, "rate_limited", "Cannot accept frame: rate limit exceeded", frame.ref);
      return;
    }
    this.#order.submit(client, frame, text);
  }

  /** Runs a frame now; returns a promise when its effect completes later. Never rejects. */
  #run(client: Client, frame: ClientFrame): Promise<void> | undefined {
    const failed = (error: unknown) => {
      log.error("Frame handler failed", { connection: client.id, error: String(error) });
      this.#error(client, "internal", "Cannot handle frame: internal error", frame.ref);
    };
    try {
      return this.#dispatch(client, frame)?.catch(failed);
    } catch (error) {
      failed(error);
      return undefined;
    }
  }

  /**
   * Applies one frame. Returns a promise when the effect completes later: stored and published
   * with its ack enqueued (`message`, `direct`), applied by the hub (`join` once the client is a
   * live member with `joined` enqueued, or the join failed; `leave`), or answered (`history`,
   * `presence`, `refresh`). Returns nothing when the frame took effect already.
   */
  #dispatch(client: Client, frame: ClientFrame): void | Promise<void> {
    switch (frame.type) {
      case "legacy": {
        const sender = this.#o.openMode && !client.named && frame.sender !== undefined
          ? frame.sender
          : client.user;
        return this.#sendToRoom(client, this.#o.defaultRoom, frame.content, frame.ref, sender);
      }
      case "message":
        return this.#sendToRoom(
          client,
          frame.room ?? this.#o.defaultRoom,
          frame.content,
          frame.ref,
          client.user,
        );
      case "direct":
        return this.#append(client, {
          type: "direct",
          from: client.user,
          to: frame.to,
          content: frame.content,
        }, frame.ref);
      case "join":
        return this.#join(client, frame.room, frame.since, frame.ref);
      case "leave":
        return this.#leave(client, frame.room, frame.ref);
      case "history":
        return this.#history(client, frame);
      case "presence":
        return this.#presence(client, frame.room, frame.ref);
      case "typing":
        if (!client.inRoom(frame.room)) return this.#notMember(client, frame.room, frame.ref);
        this.#o.broker.publish({ type: "typing", room: frame.room, user: client.user }).catch(
          () => {}, // ephemeral: a lost typing hint is harmless
        );
        return;
      case "refresh":
        return this.#refresh(client, frame.token, frame.ref);
      case "ping":
        return this.#reply(
          client,
          frame.ref === undefined ? { type: "pong" } : {
            type: "pong",
            ref: frame.ref,
          },
        );
      default: {
        const unknown: never = frame;
        throw new Error(`Cannot dispatch frame ${JSON.stringify(unknown)}`);
      }
    }
  }

  #sendToRoom(
    client: Client,
    room: string,
    content: string,
    ref: string | undefined,
    sender: string,
  ): void | Promise<void> {
    if (!client.inRoom(room)) return this.#notMember(client, room, ref);
    return this.#append(client, { type: "message", room, sender, content }, ref);
  }

  /**
   * Stores a message and publishes it: the single delivery path of every chat message.
   *
   * Resolves with the stored message once it is durable and the broker accepted it; a duplicate
   * `(user, ref)` resolves with the original message and publishes nothing.
   */
  publish(input: AppendInput): Promise<ChatMessage> {
    const started = performance.now();
    return this.#o.store.append(input).then(({ message, duplicate }) => {
      if (duplicate) return message;
      // Publish synchronously in this continuation so broker order equals store order.
      const published = this.#o.store.publishesOnAppend === true
        ? Promise.resolve() // the append script already published it, in id order
        : this.#o.broker.publish(message);
      this.#o.observer?.stored?.(message, (performance.now() - started) / 1000);
      return published.then(() => message);
    });
  }

  #append(client: Client, draft: Draft, ref: string | undefined): void | Promise<void> {
    if (this.#pendingAppends >= MAX_PENDING_APPENDS || this.#o.overloaded?.() === true) {
      return this.#overloaded(client, ref);
    }
    this.#pendingAppends++;
    const input = ref === undefined
      ? { draft, user: client.user }
      : { draft, user: client.user, ref };
    return this.publish(input).then((message) => {
      if (ref !== undefined) {
        this.#reply(client, { type: "ack", ref, id: message.id, ts: message.ts });
      }
    }, (error) => {
      log.error("Cannot store or publish message", {
        connection: client.id,
        error: String(error),
      });
      this.#error(client, "overloaded", "Cannot send: storage or broker unavailable, retry", ref);
    }).finally(() => {
      this.#pendingAppends--;
    });
  }

  #join(
    client: Client,
    room: string,
    since: number | undefined,
    ref: string | undefined,
  ): void | Promise<void> {
    const hub = this.#o.hub;
    if (!hub.trySend({ type: "join", client, room })) return this.#overloaded(client, ref);
    const { promise: applied, resolve } = Promise.withResolvers<void>();
    const done = () => resolve();
    const key = roomKey(room);
    const users = this.#o.presence.users(room).catch(() => [] as string[]);
    const read = since === undefined
      ? Promise.all([this.#o.store.lastId(key), users]).then(([lastId, users]) => ({
        type: "join_ready" as const,
        client,
        room,
        replay: [] as ChatMessage[],
        lastId,
        users,
        ...(ref === undefined ? {} : { ref }),
        done,
      }))
      : Promise.all([this.#o.store.since(key, since, this.#replayLimit), users]).then((
        [replay, users],
      ) => ({
        type: "join_ready" as const,
        client,
        room,
        // An incomplete replay would hide a gap; the client pages `history` instead.
        replay: replay.complete ? replay.messages : [],
        lastId: replay.lastId,
        users,
        recovered: replay.complete,
        ...(ref === undefined ? {} : { ref }),
        done,
      }));
    read.then((event) => hub.send(event), (error) => {
      log.error("Cannot read history for join", { connection: client.id, error: String(error) });
      const failed = ref === undefined
        ? { type: "join_failed" as const, client, room, done }
        : { type: "join_failed" as const, client, room, ref, done };
      return hub.send(failed);
    }).catch(done); // the hub closed: shutting down
    return applied;
  }

  #leave(client: Client, room: string, ref: string | undefined): void | Promise<void> {
    if (!client.inRoom(room)) return this.#notMember(client, room, ref);
    const { promise: applied, resolve } = Promise.withResolvers<void>();
    const done = () => resolve();
    const event = ref === undefined
      ? { type: "leave" as const, client, room, done }
      : { type: "leave" as const, client, room, ref, done };
    if (!this.#o.hub.trySend(event)) return this.#overloaded(client, ref);
    return applied;
  }

  #refresh(client: Client, token: string, ref: string | undefined): void | Promise<void> {
    const verifier = this.#o.verifier;
    if (verifier === undefined) {
      return this.#error(client, "forbidden", "Cannot refresh: the server is in open mode", ref);
    }
    return verifier.verify(token).then((result) => {
      if (!result.ok) {
        return this.#error(client, "unauthorized", `Cannot refresh: ${result.message}`, ref);
      }
      if (result.identity.user !== client.user) {
        return this.#error(client, "forbidden", "Cannot refresh: token is for another user", ref);
      }
      const expiresAt = result.identity.expiresAt;
      // Within the verifier's clock tolerance a token may be past its exp: it must not cut short
      // a connection whose current token is still good.
      if (expiresAt !== undefined && expiresAt.getTime() <= Date.now()) {
        return this.#error(client, "unauthorized", "Cannot refresh: Token expired", ref);
      }
      if (expiresAt !== undefined) client.expireAt(expiresAt);
      if (ref !== undefined) {
        this.#reply(client, {
          type: "ack",
          ref,
          id: 0,
          ts: new Date().toISOString(),
          ...(expiresAt === undefined ? {} : { expiresAt: expiresAt.toISOString() }),
        });
      }
    }, (error) => {
      log.error("Cannot verify refresh token", { connection: client.id, error: String(error) });
      this.#error(client, "internal", "Cannot refresh: internal error", ref);
    });
  }

  #presence(client: Client, room: string, ref: string | undefined): Promise<void> {
    return this.#o.presence.users(room).then((users) => {
      const frame: ServerFrame = { type: "presence", room, users, count: users.length };
      this.#reply(client, ref === undefined ? frame : { ...frame, ref });
    }, (error) => {
      log.error("Cannot read presence", { connection: client.id, error: String(error) });
      this.#error(client, "internal", "Cannot read presence: backend unavailable", ref);
    });
  }

  #history(client: Client, frame: Extract<ClientFrame, { type: "history" }>): Promise<void> {
    const conversation = frame.room !== undefined
      ? roomKey(frame.room)
      : directKey(client.user, frame.with!);
    const query = {
      conversation,
      limit: frame.limit ?? DEFAULT_HISTORY_LIMIT,
      ...(frame.before === undefined ? {} : { before: frame.before }),
      ...(frame.after === undefined ? {} : { after: frame.after }),
    };
    return this.#o.store.history(query).then((page) => {
      const reply: ServerFrame = frame.room !== undefined
        ? { type: "history", room: frame.room, messages: page.messages, hasMore: page.hasMore }
        : { type: "history", with: frame.with!, messages: page.messages, hasMore: page.hasMore };
      this.#reply(client, frame.ref === undefined ? reply : { ...reply, ref: frame.ref });
    }, (error) => {
      log.error("Cannot read history", { connection: client.id, error: String(error) });
      this.#error(client, "internal", "Cannot read history: storage unavailable", frame.ref);
    });
  }

  #notMember(client: Client, room: string, ref: string | undefined): void {
    this.#error(client, "not_member", `Cannot use room "${room}": join it first`, ref);
  }

  #overloaded(client: Client, ref: string | undefined): void {
    this.#error(client, "overloaded", "Cannot accept frame: server overloaded, retry later", ref);
  }

  #error(client: Client, code: ErrorCode, message: string, ref?: string): void {
    this.#o.observer?.error?.(code);
    connectionLog.info("Frame rejected", { connection: client.id, user: client.user, code });
    this.#reply(client, errorFrame(code, message, ref));
  }

  #reply(client: Client, frame: ServerFrame | (ServerFrame & { ref: string })): void {
    client.enqueue(prepare(frame));
  }
}
