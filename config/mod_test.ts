/**
 * Tests for mod.ts: the defaults, the rules between options (content below the frame limit,
 * --cert with --key, claims only with a verifier), values derived from others, and secret-free
 * summaries. Everything runs through parseConfig() with injected environment and file reader.
 */
import assert from "node:assert/strict";
import { summarize } from "./mod.ts";
import { API_KEY, config, DEFAULTS, error, SECRET } from "./_testing.ts";

Deno.test("parseConfig() applies every default when nothing is set", () => {
  assert.deepEqual(config([], {}), DEFAULTS);
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
