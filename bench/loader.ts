/**
 * The benchmark's load generator: one process holding a share of the client sockets, driven by
 * the harness (`LoaderProc` in `bench/proc.ts`) over stdin and stdout (one JSON object per line
 * each way).
 *
 * It must cost much less per delivered message than the server it measures, so it uses
 * {@link RawWebSocket} on epoll sets ({@link TcpPoller}): one `epoll_wait` per loop turn, one
 * `read(2)` per ready socket returning whatever the kernel holds. Its cost is mostly those
 * syscalls, so clients come in two sets:
 * - the *timed* set: the senders and every `sampleEvery`-th client, polled every turn; they
 *   decode what they receive, record latencies, and move closed-loop senders on;
 * - the *counting* set: everyone else, polled every `bulkIntervalMs`; a read then returns every
 *   frame that arrived in that interval, and its `message` events are counted by scanning bytes
 *   ({@link countMessages}), never decoded. Counting late by a few milliseconds moves the window's
 *   edges by as much, and times nothing.
 *
 * The harness (`bench/measure.ts`) reads this process's CPU time from /proc and reports it beside
 * the server's.
 *
 * The loop: a synchronous `poll` of the timed set (blocking at most {@link POLL_MS}) and, when
 * due, of the counting set, alternate with a {@link TIMED_INTERVAL_MS} sleep in Deno's event
 * loop, so timers (the sending clock) and stdin commands run, and the loop does not spin.
 *
 * Life of a loader:
 * 1. started with a {@link LoaderSpec} (JSON, first argument); connects `spec.clients` clients
 *    (senders first, so they are the first members of the room) and prints
 *    `{"ev":"connected",…}` once each has its handshake (and, with `waitWelcome`, its first frame);
 * 2. commands on stdin: `{"cmd":"connect","clients":N}` grows to N clients (idle memory) and
 *    answers `connected` again; `start` begins sending; `mark` zeroes the counters (the
 *    measurement window opens); `peek` answers `{"ev":"peeked","delivered":N}` and leaves the
 *    window open; `report` answers `{"ev":"report",…}` with what happened since the
 *    mark; `pause` stops sending (closed-loop messages in flight still come back, and start
 *    nothing) and answers `{"ev":"paused"}`, and a later `start` resumes; `stop` closes every
 *    socket and exits.
 *
 * Sending: `rate` mode spreads `spec.rate` messages per second over the senders, on a clock (open
 * loop: a server that falls behind builds a backlog, which the report shows); `paced` is the same
 * clock for rooms where every client sends: a sender is then an ordinary client (only sampled
 * ones decode), and it sends on schedule whatever it is answered (`overloaded` included);
 * `flood` has each sender write as fast as its socket takes frames, answers unread; `closed` mode
 * has each sender send its next message as soon as its previous one comes back (saturation);
 * `idle` sends nothing. Message content is `"<client>|<seq>|<sent at, ms since the epoch>|xxx…"`,
 * padded to `contentChars`; it never holds `{`, which {@link countMessages} relies on.
 */
import { TcpPoller } from "./epoll.ts";
import { countMessages, encodeTextFrame, type FrameSink, RawWebSocket } from "./raw_ws.ts";

/** How often the rate-mode clock sends what is due, in milliseconds. */
const TICK_MS = 5;
/** Longest a poll blocks the JS thread, in milliseconds; bounds how late a timer can run. */
const POLL_MS = 2;
/**
 * Shortest time between two polls of the timed set, in milliseconds. Without it the loop spins
 * on every frame; with it a timed read may be up to this late, which biases latency by as much.
 */
const TIMED_INTERVAL_MS = 1;
/**
 * Most counting sockets read before the timed set is looked at again. Reading a thousand counting
 * sockets takes milliseconds; without the interleave, timed frames would wait that long.
 */
const COUNTING_CHUNK = 64;
/**
 * Most frames one flood sender writes per clock tick: the kernel's socket buffer usually stops it
 * first, and the cap keeps one tick from holding the loop (and the readers' polls) for long.
 */
const FLOOD_FRAMES_PER_TICK = 256;
/** A closed-loop sender whose message has not come back after this long sends a fresh one. */
const RESEND_AFTER_MS = 5_000;
/** Most latency samples kept per report; past it, samples are dropped (and counted). */
const MAX_SAMPLES = 1_000_000;
/** Connection attempts per client before it counts as failed. */
const CONNECT_ATTEMPTS = 3;
/** Longest wait for a welcome frame after the handshake, in milliseconds. */
const WELCOME_TIMEOUT_MS = 60_000;

/** What one loader does; measure.ts and idle.ts compute one per loader process. */
export interface LoaderSpec {
  /** Loader index, for messages. */
  id: number;
  hostname: string;
  port: number;
  /** Subprotocol to offer (`parley.v1`), or none. */
  protocol?: string;
  /** Clients to connect at start. */
  clients: number;
  /** Global index of this loader's first client; names are `c<index>`. */
  offset: number;
  /** How many of this loader's first clients send. */
  senders: number;
  mode: "rate" | "paced" | "flood" | "closed" | "idle";
  /** Messages per second from this loader, in `rate` mode. */
  rate: number;
  /** Every client whose global index is a multiple of this decodes and times what it gets. */
  sampleEvery: number;
  /** Length of each message's content, in characters. */
  contentChars: number;
  /** Source addresses to spread clients over (connects through `node:net`). */
  sources?: string[];
  /** A client is connected only once its first frame (Parley's welcome) arrived. */
  waitWelcome: boolean;
  /** Handshakes in flight at once. */
  concurrency: number;
  /** Initial read buffer per client, in bytes. */
  bufferBytes: number;
  /** How often the counting clients are read, in milliseconds. */
  bulkIntervalMs: number;
}

/** What a loader says on stdout. */
export type LoaderEvent =
  | { ev: "connected"; clients: number; failed: number; protocols: Record<string, number> }
  | { ev: "report"; report: LoaderReport }
  | { ev: "peeked"; delivered: number }
  | { ev: "paused" }
  | { ev: "error"; message: string };

/** What happened between `mark` and `report`. */
export interface LoaderReport {
  /** Milliseconds between mark and report, by this loader's clock. */
  windowMs: number;
  /** Messages sent. */
  sent: number;
  /** `message` events received, summed over all clients. */
  delivered: number;
  /** Send-to-receive times in milliseconds, from the sampling clients. */
  latencies: number[];
  /** Samples dropped past {@link MAX_SAMPLES}. */
  droppedSamples: number;
  /** Clients still open at the report. */
  open: number;
  /** Connections closed since the loader started, by close code. */
  closes: Record<string, number>;
  /** Closed-loop messages re-sent because their echo never came. */
  resends: number;
  /**
   * `rate` and `paced` modes: the most messages one sender had due at once when the clock ran (1
   * when the clock kept time). Above the server's burst (`--burst`), a rate-limit refusal is
   * this process's lateness, not the server's.
   */
  maxDuePerSender: number;
  /** Senders whose socket held unsent bytes at the report: the server was not reading them. */
  backloggedSenders: number;
}

type Command =
  | { cmd: "connect"; clients: number }
  | { cmd: "start" | "pause" | "mark" | "peek" | "report" | "stop" };

const decoder = new TextDecoder();
const clock = () => performance.timeOrigin + performance.now();

interface Sender {
  index: number;
  socket: RawWebSocket;
  seq: number;
  /** Sequence number awaited in closed mode, -1 when none. */
  awaiting: number;
  sentAt: number;
}

class Loader {
  readonly #spec: LoaderSpec;
  /** Senders and sampling clients: read at once. */
  readonly #timed = new TcpPoller(1024);
  /** Clients that only count: read every `bulkIntervalMs`. */
  readonly #counting = new TcpPoller(4096);
  #polling = true;
  readonly #sockets: RawWebSocket[] = [];
  readonly #senders = new Map<number, Sender>();
  readonly #padding: string;
  #connected = 0;
  #failed = 0;
  #protocols: Record<string, number> = {};
  #closes: Record<string, number> = {};
  #sending = false;
  #timer: ReturnType<typeof setInterval> | undefined;
  #startedAt = 0;
  #due = 0;
  // Window counters, zeroed by mark.
  #measuring = false;
  #markedAt = 0;
  #sent = 0;
  #delivered = 0;
  #latencies: number[] = [];
  #dropped = 0;
  #resends = 0;
  #maxDue = 0;

  constructor(spec: LoaderSpec) {
    this.#spec = spec;
    this.#padding = "x".repeat(spec.contentChars);
  }

  /** Connects clients until this loader holds `total`. */
  async grow(total: number): Promise<void> {
    const spec = this.#spec;
    let next = this.#connected + this.#failed;
    const worker = async () => {
      while (next < total) {
        const local = next++;
        await this.#connectOne(local);
      }
    };
    await Promise.all(Array.from({ length: Math.min(spec.concurrency, total) }, worker));
    emit({
      ev: "connected",
      clients: this.#connected,
      failed: this.#failed,
      protocols: this.#protocols,
    });
  }

  async #connectOne(local: number): Promise<void> {
    const spec = this.#spec;
    const index = spec.offset + local;
    // Paced and flood senders take no decision on what they receive: they only count it.
    const timedSender = local < spec.senders && (spec.mode === "rate" || spec.mode === "closed");
    const full = timedSender || index % spec.sampleEvery === 0;
    let sender: Sender | undefined;
    const source = spec.sources?.[index % spec.sources.length];
    for (let attempt = 1; attempt <= CONNECT_ATTEMPTS; attempt++) {
      const { promise: welcomed, resolve: welcome } = Promise.withResolvers<boolean>();
      let first = true;
      const sink: FrameSink = {
        text: (payload) => {
          if (first) {
            first = false;
            welcome(true);
            if (spec.waitWelcome) return;
          }
          if (full) this.#receiveFull(payload, sender);
          else if (this.#measuring) this.#delivered += countMessages(payload);
        },
        closed: (code) => {
          welcome(false);
          this.#closes[code] = (this.#closes[code] ?? 0) + 1;
        },
      };
      try {
        const socket = await RawWebSocket.connect(full ? this.#timed : this.#counting, {
          hostname: spec.hostname,
          port: spec.port,
          path: `/ws?name=c${index}`,
          bufferBytes: spec.bufferBytes,
          ...(spec.protocol === undefined ? {} : { protocol: spec.protocol }),
          ...(source === undefined ? {} : { localAddress: source }),
        }, sink);
        if (spec.waitWelcome) {
          const timeout = new Promise<boolean>((resolve) => {
            const timer = setTimeout(() => resolve(false), WELCOME_TIMEOUT_MS);
            welcomed.then(() => clearTimeout(timer));
          });
          if (!await Promise.race([welcomed, timeout])) {
            socket.close();
            throw new Error("no welcome");
          }
        }
        this.#sockets.push(socket);
        this.#connected++;
        const key = socket.protocol === "" ? "none" : socket.protocol;
        this.#protocols[key] = (this.#protocols[key] ?? 0) + 1;
        if (local < spec.senders) {
          sender = { index, socket, seq: 0, awaiting: -1, sentAt: 0 };
          this.#senders.set(index, sender);
        }
        return;
      } catch (error) {
        if (attempt === CONNECT_ATTEMPTS) {
          this.#failed++;
          emit({ ev: "error", message: `client ${index}: ${String(error)}` });
        } else {
          await new Promise((resolve) => setTimeout(resolve, 100 * attempt));
        }
      }
    }
  }

  /** Decodes a payload, times its messages and moves closed-loop senders on. */
  #receiveFull(payload: Uint8Array, sender: Sender | undefined): void {
    const now = clock();
    let parsed: unknown;
    try {
      parsed = JSON.parse(decoder.decode(payload));
    } catch {
      return;
    }
    const events = Array.isArray(parsed) ? parsed : [parsed];
    for (const event of events as { type?: string; content?: string }[]) {
      if (event?.type !== "message" || typeof event.content !== "string") continue;
      const [from, seq, sentAt] = event.content.split("|", 3);
      if (this.#measuring) {
        this.#delivered++;
        if (this.#latencies.length < MAX_SAMPLES) {
          this.#latencies.push(Math.round((now - Number(sentAt)) * 1000) / 1000);
        } else this.#dropped++;
      }
      if (
        sender !== undefined && this.#sending && this.#spec.mode === "closed" &&
        Number(from) === sender.index && Number(seq) === sender.awaiting
      ) {
        this.#send(sender);
      }
    }
  }

  #send(sender: Sender): void {
    if (!sender.socket.open) return;
    const seq = sender.seq++;
    const sentAt = clock();
    const content = `${sender.index}|${seq}|${sentAt.toFixed(3)}|`;
    const padded = content + this.#padding.slice(content.length);
    sender.awaiting = seq;
    sender.sentAt = sentAt;
    // Content is digits, '|', '.' and 'x': nothing to escape.
    sender.socket.sendFrame(
      encodeTextFrame(`{"sender":"c${sender.index}","content":"${padded}"}`),
    );
    if (this.#measuring) this.#sent++;
  }

  start(): void {
    const spec = this.#spec;
    if (this.#sending || spec.mode === "idle") return;
    this.#sending = true;
    const senders = [...this.#senders.values()];
    if (senders.length === 0) return;
    if (spec.mode === "closed") {
      for (const sender of senders) this.#send(sender);
      this.#timer = setInterval(() => {
        const now = clock();
        for (const sender of senders) {
          if (now - sender.sentAt > RESEND_AFTER_MS) {
            this.#resends++;
            this.#send(sender);
          }
        }
      }, 1_000);
      return;
    }
    if (spec.mode === "flood") {
      this.#timer = setInterval(() => {
        for (const sender of senders) {
          for (let n = 0; n < FLOOD_FRAMES_PER_TICK && !sender.socket.backlogged; n++) {
            this.#send(sender);
          }
        }
      }, TICK_MS);
      return;
    }
    this.#startedAt = clock();
    this.#due = 0;
    let turn = 0;
    this.#timer = setInterval(() => {
      const due = Math.floor((clock() - this.#startedAt) * spec.rate / 1000);
      if (this.#measuring) {
        this.#maxDue = Math.max(this.#maxDue, Math.ceil((due - this.#due) / senders.length));
      }
      while (this.#due < due) {
        this.#due++;
        this.#send(senders[turn++ % senders.length]!);
      }
    }, TICK_MS);
  }

  mark(): void {
    this.#measuring = true;
    this.#markedAt = clock();
    this.#sent = 0;
    this.#delivered = 0;
    this.#latencies = [];
    this.#dropped = 0;
    this.#resends = 0;
    this.#maxDue = 0;
  }

  /** Messages counted since the mark, without ending the window (unlike `report`). */
  get delivered(): number {
    return this.#delivered;
  }

  report(): LoaderReport {
    const report: LoaderReport = {
      windowMs: clock() - this.#markedAt,
      sent: this.#sent,
      delivered: this.#delivered,
      latencies: this.#latencies,
      droppedSamples: this.#dropped,
      open: this.#sockets.filter((socket) => socket.open).length,
      closes: this.#closes,
      resends: this.#resends,
      maxDuePerSender: this.#maxDue,
      backloggedSenders: [...this.#senders.values()].filter((s) => s.socket.backlogged).length,
    };
    this.#measuring = false;
    this.#latencies = [];
    return report;
  }

  /** Stops sending until the next {@link start}; the sockets stay open. */
  pause(): void {
    clearInterval(this.#timer);
    this.#sending = false;
  }

  stop(): void {
    this.pause();
    this.#polling = false;
    for (const socket of this.#sockets) socket.close();
  }

  /** Polls the sockets until {@link Loader.stop}, yielding to the event loop between polls. */
  async loop(): Promise<void> {
    let nextBulk = 0;
    while (this.#polling) {
      this.#timed.poll(this.#timed.size > 0 ? POLL_MS : 0);
      const now = performance.now();
      if (now >= nextBulk) {
        nextBulk = now + this.#spec.bulkIntervalMs;
        // More ready sockets than one poll returns: take them all before the next interval, but
        // at most one round over the set per turn. Unbounded, a set that stays ready (a server
        // writing faster than this reads) kept the loop from yielding for seconds, and stdin
        // commands (`mark`, `report`, `pause`) waited that long: windows then ran far past
        // their length on this side (15 s for a 1 s window, seen in the interleaved scenario).
        const chunks = Math.ceil(this.#counting.size / COUNTING_CHUNK);
        for (let i = 0; i < chunks; i++) {
          if (this.#counting.poll(0, COUNTING_CHUNK) < COUNTING_CHUNK) break;
          this.#timed.poll(0);
        }
      }
      const wait = this.#timed.size === 0 ? nextBulk - performance.now() : TIMED_INTERVAL_MS;
      await new Promise((resolve) => setTimeout(resolve, Math.max(1, wait)));
    }
  }
}

function emit(event: LoaderEvent): void {
  console.log(JSON.stringify(event));
}

async function main(): Promise<void> {
  const spec = JSON.parse(Deno.args[0] ?? "") as LoaderSpec;
  const loader = new Loader(spec);
  // The harness (`Proc.stop`) ends loaders with SIGTERM; exiting normally lets `--cpu-prof`
  // write its profile.
  Deno.addSignalListener("SIGTERM", () => Deno.exit(0));
  loader.loop().catch((error) => {
    emit({ ev: "error", message: `poll loop failed: ${String(error)}` });
    Deno.exit(1);
  });
  await loader.grow(spec.clients);
  let buffered = "";
  for await (const chunk of Deno.stdin.readable.pipeThrough(new TextDecoderStream())) {
    buffered += chunk;
    let newline: number;
    while ((newline = buffered.indexOf("\n")) !== -1) {
      const line = buffered.slice(0, newline).trim();
      buffered = buffered.slice(newline + 1);
      if (line === "") continue;
      const command = JSON.parse(line) as Command;
      switch (command.cmd) {
        case "connect":
          await loader.grow(command.clients);
          break;
        case "start":
          loader.start();
          break;
        case "mark":
          loader.mark();
          break;
        case "peek":
          emit({ ev: "peeked", delivered: loader.delivered });
          break;
        case "report":
          emit({ ev: "report", report: loader.report() });
          break;
        case "pause":
          loader.pause();
          emit({ ev: "paused" });
          break;
        case "stop":
          loader.stop();
          Deno.exit(0);
      }
    }
  }
  loader.stop();
  Deno.exit(0);
}

if (import.meta.main) await main();
