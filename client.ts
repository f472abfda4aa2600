/**
 * One connected WebSocket: its outbox, its write path and its transport-level checks.
 *
 * Ownership:
 * - A Client owns its socket's writes: `flush`, inherited from {@link OutboxWriter}
 *   (delivery/outbox_writer.ts, with the outbox, slow-consumer and coalescing rules), is the only
 *   caller of `socket.send`. Everyone else calls `enqueue`, synchronous and never blocking.
 * - The Hub owns room membership: {@link Client.addRoom} and {@link Client.removeRoom} are for the
 *   Hub only; others read it with {@link Client.inRoom} and {@link Client.rooms}.
 * - Inbound frames are size-checked and type-checked here (text only, at most `maxFrameBytes`),
 *   then handed to a {@link ClientHandler}; the Client knows nothing of the protocol's meaning.
 *
 * Closing: Deno drops a server socket without a close frame (the peer sees 1006) when a data frame
 * arrives after `close()`, so a client whose peer is still sending lingers, reading and discarding,
 * until the peer has been quiet for {@link CLOSE_QUIET_MS} (at most {@link CLOSE_LINGER_MS}), and
 * only then sends its close frame: the peer gets the error frames and the close code meant for it.
 *
 * Code above this file never sees a raw WebSocket, only a {@link SocketLike}.
 */
import { type FlushObserver, OutboxWriter, type WriteLimits } from "./delivery/outbox_writer.ts";
import { Close, type CloseCode, exceedsUtf8 } from "./message.ts";

export type { FlushObserver };

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
export interface ClientLimits extends WriteLimits {
  maxFrameBytes: number;
  /** Milliseconds since the epoch; injectable for tests. */
  now?: () => number;
  /** Close-handshake watchdog in milliseconds; default {@link CLOSE_WATCHDOG_MS}. */
  closeTimeoutMs?: number;
  /** Gives up on sockets that never open; servers pass one, unit tests may leave it out. */
  opening?: OpeningDeadlines;
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

/** Counters a client keeps for its close log line and for metrics. */
export interface ClientStats {
  framesIn: number;
  framesOut: number;
  eventsOut: number;
  openedAt: number;
}

/** One WebSocket connection and its outbox. */
export class Client extends OutboxWriter<ClientLimits> {
  readonly id: string;
  readonly remote: string;
  /** The stamped identity; in open mode fixed at connect time. */
  readonly user: string;
  readonly named: boolean;
  /** Counters for the close log line and metrics: a snapshot, built on each read. */
  get stats(): ClientStats {
    return {
      framesIn: this.#framesIn,
      framesOut: this.framesOut,
      eventsOut: this.eventsOut,
      openedAt: this.#openedAt,
    };
  }
  /** Token expiry in token mode; replaced through {@link Client.expireAt}. */
  get expiresAt(): Date | undefined {
    return this.#expiresAt;
  }

  readonly #handler: ClientHandler;
  /** When the last inbound frame arrived (`performance.now()`), for the closing linger. */
  #lastFrameAt = -Infinity;
  #linger: ReturnType<typeof setTimeout> | undefined;
  #opened = false;
  #closing = false;
  /** The close frame this side sent, once it did. */
  #sent: CloseCode | undefined;
  /** A close is decided and waits for the peer to go quiet: its frames are discarded. */
  #draining = false;
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
  #framesIn = 0;
  readonly #openedAt: number;

  /** Wraps a socket; attaches listeners only, so it cannot throw after an upgrade. */
  constructor(socket: SocketLike, handler: ClientHandler, options: ClientOptions) {
    super(socket, options.limits, options.batching);
    this.#handler = handler;
    this.id = options.id;
    this.user = options.user;
    this.named = options.named;
    this.remote = options.remote;
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
    if (socket.readyState === CONNECTING) this.limits.opening?.watch(this);
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
  override get active(): boolean {
    return !this.#closing && !this.#closed;
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

  protected override get closeDecided(): boolean {
    return this.#closing || this.#closed || this.#draining || this.#sent !== undefined;
  }

  /**
   * Starts the close handshake with a protocol close code; idempotent.
   *
   * Frames already queued (say, the errors that led to a policy close) go out before the close
   * frame; a slow consumer's backlog is dropped instead: it resumes from history. A peer that sent
   * a frame within {@link CLOSE_QUIET_MS} gets its close frame once it has gone quiet (see the
   * module doc); meanwhile its further frames are discarded, and the answers to frames it sent
   * before (acks still being stored) are still queued and sent ahead of the close frame. A peer that never answers the close frame would leave the socket CLOSING for
   * good; the watchdog reports the client closed after {@link CLOSE_WATCHDOG_MS} regardless.
   */
  override close(close: CloseCode): void {
    if (this.closeDecided) return;
    if (this.socket.readyState === CONNECTING) {
      // Deno ignores close() on a server socket that is not open yet and opens it anyway, which
      // would leave an uncounted socket behind: close it the moment it opens instead.
      this.#closeOnOpen ??= close;
      return;
    }
    const slow = close.code === Close.slowConsumer.code;
    if (slow) {
      this.#closing = true;
      this.dropOutbox();
    }
    const quietMs = this.limits.closeQuietMs ?? CLOSE_QUIET_MS;
    if (performance.now() - this.#lastFrameAt < quietMs) {
      this.#draining = true;
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

  /** Writes what is queued (unless the client is a slow consumer), then sends the close frame and
   * starts the handshake's watchdog; once. */
  #sendClose(close: CloseCode): void {
    if (this.#sent !== undefined || this.#closed) return;
    // Set first: a send that throws in the flush below closes again, which must not recurse.
    this.#sent = close;
    if (!this.#closing) this.flushFinal();
    this.#closing = true;
    this.dropOutbox();
    try {
      this.socket.close(close.code, close.reason);
    } catch {
      // Already closed: the close event (or the watchdog) finishes the job.
    }
    // A socket may report its close at once (fakes do; so may a runtime): then nothing is left
    // to watch.
    if (this.#closed) return;
    this.#watchdog = setTimeout(() => {
      this.#watchdog = undefined;
      this.#finish(close.code, `${close.reason} (close handshake timed out)`);
    }, this.limits.closeTimeoutMs ?? CLOSE_WATCHDOG_MS);
  }

  /** The socket's event listener; called by the socket only. */
  handleEvent(event: Event): void {
    switch (event.type) {
      case "message":
        return this.#onMessage(event as MessageEvent);
      case "open":
        return this.#onOpen();
      case "close": {
        const { code, reason } = event as CloseEvent;
        // A peer that drops the connection instead of echoing our close frame leaves Deno with
        // no code (0, 1005 or 1006): the connection was still closed with ours.
        const sent = this.#sent;
        if (sent !== undefined && (code === 0 || code === 1005 || code === 1006)) {
          return this.#finish(sent.code, `${sent.reason} (the peer sent no close frame)`);
        }
        return this.#finish(code, reason);
      }
    }
  }

  #onOpen(): void {
    // It fires once; keeping the listener would cost its entry for the connection's lifetime.
    this.socket.removeEventListener("open", this);
    this.limits.opening?.forget(this);
    if (this.#closed) {
      // The opening watchdog gave up on it already: nobody owns this socket any more.
      try {
        this.socket.close(Close.overloaded.code, Close.overloaded.reason);
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
    this.limits.scheduler.inbound?.();
    if (this.#closing || this.#closed || this.#draining) return;
    this.#framesIn++;
    const data: unknown = event.data;
    if (typeof data !== "string") {
      const size = data instanceof ArrayBuffer ? data.byteLength : 0;
      if (size > this.limits.maxFrameBytes) {
        this.#handler.refused(this, "too_large");
        this.close(Close.tooBig);
      } else {
        this.#handler.refused(this, "binary");
      }
      return;
    }
    if (exceedsUtf8(data, this.limits.maxFrameBytes)) {
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
    this.limits.opening?.forget(this);
    if (this.#watchdog !== undefined) clearTimeout(this.#watchdog);
    this.#watchdog = undefined;
    clearTimeout(this.#expiry);
    this.#expiry = undefined;
    clearTimeout(this.#linger);
    this.#linger = undefined;
    this.dropOutbox();
    this.#handler.closed(this, code, reason);
  }

  #now(): number {
    return (this.limits.now ?? Date.now)();
  }
}
