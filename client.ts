/**
 * One connected WebSocket: its outbox, its write path and its transport-level checks.
 *
 * Ownership:
 * - A Client owns its socket's writes: {@link Client.flush} is the only caller of `socket.send`.
 *   Everyone else calls {@link Client.enqueue}, which is synchronous and never blocks.
 * - The Hub owns room membership: {@link Client.addRoom} and {@link Client.removeRoom} are for the
 *   Hub only; others read it with {@link Client.inRoom} and {@link Client.rooms}.
 * - Inbound frames are size-checked and type-checked here (text only, at most `maxFrameBytes`),
 *   then handed to a {@link ClientHandler}; the Client knows nothing of the protocol's meaning.
 *
 * Slow consumers: a client is closed with 4008 "Slow consumer" only for its own lag: its backlog
 * (outbox plus the socket's unsent bytes) is past a bound while its socket has stayed behind for
 * {@link LAG_GRACE_MS} of time the server was free to write. What piles up while the server could
 * not write (a flood of inbound frames holds Deno's loop) does not count; the {@link Flusher}
 * bounds that by pushing back on senders. A cut client resumes from history when it reconnects,
 * so nothing is dropped silently.
 *
 * Write coalescing: `enqueue` marks the client dirty with a {@link FlushScheduler}, which flushes
 * it once the current event-loop iteration's I/O is handled. Events that pile up while a flush is
 * pending, or while the socket still holds unsent bytes, leave together: for `parley.v1` clients
 * as one JSON-array frame, for plain clients one frame each. A flush hands the socket at most
 * about {@link SOCKET_HIGH_WATER_BYTES}; the rest waits until the peer has taken it.
 *
 * Closing: Deno drops a server socket without a close frame (the peer sees 1006) when a data frame
 * arrives after `close()`, so a client whose peer is still sending lingers, reading and discarding,
 * until the peer has been quiet for {@link CLOSE_QUIET_MS} (at most {@link CLOSE_LINGER_MS}), and
 * only then sends its close frame: the peer gets the error frames and the close code meant for it.
 *
 * Code above this file never sees a raw WebSocket, only a {@link SocketLike}.
 */
import {
  type BatchCache,
  batchEnd,
  type Egress,
  type FlushScheduler,
  LAG_GRACE_MS,
  type SendBudget,
  SOCKET_HIGH_WATER_BYTES,
} from "./flush.ts";
import { Close, type CloseCode, exceedsUtf8, type PreparedFrame } from "./message.ts";

/** How long a close handshake may take before the watchdog tears the client down, in ms. */
export const CLOSE_WATCHDOG_MS = 3_000;
/** A closing client whose peer is still sending waits until no frame came for this long before it
 * sends its close frame, in milliseconds (see the module doc). */
export const CLOSE_QUIET_MS = 50;
/** The longest a closing client waits for its peer to go quiet, in milliseconds; after it, the
 * close frame goes anyway (a peer that never stops sending may then see 1006). */
export const CLOSE_LINGER_MS = 2_000;
/** Longest delay a timer can take, in milliseconds. */
const MAX_TIMER_MS = 2 ** 31 - 1;
/** Share of the outbox bounds above which droppable events (typing) are dropped. */
export const DROPPABLE_FILL = 0.5;

/** The slice of a WebSocket the server uses; a Deno WebSocket satisfies it, so does FakeSocket. */
export interface SocketLike {
  readonly readyState: number;
  readonly bufferedAmount: number;
  binaryType: BinaryType;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  addEventListener(type: "open" | "message" | "close", listener: EventListenerObject): void;
  removeEventListener(type: "open", listener: EventListenerObject): void;
}

/** WebSocket ready states. */
export const CONNECTING = 0;
export const OPEN = 1;

/** What a Client reports upward; implemented by the chat layer. */
export interface ClientHandler {
  /** The socket is open and may be written to. */
  opened(client: Client): void;
  /** A text frame within the size limit arrived. */
  received(client: Client, text: string): void;
  /** A frame was refused at the transport level (binary, too large). */
  refused(client: Client, reason: "binary" | "too_large"): void;
  /** The client is gone; called exactly once, also for a socket that never opened (then
   * `client.opened` is false and `opened()` was never called). */
  closed(client: Client, code: number, reason: string): void;
}

/** Deadlines of sockets still connecting; the server's `OpeningWatch` (server.ts) keeps them. */
export interface OpeningDeadlines {
  /** Starts the deadline of a client whose socket is still connecting. */
  watch(client: Client): void;
  /** Ends the watch of a client that opened or closed. */
  forget(client: Client): void;
}

/** Limits and collaborators shared by every client of a server; one object for all of them. */
export interface ClientLimits {
  maxFrameBytes: number;
  outboxMessages: number;
  outboxBytes: number;
  scheduler: FlushScheduler;
  /** Milliseconds since the epoch; injectable for tests. */
  now?: () => number;
  /** Close-handshake watchdog in milliseconds; default {@link CLOSE_WATCHDOG_MS}. */
  closeTimeoutMs?: number;
  /** Gives up on sockets that never open; servers pass one, unit tests may leave it out. */
  opening?: OpeningDeadlines;
  /** Told about every frame written, for metrics. */
  observer?: FlushObserver;
  /** See {@link LAG_GRACE_MS}; tests shorten it. */
  lagGraceMs?: number;
  /** See {@link CLOSE_QUIET_MS}; tests shorten it. */
  closeQuietMs?: number;
}

/** Who a client is; the server's shared {@link ClientLimits} come along in `limits`. */
export interface ClientOptions {
  /** Connection id, unique per server. */
  id: string;
  /** Stamped identity. */
  user: string;
  /** True when the client named itself with `?name=` or a token (open mode otherwise). */
  named: boolean;
  /** True when the client negotiated `parley.v1` and may receive batch frames. */
  batching: boolean;
  /** Remote address, for logs and per-IP limits. */
  remote: string;
  /** Token expiry in token mode. */
  expiresAt?: Date;
  limits: ClientLimits;
}

/** Observes the write path; every call is on the hot path, so keep it to a few additions. */
export interface FlushObserver {
  /** A frame carrying `events` events was written. */
  frameOut(events: number): void;
  /** A flush began with this many bytes waiting in the outbox. */
  observeOutboxBytes(bytes: number): void;
  /** The client lagged past its bounds and is being closed with 4008. */
  slowConsumerDisconnect(): void;
}

/** Counters a client keeps for its close log line and for metrics. */
export interface ClientStats {
  framesIn: number;
  framesOut: number;
  eventsOut: number;
  openedAt: number;
}

/** One WebSocket connection and its outbox. */
export class Client {
  readonly id: string;
  readonly remote: string;
  readonly batching: boolean;
  /** The stamped identity; in open mode fixed at connect time. */
  readonly user: string;
  readonly named: boolean;
  /** Counters for the close log line and metrics: a snapshot, built on each read. */
  get stats(): ClientStats {
    return {
      framesIn: this.#framesIn,
      framesOut: this.#framesOut,
      eventsOut: this.#eventsOut,
      openedAt: this.#openedAt,
    };
  }
  /** Token expiry in token mode; replaced through {@link Client.expireAt}. */
  get expiresAt(): Date | undefined {
    return this.#expiresAt;
  }

  readonly #socket: SocketLike;
  readonly #handler: ClientHandler;
  readonly #options: ClientLimits;
  #outbox: PreparedFrame[] = [];
  #outboxHead = 0;
  #outboxBytes = 0;
  /** The server-wide account the outbox bytes are also counted in, when the scheduler has one. */
  readonly #egress: Egress | undefined;
  #scheduled = false;
  /** Free time, in ms, the socket has been behind (over the high-water mark) without a break. */
  #behindMs = 0;
  /** When the last inbound frame arrived (`performance.now()`), for the closing linger. */
  #lastFrameAt = -Infinity;
  #linger: ReturnType<typeof setTimeout> | undefined;
  #opened = false;
  #closing = false;
  #closed = false;
  #watchdog: ReturnType<typeof setTimeout> | undefined;
  #expiresAt: Date | undefined;
  #expiry: ReturnType<typeof setTimeout> | undefined;
  /** A close asked for before the socket opened; carried out on `open`. */
  #closeOnOpen: CloseCode | undefined;
  // Per-connection state is kept flat: every object or Set here is paid once per idle
  // connection (a Set costs ~150 bytes, an object ~40), and the bench holds that to the bare
  // baseline's. Rooms are one name for the usual single room, a Set only from the second.
  #rooms: string | Set<string> | undefined;
  /** At least the socket's unsent bytes: its last `bufferedAmount` plus all sent since. */
  #unsentBound = 0;
  #framesIn = 0;
  #framesOut = 0;
  #eventsOut = 0;
  readonly #openedAt: number;

  /** Wraps a socket; attaches listeners only, so it cannot throw after an upgrade. */
  constructor(socket: SocketLike, handler: ClientHandler, options: ClientOptions) {
    this.#socket = socket;
    this.#handler = handler;
    this.#options = options.limits;
    this.#egress = options.limits.scheduler.egress;
    this.id = options.id;
    this.user = options.user;
    this.named = options.named;
    this.remote = options.remote;
    this.batching = options.batching;
    if (options.expiresAt !== undefined) this.expireAt(options.expiresAt);
    this.#openedAt = this.#now();
    socket.binaryType = "arraybuffer";
    // The client itself is the listener (`handleEvent`): no closures per connection. No "error"
    // listener: once open, Deno follows an error with a close event, which is what we act on;
    // before open it may send "error" alone (a failed upgrade) or nothing (a peer gone before
    // the 101 went out), which the server's opening watch covers. Each listener costs ~250 bytes per
    // connection, so "open" is removed once it has fired.
    socket.addEventListener("open", this);
    socket.addEventListener("message", this);
    socket.addEventListener("close", this);
    if (socket.readyState === CONNECTING) this.#options.opening?.watch(this);
  }

  /** Gives up on a socket that has not opened in time; for the server's opening watch only. */
  abandon(): void {
    if (!this.#opened) this.#finish(1006, "Connection never opened");
  }

  /** Whether the client is a live or pending member of `room`. */
  inRoom(room: string): boolean {
    const rooms = this.#rooms;
    return rooms === room || (typeof rooms === "object" && rooms.has(room));
  }

  /** The rooms the client is a live or pending member of, in joining order; a fresh array. */
  get rooms(): string[] {
    const rooms = this.#rooms;
    return rooms === undefined ? [] : typeof rooms === "string" ? [rooms] : [...rooms];
  }

  /** Records a membership; for the Hub only. */
  addRoom(room: string): void {
    const rooms = this.#rooms;
    if (rooms === undefined) this.#rooms = room;
    else if (typeof rooms === "string") {
      if (rooms !== room) this.#rooms = new Set([rooms, room]);
    } else rooms.add(room);
  }

  /** Forgets a membership; for the Hub only. Returns whether the client had it. */
  removeRoom(room: string): boolean {
    const rooms = this.#rooms;
    if (rooms === room) {
      this.#rooms = undefined;
      return true;
    }
    if (typeof rooms !== "object" || !rooms.delete(room)) return false;
    if (rooms.size === 1) this.#rooms = rooms.values().next().value;
    return true;
  }

  /** Whether the handler was told `opened` (the socket opened and was not refused at once). */
  get opened(): boolean {
    return this.#opened;
  }

  /** Whether the client still accepts frames (not closing or closed). */
  get active(): boolean {
    return !this.#closing && !this.#closed;
  }

  /** Events waiting in the outbox. */
  get pending(): number {
    return this.#outbox.length - this.#outboxHead;
  }

  /** Bytes waiting in the outbox plus bytes the socket has not sent yet. */
  get backlogBytes(): number {
    return this.#outboxBytes + this.#socket.bufferedAmount;
  }

  /**
   * Queues a frame for this client without blocking.
   *
   * Returns false when the frame was not queued: the client is closing, the frame is
   * `droppable` (typing) and the outbox is under pressure, or the client has lagged past its
   * bounds and is being closed with 4008.
   */
  enqueue(frame: PreparedFrame, droppable = false): boolean {
    if (this.#closing || this.#closed) return false;
    const count = this.pending + 1;
    // Only the outbox: `bufferedAmount` is a call into the runtime, too dear per delivery; the
    // socket's unsent bytes are checked in flush (and only read when they could matter).
    const bytes = this.#outboxBytes + frame.bytes;
    const { outboxMessages, outboxBytes } = this.#options;
    const over = count > outboxMessages || bytes > outboxBytes;
    if (
      droppable && (over || count > outboxMessages * DROPPABLE_FILL ||
        bytes > outboxBytes * DROPPABLE_FILL)
    ) {
      return false;
    }
    // Past the bounds, a peer that has already been behind for its whole grace goes now; anyone
    // else keeps the frame: it may only be waiting for the server to get round to writing.
    if (over && this.#lagging()) {
      this.#slow();
      return false;
    }
    this.#outbox.push(frame);
    this.#outboxBytes = bytes;
    if (this.#egress !== undefined) this.#egress.bytes += frame.bytes;
    if (!this.#scheduled) {
      this.#scheduled = true;
      this.#options.scheduler.schedule(this);
    }
    return true;
  }

  /**
   * Writes what the outbox holds, up to about {@link SOCKET_HIGH_WATER_BYTES} unsent in the
   * socket; the only caller of `socket.send`.
   *
   * This is where a slow consumer is recognised: the socket is behind, has been for the grace
   * period of free time, and the backlog is past a bound (see the module doc). Returns false when
   * it left frames in the outbox because the socket is behind; the scheduler then calls
   * {@link Client.wake} later. A {@link BatchCache} shared across the clients of one flush pass
   * lets them reuse each other's batch frames, and the pass's {@link SendBudget}, when given,
   * stops it partway: the client then schedules itself for the next pass.
   */
  flush(cache?: BatchCache, budget?: SendBudget): boolean {
    this.#scheduled = false;
    if (this.#closed || this.#closing || this.#socket.readyState !== OPEN) return true;
    // `bufferedAmount` is a call into the runtime (7% of JS time at saturation when read on
    // every flush). The socket's unsent bytes only grow by what we send, so their last reading
    // plus every byte sent since bounds them: while that bound is under the mark, the reading is
    // skipped, exactly.
    if (this.#unsentBound > SOCKET_HIGH_WATER_BYTES) {
      this.#unsentBound = this.#socket.bufferedAmount;
    }
    if (this.#unsentBound > SOCKET_HIGH_WATER_BYTES) {
      if (this.#overBounds() && this.#lagging()) {
        this.#slow();
        return true;
      }
      this.#scheduled = true;
      return false;
    }
    this.#behindMs = 0;
    const outbox = this.#outbox;
    let head = this.#outboxHead;
    const observer = this.#options.observer;
    observer?.observeOutboxBytes(this.#outboxBytes);
    const egress = this.#egress;
    try {
      while (head < outbox.length) {
        if (budget !== undefined && (budget.frames <= 0 || budget.bytes <= 0)) {
          // The pass's budget is spent: the rest goes on a following pass.
          this.#outboxHead = head;
          this.#scheduled = true;
          this.#options.scheduler.schedule(this);
          return true;
        }
        if (
          this.#unsentBound > SOCKET_HIGH_WATER_BYTES &&
          (this.#unsentBound = this.#socket.bufferedAmount) > SOCKET_HIGH_WATER_BYTES
        ) {
          // The socket holds enough for now: the rest waits until the peer has taken some.
          this.#outboxHead = head;
          this.#scheduled = true;
          return false;
        }
        const end = batchEnd(outbox, head, this.batching);
        let text = outbox[head]!.text;
        let bytes = outbox[head]!.bytes;
        if (end - head > 1) {
          // Members of one room usually hold the same run of events: build its frame once.
          const shared = cache?.get(outbox, head, end);
          if (shared !== undefined) {
            text = shared.text;
            bytes = shared.bytes;
          } else {
            const parts: string[] = new Array(end - head);
            for (let i = head; i < end; i++) {
              parts[i - head] = outbox[i]!.text;
              bytes += i === head ? 0 : outbox[i]!.bytes;
            }
            text = `[${parts.join(",")}]`;
            cache?.set(outbox, head, end, text, bytes);
          }
        }
        this.#socket.send(text);
        this.#outboxBytes -= bytes;
        if (egress !== undefined) egress.bytes -= bytes;
        // `bytes` counts the events; the frame adds brackets and commas (its exact UTF-8 size).
        this.#unsentBound += end - head > 1 ? bytes + end - head + 1 : bytes;
        if (budget !== undefined) {
          budget.frames--;
          budget.bytes -= bytes;
        }
        this.#framesOut++;
        this.#eventsOut += end - head;
        observer?.frameOut(end - head);
        head = end;
      }
    } catch {
      // The socket died under us; its close event finishes the teardown.
      this.#outboxHead = head;
      this.close(Close.internal);
      return true;
    }
    this.#outbox = [];
    this.#outboxHead = 0;
    this.#outboxBytes = 0;
    return true;
  }

  /**
   * Sets when the connection's token expires (token mode): at that moment the client is closed
   * with 4001 unless a later call (a `refresh`) moved the time.
   */
  expireAt(when: Date): void {
    this.#expiresAt = when;
    clearTimeout(this.#expiry);
    this.#expiry = undefined;
    if (this.#closed) return;
    const wait = when.getTime() - this.#now();
    if (wait <= 0) {
      this.close(Close.tokenExpired);
      return;
    }
    // setTimeout overflows past 2^31-1 ms (about 24.8 days): re-arm in steps.
    this.#expiry = setTimeout(() => this.expireAt(when), Math.min(wait, MAX_TIMER_MS));
  }

  #slow(): void {
    this.#options.observer?.slowConsumerDisconnect();
    this.close(Close.slowConsumer);
  }

  /**
   * Re-schedules a flush that was held back by a socket that is behind; for the scheduler only.
   * `freeMs` is the time since the hold in which the server was free to write: it counts toward
   * the client's lag until a flush finds the socket caught up.
   */
  wake(freeMs = 0): void {
    if (this.#closed || this.#closing) return;
    this.#behindMs += freeMs;
    this.#scheduled = true;
    this.#options.scheduler.schedule(this);
  }

  /** Whether the socket has been behind for the whole grace period of free time. */
  #lagging(): boolean {
    return this.#behindMs >= (this.#options.lagGraceMs ?? LAG_GRACE_MS);
  }

  /** Whether the backlog (outbox and the socket's unsent bytes, as last read) is past a bound. */
  #overBounds(): boolean {
    return this.pending > this.#options.outboxMessages ||
      this.#outboxBytes + this.#unsentBound > this.#options.outboxBytes;
  }

  /** Empties the outbox, taking its bytes off the server's account. */
  #dropOutbox(): void {
    if (this.#egress !== undefined) this.#egress.bytes -= this.#outboxBytes;
    this.#outbox = [];
    this.#outboxHead = 0;
    this.#outboxBytes = 0;
  }

  /**
   * Starts the close handshake with a protocol close code; idempotent.
   *
   * Frames already queued (say, the errors that led to a policy close) go out before the close
   * frame; a slow consumer's backlog is dropped instead: it resumes from history. A peer that sent
   * a frame within {@link CLOSE_QUIET_MS} gets its close frame once it has gone quiet (see the
   * module doc). A peer that never answers the close frame would leave the socket CLOSING for
   * good; the watchdog reports the client closed after {@link CLOSE_WATCHDOG_MS} regardless.
   */
  close(close: CloseCode): void {
    if (this.#closing || this.#closed) return;
    if (this.#socket.readyState === CONNECTING) {
      // Deno ignores close() on a server socket that is not open yet and opens it anyway, which
      // would leave an uncounted socket behind: close it the moment it opens instead.
      this.#closeOnOpen ??= close;
      return;
    }
    if (close.code !== Close.slowConsumer.code && this.pending > 0) this.flush();
    this.#closing = true;
    this.#dropOutbox();
    const quietMs = this.#options.closeQuietMs ?? CLOSE_QUIET_MS;
    if (performance.now() - this.#lastFrameAt < quietMs) {
      const started = performance.now();
      const check = () => {
        const now = performance.now();
        const quietFor = now - this.#lastFrameAt;
        if (this.#closed) return;
        if (quietFor >= quietMs || now - started >= CLOSE_LINGER_MS) {
          this.#linger = undefined;
          this.#sendClose(close);
        } else {
          this.#linger = setTimeout(check, quietMs - quietFor);
        }
      };
      this.#linger = setTimeout(check, quietMs);
      return;
    }
    this.#sendClose(close);
  }

  /** Sends the close frame and starts the handshake's watchdog. */
  #sendClose(close: CloseCode): void {
    try {
      this.#socket.close(close.code, close.reason);
    } catch {
      // Already closed: the close event (or the watchdog) finishes the job.
    }
    // A socket may report its close at once (fakes do; so may a runtime): then nothing is left
    // to watch.
    if (this.#closed) return;
    this.#watchdog = setTimeout(() => {
      this.#watchdog = undefined;
      this.#finish(close.code, `${close.reason} (close handshake timed out)`);
    }, this.#options.closeTimeoutMs ?? CLOSE_WATCHDOG_MS);
  }

  /** The socket's event listener; called by the socket only. */
  handleEvent(event: Event): void {
    switch (event.type) {
      case "message":
        return this.#onMessage(event as MessageEvent);
      case "open":
        return this.#onOpen();
      case "close":
        return this.#finish((event as CloseEvent).code, (event as CloseEvent).reason);
    }
  }

  #onOpen(): void {
    // It fires once; keeping the listener would cost its entry for the connection's lifetime.
    this.#socket.removeEventListener("open", this);
    this.#options.opening?.forget(this);
    if (this.#closed) {
      // The opening watchdog gave up on it already: nobody owns this socket any more.
      try {
        this.#socket.close(Close.overloaded.code, Close.overloaded.reason);
      } catch {
        // Gone already.
      }
      return;
    }
    if (this.#closeOnOpen !== undefined) return this.close(this.#closeOnOpen);
    this.#opened = true;
    this.#handler.opened(this);
  }

  #onMessage(event: MessageEvent): void {
    // Read on every frame: a close decides from it whether the peer is still sending.
    this.#lastFrameAt = performance.now();
    if (this.#closing || this.#closed) return;
    this.#framesIn++;
    const data: unknown = event.data;
    if (typeof data !== "string") {
      const size = data instanceof ArrayBuffer ? data.byteLength : 0;
      if (size > this.#options.maxFrameBytes) {
        this.#handler.refused(this, "too_large");
        this.close(Close.tooBig);
      } else {
        this.#handler.refused(this, "binary");
      }
      return;
    }
    if (exceedsUtf8(data, this.#options.maxFrameBytes)) {
      this.#handler.refused(this, "too_large");
      this.close(Close.tooBig);
      return;
    }
    this.#handler.received(this, data);
  }

  #finish(code: number, reason: string): void {
    if (this.#closed) return; // `close` can fire twice, and the watchdog may race it
    this.#closed = true;
    this.#closing = true;
    this.#options.opening?.forget(this);
    if (this.#watchdog !== undefined) clearTimeout(this.#watchdog);
    this.#watchdog = undefined;
    clearTimeout(this.#expiry);
    this.#expiry = undefined;
    clearTimeout(this.#linger);
    this.#linger = undefined;
    this.#dropOutbox();
    this.#handler.closed(this, code, reason);
  }

  #now(): number {
    return (this.#options.now ?? Date.now)();
  }
}
