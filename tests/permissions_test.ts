/**
 * Tests that Parley runs with exactly the permissions of `deno task start`: the permission set its
 * `-P=server` loads from deno.json, which `dev` loads too and deploy/compile.ts bakes into the
 * binary. The set is written out as `--allow-*` flags (START_PERMISSIONS, the same flags the
 * binary gets), a probe shows those flags grant exactly what `-P=server` grants, and every feature
 * is exercised in a child process started with them in a fresh working directory; any permission
 * error in its output fails the test. One test runs `deno task start` itself.
 *
 * Features covered: the default SQLite store (`./parley.db` in the working directory, across a
 * restart), a store and a config file named by relative paths, the browser client, health,
 * readiness and metrics, token mode from `PARLEY_JWT_SECRET`, a JWKS file, TLS from cert and key
 * files, a config file by `--config` and by `PARLEY_CONFIG`, the Redis store and broker, and the
 * `--version`, `--help` and `token` subcommands of the same entry point. The grants are also shown
 * to be narrow: a store outside the working directory is refused, and the set's `env` names
 * exactly the variables config/ reads. compile_test.ts runs the compiled binary when it can.
 */
import assert from "node:assert/strict";
import { basename, join } from "node:path";
import * as jose from "jose";
import { ENV_VARS } from "../config/mod.ts";
import { compileArgs, type DenoConfig, permissionFlags } from "../deploy/compile.ts";
import { RedisServer } from "./helpers/redis_server.ts";
import {
  rawUpgrade,
  spawnServer,
  START_PERMISSIONS,
  TestSocket,
  textChunks,
} from "./helpers/server.ts";
import { selfSignedCert, tlsWebSocket } from "./helpers/tls.ts";

const sanitized = { sanitizeOps: true, sanitizeResources: true, sanitizeExit: true };

function test(name: string, fn: () => void | Promise<void>) {
  Deno.test({ name, ...sanitized, fn });
}

const MAIN = new URL("../main.ts", import.meta.url).pathname;
const ROOT = new URL("../", import.meta.url).pathname;
const DENO_JSON = join(ROOT, "deno.json");
const CONFIG: DenoConfig & { tasks: Record<string, string> } = JSON.parse(
  await Deno.readTextFile(DENO_JSON),
);
const TASKS = CONFIG.tasks;
/** The permission set `deno task start` loads. */
const SET = "server";
const SECRET = "permissions-test-secret-".padEnd(40, "x");
/** What Deno prints when an operation lacks a permission. */
const PERMISSION_ERROR = /NotCapable|PermissionDenied|Requires \w+ access|run again with --allow-/;
/** The longest `Task start …` line `deno task start` may print, in characters. */
const TASK_LINE_MAX = 120;

/** The `--allow-*` flags of a task, in order. */
function permissionsOf(task: string): string[] {
  const command = TASKS[task];
  assert.ok(command !== undefined, `deno.json has a "${task}" task`);
  return command.split(/\s+/).filter((part) => part.startsWith("--allow-") || part === "-A");
}

/** Fails when the output shows a permission error, quoting the lines. */
function assertNoPermissionErrors(output: string, what: string): void {
  const lines = output.split("\n").filter((line) => PERMISSION_ERROR.test(line));
  assert.deepEqual(lines, [], `${what} hit a permission error:\n${lines.join("\n")}`);
}

/** Runs `main.ts` to completion with the start task's permissions. */
async function runMain(
  args: string[],
  options: { cwd: string; env?: Record<string, string> },
): Promise<{ code: number; stdout: string; stderr: string }> {
  const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
    args: ["run", ...START_PERMISSIONS, MAIN, ...args],
    cwd: options.cwd,
    env: { NO_COLOR: "1", ...options.env },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decoder = new TextDecoder();
  return { code, stdout: decoder.decode(stdout), stderr: decoder.decode(stderr) };
}

/** Makes a fresh working directory, runs `fn` in it and removes it. */
async function inTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "parley-permissions-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** GETs a path and returns the status, content type and body. */
async function get(base: URL, path: string, client?: Deno.HttpClient) {
  const response = await fetch(new URL(path, base), client === undefined ? {} : { client });
  return {
    status: response.status,
    type: response.headers.get("content-type") ?? "",
    body: await response.text(),
  };
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return false;
    throw error;
  }
}

/**
 * What a process may do, as `Deno.permissions.query` answers from inside it: read and write for
 * each path, each environment variable, and network, subprocess, system and FFI access.
 */
const PROBE = `
const paths = Deno.args[0].split(",");
const vars = Deno.args[1].split(",");
const states = {};
for (const path of paths) {
  for (const name of ["read", "write"]) {
    states[name + " " + path] = (await Deno.permissions.query({ name, path })).state;
  }
}
for (const variable of vars) {
  states["env " + variable] = (await Deno.permissions.query({ name: "env", variable })).state;
}
for (const name of ["net", "run", "sys", "ffi"]) {
  states[name] = (await Deno.permissions.query({ name })).state;
}
console.log(JSON.stringify(states));
`;

/** Runs the probe from the project directory with the given permission options. */
async function probe(
  options: string[],
  paths: string[],
  vars: string[],
): Promise<Record<string, string>> {
  const dir = await Deno.makeTempDir({ prefix: "parley-probe-" });
  try {
    await Deno.writeTextFile(`${dir}/probe.js`, PROBE);
    const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
      args: ["run", "--quiet", "--config", DENO_JSON, ...options, `${dir}/probe.js`, ...[
        paths.join(","),
        vars.join(","),
      ]],
      cwd: ROOT,
      env: { NO_COLOR: "1" },
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(code, 0, new TextDecoder().decode(stderr));
    return JSON.parse(new TextDecoder().decode(stdout));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

test("deno task start and dev load one permission set, and compile bakes the same in", () => {
  assert.match(TASKS.start ?? "", new RegExp(`^deno run -P=${SET} main\\.ts$`));
  assert.match(TASKS.dev ?? "", new RegExp(`^deno run --watch -P=${SET} main\\.ts( |$)`));
  assert.deepEqual(permissionsOf("start"), []);
  assert.deepEqual(permissionsOf("dev"), []);
  assert.deepEqual(START_PERMISSIONS, permissionFlags(CONFIG.permissions?.[SET], SET));
  // The compile task runs deploy/compile.ts, which bakes in the start task's set.
  assert.deepEqual(permissionsOf("compile"), [
    "--allow-read=deno.json,deno.lock",
    "--allow-run=deno",
  ]);
  const baked = compileArgs({ config: CONFIG, lockedNpm: [], denoDir: "/cache", output: "o" })
    .filter((arg) => arg.startsWith("--allow-"));
  assert.deepEqual(baked, START_PERMISSIONS);
});

test("the start permission set reads and writes the working directory and Parley's own folders", () => {
  const set = CONFIG.permissions?.[SET] as Record<string, unknown>;
  assert.deepEqual(Object.keys(set).sort(), ["env", "net", "read", "write"]);
  assert.equal(set.net, true);
  assert.deepEqual(set.read, [".", "/etc/parley", "/var/lib/parley"]);
  assert.deepEqual(set.write, [".", "/var/lib/parley"]);
});

test("the start permission set allows exactly the environment variables config/ reads", () => {
  const env = CONFIG.permissions?.[SET] as { env?: string[] };
  assert.deepEqual([...env.env ?? []].sort(), [...ENV_VARS].sort());
});

test("the written-out start permissions grant exactly what -P=server grants", async () => {
  const paths = [
    ".",
    "./chat.db",
    "./parley.json",
    "./data/deep/parley.db",
    ROOT,
    "..",
    "/etc/parley",
    "/etc/parley/parley.json",
    "/etc/passwd",
    "/var/lib/parley",
    "/var/lib/parley/parley.db",
    "/var/lib",
    "/tmp",
  ];
  const vars = [...ENV_VARS, "HOME", "PATH", "DENO_DIR", "PARLEY_UNKNOWN"];
  const fromSet = await probe([`-P=${SET}`], paths, vars);
  const fromFlags = await probe([...START_PERMISSIONS], paths, vars);
  assert.deepEqual(fromFlags, fromSet);
  // The comparison means something only if the set grants some of these and not others.
  assert.equal(fromSet["write ./chat.db"], "granted");
  assert.equal(fromSet["write ./data/deep/parley.db"], "granted");
  assert.equal(fromSet["read /etc/parley/parley.json"], "granted");
  assert.equal(fromSet["write /etc/parley/parley.json"], "prompt");
  assert.equal(fromSet["write /var/lib/parley/parley.db"], "granted");
  assert.equal(fromSet["read /etc/passwd"], "prompt");
  assert.equal(fromSet["write .."], "prompt");
  assert.equal(fromSet["env PARLEY_STORE"], "granted");
  assert.equal(fromSet["env HOME"], "prompt");
  assert.equal(fromSet["net"], "granted");
  assert.equal(fromSet["run"], "prompt");
});

test("deno task start prints a short task line and serves until SIGTERM", async () => {
  // The memory store keeps the project directory untouched.
  const child = new Deno.Command(Deno.execPath(), {
    args: ["task", "start", "--host", "127.0.0.1", "--port", "0", "--store", "memory:"],
    cwd: ROOT,
    env: { NO_COLOR: "1" },
    stdin: "null",
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
    const deadline = Date.now() + 20_000;
    let url: URL | undefined;
    while (url === undefined) {
      const match = /listening on (http:\/\/[^\s/]+\/)/.exec(output);
      if (match !== null) url = new URL(match[1]!);
      else if (Date.now() > deadline) throw new Error(`deno task start did not listen:\n${output}`);
      else await new Promise((resolve) => setTimeout(resolve, 20));
    }
    assert.deepEqual(JSON.parse((await get(url, "/healthz")).body), { status: "ok" });
    // deno task passes the signal on to the server, which drains and exits 0.
    child.kill("SIGTERM");
    stopped = true;
    assert.equal((await child.status).code, 0, output);
    await collecting;
  } finally {
    if (!stopped) {
      child.kill("SIGKILL");
      await child.status;
      await collecting;
    }
  }
  const line = output.split("\n").find((l) => l.startsWith("Task start "));
  assert.ok(line !== undefined, output);
  assert.ok(line.length <= TASK_LINE_MAX, `the task line is ${line.length} characters: ${line}`);
  assertNoPermissionErrors(output, "deno task start");
});

test("deno task token may read only the token helper's variables", () => {
  assert.deepEqual(permissionsOf("token"), [
    "--allow-env=PARLEY_JWT_SECRET,PARLEY_JWT_ISSUER,PARLEY_JWT_AUDIENCE",
  ]);
});

test("server under the start permissions keeps messages in ./parley.db across a restart", async () => {
  await inTempDir(async (dir) => {
    let id: unknown;
    {
      await using server = await spawnServer([], { cwd: dir });
      await using alice = await TestSocket.open(server.ws({ name: "alice" }));
      await using bob = await TestSocket.open(server.ws({ name: "bob" }));
      alice.send({ type: "message", content: "kept on disk", ref: "r1" });
      id = (await alice.next("ack", (e) => e.ref === "r1")).id;
      const received = await bob.next("message");
      assert.equal(received.content, "kept on disk");
      assert.equal(received.id, id);
      // WAL mode: the write-ahead log sits beside the database while the server runs.
      assert.ok(await exists(`${dir}/parley.db`), "parley.db is created in the working directory");
      assert.ok(await exists(`${dir}/parley.db-wal`), "parley.db-wal is beside it");
      await alice.close();
      await bob.close();
      const status = await server.stop("SIGTERM");
      assert.equal(status.code, 0, server.output());
      assertNoPermissionErrors(server.output(), "first run");
    }
    await using again = await spawnServer([], { cwd: dir });
    await using carol = await TestSocket.open(again.ws({ name: "carol" }));
    carol.send({ type: "history", room: "lobby" });
    const history = await carol.next("history");
    const messages = history.messages as { id: number; content: string }[];
    assert.deepEqual(messages.map((m) => [m.id, m.content]), [[id, "kept on disk"]]);
    await carol.close();
    assert.equal((await again.stop("SIGTERM")).code, 0, again.output());
    assertNoPermissionErrors(again.output(), "second run");
  });
});

test("server under the start permissions serves the browser client, health and metrics", async () => {
  await inTempDir(async (dir) => {
    await using server = await spawnServer([], { cwd: dir });
    for (const file of ["index.html", "app.js", "style.css", "favicon.svg"]) {
      const page = await get(server.url, file === "index.html" ? "/" : `/${file}`);
      assert.equal(page.status, 200, file);
      assert.equal(
        page.body,
        await Deno.readTextFile(new URL(`../static/${file}`, import.meta.url)),
      );
    }
    assert.equal((await get(server.url, "/")).type, "text/html; charset=utf-8");
    assert.deepEqual(JSON.parse((await get(server.url, "/healthz")).body), { status: "ok" });
    assert.equal((await get(server.url, "/readyz")).status, 200);
    const metrics = await get(server.url, "/metrics");
    assert.equal(metrics.status, 200);
    // Process memory comes from Deno.memoryUsage(), which needs no --allow-sys.
    const rss = /^parley_process_resident_memory_bytes (\d+)/m.exec(metrics.body);
    assert.ok(rss !== null && Number(rss[1]) > 0, metrics.body.slice(0, 500));
    assert.match(metrics.body, /^parley_connections\{/m);
    assert.equal((await server.stop("SIGTERM")).code, 0, server.output());
    assertNoPermissionErrors(server.output(), "server");
  });
});

test("server under the start permissions keeps a relative --store and reads a relative --config", async () => {
  await inTempDir(async (dir) => {
    await Deno.writeTextFile(`${dir}/parley.json`, JSON.stringify({ defaultRoom: "general" }));
    const args = ["--store", "sqlite:./chat.db", "--config", "./parley.json"];
    let id: unknown;
    {
      await using server = await spawnServer(args, { cwd: dir });
      await using alice = await TestSocket.open(server.ws({ name: "alice" }), { welcome: false });
      assert.deepEqual((await alice.next("welcome")).rooms, ["general"]);
      await using bob = await TestSocket.open(server.ws({ name: "bob" }));
      alice.send({ type: "message", room: "general", content: "into chat.db", ref: "c1" });
      id = (await alice.next("ack", (e) => e.ref === "c1")).id;
      const received = await bob.next("message");
      assert.equal(received.content, "into chat.db");
      assert.equal(received.id, id);
      await alice.close();
      await bob.close();
      assert.equal((await server.stop("SIGTERM")).code, 0, server.output());
      assertNoPermissionErrors(server.output(), "first run");
    }
    assert.ok((await Deno.stat(`${dir}/chat.db`)).size > 0, "chat.db is written");
    assert.equal(await exists(`${dir}/parley.db`), false);
    // The message is in the file, not only in the first process: a second server reads it back.
    await using again = await spawnServer(args, { cwd: dir });
    await using carol = await TestSocket.open(again.ws({ name: "carol" }));
    carol.send({ type: "history", room: "general" });
    const messages = (await carol.next("history")).messages as { id: number; content: string }[];
    assert.deepEqual(messages.map((m) => [m.id, m.content]), [[id, "into chat.db"]]);
    await carol.close();
    assert.equal((await again.stop("SIGTERM")).code, 0, again.output());
    assertNoPermissionErrors(again.output(), "second run");
  });
});

test("server under the start permissions refuses a store outside the working directory", async () => {
  await inTempDir(async (dir) => {
    // A sibling of the working directory: unique, and outside every grant.
    const outside = `../${basename(dir)}-outside.db`;
    const { code, stderr } = await runMain(
      ["--host", "127.0.0.1", "--port", "0", "--store", `sqlite:${outside}`],
      { cwd: dir },
    );
    assert.equal(code, 1, stderr);
    // Opening the store touches the parent directory first: either access is refused.
    assert.match(stderr, /Requires (read|write) access to \\?"\.\./);
    assert.equal(await exists(`${dir}/${outside}`), false);
  });
});

test("token mode from PARLEY_JWT_SECRET accepts tokens from the token subcommand and task", async () => {
  await inTempDir(async (dir) => {
    const env = { PARLEY_JWT_SECRET: SECRET };
    const minted = await runMain(["token", "--sub", "alice", "--name", "Alice"], { cwd: dir, env });
    assert.equal(minted.code, 0, minted.stderr);
    assertNoPermissionErrors(minted.stderr, "parley token");
    const task = await new Deno.Command(Deno.execPath(), {
      args: ["task", "--quiet", "token", "--", "--sub", "bob"],
      cwd: ROOT,
      env,
      stdout: "piped",
      stderr: "piped",
    }).output();
    const taskErr = new TextDecoder().decode(task.stderr);
    assert.equal(task.code, 0, taskErr);
    assertNoPermissionErrors(taskErr, "deno task token");

    await using server = await spawnServer([], { cwd: dir, env });
    await using alice = await TestSocket.open(server.ws({ token: minted.stdout.trim() }));
    const token = new TextDecoder().decode(task.stdout).trim();
    await using bob = await TestSocket.open(server.ws({ token }));
    assert.equal(alice.of("welcome")[0]?.user, "alice");
    assert.equal(bob.of("welcome")[0]?.user, "bob");
    alice.send({ type: "message", content: "signed", ref: "s" });
    assert.equal((await bob.next("message")).sender, "alice");
    const anonymous = await rawUpgrade(new URL(server.ws()));
    anonymous.conn.close();
    assert.equal(anonymous.response.status, 401);
    await alice.close();
    await bob.close();
    assert.equal((await server.stop("SIGTERM")).code, 0, server.output());
    assertNoPermissionErrors(server.output(), "server");
  });
});

test("token mode from a JWKS file in the working directory accepts ES256 tokens", async () => {
  await inTempDir(async (dir) => {
    const { publicKey, privateKey } = await jose.generateKeyPair("ES256");
    const jwk = { ...(await jose.exportJWK(publicKey)), kid: "k1", alg: "ES256", use: "sig" };
    await Deno.writeTextFile(`${dir}/jwks.json`, JSON.stringify({ keys: [jwk] }));
    const token = await new jose.SignJWT({ name: "Carol" })
      .setProtectedHeader({ alg: "ES256", kid: "k1" })
      .setSubject("carol")
      .setIssuedAt()
      .setExpirationTime("10m")
      .sign(privateKey);
    await using server = await spawnServer(["--jwks", "jwks.json"], { cwd: dir });
    await using carol = await TestSocket.open(server.ws({ token }));
    assert.equal(carol.of("welcome")[0]?.user, "carol");
    await carol.close();
    assert.equal((await server.stop("SIGTERM")).code, 0, server.output());
    assertNoPermissionErrors(server.output(), "server");
  });
});

test("TLS from cert and key files serves HTTPS and WebSocket over TLS", async () => {
  await inTempDir(async (dir) => {
    const { cert } = await selfSignedCert(dir);
    await using server = await spawnServer(["--cert", "cert.pem", "--key", "key.pem"], {
      cwd: dir,
    });
    assert.equal(server.url.protocol, "https:");
    using client = Deno.createHttpClient({ caCerts: [cert] });
    assert.deepEqual(JSON.parse((await get(server.url, "/healthz", client)).body), {
      status: "ok",
    });
    assert.equal((await get(server.url, "/", client)).status, 200);
    {
      using socket = await tlsWebSocket(new URL("/ws?name=tls", server.url), cert);
      assert.match(socket.head, /^HTTP\/1\.1 101 /);
      assert.equal((await socket.next("welcome")).user, "tls");
    }
    assert.equal((await server.stop("SIGTERM")).code, 0, server.output());
    assertNoPermissionErrors(server.output(), "server");
  });
});

test("config file by --config and by PARLEY_CONFIG configures the server", async () => {
  await inTempDir(async (dir) => {
    await Deno.writeTextFile(`${dir}/parley.json`, JSON.stringify({ defaultRoom: "general" }));
    {
      await using server = await spawnServer(["--config", "parley.json"], { cwd: dir });
      await using a = await TestSocket.open(server.ws({ name: "a" }), { welcome: false });
      assert.deepEqual((await a.next("welcome")).rooms, ["general"]);
      await a.close();
      assert.equal((await server.stop("SIGTERM")).code, 0, server.output());
      assertNoPermissionErrors(server.output(), "--config");
    }
    await Deno.writeTextFile(`${dir}/other.json`, JSON.stringify({ defaultRoom: "fromenv" }));
    await using server = await spawnServer([], { cwd: dir, env: { PARLEY_CONFIG: "other.json" } });
    await using b = await TestSocket.open(server.ws({ name: "b" }), { welcome: false });
    assert.deepEqual((await b.next("welcome")).rooms, ["fromenv"]);
    await b.close();
    assert.equal((await server.stop("SIGTERM")).code, 0, server.output());
    assertNoPermissionErrors(server.output(), "PARLEY_CONFIG");
  });
});

test("a bad config file fails start-up with one line naming the key", async () => {
  await inTempDir(async (dir) => {
    await Deno.writeTextFile(`${dir}/parley.json`, JSON.stringify({ prot: 1 }));
    const { code, stdout, stderr } = await runMain(["--config", "parley.json"], { cwd: dir });
    assert.equal(code, 2);
    assert.equal(stdout, "");
    assert.equal(stderr, 'parley: unknown key "prot" in config file "parley.json"\n');
  });
});

test("Redis store and broker work under the start permissions across two nodes", async () => {
  const redis = await RedisServer.start();
  try {
    await inTempDir(async (dir) => {
      await using one = await spawnServer(["--redis", redis.url], { cwd: dir });
      await using two = await spawnServer(["--redis", redis.url], { cwd: dir });
      await using alice = await TestSocket.open(one.ws({ name: "alice" }));
      await using bob = await TestSocket.open(two.ws({ name: "bob" }));
      await alice.next("user_joined", (e) => e.user === "bob", 10_000);
      alice.send({ type: "message", content: "across nodes", ref: "x" });
      const received = await bob.next("message", undefined, 10_000);
      assert.equal(received.content, "across nodes");
      await alice.close();
      await bob.close();
      for (const node of [one, two]) {
        assert.equal((await node.stop("SIGTERM")).code, 0, node.output());
        assertNoPermissionErrors(node.output(), "node");
      }
      // Nothing touched the working directory: the store is Redis.
      assert.equal(await exists(`${dir}/parley.db`), false);
    });
  } finally {
    await redis.stop();
  }
});

test("parley --version prints its version and the Deno runtime's under the start permissions", async () => {
  await inTempDir(async (dir) => {
    const denoJson = JSON.parse(await Deno.readTextFile(new URL("../deno.json", import.meta.url)));
    for (const flag of ["--version", "-V"]) {
      const { code, stdout, stderr } = await runMain([flag], { cwd: dir });
      assert.equal(code, 0, stderr);
      assert.equal(stderr, "");
      assert.match(stdout, new RegExp(`^parley ${denoJson.version.replaceAll(".", "\\.")} `));
      assert.ok(stdout.includes(`deno ${Deno.version.deno}`), stdout);
    }
    // Nothing is created by a command that does not serve.
    assert.deepEqual([...Deno.readDirSync(dir)], []);
  });
});

test("parley --help lists the flags and subcommands under the start permissions", async () => {
  await inTempDir(async (dir) => {
    const { code, stdout, stderr } = await runMain(["--help"], { cwd: dir });
    assert.equal(code, 0, stderr);
    assert.equal(stderr, "");
    for (const flag of ["--port", "--store", "--jwt-secret", "--jwks", "--cert", "--config"]) {
      assert.ok(stdout.includes(flag), `help mentions ${flag}`);
    }
    assert.match(stdout, /^ +parley token --sub USER/m);
    const token = await runMain(["token", "--help"], { cwd: dir });
    assert.equal(token.code, 0, token.stderr);
    assert.match(token.stdout, /--sub USER/);
    const missing = await runMain(["token", "--sub", "a"], {
      cwd: dir,
      env: { PARLEY_JWT_SECRET: "" },
    });
    assert.equal(missing.code, 2);
    assert.match(missing.stderr, /^Cannot mint token: no secret/);
    assertNoPermissionErrors(missing.stderr, "token without secret");
  });
});
