/**
 * Test helpers shared by the unit tests: a scriptable {@link SocketLike}, a flush scheduler that
 * flushes only when told, and recording handlers. Nothing here is used by the server itself.
 */
import {
  Client,
  type ClientHandler,
  type ClientLimits,
  type ClientOptions,
  OPEN,
  type SocketLike,
} from "../../client.ts";
import type { FlushScheduler } from "../../delivery/flush.ts";
import { utf8Bytes } from "../../message.ts";

type Listener = ((event: never) => void) | EventListenerObject;

/** A socket that records what is sent and lets a test play the peer. */
export class FakeSocket implements SocketLike {
  readyState = 0;
  /** While true the peer reads nothing: every byte sent stays in `bufferedAmount`. */
  stalled = false;
  /** How often the client read `bufferedAmount`. */
  bufferedAmountReads = 0;
  #unsent = 0;
  binaryType: BinaryType = "blob";
  /** Every frame passed to `send`, in order. */
  readonly sent: string[] = [];
  /** The arguments of the first `close` call. */
  closedWith: { code: number; reason: string } | undefined;
  /** When false, `close()` does not complete the handshake (a peer that never answers). */
  answersClose = true;
  readonly #listeners = new Map<string, Listener[]>();

  get bufferedAmount(): number {
    this.bufferedAmountReads++;
    return this.#unsent;
  }

  send(data: string): void {
    if (this.readyState !== OPEN) throw new DOMException("Not open", "InvalidStateError");
    this.sent.push(data);
    // Like Deno: the payload's UTF-8 bytes count until the peer has taken them.
    if (this.stalled) this.#unsent += utf8Bytes(data);
  }

  /** What `bufferedAmount` would say, without counting as a read. */
  get unsentBytes(): number {
    return this.#unsent;
  }

  /** The stalled peer reads everything sent so far. */
  drain(): void {
    this.#unsent = 0;
  }

  /** The stalled peer reads `bytes` of what was sent. */
  drainBytes(bytes: number): void {
    this.#unsent = Math.max(0, this.#unsent - bytes);
  }

  close(code = 1005, reason = ""): void {
    if (new TextEncoder().encode(reason).byteLength > 123) {
      throw new DOMException("Reason too long", "SyntaxError");
    }
    if (this.readyState >= 2) return;
    this.closedWith ??= { code, reason };
    this.readyState = 2;
    if (this.answersClose) this.peerClosed(code, reason);
  }

  addEventListener(type: string, listener: Listener): void {
    const list = this.#listeners.get(type) ?? [];
    list.push(listener);
    this.#listeners.set(type, list);
  }

  removeEventListener(type: string, listener: Listener): void {
    const list = this.#listeners.get(type)?.filter((l) => l !== listener) ?? [];
    this.#listeners.set(type, list);
  }

  /** Listeners registered for `type`, for tests of what a client keeps attached. */
  listenerCount(type: string): number {
    return this.#listeners.get(type)?.length ?? 0;
  }

  /** Plays the `open` event. */
  open(): void {
    this.readyState = OPEN;
    this.#emit("open", new Event("open"));
  }

  /** Plays an inbound frame. */
  receive(data: string | ArrayBuffer): void {
    this.#emit("message", new MessageEvent("message", { data }));
  }

  /** Plays the close event, as when the handshake completes or the peer drops. */
  peerClosed(code = 1000, reason = ""): void {
    this.readyState = 3;
    this.#emit("close", new CloseEvent("close", { code, reason }));
  }

  /** Every event the client received, batches unpacked, parsed. */
  get events(): Record<string, unknown>[] {
    return this.sent.flatMap((text) => {
      const value = JSON.parse(text);
      return Array.isArray(value) ? value : [value];
    });
  }

  /** Received events of one type. */
  eventsOf(type: string): Record<string, unknown>[] {
    return this.events.filter((event) => event.type === type);
  }

  #emit(type: string, event: Event): void {
    for (const listener of this.#listeners.get(type) ?? []) {
      if (typeof listener === "function") (listener as (e: Event) => void)(event);
      else (listener as EventListenerObject).handleEvent(event);
    }
  }
}

/** A scheduler that flushes only when the test calls {@link ManualFlusher.flushAll}. */
export class ManualFlusher implements FlushScheduler {
  readonly #dirty = new Set<Client>();

  schedule(client: Client): void {
    this.#dirty.add(client);
  }

  /** Flushes every scheduled client once. */
  flushAll(): void {
    const dirty = [...this.#dirty];
    this.#dirty.clear();
    for (const client of dirty) {
      if (!client.flush()) this.#dirty.add(client);
    }
  }
}

/** A handler that records the calls it gets. */
export class RecordingHandler implements ClientHandler {
  readonly calls: string[] = [];
  readonly texts: string[] = [];
  readonly closes: { code: number; reason: string }[] = [];

  opened(client: Client): void {
    this.calls.push(`opened:${client.id}`);
  }

  received(_client: Client, text: string): void {
    this.calls.push("received");
    this.texts.push(text);
  }

  refused(_client: Client, reason: string): void {
    this.calls.push(`refused:${reason}`);
  }

  closed(_client: Client, code: number, reason: string): void {
    this.calls.push(`closed:${code}`);
    this.closes.push({ code, reason });
  }
}

let nextId = 0;

/** Makes a client on a FakeSocket with small, test-friendly bounds; the socket is open unless
 * `connecting` asks to leave it CONNECTING until the test calls `socket.open()`. */
export function fakeClient(
  options: Partial<Omit<ClientOptions, "limits"> & ClientLimits> & {
    handler?: ClientHandler;
    connecting?: boolean;
  } = {},
): { client: Client; socket: FakeSocket; flusher: ManualFlusher } {
  const socket = new FakeSocket();
  // Any other scheduler (a Flusher) is used as given; `flusher` then goes unused.
  const flusher = options.scheduler instanceof ManualFlusher
    ? options.scheduler
    : new ManualFlusher();
  const scheduler = options.scheduler ?? flusher;
  const {
    handler = new RecordingHandler(),
    connecting = false,
    maxFrameBytes = 1024,
    outboxMessages = 16,
    outboxBytes = 4096,
    closeTimeoutMs,
    // A close right after a frame would otherwise linger (see CLOSE_QUIET_MS); tests of the
    // linger set it.
    closeQuietMs = 0,
    lagGraceMs,
    observer,
    now,
    opening,
    ...identity
  } = options;
  const client = new Client(socket, handler, {
    id: `c${++nextId}`,
    user: "alice",
    named: true,
    batching: false,
    remote: "127.0.0.1",
    ...identity,
    limits: {
      maxFrameBytes,
      outboxMessages,
      outboxBytes,
      scheduler,
      ...(closeTimeoutMs === undefined ? {} : { closeTimeoutMs }),
      closeQuietMs,
      ...(lagGraceMs === undefined ? {} : { lagGraceMs }),
      ...(observer === undefined ? {} : { observer }),
      ...(now === undefined ? {} : { now }),
      ...(opening === undefined ? {} : { opening }),
    },
  });
  if (!connecting) socket.open();
  return { client, socket, flusher };
}
