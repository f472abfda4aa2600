/**
 * The HTTP answers besides the WebSocket upgrade: readiness, metrics, the static files and the
 * REST API (`GET /api/rooms/{room}/messages`, `GET /api/rooms/{room}/presence`,
 * `POST /api/rooms/{room}/messages`), with the JSON and error bodies every route shares.
 *
 * {@link Api} owns no state: it reads the store, broker and presence, and publishes through
 * `Chat.publish`, the single delivery path, so a message posted here is stored, acked and fanned
 * out exactly like one sent over a socket. The route table that calls it is `ParleyHttp`'s
 * (server.ts). Handlers may throw; the route table turns that into a 500.
 */
import { getLogger } from "@logtape/logtape";
import type { Verifier } from "../auth/mod.ts";
import type { Broker } from "../backends/broker/mod.ts";
import type { Presence } from "../backends/presence/mod.ts";
import type { MessageStore } from "../backends/store/mod.ts";
import type { Chat } from "../chat.ts";
import {
  DEFAULT_HISTORY_LIMIT,
  type ErrorCode,
  MAX_HISTORY_LIMIT,
  MAX_REF_CHARS,
  ROOM_NAME,
  roomKey,
  validUserName,
} from "../message.ts";
import { STATIC_FILES } from "../static/mod.ts";

/** Largest accepted body of `POST /api/rooms/{room}/messages`, in bytes. */
export const MAX_API_BODY_BYTES = 64 * 1024;

const CONTENT_TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".svg": "image/svg+xml",
  ".png": "image/png",
};

const log = getLogger(["parley", "http"]);

/** Renders the metrics page. */
export interface MetricsPage {
  readonly contentType: string;
  text(): Promise<string>;
}

/** What the API reads and publishes through; `ServerDeps` (server.ts) satisfies it. */
export interface ApiDeps {
  chat: Chat;
  store: MessageStore;
  broker: Broker;
  presence: Presence;
  options: {
    /** Enables `POST /api/rooms/{room}/messages`. */
    apiKey?: string;
    maxContentChars: number;
  };
  /** Token mode: reads need a token (or the API key). */
  verifier?: Verifier;
  metrics?: MetricsPage;
}

/** The HTTP routes other than the upgrade; one per server. */
export class Api {
  readonly #deps: ApiDeps;
  readonly #draining: () => boolean;

  /** Creates the handlers; `draining` tells readiness that the server is shutting down. */
  constructor(deps: ApiDeps, draining: () => boolean) {
    this.#deps = deps;
    this.#draining = draining;
  }

  /** `GET /readyz`: 200 while every backend answers its ping and the server is not draining. */
  async ready(): Promise<Response> {
    const checks = await Promise.allSettled([
      this.#deps.store.ping(),
      this.#deps.broker.ping(),
      this.#deps.presence.ping(),
    ]);
    const [store, broker, presence] = checks;
    if (this.#draining()) return json(503, { status: "unavailable", reason: "shutting down" });
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

  /** `GET /metrics`: the metrics page, or 404 when metrics are disabled. */
  async metrics(): Promise<Response> {
    const metrics = this.#deps.metrics;
    if (metrics === undefined) return json(404, error("not_found", "Metrics disabled"));
    return new Response(await metrics.text(), { headers: { "content-type": metrics.contentType } });
  }

  /** `GET /api/rooms/{room}/messages`: one page of a room's history. */
  async history(req: Request, url: URL, match: URLPatternResult): Promise<Response> {
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

  /** `GET /api/rooms/{room}/presence`: the room's online users across all nodes. */
  async presence(req: Request, match: URLPatternResult): Promise<Response> {
    const room = roomOf(match);
    if (room === undefined) return json(400, error("invalid_message", "Invalid room name"));
    const denied = await this.#authorizeRead(req);
    if (denied !== undefined) return denied;
    const users = await this.#deps.presence.users(room);
    return json(200, { room, users, count: users.length });
  }

  /** `POST /api/rooms/{room}/messages`: publishes a message with the API key; 404 without one. */
  async post(req: Request, match: URLPatternResult): Promise<Response> {
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

  /** One file of the browser client, by its name in `STATIC_FILES`; 404 for any other. */
  file(name: string): Response {
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

  /** In token mode, the refusal of a read without the API key or a valid token, or undefined. */
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
}

/** A JSON response with `status`, `body` and any extra `headers`. */
export function json(
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "content-type": "application/json; charset=utf-8", ...headers },
  });
}

/** The body of an HTTP error: `{"error":{"code","message","reason"?}}`. */
export function error(code: ErrorCode, message: string, reason?: string) {
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

/** Compares a secret without an early exit, so the time taken does not reveal a common prefix. */
function constantTimeEqual(a: string, b: string): boolean {
  const x = new TextEncoder().encode(a);
  const y = new TextEncoder().encode(b);
  let diff = x.length ^ y.length;
  for (let i = 0; i < Math.max(x.length, y.length); i++) diff |= (x[i] ?? 0) ^ (y[i] ?? 0);
  return diff === 0;
}
