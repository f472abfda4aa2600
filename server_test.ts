import assert from "node:assert/strict";
import {
  clientFrame,
  closeCode,
  eventually,
  rawRequest,
  rawUpgrade,
  readServerFrames,
  spawnServer,
  startTestServer,
  TestSocket,
  writeAll,
} from "./tests/helpers/server.ts";

const sanitized = { sanitizeOps: true, sanitizeResources: true, sanitizeExit: true };

function test(name: string, fn: () => Promise<void>) {
  Deno.test({ name, ...sanitized, fn });
}

/** Flags that lift the per-connection rate limit for tests that send a lot. */
const UNLIMITED = ["--rate", "1000000", "--burst", "1000000", "--max-connections-per-ip", "1000"];

test("server relays the old Go server's frame to every client as a lobby message", async () => {
  await using server = await startTestServer();
  await using a = await TestSocket.open(server.ws());
  await using b = await TestSocket.open(server.ws());
  a.send({ sender: "Abhi", content: "Hello, World!" });
  for (const client of [a, b]) {
    const message = await client.next("message");
    assert.equal(message.sender, "Abhi");
    assert.equal(message.content, "Hello, World!");
    assert.equal(message.room, "lobby");
    assert.ok(Number.isInteger(message.id));
    assert.equal(new Date(String(message.ts)).toISOString(), message.ts);
    // A client that offered no subprotocol gets one object per frame, never a batch.
    assert.equal(client.socket.protocol, "");
    assert.ok(client.frames.every((frame) => frame.startsWith("{")));
  }
});

test("server echoes parley.v1 and welcomes with identity, connection and rooms", async () => {
  await using server = await startTestServer();
  await using v1 = await TestSocket.open(server.ws({ name: "alice" }), {
    protocols: ["chat.other", "parley.v1"],
  });
  assert.equal(v1.socket.protocol, "parley.v1");
  const [welcome] = v1.of("welcome");
  assert.equal(welcome?.user, "alice");
  assert.equal(welcome?.protocol, 1);
  assert.deepEqual(welcome?.rooms, ["lobby"]);
  assert.match(String(welcome?.connection), /^[A-Za-z0-9_-]{12}$/);
  await using guest = await TestSocket.open(server.ws());
  assert.match(String(guest.of("welcome")[0]?.user), /^guest-[2-9a-km-np-z]{12}$/);
});

test("server delivers 100 messages to 200 clients, each in order and once", async () => {
  await using server = await startTestServer(UNLIMITED);
  const clients: TestSocket[] = [];
  try {
    for (let i = 0; i < 200; i++) {
      clients.push(
        await TestSocket.open(
          server.ws({ name: `u${i}` }),
          i % 2 ? { protocols: "parley.v1" } : {},
        ),
      );
    }
    const sender = clients[0]!;
    for (let i = 1; i <= 100; i++) sender.send({ type: "message", content: `n${i}`, ref: `r${i}` });
    await sender.until((events) => events.filter((e) => e.type === "ack").length === 100, 20_000);
    for (const client of clients) {
      await client.until((events) => events.filter((e) => e.type === "message").length >= 100);
      const messages = client.of("message");
      assert.equal(messages.length, 100);
      assert.deepEqual(messages.map((m) => m.content), messages.map((_, i) => `n${i + 1}`));
      const ids = messages.map((m) => Number(m.id));
      assert.ok(ids.every((id, i) => i === 0 || id > ids[i - 1]!), "ids increase");
    }
    // Batches formed for parley.v1 clients and never for plain ones.
    assert.ok(
      clients.filter((_, i) => i % 2 === 0).every((c) => c.frames.every((f) => f[0] === "{")),
    );
  } finally {
    await Promise.all(clients.map((client) => client.close()));
  }
});

test("server acknowledges with the ref and stores a retried ref once", async () => {
  await using server = await startTestServer();
  await using a = await TestSocket.open(server.ws({ name: "alice" }));
  a.send({ type: "message", content: "hi", ref: "r-1" });
  const ack = await a.next("ack");
  assert.equal(ack.ref, "r-1");
  assert.ok(Number.isInteger(ack.id));
  a.send({ type: "message", content: "hi", ref: "r-1" });
  const again = await a.next("ack");
  assert.deepEqual(again, ack);
  a.send({ type: "history", room: "lobby", ref: "h" });
  const history = await a.next("history");
  assert.equal((history.messages as unknown[]).length, 1);
  assert.equal(a.of("message").length, 1);
});

test("server answers ping with pong, echoing the ref", async () => {
  await using server = await startTestServer();
  await using a = await TestSocket.open(server.ws());
  a.send({ type: "ping", ref: "p1" });
  assert.deepEqual(await a.next("pong"), { type: "pong", ref: "p1" });
});

test("server answers bad frames with errors, keeps the connection and tells nobody else", async () => {
  await using server = await startTestServer();
  await using a = await TestSocket.open(server.ws({ name: "a" }));
  await using b = await TestSocket.open(server.ws({ name: "b" }));
  a.send("{not json");
  assert.equal((await a.next("error")).code, "invalid_json");
  a.send({ type: "message", content: 5, ref: "x1" });
  const schema = await a.next("error");
  assert.equal(schema.code, "invalid_message");
  assert.equal(schema.ref, "x1");
  assert.match(String(schema.message), /"content"/);
  a.send({ type: "message", room: "bad room!", content: "x" });
  assert.match(String((await a.next("error")).message), /"room"/);
  a.send({ type: "teleport" });
  assert.equal((await a.next("error")).code, "unknown_type");
  a.send({ type: "message", content: "x", __proto__x: 1 });
  assert.equal((await a.next("error")).code, "invalid_message");
  a.socket.send(new Uint8Array([1, 2, 3]));
  assert.equal((await a.next("error")).code, "unsupported_frame");
  a.send({ type: "message", room: "elsewhere", content: "x", ref: "nm" });
  const notMember = await a.next("error");
  assert.deepEqual([notMember.code, notMember.ref], ["not_member", "nm"]);
  a.send({ type: "ping" });
  await a.next("pong");
  assert.equal(a.socket.readyState, WebSocket.OPEN);
  b.send({ type: "ping" });
  await b.next("pong");
  assert.deepEqual(b.events.map((e) => e.type), ["welcome", "pong"]);
});

test("server closes with 1009 a frame over --max-frame-bytes", async () => {
  await using server = await startTestServer([
    "--max-frame-bytes",
    "2048",
    "--max-content-chars",
    "500",
  ]);
  await using a = await TestSocket.open(server.ws());
  a.send("x".repeat(3000));
  const closed = await a.closed;
  assert.equal(closed.code, 1009);
  assert.equal(closed.reason, "Message too big");
});

test("server closes with 1009 a fragmented message whose parts add up past the limit", async () => {
  await using server = await startTestServer([
    "--max-frame-bytes",
    "2048",
    "--max-content-chars",
    "500",
  ]);
  const { conn, response } = await rawUpgrade(new URL("ws", server.url));
  try {
    assert.equal(response.status, 101);
    await writeAll(conn, clientFrame("x".repeat(1500), 1, false));
    await writeAll(conn, clientFrame("x".repeat(1500), 0, true));
    const frames = await readServerFrames(conn, (f) => f.opcode === 8, response.rest);
    const close = frames.at(-1)!;
    assert.equal(close.opcode, 8);
    assert.equal(closeCode(close), 1009);
  } finally {
    conn.close();
  }
  await eventually(() => server.http.connections === 0, 5_000, "the connection to be released");
});

test("server survives malformed upgrade requests and keeps serving", async () => {
  await using server = await startTestServer();
  const url = new URL("ws", server.url);
  const base = [`GET /ws HTTP/1.1`, `Host: ${url.host}`];
  const cases: string[][] = [
    [...base, "Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Version: 13"],
    [...base, "Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Key: x"],
    [
      ...base,
      "Upgrade: websocket",
      "Connection: Upgrade",
      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
      "Sec-WebSocket-Version: 99",
    ],
    [...base, "Upgrade: websocket", "Connection: keep-alive"],
    [...base, "Upgrade: h2c", "Connection: Upgrade"],
    [`POST /ws HTTP/1.1`, `Host: ${url.host}`, "Upgrade: websocket", "Content-Length: 0"],
  ];
  for (const lines of cases) {
    // Deno decides what it can upgrade; whatever it answers, the listener must live on.
    const response = await rawRequest(url, lines);
    assert.ok(response.status === 101 || (response.status >= 400 && response.status < 500));
  }
  const protocols = [",,,", "a b;c", "parley.v1,,parley.v1", "x".repeat(4000), "\u00e9t\u00e9"];
  for (const protocol of protocols) {
    const { conn, response } = await rawUpgrade(url, [`Sec-WebSocket-Protocol: ${protocol}`]);
    conn.close();
    assert.ok([101, 400].includes(response.status), `${protocol} → ${response.status}`);
  }
  await eventually(() => server.http.connections === 0, 5_000, "raw connections to close");
  await using a = await TestSocket.open(server.ws());
  await using b = await TestSocket.open(server.ws());
  a.send({ content: "still here" });
  assert.equal((await b.next("message")).content, "still here");
});

test("server tears down a peer that never answers the close handshake", async () => {
  await using server = await startTestServer([
    "--max-frame-bytes",
    "1024",
    "--max-content-chars",
    "500",
  ]);
  const { conn, response } = await rawUpgrade(new URL("ws", server.url));
  try {
    assert.equal(response.status, 101);
    await eventually(() => server.hub.size === 1, 5_000, "registration");
    // Provoke a server close, then neither answer it nor close TCP.
    await writeAll(conn, clientFrame("y".repeat(2000)));
    await eventually(
      () => server.http.connections === 0 && server.hub.size === 0,
      8_000,
      "the watchdog to release the client",
    );
  } finally {
    conn.close();
  }
  await using a = await TestSocket.open(server.ws());
  a.send({ type: "ping" });
  await a.next("pong");
});

test("server closes with 1001 a peer that stops answering pings for --idle-timeout", async () => {
  await using server = await startTestServer(["--idle-timeout", "1"]);
  const { conn, response } = await rawUpgrade(new URL("ws", server.url));
  try {
    const frames = await readServerFrames(conn, (f) => f.opcode === 8, response.rest);
    assert.ok(frames.some((f) => f.opcode === 9), "the server pinged first");
    assert.equal(closeCode(frames.at(-1)!), 1001);
  } finally {
    conn.close();
  }
  await eventually(() => server.http.connections === 0, 5_000, "the connection to be released");
});

test("server answers overloaded and closes with 1013 when the hub queue is full", async () => {
  const { promise: hold, resolve: release } = Promise.withResolvers<void>();
  await using server = await startTestServer([], { hubQueueCapacity: 2, holdHub: hold });
  const a = await TestSocket.open(server.ws(), { welcome: false });
  const b = await TestSocket.open(server.ws(), { welcome: false });
  try {
    // Two registrations fill the queue; a third connection cannot register.
    const c = await TestSocket.open(server.ws(), { welcome: false });
    const closed = await c.closed;
    assert.equal(closed.code, 1013);
    a.send({ type: "join", room: "dev", ref: "p" });
    const error = await a.next("error");
    assert.deepEqual([error.code, error.ref], ["overloaded", "p"]);
  } finally {
    release();
  }
  await a.next("welcome");
  await b.next("welcome");
  await a.close();
  await b.close();
});

test("server closes every client with 1001 on shutdown and refuses new ones", async () => {
  const server = await startTestServer();
  const a = await TestSocket.open(server.ws());
  const b = await TestSocket.open(server.ws({ name: "b" }), { protocols: "parley.v1" });
  const stopping = server.shutdown();
  for (const client of [a, b]) {
    const closed = await client.closed;
    assert.equal(closed.code, 1001);
    assert.equal(closed.reason, "Server shutting down");
  }
  await stopping;
  await server.finished;
});

test("server rate-limits a flooding client, then closes it with 1008", async () => {
  await using server = await startTestServer([
    "--rate",
    "0.001",
    "--burst",
    "2",
    "--rate-limit-strikes",
    "3",
  ]);
  await using a = await TestSocket.open(server.ws());
  // One frame at a time: Deno aborts a connection that receives data after its close frame.
  for (let i = 0; i < 4; i++) {
    a.send({ type: "ping", ref: `p${i}` });
    await a.until((events) => events.length === i + 2, 5_000, `an answer to ping ${i}`);
  }
  a.send({ type: "ping", ref: "p4" });
  const closed = await a.closed;
  assert.equal(closed.code, 1008);
  assert.equal(closed.reason, "Rate limit abuse");
  assert.equal(a.of("pong").length, 2);
  assert.deepEqual(a.of("error").map((e) => [e.code, e.ref]), [
    ["rate_limited", "p2"],
    ["rate_limited", "p3"],
  ]);
});

test("server refuses a foreign browser Origin with 403 and accepts its own and allowed ones", async () => {
  await using server = await startTestServer(["--allowed-origin", "https://chat.example"]);
  const url = new URL("ws", server.url);
  const foreign = await rawUpgrade(url, ["Origin: https://evil.example"]);
  foreign.conn.close();
  assert.equal(foreign.response.status, 403);
  const own = await rawUpgrade(url, [`Origin: http://${url.host}`]);
  own.conn.close();
  assert.equal(own.response.status, 101);
  const allowed = await rawUpgrade(url, ["Origin: https://chat.example"]);
  allowed.conn.close();
  assert.equal(allowed.response.status, 101);
  await eventually(() => server.http.connections === 0, 5_000, "connections to close");
});

test("server serves /healthz, /readyz and a 404 JSON body for unknown routes", async () => {
  await using server = await startTestServer();
  const health = await fetch(new URL("healthz", server.url));
  assert.deepEqual(await health.json(), { status: "ok" });
  const ready = await fetch(new URL("readyz", server.url));
  assert.equal(ready.status, 200);
  await ready.body?.cancel();
  const missing = await fetch(new URL("nope", server.url));
  assert.equal(missing.status, 404);
  assert.equal((await missing.json()).error.code, "not_found");
  const plain = await fetch(new URL("ws", server.url));
  assert.equal(plain.status, 426);
  await plain.body?.cancel();
});

test("a client that stops reading is closed with 4008 while memory stays bounded", async () => {
  await using server = await spawnServer([
    ...UNLIMITED,
    "--store",
    "memory:",
    "--history-limit",
    "50",
    "--log-level",
    "warning",
  ]);
  const wsUrl = new URL(server.ws());
  const stuck = await rawUpgrade(wsUrl);
  assert.equal(stuck.response.status, 101);
  const received = { count: 0, last: 0 };
  const reader = new WebSocket(server.ws({ name: "reader" }));
  const readerOpen = new Promise((resolve) => reader.onopen = resolve);
  const readerClosed = new Promise((resolve) => reader.onclose = resolve);
  reader.onmessage = (event) => {
    const data = String(event.data);
    if (data.startsWith('{"type":"message"')) {
      received.count++;
      received.last = JSON.parse(data).id;
    }
  };
  const sender = await TestSocket.open(server.ws({ name: "sender" }));
  try {
    await readerOpen;
    const content = "z".repeat(3900);
    const total = 13_000; // ≈ 50 MB broadcast to each member
    const baseline = await server.rss();
    let peak = baseline;
    for (let sent = 0; sent < total;) {
      for (let i = 0; i < 100; i++, sent++) sender.socket.send(JSON.stringify({ content }));
      sender.events.length = 0; // keep the test process small
      await eventually(() => received.count >= sent, 30_000, `the reader to get ${sent}`);
      peak = Math.max(peak, await server.rss());
    }
    assert.equal(received.count, total);
    const growth = peak - baseline;
    assert.ok(growth < 48 * 1024 * 1024, `server RSS grew by ${growth} bytes`);
    const metrics = await (await fetch(new URL("metrics", server.url))).text();
    assert.match(metrics, /parley_slow_consumer_disconnects_total 1\b/);
    // What the stuck client finally reads ends with the 4008 close frame.
    const frames = await readServerFrames(stuck.conn, (f) => f.opcode === 8, stuck.response.rest);
    assert.equal(closeCode(frames.at(-1)!), 4008);
  } finally {
    stuck.conn.close();
    reader.close();
    await readerClosed;
    await sender.close();
  }
});

test("SIGTERM closes clients with 1001 and exits 0 within 5 seconds", async () => {
  await using server = await spawnServer(["--store", "memory:"]);
  const a = await TestSocket.open(server.ws());
  const started = Date.now();
  const status = server.stop("SIGTERM");
  const closed = await a.closed;
  assert.equal(closed.code, 1001);
  assert.equal((await status).code, 0);
  assert.ok(Date.now() - started < 5_000);
  const lines = server.output().split("\n").filter((l) => l.startsWith("{"));
  const records = lines.map((line) => JSON.parse(line));
  const opened = records.find((r) => r.message === "Connection opened");
  const closedLog = records.find((r) => r.message === "Connection closed");
  assert.equal(opened?.properties.remote, "127.0.0.1");
  assert.equal(closedLog?.properties.code, 1001);
  assert.ok(Number.isInteger(closedLog?.properties.durationMs));
});

test("a bad flag exits 2 with one line naming the flag, the value and what is allowed", async () => {
  const { code, stderr } = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL("./main.ts", import.meta.url).pathname, "--port", "abc"],
    stdout: "null",
    stderr: "piped",
  }).output();
  assert.equal(code, 2);
  const text = new TextDecoder().decode(stderr).trim();
  assert.equal(text.split("\n").length, 1);
  assert.match(text, /--port.*"abc".*integer/);
});

test("server metrics move with traffic and build info is exported", async () => {
  await using server = await startTestServer();
  const scrape = async () => await (await fetch(new URL("metrics", server.url))).text();
  const value = (text: string, series: string) => {
    const line = text.split("\n").find((l) => l.startsWith(`${series} `));
    return line === undefined ? NaN : Number(line.slice(series.length + 1));
  };
  const before = await scrape();
  await using a = await TestSocket.open(server.ws({ name: "a" }), { protocols: "parley.v1" });
  await using b = await TestSocket.open(server.ws({ name: "b" }));
  a.send({ sender: "x", content: "one" });
  a.send({ type: "message", content: "two", ref: "r" });
  a.send("{bad");
  await b.until((events) => events.filter((e) => e.type === "message").length === 2);
  await a.next("error");
  const after = await scrape();
  assert.equal(value(after, 'parley_connections{protocol="parley.v1"}'), 1);
  assert.equal(value(after, 'parley_connections{protocol="plain"}'), 1);
  assert.equal(
    value(after, 'parley_messages_stored_total{kind="room"}') -
      value(before, 'parley_messages_stored_total{kind="room"}'),
    2,
  );
  assert.equal(value(after, 'parley_frames_in_total{type="legacy"}'), 1);
  assert.equal(value(after, 'parley_frames_in_total{type="message"}'), 1);
  assert.equal(value(after, 'parley_frames_in_total{type="invalid"}'), 1);
  assert.equal(value(after, 'parley_errors_total{code="invalid_json"}'), 1);
  assert.ok(value(after, "parley_deliveries_total") >= 4, "two messages to two members");
  assert.ok(value(after, "parley_frames_out_total") >= 4);
  assert.ok(value(after, "parley_connections_opened_total") >= 2);
  assert.ok(value(after, "parley_process_resident_memory_bytes") > 0);
  assert.match(after, /parley_build_info\{[^}]*version="\d+\.\d+\.\d+"[^}]*\} 1/);
});

test("server metrics count SQLite's write batches and their event-loop time; memory: reads 0", async () => {
  const dir = await Deno.makeTempDir({ prefix: "parley_metrics_" });
  try {
    const value = (text: string, series: string) => {
      const line = text.split("\n").find((l) => l.startsWith(`${series} `));
      return line === undefined ? NaN : Number(line.slice(series.length + 1));
    };
    for (const store of [`sqlite:${dir}/parley.db`, "memory:"]) {
      await using server = await startTestServer(["--store", store]);
      const scrape = async () => await (await fetch(new URL("metrics", server.url))).text();
      await using a = await TestSocket.open(server.ws({ name: "a" }), { protocols: "parley.v1" });
      for (let i = 0; i < 3; i++) {
        a.send({ type: "message", content: `m${i}`, ref: `r${i}` });
        await a.next("ack");
      }
      const text = await scrape();
      const batches = value(text, "parley_store_write_batches_total");
      const seconds = value(text, "parley_store_write_seconds_total");
      if (store === "memory:") {
        assert.equal(batches, 0);
        assert.equal(seconds, 0);
      } else {
        // One commit per turn: three acknowledged messages sent one after another are three.
        assert.equal(batches, 3);
        assert.ok(seconds > 0 && seconds < 10, `${seconds} s`);
      }
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
