/**
 * Prometheus metrics for one Parley server: a {@link Metrics} object owns its own prom-client
 * `Registry` and every `parley_*` metric in it, so several servers in one process (as in tests)
 * never collide and nothing touches prom-client's global default registry.
 *
 * Invariants:
 * - Recording is cheap and never throws: the hot-path methods only add to plain numbers held
 *   here or in a {@link FastHistogram} (a few nanoseconds), and prom-client reads them through
 *   `collect` hooks and the histograms' `get()` at scrape time.
 *   prom-client's own `inc()` on a labelled child costs about 130 ns because it hashes and
 *   validates its labels on every call; its `Histogram.observe()` costs the same.
 * - Label values are closed sets fixed at construction (frame types, error codes, close codes,
 *   protocols), so the series count is bounded whatever clients send. Every series is exported
 *   from the first scrape, at 0, so `rate()` works before the first event.
 * - Process memory comes from `Deno.memoryUsage()` at scrape time. prom-client's default process
 *   metrics are never collected: under Deno they read zero.
 * - One thread records and scrapes (the server's event loop), so no read-modify-write races.
 */
import { Counter, Gauge, Registry } from "prom-client";
import type { StoreWriteStats } from "../backends/store/mod.ts";
import {
  CLIENT_FRAME_TYPES,
  type ClientFrame,
  ERROR_CODES as ALL_ERROR_CODES,
  type ErrorCode,
} from "../message.ts";
import { FastHistogram } from "./fast_histogram.ts";

/** Upper bounds of `parley_batch_events`, in events per outbound frame. */
export const BATCH_EVENTS_BUCKETS: readonly number[] = [1, 2, 4, 8, 16, 32, 64];
/** Upper bounds of `parley_outbox_bytes`, in bytes: powers of 4 from 256 B to 4 MiB. */
export const OUTBOX_BYTES_BUCKETS: readonly number[] = Array.from(
  { length: 8 },
  (_, i) => 256 * 4 ** i,
);
/**
 * Upper bounds of `parley_store_append_seconds` and `parley_fanout_seconds`, in seconds: from
 * 10 µs (a memory store, a small room) to 0.5 s (a stalled Redis).
 */
export const LATENCY_BUCKETS_S: readonly number[] = [
  0.00001,
  0.000025,
  0.00005,
  0.0001,
  0.00025,
  0.0005,
  0.001,
  0.0025,
  0.005,
  0.01,
  0.025,
  0.05,
  0.1,
  0.5,
];
/**
 * Close codes that get their own `code` label on `parley_connections_closed_total`: the
 * protocol's codes plus 1005 (no status) and 1006 (abnormal, no close frame). Any other code a
 * client sends is counted as `other`, so a client cannot create series at will.
 */
export const CLOSE_CODE_LABELS: readonly number[] = [
  1000,
  1001,
  1005,
  1006,
  1008,
  1009,
  1011,
  1013,
  4001,
  4008,
];

/** The `protocol` label of `parley_connections`: `parley.v1` when negotiated, else `plain`. */
export type ConnectionProtocol = "parley.v1" | "plain";
/** The `type` label of `parley_frames_in_total`: a valid frame's type, or `invalid`. */
export type FrameInType = ClientFrame["type"] | "invalid";
/** The `kind` label of `parley_messages_stored_total`. */
export type MessageKind = "room" | "direct";

/** Options for {@link Metrics}. */
export interface MetricsOptions {
  /** The server's version, exported as the `version` label of `parley_build_info`. */
  version: string;
  /**
   * Reads the hub's queue depth at scrape time for `parley_hub_queue_depth`. It may close over a
   * hub created after the `Metrics` object. Without it the gauge reads 0.
   */
  queueDepth?: () => number;
  /**
   * Reads the store's write batches at scrape time for `parley_store_write_batches_total` and
   * `parley_store_write_seconds_total`. Without it (a store that does not batch) both read 0.
   */
  storeWrites?: () => StoreWriteStats;
}

/**
 * Returns its argument, and fails to type-check unless the array names every member of `T`:
 * adding a frame type or an error code to the protocol then breaks the build here, not the graph.
 */
function everyOf<T extends string>() {
  return <const A extends readonly T[]>(
    values: A & ([Exclude<T, A[number]>] extends [never] ? unknown : never),
  ): A => values;
}

const PROTOCOLS = everyOf<ConnectionProtocol>()(["parley.v1", "plain"]);
const FRAME_IN_TYPES = everyOf<FrameInType>()([...CLIENT_FRAME_TYPES, "legacy", "invalid"]);
const MESSAGE_KINDS = everyOf<MessageKind>()(["room", "direct"]);
const ERROR_CODES = everyOf<ErrorCode>()(ALL_ERROR_CODES);

/** A running total; one object per label value, found once and then added to in place. */
interface Slot {
  value: number;
}

function slots<L extends string>(labels: readonly L[]): Map<L, Slot> {
  return new Map(labels.map((label) => [label, { value: 0 }]));
}

/**
 * Registers a counter whose values are copied from `totals` at every scrape. `labelName` is
 * omitted for an unlabelled counter, whose single total is under the key `""`.
 */
function mirrorCounter<L extends string>(
  registry: Registry,
  name: string,
  help: string,
  totals: Map<L, Slot>,
  labelName?: string,
): void {
  new Counter({
    name,
    help,
    labelNames: labelName === undefined ? [] : [labelName],
    registers: [registry],
    collect() {
      this.reset();
      for (const [label, slot] of totals) {
        if (labelName === undefined) this.inc(slot.value);
        else this.inc({ [labelName]: label }, slot.value);
      }
    },
  });
}

/**
 * The server's Prometheus metrics: typed recording methods for the hub, clients and store, and
 * {@link Metrics.text} for `GET /metrics`.
 *
 * @example
 * ```ts
 * const metrics = new Metrics({ version: "0.1.0", queueDepth: () => hub.queueDepth });
 * metrics.connectionOpened("parley.v1");
 * metrics.addDeliveries(recipients.length);
 * const body = await metrics.text();
 * ```
 */
export class Metrics {
  /** The registry holding every `parley_*` metric; no other `Metrics` shares it. */
  readonly registry: Registry;
  /** The `Content-Type` for the body of {@link Metrics.text}. */
  readonly contentType: string;

  readonly #open = slots(PROTOCOLS);
  readonly #opened = { value: 0 };
  readonly #closed = slots<string>([...CLOSE_CODE_LABELS.map(String), "other"]);
  readonly #framesIn = slots(FRAME_IN_TYPES);
  readonly #stored = slots(MESSAGE_KINDS);
  readonly #deliveries = { value: 0 };
  readonly #framesOut = { value: 0 };
  readonly #batchedFrames = { value: 0 };
  readonly #slowConsumers = { value: 0 };
  readonly #errors = slots(ERROR_CODES);
  readonly #rateLimited = { value: 0 };
  readonly #batchEvents: FastHistogram;
  readonly #outboxBytes: FastHistogram;
  readonly #storeAppend: FastHistogram;
  readonly #fanout: FastHistogram;

  /** Creates the registry and every metric in it, each series at 0. */
  constructor(options: MetricsOptions) {
    const registry = new Registry();
    this.registry = registry;
    this.contentType = registry.contentType;

    const open = this.#open;
    new Gauge({
      name: "parley_connections",
      help: "Open WebSocket connections, by negotiated subprotocol.",
      labelNames: ["protocol"],
      registers: [registry],
      collect() {
        for (const [protocol, slot] of open) this.set({ protocol }, slot.value);
      },
    });
    mirrorCounter(
      registry,
      "parley_connections_opened_total",
      "WebSocket connections opened.",
      new Map([["", this.#opened]]),
    );
    mirrorCounter(
      registry,
      "parley_connections_closed_total",
      'WebSocket connections closed, by close code (unlisted codes as "other").',
      this.#closed,
      "code",
    );
    mirrorCounter(
      registry,
      "parley_frames_in_total",
      'Frames received from clients, by frame type ("invalid" for rejected frames).',
      this.#framesIn,
      "type",
    );
    mirrorCounter(
      registry,
      "parley_messages_stored_total",
      "Chat messages appended to the store, by kind.",
      this.#stored,
      "kind",
    );
    mirrorCounter(
      registry,
      "parley_deliveries_total",
      "Events enqueued to client outboxes.",
      new Map([["", this.#deliveries]]),
    );
    mirrorCounter(
      registry,
      "parley_frames_out_total",
      "WebSocket frames sent to clients.",
      new Map([["", this.#framesOut]]),
    );
    mirrorCounter(
      registry,
      "parley_batched_frames_total",
      "Frames sent to clients that carried more than one event.",
      new Map([["", this.#batchedFrames]]),
    );
    mirrorCounter(
      registry,
      "parley_slow_consumer_disconnects_total",
      "Connections closed with 4008 because their outbox overflowed.",
      new Map([["", this.#slowConsumers]]),
    );
    mirrorCounter(
      registry,
      "parley_errors_total",
      "Error frames sent to clients, by protocol error code.",
      this.#errors,
      "code",
    );
    mirrorCounter(
      registry,
      "parley_rate_limited_total",
      "Client frames refused by the rate limiter.",
      new Map([["", this.#rateLimited]]),
    );

    const queueDepth = options.queueDepth;
    new Gauge({
      name: "parley_hub_queue_depth",
      help: "Events waiting in the hub's queue.",
      registers: [registry],
      collect() {
        this.set(queueDepth === undefined ? 0 : queueDepth());
      },
    });

    const storeWrites = options.storeWrites;
    const storeCounters: [keyof StoreWriteStats, string][] = [
      ["batches", "Write batches the store committed (SQLite: one transaction each)"],
      [
        "seconds",
        "Time the store's write batches (failed ones too) held the event loop, in seconds",
      ],
    ];
    for (const [field, help] of storeCounters) {
      new Counter({
        name: `parley_store_write_${field}_total`,
        help: `${help}.`,
        registers: [registry],
        collect() {
          this.reset();
          const value = storeWrites?.()[field] ?? 0;
          if (value > 0) this.inc(value);
        },
      });
    }

    this.#batchEvents = FastHistogram.register(
      registry,
      "parley_batch_events",
      "Events per frame sent to a client.",
      BATCH_EVENTS_BUCKETS,
    );
    this.#outboxBytes = FastHistogram.register(
      registry,
      "parley_outbox_bytes",
      "Bytes queued in a client's outbox when its write loop flushes.",
      OUTBOX_BYTES_BUCKETS,
    );
    this.#storeAppend = FastHistogram.register(
      registry,
      "parley_store_append_seconds",
      "Time to append one message to the store, in seconds.",
      LATENCY_BUCKETS_S,
    );
    this.#fanout = FastHistogram.register(
      registry,
      "parley_fanout_seconds",
      "Time for the hub to fan one event out to local clients, in seconds.",
      LATENCY_BUCKETS_S,
    );

    // The process's memory, read from Deno.memoryUsage() at each scrape.
    const memory: [string, string, keyof Deno.MemoryUsage][] = [
      ["resident_memory", "Resident set size of the process", "rss"],
      ["heap_used", "V8 heap in use", "heapUsed"],
      ["heap_total", "V8 heap committed (in use or not)", "heapTotal"],
      ["external_memory", "Memory of objects V8 tracks outside its heap (buffers)", "external"],
    ];
    for (const [name, help, field] of memory) {
      new Gauge({
        name: `parley_process_${name}_bytes`,
        help: `${help}, in bytes.`,
        registers: [registry],
        collect() {
          this.set(Deno.memoryUsage()[field]);
        },
      });
    }
    new Gauge({
      name: "parley_build_info",
      help: "Always 1; the labels name the server version and its runtime.",
      labelNames: ["version", "deno", "typescript", "v8"],
      registers: [registry],
    }).set({
      version: options.version,
      deno: Deno.version.deno,
      typescript: Deno.version.typescript,
      v8: Deno.version.v8,
    }, 1);
  }

  /** Counts a connection that completed its upgrade (`parley_connections`, `…_opened_total`). */
  connectionOpened(protocol: ConnectionProtocol): void {
    this.#open.get(protocol)!.value++;
    this.#opened.value++;
  }

  /**
   * Counts a connection that closed: it leaves `parley_connections` and is counted in
   * `parley_connections_closed_total` under its close code. Call once per opened connection.
   */
  connectionClosed(protocol: ConnectionProtocol, code: number): void {
    this.#open.get(protocol)!.value--;
    (this.#closed.get(String(code)) ?? this.#closed.get("other")!).value++;
  }

  /** Counts one frame received from a client: its type if valid, else `invalid`. */
  frameIn(type: FrameInType): void {
    this.#framesIn.get(type)!.value++;
  }

  /** Counts one chat message appended to the store. */
  messageStored(kind: MessageKind): void {
    this.#stored.get(kind)!.value++;
  }

  /** Adds `n` events enqueued to client outboxes; call once per fan-out with the recipients. */
  addDeliveries(n: number): void {
    // `n > 0` also rejects NaN; a negative total would make prom-client throw at scrape time.
    if (n > 0) this.#deliveries.value += n;
  }

  /**
   * Counts one frame sent to a client carrying `events` events (1 for an unbatched frame), in
   * `parley_frames_out_total`, `parley_batched_frames_total` and `parley_batch_events`.
   */
  frameOut(events = 1): void {
    this.#framesOut.value++;
    if (events > 1) this.#batchedFrames.value++;
    this.#batchEvents.observe(events);
  }

  /** Counts a connection closed with 4008 because its outbox overflowed. */
  slowConsumerDisconnect(): void {
    this.#slowConsumers.value++;
  }

  /** Counts one `error` frame sent to a client, by its protocol error code. */
  error(code: ErrorCode): void {
    this.#errors.get(code)!.value++;
  }

  /** Counts one client frame refused by the rate limiter (its `error` frame is counted apart). */
  rateLimited(): void {
    this.#rateLimited.value++;
  }

  /** Records the bytes queued in one client's outbox when its write loop flushes. */
  observeOutboxBytes(bytes: number): void {
    this.#outboxBytes.observe(bytes);
  }

  /** Records how long one `store.append` took, in seconds. */
  observeStoreAppend(seconds: number): void {
    this.#storeAppend.observe(seconds);
  }

  /** Records how long one hub fan-out took, in seconds. */
  observeFanout(seconds: number): void {
    this.#fanout.observe(seconds);
  }

  /** Returns every metric in the Prometheus text exposition format, read as of now. */
  text(): Promise<string> {
    return this.registry.metrics();
  }
}
