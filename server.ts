/**
 * HTTP: the route table and the WebSocket upgrade.
 *
 * The upgrade handler does every check that can fail (method, headers, origin, limits, identity,
 * subprotocol) before it calls `Deno.upgradeWebSocket`, and between that call and returning its
 * response runs only code that cannot throw: Deno's listener dies if anything throws there, and
 * reading `req.headers` after the upgrade throws.
 *
 * Owned state: the count of open connections in total and per remote address. Everything else
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
  OpeningWatch,
} from "./client.ts";
import type { FlushScheduler } from "./flush.ts";
import type { Hub } from "./hub.ts";
import {
  DEFAULT_HISTORY_LIMIT,
  type ErrorCode,
  MAX_HISTORY_LIMIT,
  MAX_REF_CHARS,
  MAX_USER_CHARS,
  ROOM_NAME,
  roomKey,
  SUBPROTOCOL,
  validUserName,
} from "./message.ts";
import type { Presence } from "./backends/presence/mod.ts";
import type { MessageStore } from "./backends/store/mod.ts";
import { STATIC_FILES } from "./static/mod.ts";

/** Seconds a client is told to wait after a 503/429 for connection limits. */
export const RETRY_AFTER_S = 5;
/** Largest accepted body of `POST /api/rooms/{room}/messages`, in bytes. */
export const MAX_API_BODY_BYTES = 64 * 1024;
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

const log = getLogger(["parley", "http"]);

/** Renders the metrics page. */
export interface MetricsPage {
  readonly contentType: string;
  text(): Promise<string>;
}

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
      route("GET", "/readyz", () => this.#ready()),
      route("GET", "/metrics", () => this.#metrics()),
      route("GET", "/api/rooms/:room/messages", (req, url, m) => this.#history(req, url, m)),
      route("GET", "/api/rooms/:room/presence", (req, _u, m) => this.#presence(req, m)),
      route("POST", "/api/rooms/:room/messages", (req, _u, m) => this.#post(req, m)),
      route("GET", "/", () => this.#file("index.html")),
      route(
        "GET",
        // Every file static/mod.ts lists but the page itself, which is served at "/" only.
        `/:file(${
          Object.keys(STATIC_FILES).filter((name) => name !== "index.html")
            .map((name) => name.replaceAll(".", "\\.")).join("|")
        })`,
        (_r, _u, m) => this.#file(m.pathname.groups.file!),
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

  async #ready(): Promise<Response> {
    const checks = await Promise.allSettled([
      this.#deps.store.ping(),
      this.#deps.broker.ping(),
      this.#deps.presence.ping(),
    ]);
    const [store, broker, presence] = checks;
    if (this.#draining) return json(503, { status: "unavailable", reason: "shutting down" });
    if (store?.status === "rejected") {
      return json(503, { status: "unavailable", reason: `store: ${String(store.reason)}` });
    }
    if (broker?.status === "rejected") {
      return json(503, { status: "unavailable", reason: `broker: ${String(broker.reason)}` });
    }
    if (presence?.status === "rejected") {
      return json(503, { status: "unavailable", reason: `presence: ${String(presence.reason)}` });
    }
    return json(200, { status: "ready" });
  }

  async #metrics(): Promise<Response> {
    const metrics = this.#deps.metrics;
    if (metrics === undefined) return json(404, error("not_found", "Metrics disabled"));
    return new Response(await metrics.text(), { headers: { "content-type": metrics.contentType } });
  }

  async #authorizeRead(req: Request): Promise<Response | undefined> {
    const verifier = this.#deps.verifier;
    if (verifier === undefined) return undefined;
    const token = bearer(req);
    const apiKey = this.#deps.options.apiKey;
    if (token !== undefined && apiKey !== undefined && constantTimeEqual(token, apiKey)) {
      return undefined;
    }
    if (token === undefined) {
      return json(401, error("unauthorized", "Missing token", "missing_token"));
    }
    const result = await verifier.verify(token);
    return result.ok ? undefined : json(401, error("unauthorized", result.message, result.reason));
  }

  async #history(req: Request, url: URL, match: URLPatternResult): Promise<Response> {
    const room = roomOf(match);
    if (room === undefined) return json(400, error("invalid_message", "Invalid room name"));
    const denied = await this.#authorizeRead(req);
    if (denied !== undefined) return denied;
    const params = url.searchParams;
    const before = idParam(params.get("before"));
    const after = idParam(params.get("after"));
    const limit = params.get("limit") === null
      ? DEFAULT_HISTORY_LIMIT
      : idParam(params.get("limit"));
    if (before === null || after === null || limit === null) {
      return json(400, error("invalid_message", "before, after and limit must be integers"));
    }
    if (before !== undefined && after !== undefined) {
      return json(400, error("invalid_message", "Give at most one of before and after"));
    }
    if (limit === undefined || limit < 1 || limit > MAX_HISTORY_LIMIT) {
      return json(400, error("invalid_message", `limit must be from 1 to ${MAX_HISTORY_LIMIT}`));
    }
    const page = await this.#deps.store.history({
      conversation: roomKey(room),
      limit,
      ...(before === undefined ? {} : { before }),
      ...(after === undefined ? {} : { after }),
    });
    return json(200, { room, messages: page.messages, hasMore: page.hasMore });
  }

  async #presence(req: Request, match: URLPatternResult): Promise<Response> {
    const room = roomOf(match);
    if (room === undefined) return json(400, error("invalid_message", "Invalid room name"));
    const denied = await this.#authorizeRead(req);
    if (denied !== undefined) return denied;
    const users = await this.#deps.presence.users(room);
    return json(200, { room, users, count: users.length });
  }

  async #post(req: Request, match: URLPatternResult): Promise<Response> {
    const apiKey = this.#deps.options.apiKey;
    if (apiKey === undefined) return json(404, error("not_found", "Publishing is disabled"));
    const token = bearer(req);
    if (token === undefined || !constantTimeEqual(token, apiKey)) {
      return json(401, error("unauthorized", "Invalid API key"));
    }
    const room = roomOf(match);
    if (room === undefined) return json(400, error("invalid_message", "Invalid room name"));
    const text = await req.text();
    if (text.length > MAX_API_BODY_BYTES) {
      return json(413, error("too_large", "Body too large"));
    }
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch {
      return json(400, error("invalid_json", "Body is not valid JSON"));
    }
    const { content, sender, ref } = (typeof body === "object" && body !== null ? body : {}) as {
      content?: unknown;
      sender?: unknown;
      ref?: unknown;
    };
    const max = this.#deps.options.maxContentChars;
    if (typeof content !== "string" || content.length === 0 || content.length > max) {
      return json(400, error("invalid_message", `content must be 1 to ${max} characters`));
    }
    if (typeof sender !== "string" || !validUserName(sender)) {
      return json(400, error("invalid_message", "sender must be a valid user name"));
    }
    if (
      ref !== undefined &&
      (typeof ref !== "string" || ref.length === 0 || ref.length > MAX_REF_CHARS)
    ) {
      return json(400, error("invalid_message", `ref must be 1 to ${MAX_REF_CHARS} characters`));
    }
    try {
      const message = await this.#deps.chat.publish({
        draft: { type: "message", room, sender, content },
        user: sender,
        ...(ref === undefined ? {} : { ref }),
      });
      return json(201, message);
    } catch (err) {
      log.error("Cannot publish from API", { error: String(err) });
      return json(503, error("overloaded", "Storage or broker unavailable"));
    }
  }

  #file(name: string): Response {
    const body = STATIC_FILES[name];
    if (body === undefined) return json(404, error("not_found", `No file ${name}`));
    return new Response(body, {
      headers: {
        "content-type": CONTENT_TYPES[name.slice(name.lastIndexOf("."))] ??
          "application/octet-stream",
        "cache-control": "no-cache",
        "x-content-type-options": "nosniff",
        "content-security-policy":
          "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; style-src 'self'",
      },
    });
  }
}

const CONTENT_TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".svg": "image/svg+xml",
  ".png": "image/png",
};

function json(status: number, body: unknown, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "content-type": "application/json; charset=utf-8", ...headers },
  });
}

function error(code: ErrorCode, message: string, reason?: string) {
  return { error: reason === undefined ? { code, message } : { code, message, reason } };
}

function bearer(req: Request): string | undefined {
  const header = req.headers.get("authorization");
  const match = header === null ? null : /^Bearer\s+(\S+)$/i.exec(header);
  return match?.[1];
}

function roomOf(match: URLPatternResult): string | undefined {
  let room: string;
  try {
    room = decodeURIComponent(match.pathname.groups.room ?? "");
  } catch {
    return undefined;
  }
  return ROOM_NAME.test(room) ? room : undefined;
}

/** Parses an optional non-negative integer query parameter; null when malformed. */
function idParam(value: string | null): number | undefined | null {
  if (value === null || value === "") return undefined;
  if (!/^\d{1,15}$/.test(value)) return null;
  return Number(value);
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

function constantTimeEqual(a: string, b: string): boolean {
  const x = new TextEncoder().encode(a);
  const y = new TextEncoder().encode(b);
  let diff = x.length ^ y.length;
  for (let i = 0; i < Math.max(x.length, y.length); i++) diff |= (x[i] ?? 0) ^ (y[i] ?? 0);
  return diff === 0;
}
