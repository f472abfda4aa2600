/**
 * Tests of the load generator's WebSocket client: the frame reader on arbitrary read boundaries,
 * the message counter, and {@link RawWebSocket} on the epoll poller against real servers (Deno's
 * own WebSocket server, and a hand-written one that sends pings and closes).
 */
import assert from "node:assert/strict";
import { TcpPoller } from "./epoll.ts";
import { countMessages, encodeTextFrame, FrameReader, RawWebSocket } from "./raw_ws.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const TIMEOUT_MS = 20_000;

/** A server frame (unmasked) with the given opcode and payload. */
function serverFrame(opcode: number, payload: Uint8Array): Uint8Array {
  const n = payload.byteLength;
  const header = n < 126
    ? [0x80 | opcode, n]
    : n < 65536
    ? [0x80 | opcode, 126, n >> 8, n & 0xff]
    : [
      0x80 | opcode,
      127,
      0,
      0,
      0,
      0,
      (n >>> 24) & 0xff,
      (n >> 16) & 0xff,
      (n >> 8) & 0xff,
      n & 0xff,
    ];
  const frame = new Uint8Array(header.length + n);
  frame.set(header);
  frame.set(payload, header.length);
  return frame;
}

/** Deno's own server on a free loopback port; `stop()` shuts it down and waits for it. */
async function serveLoopback(
  handler: (req: Request) => Response,
): Promise<{ port: number; stop: () => Promise<void> }> {
  const controller = new AbortController();
  const { promise: listening, resolve: onListen } = Promise.withResolvers<number>();
  const server = Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    signal: controller.signal,
    onListen: ({ port }) => onListen(port),
  }, handler);
  const port = await listening;
  return {
    port,
    stop: async () => {
      controller.abort();
      await server.finished;
    },
  };
}

/** Polls until `done()` holds, yielding to the event loop between polls. */
async function pollUntil(poller: TcpPoller, done: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + TIMEOUT_MS;
  while (!done()) {
    if (Date.now() > deadline) throw new Error(`Timed out waiting for ${what}`);
    poller.poll(5);
    await new Promise((resolve) => setTimeout(resolve, 0));
  }
}

/** Connects while polling, since nothing moves unless the poller is polled. */
async function connect(
  poller: TcpPoller,
  options: Parameters<typeof RawWebSocket.connect>[1],
  sink: Parameters<typeof RawWebSocket.connect>[2],
): Promise<RawWebSocket> {
  let socket: RawWebSocket | undefined;
  let failure: unknown;
  RawWebSocket.connect(poller, options, sink).then((s) => socket = s, (e) => failure = e);
  await pollUntil(poller, () => socket !== undefined || failure !== undefined, "the handshake");
  if (failure !== undefined) throw failure;
  return socket!;
}

Deno.test("FrameReader returns every frame whole whatever the read boundaries", () => {
  const texts = ["a", "x".repeat(125), "y".repeat(126), "z".repeat(65_535), "w".repeat(70_000)];
  const stream = texts.map((t) => serverFrame(0x1, encoder.encode(t)));
  const bytes = new Uint8Array(stream.reduce((n, f) => n + f.byteLength, 0));
  let offset = 0;
  for (const frame of stream) {
    bytes.set(frame, offset);
    offset += frame.byteLength;
  }
  for (const chunk of [1, 2, 3, 7, 125, 4096, bytes.byteLength]) {
    const got: string[] = [];
    const reader = new FrameReader(64, (p) => got.push(decoder.decode(p)), () => {});
    for (let i = 0; i < bytes.byteLength; i += chunk) {
      reader.append(bytes.subarray(i, Math.min(bytes.byteLength, i + chunk)));
    }
    assert.deepEqual(got.map((t) => t.length), texts.map((t) => t.length), `chunk ${chunk}`);
    assert.deepEqual(got, texts);
  }
});

Deno.test("FrameReader refuses fragmented frames", () => {
  const reader = new FrameReader(64, () => {}, () => {});
  const fragment = serverFrame(0x1, encoder.encode("part"));
  fragment[0] = 0x01; // FIN cleared
  assert.throws(() => reader.append(fragment), /fragmented/);
});

Deno.test("countMessages counts message events in a plain frame and in a parley.v1 batch", () => {
  const message = (id: number) =>
    JSON.stringify({
      type: "message",
      room: "lobby",
      sender: "c1",
      content: `1|${id}|1.5|xx`,
      id,
      ts: "2025-01-01T00:00:00.000Z",
    });
  const joined = JSON.stringify({ type: "user_joined", room: "lobby", user: "c2" });
  const welcome = JSON.stringify({
    type: "welcome",
    user: "c1",
    connection: "x",
    rooms: ["lobby"],
    protocol: 1,
  });
  assert.equal(countMessages(encoder.encode(message(1))), 1);
  assert.equal(countMessages(encoder.encode(welcome)), 0);
  assert.equal(
    countMessages(encoder.encode(`[${message(1)},${joined},${message(2)},${message(3)}]`)),
    3,
  );
});

Deno.test(
  "RawWebSocket exchanges text with Deno's WebSocket server and gets its subprotocol",
  { sanitizeOps: true, sanitizeResources: true },
  async () => {
    const { port, stop } = await serveLoopback((req) => {
      const { socket, response } = Deno.upgradeWebSocket(req, { protocol: "parley.v1" });
      socket.onmessage = (event) => {
        socket.send(`echo:${event.data}`);
        socket.send("b".repeat(70_000));
      };
      return response;
    });
    const poller = new TcpPoller();
    const got: string[] = [];
    const socket = await connect(poller, {
      hostname: "127.0.0.1",
      port,
      path: "/ws",
      protocol: "parley.v1",
      bufferBytes: 1024,
    }, { text: (p) => got.push(decoder.decode(p)), closed: () => {} });
    try {
      assert.equal(socket.protocol, "parley.v1");
      socket.sendFrame(encodeTextFrame("hello"));
      await pollUntil(poller, () => got.length === 2, "the echo");
      assert.deepEqual(got, ["echo:hello", "b".repeat(70_000)]);
    } finally {
      socket.close();
      poller.close();
      await stop();
    }
  },
);

Deno.test(
  "RawWebSocket answers a ping with a pong, binds its source address and reports the close code",
  { sanitizeOps: true, sanitizeResources: true },
  async () => {
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = (listener.addr as Deno.NetAddr).port;
    const served = (async () => {
      const conn = await listener.accept();
      const remote = (conn.remoteAddr as Deno.NetAddr).hostname;
      const buf = new Uint8Array(4096);
      let head = "";
      while (!head.includes("\r\n\r\n")) {
        const n = await conn.read(buf);
        if (n === null) throw new Error("client went away");
        head += decoder.decode(buf.subarray(0, n));
      }
      await conn.write(encoder.encode(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
      ));
      // A text frame and a ping in one write: the client must answer the ping.
      const hi = serverFrame(0x1, encoder.encode("hi"));
      const ping = serverFrame(0x9, encoder.encode("p1"));
      const both = new Uint8Array(hi.byteLength + ping.byteLength);
      both.set(hi);
      both.set(ping, hi.byteLength);
      await conn.write(both);
      let pong = new Uint8Array(0);
      while (pong.byteLength < 8) {
        const n = await conn.read(buf);
        if (n === null) throw new Error("no pong");
        const joined = new Uint8Array(pong.byteLength + n);
        joined.set(pong);
        joined.set(buf.subarray(0, n), pong.byteLength);
        pong = joined;
      }
      await conn.write(serverFrame(0x8, new Uint8Array([4008 >> 8, 4008 & 0xff])));
      // Drain until the client closes its end.
      while (await conn.read(buf) !== null) { /* the close reply */ }
      conn.close();
      return { remote, head, pong };
    })();
    const poller = new TcpPoller();
    const texts: string[] = [];
    let closedWith: number | undefined;
    const socket = await connect(poller, {
      hostname: "127.0.0.1",
      port,
      path: "/ws?name=c1",
      localAddress: "127.0.0.3",
    }, { text: (p) => texts.push(decoder.decode(p)), closed: (code) => closedWith = code });
    try {
      await pollUntil(poller, () => closedWith !== undefined, "the close");
      const { remote, head, pong } = await served;
      assert.equal(remote, "127.0.0.3");
      assert.match(head, /^GET \/ws\?name=c1 HTTP\/1\.1\r\n/);
      assert.deepEqual(texts, ["hi"]);
      // FIN + pong, masked, length 2, zero mask key, then the ping's payload.
      assert.deepEqual([...pong.subarray(0, 8)], [0x8a, 0x82, 0, 0, 0, 0, 0x70, 0x31]);
      assert.equal(closedWith, 4008);
      assert.equal(socket.open, false);
    } finally {
      socket.close();
      poller.close();
      listener.close();
    }
  },
);

Deno.test(
  "TcpPoller.poll dispatches at most maxEvents ready sockets per call, and the rest on the next",
  { sanitizeOps: true, sanitizeResources: true },
  async () => {
    const { promise: allSent, resolve: sent } = Promise.withResolvers<void>();
    let answered = 0;
    const { port, stop } = await serveLoopback((req) => {
      const { socket, response } = Deno.upgradeWebSocket(req);
      socket.onmessage = () => {
        socket.send("ready");
        if (++answered === 3) sent();
      };
      return response;
    });
    const poller = new TcpPoller();
    let got = 0;
    const sockets: RawWebSocket[] = [];
    try {
      for (let i = 0; i < 3; i++) {
        sockets.push(
          await connect(poller, { hostname: "127.0.0.1", port, path: "/ws", bufferBytes: 1024 }, {
            text: () => got++,
            closed: () => {},
          }),
        );
      }
      for (const socket of sockets) socket.sendFrame(encodeTextFrame("go"));
      await allSent;
      // Let the kernel move the three frames over loopback without reading them.
      await new Promise((resolve) => setTimeout(resolve, 100));
      assert.equal(poller.poll(0, 1), 1);
      assert.equal(got, 1);
      assert.equal(poller.poll(0, 5), 2);
      assert.equal(got, 3);
      assert.equal(poller.poll(0, 5), 0);
    } finally {
      for (const socket of sockets) socket.close();
      poller.close();
      await stop();
    }
  },
);

Deno.test(
  "RawWebSocket is backlogged while its peer does not read, and not once the peer has read",
  { sanitizeOps: true, sanitizeResources: true },
  async () => {
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = (listener.addr as Deno.NetAddr).port;
    const { promise: drain, resolve: startDraining } = Promise.withResolvers<void>();
    const served = (async () => {
      const conn = await listener.accept();
      const buf = new Uint8Array(64 * 1024);
      let head = "";
      while (!head.includes("\r\n\r\n")) {
        const n = await conn.read(buf);
        if (n === null) throw new Error("client went away");
        head += decoder.decode(buf.subarray(0, n));
      }
      await conn.write(encoder.encode(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
      ));
      // Read nothing until told: the kernel's buffers fill and the client must hold the rest.
      await drain;
      let bytes = 0;
      while (true) {
        const n = await conn.read(buf);
        if (n === null) break;
        bytes += n;
      }
      conn.close();
      return bytes;
    })();
    const poller = new TcpPoller();
    const socket = await connect(poller, { hostname: "127.0.0.1", port, path: "/ws" }, {
      text: () => {},
      closed: () => {},
    });
    try {
      assert.equal(socket.backlogged, false);
      const frame = encodeTextFrame("x".repeat(60_000));
      let sent = 0;
      // Loopback buffers hold a few MiB at most; 1 GiB unsent would mean the flag never rises.
      while (!socket.backlogged && sent < 16_384) {
        socket.sendFrame(frame);
        sent++;
      }
      assert.equal(socket.backlogged, true, `still not backlogged after ${sent} frames`);
      startDraining();
      await pollUntil(poller, () => !socket.backlogged, "the backlog to drain");
      socket.close();
      assert.equal(await served, sent * frame.byteLength);
    } finally {
      startDraining();
      socket.close();
      poller.close();
      listener.close();
    }
  },
);
