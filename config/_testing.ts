/**
 * Shared fixtures of the config tests: parseConfig() called with an injected environment and file
 * reader, expecting a config or a usage error, the defaults, and one valid value per option.
 */
import assert from "node:assert/strict";
import {
  type Config,
  type ConfigResult,
  EXIT_USAGE,
  parseConfig,
  type ParseConfigOptions,
} from "./mod.ts";

export const SECRET = "s".repeat(32);
export const API_KEY = "k".repeat(16);

export function run(
  args: string[],
  env: Record<string, string> = {},
  options: ParseConfigOptions = {},
): ConfigResult {
  return parseConfig(args, env, options);
}

export function config(
  args: string[],
  env: Record<string, string> = {},
  options: ParseConfigOptions = {},
): Config {
  const result = run(args, env, options);
  if (result.kind !== "run") assert.fail(`expected a config, got ${JSON.stringify(result)}`);
  return result.config;
}

export function error(
  args: string[],
  env: Record<string, string> = {},
  options: ParseConfigOptions = {},
): string {
  const result = run(args, env, options);
  if (result.kind !== "error") assert.fail(`expected an error, got ${JSON.stringify(result)}`);
  assert.equal(result.exitCode, EXIT_USAGE);
  assert.doesNotMatch(result.error, /\n/);
  return result.error;
}

export function file(json: unknown): ParseConfigOptions {
  const text = typeof json === "string" ? json : JSON.stringify(json);
  return { readFile: () => text };
}

export const DEFAULTS: Config = {
  port: 8080,
  host: "0.0.0.0",
  defaultRoom: "lobby",
  maxFrameBytes: 65536,
  maxContentChars: 4000,
  outboxMessages: 1024,
  outboxBytes: 1048576,
  idleTimeout: 60,
  logLevel: "info",
  logFormat: "json",
  store: "sqlite:./parley.db",
  historyLimit: 10000,
  historyDays: 0,
  broker: "memory:",
  presenceTtl: 30,
  presenceEventsMax: 1000,
  allowedOrigin: [],
  rate: 10,
  burst: 20,
  rateLimitStrikes: 10,
  maxConnections: 10000,
  maxConnectionsPerIp: 100,
};

/** Every option: flag, environment variable, a valid value, the key and the parsed value. */
export const OPTION_CASES: [
  flag: string,
  env: string,
  value: string,
  key: keyof Config,
  parsed: unknown,
][] = [
  ["port", "PORT", "9000", "port", 9000],
  ["host", "PARLEY_HOST", "127.0.0.1", "host", "127.0.0.1"],
  ["default-room", "PARLEY_DEFAULT_ROOM", "general", "defaultRoom", "general"],
  ["max-frame-bytes", "PARLEY_MAX_FRAME_BYTES", "131072", "maxFrameBytes", 131072],
  ["max-content-chars", "PARLEY_MAX_CONTENT_CHARS", "100", "maxContentChars", 100],
  ["outbox-messages", "PARLEY_OUTBOX_MESSAGES", "16", "outboxMessages", 16],
  ["outbox-bytes", "PARLEY_OUTBOX_BYTES", "2097152", "outboxBytes", 2097152],
  ["idle-timeout", "PARLEY_IDLE_TIMEOUT", "0", "idleTimeout", 0],
  ["log-level", "PARLEY_LOG_LEVEL", "warning", "logLevel", "warning"],
  ["log-format", "PARLEY_LOG_FORMAT", "pretty", "logFormat", "pretty"],
  ["store", "PARLEY_STORE", "memory:", "store", "memory:"],
  ["history-limit", "PARLEY_HISTORY_LIMIT", "1", "historyLimit", 1],
  ["history-days", "PARLEY_HISTORY_DAYS", "30", "historyDays", 30],
  ["redis", "PARLEY_REDIS_URL", "redis://localhost:6379", "redis", "redis://localhost:6379"],
  ["presence-ttl", "PARLEY_PRESENCE_TTL", "45", "presenceTtl", 45],
  ["presence-events-max", "PARLEY_PRESENCE_EVENTS_MAX", "0", "presenceEventsMax", 0],
  ["jwt-secret", "PARLEY_JWT_SECRET", SECRET, "jwtSecret", SECRET],
  ["jwks", "PARLEY_JWKS", "keys.json", "jwks", "keys.json"],
  ["allowed-origin", "PARLEY_ALLOWED_ORIGIN", "https://x.test", "allowedOrigin", [
    "https://x.test",
  ]],
  ["rate", "PARLEY_RATE", "0.5", "rate", 0.5],
  ["burst", "PARLEY_BURST", "5", "burst", 5],
  ["rate-limit-strikes", "PARLEY_RATE_LIMIT_STRIKES", "3", "rateLimitStrikes", 3],
  ["max-connections", "PARLEY_MAX_CONNECTIONS", "50", "maxConnections", 50],
  ["max-connections-per-ip", "PARLEY_MAX_CONNECTIONS_PER_IP", "2", "maxConnectionsPerIp", 2],
  ["api-key", "PARLEY_API_KEY", API_KEY, "apiKey", API_KEY],
];

/** Options that need a companion to be valid on their own. */
export const COMPANIONS: Record<string, [string[], Record<string, string>]> = {
  "jwt-issuer": [["--jwt-secret", SECRET], { PARLEY_JWT_SECRET: SECRET }],
  "jwt-audience": [["--jwks", "keys.json"], { PARLEY_JWKS: "keys.json" }],
  "cert": [["--key", "key.pem"], { PARLEY_KEY: "key.pem" }],
  "key": [["--cert", "cert.pem"], { PARLEY_CERT: "cert.pem" }],
};
export const PAIRED: [flag: string, env: string, value: string, key: keyof Config][] = [
  ["jwt-issuer", "PARLEY_JWT_ISSUER", "https://issuer.test", "jwtIssuer"],
  ["jwt-audience", "PARLEY_JWT_AUDIENCE", "parley", "jwtAudience"],
  ["cert", "PARLEY_CERT", "cert.pem", "cert"],
  ["key", "PARLEY_KEY", "key.pem", "key"],
];
