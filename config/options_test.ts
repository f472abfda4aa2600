/**
 * Tests for options.ts: every option in the table is read from its flag, its environment variable
 * and its config-file key, ENV_VARS lists exactly what is read, and secrets have a floor.
 */
import assert from "node:assert/strict";
import { ENV_VARS, parseConfig } from "./mod.ts";
import { COMPANIONS, config, error, file, OPTION_CASES, PAIRED } from "./_testing.ts";

Deno.test("parseConfig() reads every option from its flag and from its environment variable", () => {
  for (const [flag, env, value, key, parsed] of OPTION_CASES) {
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
  for (const [flag, , value, key, parsed] of OPTION_CASES) {
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
  for (const [, env] of [...OPTION_CASES, ...PAIRED]) assert.ok(ENV_VARS.includes(env), env);
  assert.ok(ENV_VARS.includes("PARLEY_CONFIG"));
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
