/**
 * Tests `deno task compile` (deploy/compile.ts), with its output moved to a temporary directory:
 * it builds a standalone binary that, run from a fresh working directory with only the
 * permissions baked into it, answers `--version`, serves `/healthz` and the browser client, and
 * relays a chat between two clients into `./parley.db`.
 *
 * `deno compile` needs `denort`, the runtime it embeds the program into. The test never lets it be
 * downloaded: it runs only when one is already here — `DENORT_BIN`, a `denort` beside the `deno`
 * executable, or the release archive Deno caches at
 * `$DENO_DIR/dl/release/v<version>/denort-<target>.zip`. Otherwise it is registered as ignored,
 * with the reason in its name, and the reason is printed.
 */
import assert from "node:assert/strict";
import { dirname, join } from "node:path";
import { START_PERMISSIONS, TestSocket, textChunks } from "./helpers/server.ts";
import {
  compileArgs,
  DEFAULT_OUTPUT,
  denortMissing,
  parseOutput,
  permissionFlags,
  startPermissions,
} from "../deploy/compile.ts";

const ROOT = new URL("../", import.meta.url).pathname;
/** How long the compiled server may take to print its listen banner, in milliseconds. */
const START_TIMEOUT_MS = 30_000;
/** What Deno prints when an operation lacks a permission. */
const PERMISSION_ERROR = /NotCapable|PermissionDenied|Requires \w+ access|run again with --allow-/;

/** Where a usable denort is, and the environment `deno compile` needs to use it. */
type Denort = { found: true; env: Record<string, string>; where: string } | {
  found: false;
  reason: string;
};

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch {
    return false;
  }
}

async function isFile(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isFile;
  } catch {
    return false;
  }
}

/** Deno's cache directory, as `deno info` reports it (it reads `DENO_DIR` itself). */
async function denoDir(): Promise<string | undefined> {
  const { code, stdout } = await new Deno.Command(Deno.execPath(), {
    args: ["info", "--json"],
    stdout: "piped",
    stderr: "null",
  }).output();
  if (code !== 0) return undefined;
  const dir: unknown = JSON.parse(new TextDecoder().decode(stdout)).denoDir;
  return typeof dir === "string" ? dir : undefined;
}

/** Looks for a denort without downloading anything. */
async function findDenort(): Promise<Denort> {
  const fromEnv = Deno.env.get("DENORT_BIN");
  if (fromEnv !== undefined && fromEnv !== "") {
    return await isFile(fromEnv)
      ? { found: true, env: { DENORT_BIN: fromEnv }, where: `DENORT_BIN=${fromEnv}` }
      : { found: false, reason: `DENORT_BIN=${fromEnv} is not a file` };
  }
  const beside = join(dirname(Deno.execPath()), "denort");
  if (await isFile(beside)) return { found: true, env: { DENORT_BIN: beside }, where: beside };
  const cache = await denoDir();
  const zip = cache === undefined
    ? undefined
    : join(cache, "dl", "release", `v${Deno.version.deno}`, `denort-${Deno.build.target}.zip`);
  if (zip !== undefined && await isFile(zip)) return { found: true, env: {}, where: zip };
  return {
    found: false,
    reason: `no denort runtime available (set DENORT_BIN, or cache ${zip ?? "denort"})`,
  };
}

const denort = await findDenort();

Deno.test("compileArgs() bakes in the start task's permission set and skips bintrees' test data", () => {
  const config = {
    tasks: { start: "deno run -P=server main.ts" },
    permissions: { server: { net: true, read: ["."], env: ["PORT"], write: [".", "/var/x"] } },
  };
  const args = compileArgs({
    config,
    lockedNpm: ["zod@4.0.0", "bintrees@1.0.2", "tdigest@0.1.3"],
    denoDir: "/cache/deno",
    output: "/tmp/out/parley",
  });
  assert.deepEqual(args, [
    "compile",
    "--allow-net",
    "--allow-read=.",
    "--allow-write=.,/var/x",
    "--allow-env=PORT",
    "--include",
    "static/",
    "--exclude-unused-npm",
    "--exclude=/cache/deno/npm/registry.npmjs.org/bintrees/1.0.2/test",
    "--output",
    "/tmp/out/parley",
    "main.ts",
  ]);
});

Deno.test("startPermissions() reads the set the start task names, or explains why it cannot", () => {
  const permissions = { default: { net: true }, server: { read: ["."], run: false, sys: [] } };
  const flags = (start: string) => startPermissions({ tasks: { start }, permissions });
  assert.deepEqual(flags("deno run -P=server main.ts"), ["--allow-read=."]);
  assert.deepEqual(flags("deno run --permission-set=server main.ts"), ["--allow-read=."]);
  assert.deepEqual(flags("deno run -P main.ts"), ["--allow-net"]);
  assert.throws(() => flags("deno run --allow-net main.ts"), /from a set only, not --allow-net/);
  assert.throws(() => flags("deno run -A -P main.ts"), /from a set only, not -A/);
  assert.throws(() => flags("deno run main.ts"), /loads no permission set/);
  assert.throws(() => flags("deno run -P=other main.ts"), /no permission set "other"/);
  assert.throws(() => startPermissions({}), /no "start" task/);
  assert.throws(
    () => permissionFlags({ read: { allow: ["."], deny: ["./secret"] } }, "s"),
    /permission set "s" has "read" neither true, false nor a list of strings/,
  );
  assert.throws(() => permissionFlags({ all: true }, "s"), /unsupported key "all"/);
  assert.throws(() => permissionFlags({ read: ["a,b"] }, "s"), /with a comma in "read"/);
  assert.throws(() => permissionFlags(["--allow-net"], "s"), /is not an object/);
});

Deno.test("denortMissing() turns Deno's failure to get denort into one line", () => {
  const machine = { version: "2.9.6", target: "x86_64-unknown-linux-gnu", denoDir: "/cache" };
  // What Deno 2.9.6 prints offline, shortened.
  const offline = [
    "error: Writing deno compile executable to temporary file 'dist/parley.tmp-1'",
    "",
    "Caused by:",
    "    0: Setting up base binary.",
    "    1: error sending request for url (https://example.invalid/denort.zip): client error",
    "    2: dns error",
    "    3: failed to lookup address information: Name or service not known",
    "",
    "Stack backtrace:",
    "   0: <unknown>",
  ].join("\n");
  assert.equal(
    denortMissing(offline, machine),
    "Cannot compile: the denort runtime is missing (Deno could not download " +
      "denort-x86_64-unknown-linux-gnu.zip: failed to lookup address information: Name or " +
      "service not known); set DENORT_BIN to a denort 2.9.6 executable for " +
      "x86_64-unknown-linux-gnu, or put denort-x86_64-unknown-linux-gnu.zip in " +
      "/cache/dl/release/v2.9.6/",
  );
  const named = "error: Writing\n\nCaused by:\n    0: Could not find denort at '/opt/denort'\n";
  assert.equal(
    denortMissing(named, machine),
    "Cannot compile: the denort runtime is missing: DENORT_BIN=/opt/denort is no file; " +
      "set DENORT_BIN to a denort 2.9.6 executable for x86_64-unknown-linux-gnu",
  );
  assert.equal(denortMissing('error: Module not found "file:///x.ts".', machine), undefined);
});

// No DENORT_BIN, a Deno cache without the denort archive (the npm packages shared with the real
// cache, so nothing else is fetched) and a proxy on a closed port, so the download fails on any
// machine, online or not, and fails fast.
Deno.test({
  name: "deno task compile with no denort available says so in one line, without a backtrace",
  sanitizeOps: true,
  sanitizeResources: true,
  fn: async () => {
    const cache = await Deno.makeTempDir({ prefix: "parley-compile-cache-" });
    try {
      const real = await denoDir();
      assert.ok(real !== undefined, "deno info reports its cache directory");
      await Deno.symlink(join(real, "npm"), join(cache, "npm"));
      const env: Record<string, string> = {
        DENO_DIR: cache,
        HTTPS_PROXY: "http://127.0.0.1:1",
        NO_COLOR: "1",
      };
      for (const name of ["PATH", "HOME"]) {
        const value = Deno.env.get(name);
        if (value !== undefined) env[name] = value;
      }
      const { code, stderr } = await new Deno.Command(Deno.execPath(), {
        args: ["task", "--quiet", "compile", "--output", join(cache, "parley")],
        cwd: ROOT,
        clearEnv: true,
        env,
        stdout: "piped",
        stderr: "piped",
      }).output();
      const log = new TextDecoder().decode(stderr);
      assert.notEqual(code, 0, log);
      const lines = log.trimEnd().split("\n");
      const last = lines[lines.length - 1]!;
      assert.match(
        last,
        /^Cannot compile: the denort runtime is missing \(Deno could not download /,
      );
      assert.match(last, /; set DENORT_BIN to a denort \S+ executable for \S+, or put denort-/);
      assert.ok(last.endsWith(` in ${cache}/dl/release/v${Deno.version.deno}/`), last);
      assert.doesNotMatch(log, /^error|Caused by|Stack backtrace|<unknown>/m);
      assert.equal(await exists(join(cache, "parley")), false);
    } finally {
      await Deno.remove(cache, { recursive: true });
    }
  },
});

Deno.test("deploy/compile.ts takes --output and refuses anything else", () => {
  assert.equal(parseOutput([]), DEFAULT_OUTPUT);
  assert.equal(parseOutput(["--", "--output", "/tmp/p"]), "/tmp/p");
  assert.equal(parseOutput(["--output=/tmp/q"]), "/tmp/q");
  assert.deepEqual(parseOutput(["--target", "x"]), {
    error: 'unexpected argument "--target" (usage: --output PATH)',
  });
  assert.deepEqual(parseOutput(["--output="]), { error: "--output needs a path" });
});

// The deno executable is no denort (the result runs as the deno CLI, not as Parley), but it lets
// `deno compile` run to the end here without downloading anything: module graph, type check, npm
// packages and the baked flags. That is where Deno 2.9 overflowed its stack on bintrees.
Deno.test({
  name: "deno task compile gets through deno compile (the deno executable standing in for denort)",
  sanitizeOps: true,
  sanitizeResources: true,
  fn: async () => {
    const build = await Deno.makeTempDir({ prefix: "parley-compile-" });
    try {
      const output = join(build, "parley");
      const { code, stderr } = await new Deno.Command(Deno.execPath(), {
        args: ["task", "--quiet", "compile", "--output", output],
        cwd: ROOT,
        env: { DENORT_BIN: Deno.execPath() },
        stdout: "piped",
        stderr: "piped",
      }).output();
      const log = new TextDecoder().decode(stderr);
      assert.equal(code, 0, log);
      assert.doesNotMatch(log, /^Download /m);
      assert.ok((await Deno.stat(output)).isFile);
      // The command it ran carries the start task's flags, verbatim.
      const command = log.split("\n").find((line) => line.startsWith("deno compile "));
      assert.ok(command !== undefined, log);
      const baked = command.split(" ").filter((word) => word.startsWith("--allow-"));
      assert.deepEqual(baked, START_PERMISSIONS);
    } finally {
      await Deno.remove(build, { recursive: true });
    }
  },
});

if (!denort.found) {
  console.warn(`compile_test.ts: compile test skipped: ${denort.reason}`);
  Deno.test({
    name: `compile test skipped: ${denort.reason}`,
    ignore: true,
    fn: () => {},
  });
} else {
  Deno.test({
    name: "deno task compile builds a binary that serves /healthz, / and a two-client chat",
    sanitizeOps: true,
    sanitizeResources: true,
    sanitizeExit: true,
    fn: async () => {
      const build = await Deno.makeTempDir({ prefix: "parley-compile-" });
      const work = await Deno.makeTempDir({ prefix: "parley-compiled-run-" });
      try {
        const binary = await compile(denort.env, join(build, "parley"));
        const version = await new Deno.Command(binary, {
          args: ["--version"],
          cwd: work,
          stdout: "piped",
          stderr: "piped",
        }).output();
        const versionText = new TextDecoder().decode(version.stdout);
        assert.equal(version.code, 0, new TextDecoder().decode(version.stderr));
        assert.match(versionText, /^parley \d+\.\d+\.\d+ \(deno \d+\.\d+\.\d+/);
        await exerciseBinary(binary, work);
      } finally {
        await Deno.remove(build, { recursive: true });
        await Deno.remove(work, { recursive: true });
      }
    },
  });
}

/** Runs `deno task compile --output <output>` (deploy/compile.ts) and returns the binary. */
async function compile(env: Record<string, string>, output: string): Promise<string> {
  const { code, stderr } = await new Deno.Command(Deno.execPath(), {
    args: ["task", "--quiet", "compile", "--output", output],
    cwd: ROOT,
    env,
    stdout: "null",
    stderr: "piped",
  }).output();
  assert.equal(
    code,
    0,
    `deno task compile failed (denort: ${denort.found && denort.where}):\n` +
      new TextDecoder().decode(stderr),
  );
  return output;
}

/** Starts the binary in `cwd`, checks health, the page and a chat, then stops it with SIGTERM. */
async function exerciseBinary(binary: string, cwd: string): Promise<void> {
  const child = new Deno.Command(binary, {
    args: ["--host", "127.0.0.1", "--port", "0", "--log-format", "json"],
    cwd,
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let output = "";
  const collect = async (stream: ReadableStream<Uint8Array>) => {
    for await (const text of textChunks(stream)) output += text;
  };
  const collecting = Promise.all([collect(child.stdout), collect(child.stderr)]);
  let stopped = false;
  try {
    const url = await banner(() => output, child.status, START_TIMEOUT_MS);
    const health = await fetch(new URL("/healthz", url));
    assert.deepEqual(await health.json(), { status: "ok" });
    const page = await fetch(url);
    assert.equal(page.status, 200);
    assert.equal(
      await page.text(),
      await Deno.readTextFile(new URL("../static/index.html", import.meta.url)),
    );
    const ws = (name: string) => `ws://${url.host}/ws?name=${name}`;
    await using alice = await TestSocket.open(ws("alice"));
    await using bob = await TestSocket.open(ws("bob"));
    alice.send({ type: "message", content: "from the binary", ref: "b1" });
    const ack = await alice.next("ack", (e) => e.ref === "b1", 10_000);
    const message = await bob.next("message", undefined, 10_000);
    assert.equal(message.content, "from the binary");
    assert.equal(message.id, ack.id);
    await alice.close();
    await bob.close();
    // The baked relative grant for ./parley.db resolves against the run's working directory.
    assert.ok((await Deno.stat(join(cwd, "parley.db"))).isFile);
    child.kill("SIGTERM");
    stopped = true;
    const status = await child.status;
    await collecting;
    assert.equal(status.code, 0, output);
    const denied = output.split("\n").filter((line) => PERMISSION_ERROR.test(line));
    assert.deepEqual(denied, [], `the binary hit a permission error:\n${denied.join("\n")}`);
  } finally {
    if (!stopped) {
      try {
        child.kill("SIGKILL");
      } catch {
        // already gone
      }
      await child.status;
      await collecting;
    }
  }
}

/** Waits for the listen banner and returns its URL; fails if the process exits or time runs out. */
async function banner(
  output: () => string,
  exited: Promise<Deno.CommandStatus>,
  ms: number,
): Promise<URL> {
  const deadline = Date.now() + ms;
  let done = false;
  exited.then(() => done = true, () => done = true);
  while (true) {
    const match = /listening on (https?:\/\/[^\s/]+\/)/.exec(output());
    if (match !== null) return new URL(match[1]!);
    if (done) throw new Error(`The binary exited before listening:\n${output()}`);
    if (Date.now() > deadline) throw new Error(`The binary did not start:\n${output()}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}
