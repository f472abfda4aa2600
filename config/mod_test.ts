/**
 * Tests for config.ts: defaults, every option from each source, precedence, validation error
 * lines, size and duration suffixes, cross-option rules, help text and secret-free summaries.
 * Everything runs through {@link parseConfig} with injected environment and file reader.
 */
import assert from "node:assert/strict";
import {
  type Config,
  type ConfigResult,
  ENV_VARS,
  EXIT_USAGE,
  helpText,
  parseConfig,
  type ParseConfigOptions,
  summarize,
} from "./mod.ts";

const SECRET = "s".repeat(32);
const API_KEY = "k".repeat(16);

function run(
  args: string[],
  env: Record<string, string> = {},
  options: ParseConfigOptions = {},
): ConfigResult {
  return parseConfig(args, env, options);
}

function config(
  args: string[],
  env: Record<string, string> = {},
  options: ParseConfigOptions = {},
): Config {
  const result = run(args, env, options);
  if (result.kind !== "run") assert.fail(`expected a config, got ${JSON.stringify(result)}`);
  return result.config;
}

function error(
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

function file(json: unknown): ParseConfigOptions {
  const text = typeof json === "string" ? json : JSON.stringify(json);
  return { readFile: () => text };
}

const DEFAULTS: Config = {
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
const OPTIONS: [flag: string, env: string, value: string, key: keyof Config, parsed: unknown][] = [
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
const COMPANIONS: Record<string, [string[], Record<string, string>]> = {
  "jwt-issuer": [["--jwt-secret", SECRET], { PARLEY_JWT_SECRET: SECRET }],
  "jwt-audience": [["--jwks", "keys.json"], { PARLEY_JWKS: "keys.json" }],
  "cert": [["--key", "key.pem"], { PARLEY_KEY: "key.pem" }],
  "key": [["--cert", "cert.pem"], { PARLEY_CERT: "cert.pem" }],
};
const PAIRED: [flag: string, env: string, value: string, key: keyof Config][] = [
  ["jwt-issuer", "PARLEY_JWT_ISSUER", "https://issuer.test", "jwtIssuer"],
  ["jwt-audience", "PARLEY_JWT_AUDIENCE", "parley", "jwtAudience"],
  ["cert", "PARLEY_CERT", "cert.pem", "cert"],
  ["key", "PARLEY_KEY", "key.pem", "key"],
];

Deno.test("parseConfig() applies every default when nothing is set", () => {
  assert.deepEqual(config([], {}), DEFAULTS);
});

Deno.test("parseConfig() reads every option from its flag and from its environment variable", () => {
  for (const [flag, env, value, key, parsed] of OPTIONS) {
    assert.deepEqual(config([`--${flag}`, value])[key], parsed, `--${flag} ${value}`);
    assert.deepEqual(config([`--${flag}=${value}`])[key], parsed, `--${flag}=${value}`);
    assert.deepEqual(config([], { [env]: value })[key], parsed, `${env}=${value}`);
  }
  for (const [flag, env, value, key] of PAIRED) {
    const [companionArgs, companionEnv] = COMPANIONS[flag] ?? [[], {}];
    assert.equal(config([`--${flag}`, value, ...companionArgs])[key], value, `--${flag}`);
    assert.equal(config([], { [env]: value, ...companionEnv })[key], value, env);
  }
});

Deno.test("parseConfig() reads every option from the config file by its camelCase name", () => {
  for (const [flag, , value, key, parsed] of OPTIONS) {
    const json = { [key]: Array.isArray(parsed) ? parsed : value };
    assert.deepEqual(config(["--config", "parley.json"], {}, file(json))[key], parsed, flag);
  }
  // Numeric options also take JSON numbers.
  assert.equal(config(["--config", "f.json"], {}, file({ port: 9000 })).port, 9000);
  assert.equal(config(["--config", "f.json"], {}, file({ rate: 2.5 })).rate, 2.5);
});

Deno.test("parseConfig() lists ENV_VARS as exactly the variables it reads", () => {
  const read = new Set<string>();
  const result = parseConfig([], (name) => {
    read.add(name);
    return undefined;
  });
  assert.equal(result.kind, "run");
  assert.deepEqual([...read].sort(), [...ENV_VARS].sort());
  assert.equal(new Set(ENV_VARS).size, ENV_VARS.length);
  for (const [, env] of [...OPTIONS, ...PAIRED]) assert.ok(ENV_VARS.includes(env), env);
  assert.ok(ENV_VARS.includes("PARLEY_CONFIG"));
});

Deno.test("parseConfig() takes a flag over the environment over the file over the default", () => {
  const options = file({ port: 3000, host: "10.0.0.1", defaultRoom: "fromfile" });
  const env = { PORT: "4000", PARLEY_HOST: "10.0.0.2" };
  const result = config(["--config", "f.json", "--port", "5000"], env, options);
  assert.equal(result.port, 5000); // flag over environment and file
  assert.equal(result.host, "10.0.0.2"); // environment over file
  assert.equal(result.defaultRoom, "fromfile"); // file over default
  assert.equal(result.burst, 20); // default
  assert.equal(result.configFile, "f.json");
});

Deno.test("parseConfig() ignores, without validating, a lower source that a higher one overrides", () => {
  assert.equal(config(["--port", "1"], { PORT: "not a port" }).port, 1);
  assert.equal(config(["--config", "f"], { PORT: "2" }, file({ port: "bad" })).port, 2);
});

Deno.test("parseConfig() replaces a list from a lower source rather than merging", () => {
  const options = file({ allowedOrigin: ["https://file.test"] });
  const env = { PARLEY_ALLOWED_ORIGIN: "https://env.test, https://env2.test" };
  assert.deepEqual(config(["--config", "f"], {}, options).allowedOrigin, ["https://file.test"]);
  assert.deepEqual(config(["--config", "f"], env, options).allowedOrigin, [
    "https://env.test",
    "https://env2.test",
  ]);
  assert.deepEqual(
    config(
      ["--config", "f", "--allowed-origin", "https://a.test", "--allowed-origin=*"],
      env,
      options,
    )
      .allowedOrigin,
    ["https://a.test", "*"],
  );
});

Deno.test("parseConfig() treats an empty environment variable as unset", () => {
  assert.deepEqual(config([], { PORT: "", PARLEY_JWT_SECRET: "", PARLEY_CONFIG: "" }), DEFAULTS);
});

Deno.test("parseConfig() accepts the environment as a getter function", () => {
  const env: Record<string, string> = { PORT: "1234" };
  assert.equal(config([], {}).port, 8080);
  const result = parseConfig([], (name) => env[name]);
  assert.equal(result.kind === "run" && result.config.port, 1234);
});

Deno.test("parseConfig() keeps the last value of a repeated single-valued flag", () => {
  assert.equal(config(["--port", "1", "--port", "2"]).port, 2);
});

Deno.test("parseConfig() rejects unknown flags, stray arguments and missing values", () => {
  assert.equal(error(["--prot", "1"]), "parley: unknown flag --prot (see parley --help)");
  assert.equal(error(["-p", "1"]), "parley: unknown flag -p (see parley --help)");
  assert.equal(error(["serve"]), 'parley: unexpected argument "serve" (see parley --help)');
  assert.equal(
    error(["--port"]),
    "parley: missing value for --port (expected an integer from 0 to 65535; " +
      "write --port=VALUE for a value starting with --)",
  );
  assert.match(error(["--port", "--host", "x"]), /^parley: missing value for --port /);
});

Deno.test("parseConfig() answers --help and --version before anything else", () => {
  for (const args of [["--help"], ["-h"], ["--bogus", "-h"], ["--port", "x", "--help"]]) {
    const result = run(args);
    assert.equal(result.kind, "help", args.join(" "));
    assert.equal(result.kind === "help" && result.text, helpText());
  }
  for (const args of [["--version"], ["-V"]]) {
    const result = run(args);
    assert.equal(result.kind, "version");
    assert.match(result.kind === "version" ? result.text : "", /^parley \d+\.\d+\.\d+/);
  }
});

Deno.test("parseConfig() names the flag, the value and what is allowed for bad numbers", () => {
  const cases: [flag: string, value: string, expected: string][] = [
    ["port", "abc", "an integer from 0 to 65535"],
    ["port", "65536", "an integer from 0 to 65535"],
    ["port", "-1", "an integer from 0 to 65535"],
    ["port", "80.5", "an integer from 0 to 65535"],
    [
      "max-frame-bytes",
      "1023",
      "a size in bytes, optionally with B, KiB, MiB or GiB, " +
      "from 1KiB to 16MiB",
    ],
    [
      "max-frame-bytes",
      "17MiB",
      "a size in bytes, optionally with B, KiB, MiB or GiB, " +
      "from 1KiB to 16MiB",
    ],
    [
      "max-frame-bytes",
      "64KB",
      "a size in bytes, optionally with B, KiB, MiB or GiB, " +
      "from 1KiB to 16MiB",
    ],
    ["max-content-chars", "0", "an integer from 1 to 1000000"],
    ["max-content-chars", "1000001", "an integer from 1 to 1000000"],
    ["outbox-messages", "15", "an integer of at least 16"],
    [
      "outbox-bytes",
      "65535",
      "a size in bytes, optionally with B, KiB, MiB or GiB, " +
      "from 64KiB to 1GiB",
    ],
    [
      "idle-timeout",
      "1d",
      "a duration in seconds, optionally with s, m or h, " +
      "from 0 to 86400 seconds",
    ],
    [
      "idle-timeout",
      "-5",
      "a duration in seconds, optionally with s, m or h, " +
      "from 0 to 86400 seconds",
    ],
    ["history-limit", "0", "an integer of at least 1"],
    ["history-days", "-1", "an integer from 0 to 36500"],
    [
      "presence-ttl",
      "0",
      "a duration in seconds, optionally with s, m or h, " +
      "from 1 to 86400 seconds",
    ],
    ["presence-events-max", "many", "an integer of at least 0"],
    ["rate", "0", "a number greater than 0 and at most 1000000"],
    ["rate", "-1", "a number greater than 0 and at most 1000000"],
    ["rate", "fast", "a number greater than 0 and at most 1000000"],
    ["burst", "0", "an integer from 1 to 1000000"],
    ["rate-limit-strikes", "0", "an integer of at least 1"],
    ["max-connections", "0", "an integer of at least 1"],
    ["max-connections-per-ip", "1.5", "an integer of at least 1"],
  ];
  for (const [flag, value, expected] of cases) {
    assert.equal(
      error([`--${flag}`, value]),
      `parley: invalid value for --${flag}: ${JSON.stringify(value)} (expected ${expected})`,
    );
  }
});

Deno.test("parseConfig() names the source of a bad value from the environment or the file", () => {
  assert.equal(
    error([], { PORT: "abc" }),
    'parley: invalid value for --port (from PORT): "abc" (expected an integer from 0 to 65535)',
  );
  assert.equal(
    error(["--config", "p.json"], {}, file({ port: "abc" })),
    'parley: invalid value for --port (from "port" in config file "p.json"): "abc" ' +
      "(expected an integer from 0 to 65535)",
  );
  assert.equal(
    error(["--config", "p.json"], {}, file({ port: true })),
    'parley: invalid value for --port (from "port" in config file "p.json"): true ' +
      "(expected an integer from 0 to 65535)",
  );
});

Deno.test("parseConfig() rejects bad strings with the allowed values", () => {
  assert.equal(
    error(["--log-level", "warn"]),
    'parley: invalid value for --log-level: "warn" ' +
      "(expected one of trace, debug, info, warning, error, fatal)",
  );
  assert.equal(
    error(["--log-format", "text"]),
    'parley: invalid value for --log-format: "text" (expected one of json, pretty)',
  );
  assert.match(
    error(["--default-room", "no spaces"]),
    /^parley: invalid value for --default-room: /,
  );
  assert.match(error(["--host", "http://x"]), /^parley: invalid value for --host: "http:\/\/x" /);
  for (const store of ["postgres://x", "sqlite:", "memory", "redis://"]) {
    assert.equal(
      error(["--store", store]),
      `parley: invalid value for --store: ${JSON.stringify(store)} ` +
        "(expected memory:, sqlite:<path>, or a redis:// or rediss:// URL)",
    );
  }
  assert.match(error(["--redis", "http://x"]), /^parley: invalid value for --redis: "http:\/\/x" /);
});

Deno.test("parseConfig() accepts byte sizes with binary suffixes", () => {
  const cases: [string, number][] = [
    ["1048576", 1048576],
    ["1MiB", 1048576],
    ["512KiB", 524288],
    ["512kib", 524288],
    ["2 MiB", 2097152],
    ["1GiB", 1073741824],
    ["131072B", 131072],
  ];
  for (const [text, bytes] of cases) {
    assert.equal(config(["--outbox-bytes", text]).outboxBytes, bytes, text);
  }
  assert.equal(
    config(["--max-frame-bytes", "16MiB", "--outbox-bytes", "16MiB"]).maxFrameBytes,
    16 * 1024 * 1024,
  );
  assert.equal(
    config(["--config", "f"], {}, file({ maxFrameBytes: "1KiB", maxContentChars: 10 }))
      .maxFrameBytes,
    1024,
  );
});

Deno.test("parseConfig() accepts durations in seconds, minutes and hours", () => {
  const cases: [string, number][] = [["60", 60], ["60s", 60], ["2m", 120], ["1h", 3600], ["0", 0]];
  for (const [text, seconds] of cases) {
    assert.equal(config(["--idle-timeout", text]).idleTimeout, seconds, text);
  }
  assert.equal(config(["--presence-ttl", "5m"]).presenceTtl, 300);
});

Deno.test("parseConfig() rejects a short JWT secret without echoing it", () => {
  const short = "x".repeat(31);
  const line = error(["--jwt-secret", short]);
  assert.equal(
    line,
    "parley: invalid value for --jwt-secret: <hidden, 31 bytes> " +
      "(expected a secret of at least 32 bytes of UTF-8)",
  );
  assert.doesNotMatch(error([], { PARLEY_JWT_SECRET: short }), new RegExp(short));
  // Bytes of UTF-8 count, not characters: 11 euro signs are 33 bytes.
  assert.equal(config(["--jwt-secret", "€".repeat(11)]).jwtSecret, "€".repeat(11));
  assert.match(
    error(["--api-key", "short"]),
    /^parley: invalid value for --api-key: <hidden, 5 bytes> /,
  );
});

Deno.test("parseConfig() requires --cert and --key together", () => {
  assert.equal(error(["--cert", "c.pem"]), "parley: --cert requires --key (give both or neither)");
  assert.equal(error(["--key", "k.pem"]), "parley: --key requires --cert (give both or neither)");
  const both = config(["--cert", "c.pem", "--key", "k.pem"]);
  assert.equal(both.cert, "c.pem");
  assert.equal(both.key, "k.pem");
});

Deno.test("parseConfig() accepts both JWT verifiers and claims only with a verifier", () => {
  const both = config(["--jwt-secret", SECRET, "--jwks", "k.json"]);
  assert.equal(both.jwks, "k.json");
  assert.equal(both.jwtSecret, SECRET);
  assert.equal(
    error(["--jwt-issuer", "i"]),
    "parley: --jwt-issuer requires --jwt-secret or --jwks",
  );
  assert.equal(
    error(["--jwt-audience", "a"]),
    "parley: --jwt-audience requires --jwt-secret or --jwks",
  );
});

Deno.test("parseConfig() keeps content below the frame limit and the outbox above it", () => {
  assert.equal(
    error(["--max-content-chars", "65536"]),
    'parley: invalid value for --max-content-chars: "65536" ' +
      "(expected an integer less than --max-frame-bytes, which is 65536)",
  );
  // The option that was set takes the blame, not the default it collides with.
  assert.equal(
    error(["--max-frame-bytes", "2KiB"]),
    'parley: invalid value for --max-frame-bytes: "2KiB" ' +
      "(expected a size greater than --max-content-chars, which is 4000)",
  );
  assert.equal(
    error(["--max-frame-bytes", "2MiB"]),
    'parley: invalid value for --max-frame-bytes: "2MiB" ' +
      "(expected a size of at most --outbox-bytes, which is 1MiB)",
  );
  assert.equal(
    error(["--max-frame-bytes", "2MiB", "--outbox-bytes", "1MiB"]),
    'parley: invalid value for --outbox-bytes: "1MiB" ' +
      "(expected a size of at least --max-frame-bytes, which is 2MiB)",
  );
  assert.equal(
    config(["--max-frame-bytes", "2KiB", "--max-content-chars", "2047"]).maxFrameBytes,
    2048,
  );
});

Deno.test("parseConfig() points store and broker at --redis unless --store is given", () => {
  const redis = "redis://cache:6379/1";
  const clustered = config(["--redis", redis]);
  assert.equal(clustered.store, redis);
  assert.equal(clustered.broker, redis);
  const mixed = config(["--redis", redis, "--store", "sqlite:/data/p.db"]);
  assert.equal(mixed.store, "sqlite:/data/p.db");
  assert.equal(mixed.broker, redis);
  assert.equal(config(["--store", "rediss://cache:6380"]).broker, "memory:");
  assert.equal(config(["--store", "sqlite::memory:"]).store, "sqlite::memory:");
});

Deno.test("parseConfig() defaults the log format to pretty only on a terminal", () => {
  assert.equal(config([], {}, { isTerminal: true }).logFormat, "pretty");
  assert.equal(config([], {}, { isTerminal: false }).logFormat, "json");
  assert.equal(config(["--log-format", "json"], {}, { isTerminal: true }).logFormat, "json");
});

Deno.test("parseConfig() validates origins and stores them in lower case", () => {
  assert.deepEqual(
    config([
      "--allowed-origin",
      "https://Chat.Example.com",
      "--allowed-origin",
      "http://[::1]:3000",
    ])
      .allowedOrigin,
    ["https://chat.example.com", "http://[::1]:3000"],
  );
  for (const bad of ["https://x.test/", "x.test", "https://x.test/path", "https://x.test:99999"]) {
    assert.equal(
      error(["--allowed-origin", bad]),
      `parley: invalid value for --allowed-origin: ${JSON.stringify(bad)} ` +
        "(expected an origin scheme://host[:port] with no path, such as https://chat.example.com, " +
        "or *)",
    );
  }
});

Deno.test("parseConfig() reads the config file named by PARLEY_CONFIG", () => {
  let read = "";
  const result = config([], { PARLEY_CONFIG: "/etc/parley.json" }, {
    readFile: (path) => {
      read = path;
      return '{"port": 7000}';
    },
  });
  assert.equal(read, "/etc/parley.json");
  assert.equal(result.port, 7000);
  assert.equal(result.configFile, "/etc/parley.json");
  // The flag names the file over the variable.
  assert.equal(
    config(["--config", "a.json"], { PARLEY_CONFIG: "b.json" }, {
      readFile: (path) => path === "a.json" ? '{"port": 1}' : '{"port": 2}',
    }).port,
    1,
  );
});

Deno.test("parseConfig() rejects unknown and kebab-case keys in the config file", () => {
  assert.equal(
    error(["--config", "p.json"], {}, file({ port: 1, prot: 2 })),
    'parley: unknown key "prot" in config file "p.json"',
  );
  assert.equal(
    error(["--config", "p.json"], {}, file({ "max-frame-bytes": 2048 })),
    'parley: unknown key "max-frame-bytes" in config file "p.json" (write "maxFrameBytes")',
  );
  assert.equal(
    error(["--config", "p.json"], {}, file('{"__proto__": {"port": 1}}')),
    'parley: unknown key "__proto__" in config file "p.json"',
  );
});

Deno.test("parseConfig() reports a config file it cannot read or parse", () => {
  const missing = {
    readFile: (): string => {
      throw new Deno.errors.NotFound("No such file or directory (os error 2)");
    },
  };
  assert.equal(
    error(["--config", "nope.json"], {}, missing),
    'parley: cannot read config file "nope.json": No such file or directory (os error 2)',
  );
  assert.match(
    error(["--config", "p.json"], {}, file("{port: 1}")),
    /^parley: cannot parse config file "p.json": /,
  );
  assert.equal(
    error(["--config", "p.json"], {}, file([1])),
    'parley: cannot parse config file "p.json": expected a JSON object',
  );
  assert.match(
    error(["--config", "p.json"], {}, file({ allowedOrigin: "https://x.test" })),
    /^parley: invalid value for --allowed-origin \(from "allowedOrigin" in config file "p.json"\): "https:\/\/x.test" \(expected an array of strings/,
  );
});

Deno.test("helpText() lists every flag with its environment variable and default", () => {
  const help = helpText();
  const defaults: Record<string, string> = {
    "port": "8080",
    "host": "0.0.0.0",
    "default-room": "lobby",
    "max-frame-bytes": "65536 (64KiB)",
    "max-content-chars": "4000",
    "outbox-messages": "1024",
    "outbox-bytes": "1048576 (1MiB)",
    "idle-timeout": "60 (seconds)",
    "log-level": "info",
    "log-format": "pretty when stdout is a terminal, else json",
    "store": "sqlite:./parley.db, or the --redis URL when that is set",
    "history-limit": "10000",
    "history-days": "0",
    "redis": "unset",
    "presence-ttl": "30 (seconds)",
    "presence-events-max": "1000",
    "jwt-secret": "unset",
    "jwks": "unset",
    "jwt-issuer": "unset",
    "jwt-audience": "unset",
    "allowed-origin": "none (only the server's own host)",
    "rate": "10",
    "burst": "20",
    "rate-limit-strikes": "10",
    "max-connections": "10000",
    "max-connections-per-ip": "100",
    "api-key": "unset",
    "cert": "unset",
    "key": "unset",
    "config": "unset",
  };
  const envs = new Map([...OPTIONS, ...PAIRED].map(([flag, env]) => [flag, env]));
  envs.set("config", "PARLEY_CONFIG");
  // An option's block runs from its "  --flag" line to the next line that starts an option.
  const blocks = new Map<string, string>();
  for (const block of help.split(/\n(?= {2}-)/)) {
    const match = /^ {2}--([a-z-]+)/.exec(block);
    if (match?.[1] !== undefined) blocks.set(match[1], block.replace(/\s+/g, " "));
  }
  assert.deepEqual([...blocks.keys()].sort(), Object.keys(defaults).sort());
  for (const [flag, text] of Object.entries(defaults)) {
    const block = blocks.get(flag) ?? "";
    assert.ok(block.includes(`Default: ${text}.`), `--${flag} shows its default: ${block}`);
    assert.ok(block.includes(`env ${envs.get(flag)}`), `--${flag} shows its variable: ${block}`);
  }
  assert.match(help, /-h, --help/);
  assert.match(help, /-V, --version/);
  assert.match(help.replace(/\s+/g, " "), /its flag, its environment variable, the config file/);
  for (const line of help.split("\n")) assert.ok(line.length <= 100, line);
});

Deno.test("summarize() hides secrets and Redis passwords", () => {
  const redis = "redis://user:hunter2hunter2@cache:6379/0";
  const full = config([
    "--jwt-secret",
    SECRET,
    "--api-key",
    API_KEY,
    "--redis",
    redis,
  ]);
  const summary = summarize(full);
  assert.equal(summary.jwtSecret, "set");
  assert.equal(summary.apiKey, "set");
  assert.equal(summary.redis, "redis://user:***@cache:6379/0");
  assert.equal(summary.store, "redis://user:***@cache:6379/0");
  assert.equal(summary.broker, "redis://user:***@cache:6379/0");
  const text = JSON.stringify(summary);
  for (const secret of [SECRET, API_KEY, "hunter2"]) assert.ok(!text.includes(secret), secret);
  assert.equal(summary.port, 8080);

  const bare = summarize(config([]));
  assert.ok(!("jwtSecret" in bare));
  assert.ok(!("apiKey" in bare));
  assert.ok(!("redis" in bare));
  assert.equal(bare.store, "sqlite:./parley.db");
});
