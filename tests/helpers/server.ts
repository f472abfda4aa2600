/**
 * Helpers for tests that run a real server: start Parley on 127.0.0.1 port 0, connect real
 * WebSockets that record every event, and speak raw HTTP/1.1 over TCP where a WebSocket client
 * cannot (custom headers, malformed upgrades, peers that never read).
 *
 * Every helper cleans up after itself so tests can run with the resource sanitizers on.
 */
import { type Config, parseConfig } from "../../config/mod.ts";
import { type Parley, type StartOptions, startParley } from "../../main.ts";
import { startPermissions } from "../../deploy/compile.ts";

/** A configuration for tests: loopback, port 0, memory store, given flags on top. */
export function testConfig(args: string[] = [], env: Record<string, string> = {}): Config {
  const result = parseConfig(
    ["--host", "127.0.0.1", "--port", "0", "--store", "memory:", "--idle-timeout", "0", ...args],
    env,
  );
  if (result.kind !== "run") throw new Error(`Bad test config: ${JSON.stringify(result)}`);
  return result.config;
}

/** A running test server that shuts down when disposed. */
export interface TestServer extends Parley, AsyncDisposable {
  /** The WebSocket URL, with optional query parameters. */
  ws(query?: Record<string, string>): string;
}

/** Starts a server for one test; use with `await using`. */
export async function startTestServer(
  args: string[] = [],
  options: StartOptions & { config?: Config } = {},
): Promise<TestServer> {
  const parley = await startParley(options.config ?? testConfig(args), options);
  const ws = (query: Record<string, string> = {}) => {
    const url = new URL("ws", parley.url);
    url.protocol = parley.url.protocol === "https:" ? "wss:" : "ws:";
    for (const [key, value] of Object.entries(query)) url.searchParams.set(key, value);
    return url.href;
  };
  return Object.assign(parley, {
    ws,
    [Symbol.asyncDispose]: async () => {
      await parley.shutdown();
      await parley.finished;
    },
  });
}

/** Deno's WebSocket constructor with its options object; spelled out because the DOM typings
 * that browser tests bring into the same type-check know only the `protocols` form. */
type DenoWebSocketConstructor = new (
  url: string,
  options: { protocols?: string[]; headers?: HeadersInit; client?: Deno.HttpClient },
) => WebSocket;

/** Decodes a byte stream to text chunks (typed the same under Deno's and the DOM's libraries). */
export async function* textChunks(stream: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  const decoder = new TextDecoder();
  for await (const bytes of stream) yield decoder.decode(bytes, { stream: true });
  const tail = decoder.decode();
  if (tail !== "") yield tail;
}

/** One protocol event as received (batches unpacked). */
export type Event = Record<string, unknown> & { type?: string };

/** A real WebSocket client that records events and can wait for them. */
export class TestSocket implements AsyncDisposable {
  readonly socket: WebSocket;
  /** Every event received, in order, batches unpacked. */
  readonly events: Event[] = [];
  /** Raw text frames received. */
  readonly frames: string[] = [];
  /** Resolves with the close event. */
  readonly closed: Promise<CloseEvent>;
  #waiters: (() => void)[] = [];

  private constructor(socket: WebSocket) {
    this.socket = socket;
    this.closed = new Promise((resolve) => {
      socket.addEventListener("close", (event) => {
        resolve(event);
        this.#wake();
      });
    });
    socket.addEventListener("message", (event) => {
      const text = String(event.data);
      this.frames.push(text);
      const value = JSON.parse(text);
      for (const item of Array.isArray(value) ? value : [value]) this.events.push(item);
      this.#wake();
    });
  }

  /** Connects and waits for the open event (and, by default, the welcome frame). */
  static async open(
    url: string,
    options: {
      protocols?: string | string[];
      welcome?: boolean;
      /** Extra handshake headers, such as `authorization`. */
      headers?: HeadersInit;
      /** An HTTP client with its own TLS roots, for `wss://` to a self-signed server. */
      client?: Deno.HttpClient;
    } = {},
  ): Promise<TestSocket> {
    const { protocols, headers, client: httpClient } = options;
    const socket = headers === undefined && httpClient === undefined
      ? new WebSocket(url, protocols)
      : new (WebSocket as unknown as DenoWebSocketConstructor)(url, {
        ...(protocols === undefined ? {} : { protocols: [protocols].flat() }),
        ...(headers === undefined ? {} : { headers }),
        ...(httpClient === undefined ? {} : { client: httpClient }),
      });
    const client = new TestSocket(socket);
    await new Promise<void>((resolve, reject) => {
      socket.addEventListener("open", () => resolve(), { once: true });
      socket.addEventListener("error", () => reject(new Error(`Cannot connect to ${url}`)), {
        once: true,
      });
    });
    if (options.welcome !== false) await client.next("welcome");
    return client;
  }

  /** Sends a JSON value (or a raw string) as a text frame. */
  send(value: unknown): void {
    this.socket.send(typeof value === "string" ? value : JSON.stringify(value));
  }

  /** Waits until `check` holds for the events so far; fails after `ms`. */
  async until(check: (events: Event[]) => boolean, ms = 5_000, what = "condition"): Promise<void> {
    const deadline = Date.now() + ms;
    while (!check(this.events)) {
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new Error(
          `Timed out waiting for ${what}; last events: ${JSON.stringify(this.events.slice(-5))}`,
        );
      }
      let timer: ReturnType<typeof setTimeout> | undefined;
      await new Promise<void>((resolve) => {
        this.#waiters.push(resolve);
        timer = setTimeout(resolve, left);
      });
      clearTimeout(timer);
    }
  }

  /** Waits for the first not yet taken event of a type (and matching `match`), and takes it. */
  async next(type: string, match: (event: Event) => boolean = () => true, ms = 5_000) {
    let found: Event | undefined;
    await this.until(
      (events) => {
        found = events.find((e) => e.type === type && !taken.has(e) && match(e));
        return found !== undefined;
      },
      ms,
      `a "${type}" event`,
    );
    taken.add(found!);
    return found!;
  }

  /** Events of one type received so far. */
  of(type: string): Event[] {
    return this.events.filter((event) => event.type === type);
  }

  /** Closes (if open) and waits for the close event. */
  async close(code = 1000): Promise<CloseEvent> {
    if (this.socket.readyState < 2) this.socket.close(code);
    return await this.closed;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  #wake(): void {
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const wake of waiters) wake();
  }
}

const taken = new WeakSet<Event>();

/** A raw HTTP/1.1 response head. */
export interface RawResponse {
  status: number;
  headers: Headers;
  body: string;
  /** Bytes read past the head: the body, or the first WebSocket frames after a 101. */
  rest: Uint8Array;
}

/** Sends one raw HTTP request (its head lines) over TCP and reads the response. */
export async function rawRequest(url: URL, lines: string[]): Promise<RawResponse> {
  const conn = await Deno.connect({ hostname: url.hostname, port: Number(url.port) });
  try {
    await writeAll(conn, new TextEncoder().encode(lines.join("\r\n") + "\r\n\r\n"));
    return await readHead(conn);
  } finally {
    conn.close();
  }
}

/**
 * Opens a WebSocket over raw TCP: the handshake only; the caller owns the connection. A refusal
 * (any status but 101) comes with its body read, so its JSON can be checked.
 */
export async function rawUpgrade(
  url: URL,
  extraHeaders: string[] = [],
): Promise<{ conn: Deno.TcpConn; response: RawResponse }> {
  const conn = await Deno.connect({ hostname: url.hostname, port: Number(url.port) });
  await writeAll(conn, upgradeRequest(url, extraHeaders));
  const response = await readHead(conn, (status) => status !== 101);
  return { conn, response };
}

/** The bytes of a WebSocket upgrade request for `url`, with extra header lines. */
export function upgradeRequest(url: URL, extraHeaders: string[] = []): Uint8Array {
  const key = btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(16))));
  const request = [
    `GET ${url.pathname}${url.search} HTTP/1.1`,
    `Host: ${url.host}`,
    "Upgrade: websocket",
    "Connection: Upgrade",
    `Sec-WebSocket-Key: ${key}`,
    "Sec-WebSocket-Version: 13",
    ...extraHeaders,
  ];
  return new TextEncoder().encode(request.join("\r\n") + "\r\n\r\n");
}

/** Encodes one masked client text frame (RFC 6455), optionally as a fragment. */
export function clientFrame(text: string | Uint8Array, opcode = 1, fin = true): Uint8Array {
  const payload = typeof text === "string" ? new TextEncoder().encode(text) : text;
  const mask = crypto.getRandomValues(new Uint8Array(4));
  const length = payload.length;
  const header = length < 126 ? 2 : length < 65536 ? 4 : 10;
  const frame = new Uint8Array(header + 4 + length);
  frame[0] = (fin ? 0x80 : 0) | opcode;
  if (length < 126) frame[1] = 0x80 | length;
  else if (length < 65536) {
    frame[1] = 0x80 | 126;
    new DataView(frame.buffer).setUint16(2, length);
  } else {
    frame[1] = 0x80 | 127;
    new DataView(frame.buffer).setBigUint64(2, BigInt(length));
  }
  frame.set(mask, header);
  for (let i = 0; i < length; i++) frame[header + 4 + i] = payload[i]! ^ mask[i % 4]!;
  return frame;
}

/** Writes every byte. */
export async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  let written = 0;
  while (written < bytes.length) written += await conn.write(bytes.subarray(written));
}

async function readHead(
  conn: Deno.Conn,
  bodyFor: (status: number) => boolean = () => true,
): Promise<RawResponse> {
  const chunk = new Uint8Array(64 * 1024);
  let bytes = new Uint8Array(0);
  let end = -1;
  while (end < 0) {
    const n = await conn.read(chunk);
    if (n === null) break;
    const next = new Uint8Array(bytes.length + n);
    next.set(bytes);
    next.set(chunk.subarray(0, n), bytes.length);
    bytes = next;
    for (let i = Math.max(0, bytes.length - n - 3); i + 3 < bytes.length; i++) {
      if (bytes[i] === 13 && bytes[i + 1] === 10 && bytes[i + 2] === 13 && bytes[i + 3] === 10) {
        end = i;
        break;
      }
    }
  }
  const head = new TextDecoder().decode(end < 0 ? bytes : bytes.subarray(0, end));
  let rest = end < 0 ? new Uint8Array(0) : bytes.slice(end + 4);
  const [statusLine = "", ...headerLines] = head.split("\r\n");
  const headers = new Headers();
  for (const line of headerLines) {
    const colon = line.indexOf(":");
    if (colon > 0) headers.append(line.slice(0, colon).trim(), line.slice(colon + 1).trim());
  }
  const status = Number(statusLine.split(" ")[1] ?? 0);
  const readBody = bodyFor(status);
  const length = Number(headers.get("content-length") ?? "0");
  while (readBody && rest.length < length) {
    const n = await conn.read(chunk);
    if (n === null) break;
    const next = new Uint8Array(rest.length + n);
    next.set(rest);
    next.set(chunk.subarray(0, n), rest.length);
    rest = next;
  }
  return {
    status,
    headers,
    body: readBody ? new TextDecoder().decode(rest) : "",
    rest,
  };
}

/** Waits until `check` holds, polling; fails after `ms`. For state outside any socket. */
export async function eventually(check: () => boolean, ms = 5_000, what = "condition") {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`Timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** A Parley server running as its own process. */
export interface ServerProcess extends AsyncDisposable {
  readonly child: Deno.ChildProcess;
  readonly url: URL;
  /** `ws://…/ws` with optional query parameters. */
  ws(query?: Record<string, string>): string;
  /** Everything the process wrote to stdout and stderr so far. */
  output(): string;
  /** Resident set size of the process in bytes, from /proc. */
  rss(): Promise<number>;
  /** Sends a signal and waits for the exit status. */
  stop(signal?: Deno.Signal): Promise<Deno.CommandStatus>;
}

/**
 * The permissions of `deno task start`, as `--allow-*` flags: the set its `-P=NAME` loads from
 * deno.json, written out as deploy/compile.ts bakes it into the binary. Process tests start the
 * server with these from a temporary working directory, where a relative path such as `.` means
 * that directory just as it means the project directory under `deno task start` (which runs
 * there); `-P` itself would resolve it against deno.json. tests/permissions_test.ts checks that
 * these flags grant what the set grants.
 */
export const START_PERMISSIONS: readonly string[] = startPermissions(
  JSON.parse(await Deno.readTextFile(new URL("../../deno.json", import.meta.url))),
);

/**
 * Starts `main.ts` in a child process on 127.0.0.1 and a free port (or `options.port`, to
 * restart a server where its clients expect it), with the same permissions as
 * `deno task start`, and waits for its listen banner.
 */
export async function spawnServer(
  args: string[] = [],
  options: {
    env?: Record<string, string>;
    cwd?: string;
    permissions?: readonly string[];
    port?: number;
  } = {},
): Promise<ServerProcess> {
  const main = new URL("../../main.ts", import.meta.url).pathname;
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      ...(options.permissions ?? START_PERMISSIONS),
      main,
      "--host",
      "127.0.0.1",
      "--port",
      String(options.port ?? 0),
      "--log-format",
      "json",
      ...args,
    ],
    env: { NO_COLOR: "1", ...options.env },
    ...(options.cwd === undefined ? {} : { cwd: options.cwd }),
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let output = "";
  const collect = async (stream: ReadableStream<Uint8Array>) => {
    for await (const chunk of textChunks(stream)) output += chunk;
  };
  const collecting = Promise.all([collect(child.stdout), collect(child.stderr)]);
  const deadline = Date.now() + 20_000;
  let url: URL | undefined;
  while (url === undefined) {
    const match = /listening on (https?:\/\/[^\s/]+\/)/.exec(output);
    if (match !== null) url = new URL(match[1]!);
    else if (Date.now() > deadline) {
      child.kill("SIGKILL");
      await child.status;
      await collecting;
      throw new Error(`Server did not start:\n${output}`);
    } else {
      const exited = await Promise.race([
        child.status.then(() => true),
        new Promise<false>((resolve) => setTimeout(() => resolve(false), 20)),
      ]);
      if (exited) {
        await collecting;
        throw new Error(`Server exited before listening:\n${output}`);
      }
    }
  }
  let status: Deno.CommandStatus | undefined;
  const stop = async (signal: Deno.Signal = "SIGTERM") => {
    if (status === undefined) {
      try {
        child.kill(signal);
      } catch {
        // already gone
      }
      status = await child.status;
      await collecting;
    }
    return status;
  };
  const serverUrl = url;
  return {
    child,
    url: serverUrl,
    ws(query = {}) {
      const ws = new URL("ws", serverUrl);
      ws.protocol = serverUrl.protocol === "https:" ? "wss:" : "ws:";
      for (const [key, value] of Object.entries(query)) ws.searchParams.set(key, value);
      return ws.href;
    },
    output: () => output,
    async rss() {
      const status = await Deno.readTextFile(`/proc/${child.pid}/status`);
      const kib = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? "0");
      return kib * 1024;
    },
    stop,
    [Symbol.asyncDispose]: async () => {
      await stop("SIGKILL");
    },
  };
}

/** A frame read from the server side of a raw connection. */
export interface ServerFrame {
  opcode: number;
  payload: Uint8Array;
}

/** Reads unmasked server frames from a raw connection until `stop` says so or it ends. */
export async function readServerFrames(
  conn: Deno.Conn,
  stop: (frame: ServerFrame) => boolean,
  initial: Uint8Array = new Uint8Array(0),
): Promise<ServerFrame[]> {
  const frames: ServerFrame[] = [];
  let buffer = initial;
  const chunk = new Uint8Array(256 * 1024);
  while (true) {
    // Parse whole frames from the buffer.
    while (buffer.length >= 2) {
      const opcode = buffer[0]! & 0x0f;
      let length = buffer[1]! & 0x7f;
      let offset = 2;
      if (length === 126) {
        if (buffer.length < 4) break;
        length = new DataView(buffer.buffer, buffer.byteOffset).getUint16(2);
        offset = 4;
      } else if (length === 127) {
        if (buffer.length < 10) break;
        length = Number(new DataView(buffer.buffer, buffer.byteOffset).getBigUint64(2));
        offset = 10;
      }
      if (buffer.length < offset + length) break;
      const frame = { opcode, payload: buffer.slice(offset, offset + length) };
      buffer = buffer.slice(offset + length);
      frames.push(frame);
      if (stop(frame)) return frames;
    }
    const n = await conn.read(chunk);
    if (n === null) return frames;
    const next = new Uint8Array(buffer.length + n);
    next.set(buffer);
    next.set(chunk.subarray(0, n), buffer.length);
    buffer = next;
  }
}

/** The close code carried by a close frame's payload. */
export function closeCode(frame: ServerFrame): number {
  return frame.payload.length >= 2 ? (frame.payload[0]! << 8) | frame.payload[1]! : 1005;
}
