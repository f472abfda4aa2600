/**
 * Wire protocol v1: the frames a client may send, the frames the server sends, and the one
 * function that turns an inbound text frame into a validated {@link ClientFrame}.
 *
 * Invariants:
 * - Inbound frames are validated with strict zod objects: an unknown key is an error, so a
 *   `__proto__` or `constructor` key never reaches application code.
 * - {@link FrameParser.parse} never throws; every failure is a {@link ParseFailure} carrying a
 *   protocol error code and a message that names the offending field.
 * - Server frames are plain objects encoded once ({@link prepare}) and the same string is sent to
 *   every recipient (gorilla's PreparedMessage); stored chat messages
 *   ({@link ChatMessage}) are already in their wire shape, so history and live delivery send the
 *   same bytes.
 *
 * The full reference is `docs/PROTOCOL.md`.
 */
import { z } from "zod";

/** Protocol version sent in `welcome`. */
export const PROTOCOL_VERSION = 1;
/** The WebSocket subprotocol a v1 client offers; the server echoes it. */
export const SUBPROTOCOL = "parley.v1";
/** Longest `ref` a client may attach to a frame, in characters. */
export const MAX_REF_CHARS = 64;
/** Largest `limit` of a history page, and the default when none is given. */
export const MAX_HISTORY_LIMIT = 100;
export const DEFAULT_HISTORY_LIMIT = 50;
/** Longest user name accepted from `?name=` or a `sender` field, in characters. */
export const MAX_USER_CHARS = 64;

/** Room names: 1–64 letters, digits, `-`, `_`, `.`. */
/** Text without control characters: user names must match it. */
// deno-lint-ignore no-control-regex
const CONTROL_FREE = /^[^\u0000-\u001f\u007f]*$/;

/** Whether a user name is valid: 1–{@link MAX_USER_CHARS} characters, no control characters. The
 * same rule applies to `?name=`, the HTTP API's `sender` and a frame's `sender`. */
export function validUserName(name: string): boolean {
  return name.length >= 1 && name.length <= MAX_USER_CHARS && CONTROL_FREE.test(name);
}

export const ROOM_NAME = /^[A-Za-z0-9._-]{1,64}$/;

/**
 * The error codes of the protocol's `error` frame and of HTTP error bodies: the one list metrics
 * and tests derive from. `not_found` and `method_not_allowed` answer HTTP requests only.
 */
export const ERROR_CODES = [
  "invalid_json",
  "invalid_message",
  "unknown_type",
  "unsupported_frame",
  "too_large",
  "rate_limited",
  "not_member",
  "forbidden",
  "unauthorized",
  "overloaded",
  "internal",
  "not_found",
  "method_not_allowed",
] as const;

/** One of {@link ERROR_CODES}. */
export type ErrorCode = (typeof ERROR_CODES)[number];

/** The close codes of the protocol, with the constant reason sent with each. */
export const Close = {
  normal: { code: 1000, reason: "Normal closure" },
  goingAway: { code: 1001, reason: "Server shutting down" },
  policy: { code: 1008, reason: "Rate limit abuse" },
  tooBig: { code: 1009, reason: "Message too big" },
  internal: { code: 1011, reason: "Internal error" },
  resync: { code: 1011, reason: "Resume required" },
  overloaded: { code: 1013, reason: "Server overloaded" },
  tokenExpired: { code: 4001, reason: "Token expired" },
  slowConsumer: { code: 4008, reason: "Slow consumer" },
} as const satisfies Record<string, { code: number; reason: string }>;

/** A close code and its reason, one of {@link Close}. */
export type CloseCode = (typeof Close)[keyof typeof Close];

// ---------------------------------------------------------------------------------------------
// Server → client

/** A room message, as stored and as delivered. */
export interface RoomMessage {
  type: "message";
  id: number;
  room: string;
  sender: string;
  content: string;
  ts: string;
}

/** A private message between two users, as stored and as delivered. */
export interface DirectMessage {
  type: "direct";
  id: number;
  from: string;
  to: string;
  content: string;
  ts: string;
}

/** A stored chat message in its wire shape. */
export type ChatMessage = RoomMessage | DirectMessage;

/** Every frame the server sends. */
export type ServerFrame =
  | ChatMessage
  | {
    type: "welcome";
    user: string;
    connection: string;
    rooms: string[];
    protocol: number;
    expiresAt?: string;
  }
  | { type: "ack"; ref: string; id: number; ts: string; expiresAt?: string }
  | {
    type: "joined";
    room: string;
    lastId: number;
    users: string[];
    recovered?: boolean;
    ref?: string;
  }
  | { type: "left"; room: string; ref?: string }
  | {
    type: "history";
    room?: string;
    with?: string;
    messages: ChatMessage[];
    hasMore: boolean;
  }
  | { type: "presence"; room: string; users: string[]; count: number }
  | { type: "user_joined"; room: string; user: string }
  | { type: "user_left"; room: string; user: string }
  | { type: "typing"; room: string; user: string }
  | { type: "error"; code: ErrorCode; message: string; ref?: string }
  | { type: "pong"; ref?: string };

/** A server frame encoded once, with its UTF-8 size, shared by every recipient. */
export interface PreparedFrame {
  readonly text: string;
  readonly bytes: number;
}

/** Encodes a frame once for any number of recipients (gorilla's PreparedMessage). */
export function prepare(frame: unknown): PreparedFrame {
  const text = JSON.stringify(frame);
  return { text, bytes: utf8Bytes(text) };
}

/** Builds an `error` frame, echoing `ref` when the failing frame carried one. */
export function errorFrame(code: ErrorCode, message: string, ref?: string): ServerFrame {
  return ref === undefined ? { type: "error", code, message } : {
    type: "error",
    code,
    message,
    ref,
  };
}

// ---------------------------------------------------------------------------------------------
// Client → server

/** Options that bound inbound frames; they come from the server's configuration. */
export interface ParseOptions {
  /** Longest `content`, in characters (UTF-16 code units, as JavaScript counts). */
  maxContentChars: number;
}

/**
 * Bounds a string at `max` UTF-16 code units. zod's `max` counts code points, which lets up to
 * twice as many units through; the limits of the protocol, `?name=` and the HTTP API are in units.
 */
function atMost<T extends z.ZodString>(schema: T, max: number): T {
  // A plain check, not `superRefine`, which allocates on every call: this runs for every frame.
  return schema.check((ctx) => {
    if (ctx.value.length > max) {
      ctx.issues.push({
        code: "too_big",
        maximum: max,
        origin: "string",
        inclusive: true,
        input: ctx.value,
      });
    }
  });
}

const ref = atMost(z.string().min(1), MAX_REF_CHARS);
const room = z.string().regex(ROOM_NAME);
// No control characters, as for `?name=` and the HTTP API: a name shows up in every client's UI.
const user = atMost(z.string().min(1).regex(CONTROL_FREE), MAX_USER_CHARS);
const messageId = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);
const limit = z.number().int().min(1).max(MAX_HISTORY_LIMIT);

function content(maxChars: number) {
  return atMost(z.string().min(1), maxChars);
}

function schemas(options: ParseOptions) {
  const text = content(options.maxContentChars);
  return {
    // The old Go server's frame: no type, a sender and a content.
    legacy: z.strictObject({ content: text, sender: user.optional(), ref: ref.optional() }),
    message: z.strictObject({
      type: z.literal("message"),
      room: room.optional(),
      content: text,
      sender: z.string().optional(), // accepted and ignored: identity is stamped by the server
      ref: ref.optional(),
    }),
    direct: z.strictObject({
      type: z.literal("direct"),
      to: user,
      content: text,
      sender: z.string().optional(),
      ref: ref.optional(),
    }),
    join: z.strictObject({
      type: z.literal("join"),
      room,
      since: messageId.optional(),
      ref: ref.optional(),
    }),
    leave: z.strictObject({ type: z.literal("leave"), room, ref: ref.optional() }),
    history: z.strictObject({
      type: z.literal("history"),
      room: room.optional(),
      with: user.optional(),
      before: messageId.optional(),
      after: messageId.optional(),
      limit: limit.optional(),
      ref: ref.optional(),
    }).refine((f) => (f.room === undefined) !== (f.with === undefined), {
      message: 'exactly one of "room" and "with" is required',
      path: ["room"],
    }).refine((f) => f.before === undefined || f.after === undefined, {
      message: 'at most one of "before" and "after" may be given',
      path: ["before"],
    }),
    presence: z.strictObject({ type: z.literal("presence"), room, ref: ref.optional() }),
    typing: z.strictObject({ type: z.literal("typing"), room, ref: ref.optional() }),
    refresh: z.strictObject({
      type: z.literal("refresh"),
      token: atMost(z.string().min(1), 8192),
      ref: ref.optional(),
    }),
    ping: z.strictObject({ type: z.literal("ping"), ref: ref.optional() }),
  };
}

type Schemas = ReturnType<typeof schemas>;
type Typed = Exclude<keyof Schemas, "legacy">;

/** A validated frame from a client; `legacy` is the old server's untyped frame. */
export type ClientFrame =
  | ({ type: "legacy" } & z.infer<Schemas["legacy"]>)
  | { [K in Typed]: z.infer<Schemas[K]> }[Typed];

/** Why a frame was rejected, ready to become an `error` frame. */
export interface ParseFailure {
  code: "invalid_json" | "invalid_message" | "unknown_type";
  message: string;
  ref?: string;
}

/** The outcome of {@link FrameParser.parse}. */
export type ParseResult = { ok: true; frame: ClientFrame } | { ok: false; error: ParseFailure };

/** The typed frames a client may send (the old untyped frame is `legacy`): the one list. */
export const CLIENT_FRAME_TYPES = [
  "message",
  "direct",
  "join",
  "leave",
  "history",
  "presence",
  "typing",
  "refresh",
  "ping",
] as const satisfies readonly Typed[];

/** {@link CLIENT_FRAME_TYPES} as a set, for lookups. */
export const CLIENT_TYPES: ReadonlySet<string> = new Set<string>(CLIENT_FRAME_TYPES);

/** Validates inbound text frames against protocol v1; build one per server and reuse it. */
export class FrameParser {
  readonly #schemas: Schemas;

  /** Builds the schemas once for the given limits. */
  constructor(options: ParseOptions) {
    this.#schemas = schemas(options);
  }

  /** Parses one text frame; never throws. */
  parse(text: string): ParseResult {
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch {
      return fail("invalid_json", "Cannot parse frame: not valid JSON");
    }
    if (typeof value !== "object" || value === null || Array.isArray(value)) {
      return fail("invalid_message", "Cannot parse frame: expected a JSON object");
    }
    const record = value as Record<string, unknown>;
    // Echo the ref on errors whenever it is a well-formed ref, even if another field is bad.
    const echo = typeof record.ref === "string" && record.ref.length > 0 &&
        record.ref.length <= MAX_REF_CHARS
      ? record.ref
      : undefined;
    let schema: z.ZodType;
    let type: ClientFrame["type"];
    if (!Object.hasOwn(record, "type")) {
      schema = this.#schemas.legacy;
      type = "legacy";
    } else if (typeof record.type !== "string") {
      return fail("invalid_message", 'Cannot parse frame: field "type" must be a string', echo);
    } else if (!CLIENT_TYPES.has(record.type)) {
      return fail(
        "unknown_type",
        `Cannot handle frame: unknown type ${JSON.stringify(record.type.slice(0, 32))}`,
        echo,
      );
    } else {
      type = record.type as Typed;
      schema = this.#schemas[type as Typed];
    }
    const result = schema.safeParse(value, { reportInput: true });
    if (!result.success) {
      return fail("invalid_message", describeIssue(result.error.issues[0]), echo);
    }
    const frame = type === "legacy" ? { type, ...(result.data as object) } : result.data;
    return { ok: true, frame: frame as ClientFrame };
  }
}

function fail(code: ParseFailure["code"], message: string, ref?: string): ParseResult {
  return { ok: false, error: ref === undefined ? { code, message } : { code, message, ref } };
}

/** Turns the first zod issue into a sentence that names the field. */
function describeIssue(issue: z.core.$ZodIssue | undefined): string {
  if (issue === undefined) return "Cannot parse frame: invalid";
  if (issue.code === "unrecognized_keys") {
    const key = issue.keys[0] ?? "";
    return `Cannot parse frame: field ${JSON.stringify(key.slice(0, 32))} is not allowed`;
  }
  const field = JSON.stringify(issue.path.map(String).join(".") || "frame");
  switch (issue.code) {
    case "invalid_type":
      return issue.input === undefined
        ? `Cannot parse frame: field ${field} is missing`
        : `Cannot parse frame: field ${field} must be ${article(issue.expected)}`;
    case "too_big":
      return `Cannot parse frame: field ${field} is too long or too large (maximum ${
        String(issue.maximum)
      })`;
    case "too_small":
      return `Cannot parse frame: field ${field} is empty or too small (minimum ${
        String(issue.minimum)
      })`;
    case "invalid_format":
      return `Cannot parse frame: field ${field} has an invalid format`;
    case "invalid_value":
      return `Cannot parse frame: field ${field} has an invalid value`;
    default:
      return `Cannot parse frame: field ${field} is invalid: ${issue.message}`;
  }
}

function article(expected: string): string {
  if (expected === "int") return "an integer";
  return /^[aeiou]/.test(expected) ? `an ${expected}` : `a ${expected}`;
}

/** Counts the UTF-8 bytes of a string without allocating. */
export function utf8Bytes(text: string): number {
  let bytes = text.length;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 0x80) continue;
    if (c >= 0xd800 && c <= 0xdbff && i + 1 < text.length) {
      bytes += 2; // a surrogate pair: 2 code units, 4 bytes
      i++;
    } else bytes += c < 0x800 ? 1 : 2;
  }
  return bytes;
}

/** Tells whether a string's UTF-8 encoding is longer than `limit` bytes, counting only when the
 * cheap bounds (one to three bytes per UTF-16 code unit) cannot decide. */
export function exceedsUtf8(text: string, limit: number): boolean {
  if (text.length > limit) return true;
  if (text.length * 3 <= limit) return false;
  return utf8Bytes(text) > limit;
}

/** The key under which a message's conversation is stored and ordered. */
export function conversationKey(message: ChatMessage | Draft): string {
  return message.type === "message" ? roomKey(message.room) : directKey(message.from, message.to);
}

/** The conversation key of a room. */
export function roomKey(room: string): string {
  return `room:${room}`;
}

/** The conversation key of the DM conversation between two users, in either order. */
export function directKey(a: string, b: string): string {
  return `dm:${JSON.stringify(a < b ? [a, b] : [b, a])}`;
}

/** A chat message before the store gives it an id and a timestamp. */
export type Draft =
  | Omit<RoomMessage, "id" | "ts">
  | Omit<DirectMessage, "id" | "ts">;
