/**
 * When clients write: the flush scheduler, its per-pass send budget, the batch frames shared
 * between clients in one pass, and the server's egress account.
 *
 * Ownership: the {@link Flusher} owns the schedule (which dirty client flushes when) and the
 * {@link Egress} account (bytes queued in every outbox of this process). Each Client still owns
 * its socket's writes: the flusher only calls `client.flush()` and `client.wake()`.
 *
 * Two facts of the runtime shape this file:
 * - While a peer's frames are already waiting, Deno delivers its `message` events back to back
 *   and runs no timers and no `setImmediate` callbacks until they are drained (hundreds of
 *   milliseconds under a flood), and the sockets' own writes wait too. Passes therefore run
 *   late, and time spent waiting for one is not a peer's fault: a client is judged slow only on
 *   time the loop was free to write ({@link Flusher} credits it on its retry ticks, capped per
 *   tick), never on what piled up while it was not.
 * - `socket.send()` never pushes back, so memory is bounded from the other side: when the
 *   outboxes together pass {@link EGRESS_PRESSURE_BYTES}, or a pass asked for has not run for
 *   {@link STARVED_MS} while {@link STARVED_FRAMES} inbound frames were handled,
 *   {@link Flusher.overloaded} is true and the chat layer answers senders
 *   `overloaded` instead of storing (their clients retry by `ref`). Readers are never cut to
 *   make room.
 */
import { clearImmediate, setImmediate } from "node:timers";
import type { PreparedFrame } from "../message.ts";

/**
 * Most frames, and about the most bytes, one flush pass hands to all sockets together. Every
 * `send` becomes a write task in the runtime with its own copy of the frame (about 1.1–1.5 KB of
 * native memory each besides the payload), so a burst of plain frames is spread over passes;
 * the clients a pass does not reach go first on the next one.
 */
export const PASS_SEND_FRAMES = 1024;
export const PASS_SEND_BYTES = 16 * 1024 * 1024;
/** Bytes a socket may hold unsent before its client stops handing it more (the peer is behind). */
export const SOCKET_HIGH_WATER_BYTES = 256 * 1024;
/** How often held-back clients look at their sockets again, in milliseconds. */
export const BACKLOG_RETRY_MS = 10;
/** Most free time one retry tick credits, in milliseconds: a tick that fires late fired late
 * because the loop was busy, and busy time is not the peer's. At least {@link BACKLOG_RETRY_MS}. */
export const MAX_TICK_CREDIT_MS = 2 * BACKLOG_RETRY_MS;
/** Free time a peer may stay behind with its backlog past the outbox bounds before it is
 * closed with 4008, in milliseconds. */
export const LAG_GRACE_MS = 250;
/** Bytes queued in all outboxes together past which senders are told `overloaded`. */
export const EGRESS_PRESSURE_BYTES = 64 * 1024 * 1024;
/** While a pass asked for has not run for this long (milliseconds) and {@link STARVED_FRAMES}
 * inbound frames were handled meanwhile, the loop is starved by them and senders are told
 * `overloaded`. Well above one loaded pass (~20 ms). */
export const STARVED_MS = 100;
/** Inbound frames that, with {@link STARVED_MS}, tell a flood from a machine that is merely busy
 * (a process descheduled for a while handles few frames in that time). */
export const STARVED_FRAMES = 512;
/** Most events packed into one batch frame. */
export const MAX_BATCH_EVENTS = 256;
/** Most bytes packed into one batch frame; a single larger event still goes alone. */
export const MAX_BATCH_BYTES = 64 * 1024;

/** What one flush pass may still hand to sockets; each flush spends from it. A frame is always
 * sent whole, so the bytes may end below zero. */
export interface SendBudget {
  frames: number;
  bytes: number;
}

/** Bytes queued in the outboxes of every client of one server; clients add and subtract. */
export interface Egress {
  bytes: number;
}

/** What the scheduler needs of a client: its write path (a Client satisfies it). */
export interface Flushable {
  /** Writes what the outbox holds; false when the socket is behind and frames wait. */
  flush(cache?: BatchCache, budget?: SendBudget): boolean;
  /** Schedules a held-back flush again, crediting `freeMs` of free time to its lag. */
  wake(freeMs?: number): void;
}

/** Decides when dirty clients flush. */
export interface FlushScheduler {
  /** Asks for `client.flush()` soon; calling it again before the flush is harmless. */
  schedule(client: Flushable): void;
  /** The outbox bytes of every client of this scheduler; absent in unit tests. */
  readonly egress?: Egress;
  /** Told of every inbound frame a client handles (see {@link Flusher.overloaded}). */
  inbound?(): void;
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
 * Where the next frame of an outbox ends: one event for plain clients; for `parley.v1` as many
 * whole events as fit into one JSON array (the first always does: a larger event goes alone).
 */
export function batchEnd(outbox: readonly PreparedFrame[], head: number, batching: boolean) {
  let end = head + 1;
  if (!batching) return end;
  let size = 2 + outbox[head]!.bytes + 1;
  while (
    end < outbox.length && end - head < MAX_BATCH_EVENTS &&
    size + outbox[end]!.bytes + 1 <= MAX_BATCH_BYTES
  ) {
    size += outbox[end]!.bytes + 1;
    end++;
  }
  return end;
}

/** Options of a {@link Flusher}; every field has a default. */
export interface FlusherOptions extends Partial<SendBudget> {
  /** See {@link EGRESS_PRESSURE_BYTES}. */
  pressureBytes?: number;
  /** Milliseconds on a monotonic clock; injectable for tests. */
  now?: () => number;
}

/**
 * Flushes every dirty client together after this loop iteration, and retries held-back ones.
 *
 * One pass spends at most a {@link SendBudget} of frames and bytes; what it leaves waits for the
 * next iteration, clients it did not reach first. Held-back clients (their sockets are behind)
 * are retried every {@link BACKLOG_RETRY_MS} and credited the free time that passed.
 */
export class Flusher implements FlushScheduler {
  readonly egress: Egress = { bytes: 0 };
  #dirty: Flushable[] = [];
  #heldBack: Flushable[] = [];
  #timer: ReturnType<typeof setImmediate> | undefined;
  #retry: ReturnType<typeof setTimeout> | undefined;
  #retryArmedAt = 0;
  /** When the pending pass was asked for; undefined while none is pending. */
  #askedAt: number | undefined;
  /** Inbound frames handled since then. */
  #framesSinceAsked = 0;
  #closed = false;
  readonly #cache = new BatchCache();
  readonly #limit: Readonly<SendBudget>;
  readonly #budget: SendBudget = { frames: 0, bytes: 0 };
  readonly #pressureBytes: number;
  readonly #now: () => number;

  constructor(options: FlusherOptions = {}) {
    const { frames = PASS_SEND_FRAMES, bytes = PASS_SEND_BYTES } = options;
    if (!(frames >= 1 && bytes >= 1)) {
      throw new RangeError(`A flush pass needs a budget of at least 1: ${frames}, ${bytes}`);
    }
    this.#limit = { frames, bytes };
    this.#pressureBytes = options.pressureBytes ?? EGRESS_PRESSURE_BYTES;
    this.#now = options.now ?? (() => performance.now());
  }

  /**
   * Whether senders should be refused for now: the outboxes hold more than the pressure bound,
   * or a pass was asked for more than {@link STARVED_MS} ago and has not run while at least
   * {@link STARVED_FRAMES} inbound frames were handled (a flood holds the loop). Cheap enough to
   * ask for every inbound frame.
   */
  get overloaded(): boolean {
    if (this.egress.bytes > this.#pressureBytes) return true;
    const askedAt = this.#askedAt;
    return askedAt !== undefined && this.#framesSinceAsked >= STARVED_FRAMES &&
      this.#now() - askedAt > STARVED_MS;
  }

  inbound(): void {
    this.#framesSinceAsked++;
  }

  schedule(client: Flushable): void {
    if (this.#closed) return;
    this.#dirty.push(client);
    // setImmediate runs after this loop iteration's I/O: everything that arrived together is
    // written together, without the millisecond a zero timeout costs in Deno.
    if (this.#timer === undefined) {
      this.#askedAt = this.#now();
      this.#framesSinceAsked = 0;
      this.#timer = setImmediate(this.#run);
    }
  }

  /** Writes what is pending now and stops scheduling (shutdown). */
  close(): void {
    // Pass after pass until nothing is dirty: a pass may stop at its send budget.
    while (this.#dirty.length > 0) this.#run();
    clearImmediate(this.#timer);
    this.#timer = undefined;
    this.#askedAt = undefined;
    this.#closed = true;
    clearTimeout(this.#retry);
    this.#retry = undefined;
    this.#heldBack = [];
  }

  #run = (): void => {
    clearImmediate(this.#timer);
    this.#timer = undefined;
    this.#askedAt = undefined;
    const dirty = this.#dirty;
    this.#dirty = [];
    const budget = this.#budget;
    budget.frames = this.#limit.frames;
    budget.bytes = this.#limit.bytes;
    let next = 0;
    while (next < dirty.length && budget.frames > 0 && budget.bytes > 0) {
      const client = dirty[next++]!;
      if (!client.flush(this.#cache, budget)) this.#hold(client);
    }
    this.#cache.clear();
    if (next < dirty.length) {
      // The pass spent its budget: the clients it did not reach go first on the next one, ahead
      // of any that it stopped partway (those re-scheduled themselves) or that became dirty.
      this.#dirty = dirty.slice(next).concat(this.#dirty);
    }
    // A client stopped by the budget may have asked for the next pass already.
    if (this.#dirty.length > 0 && !this.#closed && this.#timer === undefined) {
      this.#askedAt = this.#now();
      this.#framesSinceAsked = 0;
      this.#timer = setImmediate(this.#run);
    }
  };

  #hold(client: Flushable): void {
    this.#heldBack.push(client);
    if (this.#retry === undefined && !this.#closed) {
      // The peers are behind: look again shortly rather than spin on every turn.
      this.#retryArmedAt = this.#now();
      this.#retry = setTimeout(this.#wake, BACKLOG_RETRY_MS);
    }
  }

  #wake = (): void => {
    this.#retry = undefined;
    const now = this.#now();
    const credit = Math.min(now - this.#retryArmedAt, MAX_TICK_CREDIT_MS);
    const heldBack = this.#heldBack;
    this.#heldBack = [];
    for (const client of heldBack) client.wake(credit);
  };
}
