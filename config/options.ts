/**
 * The option table: every server option's flag, environment variable, config-file key (the flag
 * in camelCase), default, help sentence and value parser, in help order. The help text, the list
 * of environment variables and the config file's schema are all generated from it, so an option
 * exists in every source or in none.
 */
import { MIN_SECRET_BYTES } from "../auth/mod.ts";
import { ROOM_NAME, utf8Bytes } from "../message.ts";
import {
  byteSize,
  duration,
  formatBytes,
  GIB,
  integer,
  KIB,
  matching,
  MAX_COUNT,
  MIB,
  oneOf,
  origin,
  type Parser,
  positiveNumber,
  redisUrl,
  storeUrl,
} from "./values.ts";

/** Default TCP port; `PORT` and `--port` override it. */
const DEFAULT_PORT = 8080;
/** Default hard limit on one inbound frame, in bytes (close 1009 above it). */
const DEFAULT_MAX_FRAME_BYTES = 64 * KIB;
/** Frame limit bounds, in bytes; the upper one keeps a single frame from pinning memory. */
const MIN_FRAME_BYTES = 1 * KIB;
const MAX_FRAME_BYTES = 16 * MIB;
/** Default longest message content, in UTF-16 code units; must stay below the frame limit. */
const DEFAULT_MAX_CONTENT_CHARS = 4000;
const MAX_CONTENT_CHARS = 1_000_000;
/** Default outbound queue bounds per connection (close 4008 beyond either). */
const DEFAULT_OUTBOX_MESSAGES = 1024;
const MIN_OUTBOX_MESSAGES = 16;
const DEFAULT_OUTBOX_BYTES = 1 * MIB;
/** Smallest outbox byte bound; it must also be at least the frame limit. */
const MIN_OUTBOX_BYTES = 64 * KIB;
const MAX_OUTBOX_BYTES = 1 * GIB;
/** Default idle timeout in seconds; 0 disables it. */
const DEFAULT_IDLE_TIMEOUT_S = 60;
/** Longest idle timeout or presence TTL, in seconds (one day). */
const MAX_DURATION_S = 86_400;
/** Default store URL when neither `--store` nor `--redis` is given. */
export const DEFAULT_STORE = "sqlite:./parley.db";
/** Default messages kept per conversation (`--history-limit`); not the size of a history page. */
const DEFAULT_HISTORY_RETENTION = 10_000;
/** Longest `--history-days`, about a century; 0 keeps messages regardless of age. */
const MAX_HISTORY_DAYS = 36_500;
/** Default presence entry lifetime in seconds, refreshed while a connection lives. */
const DEFAULT_PRESENCE_TTL_S = 30;
/** Default size above which a room gets no `user_joined`/`user_left` events. */
const DEFAULT_PRESENCE_EVENTS_MAX = 1000;
/** Shortest API key for `POST /api/...`, in characters. */
const MIN_API_KEY_CHARS = 16;
/** Default per-connection token bucket: refill rate in frames/s, and capacity in frames. */
const DEFAULT_RATE = 10;
const DEFAULT_BURST = 20;
const MAX_RATE = 1_000_000;
/** Default rate-limit errors in a row before a close with 1008. */
const DEFAULT_RATE_LIMIT_STRIKES = 10;
/** Default connection caps, for the node and per client IP address. */
const DEFAULT_MAX_CONNECTIONS = 10_000;
const DEFAULT_MAX_CONNECTIONS_PER_IP = 100;

/** A LogTape log level. */
export type LogLevel = "trace" | "debug" | "info" | "warning" | "error" | "fatal";
/** How log records are written: one JSON object per line, or coloured text for people. */
export type LogFormat = "json" | "pretty";

/** A heading under which help lists options. */
export type Group =
  | "Server"
  | "Limits"
  | "Storage"
  | "Presence"
  | "Authentication"
  | "Abuse"
  | "TLS";

/** One option: where it comes from, how it is parsed and how help shows it. */
export interface OptionSpec<T> extends Parser<T> {
  /** Flag name without dashes; the config-file key is its camelCase form. */
  flag: string;
  /** Environment variable. */
  env: string;
  /** Placeholder for the value in help. */
  arg: string;
  group: Group;
  /** One or two sentences for help, without the default. */
  help: string;
  /** The default; undefined when the option is absent unless set (or derived, see defaultText). */
  default: T | undefined;
  /** How help shows the default. */
  defaultText: string;
  /** JSON types the config file may use: numeric options also take strings such as "1MiB". */
  json: "string" | "number" | "list";
  /** Repeatable; values may also be comma-separated, and the environment variable always is. */
  multiple?: true;
  /** Never echoed in errors or summaries. */
  secret?: true;
}

function option<T>(
  spec: Omit<OptionSpec<T>, "defaultText" | "json"> & Partial<OptionSpec<T>>,
): OptionSpec<T> {
  return {
    json: typeof spec.default === "number" ? "number" : "string",
    defaultText: spec.default === undefined ? "unset" : String(spec.default),
    ...spec,
  };
}

const LOG_LEVELS = ["trace", "debug", "info", "warning", "error", "fatal"] as const;
const LOG_FORMATS = ["json", "pretty"] as const;

/** Every option, keyed by its camelCase name, in help order. */
export const OPTIONS = {
  port: option({
    flag: "port",
    env: "PORT",
    arg: "N",
    group: "Server",
    help: "TCP port for HTTP and WebSocket; 0 picks a free port.",
    default: DEFAULT_PORT,
    ...integer(0, 65535),
  }),
  host: option({
    flag: "host",
    env: "PARLEY_HOST",
    arg: "ADDR",
    group: "Server",
    help: 'Interface to listen on: a host name or IP address ("::" for all IPv6).',
    default: "0.0.0.0",
    ...matching(
      /^([A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*|[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*)$/,
      "a host name or IP address such as 0.0.0.0, 127.0.0.1 or ::",
    ),
  }),
  defaultRoom: option({
    flag: "default-room",
    env: "PARLEY_DEFAULT_ROOM",
    arg: "ROOM",
    group: "Server",
    help: "Room every connection joins on open, and the room of legacy untyped frames.",
    default: "lobby",
    ...matching(ROOM_NAME, "a room name of 1 to 64 letters, digits, '-', '_' or '.'"),
  }),
  logLevel: option<LogLevel>({
    flag: "log-level",
    env: "PARLEY_LOG_LEVEL",
    arg: "LEVEL",
    group: "Server",
    help: `Lowest level logged: ${LOG_LEVELS.join(", ")}.`,
    default: "info",
    ...oneOf(LOG_LEVELS),
  }),
  logFormat: option<LogFormat>({
    flag: "log-format",
    env: "PARLEY_LOG_FORMAT",
    arg: "FORMAT",
    group: "Server",
    help: "Log output: json (one object per line) or pretty (for people).",
    default: undefined,
    defaultText: "pretty when stdout is a terminal, else json",
    ...oneOf(LOG_FORMATS),
  }),
  maxFrameBytes: option({
    flag: "max-frame-bytes",
    env: "PARLEY_MAX_FRAME_BYTES",
    arg: "SIZE",
    group: "Limits",
    help: "Largest inbound frame; a bigger one closes the connection with 1009.",
    default: DEFAULT_MAX_FRAME_BYTES,
    defaultText: `${DEFAULT_MAX_FRAME_BYTES} (${formatBytes(DEFAULT_MAX_FRAME_BYTES)})`,
    ...byteSize(MIN_FRAME_BYTES, MAX_FRAME_BYTES),
  }),
  maxContentChars: option({
    flag: "max-content-chars",
    env: "PARLEY_MAX_CONTENT_CHARS",
    arg: "N",
    group: "Limits",
    help: "Longest message content in characters (UTF-16 code units); " +
      "must be less than --max-frame-bytes.",
    default: DEFAULT_MAX_CONTENT_CHARS,
    ...integer(1, MAX_CONTENT_CHARS),
  }),
  outboxMessages: option({
    flag: "outbox-messages",
    env: "PARLEY_OUTBOX_MESSAGES",
    arg: "N",
    group: "Limits",
    help: "Most frames queued for one slow connection before it is closed with 4008.",
    default: DEFAULT_OUTBOX_MESSAGES,
    ...integer(MIN_OUTBOX_MESSAGES, MAX_COUNT),
  }),
  outboxBytes: option({
    flag: "outbox-bytes",
    env: "PARLEY_OUTBOX_BYTES",
    arg: "SIZE",
    group: "Limits",
    help: "Most bytes queued for one slow connection before it is closed with 4008; " +
      "at least --max-frame-bytes.",
    default: DEFAULT_OUTBOX_BYTES,
    defaultText: `${DEFAULT_OUTBOX_BYTES} (${formatBytes(DEFAULT_OUTBOX_BYTES)})`,
    ...byteSize(MIN_OUTBOX_BYTES, MAX_OUTBOX_BYTES),
  }),
  idleTimeout: option({
    flag: "idle-timeout",
    env: "PARLEY_IDLE_TIMEOUT",
    arg: "DURATION",
    group: "Limits",
    help: "Close a connection whose client stops answering WebSocket pings for this long " +
      "(60, 60s, 2m); 0 disables.",
    default: DEFAULT_IDLE_TIMEOUT_S,
    defaultText: `${DEFAULT_IDLE_TIMEOUT_S} (seconds)`,
    ...duration(0, MAX_DURATION_S),
  }),
  maxConnections: option({
    flag: "max-connections",
    env: "PARLEY_MAX_CONNECTIONS",
    arg: "N",
    group: "Limits",
    help: "Most open WebSocket connections on this node; beyond it, an upgrade is refused " +
      "with HTTP 503.",
    default: DEFAULT_MAX_CONNECTIONS,
    ...integer(1, MAX_COUNT),
  }),
  maxConnectionsPerIp: option({
    flag: "max-connections-per-ip",
    env: "PARLEY_MAX_CONNECTIONS_PER_IP",
    arg: "N",
    group: "Limits",
    help: "Most open WebSocket connections from one client IP address.",
    default: DEFAULT_MAX_CONNECTIONS_PER_IP,
    ...integer(1, MAX_COUNT),
  }),
  store: option({
    flag: "store",
    env: "PARLEY_STORE",
    arg: "URL",
    group: "Storage",
    help: "Message store: memory:, sqlite:<path> or redis://host[:port][/db] (rediss:// for TLS).",
    default: undefined,
    defaultText: `${DEFAULT_STORE}, or the --redis URL when that is set`,
    parse: storeUrl,
    expected: "memory:, sqlite:<path>, or a redis:// or rediss:// URL",
  }),
  redis: option({
    flag: "redis",
    env: "PARLEY_REDIS_URL",
    arg: "URL",
    group: "Storage",
    help: "Redis for a cluster (redis:// or rediss://); store and broker default to it. " +
      "Without it the broker is in memory (one node).",
    default: undefined,
    parse: redisUrl,
    expected: "a redis:// or rediss:// URL with a host",
  }),
  historyLimit: option({
    flag: "history-limit",
    env: "PARLEY_HISTORY_LIMIT",
    arg: "N",
    group: "Storage",
    help: "Messages kept per room or DM conversation; older ones are deleted.",
    default: DEFAULT_HISTORY_RETENTION,
    ...integer(1, MAX_COUNT),
  }),
  historyDays: option({
    flag: "history-days",
    env: "PARLEY_HISTORY_DAYS",
    arg: "N",
    group: "Storage",
    help: "Days a message is kept; 0 keeps messages regardless of age.",
    default: 0,
    ...integer(0, MAX_HISTORY_DAYS),
  }),
  presenceTtl: option({
    flag: "presence-ttl",
    env: "PARLEY_PRESENCE_TTL",
    arg: "DURATION",
    group: "Presence",
    help: "How long a node's presence entry outlives its last refresh, so a crashed node's " +
      "users go offline.",
    default: DEFAULT_PRESENCE_TTL_S,
    defaultText: `${DEFAULT_PRESENCE_TTL_S} (seconds)`,
    ...duration(1, MAX_DURATION_S),
  }),
  presenceEventsMax: option({
    flag: "presence-events-max",
    env: "PARLEY_PRESENCE_EVENTS_MAX",
    arg: "N",
    group: "Presence",
    help: "Rooms with more members than this get no user_joined/user_left events " +
      "(presence queries still work); 0 turns the events off.",
    default: DEFAULT_PRESENCE_EVENTS_MAX,
    ...integer(0, MAX_COUNT),
  }),
  jwtSecret: option({
    flag: "jwt-secret",
    env: "PARLEY_JWT_SECRET",
    arg: "SECRET",
    group: "Authentication",
    help: `HS256 secret of at least ${MIN_SECRET_BYTES} bytes; turns on token mode. ` +
      "Prefer the environment variable: flags show in ps.",
    default: undefined,
    secret: true,
    parse: (text) => utf8Bytes(text) >= MIN_SECRET_BYTES ? text : undefined,
    expected: `a secret of at least ${MIN_SECRET_BYTES} bytes of UTF-8`,
  }),
  jwks: option({
    flag: "jwks",
    env: "PARLEY_JWKS",
    arg: "FILE",
    group: "Authentication",
    help: "JSON Web Key Set file of RS256/ES256/EdDSA public keys; turns on token mode. " +
      "Not with --jwt-secret.",
    default: undefined,
    ...matching(/./, "a file path"),
  }),
  jwtIssuer: option({
    flag: "jwt-issuer",
    env: "PARLEY_JWT_ISSUER",
    arg: "ISS",
    group: "Authentication",
    help: "Required iss claim of tokens (needs --jwt-secret or --jwks).",
    default: undefined,
    ...matching(/./, "a non-empty string"),
  }),
  jwtAudience: option({
    flag: "jwt-audience",
    env: "PARLEY_JWT_AUDIENCE",
    arg: "AUD",
    group: "Authentication",
    help: "Required aud claim of tokens (needs --jwt-secret or --jwks).",
    default: undefined,
    ...matching(/./, "a non-empty string"),
  }),
  allowedOrigin: option<string>({
    flag: "allowed-origin",
    env: "PARLEY_ALLOWED_ORIGIN",
    arg: "ORIGIN",
    group: "Authentication",
    help: "Browser origin allowed to connect besides the server's own host, as " +
      "scheme://host[:port], or * for any. Repeatable; the variable is comma-separated.",
    default: undefined,
    defaultText: "none (only the server's own host)",
    json: "list",
    multiple: true,
    parse: origin,
    expected: "an origin scheme://host[:port] with no path, such as https://chat.example.com, " +
      "or *",
  }),
  apiKey: option({
    flag: "api-key",
    env: "PARLEY_API_KEY",
    arg: "KEY",
    group: "Authentication",
    help: `Bearer key of at least ${MIN_API_KEY_CHARS} characters for ` +
      "POST /api/rooms/{room}/messages; the route is off without it.",
    default: undefined,
    secret: true,
    parse: (text) => text.length >= MIN_API_KEY_CHARS ? text : undefined,
    expected: `a key of at least ${MIN_API_KEY_CHARS} characters`,
  }),
  rate: option({
    flag: "rate",
    env: "PARLEY_RATE",
    arg: "N",
    group: "Abuse",
    help: "Frames per second one connection may send, on average (may be fractional). " +
      "Every frame counts, of any type (join, history, typing, ping), not only chat messages.",
    default: DEFAULT_RATE,
    ...positiveNumber(MAX_RATE),
  }),
  burst: option({
    flag: "burst",
    env: "PARLEY_BURST",
    arg: "N",
    group: "Abuse",
    help: "Frames one connection may send at once before --rate applies.",
    default: DEFAULT_BURST,
    ...integer(1, MAX_RATE),
  }),
  rateLimitStrikes: option({
    flag: "rate-limit-strikes",
    env: "PARLEY_RATE_LIMIT_STRIKES",
    arg: "N",
    group: "Abuse",
    help: "rate_limited errors in a row after which the connection is closed with 1008.",
    default: DEFAULT_RATE_LIMIT_STRIKES,
    ...integer(1, MAX_COUNT),
  }),
  cert: option({
    flag: "cert",
    env: "PARLEY_CERT",
    arg: "FILE",
    group: "TLS",
    help: "PEM certificate chain; with --key, serves HTTPS and WSS.",
    default: undefined,
    ...matching(/./, "a file path"),
  }),
  key: option({
    flag: "key",
    env: "PARLEY_KEY",
    arg: "FILE",
    group: "TLS",
    help: "PEM private key for --cert.",
    default: undefined,
    ...matching(/./, "a file path"),
  }),
};

/** An option of any value type, for code that handles every option alike. */
export type AnySpec = OptionSpec<unknown>;

/** The flag and variable naming the config file; not an option, since the file cannot set it. */
export const CONFIG_FLAG = "config";
export const CONFIG_ENV = "PARLEY_CONFIG";

/** Every option in help order, and every option by its flag. */
export const SPECS: readonly AnySpec[] = Object.values(OPTIONS) as AnySpec[];
export const BY_FLAG: ReadonlyMap<string, AnySpec> = new Map(
  SPECS.map((spec) => [spec.flag, spec]),
);

/** Every environment variable the server reads, for `--allow-env=` in the compiled binary. */
export const ENV_VARS: readonly string[] = [...SPECS.map((spec) => spec.env), CONFIG_ENV];

/** Returns the config-file key of a flag: `max-frame-bytes` becomes `maxFrameBytes`. */
export function camelCase(flag: string): string {
  return flag.replace(/-([a-z])/g, (_, letter: string) => letter.toUpperCase());
}
