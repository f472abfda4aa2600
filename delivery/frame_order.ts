/**
 * The order in which a connection's frames take effect: {@link FrameOrder} runs each frame only
 * once every earlier frame of its connection has taken effect, except that consecutive
 * `message`/`direct` frames run together (the store resolves appends in call order, so their ids
 * and publishes keep the order anyway).
 *
 * Invariants:
 * - Only connections with a frame in flight have a {@link Backlog}; idle connections cost
 *   nothing here, and nothing is allocated per connection while it is idle.
 * - The frames waiting in one backlog are bounded by {@link MAX_QUEUED_FRAMES} and
 *   {@link MAX_QUEUED_BYTES}; past either, a frame is refused (the caller answers `overloaded`)
 *   and never run.
 * - {@link FrameOrder.forget} drops a closed connection's waiting frames; running ones finish,
 *   and nothing more of that connection is started.
 *
 * What a frame does is the chat layer's: it hands in `run`, which returns a promise when the
 * frame's effect completes later, and never rejects.
 */
import type { Client } from "../client.ts";
import type { ClientFrame } from "../message.ts";
import { utf8Bytes } from "../message.ts";

/** Most frames of one connection waiting for an earlier frame's effect before its further
 * frames are answered `overloaded`; the rate limit (`--burst`, 20) normally keeps it far below.
 * Appends running together do not wait: the chat layer's MAX_PENDING_APPENDS bounds them. */
export const MAX_QUEUED_FRAMES = 256;
/** Most UTF-8 bytes of those waiting frames, in bytes: four frames of the default
 * `--max-frame-bytes` (64 KiB). */
export const MAX_QUEUED_BYTES = 256 * 1024;

/**
 * The frames of one connection whose effect is not complete: those running and those waiting
 * for them, in the order received. Running frames are one frame of any type, or any number of
 * consecutive `message`/`direct` frames.
 */
interface Backlog {
  /** Frames started whose effect is not complete yet. */
  running: number;
  /** True while every running frame is an append: one more may start beside them. */
  appending: boolean;
  /** Frames waiting for the running ones, oldest first. */
  readonly waiting: { frame: ClientFrame; bytes: number }[];
  /** UTF-8 bytes of the waiting frames. */
  bytes: number;
}

/** Applies one frame now; returns a promise when its effect completes later. Never rejects. */
export type RunFrame = (client: Client, frame: ClientFrame) => Promise<void> | undefined;

/** Keeps the frames of every connection of one server in the order received. */
export class FrameOrder {
  readonly #run: RunFrame;
  readonly #refuse: (client: Client, frame: ClientFrame) => void;
  readonly #backlogs = new Map<Client, Backlog>();

  /**
   * Creates the order for one server. `run` applies a frame now and returns a promise when its
   * effect completes later (it never rejects); `refuse` answers a frame that found its
   * connection's backlog full.
   */
  constructor(run: RunFrame, refuse: (client: Client, frame: ClientFrame) => void) {
    this.#run = run;
    this.#refuse = refuse;
  }

  /** Connections with frames in flight: 0 once every connection is idle. */
  get busy(): number {
    return this.#backlogs.size;
  }

  /** Runs a parsed frame now, beside its connection's running appends, or after them. */
  submit(client: Client, frame: ClientFrame, text: string): void {
    const backlog = this.#backlogs.get(client);
    if (backlog === undefined) {
      // The common case: nothing in flight, so the frame runs now.
      const running = this.#run(client, frame);
      if (running === undefined) return;
      const started: Backlog = { running: 1, appending: isAppend(frame), waiting: [], bytes: 0 };
      this.#backlogs.set(client, started);
      this.#track(client, started, running);
      return;
    }
    if (backlog.waiting.length === 0 && backlog.appending && isAppend(frame)) {
      return this.#start(client, backlog, frame);
    }
    const bytes = utf8Bytes(text);
    if (
      backlog.waiting.length >= MAX_QUEUED_FRAMES || backlog.bytes + bytes > MAX_QUEUED_BYTES
    ) {
      this.#refuse(client, frame);
      return;
    }
    backlog.waiting.push({ frame, bytes });
    backlog.bytes += bytes;
  }

  /** Drops the waiting frames of a connection that closed; its running frames finish. */
  forget(client: Client): void {
    this.#backlogs.delete(client);
  }

  /** Starts a frame of a connection that has a backlog, beside the frames running in it. */
  #start(client: Client, backlog: Backlog, frame: ClientFrame): void {
    const running = this.#run(client, frame);
    if (running === undefined) return;
    if (backlog.running === 0) backlog.appending = isAppend(frame);
    backlog.running++;
    this.#track(client, backlog, running);
  }

  #track(client: Client, backlog: Backlog, running: Promise<void>): void {
    running.then(() => {
      backlog.running--;
      if (this.#backlogs.get(client) === backlog) this.#drain(client, backlog);
    });
  }

  /** Starts the waiting frames that may run now; forgets the backlog once nothing is left. */
  #drain(client: Client, backlog: Backlog): void {
    while (backlog.waiting.length > 0) {
      const next = backlog.waiting[0]!;
      if (backlog.running > 0 && !(backlog.appending && isAppend(next.frame))) return;
      backlog.waiting.shift();
      backlog.bytes -= next.bytes;
      this.#start(client, backlog, next.frame);
      // A frame may close its own connection (an outbox overflow); the rest are dropped.
      if (this.#backlogs.get(client) !== backlog) return;
    }
    if (backlog.running === 0) this.#backlogs.delete(client);
  }
}

/** True for the frames that only append (and publish): consecutive ones may run together. */
function isAppend(frame: ClientFrame): boolean {
  return frame.type === "message" || frame.type === "direct" || frame.type === "legacy";
}
