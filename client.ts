/**
 * One connected WebSocket: its bounded outbox, its write path and its transport-level checks.
 *
 * Ownership:
 * - A Client owns its socket's writes: {@link Client.flush} is the only caller of `socket.send`.
 *   Everyone else calls {@link Client.enqueue}, which is synchronous, never blocks and is bounded
 *   by count and bytes. Past either bound the client is closed with 4008 "Slow consumer"; it then
 *   resumes from history when it reconnects, so nothing is dropped silently.
 * - The Hub owns room membership: {@link Client.addRoom} and {@link Client.removeRoom} are for the
 *   Hub only; others read it with {@link Client.inRoom} and {@link Client.rooms}.
 * - Inbound frames are size-checked and type-checked here (text only, at most `maxFrameBytes`),
 *   then handed to a {@link ClientHandler}; the Client knows nothing of the protocol's meaning.
 *
 * Write coalescing: `enqueue` marks the client dirty with a {@link FlushScheduler}, which flushes
 * it once the current event-loop iteration's I/O is handled (`setImmediate`). Events that pile up
 * while a flush is pending, or while the socket still holds unsent bytes, leave together: for
 * `parley.v1` clients as one JSON-array frame, for plain clients one frame each. A lone event
 * leaves alone and at once. One pass hands the runtime at most {@link PASS_SEND_FRAMES} frames;
 * the rest leave on the next iteration.
 *
 * Code above this file never sees a raw WebSocket, only a {@link SocketLike}.
 */
import { clearImmediate, setImmediate } from "node:timers";
import { Close, type CloseCode, exceedsUtf8, type PreparedFrame } from "./message.ts";

/** Most events packed into one batch frame. */
export const MAX_BATCH_EVENTS = 256;
/** Most bytes packed into one batch frame; a single larger event still goes alone. */
export const MAX_BATCH_BYTES = 64 * 1024;
/**
 * Most frames, and about the most bytes, one flush pass hands to all sockets together (the
 * defaults of {@link MacrotaskFlusher}). Every `send` becomes a write task in the runtime with
 * its own copy of the frame: 1.1–1.5 KB of native memory each, besides the payload, measured
 * with 20,000 sends in one turn, and the process keeps most of it after such a burst (a presence
 * storm, a backlog of plain frames). The clients a pass does not reach go first on the next one,
 * after the runtime has written what this one sent. A client needs one frame per pass
 * (`parley.v1`) or a few (plain), so at 1,000 clients a pass is rarely split.
 */
export const PASS_SEND_FRAMES = 1024;
export const PASS_SEND_BYTES = 16 * 1024 * 1024;
/** While the socket holds more unsent bytes than this, flushes wait (the peer is behind). */
export const SOCKET_HIGH_WATER_BYTES = 256 * 1024;
/** How often a held-back flush re-checks the socket, in milliseconds. */
export const BACKLOG_RETRY_MS = 10;
/** How long a close handshake may take before the watchdog tears the client down, in ms. */
export const CLOSE_WATCHDOG_MS = 3_000;
/** How long an upgraded socket may take to open before the client gives up on it, in ms. Deno
 * sends no event at all for a socket whose 101 response could not be written (the peer went
 * away first), so without this its connection slot would never be released. */
export const OPEN_WATCHDOG_MS = 10_000;
/** How far one event-loop turn's burst may overfill the outbox bounds before the client is
 * dropped without waiting for the next flush (which applies the bounds themselves). */
export const BURST_FACTOR = 4;
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

/** What one flush pass may still hand to sockets; each flush spends from it. A frame is
 * always sent whole, so the bytes may end below zero. */
export interface SendBudget {
  frames: number;
  bytes: number;
}

/** Decides when dirty clients flush. */
export interface FlushScheduler {
  /** Asks for `client.flush()` soon; calling it again before the flush is harmless. */
  schedule(client: Client): void;
}

/**
 * Batch frames built during one flush pass, shared by every client whose outbox holds the same
 * run of events (the same {@link PreparedFrame} objects, in the same order): the members of a
 * room. Valid for one pass only; clear it afterwards.
 */
export class BatchCache {
  readonly #entries = new Map<
    PreparedFrame,
    { outbox: readonly PreparedFrame[]; start: number; end: number; text: string; bytes: number }
  >();

  /** The frame built for `outbox[start..end)` by another client, if its events are identical. */
  get(
    outbox: readonly PreparedFrame[],
    start: number,
    end: number,
  ): { text: string; bytes: number } | undefined {
    const entry = this.#entries.get(outbox[start]!);
    if (entry === undefined || entry.end - entry.start !== end - start) return undefined;
    for (let i = 1; i < end - start; i++) {
      if (entry.outbox[entry.start + i] !== outbox[start + i]) return undefined;
    }
    return { text: entry.text, bytes: entry.bytes };
  }

  /** Remembers the frame built for `outbox[start..end)`; the outbox must not change this pass. */
  set(outbox: readonly PreparedFrame[], start: number, end: number, text: string, bytes: number) {
    this.#entries.set(outbox[start]!, { outbox, start, end, text, bytes });
  }

  /** Forgets every entry. */
  clear(): void {
    this.#entries.clear();
  }
}

/**
 * Flushes every dirty client together after this loop iteration, and retries held-back ones.
 *
 * One pass spends at most a {@link SendBudget} of frames and bytes; what it leaves waits for the
 * next iteration (see {@link PASS_SEND_FRAMES}), clients it did not reach first.
 */
export class MacrotaskFlusher implements FlushScheduler {
  #dirty: Client[] = [];
  #heldBack: Client[] = [];
  #timer: ReturnType<typeof setImmediate> | undefined;
  #retry: ReturnType<typeof setTimeout> | undefined;
  #closed = false;
  readonly #cache = new BatchCache();
  readonly #limit: Readonly<SendBudget>;
  readonly #budget: SendBudget = { frames: 0, bytes: 0 };

  constructor(limit: Partial<SendBudget> = {}) {
    const { frames = PASS_SEND_FRAMES, bytes = PASS_SEND_BYTES } = limit;
    if (!(frames >= 1 && bytes >= 1)) {
      throw new RangeError(`A flush pass needs a budget of at least 1: ${frames}, ${bytes}`);
    }
    this.#limit = { frames, bytes };
  }

  schedule(client: Client): void {
    if (this.#closed) return;
    this.#dirty.push(client);
    // setImmediate runs after this loop iteration's I/O: everything that arrived together is
    // written together, without the millisecond a zero timeout costs in Deno.
    this.#timer ??= setImmediate(this.#run);
  }

  /** Writes what is pending now and stops scheduling (shutdown). */
  close(): void {
    // Pass after pass until nothing is dirty: a pass may stop at its send budget.
    while (this.#dirty.length > 0) this.#run();
    clearImmediate(this.#timer);
    this.#timer = undefined;
    this.#closed = true;
    clearTimeout(this.#retry);
    this.#retry = undefined;
    this.#heldBack = [];
  }

  #run = (): void => {
    clearImmediate(this.#timer);
    this.#timer = undefined;
    const dirty = this.#dirty;
    this.#dirty = [];
    const budget = this.#budget;
    budget.frames = this.#limit.frames;
    budget.bytes = this.#limit.bytes;
    let next = 0;
    while (next < dirty.length && budget.frames > 0 && budget.bytes > 0) {
      const client = dirty[next++]!;
      if (!client.flush(this.#cache, budget)) this.#heldBack.push(client);
    }
    this.#cache.clear();
    if (next < dirty.length) {
      // The pass spent its budget: the clients it did not reach go first on the next one, ahead
      // of any that it stopped partway (those re-scheduled themselves) or that became dirty.
      this.#dirty = dirty.slice(next).concat(this.#dirty);
    }
    if (this.#dirty.length > 0 && !this.#closed) this.#timer ??= setImmediate(this.#run);
    if (this.#heldBack.length > 0 && !this.#closed) {
      // The peers are behind: look again shortly rather than spin on every turn.
      this.#retry ??= setTimeout(this.#wake, BACKLOG_RETRY_MS);
    }
  };

  #wake = (): void => {
    this.#retry = undefined;
    const heldBack = this.#heldBack;
    this.#heldBack = [];
    for (const client of heldBack) client.wake();
  };
}

/**
 * Gives up on upgraded sockets that never open, with one timer for all of them.
 *
 * Deno sends no event at all for a socket whose 101 response could not be written (the peer
 * went away first); without a deadline such a client, and its server's connection slot, would
 * be held for good. A timer per connection would cost ~700 bytes of RSS each (Deno keeps a
 * cancelled timer until it would have fired), so one sweep checks every opening client. The
 * timeout is the same for all, so the map's insertion order is deadline order.
 */
export class OpeningWatch {
  readonly #timeoutMs: number;
  readonly #now: () => number;
  /** Opening clients and their deadlines, oldest first. */
  readonly #opening = new Map<Client, number>();
  #timer: ReturnType<typeof setInterval> | undefined;

  constructor(timeoutMs = OPEN_WATCHDOG_MS, now: () => number = Date.now) {
    this.#timeoutMs = timeoutMs;
    this.#now = now;
  }

  /** Sockets being watched now. */
  get size(): number {
    return this.#opening.size;
  }

  /** Starts the deadline of a client whose socket is still connecting. */
  watch(client: Client): void {
    this.#opening.set(client, this.#now() + this.#timeoutMs);
    if (this.#timer === undefined) {
      this.#timer = setInterval(this.#sweep, Math.max(1, Math.ceil(this.#timeoutMs / 4)));
      // Housekeeping: it must not keep a process alive on its own.
      Deno.unrefTimer(this.#timer);
    }
  }

  /** Ends the watch of a client that opened or closed. */
  forget(client: Client): void {
    if (this.#opening.delete(client) && this.#opening.size === 0) this.#stop();
  }

  #sweep = (): void => {
    const now = this.#now();
    for (const [client, deadline] of this.#opening) {
      if (deadline > now) break;
      this.#opening.delete(client);
      client.abandon();
    }
    if (this.#opening.size === 0) this.#stop();
  };

  #stop(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
  }
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
  opening?: OpeningWatch;
  /** Told about every frame written, for metrics. */
  observer?: FlushObserver;
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
  /** The client passed an outbox bound and is being closed with 4008. */
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
  #scheduled = false;
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
    // the 101 went out), which the opening watchdog covers. Each listener costs ~250 bytes per
    // connection, so "open" is removed once it has fired.
    socket.addEventListener("open", this);
    socket.addEventListener("message", this);
    socket.addEventListener("close", this);
    if (socket.readyState === CONNECTING) this.#options.opening?.watch(this);
  }

  /** Gives up on a socket that has not opened in time; for the {@link OpeningWatch} only. */
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
   * Returns false when the frame was not queued: the client is closing, or the frame is
   * `droppable` (typing) and the outbox is under pressure. When a bound is passed the client is
   * closed with 4008 and false is returned.
   */
  enqueue(frame: PreparedFrame, droppable = false): boolean {
    if (this.#closing || this.#closed) return false;
    const count = this.pending + 1;
    // Only the outbox: `bufferedAmount` is a call into the runtime, too dear per delivery; the
    // socket's unsent bytes are checked in flush (and only read when they could matter).
    const bytes = this.#outboxBytes + frame.bytes;
    const { outboxMessages, outboxBytes } = this.#options;
    if (
      droppable && (count > outboxMessages * DROPPABLE_FILL || bytes > outboxBytes * DROPPABLE_FILL)
    ) {
      return false;
    }
    // Within one turn a burst may pass the bounds (the socket has had no chance to drain); past
    // BURST_FACTOR times them, memory is at stake and the client goes at once.
    if (count > outboxMessages * BURST_FACTOR || bytes > outboxBytes * BURST_FACTOR) {
      this.#slow();
      return false;
    }
    this.#outbox.push(frame);
    this.#outboxBytes += frame.bytes;
    if (!this.#scheduled) {
      this.#scheduled = true;
      this.#options.scheduler.schedule(this);
    }
    return true;
  }

  /**
   * Writes what the outbox holds; the only caller of `socket.send`.
   *
   * This is where a slow consumer is recognised: when the bytes the socket has still not sent
   * from earlier flushes pass `outboxBytes`, or when the peer is behind and the outbox holds more
   * than `outboxMessages`. Returns false when it held back because the socket still has unsent
   * bytes; the scheduler then calls {@link Client.wake} later. A {@link BatchCache} shared
   * across the clients of one flush pass lets them reuse each other's batch frames, and the
   * pass's {@link SendBudget}, when given, stops it partway: the client then schedules itself
   * for the next pass.
   */
  flush(cache?: BatchCache, budget?: SendBudget): boolean {
    this.#scheduled = false;
    if (this.#closed || this.#closing || this.#socket.readyState !== OPEN) return true;
    const { outboxMessages, outboxBytes } = this.#options;
    // `bufferedAmount` is a call into the runtime (7% of JS time at saturation when read on
    // every flush). The socket's unsent bytes only grow by what we send, so their last reading
    // plus every byte sent since bounds them: while that bound is under both thresholds below,
    // neither check can fire and the reading is skipped, exactly.
    let unsent = this.#unsentBound;
    if (unsent > SOCKET_HIGH_WATER_BYTES || unsent > outboxBytes) {
      unsent = this.#unsentBound = this.#socket.bufferedAmount;
    }
    if (
      unsent > outboxBytes || (unsent > SOCKET_HIGH_WATER_BYTES && this.pending > outboxMessages)
    ) {
      this.#slow();
      return true;
    }
    if (unsent > SOCKET_HIGH_WATER_BYTES) {
      this.#scheduled = true;
      return false;
    }
    const outbox = this.#outbox;
    let head = this.#outboxHead;
    const observer = this.#options.observer;
    observer?.observeOutboxBytes(this.#outboxBytes);
    try {
      while (head < outbox.length) {
        if (budget !== undefined && (budget.frames <= 0 || budget.bytes <= 0)) {
          // The pass's budget is spent: the rest goes on a following pass.
          this.#outboxHead = head;
          this.#scheduled = true;
          this.#options.scheduler.schedule(this);
          return true;
        }
        // One event per frame; for parley.v1, as many whole events as fit into one JSON array
        // (the first always does: a single larger event goes alone).
        let end = head + 1;
        if (this.batching) {
          let size = 2 + outbox[head]!.bytes + 1;
          while (
            end < outbox.length && end - head < MAX_BATCH_EVENTS &&
            size + outbox[end]!.bytes + 1 <= MAX_BATCH_BYTES
          ) {
            size += outbox[end]!.bytes + 1;
            end++;
          }
        }
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

  /** Re-schedules a flush that was held back by a full socket. */
  wake(): void {
    if (this.#closed) return;
    this.#scheduled = true;
    this.#options.scheduler.schedule(this);
  }

  /**
   * Starts the close handshake with a protocol close code; idempotent.
   *
   * A peer that never answers the close frame would leave the socket CLOSING for good; the
   * watchdog reports the client closed after {@link CLOSE_WATCHDOG_MS} regardless.
   */
  close(close: CloseCode): void {
    if (this.#closing || this.#closed) return;
    if (this.#socket.readyState === CONNECTING) {
      // Deno ignores close() on a server socket that is not open yet and opens it anyway, which
      // would leave an uncounted socket behind: close it the moment it opens instead.
      this.#closeOnOpen ??= close;
      return;
    }
    // Frames already queued (say, the errors that led to a policy close) go out before the close
    // frame; a slow consumer's backlog is dropped instead: it resumes from history.
    if (close.code !== Close.slowConsumer.code && this.pending > 0) this.flush();
    this.#closing = true;
    this.#outbox = [];
    this.#outboxHead = 0;
    this.#outboxBytes = 0;
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
    this.#outbox = [];
    this.#outboxHead = 0;
    this.#outboxBytes = 0;
    this.#handler.closed(this, code, reason);
  }

  #now(): number {
    return (this.#options.now ?? Date.now)();
  }
}
