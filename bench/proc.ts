/**
 * The processes a benchmark runs and what it reads about them and the host: servers under test
 * ({@link startServer}), load generators ({@link LoaderProc}, driving `bench/loader.ts`), each a
 * {@link Proc} pinned to its core with `taskset` when the host has it; CPU time, RSS and core
 * counters from /proc; and the description of the machine recorded with every result
 * ({@link machine}). Every process started here is stopped by its owner's `finally`.
 */
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { LoaderEvent, LoaderSpec } from "./loader.ts";
import type { Options, Target } from "./scenarios.ts";
import { round } from "./stats.ts";

/** The repository's root, where servers run, and the bench folder. */
export const ROOT = dirname(dirname(fileURLToPath(import.meta.url)));
export const BENCH = join(ROOT, "bench");

/** Core for the server under test, and for the load generator. */
export const SERVER_CORE = 0;
export const LOADER_CORE = 1;
/** Characters of content per message: a typical chat line. */
export const CONTENT_CHARS = 80;
/** Handshakes in flight per loader. */
export const CONCURRENCY = 64;
/** How often clients that only count what they receive are read, in milliseconds. */
export const BULK_INTERVAL_MS = 20;
/** Most idle clients one loader process holds (each is a file descriptor). */
export const IDLE_CLIENTS_PER_LOADER = 15_000;
/** Descriptors a server needs besides its connections (listener, epoll, files, stdio). */
export const FD_MARGIN = 500;
/** Longest wait for a server banner, loaders to connect, and a loader report, in ms. */
const SERVER_START_MS = 30_000;
export const CONNECT_MS = 180_000;
export const REPORT_MS = 30_000;

/** Server flags that lift limits a benchmark would otherwise hit. */
export const PARLEY_FLAGS = [
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

/** Clock ticks per second of /proc's CPU times; whether `taskset` works; the hard fd limit. */
const CLK_TCK = Number(await shell("getconf CLK_TCK").catch(() => "100")) || 100;
export const HAS_TASKSET = await shell("taskset -c 0 true").then(() => true, () => false);
export const FD_HARD_LIMIT = Number(await shell("ulimit -Hn").catch(() => "1024")) || 1024;

/** Runs `script` with `sh -c` and returns its trimmed stdout; throws when it fails. */
export async function shell(script: string): Promise<string> {
  const out = await new Deno.Command("sh", { args: ["-c", script], stderr: "null" }).output();
  if (!out.success) throw new Error(`Command failed: ${script}`);
  return new TextDecoder().decode(out.stdout).trim();
}

/** CPU seconds (user + system) a process has used so far, or NaN once it is gone. */
export function cpuSeconds(pid: number): number {
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
export function rssBytes(pid: number): number {
  try {
    const status = Deno.readTextFileSync(`/proc/${pid}/status`);
    return Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1] ?? NaN) * 1024;
  } catch {
    return NaN;
  }
}

/** Busy and total jiffies of one core so far, from /proc/stat. */
export function coreTimes(core: number): { busy: number; total: number } {
  const line = Deno.readTextFileSync("/proc/stat").split("\n")
    .find((l) => l.startsWith(`cpu${core} `));
  const fields = (line ?? "").trim().split(/\s+/).slice(1).map(Number);
  const total = fields.reduce((a, b) => a + b, 0);
  // idle and iowait are the 4th and 5th fields.
  return { busy: total - (fields[3] ?? 0) - (fields[4] ?? 0), total };
}

/** Seconds since boot from /proc/uptime: the clock of V8's profile timestamps on Linux. */
export function uptime(): number {
  return Number(Deno.readTextFileSync("/proc/uptime").split(" ")[0]);
}

/** The 1, 5 and 15 minute load averages, as /proc/loadavg writes them. */
export function loadavg(): string {
  return Deno.readTextFileSync("/proc/loadavg").split(" ").slice(0, 3).join(" ");
}

/** Resolves after `ms` milliseconds. */
export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** A child process pinned to a core, with its stdout split into lines. */
export class Proc {
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

/** A running server under test: its process, port and scratch directory. */
export interface Server {
  proc: Proc;
  port: number;
  dir: string;
}

/** How to start one server under test, besides its {@link Target}. */
export interface ServerOptions {
  /** `--parley-flag` values, for experiments: appended to every Parley command line. */
  parleyFlags: readonly string[];
  /** Where the server writes a `--cpu-prof` profile, when set. */
  profileDir?: string | undefined;
  /** Flags for this one server, after all the others (a cluster node's). */
  extraFlags?: readonly string[];
  /** Names (without `--`) of {@link PARLEY_FLAGS} to leave out, so the server's defaults apply. */
  serverDefaults?: readonly string[];
}

/** Starts a server for `target` on a free port and waits for its listen banner. */
export async function startServer(target: Target, options: ServerOptions): Promise<Server> {
  const { parleyFlags, profileDir, extraFlags = [], serverDefaults = [] } = options;
  const harnessFlags = PARLEY_FLAGS.filter((flag) =>
    !serverDefaults.includes(flag.slice(2, flag.indexOf("=")))
  );
  const dir = await Deno.makeTempDir({ prefix: "parley_bench_" });
  const deno = Deno.execPath();
  const prof = profileDir === undefined ? [] : ["--cpu-prof", `--cpu-prof-dir=${profileDir}`];
  const command = target.server === "baseline"
    ? [deno, "run", "-A", ...prof, join(BENCH, "baseline_bare.ts"), "0"]
    : target.server === "bun"
    ? ["bun", "run", join(BENCH, "baseline_bun.ts"), "0"]
    : [
      deno,
      "run",
      "-A",
      ...prof,
      join(ROOT, "main.ts"),
      ...harnessFlags,
      `--store=${target.store === "sqlite" ? `sqlite:${join(dir, "parley.db")}` : "memory:"}`,
      // After the harness's own flags, so an experiment's flag (even --store) wins.
      ...parleyFlags,
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

/** Stops a server and removes its scratch directory. */
export async function stopServer(server: Server): Promise<void> {
  await server.proc.stop();
  await Deno.remove(server.dir, { recursive: true }).catch(() => {});
}

/**
 * Which load generator drives the clients: `deno` is `bench/loader.ts` (raw sockets on epoll,
 * tuned to cost little); `go` is `bench/go/main.go` (gorilla/websocket, one goroutine per socket),
 * written apart from it as an independent check of what the first one counts.
 */
export type Generator = "deno" | "go";

/** Where the Go load generator's source is, and the environment that builds it offline from
 * Debian's packages (golang-go, golang-github-gorilla-websocket-dev) in GOPATH mode. */
const GO_SOURCE = join(BENCH, "go");
const GO_ENV = { GOPATH: "/usr/share/gocode", GO111MODULE: "off", GOFLAGS: "" };

let goBinary: Promise<string> | undefined;

/**
 * Builds the Go load generator once per process into a temporary directory and returns its path.
 * Throws with the build's output, or with the packages to install when `go` is missing.
 */
export function buildGoLoader(): Promise<string> {
  goBinary ??= (async () => {
    const dir = await Deno.makeTempDir({ prefix: "parley_go_loader_" });
    globalThis.addEventListener("unload", () => Deno.removeSync(dir, { recursive: true }));
    const out = join(dir, "loader");
    let result: Deno.CommandOutput;
    try {
      result = await new Deno.Command("go", {
        args: ["build", "-o", out, "."],
        cwd: GO_SOURCE,
        env: GO_ENV,
        stdout: "piped",
        stderr: "piped",
      }).output();
    } catch (error) {
      if (!(error instanceof Deno.errors.NotFound)) throw error;
      throw new Error(
        "Cannot build the Go load generator: go is missing " +
          "(apt-get install golang-go golang-github-gorilla-websocket-dev)",
      );
    }
    if (!result.success) {
      const text = new TextDecoder().decode(result.stderr).trim();
      throw new Error(`Cannot build the Go load generator: ${text}`);
    }
    return out;
  })();
  // A failed build is not remembered: the next caller tries again (say, after an install).
  goBinary.catch(() => goBinary = undefined);
  return goBinary;
}

/** A load generator process and the line protocol that drives it (see `bench/loader.ts`). */
export class LoaderProc {
  readonly proc: Proc;
  /**
   * Starts a loader for `spec`: `bench/loader.ts`, or with `goBinary` (from
   * {@link buildGoLoader}) the Go one. With `profileDir`, the Deno loader writes a `--cpu-prof`
   * profile there.
   */
  constructor(spec: LoaderSpec, profileDir: string | undefined, goBinary?: string) {
    const nofile = Math.min(FD_HARD_LIMIT, spec.clients + FD_MARGIN + IDLE_CLIENTS_PER_LOADER);
    this.proc = new Proc(
      `loader ${spec.id}`,
      goBinary !== undefined ? [goBinary, JSON.stringify(spec)] : [
        Deno.execPath(),
        "run",
        ...(profileDir === undefined ? [] : ["--cpu-prof", `--cpu-prof-dir=${profileDir}`]),
        "-A",
        join(BENCH, "loader.ts"),
        JSON.stringify(spec),
      ],
      LOADER_CORE,
      nofile,
    );
  }

  /** The loader's next event of kind `ev`, within `ms`; others are dropped, errors logged. */
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

  /** Sends `cmd` (with `extra` fields) without waiting for an answer. */
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
export function shares(total: number, parts: number): number[] {
  return Array.from(
    { length: parts },
    (_, i) => Math.floor(total / parts) + (i < total % parts ? 1 : 0),
  );
}

/** The machine and the run's settings, recorded with every result. */
export interface Machine {
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
  generator: Options["generator"];
  loadavgStart: string;
  loadavgEnd: string;
  parleyFlags: string[];
}

/** Describes this machine and the run `options` and `args` ask for; `loadavgEnd` is left empty. */
export async function machine(options: Options, args: string[]): Promise<Machine> {
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
    generator: options.generator,
    loadavgStart: loadavg(),
    loadavgEnd: "",
    parleyFlags: [...PARLEY_FLAGS, ...options.parleyFlags],
  };
}
