/**
 * Tests of `token.ts`: minted tokens verify with `auth.ts` (real HS256, no mocks), the command's
 * flags, defaults and one-line usage errors, and the script run as a real subprocess.
 */
import assert from "node:assert/strict";
import { decodeJwt } from "jose";
import { createVerifier } from "./mod.ts";
import { DEFAULT_TTL_S, MAX_TTL_S, mintToken, parseTtl, tokenCommand } from "./token.ts";

const SECRET = "parley-test-secret-0123456789abcdef";
const NOW_MS = Date.UTC(2030, 0, 1);
const NOW_S = NOW_MS / 1000;

/** An environment holding only `vars`. */
function envOf(vars: Record<string, string> = {}): (name: string) => string | undefined {
  return (name) => vars[name];
}

Deno.test("mintToken() produces a token that createVerifier() accepts", async () => {
  const token = await mintToken({
    secret: SECRET,
    sub: "alice",
    name: "Alice",
    ttlSeconds: 900,
    issuer: "parley-test",
    audience: "parley",
    now: () => NOW_MS,
  });
  assert.deepEqual(decodeJwt(token), {
    sub: "alice",
    name: "Alice",
    iat: NOW_S,
    exp: NOW_S + 900,
    iss: "parley-test",
    aud: "parley",
  });
  const verifier = await createVerifier({
    secret: SECRET,
    issuer: "parley-test",
    audience: "parley",
    now: () => NOW_MS,
  });
  assert.deepEqual(await verifier.verify(token), {
    ok: true,
    identity: { user: "alice", name: "Alice", expiresAt: new Date((NOW_S + 900) * 1000) },
  });
});

Deno.test("mintToken() refuses what a Parley server would reject", async () => {
  const base = { secret: SECRET, sub: "alice", ttlSeconds: 60 };
  const rejections: [Parameters<typeof mintToken>[0], RegExp][] = [
    [{ ...base, secret: "short" }, /Cannot mint token: secret must be at least 32 bytes$/],
    [{ ...base, sub: "" }, /sub must be 1-64 characters/],
    [{ ...base, sub: "a".repeat(65) }, /sub must be 1-64 characters/],
    [{ ...base, name: "n".repeat(65) }, /name must be at most 64 characters/],
    [{ ...base, ttlSeconds: 0 }, /ttl must be/],
    [{ ...base, ttlSeconds: 1.5 }, /ttl must be/],
    [{ ...base, ttlSeconds: MAX_TTL_S + 1 }, /ttl must be/],
  ];
  for (const [options, message] of rejections) {
    await assert.rejects(mintToken(options), message);
  }
});

Deno.test("tokenCommand() prints a token that verifies, reading the secret from the env", async () => {
  const before = Math.floor(Date.now() / 1000);
  const { output, exitCode } = await tokenCommand(
    ["--", "--sub", "alice", "--name", "Alice", "--ttl", "15m"],
    envOf({ PARLEY_JWT_SECRET: SECRET }),
  );
  assert.equal(exitCode, 0, output);
  assert.doesNotMatch(output, /\s/);
  const verifier = await createVerifier({ secret: SECRET });
  const result = await verifier.verify(output);
  assert.ok(result.ok, JSON.stringify(result));
  assert.equal(result.identity.user, "alice");
  assert.equal(result.identity.name, "Alice");
  const { iat, exp } = decodeJwt(output);
  assert.ok(iat !== undefined && iat >= before);
  assert.equal(exp, (iat ?? 0) + 15 * 60);
});

Deno.test("tokenCommand() prefers --secret, defaults the ttl and reads issuer and audience", async () => {
  const { output, exitCode } = await tokenCommand(
    ["--sub=bob", `--secret=${SECRET}`],
    envOf({
      PARLEY_JWT_SECRET: "an-environment-secret-that-is-not-used",
      PARLEY_JWT_ISSUER: "iss-from-env",
      PARLEY_JWT_AUDIENCE: "aud-from-env",
    }),
  );
  assert.equal(exitCode, 0, output);
  const verifier = await createVerifier({
    secret: SECRET,
    issuer: "iss-from-env",
    audience: "aud-from-env",
  });
  assert.equal((await verifier.verify(output)).ok, true);
  const claims = decodeJwt(output);
  assert.equal(claims.sub, "bob");
  assert.equal(claims.name, undefined);
  assert.equal((claims.exp ?? 0) - (claims.iat ?? 0), DEFAULT_TTL_S);
});

Deno.test("parseTtl() accepts seconds and s, m, h, d suffixes only", () => {
  const accepted: [string, number][] = [
    ["90", 90],
    ["90s", 90],
    ["15m", 900],
    ["1h", 3600],
    ["7d", 604_800],
    ["365d", MAX_TTL_S],
  ];
  for (const [text, seconds] of accepted) assert.equal(parseTtl(text), seconds, text);
  for (const text of ["", "0", "0s", "-5", "1.5h", "1w", "1H", "h", "1 h", " 1h", "366d", "1e3"]) {
    assert.equal(parseTtl(text), undefined, text);
  }
});

Deno.test("tokenCommand() exits 2 with one line on usage errors", async () => {
  const env = envOf({ PARLEY_JWT_SECRET: SECRET });
  const cases: [string[], (name: string) => string | undefined, RegExp][] = [
    [["--sub", "alice", "--ttl", "soon"], env, /invalid --ttl "soon"/],
    [["--sub", "alice", "--ttl", "0"], env, /invalid --ttl "0"/],
    [["--sub", "alice", "--ttl", "400d"], env, /invalid --ttl "400d"/],
    [["--name", "Alice"], env, /--sub is required/],
    [["--sub"], env, /--sub needs a value/],
    [["--sub", "--name", "Alice"], env, /--sub needs a value/],
    [["--sub", "a", "--sub", "b"], env, /--sub given more than once/],
    [["--sub", "alice", "--role", "admin"], env, /unknown flag --role/],
    [["alice"], env, /unexpected argument "alice"/],
    [["--sub", "alice"], envOf(), /no secret/],
    [["--sub", "alice", "--secret", "short"], envOf(), /secret must be at least 32 bytes/],
    [["--sub", "a".repeat(65)], env, /sub must be 1-64 characters/],
  ];
  for (const [args, getEnv, message] of cases) {
    const { output, exitCode } = await tokenCommand(args, getEnv);
    assert.equal(exitCode, 2, `${args.join(" ")}: ${output}`);
    assert.match(output, /^Cannot mint token: /);
    assert.match(output, message);
    assert.doesNotMatch(output, /\n/);
  }
});

Deno.test("tokenCommand() prints usage for --help", async () => {
  const { output, exitCode } = await tokenCommand(["--help"], envOf());
  assert.equal(exitCode, 0);
  assert.match(output, /^Usage: token --sub USER/);
});

Deno.test("token.ts run as a script prints the token on stdout and exits with the code", async () => {
  const script = new URL("./token.ts", import.meta.url);
  async function run(args: string[]) {
    const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
      args: ["run", "--quiet", "--no-prompt", "--allow-env", script.href, ...args],
      cwd: new URL(".", import.meta.url),
      env: { PARLEY_JWT_SECRET: SECRET },
      stdout: "piped",
      stderr: "piped",
    }).output();
    const decoder = new TextDecoder();
    return { code, stdout: decoder.decode(stdout), stderr: decoder.decode(stderr) };
  }
  const ok = await run(["--", "--sub", "carol", "--ttl", "90"]);
  assert.equal(ok.code, 0, ok.stderr);
  assert.equal(ok.stderr, "");
  const verifier = await createVerifier({ secret: SECRET });
  const result = await verifier.verify(ok.stdout.trimEnd());
  assert.ok(result.ok && result.identity.user === "carol", JSON.stringify(result));

  const bad = await run(["--sub", "carol", "--ttl", "forever"]);
  assert.equal(bad.code, 2);
  assert.equal(bad.stdout, "");
  assert.match(bad.stderr, /^Cannot mint token: invalid --ttl "forever"/);
});
