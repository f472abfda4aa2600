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
 *
 * This file holds the contract, the entry points and the rules between options. The option table
 * is `options.ts`, the value parsers `values.ts`, the reading of each source `sources.ts`, and the
 * `--help` and `--version` text `help.ts`; import from this file, which re-exports what they share.
 */
import { EXIT_USAGE } from "./help.ts";
import {
  type AnySpec,
  camelCase,
  CONFIG_ENV,
  CONFIG_FLAG,
  DEFAULT_STORE,
  type LogFormat,
  type LogLevel,
  OPTIONS,
} from "./options.ts";
import { type Raw, readArgs, readConfigFile, Resolver, UsageError } from "./sources.ts";
import { formatBytes } from "./values.ts";

export { EXIT_USAGE, helpText, versionText } from "./help.ts";
export { ENV_VARS, type LogFormat, type LogLevel } from "./options.ts";

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
  /** Frames of any type per second per connection (token bucket refill rate). */
  rate: number;
  /** Frames a connection may send at once (token bucket capacity). */
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
