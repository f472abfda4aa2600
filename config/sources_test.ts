/**
 * Tests for sources.ts: precedence of flag over environment over file over default, how each
 * source is read and named in errors, and the config file's checks.
 */
import assert from "node:assert/strict";
import { parseConfig } from "./mod.ts";
import { config, DEFAULTS, error, file } from "./_testing.ts";

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
