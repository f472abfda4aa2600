/**
 * Tests for values.ts, through parseConfig() so the error line is checked whole: integer, number,
 * size, duration, URL and origin parsing, and the "expected …" text of each.
 */
import assert from "node:assert/strict";
import { config, error, file } from "./_testing.ts";

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
