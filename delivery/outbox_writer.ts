/**
 * A connection's outbox and write path: {@link OutboxWriter}, which `Client` (client.ts) extends,
 * so a connection is still one object and no state is added per connection.
 *
 * Ownership and invariants:
 * - {@link OutboxWriter.flush} is the only caller of `socket.send`; everyone else calls
 *   {@link OutboxWriter.enqueue}, which is synchronous and never blocks.
 * - The outbox's bytes are also counted in the server's {@link Egress} account while queued, and
 *   taken off it when sent or dropped.
 * - When to flush is the {@link FlushScheduler}'s decision (flush.ts); how much to write at once,
 *   how to batch, and when a peer counts as a slow consumer is decided here.
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
import type { SocketLike } from "../client.ts";
import { Close, type CloseCode, type PreparedFrame } from "../message.ts";

/** Share of the outbox bounds above which droppable events (typing) are dropped. */
export const DROPPABLE_FILL = 0.5;

/** The write limits of a client; `ClientLimits` (client.ts) adds the rest. */
export interface WriteLimits {
  outboxMessages: number;
  outboxBytes: number;
  scheduler: FlushScheduler;
  /** Told about every frame written, for metrics. */
  observer?: FlushObserver;
  /** See {@link LAG_GRACE_MS}; tests shorten it. */
  lagGraceMs?: number;
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

/** `WebSocket.OPEN`, held here because client.ts, which names it, extends this file's class:
 * a value import from it would be a cycle that runs `extends` before this class exists. */
const SOCKET_OPEN = 1;

/**
 * A socket's outbox and write path; `Client` (client.ts) extends it, so each connection stays one
 * object. Its {@link OutboxWriter.flush} is the only caller of `socket.send`.
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
 */
export abstract class OutboxWriter<L extends WriteLimits = WriteLimits> {
  /** True when the client negotiated `parley.v1` and may receive batch frames. */
  readonly batching: boolean;
  protected readonly socket: SocketLike;
  protected readonly limits: L;
  // Per-connection state is kept flat (see client.ts): no objects here beyond the outbox array.
  #outbox: PreparedFrame[] = [];
  #outboxHead = 0;
  #outboxBytes = 0;
  /** The server-wide account the outbox bytes are also counted in, when the scheduler has one. */
  readonly #egress: Egress | undefined;
  #scheduled = false;
  /** Free time, in ms, the client has been behind with its backlog past a bound and not shrinking. */
  #behindMs = 0;
  /** The backlog (outbox plus unsent bound) at the last flush, to tell progress from lag. */
  #lastBacklog = 0;
  /** At least the socket's unsent bytes: its last `bufferedAmount` plus all sent since. */
  #unsentBound = 0;
  #framesOut = 0;
  #eventsOut = 0;

  /** Sets up an empty outbox; touches nothing of the socket. */
  constructor(socket: SocketLike, limits: L, batching: boolean) {
    this.socket = socket;
    this.limits = limits;
    this.batching = batching;
    this.#egress = limits.scheduler.egress;
  }

  /** Whether the client still accepts frames (not closing or closed). */
  abstract get active(): boolean;

  /** Starts closing the connection with a protocol close code; idempotent. */
  abstract close(close: CloseCode): void;

  /** Whether a close is already decided (the client lingers or closes): no 4008 is due then. */
  protected abstract get closeDecided(): boolean;

  /** Frames written so far. */
  protected get framesOut(): number {
    return this.#framesOut;
  }

  /** Events written so far (a batch frame carries several). */
  protected get eventsOut(): number {
    return this.#eventsOut;
  }

  /** Events waiting in the outbox. */
  get pending(): number {
    return this.#outbox.length - this.#outboxHead;
  }

  /** Bytes waiting in the outbox plus bytes the socket has not sent yet. */
  get backlogBytes(): number {
    return this.#outboxBytes + this.socket.bufferedAmount;
  }

  /**
   * Queues a frame for this client without blocking.
   *
   * Returns false when the frame was not queued: the client is closing, the frame is
   * `droppable` (typing) and the outbox is under pressure, or the client has lagged past its
   * bounds and is being closed with 4008.
   */
  enqueue(frame: PreparedFrame, droppable = false): boolean {
    if (!this.active) return false;
    const count = this.pending + 1;
    // Only the outbox: `bufferedAmount` is a call into the runtime, too dear per delivery; the
    // socket's unsent bytes are checked in flush (and only read when they could matter).
    const bytes = this.#outboxBytes + frame.bytes;
    const { outboxMessages, outboxBytes } = this.limits;
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
      this.limits.scheduler.schedule(this);
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
   * {@link OutboxWriter.wake} later. A {@link BatchCache} shared across the clients of one flush pass
   * lets them reuse each other's batch frames, and the pass's {@link SendBudget}, when given,
   * stops it partway: the client then schedules itself for the next pass.
   */
  flush(cache?: BatchCache, budget?: SendBudget): boolean {
    this.#scheduled = false;
    if (!this.active || this.socket.readyState !== SOCKET_OPEN) return true;
    return this.#write(cache, budget, false);
  }

  /**
   * Writes everything the outbox holds, past the high-water mark and with no slow-consumer check:
   * the last frames before a close frame (the outbox is bounded, so this is too).
   */
  protected flushFinal(): void {
    if (this.socket.readyState === SOCKET_OPEN && this.pending > 0) {
      this.#write(undefined, undefined, true);
    }
  }

  #write(cache: BatchCache | undefined, budget: SendBudget | undefined, final: boolean): boolean {
    // `bufferedAmount` is a call into the runtime (7% of JS time at saturation when read on
    // every flush). The socket's unsent bytes only grow by what we send, so their last reading
    // plus every byte sent since bounds them: while that bound is under the mark, the reading is
    // skipped, exactly.
    if (this.#unsentBound > SOCKET_HIGH_WATER_BYTES) {
      this.#unsentBound = this.socket.bufferedAmount;
    }
    // Lag is a backlog past its bounds that does not shrink: a reader catching up after a flood
    // shrinks it at every look, one that takes a little at a time while more comes does not.
    const backlog = this.#outboxBytes + this.#unsentBound;
    if (backlog < this.#lastBacklog || !this.#overBounds()) this.#behindMs = 0;
    this.#lastBacklog = backlog;
    if (!final && this.#unsentBound > SOCKET_HIGH_WATER_BYTES) {
      if (this.#overBounds() && this.#lagging()) {
        this.#slow();
        return true;
      }
      this.#scheduled = true;
      return false;
    }
    const outbox = this.#outbox;
    let head = this.#outboxHead;
    const observer = this.limits.observer;
    observer?.observeOutboxBytes(this.#outboxBytes);
    const egress = this.#egress;
    try {
      while (head < outbox.length) {
        if (budget !== undefined && (budget.frames <= 0 || budget.bytes <= 0)) {
          // The pass's budget is spent: the rest goes on a following pass.
          this.#outboxHead = head;
          this.#scheduled = true;
          this.limits.scheduler.schedule(this);
          return true;
        }
        if (
          !final && this.#unsentBound > SOCKET_HIGH_WATER_BYTES &&
          (this.#unsentBound = this.socket.bufferedAmount) > SOCKET_HIGH_WATER_BYTES
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
        this.socket.send(text);
        // Past the frame before anything else can throw: a retry must not send it twice.
        const events = end - head;
        head = end;
        this.#outboxHead = head;
        this.#outboxBytes -= bytes;
        if (egress !== undefined) egress.bytes -= bytes;
        // `bytes` counts the events; the frame adds brackets and commas (its exact UTF-8 size).
        this.#unsentBound += events > 1 ? bytes + events + 1 : bytes;
        if (budget !== undefined) {
          budget.frames--;
          budget.bytes -= bytes;
        }
        this.#framesOut++;
        this.#eventsOut += events;
        observer?.frameOut(events);
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

  #slow(): void {
    if (this.closeDecided) return;
    this.limits.observer?.slowConsumerDisconnect();
    this.close(Close.slowConsumer);
  }

  /**
   * Re-schedules a flush that was held back by a socket that is behind; for the scheduler only.
   * `freeMs` is the time since the hold in which the server was free to write: it counts toward
   * the client's lag until a flush finds its backlog within bounds or shrinking.
   */
  wake(freeMs = 0): void {
    if (!this.active) return;
    this.#behindMs += freeMs;
    this.#scheduled = true;
    this.limits.scheduler.schedule(this);
  }

  /** Whether the socket has been behind for the whole grace period of free time. */
  #lagging(): boolean {
    return this.#behindMs >= (this.limits.lagGraceMs ?? LAG_GRACE_MS);
  }

  /** Whether the backlog (outbox and the socket's unsent bytes, as last read) is past a bound. */
  #overBounds(): boolean {
    return this.pending > this.limits.outboxMessages ||
      this.#outboxBytes + this.#unsentBound > this.limits.outboxBytes;
  }

  /** Empties the outbox, taking its bytes off the server's account. */
  protected dropOutbox(): void {
    if (this.#egress !== undefined) this.#egress.bytes -= this.#outboxBytes;
    this.#outbox = [];
    this.#outboxHead = 0;
    this.#outboxBytes = 0;
  }
}
