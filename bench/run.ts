/**
 * `deno task bench`: Parley against a bare Deno broadcast server, in the same run, on the same
 * machine, with the same load generator.
 *
 *     deno task bench [--quick] [--only NAME[,NAME…]] [--runs N] [--loaders N] [--no-write]
 *                     [--parley-flag=--name=value …] [--loader-prof DIR]
 *
 * Scenarios (names for `--only`): `light` (1,000 clients, 20 messages/s in: latency), `100k`
 * (1,000 clients, 100 messages/s in: 100,000 deliveries/s must keep up), `saturation` (1,000
 * clients, 20 closed-loop senders: deliveries/s and server CPU per delivery), `bigroom` (5,000
 * clients, 10 messages/s in), `idle` (server RSS per open connection at 10,000 and 50,000), `sqlite`
 * (saturation with the SQLite store against `memory:`), `profile` (one saturation run of each
 * server under `--cpu-prof`, summarised by self time). Each load scenario measures the bare
 * baseline (`bench/baseline_bare.ts`) and Parley with `parley.v1` clients and with plain clients;
 * every measurement starts a fresh server (`sqlite`: two servers per client kind, for all its
 * interleaved windows).
 *
 * Method: each server is pinned to core 0 and the load generator (`bench/loader.ts`, raw sockets)
 * to core 1 with `taskset` when it exists. A measurement connects the clients, starts the
 * senders, waits out a warm-up, then opens a window: server and loader CPU (utime+stime from
 * /proc/<pid>/stat) and the loader's counters are taken at both ends. Results are medians over
 * `--runs` runs (the order of servers rotates between runs) and ratios to the baseline of the same
 * run. The `sqlite` scenario instead runs a SQLite and a `memory:` server side by side and loads
 * them in turn, in interleaved pairs of short windows (see {@link measureInterleaved}); its
 * verdict is the median of the per-pair ratios: a 5–10% effect is below the ±15% spread that
 * separate runs show here. Writes `bench/results/<date>[-quick].json` and the results section of BENCHMARKS.md
 * (between its markers) unless `--no-write`.
 *
 * `--quick` is for development and CI smoke: one run, 1 s warm-up, 3 s window, 200 clients (1,000
 * in the big room), idle at 2,000 and 5,000 connections. Its numbers are indicative only.
 */
import { parseArgs } from "node:util";
import { basename, dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { LoaderEvent, LoaderReport, LoaderSpec } from "./loader.ts";
import { RedisServer } from "../tests/helpers/redis_server.ts";

const ROOT = dirname(dirname(fileURLToPath(import.meta.url)));
const BENCH = join(ROOT, "bench");

/** Core for the server under test, and for the load generator. */
const SERVER_CORE = 0;
const LOADER_CORE = 1;
/** Characters of content per message: a typical chat line. */
const CONTENT_CHARS = 80;
/** Every this-many-th client decodes and times what it receives. */
const SAMPLE_EVERY = 20;
/** Handshakes in flight per loader. */
const CONCURRENCY = 64;
/** How often clients that only count what they receive are read, in milliseconds. */
const BULK_INTERVAL_MS = 20;
/** Read buffer per load client in bytes, and per idle client. */
const LOAD_BUFFER_BYTES = 32 * 1024;
const IDLE_BUFFER_BYTES = 1024;
/** Most idle clients one loader process holds (each is a file descriptor). */
const IDLE_CLIENTS_PER_LOADER = 15_000;
/** Descriptors a server needs besides its connections (listener, epoll, files, stdio). */
const FD_MARGIN = 500;
/** Source addresses idle clients are spread over. */
const IDLE_SOURCES = ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"];
/** Connections opened before the idle-memory reference point, to warm the server's code paths. */
const IDLE_WARM = 200;
/** API key of Parley nodes in a cluster idle point, for the one message published through them. */
const BENCH_API_KEY = "bench-api-key-for-the-cluster-point";
/** Parley's default `--presence-events-max`. */
const PRESENCE_EVENTS_MAX = 1_000;
/** How long clients have to receive that message, in milliseconds, and how often it is checked. */
const PUBLISH_WAIT_MS = 60_000;
const PUBLISH_POLL_MS = 100;
/** Pause after connecting, before senders start, in milliseconds (presence events settle). */
const SETTLE_MS = 500;
/** Longest wait for a server banner, loaders to connect, and a loader report, in ms. */
const SERVER_START_MS = 30_000;
const CONNECT_MS = 180_000;
const REPORT_MS = 30_000;
/** Server flags that lift limits a benchmark would otherwise hit. */
const PARLEY_FLAGS = [
  "--port=0",
  "--host=127.0.0.1",
  "--log-level=warning",
  "--log-format=json",
  "--rate=1000000",
  "--burst=1000000",
  "--max-connections=1000000",
  "--max-connections-per-ip=1000000",
  // Headroom above the defaults (1024, 1MiB) for one-turn bursts in the open-loop scenarios.
  "--outbox-messages=4096",
  "--outbox-bytes=4MiB",
];
/** Interleaved pairs of SQLite and `memory:` windows per client kind: full run, `--quick`. */
const SQLITE_PAIRS = 30;
const SQLITE_PAIRS_QUICK = 2;
/**
 * Warm-up and window of one interleaved slice (see {@link measureInterleaved}), in both modes.
 * Short and many: the spread between two adjacent 2 s windows of one server was as wide as
 * between separate runs (±20%), so the noise is faster than any window we can afford, and only
 * the number of pairs narrows the median.
 */
const SLICE = { warmupMs: 300, windowMs: 1_000 };
/** Pause after a slice, for the closed loop's messages in flight to come back. */
const SLICE_DRAIN_MS = 200;
/** Functions listed in a profile summary. */
const PROFILE_TOP = 15;

// -------------------------------------------------------------------------------------------
// Options and scenarios

interface Options {
  quick: boolean;
  runs: number;
  only: Set<string>;
  loaders: number;
  write: boolean;
  /** Extra flags for Parley, for experiments; recorded with the results. */
  parleyFlags: string[];
  /** Where load generators write a `--cpu-prof` profile each, when set. */
  loaderProf: string | undefined;
  warmupMs: number;
  windowMs: number;
}

type ServerKind = "baseline" | "parley";

/** One server configuration and client kind under test. */
export interface Target {
  label: string;
  server: ServerKind;
  protocol?: string;
  store?: "memory" | "sqlite";
}

const BASELINE: Target = { label: "baseline (bare Deno)", server: "baseline" };
const PARLEY_V1: Target = {
  label: "Parley, parley.v1",
  server: "parley",
  protocol: "parley.v1",
  store: "memory",
};
const PARLEY_PLAIN: Target = { label: "Parley, plain", server: "parley", store: "memory" };

interface LoadScenario {
  kind: "load";
  name: string;
  title: string;
  clients: number;
  senders: number;
  mode: "rate" | "closed";
  /** Messages per second in, for `rate` mode. */
  rate: number;
  targets: Target[];
  /**
   * When set, the targets are pairs to compare (`[A, B, C, D]` compares B with A and D with C),
   * each pair measured in this many interleaved pairs of short windows instead of `--runs`
   * separate runs; see {@link measureInterleaved}.
   */
  pairs?: number;
}

interface IdleScenario {
  kind: "idle";
  name: string;
  title: string;
  points: number[];
  targets: Target[];
}

interface ProfileScenario {
  kind: "profile";
  name: string;
  title: string;
  clients: number;
  targets: Target[];
}

type Scenario = LoadScenario | IdleScenario | ProfileScenario;

function scenarios(quick: boolean): Scenario[] {
  const clients = quick ? 200 : 1_000;
  const targets = [BASELINE, PARLEY_V1, PARLEY_PLAIN];
  return [
    {
      kind: "load",
      name: "light",
      title: `Light fan-out: ${clients} clients, 20 messages/s in`,
      clients,
      senders: 10,
      mode: "rate",
      rate: 20,
      targets,
    },
    {
      kind: "load",
      name: "100k",
      title: `${clients * 100 / 1000}k deliveries/s: ${clients} clients, 100 messages/s in`,
      clients,
      senders: 20,
      mode: "rate",
      rate: 100,
      targets,
    },
    {
      kind: "load",
      name: "saturation",
      title: `Saturation: ${clients} clients, 20 closed-loop senders`,
      clients,
      senders: 20,
      mode: "closed",
      rate: 0,
      targets,
    },
    {
      kind: "load",
      name: "bigroom",
      title: `Big room: ${quick ? 1_000 : 5_000} clients, 10 messages/s in`,
      clients: quick ? 1_000 : 5_000,
      senders: 10,
      mode: "rate",
      rate: 10,
      targets,
    },
    {
      kind: "idle",
      name: "idle",
      title: "Idle memory: server RSS per open connection",
      points: quick ? [2_000, 5_000] : [10_000, 50_000],
      targets,
    },
    {
      kind: "load",
      name: "sqlite",
      title: `History on: SQLite vs memory: at saturation (${clients} clients, 20 senders)`,
      clients,
      senders: 20,
      mode: "closed",
      rate: 0,
      targets: [
        PARLEY_V1,
        { ...PARLEY_V1, label: "Parley, parley.v1, SQLite", store: "sqlite" },
        PARLEY_PLAIN,
        { ...PARLEY_PLAIN, label: "Parley, plain, SQLite", store: "sqlite" },
      ],
      // A 5–10% effect under a run-to-run spread of ±15% on this kind of machine: compared in
      // interleaved windows, over more of them than the other scenarios' three runs.
      pairs: quick ? SQLITE_PAIRS_QUICK : SQLITE_PAIRS,
    },
    {
      kind: "profile",
      name: "profile",
      title: `Where server time goes at saturation (--cpu-prof, ${clients} clients)`,
      clients,
      targets,
    },
  ];
}

function parseOptions(args: string[]): Options {
  const { values } = parseArgs({
    args,
    options: {
      quick: { type: "boolean", default: false },
      only: { type: "string", multiple: true },
      runs: { type: "string" },
      loaders: { type: "string", default: "1" },
      "no-write": { type: "boolean", default: false },
      "parley-flag": { type: "string", multiple: true },
      "loader-prof": { type: "string" },
      help: { type: "boolean", short: "h", default: false },
    },
    strict: true,
  });
  if (values.help) {
    console.log(
      "Usage: deno task bench [--quick] [--only NAME[,NAME…]] [--runs N] [--loaders N] " +
        "[--no-write] [--parley-flag=--name=value …] [--loader-prof DIR]\nScenarios: " +
        scenarios(false).map((s) => s.name).join(", "),
    );
    Deno.exit(0);
  }
  const names = new Set(scenarios(false).map((s) => s.name));
  const only = new Set((values.only ?? []).flatMap((v) => v.split(",")).filter((v) => v !== ""));
  for (const name of only) {
    if (!names.has(name)) throw new Error(`Unknown scenario "${name}": one of ${[...names]}`);
  }
  const runs = Number(values.runs ?? (values.quick ? 1 : 3));
  const loaders = Number(values.loaders);
  if (!Number.isInteger(runs) || runs < 1) throw new Error(`--runs must be a positive integer`);
  if (!Number.isInteger(loaders) || loaders < 1) throw new Error(`--loaders must be positive`);
  return {
    quick: values.quick,
    runs,
    only,
    loaders,
    write: !values["no-write"],
    parleyFlags: values["parley-flag"] ?? [],
    loaderProf: values["loader-prof"],
    warmupMs: values.quick ? 1_000 : 2_000,
    windowMs: values.quick ? 3_000 : 8_000,
  };
}

// -------------------------------------------------------------------------------------------
// Processes and /proc

const CLK_TCK = Number(await shell("getconf CLK_TCK").catch(() => "100")) || 100;
const HAS_TASKSET = await shell("taskset -c 0 true").then(() => true, () => false);
const FD_HARD_LIMIT = Number(await shell("ulimit -Hn").catch(() => "1024")) || 1024;

async function shell(script: string): Promise<string> {
  const out = await new Deno.Command("sh", { args: ["-c", script], stderr: "null" }).output();
  if (!out.success) throw new Error(`Command failed: ${script}`);
  return new TextDecoder().decode(out.stdout).trim();
}

/** CPU seconds (user + system) a process has used so far, or NaN once it is gone. */
function cpuSeconds(pid: number): number {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    // Fields after the command name, which may hold spaces: state is field 3, utime 14, stime 15.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return (Number(fields[11]) + Number(fields[12])) / CLK_TCK;
  } catch {
    return NaN;
  }
}

/** Resident set size of a process in bytes. */
function rssBytes(pid: number): number {
  try {
    const status = Deno.readTextFileSync(`/proc/${pid}/status`);
    return Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1] ?? NaN) * 1024;
  } catch {
    return NaN;
  }
}

/** Busy and total jiffies of one core so far, from /proc/stat. */
function coreTimes(core: number): { busy: number; total: number } {
  const line = Deno.readTextFileSync("/proc/stat").split("\n")
    .find((l) => l.startsWith(`cpu${core} `));
  const fields = (line ?? "").trim().split(/\s+/).slice(1).map(Number);
  const total = fields.reduce((a, b) => a + b, 0);
  // idle and iowait are the 4th and 5th fields.
  return { busy: total - (fields[3] ?? 0) - (fields[4] ?? 0), total };
}

/** Seconds since boot from /proc/uptime: the clock of V8's profile timestamps on Linux. */
function uptime(): number {
  return Number(Deno.readTextFileSync("/proc/uptime").split(" ")[0]);
}

function loadavg(): string {
  return Deno.readTextFileSync("/proc/loadavg").split(" ").slice(0, 3).join(" ");
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** A child process pinned to a core, with its stdout split into lines. */
class Proc {
  readonly pid: number;
  readonly #child: Deno.ChildProcess;
  readonly #lines: string[] = [];
  readonly #waiters: (() => void)[] = [];
  #stderr = "";
  #ended = false;
  readonly #stdin: WritableStreamDefaultWriter<Uint8Array>;
  readonly status: Promise<Deno.CommandStatus>;
  readonly name: string;

  constructor(name: string, command: string[], core: number, nofile: number) {
    this.name = name;
    // `exec` keeps the pid: the pid we watch is the Deno process itself, not a shell.
    const pin = HAS_TASKSET ? `exec taskset -c ${core} "$@"` : `exec "$@"`;
    this.#child = new Deno.Command("sh", {
      args: ["-c", `ulimit -n ${nofile} 2>/dev/null; ${pin}`, "sh", ...command],
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
      cwd: ROOT,
    }).spawn();
    this.pid = this.#child.pid;
    this.status = this.#child.status;
    this.#stdin = this.#child.stdin.getWriter();
    this.#pump(this.#child.stdout, (line) => {
      this.#lines.push(line);
      for (const wake of this.#waiters.splice(0)) wake();
    });
    this.#pump(this.#child.stderr, (line) => {
      this.#stderr = (this.#stderr + line + "\n").slice(-4000);
    });
    this.status.then(() => {
      this.#ended = true;
      for (const wake of this.#waiters.splice(0)) wake();
    });
  }

  /** The last few KiB the process wrote to stderr. */
  get stderr(): string {
    return this.#stderr;
  }

  async #pump(stream: ReadableStream<Uint8Array>, onLine: (line: string) => void) {
    let rest = "";
    try {
      const decoder = new TextDecoder();
      for await (const bytes of stream) {
        const chunk = decoder.decode(bytes, { stream: true });
        rest += chunk;
        let newline: number;
        while ((newline = rest.indexOf("\n")) !== -1) {
          onLine(rest.slice(0, newline));
          rest = rest.slice(newline + 1);
        }
      }
    } catch {
      // the process went away
    }
    if (rest !== "") onLine(rest);
  }

  /** The next stdout line that `match` accepts (others are dropped), within `ms`. */
  async next<T>(match: (line: string) => T | undefined, ms: number, what: string): Promise<T> {
    const deadline = Date.now() + ms;
    while (true) {
      while (this.#lines.length > 0) {
        const found = match(this.#lines.shift()!);
        if (found !== undefined) return found;
      }
      if (this.#ended) throw new Error(`${this.name} exited waiting for ${what}: ${this.stderr}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`${this.name}: timed out waiting for ${what}: ${this.stderr}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.#waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  async send(line: string): Promise<void> {
    await this.#stdin.write(new TextEncoder().encode(line + "\n")).catch(() => {});
  }

  /** SIGTERM, then SIGKILL if it has not exited within `ms`. */
  async stop(ms = 10_000): Promise<void> {
    if (!this.#ended) {
      try {
        this.#child.kill("SIGTERM");
      } catch {
        // already gone
      }
    }
    const timer = setTimeout(() => {
      try {
        this.#child.kill("SIGKILL");
      } catch {
        // already gone
      }
    }, ms);
    await this.status;
    clearTimeout(timer);
    await this.#stdin.close().catch(() => {});
  }
}

interface Server {
  proc: Proc;
  port: number;
  dir: string;
}

async function startServer(
  target: Target,
  profileDir?: string,
  extraFlags: string[] = [],
): Promise<Server> {
  const dir = await Deno.makeTempDir({ prefix: "parley_bench_" });
  const deno = Deno.execPath();
  const prof = profileDir === undefined ? [] : ["--cpu-prof", `--cpu-prof-dir=${profileDir}`];
  const command = target.server === "baseline"
    ? [deno, "run", "-A", ...prof, join(BENCH, "baseline_bare.ts"), "0"]
    : [
      deno,
      "run",
      "-A",
      ...prof,
      join(ROOT, "main.ts"),
      ...PARLEY_FLAGS,
      `--store=${target.store === "sqlite" ? `sqlite:${join(dir, "parley.db")}` : "memory:"}`,
      // After the harness's own flags, so an experiment's flag (even --store) wins.
      ...extraParleyFlags,
      ...extraFlags,
    ];
  const proc = new Proc(target.label, command, SERVER_CORE, FD_HARD_LIMIT);
  try {
    const port = await proc.next(
      (line) => {
        const match = /listening on (https?:\/\/\S+)/.exec(line);
        return match === null ? undefined : Number(new URL(match[1]!).port);
      },
      SERVER_START_MS,
      "its listen banner",
    );
    return { proc, port, dir };
  } catch (error) {
    await proc.stop();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    throw error;
  }
}

async function stopServer(server: Server): Promise<void> {
  await server.proc.stop();
  await Deno.remove(server.dir, { recursive: true }).catch(() => {});
}

class LoaderProc {
  readonly proc: Proc;
  constructor(spec: LoaderSpec) {
    const nofile = Math.min(FD_HARD_LIMIT, spec.clients + FD_MARGIN + IDLE_CLIENTS_PER_LOADER);
    this.proc = new Proc(
      `loader ${spec.id}`,
      [
        Deno.execPath(),
        "run",
        ...(loaderProfDir === undefined ? [] : ["--cpu-prof", `--cpu-prof-dir=${loaderProfDir}`]),
        "-A",
        join(BENCH, "loader.ts"),
        JSON.stringify(spec),
      ],
      LOADER_CORE,
      nofile,
    );
  }

  event<K extends LoaderEvent["ev"]>(ev: K, ms: number): Promise<Extract<LoaderEvent, { ev: K }>> {
    return this.proc.next(
      (line) => {
        if (!line.startsWith("{")) return undefined;
        const event = JSON.parse(line) as LoaderEvent;
        if (event.ev === "error") console.error(`  ${this.proc.name}: ${event.message}`);
        return event.ev === ev ? event as Extract<LoaderEvent, { ev: K }> : undefined;
      },
      ms,
      `"${ev}"`,
    );
  }

  command(cmd: string, extra: Record<string, unknown> = {}): Promise<void> {
    return this.proc.send(JSON.stringify({ cmd, ...extra }));
  }

  /** Sends `cmd` and waits for its answer `ev` (listening first, so the answer cannot be missed). */
  async ask<K extends LoaderEvent["ev"]>(
    cmd: string,
    ev: K,
  ): Promise<Extract<LoaderEvent, { ev: K }>> {
    const answer = this.event(ev, REPORT_MS);
    await this.command(cmd);
    return await answer;
  }
}

/** Splits `total` into `parts` near-equal integer shares. */
function shares(total: number, parts: number): number[] {
  return Array.from(
    { length: parts },
    (_, i) => Math.floor(total / parts) + (i < total % parts ? 1 : 0),
  );
}

// -------------------------------------------------------------------------------------------
// Measurements

/** One load measurement of one target. */
export interface LoadResult {
  target: string;
  run: number;
  clients: number;
  windowS: number;
  sent: number;
  sentPerS: number;
  delivered: number;
  deliveredPerS: number;
  /** Delivered over sent × clients: 1 when every message reached every client in time. */
  keepUp: number;
  latencyMs: { p50: number; p99: number; max: number; samples: number };
  serverCores: number;
  /** Share of the server's core busy with anything (the server or other work) in the window. */
  serverCoreBusy: number;
  /**
   * Events the server wrote to its sockets in the window, by its own count (Parley's
   * `parley_batch_events_sum`, the baseline's `/count`). CPU per delivery divides by this, not by
   * what the clients counted: when the load generator falls behind, the kernel holds a backlog
   * for it, and whatever of that backlog it reads in the window (written before it) would count.
   */
  serverDelivered: number;
  /**
   * The load generator's own window, from its `mark` to its `report`, in seconds (the longest of
   * the loaders'). Client-side rates (sent/s, delivered/s) divide by it. It exceeds `windowS`
   * when the loader answered its commands late.
   */
  loaderWindowS: number;
  /** The clients' delivered/s over the server's events written/s: about 1 unless the loader
   * lagged. */
  clientCountRatio: number;
  cpuUsPerDelivery: number;
  /** Parley only, from /metrics over the window: frames written, and events per frame. */
  framesOutPerS?: number;
  eventsPerFrame?: number;
  /** SQLite only: the share of the window its write batches held the event loop. */
  storeShare?: number;
  /** SQLite only: write batches (transactions) committed per second. */
  storeBatchesPerS?: number;
  loaderCores: number;
  /** The load generator's CPU per delivery: it must stay well below the server's. */
  loaderUsPerDelivery: number;
  serverRssMiB: number;
  closes: Record<string, number>;
  resends: number;
  loadavg: string;
  profile?: ProfileSummary;
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]!;
}

async function measureLoad(
  scenario: LoadScenario | ProfileScenario,
  target: Target,
  run: number,
  options: Options,
  profileDir?: string,
): Promise<LoadResult> {
  const session = await openSession(scenario, target, options, profileDir);
  try {
    const { result, up0, up1 } = await measureWindow(
      session,
      run,
      options.warmupMs,
      options.windowMs,
    );
    // Closed before the profile is read: the server writes its profile as it exits.
    await closeSession(session);
    if (profileDir !== undefined) result.profile = await summarizeProfile(profileDir, up0, up1);
    return result;
  } finally {
    // After an error; a second call finds nothing left to stop.
    await closeSession(session);
  }
}

/** A server under test with its load generators connected, senders idle. */
interface Session {
  target: Target;
  server: Server;
  loaders: LoaderProc[];
  clients: number;
}

/** Starts a server for `target` and connects the scenario's clients to it; sends nothing yet. */
async function openSession(
  scenario: LoadScenario | ProfileScenario,
  target: Target,
  options: Options,
  profileDir?: string,
): Promise<Session> {
  const mode = scenario.kind === "load" ? scenario.mode : "closed";
  const senders = scenario.kind === "load" ? scenario.senders : 20;
  const rate = scenario.kind === "load" ? scenario.rate : 0;
  const server = await startServer(target, profileDir);
  const session: Session = { target, server, loaders: [], clients: 0 };
  try {
    const clientShares = shares(scenario.clients, options.loaders);
    const senderShares = shares(senders, options.loaders);
    let offset = 0;
    for (let id = 0; id < options.loaders; id++) {
      const spec: LoaderSpec = {
        id,
        hostname: "127.0.0.1",
        port: server.port,
        ...(target.protocol === undefined ? {} : { protocol: target.protocol }),
        clients: clientShares[id]!,
        offset,
        senders: senderShares[id]!,
        mode,
        rate: rate * senderShares[id]! / senders,
        sampleEvery: SAMPLE_EVERY,
        contentChars: CONTENT_CHARS,
        waitWelcome: target.server === "parley",
        concurrency: CONCURRENCY,
        bufferBytes: LOAD_BUFFER_BYTES,
        bulkIntervalMs: BULK_INTERVAL_MS,
      };
      offset += spec.clients;
      session.loaders.push(new LoaderProc(spec));
    }
    const loaders = session.loaders;
    const connected = await Promise.all(loaders.map((l) => l.event("connected", CONNECT_MS)));
    session.clients = connected.reduce((n, e) => n + e.clients, 0);
    const failed = connected.reduce((n, e) => n + e.failed, 0);
    if (failed > 0) console.error(`  ${failed} clients failed to connect`);
    if (target.protocol !== undefined) {
      const echoed = connected.reduce((n, e) => n + (e.protocols[target.protocol!] ?? 0), 0);
      if (echoed !== session.clients) {
        throw new Error(`Server echoed ${target.protocol} to ${echoed}`);
      }
    }
    await sleep(SETTLE_MS);
    return session;
  } catch (error) {
    await closeSession(session);
    throw error;
  }
}

/** Stops the session's load generators and server; idempotent. */
async function closeSession(session: Session): Promise<void> {
  const loaders = session.loaders.splice(0);
  await Promise.all(loaders.map((l) => l.command("stop").catch(() => {})));
  await Promise.all(loaders.map((l) => l.proc.stop()));
  await stopServer(session.server);
}

/**
 * Starts (or resumes) the session's senders, waits `warmupMs`, measures a `windowMs` window, and
 * pauses the senders again, so the session can be measured again later. Returns the result and
 * the machine's uptime at both ends of the window (for a profile's time range).
 */
async function measureWindow(
  session: Session,
  run: number,
  warmupMs: number,
  windowMs: number,
): Promise<{ result: LoadResult; up0: number; up1: number }> {
  const { target, server, loaders, clients } = session;
  await Promise.all(loaders.map((l) => l.command("start")));
  await sleep(warmupMs);
  const metrics0 = await scrape(target, server.port);
  const core0 = coreTimes(SERVER_CORE);
  const cpu0 = cpuSeconds(server.proc.pid);
  const loaderCpu0 = loaders.reduce((s, l) => s + cpuSeconds(l.proc.pid), 0);
  const up0 = uptime();
  const t0 = performance.now();
  await Promise.all(loaders.map((l) => l.command("mark")));
  await sleep(windowMs);
  const reportsPending = loaders.map((l) => l.event("report", REPORT_MS));
  await Promise.all(loaders.map((l) => l.command("report")));
  const cpu1 = cpuSeconds(server.proc.pid);
  const core1 = coreTimes(SERVER_CORE);
  const loaderCpu1 = loaders.reduce((s, l) => s + cpuSeconds(l.proc.pid), 0);
  const up1 = uptime();
  const windowS = (performance.now() - t0) / 1000;
  const serverRssMiB = rssBytes(server.proc.pid) / 2 ** 20;
  const metrics1 = await scrape(target, server.port);
  const reports: LoaderReport[] = (await Promise.all(reportsPending)).map((e) => e.report);
  await Promise.all(loaders.map((l) => l.ask("pause", "paused")));

  const sent = reports.reduce((n, r) => n + r.sent, 0);
  const delivered = reports.reduce((n, r) => n + r.delivered, 0);
  const latencies = reports.flatMap((r) => r.latencies).sort((a, b) => a - b);
  const closes: Record<string, number> = {};
  for (const report of reports) {
    for (const [code, n] of Object.entries(report.closes)) closes[code] = (closes[code] ?? 0) + n;
  }
  const serverCpu = cpu1 - cpu0;
  const frames = metrics1.framesOut - metrics0.framesOut;
  const serverDelivered = metrics1.eventsOut - metrics0.eventsOut;
  const loaderWindowS = Math.max(...reports.map((r) => r.windowMs)) / 1000;
  const result: LoadResult = {
    target: target.label,
    run,
    clients,
    windowS: round(windowS, 3),
    sent,
    sentPerS: round(sent / loaderWindowS, 1),
    delivered,
    deliveredPerS: Math.round(delivered / loaderWindowS),
    keepUp: round(delivered / Math.max(1, sent * clients), 4),
    latencyMs: {
      p50: round(percentile(latencies, 0.5), 3),
      p99: round(percentile(latencies, 0.99), 3),
      max: round(latencies.at(-1) ?? NaN, 3),
      samples: latencies.length,
    },
    serverCores: round(serverCpu / windowS, 3),
    serverCoreBusy: round((core1.busy - core0.busy) / Math.max(1, core1.total - core0.total), 3),
    serverDelivered,
    loaderWindowS: round(loaderWindowS, 3),
    clientCountRatio: round(
      (delivered / loaderWindowS) / Math.max(1e-9, serverDelivered / windowS),
      3,
    ),
    cpuUsPerDelivery: round(serverCpu * 1e6 / Math.max(1, serverDelivered), 3),
    ...(target.server !== "parley" ? {} : {
      framesOutPerS: Math.round(frames / windowS),
      eventsPerFrame: round(serverDelivered / Math.max(1, frames), 2),
    }),
    ...(target.store !== "sqlite" ? {} : {
      storeShare: round((metrics1.storeWriteS - metrics0.storeWriteS) / windowS, 4),
      storeBatchesPerS: round((metrics1.storeBatches - metrics0.storeBatches) / windowS, 1),
    }),
    loaderCores: round((loaderCpu1 - loaderCpu0) / windowS, 3),
    loaderUsPerDelivery: round((loaderCpu1 - loaderCpu0) * 1e6 / Math.max(1, delivered), 3),
    serverRssMiB: round(serverRssMiB, 1),
    closes,
    resends: reports.reduce((n, r) => n + r.resends, 0),
    loadavg: loadavg(),
  };
  return { result, up0, up1 };
}

/**
 * Measures two targets in interleaved slices: both servers run at once (both pinned to the
 * server core, with their clients connected), and only one has its senders running at a time.
 * After a warm-up slice each, `pairs` pairs of short windows follow, which of a pair goes first
 * alternating (A B, B A, A B, …), each window after a short warm-up and with a pause for the
 * messages in flight to drain between windows. A drift in the machine's speed, which moves single
 * runs here by ±15% over tens of seconds, then falls on both targets alike within each pair.
 * Each window is one {@link LoadResult}, its `run` the pair's number.
 */
async function measureInterleaved(
  scenario: LoadScenario,
  a: Target,
  b: Target,
  pairs: number,
  options: Options,
  log: (result: LoadResult) => void,
): Promise<LoadResult[]> {
  const sessions: Session[] = [];
  try {
    // One at a time: two connection storms at once would only slow each other.
    for (const target of [a, b]) sessions.push(await openSession(scenario, target, options));
    const [first, second] = sessions as [Session, Session];
    const slice = SLICE;
    const drain = () => sleep(SLICE_DRAIN_MS);
    for (const session of sessions) {
      await measureWindow(session, 0, slice.warmupMs, slice.windowMs);
      await drain();
    }
    const results: LoadResult[] = [];
    for (let pair = 1; pair <= pairs; pair++) {
      for (const session of runOrder([first, second], pair, true)) {
        const { result } = await measureWindow(session, pair, slice.warmupMs, slice.windowMs);
        results.push(result);
        log(result);
        await drain();
      }
    }
    return results;
  } finally {
    for (const session of sessions) await closeSession(session);
  }
}

/**
 * A server's outbound counters: Parley's from `GET /metrics` (frames and events written), the
 * baseline's from `GET /count` (frames written; one event each).
 */
async function scrape(
  target: Target,
  port: number,
): Promise<{ framesOut: number; eventsOut: number; storeWriteS: number; storeBatches: number }> {
  if (target.server !== "parley") {
    const sends = Number(await fetch(`http://127.0.0.1:${port}/count`).then((r) => r.text()));
    return { framesOut: sends, eventsOut: sends, storeWriteS: 0, storeBatches: 0 };
  }
  const text = await fetch(`http://127.0.0.1:${port}/metrics`).then((r) => r.text());
  const value = (name: string) =>
    text.split("\n").filter((line) => line.startsWith(`${name} `) || line.startsWith(`${name}{`))
      .reduce((sum, line) => sum + Number(line.slice(line.lastIndexOf(" ") + 1)), 0);
  return {
    framesOut: value("parley_frames_out_total"),
    eventsOut: value("parley_batch_events_sum"),
    storeWriteS: value("parley_store_write_seconds_total"),
    storeBatches: value("parley_store_write_batches_total"),
  };
}

/** One idle-memory measurement of one target. */
interface IdleResult {
  target: string;
  run: number;
  warm: { connections: number; rssMiB: number };
  points: {
    connections: number;
    held?: number;
    rssMiB?: number;
    bytesPerConnection?: number;
    skipped?: string;
    /** Server processes that held the point: set when one process could not. */
    nodes?: number;
    /** Clients that received the one message published on the first node (Parley nodes). */
    reached?: number;
    /** Milliseconds from publishing until the last of them had it (to within 100 ms). */
    reachedMs?: number;
  }[];
  loadavg: string;
}

/** A load generator that only opens connections: `clients` named from `offset` on. */
function idleLoaderSpec(
  id: number,
  target: Target,
  port: number,
  clients: number,
  offset: number,
): LoaderSpec {
  return {
    id,
    hostname: "127.0.0.1",
    port,
    ...(target.protocol === undefined ? {} : { protocol: target.protocol }),
    clients,
    offset,
    senders: 0,
    mode: "idle",
    rate: 0,
    sampleEvery: Number.MAX_SAFE_INTEGER,
    contentChars: CONTENT_CHARS,
    sources: IDLE_SOURCES,
    waitWelcome: target.server === "parley",
    concurrency: CONCURRENCY,
    bufferBytes: IDLE_BUFFER_BYTES,
    bulkIntervalMs: BULK_INTERVAL_MS,
  };
}

/** RSS after things settle: the median of a few samples taken after a pause. */
async function settledRss(pid: number): Promise<number> {
  await sleep(1_500);
  const samples: number[] = [];
  for (let i = 0; i < 5; i++) {
    samples.push(rssBytes(pid));
    await sleep(200);
  }
  return samples.sort((a, b) => a - b)[2]!;
}

async function measureIdle(
  scenario: IdleScenario,
  target: Target,
  run: number,
): Promise<IdleResult> {
  const server = await startServer(target);
  const loaders: LoaderProc[] = [];
  const maxHeld = FD_HARD_LIMIT - FD_MARGIN;
  const points = scenario.points.map((n) => ({ connections: n, feasible: n <= maxHeld }));
  // A point the descriptor limit rules out for one process is measured on several
  // (measureIdleOnNodes), and the most one process can hold is added as a point of its own.
  if (points.some((p) => !p.feasible)) {
    const most = Math.floor(maxHeld / 1000) * 1000;
    if (most > Math.max(0, ...points.filter((p) => p.feasible).map((p) => p.connections))) {
      points.push({ connections: most, feasible: true });
    }
  }
  const largest = Math.max(...points.filter((p) => p.feasible).map((p) => p.connections));
  let result: IdleResult;
  try {
    const count = Math.max(1, Math.ceil(largest / IDLE_CLIENTS_PER_LOADER));
    const warmShares = shares(IDLE_WARM, count);
    let offset = 0;
    for (let id = 0; id < count; id++) {
      loaders.push(
        // Names must not collide when a loader grows: give each its own range.
        new LoaderProc(idleLoaderSpec(id, target, server.port, warmShares[id]!, offset)),
      );
      offset += IDLE_CLIENTS_PER_LOADER * 2;
    }
    await Promise.all(loaders.map((l) => l.event("connected", CONNECT_MS)));
    const warmRss = await settledRss(server.proc.pid);
    result = {
      target: target.label,
      run,
      warm: { connections: IDLE_WARM, rssMiB: round(warmRss / 2 ** 20, 1) },
      points: [],
      loadavg: "",
    };
    for (const point of points.sort((a, b) => a.connections - b.connections)) {
      if (!point.feasible) {
        result.points.push({ connections: point.connections }); // measured on nodes, below
        continue;
      }
      const targetShares = shares(point.connections, count);
      await Promise.all(loaders.map((l, i) => l.command("connect", { clients: targetShares[i] })));
      const events = await Promise.all(loaders.map((l) => l.event("connected", CONNECT_MS)));
      const held = events.reduce((n, e) => n + e.clients, 0);
      const rss = await settledRss(server.proc.pid);
      result.points.push({
        connections: point.connections,
        held,
        rssMiB: round(rss / 2 ** 20, 1),
        bytesPerConnection: Math.round((rss - warmRss) / Math.max(1, held - IDLE_WARM)),
      });
    }
    result.loadavg = loadavg();
  } finally {
    await Promise.all(loaders.map((l) => l.command("stop")));
    await Promise.all(loaders.map((l) => l.proc.stop()));
    await stopServer(server);
  }
  for (const [i, point] of result.points.entries()) {
    if (point.held === undefined) {
      // One load generator per node, so a node takes no more clients than one of them holds.
      result.points[i] = await measureIdleOnNodes(
        target,
        point.connections,
        Math.min(maxHeld, IDLE_CLIENTS_PER_LOADER),
      );
    }
  }
  return result;
}

/**
 * An idle point one process cannot hold (the descriptor limit): the fewest server processes that
 * can, each with its own load generator. Parley runs them as one cluster on a fresh Redis
 * (`--redis`), and one message published on the first node must reach every client; the bare
 * baseline runs independent processes. Per connection = the growth of all the nodes' RSS together,
 * divided by the connections added, as on one server.
 */
async function measureIdleOnNodes(
  target: Target,
  connections: number,
  perNode: number,
): Promise<IdleResult["points"][number]> {
  const count = Math.ceil(connections / perNode);
  const redis = target.server === "parley" ? await RedisServer.start() : undefined;
  const servers: Server[] = [];
  const loaders: LoaderProc[] = [];
  try {
    for (let i = 0; i < count; i++) {
      servers.push(
        await startServer(
          target,
          undefined,
          redis === undefined ? [] : [
            `--redis=${redis.url}`,
            `--api-key=${BENCH_API_KEY}`,
            // The presence cut-off counts a node's own members: split it, so the room goes
            // quiet at about the same total size as on one process (unless --parley-flag set it).
            ...(extraParleyFlags.some((f) => f.startsWith("--presence-events-max"))
              ? []
              : [`--presence-events-max=${Math.ceil(PRESENCE_EVENTS_MAX / count)}`]),
          ],
        ),
      );
    }
    const warmShares = shares(IDLE_WARM, count);
    const targetShares = shares(connections, count);
    for (const [id, server] of servers.entries()) {
      loaders.push(
        // Client names stay unique across the cluster.
        new LoaderProc(idleLoaderSpec(id, target, server.port, warmShares[id]!, id * connections)),
      );
    }
    await Promise.all(loaders.map((l) => l.event("connected", CONNECT_MS)));
    const warmRss = await Promise.all(servers.map((s) => settledRss(s.proc.pid)));
    await Promise.all(loaders.map((l, i) => l.command("connect", { clients: targetShares[i] })));
    const events = await Promise.all(loaders.map((l) => l.event("connected", CONNECT_MS)));
    const held = events.reduce((n, e) => n + e.clients, 0);
    const rss = await Promise.all(servers.map((s) => settledRss(s.proc.pid)));
    const grown = rss.reduce((a, b) => a + b, 0) - warmRss.reduce((a, b) => a + b, 0);
    const point: IdleResult["points"][number] = {
      connections,
      held,
      rssMiB: round(rss.reduce((a, b) => a + b, 0) / 2 ** 20, 1),
      bytesPerConnection: Math.round(grown / Math.max(1, held - IDLE_WARM)),
      nodes: count,
    };
    if (redis !== undefined) {
      const { reached, reachedMs } = await publishAndCount(servers[0]!, loaders, held);
      point.reached = reached;
      point.reachedMs = reachedMs;
    }
    return point;
  } finally {
    await Promise.all(loaders.map((l) => l.command("stop")));
    await Promise.all(loaders.map((l) => l.proc.stop()));
    await Promise.all(servers.map(stopServer));
    await redis?.stop();
  }
}

/**
 * Publishes one message through `server`'s HTTP API and waits, up to {@link PUBLISH_WAIT_MS}, until
 * `expected` clients over all the loaders have received it; returns how many did and how long the
 * last one took.
 */
async function publishAndCount(
  server: Server,
  loaders: LoaderProc[],
  expected: number,
): Promise<{ reached: number; reachedMs: number }> {
  await Promise.all(loaders.map((l) => l.command("mark")));
  const started = performance.now();
  const response = await fetch(`http://127.0.0.1:${server.port}/api/rooms/lobby/messages`, {
    method: "POST",
    headers: { authorization: `Bearer ${BENCH_API_KEY}`, "content-type": "application/json" },
    body: JSON.stringify({ sender: "bench", content: "one message to every node" }),
  });
  await response.body?.cancel();
  if (!response.ok) throw new Error(`Publishing failed: HTTP ${response.status}`);
  let reached = 0;
  let reachedMs = 0;
  while (performance.now() - started < PUBLISH_WAIT_MS) {
    await sleep(PUBLISH_POLL_MS);
    const counts = await Promise.all(
      loaders.map(async (l) => (await l.ask("peek", "peeked")).delivered),
    );
    const now = counts.reduce((a, b) => a + b, 0);
    if (now > reached) {
      reached = now;
      reachedMs = performance.now() - started;
    }
    if (reached >= expected) break;
  }
  await Promise.all(loaders.map((l) => l.ask("report", "report")));
  return { reached, reachedMs: Math.round(reachedMs) };
}

// -------------------------------------------------------------------------------------------
// CPU profiles

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
}

interface ProfileSummary {
  /** Sampled milliseconds in the measurement window, by category. */
  windowMs: number;
  idleMs: number;
  gcMs: number;
  programMs: number;
  /** Self time by function (non-idle share in percent). */
  functions: { name: string; where: string; ms: number; percent: number }[];
  /** Self time by source file. */
  files: { file: string; ms: number; percent: number }[];
  /** True when no sample fell in the window and the whole profile was used. */
  wholeProfile: boolean;
}

async function summarizeProfile(dir: string, from: number, to: number): Promise<ProfileSummary> {
  let file: string | undefined;
  let size = -1;
  for await (const entry of Deno.readDir(dir)) {
    if (!entry.name.endsWith(".cpuprofile")) continue;
    const { size: s } = await Deno.stat(join(dir, entry.name));
    if (s > size) [file, size] = [entry.name, s];
  }
  if (file === undefined) throw new Error(`No .cpuprofile written in ${dir}`);
  const profile = JSON.parse(await Deno.readTextFile(join(dir, file))) as {
    nodes: ProfileNode[];
    startTime: number;
    samples: number[];
    timeDeltas: number[];
  };
  const nodes = new Map(profile.nodes.map((n) => [n.id, n]));
  const self = new Map<number, number>();
  let inWindow = 0;
  const accumulate = (all: boolean) => {
    self.clear();
    inWindow = 0;
    let t = profile.startTime;
    for (let i = 0; i < profile.samples.length; i++) {
      t += profile.timeDeltas[i] ?? 0;
      // A sample stands for the time until the next one.
      const span = profile.timeDeltas[i + 1] ?? 0;
      if (!all && (t < from * 1e6 || t > to * 1e6)) continue;
      inWindow++;
      const id = profile.samples[i]!;
      self.set(id, (self.get(id) ?? 0) + span);
    }
  };
  accumulate(false);
  const wholeProfile = inWindow === 0;
  if (wholeProfile) accumulate(true);
  const byFunction = new Map<string, { name: string; where: string; us: number }>();
  const byFile = new Map<string, number>();
  let idle = 0, gc = 0, program = 0, busy = 0;
  for (const [id, us] of self) {
    const frame = nodes.get(id)?.callFrame;
    const name = frame?.functionName || "(anonymous)";
    if (name === "(idle)") {
      idle += us;
      continue;
    }
    busy += us;
    if (name === "(garbage collector)") gc += us;
    if (name === "(program)") program += us;
    const url = frame?.url ?? "";
    const fileName = url === "" ? name : url.startsWith("file:") ? basename(url) : url;
    const where = url === "" ? "" : `${fileName}:${(frame?.lineNumber ?? 0) + 1}`;
    const key = `${name}@${where}`;
    const entry = byFunction.get(key) ?? { name, where, us: 0 };
    entry.us += us;
    byFunction.set(key, entry);
    byFile.set(fileName, (byFile.get(fileName) ?? 0) + us);
  }
  const pct = (us: number) => round(100 * us / Math.max(1, busy), 1);
  return {
    windowMs: round((busy + idle) / 1000, 1),
    idleMs: round(idle / 1000, 1),
    gcMs: round(gc / 1000, 1),
    programMs: round(program / 1000, 1),
    functions: [...byFunction.values()].sort((a, b) => b.us - a.us).slice(0, PROFILE_TOP)
      .map((f) => ({
        name: f.name,
        where: f.where,
        ms: round(f.us / 1000, 1),
        percent: pct(f.us),
      })),
    files: [...byFile.entries()].sort((a, b) => b[1] - a[1]).slice(0, 10)
      .map(([file, us]) => ({ file, ms: round(us / 1000, 1), percent: pct(us) })),
    wholeProfile,
  };
}

// -------------------------------------------------------------------------------------------
// Aggregation and reports

function round(n: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(n * f) / f;
}

function median(values: number[]): number {
  const sorted = values.filter((v) => Number.isFinite(v)).sort((a, b) => a - b);
  if (sorted.length === 0) return NaN;
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

interface LoadSummary {
  target: string;
  runs: number;
  deliveredPerS: number;
  deliveredPerSRange: [number, number];
  /** Events the server wrote per second (its own count; see {@link LoadResult.serverDelivered}). */
  writtenPerS: number;
  sentPerS: number;
  keepUp: number;
  p50Ms: number;
  p99Ms: number;
  cpuUsPerDelivery: number;
  cpuUsRange: [number, number];
  /** Lowest and highest {@link LoadResult.clientCountRatio} of the runs. */
  clientCountRange: [number, number];
  /** The longest {@link LoadResult.loaderWindowS} over the harness's window, of the runs. */
  loaderWindowRatioMax: number;
  serverCores: number;
  serverCoreBusy: number;
  eventsPerFrame?: number;
  storeShare?: number;
  storeBatchesPerS?: number;
  loaderCores: number;
  loaderCoresMax: number;
  loaderUsPerDelivery: number;
  serverRssMiB: number;
  closes: Record<string, number>;
  resends: number;
}

function summarizeLoad(results: LoadResult[]): LoadSummary[] {
  const byTarget = new Map<string, LoadResult[]>();
  for (const r of results) byTarget.set(r.target, [...(byTarget.get(r.target) ?? []), r]);
  return [...byTarget.entries()].map(([target, rs]) => {
    const closes: Record<string, number> = {};
    for (const r of rs) {
      for (const [code, n] of Object.entries(r.closes)) closes[code] = (closes[code] ?? 0) + n;
    }
    const delivered = rs.map((r) => r.deliveredPerS);
    const cpu = rs.map((r) => r.cpuUsPerDelivery);
    return {
      target,
      runs: rs.length,
      deliveredPerS: Math.round(median(delivered)),
      deliveredPerSRange: [Math.min(...delivered), Math.max(...delivered)],
      writtenPerS: Math.round(median(rs.map((r) => r.serverDelivered / r.windowS))),
      sentPerS: round(median(rs.map((r) => r.sentPerS)), 1),
      keepUp: round(median(rs.map((r) => r.keepUp)), 4),
      p50Ms: round(median(rs.map((r) => r.latencyMs.p50)), 3),
      p99Ms: round(median(rs.map((r) => r.latencyMs.p99)), 3),
      cpuUsPerDelivery: round(median(cpu), 3),
      cpuUsRange: [Math.min(...cpu), Math.max(...cpu)],
      clientCountRange: [
        Math.min(...rs.map((r) => r.clientCountRatio)),
        Math.max(...rs.map((r) => r.clientCountRatio)),
      ],
      // Results written before loaderWindowS existed lack it: their windows counted as equal.
      loaderWindowRatioMax: Math.max(...rs.map((r) => (r.loaderWindowS ?? r.windowS) / r.windowS)),
      serverCores: round(median(rs.map((r) => r.serverCores)), 3),
      serverCoreBusy: round(median(rs.map((r) => r.serverCoreBusy)), 3),
      loaderCores: round(median(rs.map((r) => r.loaderCores)), 3),
      ...(rs.every((r) => r.eventsPerFrame !== undefined)
        ? { eventsPerFrame: round(median(rs.map((r) => r.eventsPerFrame!)), 2) }
        : {}),
      ...(rs.every((r) => r.storeShare !== undefined)
        ? {
          storeShare: round(median(rs.map((r) => r.storeShare!)), 4),
          storeBatchesPerS: round(median(rs.map((r) => r.storeBatchesPerS ?? NaN)), 1),
        }
        : {}),
      loaderCoresMax: Math.max(...rs.map((r) => r.loaderCores)),
      loaderUsPerDelivery: round(median(rs.map((r) => r.loaderUsPerDelivery)), 3),
      serverRssMiB: round(median(rs.map((r) => r.serverRssMiB)), 1),
      closes,
      resends: rs.reduce((n, r) => n + r.resends, 0),
    };
  });
}

interface IdleSummary {
  target: string;
  runs: number;
  points: {
    connections: number;
    held?: number;
    bytesPerConnection?: number;
    skipped?: string;
    nodes?: number;
    reached?: number;
    reachedMs?: number;
  }[];
}

function summarizeIdle(results: IdleResult[]): IdleSummary[] {
  const byTarget = new Map<string, IdleResult[]>();
  for (const r of results) byTarget.set(r.target, [...(byTarget.get(r.target) ?? []), r]);
  return [...byTarget.entries()].map(([target, rs]) => ({
    target,
    runs: rs.length,
    points: rs[0]!.points.map((p, i) => {
      if (p.skipped !== undefined) return { connections: p.connections, skipped: p.skipped };
      const reached = rs.map((r) => r.points[i]?.reached).filter((n): n is number =>
        n !== undefined
      );
      return {
        connections: p.connections,
        ...(p.nodes === undefined ? {} : { nodes: p.nodes }),
        ...(reached.length === 0 ? {} : {
          reached: Math.min(...reached),
          reachedMs: Math.max(...rs.map((r) => r.points[i]?.reachedMs ?? 0)),
        }),
        held: Math.min(...rs.map((r) => r.points[i]?.held ?? 0)),
        bytesPerConnection: Math.round(
          median(rs.map((r) => r.points[i]?.bytesPerConnection ?? NaN)),
        ),
      };
    }),
  }));
}

interface ScenarioReport {
  name: string;
  title: string;
  kind: Scenario["kind"];
  load?: LoadSummary[];
  idle?: IdleSummary[];
  profiles?: { target: string; result: LoadResult }[];
  /** For a paired scenario: the second target of each pair against the first, pair by pair. */
  pairs?: PairRatios[];
  raw: (LoadResult | IdleResult)[];
}

/** One paired comparison of a {@link LoadScenario} with `pairs` set. */
interface PairRatios {
  /** The target measured against `base`. */
  target: string;
  base: string;
  /** Per pair: the target's events written per second over the base's, both server-counted. */
  ratios: number[];
  median: number;
}

/**
 * The order of a run's measurements. Unpaired, it rotates by one per run, so a drift in the
 * machine's load does not always favour one server. Paired, each pair stays adjacent: the pairs
 * rotate, and which of a pair goes first alternates (A B, then B A), so a steady drift costs
 * each side of a pair the same over two runs.
 */
export function runOrder<T>(targets: readonly T[], run: number, paired: boolean): T[] {
  const rotate = <U>(list: readonly U[]) => list.map((_, i) => list[(i + run - 1) % list.length]!);
  if (!paired) return rotate(targets);
  if (targets.length % 2 !== 0) throw new Error("A paired scenario needs an even target count");
  const pairs: T[][] = [];
  for (let i = 0; i < targets.length; i += 2) {
    pairs.push(run % 2 === 1 ? [targets[i]!, targets[i + 1]!] : [targets[i + 1]!, targets[i]!]);
  }
  return rotate(pairs).flat();
}

/** Each pair's second target over its first, per run, by the servers' own counts. */
export function pairRatios(targets: readonly Target[], raw: LoadResult[]): PairRatios[] {
  const out: PairRatios[] = [];
  for (let i = 0; i + 1 < targets.length; i += 2) {
    const base = targets[i]!.label;
    const target = targets[i + 1]!.label;
    const rate = (label: string, run: number) => {
      const r = raw.find((x) => x.target === label && x.run === run);
      return r === undefined ? undefined : r.serverDelivered / r.windowS;
    };
    const ratios: number[] = [];
    for (const run of new Set(raw.map((r) => r.run))) {
      const a = rate(base, run);
      const b = rate(target, run);
      if (a !== undefined && b !== undefined && a > 0) ratios.push(round(b / a, 4));
    }
    out.push({ target, base, ratios, median: round(median(ratios), 4) });
  }
  return out;
}

interface Verdict {
  target: string;
  measured: string;
  status:
    | "met"
    | "missed"
    | "not measured"
    | "met by a cluster, not by one process"
    | "inconclusive: other work shared the server's core";
}

function verdicts(reports: ScenarioReport[]): Verdict[] {
  const find = (name: string) => reports.find((r) => r.name === name);
  const row = (name: string, target: Target) =>
    find(name)?.load?.find((s) => s.target === target.label);
  const out: Verdict[] = [];
  const status = (ok: boolean | undefined): Verdict["status"] =>
    ok === undefined ? "not measured" : ok ? "met" : "missed";
  // Throughput and latency verdicts need the server to have had its core to itself.
  const starved = (...rows: (LoadSummary | undefined)[]) =>
    rows.some((r) => r !== undefined && r.serverCoreBusy - r.serverCores > 0.1);
  /** For a comparison that other work could skew either way. */
  const fair = (ok: boolean | undefined, ...rows: (LoadSummary | undefined)[]): Verdict["status"] =>
    ok !== undefined && starved(...rows)
      ? "inconclusive: other work shared the server's core"
      : status(ok);
  /** For a bound that other work can only make harder to meet (latency, keeping up). */
  const fairMiss = (
    ok: boolean | undefined,
    ...rows: (LoadSummary | undefined)[]
  ): Verdict["status"] => ok === false && starved(...rows) ? fair(ok, ...rows) : status(ok);

  const satV1 = row("saturation", PARLEY_V1);
  const satPlain = row("saturation", PARLEY_PLAIN);
  const satBase = row("saturation", BASELINE);
  const ratio = satV1 && satBase ? satBase.cpuUsPerDelivery / satV1.cpuUsPerDelivery : undefined;
  out.push({
    target: "Saturation, parley.v1: ≤ 1.0 µs server CPU per delivery",
    measured: satV1 ? `${fmt(satV1.cpuUsPerDelivery)} µs` : "—",
    status: status(satV1 && satV1.cpuUsPerDelivery <= 1.0),
  });
  out.push({
    target: "Saturation, parley.v1: ≥ 9× better than the bare baseline",
    measured: ratio === undefined
      ? "—"
      : `${fmt(ratio)}× (baseline ${fmt(satBase!.cpuUsPerDelivery)} µs)`,
    status: status(ratio === undefined ? undefined : ratio >= 9),
  });
  out.push({
    target: "Saturation, parley.v1: p99 latency ≤ 50 ms",
    measured: satV1 ? `${fmt(satV1.p99Ms)} ms` : "—",
    status: fairMiss(satV1 && satV1.p99Ms <= 50, satV1),
  });
  const plainRatio = satPlain && satBase
    ? satPlain.cpuUsPerDelivery / satBase.cpuUsPerDelivery
    : undefined;
  out.push({
    target: "Saturation, plain clients: ≤ 1.1× baseline CPU per delivery",
    measured: plainRatio === undefined
      ? "—"
      : `${fmt(plainRatio)}× (${fmt(satPlain!.cpuUsPerDelivery)} µs)`,
    status: status(plainRatio === undefined ? undefined : plainRatio <= 1.1),
  });
  for (const target of [PARLEY_V1, PARLEY_PLAIN]) {
    const r = row("100k", target);
    out.push({
      target: `100k deliveries/s keeps up (${target.label}): delivered ≥ 98% of sent × clients`,
      measured: r
        ? `${fmt(r.keepUp * 100)}% at ${fmt(r.deliveredPerS)}/s${
          r.deliveredPerS < 95_000 ? " (a smaller load than 100,000/s: quick run)" : ""
        }`
        : "—",
      status: fairMiss(r && r.keepUp >= 0.98, r),
    });
  }
  const idle = find("idle")?.idle;
  const idleBase = idle?.find((s) => s.target === BASELINE.label);
  for (const target of [PARLEY_V1, PARLEY_PLAIN]) {
    const mine = idle?.find((s) => s.target === target.label);
    // One process against one process: a cluster node also carries its Redis clients.
    const measured = mine?.points.filter((p) =>
      p.bytesPerConnection !== undefined && p.nodes === undefined
    ) ?? [];
    const largest = measured.at(-1);
    const base = idleBase?.points.find((p) => p.connections === largest?.connections);
    const r = largest && base?.bytesPerConnection
      ? largest.bytesPerConnection! / base.bytesPerConnection
      : undefined;
    out.push({
      target: `Idle memory per connection ≤ 1.1× baseline (${target.label})`,
      measured: r === undefined
        ? "—"
        : `${fmt(r)}× at ${fmt(largest!.connections)} (${fmt(largest!.bytesPerConnection!)} B vs ${
          fmt(base!.bytesPerConnection!)
        } B)`,
      status: status(r === undefined ? undefined : r <= 1.1),
    });
  }
  for (const target of [PARLEY_V1, PARLEY_PLAIN]) {
    const fifty = idle?.find((s) => s.target === target.label)?.points
      .find((p) => p.connections === 50_000);
    const held = fifty?.held ?? 0;
    const nodes = fifty?.nodes;
    out.push({
      target: `50,000 idle connections held (${target.label})`,
      measured: fifty === undefined
        ? "—"
        : fifty.skipped ?? (nodes === undefined
          ? `${fmt(held)} held by one process`
          : `${fmt(held)} held by ${nodes} processes on one Redis, and one message published on ` +
            `the first reached ${fmt(fifty.reached ?? 0)} (the slowest run: ` +
            `${fmt((fifty.reachedMs ?? 0) / 1000)} s); one process may hold ` +
            `${fmt(FD_HARD_LIMIT - FD_MARGIN)} here (hard RLIMIT_NOFILE ${fmt(FD_HARD_LIMIT)}, ` +
            `and raising it needs CAP_SYS_RESOURCE)`),
      status: fifty === undefined || fifty.skipped !== undefined
        ? "not measured"
        : nodes === undefined
        ? status(held >= 50_000)
        : held >= 50_000 && (fifty.reached ?? 0) >= 50_000
        ? "met by a cluster, not by one process"
        : "missed",
    });
  }
  const sqlite = find("sqlite");
  for (const target of [PARLEY_V1, PARLEY_PLAIN]) {
    const mem = sqlite?.load?.find((s) => s.target === target.label);
    const lite = sqlite?.load?.find((s) => s.target === `${target.label}, SQLite`);
    // Throughput by the servers' own count, like CPU per delivery (the clients' may lag), and
    // compared within each interleaved pair of windows: the median of those ratios.
    const pair = sqlite?.pairs?.find((p) => p.base === target.label);
    const r = pair === undefined || pair.ratios.length === 0 ? undefined : pair.median;
    out.push({
      target: `SQLite costs ≤ 10% throughput vs memory: (${target.label})`,
      measured: r === undefined
        ? "—"
        : `${fmt(r * 100)}% of memory's throughput (median of ${pair!.ratios.length} pairs, ${
          fmt(100 * Math.min(...pair!.ratios))
        }–${fmt(100 * Math.max(...pair!.ratios))}%)`,
      status: fair(r === undefined ? undefined : r >= 0.9, mem, lite),
    });
  }
  return out;
}

/** Conditions under which a number in the tables does not mean what it claims. */
function warnings(m: Machine, reports: ScenarioReport[]): string[] {
  const out: string[] = [];
  const busiest = Math.max(...`${m.loadavgStart} ${m.loadavgEnd}`.split(" ").map(Number));
  if (busiest > m.nproc) {
    out.push(
      `Load average reached ${busiest} on ${m.nproc} cores: other work shared the cores, so ` +
        `throughput and latency are low and CPU per delivery somewhat high.`,
    );
  }
  for (const report of reports) {
    const closed = report.name === "saturation" || report.name === "sqlite";
    for (const s of report.load ?? []) {
      if (closed && s.serverCores < 0.9) {
        const shared = s.serverCoreBusy - s.serverCores;
        out.push(
          `${report.name}, ${s.target}: the server used only ${fmt(s.serverCores)} of its core ` +
            `(core ${SERVER_CORE} was ${fmt(100 * s.serverCoreBusy)}% busy in all), so ${
              shared > 0.1
                ? `other work took ${fmt(100 * shared)}% of it`
                : "the server idled: its round trips were too slow for 20 senders to keep it busy"
            }; its delivered/s is not its capacity. CPU per delivery still holds.`,
        );
      }
      if (s.loaderCoresMax > 0.85) {
        out.push(
          `${report.name}, ${s.target}: the load generator used up to ${
            fmt(s.loaderCoresMax)
          } of its core and may have limited the run.`,
        );
      }
      const [low, high] = s.clientCountRange;
      if (low < 0.95 || high > 1.05) {
        out.push(
          `${report.name}, ${s.target}: the clients counted ${fmt(low)}–${fmt(high)}× the ` +
            `events per second the server wrote: the load generator was behind, reading what the ` +
            `kernel held for it. CPU per delivery uses the server's count.`,
        );
      }
      if (s.loaderWindowRatioMax > 1.05) {
        out.push(
          `${report.name}, ${s.target}: a load generator's window was up to ${
            fmt(s.loaderWindowRatioMax)
          }× the harness's: it answered its commands late, so its counts cover a longer, later ` +
            `span. Its rates divide by its own window; the server's counts are unaffected.`,
        );
      }
      if (s.deliveredPerS > 50_000 && s.loaderUsPerDelivery > 0.8 * s.cpuUsPerDelivery) {
        out.push(
          `${report.name}, ${s.target}: the load generator spent ${
            fmt(s.loaderUsPerDelivery)
          } µs per delivery, close to the server's ${fmt(s.cpuUsPerDelivery)} µs.`,
        );
      }
    }
  }
  return out;
}

function fmt(n: number): string {
  if (!Number.isFinite(n)) return "—";
  if (Math.abs(n) >= 1000) return Math.round(n).toLocaleString("en-US");
  if (Math.abs(n) >= 100) return n.toFixed(0);
  if (Math.abs(n) >= 10) return n.toFixed(1);
  return n.toFixed(2);
}

interface Machine {
  date: string;
  command: string;
  mode: "full" | "quick";
  runs: number;
  warmupS: number;
  windowS: number;
  nproc: number;
  cpu: string;
  memoryGiB: number;
  deno: string;
  v8: string;
  commit: string;
  taskset: boolean;
  fdHardLimit: number;
  loaders: number;
  loadavgStart: string;
  loadavgEnd: string;
  parleyFlags: string[];
}

async function machine(options: Options, args: string[]): Promise<Machine> {
  const cpu = await shell("lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -1")
    .catch(() => "unknown");
  const mem = /MemTotal:\s+(\d+) kB/.exec(await Deno.readTextFile("/proc/meminfo"))?.[1] ?? "0";
  const commit = await shell(
    `cd ${ROOT} && git rev-parse --short HEAD && (git diff --quiet HEAD || echo dirty)`,
  ).then((s) => s.split("\n").join(" "), () => "unknown");
  return {
    date: new Date().toISOString(),
    command: ["deno", "task", "bench", ...args].join(" "),
    mode: options.quick ? "quick" : "full",
    runs: options.runs,
    warmupS: options.warmupMs / 1000,
    windowS: options.windowMs / 1000,
    nproc: Number(await shell("nproc").catch(() => "0")),
    cpu,
    memoryGiB: round(Number(mem) / 2 ** 20, 1),
    deno: Deno.version.deno,
    v8: Deno.version.v8,
    commit,
    taskset: HAS_TASKSET,
    fdHardLimit: FD_HARD_LIMIT,
    loaders: options.loaders,
    loadavgStart: loadavg(),
    loadavgEnd: "",
    parleyFlags: [...PARLEY_FLAGS, ...options.parleyFlags],
  };
}

function markdown(m: Machine, reports: ScenarioReport[]): string {
  const lines: string[] = [];
  const push = (...l: string[]) => lines.push(...l);
  push(
    `Run of ${m.date.slice(0, 10)} (${m.mode}${
      m.mode === "quick" ? ": indicative only, fewer clients, one short run" : ""
    }).`,
    "",
    `- Command: \`${m.command}\``,
    `- Machine: ${m.nproc} cores, ${m.cpu}, ${m.memoryGiB} GiB; Deno ${m.deno} (V8 ${m.v8}); ` +
      `commit ${m.commit}`,
    `- Method: ${m.runs} run(s) per server, medians shown; ${m.warmupS} s warm-up, ${m.windowS} s ` +
      `window; servers pinned to core ${SERVER_CORE}, load generator (${m.loaders} process(es)) ` +
      `to core ${LOADER_CORE}${m.taskset ? "" : " — taskset missing, nothing pinned"}.${
        reports.some((r) => r.pairs !== undefined)
          ? ` The SQLite comparison instead interleaves ${
            m.mode === "quick" ? SQLITE_PAIRS_QUICK : SQLITE_PAIRS
          } pairs of ${SLICE.windowMs / 1000} s windows of both servers, running side by side ` +
            `(one loaded at a time), and shows medians over windows.`
          : ""
      }`,
    `- Load average at start / end: ${m.loadavgStart} / ${m.loadavgEnd}. Other work on the ` +
      `machine shows up as spread between runs (ranges in the JSON) and in these numbers.`,
    "",
    ...warnings(m, reports).map((w) => `- ⚠ ${w}`),
    "",
    "### Targets",
    "",
    "| target | measured | status |",
    "|---|---|---|",
    ...verdicts(reports).map((v) => `| ${v.target} | ${v.measured} | ${v.status} |`),
    "",
  );
  for (const report of reports) {
    push(`### ${report.title}`, "");
    if (report.load !== undefined) {
      const base = report.load.find((s) => s.target === BASELINE.label) ?? report.load[0]!;
      push(
        "| server, clients | delivered/s | written/s (server) | sent/s | " +
          "delivered ÷ (sent × clients) | p50 ms | p99 ms " +
          "| server CPU µs/delivery | vs first row | server cores | events/frame | loader cores " +
          "| loader µs/delivery | closes |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
      );
      for (const s of report.load) {
        const closes = Object.entries(s.closes).map(([c, n]) => `${n}×${c}`).join(", ") || "0";
        push(
          `| ${s.target} | ${fmt(s.deliveredPerS)} | ${fmt(s.writtenPerS)} | ${
            fmt(s.sentPerS)
          } | ` +
            `${fmt(s.keepUp)} | ` +
            `${fmt(s.p50Ms)} | ${fmt(s.p99Ms)} | ${fmt(s.cpuUsPerDelivery)} | ` +
            `${fmt(s.cpuUsPerDelivery / base.cpuUsPerDelivery)}× | ${fmt(s.serverCores)} | ` +
            `${s.eventsPerFrame === undefined ? "1" : fmt(s.eventsPerFrame)} | ` +
            `${fmt(s.loaderCores)} | ${fmt(s.loaderUsPerDelivery)} | ${closes} |`,
        );
      }
      push("");
      for (const p of report.pairs ?? []) {
        const lite = report.load.find((s) => s.target === p.target);
        const share = lite?.storeShare;
        push(
          `${p.target} ÷ ${p.base}, events written per second (server-counted), window by window in ` +
            `interleaved pairs: ${p.ratios.map((r) => `${fmt(100 * r)}%`).join(", ")}; median ` +
            `**${fmt(100 * p.median)}%**.${
              share === undefined
                ? ""
                : ` SQLite's write batches (statements and \`COMMIT\` with its fsync) held the ` +
                  `event loop ${fmt(100 * share)}% of the time, in ${
                    fmt(lite!.storeBatchesPerS ?? NaN)
                  } commits/s (medians over windows, \`parley_store_write_*\`).`
            }`,
          "",
        );
      }
    }
    if (report.idle !== undefined) {
      const base = report.idle.find((s) => s.target === BASELINE.label);
      push(
        "| server, clients | connections | held | processes | server RSS per connection | " +
          "vs baseline | one published message reached |",
        "|---|---:|---:|---:|---:|---:|---:|",
      );
      for (const s of report.idle) {
        for (const p of s.points) {
          const b = base?.points.find((q) => q.connections === p.connections)?.bytesPerConnection;
          const processes = p.nodes === undefined
            ? "1"
            : `${p.nodes}${s.target === BASELINE.label ? "" : " (Redis cluster)"}`;
          push(
            p.skipped !== undefined
              ? `| ${s.target} | ${
                fmt(p.connections)
              } | — | — | not measured: ${p.skipped} | — | — |`
              : `| ${s.target} | ${fmt(p.connections)} | ${fmt(p.held ?? 0)} | ${processes} | ${
                fmt((p.bytesPerConnection ?? 0) / 1024)
              } KiB | ${b ? `${fmt(p.bytesPerConnection! / b)}×` : "—"} | ${
                p.reached === undefined
                  ? "—"
                  : `${fmt(p.reached)} within ${fmt((p.reachedMs ?? 0) / 1000)} s`
              } |`,
          );
        }
      }
      push("");
    }
    if (report.profiles !== undefined) {
      for (const { target, result } of report.profiles) {
        const p = result.profile!;
        const busy = p.windowMs - p.idleMs;
        const cpuMs = result.serverCores * result.windowS * 1000;
        push(
          `**${target}**: ${fmt(result.deliveredPerS)} deliveries/s under the profiler, ` +
            `${fmt(result.cpuUsPerDelivery)} µs CPU each. In the ${fmt(p.windowMs)} ms window ` +
            `the process used ${fmt(cpuMs)} ms of CPU (/proc); V8 sampled ${fmt(busy)} ms on the ` +
            `JS thread (JS, ops called from JS, GC ${fmt(p.gcMs)} ms). The other ${
              fmt(Math.max(0, cpuMs - busy))
            } ms (${
              fmt(100 * Math.max(0, cpuMs - busy) / Math.max(1, cpuMs))
            }%) ran outside JS: async op completions in the event loop (socket I/O, WebSocket ` +
            `framing), other threads and the kernel; V8 counts them as idle.${
              p.wholeProfile ? " (No samples fell in the window: whole profile shown.)" : ""
            } Self time as a share of the sampled JS time:`,
          "",
          "| self time | function | where |",
          "|---:|---|---|",
          ...p.functions.map((f) => `| ${fmt(f.percent)}% | \`${f.name}\` | ${f.where || "—"} |`),
          "",
          "By file: " + p.files.map((f) => `${f.file} ${fmt(f.percent)}%`).join(", ") + ".",
          "",
        );
      }
    }
  }
  return lines.join("\n");
}

const START_MARK = "<!-- bench:results:start -->";
const END_MARK = "<!-- bench:results:end -->";

async function writeMarkdown(section: string): Promise<void> {
  const path = join(ROOT, "docs", "BENCHMARKS.md");
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch {
    text = `# Benchmarks\n\n${START_MARK}\n${END_MARK}\n`;
  }
  const start = text.indexOf(START_MARK);
  const end = text.indexOf(END_MARK);
  const body = `${START_MARK}\n<!-- Written by bench/run.ts; edits here are overwritten. -->\n\n` +
    `${section}\n${END_MARK}`;
  text = start === -1 || end === -1
    ? `${text.trimEnd()}\n\n## Results\n\n${body}\n`
    : text.slice(0, start) + body + text.slice(end + END_MARK.length);
  await Deno.writeTextFile(path, text);
}

// -------------------------------------------------------------------------------------------

/** `--parley-flag` values, appended to every Parley command line. */
let extraParleyFlags: string[] = [];
/** `--loader-prof`: where each load generator writes its CPU profile. */
let loaderProfDir: string | undefined;

async function main(args: string[]): Promise<void> {
  const options = parseOptions(args);
  extraParleyFlags = options.parleyFlags;
  loaderProfDir = options.loaderProf;
  const m = await machine(options, args);
  const selected = scenarios(options.quick).filter((s) =>
    options.only.size === 0 || options.only.has(s.name)
  );
  console.log(
    `Parley benchmark (${m.mode}): ${selected.map((s) => s.name).join(", ")}; ${options.runs} ` +
      `run(s); taskset ${HAS_TASKSET ? "on" : "missing"}; fd limit ${FD_HARD_LIMIT}`,
  );
  const reports: ScenarioReport[] = [];
  for (const scenario of selected) {
    console.log(`\n## ${scenario.title}`);
    const report: ScenarioReport = {
      name: scenario.name,
      title: scenario.title,
      kind: scenario.kind,
      raw: [],
    };
    if (scenario.kind === "profile") {
      report.profiles = [];
      for (const target of scenario.targets) {
        const dir = await Deno.makeTempDir({ prefix: "parley_prof_" });
        try {
          const result = await measureLoad(scenario, target, 1, options, dir);
          report.raw.push(result);
          report.profiles.push({ target: target.label, result });
          const top = result.profile!.functions.slice(0, 3)
            .map((f) => `${f.name} ${f.percent}%`).join(", ");
          console.log(`  ${target.label}: ${fmt(result.deliveredPerS)}/s; top: ${top}`);
        } finally {
          await Deno.remove(dir, { recursive: true }).catch(() => {});
        }
      }
    } else {
      const interleaved = scenario.kind === "load" && scenario.pairs !== undefined;
      if (interleaved) {
        for (let i = 0; i + 1 < scenario.targets.length; i += 2) {
          const [a, b] = [scenario.targets[i]!, scenario.targets[i + 1]!];
          report.raw.push(
            ...await measureInterleaved(
              scenario,
              a,
              b,
              scenario.pairs!,
              options,
              (r) =>
                console.log(
                  `  pair ${r.run} ${r.target}: ${fmt(r.serverDelivered / r.windowS)} written/s, ` +
                    `${fmt(r.cpuUsPerDelivery)} µs CPU/delivery, server ${
                      fmt(r.serverCores)
                    } cores, ` +
                    `p99 ${fmt(r.latencyMs.p99)} ms`,
                ),
            ),
          );
        }
      }
      for (
        let run = 1;
        run <= (interleaved ? 0 : options.runs);
        run++
      ) {
        for (const target of runOrder(scenario.targets, run, false)) {
          if (scenario.kind === "load") {
            const r = await measureLoad(scenario, target, run, options);
            report.raw.push(r);
            console.log(
              `  run ${run} ${target.label}: ${fmt(r.deliveredPerS)} delivered/s, keep-up ${
                fmt(r.keepUp)
              }, p50 ${fmt(r.latencyMs.p50)} ms, p99 ${fmt(r.latencyMs.p99)} ms, ${
                fmt(r.cpuUsPerDelivery)
              } µs CPU/delivery, server ${fmt(r.serverCores)} cores${
                r.eventsPerFrame === undefined ? "" : `, ${fmt(r.eventsPerFrame)} events/frame`
              }${
                Math.abs(r.clientCountRatio - 1) > 0.02
                  ? `, clients counted ${fmt(r.clientCountRatio)}× the server's events`
                  : ""
              }, loader ${fmt(r.loaderCores)} cores (${fmt(r.loaderUsPerDelivery)} µs/delivery)${
                Object.keys(r.closes).length > 0 ? `, closes ${JSON.stringify(r.closes)}` : ""
              }`,
            );
          } else {
            const r = await measureIdle(scenario, target, run);
            report.raw.push(r);
            console.log(
              `  run ${run} ${target.label}: ` +
                r.points.map((p) =>
                  p.skipped !== undefined
                    ? `${p.connections}: skipped`
                    : `${p.held}/${p.connections} held${
                      p.nodes === undefined ? "" : ` by ${p.nodes} processes`
                    }, ${fmt((p.bytesPerConnection ?? 0) / 1024)} KiB each${
                      p.reached === undefined
                        ? ""
                        : `, one message reached ${p.reached} in ${p.reachedMs} ms`
                    }`
                ).join("; "),
            );
          }
        }
      }
      if (scenario.kind === "load") {
        report.load = summarizeLoad(report.raw as LoadResult[]);
        if (scenario.pairs !== undefined) {
          report.pairs = pairRatios(scenario.targets, report.raw as LoadResult[]);
        }
      } else report.idle = summarizeIdle(report.raw as IdleResult[]);
    }
    reports.push(report);
  }
  m.loadavgEnd = loadavg();
  const section = markdown(m, reports);
  console.log(`\n${section}`);
  if (options.write) {
    const dir = join(BENCH, "results");
    await Deno.mkdir(dir, { recursive: true });
    const file = join(dir, `${m.date.slice(0, 10)}${options.quick ? "-quick" : ""}.json`);
    const json = {
      machine: m,
      verdicts: verdicts(reports),
      scenarios: reports,
    };
    await Deno.writeTextFile(file, JSON.stringify(json, null, 2) + "\n");
    await writeMarkdown(section);
    // Keep `deno task check` clean: write the files in deno fmt's shape.
    await new Deno.Command(Deno.execPath(), {
      args: ["fmt", "--quiet", join(ROOT, "docs", "BENCHMARKS.md"), file],
      cwd: ROOT,
      stdout: "null",
    }).output();
    console.log(`Wrote ${file} and docs/BENCHMARKS.md`);
  }
}

if (import.meta.main) {
  try {
    await main(Deno.args);
  } catch (error) {
    console.error(`bench: ${error instanceof Error ? error.stack : String(error)}`);
    Deno.exit(1);
  }
}
