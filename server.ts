/**
 * HTTP: the route table and the WebSocket upgrade; the other routes' answers are `Api`'s
 * (delivery/api.ts).
 *
 * The upgrade handler does every check that can fail (method, headers, origin, limits, identity,
 * subprotocol) before it calls `Deno.upgradeWebSocket`, and between that call and returning its
 * response runs only code that cannot throw: Deno's listener dies if anything throws there, and
 * reading `req.headers` after the upgrade throws.
 *
 * Owned state: the count of open connections in total and per remote address, and, in
 * {@link OpeningWatch}, the deadlines of upgraded sockets that have not opened yet. Everything else
 * belongs to the Hub (registry), the Clients (sockets) and the store and broker.
 */
import { getLogger } from "@logtape/logtape";
import { tokenFromRequest, type Verifier } from "./auth/mod.ts";
import type { Broker } from "./backends/broker/mod.ts";
import type { Chat } from "./chat.ts";
import {
  Client,
  type ClientHandler,
  type ClientLimits,
  type FlushObserver,
  type OpeningDeadlines,
} from "./client.ts";
import type { FlushScheduler } from "./delivery/flush.ts";
import type { Hub } from "./hub.ts";
import { Api, error, json, type MetricsPage } from "./delivery/api.ts";
import { MAX_USER_CHARS, SUBPROTOCOL, validUserName } from "./message.ts";
import type { Presence } from "./backends/presence/mod.ts";
import type { MessageStore } from "./backends/store/mod.ts";
import { STATIC_FILES } from "./static/mod.ts";

export type { MetricsPage };

/** Seconds a client is told to wait after a 503/429 for connection limits. */
export const RETRY_AFTER_S = 5;
/**
 * Letters of a guest name after `guest-`: digits and lower-case letters without 0, 1, l and o,
 * which read alike. 32 of them, so one random byte masked to 5 bits picks one without bias.
 */
const GUEST_ALPHABET = "23456789abcdefghijkmnpqrstuvwxyz";
/**
 * Random characters in a guest name: 12 × 5 = 60 bits. Names are drawn independently on every
 * node and after every restart, and a guest's DMs stay under its name, so what matters is any
 * two guests ever sharing one: among a million guests the chance is about n² / 2^61 = 4 × 10⁻⁷.
 */
const GUEST_NAME_CHARS = 12;
/** How long an upgraded socket may take to open before the client gives up on it, in ms. Deno
 * sends no event at all for a socket whose 101 response could not be written (the peer went
 * away first), so without this its connection slot would never be released. */
export const OPEN_WATCHDOG_MS = 10_000;

const log = getLogger(["parley", "http"]);

/** Settings of the HTTP layer, from the server configuration. */
export interface ServerOptions {
  maxFrameBytes: number;
  outboxMessages: number;
  outboxBytes: number;
  /** Seconds without a pong before Deno closes the socket; 0 disables. */
  idleTimeout: number;
  /** Origins allowed besides the server's own host; `*` allows any. */
  allowedOrigins: readonly string[];
  maxConnections: number;
  maxConnectionsPerIp: number;
  /** Enables `POST /api/rooms/{room}/messages`. */
  apiKey?: string;
  maxContentChars: number;
}

/** Everything the handler talks to. */
export interface ServerDeps {
  hub: Hub;
  chat: Chat;
  store: MessageStore;
  broker: Broker;
  presence: Presence;
  scheduler: FlushScheduler;
  options: ServerOptions;
  verifier?: Verifier;
  metrics?: MetricsPage;
  /** Observes every client's write path (metrics). */
  flushObserver?: FlushObserver;
}

type Handler = (
  req: Request,
  url: URL,
  match: URLPatternResult,
  info: Deno.ServeHandlerInfo,
) => Response | Promise<Response>;

interface Route {
  method: string;
  pattern: URLPattern;
  handler: Handler;
}

/** The request handler of a Parley server, with its connection counters. */
export class ParleyHttp {
  readonly #deps: ServerDeps;
  readonly #routes: Route[];
  readonly #perIp = new Map<string, number>();
  readonly #handler: ClientHandler;
  /** Shared by every client: one object, not one per connection. */
  readonly #clientLimits: ClientLimits;
  #connections = 0;
  #draining = false;

  /** Builds the route table. */
  constructor(deps: ServerDeps) {
    this.#deps = deps;
    this.#clientLimits = {
      maxFrameBytes: deps.options.maxFrameBytes,
      outboxMessages: deps.options.outboxMessages,
      outboxBytes: deps.options.outboxBytes,
      scheduler: deps.scheduler,
      opening: new OpeningWatch(),
      ...(deps.flushObserver === undefined ? {} : { observer: deps.flushObserver }),
    };
    const api = new Api(deps, () => this.#draining);
    const chat = deps.chat;
    // Wrap the chat handler so connection counts are released exactly once per client.
    this.#handler = {
      opened: (client) => chat.opened(client),
      received: (client, text) => chat.received(client, text),
      refused: (client, reason) => chat.refused(client, reason),
      closed: (client, code, reason) => {
        this.#release(client.remote);
        chat.closed(client, code, reason);
      },
    };
    const route = (method: string, pathname: string, handler: Handler): Route => ({
      method,
      pattern: new URLPattern({ pathname }),
      handler,
    });
    this.#routes = [
      route("GET", "/ws", (req, url, _m, info) => this.#upgrade(req, url, info)),
      route("GET", "/healthz", () => json(200, { status: "ok" })),
      route("GET", "/readyz", () => api.ready()),
      route("GET", "/metrics", () => api.metrics()),
      route("GET", "/api/rooms/:room/messages", (req, url, m) => api.history(req, url, m)),
      route("GET", "/api/rooms/:room/presence", (req, _u, m) => api.presence(req, m)),
      route("POST", "/api/rooms/:room/messages", (req, _u, m) => api.post(req, m)),
      route("GET", "/", () => api.file("index.html")),
      route(
        "GET",
        // Every file static/mod.ts lists but the page itself, which is served at "/" only.
        `/:file(${
          Object.keys(STATIC_FILES).filter((name) => name !== "index.html")
            .map((name) => name.replaceAll(".", "\\.")).join("|")
        })`,
        (_r, _u, m) => api.file(m.pathname.groups.file!),
      ),
    ];
  }

  /** Open WebSocket connections counted by this handler. */
  get connections(): number {
    return this.#connections;
  }

  /** Refuses new connections from now on (shutdown). */
  drain(): void {
    this.#draining = true;
  }

  /** Handles one request; never throws. */
  handle = async (req: Request, info: Deno.ServeHandlerInfo): Promise<Response> => {
    try {
      const url = new URL(req.url);
      let allowed: string[] = [];
      for (const route of this.#routes) {
        const match = route.pattern.exec(url);
        if (match === null) continue;
        if (route.method !== req.method && !(route.method === "GET" && req.method === "HEAD")) {
          allowed.push(route.method);
          continue;
        }
        return await route.handler(req, url, match, info);
      }
      allowed = [...new Set(allowed)];
      if (allowed.length > 0) {
        return json(405, error("method_not_allowed", `Method ${req.method} not allowed`), {
          allow: allowed.join(", "),
        });
      }
      return json(404, error("not_found", `No route for ${url.pathname}`));
    } catch (err) {
      log.error("Request failed", { error: String(err) });
      return json(500, error("internal", "Internal error"));
    }
  };

  async #upgrade(req: Request, url: URL, info: Deno.ServeHandlerInfo): Promise<Response> {
    const o = this.#deps.options;
    // Everything is read from the request before the upgrade.
    const headers = req.headers;
    if (headers.get("upgrade")?.toLowerCase() !== "websocket") {
      return json(426, error("invalid_message", "Expected a WebSocket upgrade"), {
        upgrade: "websocket",
      });
    }
    if (this.#draining) {
      return json(503, error("overloaded", "Server shutting down"), {
        "retry-after": String(RETRY_AFTER_S),
      });
    }
    const origin = headers.get("origin");
    if (origin !== null && !this.#originAllowed(origin, headers.get("host"))) {
      return json(403, error("forbidden", `Origin ${origin} is not allowed`));
    }
    const remote = remoteAddress(info);
    // Refuse early, before any token work; then check again after verifying, which awaits: other
    // upgrades may have taken the free slots meanwhile. Nothing awaits between that check and
    // the counting below.
    const full = this.#overLimit(remote);
    if (full !== undefined) return full;
    const identity = await this.#identify(req, url);
    if ("status" in identity) return identity;
    const fullNow = this.#overLimit(remote);
    if (fullNow !== undefined) return fullNow;
    const offered = (headers.get("sec-websocket-protocol") ?? "").split(",").map((p) => p.trim());
    const batching = offered.includes(SUBPROTOCOL);
    let upgrade: { socket: WebSocket; response: Response };
    try {
      upgrade = Deno.upgradeWebSocket(req, {
        ...(batching ? { protocol: SUBPROTOCOL } : {}),
        idleTimeout: o.idleTimeout,
      });
    } catch (err) {
      return json(400, error("invalid_message", `Cannot upgrade: ${String(err).slice(0, 200)}`));
    }
    // From here to the return nothing may throw: plain assignments and listener registration.
    this.#connections++;
    this.#perIp.set(remote, (this.#perIp.get(remote) ?? 0) + 1);
    new Client(upgrade.socket, this.#handler, {
      id: connectionId(),
      user: identity.user,
      named: identity.named,
      batching,
      remote,
      limits: this.#clientLimits,
      ...(identity.expiresAt === undefined ? {} : { expiresAt: identity.expiresAt }),
    });
    return upgrade.response;
  }

  /** The refusal of one more connection from `remote` when a limit is reached, or undefined. */
  #overLimit(remote: string): Response | undefined {
    const o = this.#deps.options;
    if (this.#draining) {
      return json(503, error("overloaded", "Server shutting down"), {
        "retry-after": String(RETRY_AFTER_S),
      });
    }
    if (this.#connections >= o.maxConnections) {
      return json(503, error("overloaded", "Too many connections"), {
        "retry-after": String(RETRY_AFTER_S),
      });
    }
    if ((this.#perIp.get(remote) ?? 0) >= o.maxConnectionsPerIp) {
      return json(429, error("rate_limited", "Too many connections from this address"), {
        "retry-after": String(RETRY_AFTER_S),
      });
    }
    return undefined;
  }

  /** Establishes who connects: a verified token, `?name=`, or a guest name. */
  async #identify(
    req: Request,
    url: URL,
  ): Promise<Response | { user: string; named: boolean; expiresAt?: Date }> {
    const verifier = this.#deps.verifier;
    if (verifier !== undefined) {
      const token = tokenFromRequest(req, url);
      if (token === undefined) {
        return json(401, error("unauthorized", "Missing token", "missing_token"));
      }
      const result = await verifier.verify(token);
      if (!result.ok) return json(401, error("unauthorized", result.message, result.reason));
      const { user, expiresAt } = result.identity;
      if (expiresAt === undefined) return { user, named: true };
      // The verifier forgives clock skew; a connection past its exp would be closed at once.
      if (expiresAt.getTime() <= Date.now()) {
        return json(401, error("unauthorized", "Token expired", "token_expired"));
      }
      return { user, named: true, expiresAt };
    }
    const name = url.searchParams.get("name");
    if (name === null || name === "") return { user: guestName(), named: false };
    if (!validUserName(name)) {
      return json(
        400,
        error(
          "invalid_message",
          `Invalid name: 1 to ${MAX_USER_CHARS} characters, no control characters`,
        ),
      );
    }
    return { user: name, named: true };
  }

  #originAllowed(origin: string, host: string | null): boolean {
    const allowed = this.#deps.options.allowedOrigins;
    if (allowed.includes("*") || allowed.includes(origin)) return true;
    try {
      return host !== null && new URL(origin).host === host;
    } catch {
      return false;
    }
  }

  #release(remote: string): void {
    this.#connections--;
    const left = (this.#perIp.get(remote) ?? 1) - 1;
    if (left > 0) this.#perIp.set(remote, left);
    else this.#perIp.delete(remote);
  }
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
export class OpeningWatch implements OpeningDeadlines {
  readonly #timeoutMs: number;
  readonly #now: () => number;
  /** Opening clients and their deadlines, oldest first. */
  readonly #opening = new Map<Client, number>();
  #timer: ReturnType<typeof setInterval> | undefined;

  /** Creates an idle watch; its timer runs only while some socket is opening. */
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

/** A connection id: 72 random bits as 12 base64url characters, short enough to stay compact. */
function connectionId(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(9));
  return btoa(String.fromCharCode(...bytes)).replaceAll("+", "-").replaceAll("/", "_");
}

/** A guest's name: `guest-` and {@link GUEST_NAME_CHARS} random letters of {@link GUEST_ALPHABET}. */
function guestName(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(GUEST_NAME_CHARS));
  return "guest-" + Array.from(bytes, (byte) => GUEST_ALPHABET[byte & 31]).join("");
}

function remoteAddress(info: Deno.ServeHandlerInfo): string {
  const addr = info.remoteAddr as Deno.NetAddr | Deno.UnixAddr;
  return "hostname" in addr ? addr.hostname : "unix";
}
