/**
 * Server configuration: the one place that knows every option, where it comes from, its default
 * and what values it allows. {@link parseConfig} turns command-line arguments, environment
 * variables and an optional JSON config file into a validated {@link Config}.
 *
 * Precedence, per option: **flag > environment variable > config file > default**. The first
 * source that sets an option supplies its whole value; sources are never merged, so a repeatable
 * `--allowed-origin` on the command line replaces `PARLEY_ALLOWED_ORIGIN` and the file's
 * `allowedOrigin` list rather than adding to them. A lower source that disagrees with a higher one
 * is ignored without a warning and its value is not parsed (though the config file's keys and JSON
 * types are always checked).
 *
 * Sources:
 * - Flags: `--name value` or `--name=value`; `-h`/`--help` and `-V`/`--version` are the only short
 *   forms. A repeated single-valued flag keeps its last value.
 * - Environment: each option has one variable (see {@link ENV_VARS}); an empty variable counts as
 *   unset, so `PARLEY_JWT_SECRET=` in a compose file turns nothing on.
 * - Config file (`--config FILE` or `PARLEY_CONFIG`): a JSON object whose keys are the flag names
 *   in camelCase (`{"port": 9000, "allowedOrigin": ["https://chat.example"]}`). Kebab-case keys
 *   and unknown keys are errors that name the key. Numeric options accept a JSON number or a
 *   string (`"1MiB"`, `"2m"`); `allowedOrigin` is an array of strings. The path is relative to the
 *   working directory.
 *
 * Invariants:
 * - {@link parseConfig} is pure: it never exits, prints or reads the environment directly; it reads
 *   only the variables named in {@link ENV_VARS}, and touches the file system only through
 *   `options.readFile` (defaulting to `Deno.readTextFileSync`), and only when a config file is
 *   named.
 * - Every failure is one line starting with `parley: ` that names the flag (or file key), the value
 *   and what is allowed; the caller prints it and exits with {@link EXIT_USAGE}. Secret values are
 *   never echoed, in errors or in {@link summarize}.
 * - A {@link Config} is fully resolved: every default is applied and every cross-option rule
 *   holds (content limit below the frame limit, `--cert` with `--key`, and so on).
 */
import { parseArgs } from "node:util";
import { z } from "zod";
import { MIN_SECRET_BYTES } from "../auth/mod.ts";
import { ROOM_NAME, utf8Bytes } from "../message.ts";
import denoJson from "../deno.json" with { type: "json" };

/** Exit status for a usage error, as for any command-line tool that rejects its arguments. */
export const EXIT_USAGE = 2;

const KIB = 1024;
const MIB = 1024 * KIB;
const GIB = 1024 * MIB;

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
const DEFAULT_STORE = "sqlite:./parley.db";
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
/** Default per-connection token bucket: refill rate in messages/s, and burst capacity. */
const DEFAULT_RATE = 10;
const DEFAULT_BURST = 20;
const MAX_RATE = 1_000_000;
/** Default rate-limit errors in a row before a close with 1008. */
const DEFAULT_RATE_LIMIT_STRIKES = 10;
/** Default connection caps, for the node and per client IP address. */
const DEFAULT_MAX_CONNECTIONS = 10_000;
const DEFAULT_MAX_CONNECTIONS_PER_IP = 100;
/** Upper bound for counts that have no natural one. */
const MAX_COUNT = 1_000_000_000;
/** Longest value quoted back in an error line, in characters. */
const MAX_QUOTED_CHARS = 80;

/** A LogTape log level. */
export type LogLevel = "trace" | "debug" | "info" | "warning" | "error" | "fatal";
/** How log records are written: one JSON object per line, or coloured text for people. */
export type LogFormat = "json" | "pretty";

/** The validated, fully resolved server configuration. Keys are the flags in camelCase. */
export interface Config {
  /** TCP port to listen on; 0 lets the system choose. */
  port: number;
  /** Interface to listen on. */
  host: string;
  /** Room every connection joins on open; matches `ROOM_NAME`. */
  defaultRoom: string;
  /** Hard limit on one inbound frame, in bytes. */
  maxFrameBytes: number;
  /** Longest message `content`, in UTF-16 code units; less than `maxFrameBytes`. */
  maxContentChars: number;
  /** Most frames queued for one connection before it is closed with 4008. */
  outboxMessages: number;
  /** Most bytes queued for one connection before it is closed with 4008; ≥ `maxFrameBytes`. */
  outboxBytes: number;
  /** Seconds a client may leave a WebSocket ping unanswered before it is closed; 0 disables. */
  idleTimeout: number;
  /** Lowest log level recorded. */
  logLevel: LogLevel;
  /** Log record format. */
  logFormat: LogFormat;
  /** Message store URL: `memory:`, `sqlite:<path>`, or `redis://…`/`rediss://…`. */
  store: string;
  /** Messages kept per conversation. */
  historyLimit: number;
  /** Days a message is kept; 0 keeps messages regardless of age. */
  historyDays: number;
  /** Redis URL for a cluster; when set, `store` and `broker` default to it. */
  redis?: string;
  /** Broker URL: the `redis` URL when set, else `memory:`. Derived, not an option. */
  broker: string;
  /** Seconds a presence entry lives without a refresh. */
  presenceTtl: number;
  /** Rooms with more members than this get no `user_joined`/`user_left` events. */
  presenceEventsMax: number;
  /** HS256 secret (at least 32 UTF-8 bytes); turns on token mode. */
  jwtSecret?: string;
  /** Path of a JWKS file with public keys; turns on token mode. */
  jwks?: string;
  /** Required `iss` claim. */
  jwtIssuer?: string;
  /** Required `aud` claim. */
  jwtAudience?: string;
  /** Browser origins allowed to connect besides the server's own; `*` allows any. */
  allowedOrigin: string[];
  /** Messages per second per connection (token bucket refill rate). */
  rate: number;
  /** Messages a connection may send at once (token bucket capacity). */
  burst: number;
  /** Consecutive `rate_limited` errors before a close with 1008. */
  rateLimitStrikes: number;
  /** Most open WebSocket connections on this node. */
  maxConnections: number;
  /** Most open WebSocket connections from one IP address. */
  maxConnectionsPerIp: number;
  /** Bearer key for `POST /api/rooms/{room}/messages`; the route is off without it. */
  apiKey?: string;
  /** Path of a PEM certificate chain; with `key`, serves HTTPS/WSS. */
  cert?: string;
  /** Path of the PEM private key for `cert`. */
  key?: string;
  /** Path of the config file that was read, if any. Derived, not an option. */
  configFile?: string;
}

/** What {@link parseConfig} decided: run with a config, print help or version, or fail. */
export type ConfigResult =
  | { kind: "run"; config: Config }
  | { kind: "help"; text: string }
  | { kind: "version"; text: string }
  | { kind: "error"; error: string; exitCode: typeof EXIT_USAGE };

/** Inputs of {@link parseConfig} that are not arguments or environment. */
export interface ParseConfigOptions {
  /** Whether stdout is a terminal; picks the default `--log-format`. Defaults to false. */
  isTerminal?: boolean;
  /** Reads the config file; defaults to `Deno.readTextFileSync`. */
  readFile?: (path: string) => string;
}

/** Environment lookup: a record such as `Deno.env.toObject()`, or a getter such as `Deno.env.get`. */
export type EnvSource =
  | Record<string, string | undefined>
  | ((name: string) => string | undefined);

// ---------------------------------------------------------------------------------------------
// Value parsers: each pairs a parse function with the "expected …" text of its error line.

interface Parser<T> {
  /** The value, or undefined when the text is not allowed. */
  parse(text: string): T | undefined;
  /** What is allowed, completing "expected …". */
  expected: string;
}

const INTEGER = /^-?[0-9]+$/;

function range(min: number, max: number, unit = ""): string {
  return max >= MAX_COUNT ? `of at least ${min}${unit}` : `from ${min}${unit} to ${max}${unit}`;
}

function integer(min: number, max: number): Parser<number> {
  return {
    parse(text) {
      if (!INTEGER.test(text)) return undefined;
      const n = Number(text);
      return n >= min && n <= max ? n : undefined;
    },
    expected: `an integer ${range(min, max)}`,
  };
}

function positiveNumber(max: number): Parser<number> {
  return {
    parse(text) {
      if (!/^[0-9]+(\.[0-9]+)?$|^\.[0-9]+$/.test(text)) return undefined;
      const n = Number(text);
      return n > 0 && n <= max ? n : undefined;
    },
    expected: `a number greater than 0 and at most ${max}`,
  };
}

const BYTE_UNITS: Readonly<Record<string, number>> = { "": 1, b: 1, kib: KIB, mib: MIB, gib: GIB };

/** Formats a byte count with the largest binary unit that divides it exactly. */
function formatBytes(bytes: number): string {
  if (bytes >= GIB && bytes % GIB === 0) return `${bytes / GIB}GiB`;
  if (bytes >= MIB && bytes % MIB === 0) return `${bytes / MIB}MiB`;
  if (bytes >= KIB && bytes % KIB === 0) return `${bytes / KIB}KiB`;
  return String(bytes);
}

function byteSize(min: number, max: number): Parser<number> {
  return {
    parse(text) {
      const match = /^([0-9]+)\s*([A-Za-z]*)$/.exec(text);
      const unit = BYTE_UNITS[(match?.[2] ?? "").toLowerCase()];
      if (match === null || unit === undefined) return undefined;
      const n = Number(match[1]) * unit;
      return n >= min && n <= max ? n : undefined;
    },
    expected: `a size in bytes, optionally with B, KiB, MiB or GiB, from ${formatBytes(min)} to ${
      formatBytes(max)
    }`,
  };
}

const DURATION_UNITS: Readonly<Record<string, number>> = { "": 1, s: 1, m: 60, h: 3600 };

function duration(min: number, max: number): Parser<number> {
  return {
    parse(text) {
      const match = /^([0-9]+)([a-z]?)$/.exec(text);
      const unit = DURATION_UNITS[match?.[2] ?? ""];
      if (match === null || unit === undefined) return undefined;
      const n = Number(match[1]) * unit;
      return n >= min && n <= max ? n : undefined;
    },
    expected: `a duration in seconds, optionally with s, m or h, from ${min} to ${max} seconds`,
  };
}

function oneOf<const T extends string>(values: readonly T[]): Parser<T> {
  return {
    parse: (text) => values.find((value) => value === text),
    expected: `one of ${values.join(", ")}`,
  };
}

function matching(pattern: RegExp, expected: string): Parser<string> {
  return { parse: (text) => pattern.test(text) ? text : undefined, expected };
}

function redisUrl(text: string): string | undefined {
  if (!/^rediss?:\/\//.test(text)) return undefined;
  try {
    return new URL(text).hostname === "" ? undefined : text;
  } catch {
    return undefined;
  }
}

function storeUrl(text: string): string | undefined {
  if (text === "memory:") return text;
  if (text.startsWith("sqlite:")) return text.length > "sqlite:".length ? text : undefined;
  return redisUrl(text);
}

// Scheme, host name or bracketed IPv6 address, optional port; no path, not even "/".
const ORIGIN = /^[a-z][a-z0-9+.-]*:\/\/([a-z0-9-]+(\.[a-z0-9-]+)*|\[[0-9a-f:.]+\])(:[0-9]{1,5})?$/i;

function origin(text: string): string | undefined {
  if (text === "*") return text;
  const match = ORIGIN.exec(text);
  if (match === null) return undefined;
  const port = match[3] === undefined ? 0 : Number(match[3].slice(1));
  // Browsers send the scheme and host in lower case, so store them that way.
  return port <= 65535 ? text.toLowerCase() : undefined;
}

// ---------------------------------------------------------------------------------------------
// The options. Help text, the env list and config-file keys are all generated from this table.

type Group = "Server" | "Limits" | "Storage" | "Presence" | "Authentication" | "Abuse" | "TLS";

interface OptionSpec<T> extends Parser<T> {
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
const OPTIONS = {
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
    help: "Most open WebSocket connections on this node; beyond it, close 1013.",
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
    help: "Messages per second one connection may send, on average (may be fractional).",
    default: DEFAULT_RATE,
    ...positiveNumber(MAX_RATE),
  }),
  burst: option({
    flag: "burst",
    env: "PARLEY_BURST",
    arg: "N",
    group: "Abuse",
    help: "Messages one connection may send at once before --rate applies.",
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

type OptionKey = keyof typeof OPTIONS;
type AnySpec = OptionSpec<unknown>;

const CONFIG_FLAG = "config";
const CONFIG_ENV = "PARLEY_CONFIG";

const SPECS: readonly AnySpec[] = Object.values(OPTIONS) as AnySpec[];
const BY_FLAG: ReadonlyMap<string, AnySpec> = new Map(SPECS.map((spec) => [spec.flag, spec]));

/** Every environment variable the server reads, for `--allow-env=` in the compiled binary. */
export const ENV_VARS: readonly string[] = [...SPECS.map((spec) => spec.env), CONFIG_ENV];

function camelCase(flag: string): string {
  return flag.replace(/-([a-z])/g, (_, letter: string) => letter.toUpperCase());
}

// ---------------------------------------------------------------------------------------------
// Help and version

const USAGE_HINT = "(see parley --help)";

/** Width help text is wrapped to, in columns. */
const HELP_WIDTH = 96;
/** Column at which an option's environment variable is shown in help. */
const HELP_ENV_COLUMN = 44;
const HELP_INDENT = "      ";

function wrap(text: string, indent: string): string[] {
  const lines: string[] = [];
  let line = indent;
  for (const word of text.split(" ")) {
    if (line !== indent && line.length + 1 + word.length > HELP_WIDTH) {
      lines.push(line);
      line = indent;
    }
    line += line === indent ? word : ` ${word}`;
  }
  lines.push(line);
  return lines;
}

/** Returns the `--help` text: usage, precedence, and every option with its variable and default. */
export function helpText(): string {
  const lines = [
    "Usage: parley [options]",
    "       parley token --sub USER [--name NAME] [--ttl TTL]   (mints a token; see --help there)",
    "",
    "Parley: a WebSocket chat server (WebSocket at /ws, HTTP API under /api, browser client at /).",
    "",
    ...wrap(
      "Each option is taken from the first of these that sets it: its flag, its environment " +
        "variable, the config file (--config), its default. A flag wins over the variable and " +
        "the variable over the file, silently; values from different sources are never merged, " +
        "lists included. An empty variable counts as unset. Sizes take B, KiB, MiB or GiB " +
        "(64KiB); durations are seconds, or take s, m or h (2m). Write --name value or " +
        "--name=value.",
      "",
    ),
  ];
  let group: Group | undefined;
  for (const spec of SPECS) {
    if (spec.group !== group) {
      group = spec.group;
      lines.push("", `${group}:`);
    }
    const usage = `  --${spec.flag} ${spec.arg}${spec.multiple ? " ..." : ""}`;
    lines.push(
      `${usage.padEnd(HELP_ENV_COLUMN - 1)} env ${spec.env}`,
      ...wrap(`${spec.help} Default: ${spec.defaultText}.`, HELP_INDENT),
    );
  }
  lines.push(
    "",
    "Other:",
    `${`  --${CONFIG_FLAG} FILE`.padEnd(HELP_ENV_COLUMN - 1)} env ${CONFIG_ENV}`,
    ...wrap(
      "JSON file of options keyed by flag name in camelCase, e.g. " +
        '{"port": 9000, "maxFrameBytes": "1MiB", "allowedOrigin": ["https://chat.example"]}. ' +
        "Unknown keys are errors. A relative path is from the working directory. Default: unset.",
      HELP_INDENT,
    ),
    "  -h, --help",
    `${HELP_INDENT}Print this help and exit.`,
    "  -V, --version",
    `${HELP_INDENT}Print the version and exit.`,
    "",
    `A usage error prints one line and exits with status ${EXIT_USAGE}.`,
  );
  return lines.join("\n") + "\n";
}

/** Returns the `--version` text, `parley <version>` from deno.json. */
export function versionText(): string {
  return `parley ${denoJson.version}`;
}

// ---------------------------------------------------------------------------------------------
// Resolution

/** A usage error carrying its finished line; thrown internally, returned as a result. */
class UsageError extends Error {
  constructor(message: string) {
    super(`parley: ${message}`);
    this.name = "UsageError";
  }
}

/** A raw value and where it came from, for the error line. */
interface Raw {
  /** The strings to parse: one, or several for a repeatable option. */
  texts: string[];
  /** How the source is named after the flag: "" for a flag, " (from PORT)" otherwise. */
  from: string;
}

function quote(text: string): string {
  return text.length > MAX_QUOTED_CHARS
    ? `${JSON.stringify(text.slice(0, MAX_QUOTED_CHARS))}…`
    : JSON.stringify(text);
}

function show(spec: AnySpec, text: string): string {
  return spec.secret ? `<hidden, ${utf8Bytes(text)} bytes>` : quote(text);
}

function invalid(spec: AnySpec, from: string, shown: string, expected = spec.expected): UsageError {
  return new UsageError(`invalid value for --${spec.flag}${from}: ${shown} (expected ${expected})`);
}

function splitList(text: string): string[] {
  return text.split(",").map((part) => part.trim()).filter((part) => part !== "");
}

/** Walks the argument tokens: help and version first, then the first error, then flag values. */
function readArgs(args: string[]): ConfigResult | Map<string, string[]> {
  const options: Record<string, { type: "string" | "boolean"; short?: string }> = {
    help: { type: "boolean", short: "h" },
    version: { type: "boolean", short: "V" },
    [CONFIG_FLAG]: { type: "string" },
  };
  for (const spec of SPECS) options[spec.flag] = { type: "string" };
  const { tokens } = parseArgs({
    args,
    options,
    strict: false,
    allowPositionals: true,
    tokens: true,
  });
  if (tokens.some((t) => t.kind === "option" && t.name === "help")) {
    return { kind: "help", text: helpText() };
  }
  if (tokens.some((t) => t.kind === "option" && t.name === "version")) {
    return { kind: "version", text: versionText() };
  }
  const values = new Map<string, string[]>();
  for (const token of tokens) {
    if (token.kind === "positional") {
      throw new UsageError(`unexpected argument ${quote(token.value)} ${USAGE_HINT}`);
    }
    if (token.kind !== "option") continue;
    const spec = BY_FLAG.get(token.name);
    if (spec === undefined && token.name !== CONFIG_FLAG) {
      throw new UsageError(`unknown flag ${token.rawName} ${USAGE_HINT}`);
    }
    // parseArgs hands a string option the next argument even when it is another flag.
    if (token.value === undefined || (!token.inlineValue && token.value.startsWith("--"))) {
      const expected = spec?.expected ?? "a file path";
      throw new UsageError(
        `missing value for ${token.rawName} (expected ${expected}; ` +
          `write ${token.rawName}=VALUE for a value starting with --)`,
      );
    }
    const texts = spec?.multiple ? splitList(token.value) : [token.value];
    values.set(token.name, spec?.multiple ? [...(values.get(token.name) ?? []), ...texts] : texts);
  }
  return values;
}

function fileSchema() {
  const shape: Record<string, z.ZodType> = {};
  for (const spec of SPECS) {
    shape[camelCase(spec.flag)] = spec.json === "list"
      ? z.array(z.string()).optional()
      : spec.json === "number"
      ? z.union([z.number(), z.string()]).optional()
      : z.string().optional();
  }
  return z.strictObject(shape);
}

/** Reads and checks the config file; returns its raw values keyed by flag name. */
function readConfigFile(
  path: string,
  readFile: (path: string) => string,
): Map<string, Raw> {
  const where = `config file ${quote(path)}`;
  let text: string;
  try {
    text = readFile(path);
  } catch (error) {
    throw new UsageError(`cannot read ${where}: ${error instanceof Error ? error.message : error}`);
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new UsageError(
      `cannot parse ${where}: ${error instanceof Error ? error.message : error}`,
    );
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new UsageError(`cannot parse ${where}: expected a JSON object`);
  }
  const result = fileSchema().safeParse(value);
  if (!result.success) {
    const issue = result.error.issues[0];
    if (issue?.code === "unrecognized_keys") {
      const key = issue.keys[0] ?? "";
      const camel = camelCase(key);
      const hint = camel !== key && BY_FLAG.has(key) ? ` (write ${quote(camel)})` : "";
      throw new UsageError(`unknown key ${quote(key)} in ${where}${hint}`);
    }
    const key = String(issue?.path[0] ?? "");
    const spec = SPECS.find((s) => camelCase(s.flag) === key);
    if (spec === undefined) throw new UsageError(`cannot parse ${where}: invalid`);
    const record = value as Record<string, unknown>;
    const bad = issue?.path.length === 2 && Array.isArray(record[key])
      ? (record[key] as unknown[])[Number(issue.path[1])]
      : record[key];
    const json = JSON.stringify(bad) ?? String(bad);
    const shown = spec.secret
      ? "<hidden>"
      : json.length > MAX_QUOTED_CHARS
      ? `${json.slice(0, MAX_QUOTED_CHARS)}…`
      : json;
    const expected = spec.json === "list"
      ? `an array of strings, each ${spec.expected}`
      : undefined;
    throw invalid(spec, ` (from ${quote(key)} in ${where})`, shown, expected);
  }
  const raws = new Map<string, Raw>();
  for (const spec of SPECS) {
    const entry: unknown = result.data[camelCase(spec.flag)];
    if (entry === undefined) continue;
    const texts = Array.isArray(entry) ? entry.map(String) : [String(entry)];
    raws.set(spec.flag, { texts, from: ` (from ${quote(camelCase(spec.flag))} in ${where})` });
  }
  return raws;
}

/** Picks each option's raw value by precedence and parses it. */
class Resolver {
  readonly #flags: Map<string, string[]>;
  readonly #env: (name: string) => string | undefined;
  readonly #file: Map<string, Raw>;
  readonly #sources = new Map<string, Raw>();

  constructor(
    flags: Map<string, string[]>,
    env: (name: string) => string | undefined,
    file: Map<string, Raw>,
  ) {
    this.#flags = flags;
    this.#env = env;
    this.#file = file;
  }

  /** The raw value that wins for an option, or undefined when no source sets it. */
  raw(spec: AnySpec): Raw | undefined {
    const flag = this.#flags.get(spec.flag);
    if (flag !== undefined) return { texts: flag, from: "" };
    const env = this.#env(spec.env);
    if (env !== undefined && env !== "") {
      return { texts: spec.multiple ? splitList(env) : [env], from: ` (from ${spec.env})` };
    }
    return this.#file.get(spec.flag);
  }

  /** The option's parsed value, or undefined when no source sets it. */
  optional<T>(spec: OptionSpec<T>): T | undefined {
    const raw = this.raw(spec as AnySpec);
    if (raw === undefined) return undefined;
    this.#sources.set(spec.flag, raw);
    const text = raw.texts[0] ?? "";
    const value = spec.parse(text);
    if (value === undefined) throw invalid(spec as AnySpec, raw.from, show(spec as AnySpec, text));
    return value;
  }

  /** The option's parsed value, or its default. */
  get<T>(spec: OptionSpec<T>): T {
    const value = this.optional(spec) ?? spec.default;
    if (value === undefined) throw new TypeError(`Cannot resolve --${spec.flag}: no default`);
    return value;
  }

  /** Whether some source, not the default, set the option. */
  isSet(spec: AnySpec): boolean {
    return this.#sources.has(spec.flag);
  }

  /** The repeatable option's parsed values, or an empty list. */
  list(spec: OptionSpec<string>): string[] {
    const raw = this.raw(spec as AnySpec);
    if (raw === undefined) return [];
    this.#sources.set(spec.flag, raw);
    return raw.texts.map((text) => {
      const value = spec.parse(text);
      if (value === undefined) throw invalid(spec as AnySpec, raw.from, quote(text));
      return value;
    });
  }

  /** Fails on an option whose value breaks a rule that involves another option. */
  conflict(spec: AnySpec, expected: string): UsageError {
    const raw = this.#sources.get(spec.flag);
    const text = raw?.texts[0] ?? spec.defaultText;
    return invalid(spec, raw?.from ?? " (default)", show(spec, text), expected);
  }
}

/** An object type whose properties that may be undefined become optional ones instead. */
type DefinedOnly<T> =
  & { [K in keyof T as undefined extends T[K] ? never : K]: T[K] }
  & { [K in keyof T as undefined extends T[K] ? K : never]?: Exclude<T[K], undefined> };

/** Drops undefined properties, as `exactOptionalPropertyTypes` wants optional ones absent. */
function definedOnly<T extends object>(object: T): DefinedOnly<T> {
  return Object.fromEntries(
    Object.entries(object).filter(([, value]) => value !== undefined),
  ) as DefinedOnly<T>;
}

/**
 * Parses the command line, environment and config file into a {@link Config}, or decides to
 * print help or the version, or reports the first usage error. Never throws, exits or prints.
 *
 * @param args The arguments after the program name, such as `Deno.args`.
 * @param env Environment lookup; only the names in {@link ENV_VARS} are read.
 * @param options Terminal detection and file reading, injectable for tests.
 */
export function parseConfig(
  args: string[],
  env: EnvSource,
  options: ParseConfigOptions = {},
): ConfigResult {
  const getEnv = typeof env === "function" ? env : (name: string) => env[name];
  try {
    const flags = readArgs(args);
    if (!(flags instanceof Map)) return flags;
    const configEnv = getEnv(CONFIG_ENV);
    const configFile = flags.get(CONFIG_FLAG)?.at(-1) ??
      (configEnv === "" ? undefined : configEnv);
    const file = configFile === undefined
      ? new Map<string, Raw>()
      : readConfigFile(configFile, options.readFile ?? ((path) => Deno.readTextFileSync(path)));
    return { kind: "run", config: resolve(new Resolver(flags, getEnv, file), options, configFile) };
  } catch (error) {
    if (error instanceof UsageError) {
      return { kind: "error", error: error.message, exitCode: EXIT_USAGE };
    }
    throw error;
  }
}

function resolve(r: Resolver, options: ParseConfigOptions, configFile?: string): Config {
  const redis = r.optional(OPTIONS.redis);
  const config: Config = definedOnly({
    port: r.get(OPTIONS.port),
    host: r.get(OPTIONS.host),
    defaultRoom: r.get(OPTIONS.defaultRoom),
    maxFrameBytes: r.get(OPTIONS.maxFrameBytes),
    maxContentChars: r.get(OPTIONS.maxContentChars),
    outboxMessages: r.get(OPTIONS.outboxMessages),
    outboxBytes: r.get(OPTIONS.outboxBytes),
    idleTimeout: r.get(OPTIONS.idleTimeout),
    logLevel: r.get(OPTIONS.logLevel),
    logFormat: r.optional(OPTIONS.logFormat) ?? (options.isTerminal ? "pretty" : "json"),
    store: r.optional(OPTIONS.store) ?? redis ?? DEFAULT_STORE,
    historyLimit: r.get(OPTIONS.historyLimit),
    historyDays: r.get(OPTIONS.historyDays),
    redis,
    broker: redis ?? "memory:",
    presenceTtl: r.get(OPTIONS.presenceTtl),
    presenceEventsMax: r.get(OPTIONS.presenceEventsMax),
    jwtSecret: r.optional(OPTIONS.jwtSecret),
    jwks: r.optional(OPTIONS.jwks),
    jwtIssuer: r.optional(OPTIONS.jwtIssuer),
    jwtAudience: r.optional(OPTIONS.jwtAudience),
    allowedOrigin: r.list(OPTIONS.allowedOrigin),
    rate: r.get(OPTIONS.rate),
    burst: r.get(OPTIONS.burst),
    rateLimitStrikes: r.get(OPTIONS.rateLimitStrikes),
    maxConnections: r.get(OPTIONS.maxConnections),
    maxConnectionsPerIp: r.get(OPTIONS.maxConnectionsPerIp),
    apiKey: r.optional(OPTIONS.apiKey),
    cert: r.optional(OPTIONS.cert),
    key: r.optional(OPTIONS.key),
    configFile,
  });
  // Blame the option that was set: a default cannot be what the operator got wrong.
  if (config.maxContentChars >= config.maxFrameBytes) {
    throw r.isSet(OPTIONS.maxContentChars as AnySpec)
      ? r.conflict(
        OPTIONS.maxContentChars as AnySpec,
        `an integer less than --max-frame-bytes, which is ${config.maxFrameBytes}`,
      )
      : r.conflict(
        OPTIONS.maxFrameBytes as AnySpec,
        `a size greater than --max-content-chars, which is ${config.maxContentChars}`,
      );
  }
  if (config.outboxBytes < config.maxFrameBytes) {
    throw r.isSet(OPTIONS.outboxBytes as AnySpec)
      ? r.conflict(
        OPTIONS.outboxBytes as AnySpec,
        `a size of at least --max-frame-bytes, which is ${formatBytes(config.maxFrameBytes)}`,
      )
      : r.conflict(
        OPTIONS.maxFrameBytes as AnySpec,
        `a size of at most --outbox-bytes, which is ${formatBytes(config.outboxBytes)}`,
      );
  }
  if ((config.cert === undefined) !== (config.key === undefined)) {
    const [given, missing] = config.cert === undefined ? ["key", "cert"] : ["cert", "key"];
    throw new UsageError(`--${given} requires --${missing} (give both or neither)`);
  }
  const verifier = config.jwtSecret !== undefined || config.jwks !== undefined;
  for (const flag of ["jwt-issuer", "jwt-audience"] as const) {
    if (!verifier && config[camelCase(flag) as "jwtIssuer" | "jwtAudience"] !== undefined) {
      throw new UsageError(`--${flag} requires --jwt-secret or --jwks`);
    }
  }
  return config;
}

// ---------------------------------------------------------------------------------------------
// Summary

function redactUrl(url: string): string {
  if (!/^rediss?:\/\//.test(url)) return url;
  try {
    const parsed = new URL(url);
    if (parsed.password !== "") parsed.password = "***";
    return parsed.href;
  } catch {
    return url;
  }
}

/**
 * Returns the configuration as log fields for the start-up line, without secrets: `jwtSecret` and
 * `apiKey` become `"set"` when present (absent otherwise), and Redis passwords become `***`.
 */
export function summarize(config: Config): Record<string, unknown> {
  const { jwtSecret, apiKey, store, broker, redis, ...rest } = config;
  return definedOnly({
    ...rest,
    store: redactUrl(store),
    broker: redactUrl(broker),
    redis: redis === undefined ? undefined : redactUrl(redis),
    jwtSecret: jwtSecret === undefined ? undefined : "set",
    apiKey: apiKey === undefined ? undefined : "set",
  });
}
