/**
 * Tests for the files under `deploy/`: the systemd unit passes `systemd-analyze verify` and agrees
 * with the binary's baked permissions and shutdown time; the example environment file sets only
 * variables Parley reads, with values `parseConfig` accepts and an idle timeout below nginx's proxy
 * timeout; and `deploy/nginx.conf` passes `nginx -t` and, run for real in front of a Parley process
 * (started with the start task's permissions), terminates TLS, redirects HTTP, serves the page and
 * relays a WebSocket chat, accepting the browser's own origin and refusing another. Last, the
 * backup procedure of the README — `sqlite3 parley.db "VACUUM INTO 'copy.db'"` while the server
 * writes — yields consistent copies that a new server starts from.
 *
 * nginx and Parley run on free loopback ports: the test rewrites the config's listen ports,
 * upstream port, certificate paths and log paths, and fails if any of those lines has moved.
 */
import assert from "node:assert/strict";
import { dirname } from "node:path";
import { ENV_VARS, parseConfig } from "../config/mod.ts";
import { DRAIN_APPENDS_MS, DRAIN_SOCKETS_MS } from "../main.ts";
import { spawnServer, START_PERMISSIONS, TestSocket } from "./helpers/server.ts";
import { selfSignedCert, tlsWebSocket } from "./helpers/tls.ts";
import { freePort } from "./helpers/redis_server.ts";

const sanitized = { sanitizeOps: true, sanitizeResources: true, sanitizeExit: true };

function test(name: string, fn: () => void | Promise<void>) {
  Deno.test({ name, ...sanitized, fn });
}

const DEPLOY = new URL("../deploy/", import.meta.url);
const UNIT = await Deno.readTextFile(new URL("parley.service", DEPLOY));
const NGINX = await Deno.readTextFile(new URL("nginx.conf", DEPLOY));
const ENV_EXAMPLE = await Deno.readTextFile(new URL("parley.env.example", DEPLOY));
/** How long to wait for nginx to proxy its first request, in milliseconds. */
const NGINX_START_MS = 15_000;

/** The active `Key=Value` lines of one section of a systemd unit. */
function unitSection(unit: string, section: string): Map<string, string[]> {
  const entries = new Map<string, string[]>();
  let current = "";
  for (const raw of unit.split("\n")) {
    const line = raw.trim();
    if (line.startsWith("[")) current = line;
    else if (current === `[${section}]` && line !== "" && !line.startsWith("#")) {
      const at = line.indexOf("=");
      const key = line.slice(0, at);
      entries.set(key, [...(entries.get(key) ?? []), line.slice(at + 1)]);
    }
  }
  return entries;
}

/** The paths of one `--allow-<kind>=` flag of the start task. */
function granted(kind: "read" | "write"): string[] {
  const flag = START_PERMISSIONS.find((f) => f.startsWith(`--allow-${kind}=`)) ?? "";
  return flag.slice(`--allow-${kind}=`.length).split(",");
}

/** Every `NAME=value` of the example environment file, commented-out ones included. */
function exampleVariables(): { name: string; value: string; active: boolean }[] {
  return [...ENV_EXAMPLE.matchAll(/^(#?)([A-Z][A-Z0-9_]*)=(.*)$/gm)].map((m) => ({
    name: m[2]!,
    value: m[3]!,
    active: m[1] === "",
  }));
}

/** Replaces every match of `pattern` (which must match) with `replacement`. */
function rewrite(text: string, pattern: RegExp, replacement: string): string {
  assert.ok(
    new RegExp(pattern.source, "m").test(text),
    `deploy/nginx.conf no longer has ${pattern}`,
  );
  return text.replace(new RegExp(pattern.source, "gm"), replacement);
}

/** deploy/nginx.conf with loopback ports, test certificate and logs in `dir`. */
function siteConfig(
  dir: string,
  ports: { http: number; https: number; upstream: number },
  cert: { certFile: string; keyFile: string },
): string {
  let site = NGINX;
  site = rewrite(site, /^\s*listen \[::\]:.*\n/, ""); // IPv6 may be missing in a test sandbox
  site = rewrite(site, /server 127\.0\.0\.1:8080;/, `server 127.0.0.1:${ports.upstream};`);
  site = rewrite(site, /listen 80;/, `listen 127.0.0.1:${ports.http};`);
  site = rewrite(site, /listen 443 ssl;/, `listen 127.0.0.1:${ports.https} ssl;`);
  site = rewrite(site, /ssl_certificate +\S+;/, `ssl_certificate ${cert.certFile};`);
  site = rewrite(site, /ssl_certificate_key +\S+;/, `ssl_certificate_key ${cert.keyFile};`);
  site = rewrite(site, /\/var\/log\/nginx\//, `${dir}/`);
  return site;
}

/** A main nginx.conf that includes the site, with every writable path in `dir`. */
function mainConfig(dir: string): string {
  return `worker_processes 1;
error_log ${dir}/error.log warn;
pid ${dir}/nginx.pid;
events {
  worker_connections 256;
}
http {
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  include ${dir}/parley.conf;
}
`;
}

async function writeNginx(
  dir: string,
  ports: { http: number; https: number; upstream: number },
): Promise<{ cert: string }> {
  const cert = await selfSignedCert(dir);
  await Deno.writeTextFile(`${dir}/parley.conf`, siteConfig(dir, ports, cert));
  await Deno.writeTextFile(`${dir}/nginx.conf`, mainConfig(dir));
  return { cert: cert.cert };
}

function nginxArgs(dir: string): string[] {
  return ["-p", dir, "-c", `${dir}/nginx.conf`, "-e", `${dir}/error.log`];
}

async function inTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "parley-deploy-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

test("parley.service passes systemd-analyze verify", async () => {
  await inTempDir(async (dir) => {
    // verify insists that ExecStart exists; any executable stands in for /usr/local/bin/parley.
    const unit = UNIT.replace(/^ExecStart=\S+/m, `ExecStart=${Deno.execPath()}`);
    assert.notEqual(unit, UNIT);
    await Deno.writeTextFile(`${dir}/parley.service`, unit);
    const { code, stderr } = await new Deno.Command("systemd-analyze", {
      args: ["verify", `${dir}/parley.service`],
      stdout: "piped",
      stderr: "piped",
    }).output().catch((error) => {
      throw new Error(`Cannot run systemd-analyze (apt-get install systemd): ${error}`);
    });
    const complaints = new TextDecoder().decode(stderr).trim();
    assert.equal(code, 0, complaints);
    // Unknown or misspelt keys are only warnings: there must be none.
    assert.equal(complaints, "");
  });
});

test("parley.service keeps the binary inside its baked grants and waits out its drain", () => {
  const service = unitSection(UNIT, "Service");
  const one = (key: string) => {
    const values = service.get(key);
    assert.equal(values?.length, 1, `one ${key}= in [Service]`);
    return values[0]!;
  };
  // The state directory is the working directory, so the default ./parley.db lands in it, and
  // the binary may write there both by the relative and by the absolute grant.
  assert.equal(`/var/lib/${one("StateDirectory")}`, one("WorkingDirectory"));
  assert.ok(granted("write").includes(one("WorkingDirectory")));
  assert.ok(granted("write").includes("."));
  for (const path of one("ReadWritePaths").split(/\s+/)) {
    assert.ok(granted("write").includes(path), `${path} is writable by the binary too`);
  }
  // Files an operator names in the environment file (JWKS, TLS, config) live beside it.
  assert.ok(granted("read").includes(dirname(one("EnvironmentFile"))));
  // systemd must not SIGKILL a server that is still draining.
  const stopMs = Number(/^(\d+)s?$/.exec(one("TimeoutStopSec"))?.[1]) * 1000;
  assert.ok(stopMs > DRAIN_APPENDS_MS + DRAIN_SOCKETS_MS, `TimeoutStopSec ${stopMs} ms`);
  assert.equal(one("KillSignal"), "SIGTERM");
  assert.equal(one("User"), "parley");
  for (
    const [key, value] of Object.entries({
      Restart: "on-failure",
      NoNewPrivileges: "yes",
      ProtectSystem: "strict",
      ProtectHome: "yes",
      PrivateTmp: "yes",
    })
  ) {
    assert.equal(one(key), value, key);
  }
  assert.ok(Number(one("LimitNOFILE")) > 10_000, "room for --max-connections sockets");
  // No privileged port by default.
  assert.equal(service.get("AmbientCapabilities"), undefined);
  assert.equal(one("CapabilityBoundingSet"), "");
});

test("parley.env.example sets only variables Parley reads, with values it accepts", () => {
  const variables = exampleVariables();
  assert.ok(variables.length > 10);
  for (const { name } of variables) assert.ok(ENV_VARS.includes(name), `${name} is read`);
  const env = Object.fromEntries(
    variables.filter((v) => v.active).map(({ name, value }) => [name, value]),
  );
  const result = parseConfig([], env);
  assert.equal(result.kind, "run", JSON.stringify(result));
  if (result.kind !== "run") return;
  assert.equal(result.config.host, "127.0.0.1");
  // Every client arrives from nginx's address, so the per-address cap must not bind first.
  assert.ok(result.config.maxConnectionsPerIp >= result.config.maxConnections);
  // nginx must wait longer than Parley's idle timeout before it cuts a quiet socket.
  const readTimeout = Number(/proxy_read_timeout (\d+)s;/.exec(NGINX)?.[1]);
  const sendTimeout = Number(/proxy_send_timeout (\d+)s;/.exec(NGINX)?.[1]);
  assert.ok(readTimeout > result.config.idleTimeout, `proxy_read_timeout ${readTimeout}`);
  assert.ok(sendTimeout > result.config.idleTimeout, `proxy_send_timeout ${sendTimeout}`);
  // And the upstream is where the example makes Parley listen.
  assert.match(NGINX, new RegExp(`server ${result.config.host}:${result.config.port};`));
});

test("nginx.conf passes nginx -t", async () => {
  await inTempDir(async (dir) => {
    await writeNginx(dir, { http: freePort(), https: freePort(), upstream: freePort() });
    const { code, stderr } = await new Deno.Command("nginx", {
      args: ["-t", ...nginxArgs(dir)],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(stderr);
    assert.equal(code, 0, text);
    assert.match(text, /syntax is ok/);
    assert.match(text, /test is successful/);
  });
});

test("nginx.conf in front of Parley terminates TLS and relays a WebSocket chat", async () => {
  await inTempDir(async (dir) => {
    await using parley = await spawnServer([], { cwd: dir });
    const ports = { http: freePort(), https: freePort(), upstream: Number(parley.url.port) };
    const { cert } = await writeNginx(dir, ports);
    const nginx = new Deno.Command("nginx", {
      args: [...nginxArgs(dir), "-g", "daemon off;"],
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    const errors = (async () => {
      const decoder = new TextDecoder();
      let text = "";
      for await (const chunk of nginx.stderr) text += decoder.decode(chunk, { stream: true });
      return text;
    })();
    let exited = false;
    nginx.status.then(() => exited = true);
    using client = Deno.createHttpClient({ caCerts: [cert] });
    const https = new URL(`https://127.0.0.1:${ports.https}/`);
    try {
      const deadline = Date.now() + NGINX_START_MS;
      while (true) {
        if (exited) throw new Error(`nginx exited: ${await errors}`);
        const ok = await fetch(new URL("/healthz", https), { client })
          .then(async (response) => (await response.text(), response.status === 200))
          .catch(() => false);
        if (ok) break;
        if (Date.now() > deadline) throw new Error("nginx did not proxy /healthz in time");
        await new Promise((resolve) => setTimeout(resolve, 50));
      }

      const redirect = await fetch(`http://127.0.0.1:${ports.http}/?name=x`, {
        redirect: "manual",
      });
      await redirect.body?.cancel();
      assert.equal(redirect.status, 301);
      assert.equal(redirect.headers.get("location"), "https://127.0.0.1/?name=x");

      const page = await fetch(https, { client });
      assert.equal(page.status, 200);
      assert.equal(
        await page.text(),
        await Deno.readTextFile(new URL("../static/index.html", import.meta.url)),
      );

      // A browser on https://127.0.0.1:<port> sends that Origin; nginx passes the Host with its
      // port, so Parley recognises its own origin.
      const ws = new URL(`/ws?name=alice`, https);
      using alice = await tlsWebSocket(ws, cert, [`Origin: ${https.origin}`]);
      assert.match(alice.head, /^HTTP\/1\.1 101 /, alice.head);
      await alice.next("welcome");
      using bob = await tlsWebSocket(new URL("/ws?name=bob", https), cert);
      assert.match(bob.head, /^HTTP\/1\.1 101 /, bob.head);
      await bob.next("welcome");
      await alice.send({ type: "message", content: "through nginx", ref: "n1" });
      const message = await bob.next("message");
      assert.equal(message.content, "through nginx");
      assert.equal(message.sender, "alice");
      assert.equal((await alice.next("ack")).ref, "n1");
      {
        using stranger = await tlsWebSocket(ws, cert, ["Origin: https://evil.example"]);
        assert.match(stranger.head, /^HTTP\/1\.1 403 /, stranger.head);
      }
    } finally {
      try {
        nginx.kill("SIGTERM");
      } catch {
        // already gone
      }
      await nginx.status;
      await errors;
    }
    assert.equal((await parley.stop("SIGTERM")).code, 0, parley.output());
  });
});

/** Runs Debian's sqlite3 shell on `db` in `cwd`; returns its output. */
async function sqlite3(cwd: string, db: string, sql: string): Promise<string> {
  const { code, stdout, stderr } = await new Deno.Command("sqlite3", {
    args: ["-batch", db, sql],
    cwd,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output().catch((error) => {
    throw new Error(`Cannot run sqlite3 (apt-get install sqlite3): ${error}`);
  });
  const text = new TextDecoder().decode(stdout).trim();
  assert.equal(code, 0, `sqlite3 ${sql}: ${new TextDecoder().decode(stderr)}`);
  return text;
}

/** Checks a copy: intact, its one room's ids contiguous and matching the id counter. */
async function checkCopy(cwd: string, file: string): Promise<number> {
  const [integrity, counts, lastId] = (await sqlite3(
    cwd,
    file,
    "PRAGMA integrity_check; " +
      "SELECT count(*) || ' ' || coalesce(min(id), 0) || ' ' || coalesce(max(id), 0) FROM messages; " +
      "SELECT coalesce(max(last_id), 0) FROM conversations;",
  )).split("\n");
  assert.equal(integrity, "ok", file);
  const [count, min, max] = (counts ?? "").split(" ").map(Number) as [number, number, number];
  assert.equal(
    count,
    count === 0 ? 0 : max - min + 1,
    `${file}: ids ${min}..${max}, ${count} rows`,
  );
  assert.equal(Number(lastId), max, `${file}: the id counter matches the rows`);
  return max;
}

test("sqlite3 VACUUM INTO copies parley.db consistently while the server writes", async () => {
  await inTempDir(async (dir) => {
    const TOTAL = 3_000;
    const BATCH = 100;
    const copies: string[] = [];
    let lastCopyMax = 0;
    {
      await using server = await spawnServer(
        ["--rate", "1000000", "--burst", "1000000", "--log-level", "warning"],
        { cwd: dir },
      );
      await using alice = await TestSocket.open(server.ws({ name: "alice" }));
      let writing = true;
      const writer = (async () => {
        try {
          for (let sent = 0; sent < TOTAL; sent += BATCH) {
            for (let i = sent; i < sent + BATCH; i++) {
              alice.send({ type: "message", content: `m${i}`, ref: `r${i}` });
            }
            await alice.until(
              (events) => events.filter((e) => e.type === "ack").length >= sent + BATCH,
              30_000,
              `${sent + BATCH} acks`,
            );
          }
        } finally {
          writing = false;
        }
      })();
      // Copies taken while appends commit; bounded so a slow machine still ends.
      while (writing && copies.length < 50) {
        const file = `copy${copies.length}.db`;
        await sqlite3(dir, "parley.db", `VACUUM INTO '${file}'`);
        copies.push(file);
      }
      await writer;
      await sqlite3(dir, "parley.db", "VACUUM INTO 'final.db'");
      await alice.close();
      assert.equal((await server.stop("SIGTERM")).code, 0, server.output());
      assert.doesNotMatch(server.output(), /"level":"(ERROR|FATAL)"/);
    }
    assert.ok(copies.length >= 1);
    for (const file of copies) {
      const max = await checkCopy(dir, file);
      assert.ok(max >= lastCopyMax, "later copies hold at least as much");
      lastCopyMax = max;
    }
    assert.equal(await checkCopy(dir, "final.db"), TOTAL);

    // Restoring is copying the file back while the server is stopped.
    await inTempDir(async (restored) => {
      await Deno.copyFile(`${dir}/final.db`, `${restored}/parley.db`);
      await using server = await spawnServer([], { cwd: restored });
      await using bob = await TestSocket.open(server.ws({ name: "bob" }));
      bob.send({ type: "history", room: "lobby", limit: 1 });
      const history = await bob.next("history");
      assert.deepEqual(
        (history.messages as { id: number; content: string }[]).map((m) => [m.id, m.content]),
        [[TOTAL, `m${TOTAL - 1}`]],
      );
      bob.send({ type: "message", content: "after the restore", ref: "after" });
      assert.equal((await bob.next("ack")).id, TOTAL + 1);
      await bob.close();
      assert.equal((await server.stop("SIGTERM")).code, 0, server.output());
    });
  });
});
