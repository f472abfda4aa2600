/**
 * A throwaway `redis-server` for tests: the Redis backends are tested against the real thing.
 *
 * {@link RedisServer.start} runs `redis-server` on a free loopback port with its own temporary
 * directory and no RDB snapshots, and resolves once the server answers `PING`. `stop()` kills it
 * and removes the directory; `restart()` kills it and starts it again on the same port and
 * directory, so tests can check what an append-only file kept.
 *
 * Invariants:
 * - Never a fixed port, never a shared directory: files may run in parallel.
 * - A missing `redis-server` is a test failure, never a silent skip. The message says how to
 *   install it (`.ci/run` does).
 */

/** How long to wait for a started server to answer `PING`, in milliseconds. */
const START_TIMEOUT_MS = 10_000;
/** Pause between `PING` attempts while the server starts, in milliseconds. */
const POLL_INTERVAL_MS = 20;
/** The executable; Debian's `redis-server` package installs it on the PATH. */
const REDIS_SERVER = "redis-server";

/** How to run the test server. */
export interface RedisServerOptions {
  /** Turns the append-only file on (`appendonly yes`). Default false: nothing is persisted. */
  appendonly?: boolean;
  /** `appendfsync` when `appendonly` is on. Default `always`: an acked write is on disk. */
  appendfsync?: "always" | "everysec" | "no";
}

/** A running `redis-server` owned by one test file. */
export class RedisServer {
  /** The loopback port it listens on. */
  readonly port: number;
  /** Its working directory (append-only file, log); removed by `stop()`. */
  readonly dir: string;
  readonly #options: RedisServerOptions;
  #child: Deno.ChildProcess | undefined;

  private constructor(port: number, dir: string, options: RedisServerOptions) {
    this.port = port;
    this.dir = dir;
    this.#options = options;
  }

  /** Starts a server on a free loopback port and waits until it answers `PING`. */
  static async start(options: RedisServerOptions = {}): Promise<RedisServer> {
    const dir = await Deno.makeTempDir({ prefix: "parley-redis-" });
    const server = new RedisServer(freePort(), dir, options);
    try {
      await server.#launch();
    } catch (error) {
      await Deno.remove(dir, { recursive: true }).catch(() => {});
      throw error;
    }
    return server;
  }

  /** The `redis://` URL of the server. */
  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  /** Kills the server (SIGKILL by default: a crash) and starts it again on the same port and
   * directory. With `appendonly`, the data acknowledged before the kill is back. */
  async restart(signal: "SIGKILL" | "SIGTERM" = "SIGKILL"): Promise<void> {
    await this.#kill(signal);
    await this.#launch();
  }

  /** Kills the server and removes its directory; idempotent. */
  async stop(): Promise<void> {
    await this.#kill("SIGKILL");
    await Deno.remove(this.dir, { recursive: true }).catch(() => {});
  }

  /** Kills the process without starting it again, e.g. to test an outage; `restart` brings it
   * back. */
  async kill(signal: "SIGKILL" | "SIGTERM" = "SIGKILL"): Promise<void> {
    await this.#kill(signal);
  }

  async #launch(): Promise<void> {
    const appendonly = this.#options.appendonly ?? false;
    const args = [
      "--port",
      String(this.port),
      "--bind",
      "127.0.0.1",
      "--dir",
      this.dir,
      "--save",
      "",
      "--appendonly",
      appendonly ? "yes" : "no",
      "--appendfsync",
      this.#options.appendfsync ?? "always",
      "--logfile",
      "redis.log",
      "--daemonize",
      "no",
    ];
    let child: Deno.ChildProcess;
    try {
      child = new Deno.Command(REDIS_SERVER, {
        args,
        stdin: "null",
        stdout: "null",
        stderr: "null",
      }).spawn();
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) throw new Error(missingMessage());
      throw error;
    }
    this.#child = child;
    const deadline = Date.now() + START_TIMEOUT_MS;
    let exited = false;
    child.status.then(() => exited = true);
    while (!(await answersPing(this.port))) {
      if (exited || Date.now() > deadline) {
        await this.#kill("SIGKILL");
        const log = await Deno.readTextFile(`${this.dir}/redis.log`).catch(() => "");
        throw new Error(
          `Cannot start redis-server on port ${this.port}: ${
            exited ? "it exited" : `no PING answer within ${START_TIMEOUT_MS} ms`
          }\n${log.slice(-2000)}`,
        );
      }
      await new Promise((resolve) => setTimeout(resolve, POLL_INTERVAL_MS));
    }
  }

  async #kill(signal: "SIGKILL" | "SIGTERM"): Promise<void> {
    const child = this.#child;
    if (child === undefined) return;
    this.#child = undefined;
    try {
      child.kill(signal);
    } catch {
      // Already exited.
    }
    await child.status;
  }
}

/** A loopback port that was free a moment ago: bind port 0, read it, release it. */
export function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  listener.close();
  return port;
}

/** True when a Redis server on `port` answers `PING` with `+PONG`. */
async function answersPing(port: number): Promise<boolean> {
  let conn: Deno.TcpConn | undefined;
  try {
    conn = await Deno.connect({ hostname: "127.0.0.1", port });
    await conn.write(new TextEncoder().encode("PING\r\n"));
    const buffer = new Uint8Array(64);
    const read = await conn.read(buffer);
    return read !== null && new TextDecoder().decode(buffer.subarray(0, read)).startsWith("+PONG");
  } catch {
    return false;
  } finally {
    conn?.close();
  }
}

function missingMessage(): string {
  const install = "install it with `apt-get install -y redis-server` (`.ci/run` does this)";
  return Deno.env.get("CI") !== undefined
    ? `Cannot start redis-server: it is not installed on this CI runner; ${install}`
    : `Cannot start redis-server: it is not installed; ${install}. ` +
      "The Redis tests never skip silently.";
}
