/**
 * What one `socket.send` costs in native memory: a server socket whose peer completes the
 * handshake and then reads nothing is handed `count` frames of `size` bytes in one turn, and the
 * growth of RSS is divided by `count`. The payload is part of it; the rest is the runtime's write
 * task per send. Deno keeps much of it after the writes complete (when the kernel takes them all,
 * `bufferedAmount` is back at 0 and the RSS stays), which is why `client.ts` bounds the sends of
 * one flush pass (`PASS_SEND_FRAMES`).
 *
 *     deno run --allow-net bench/send_memory.ts [size=70] [count=20000]
 *
 * Prints one JSON line. Loopback only; the server and the peer live in this process.
 */

const size = Number(Deno.args[0] ?? 70);
const count = Number(Deno.args[1] ?? 20_000);
if (!(size >= 1 && count >= 1)) throw new RangeError("usage: send_memory.ts [size] [count]");

const opened = Promise.withResolvers<WebSocket>();
const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (request) => {
  const { socket, response } = Deno.upgradeWebSocket(request);
  socket.onopen = () => opened.resolve(socket);
  return response;
});

// The peer: a raw TCP connection that asks for the upgrade and never reads a byte afterwards.
const peer = await Deno.connect({ hostname: "127.0.0.1", port: server.addr.port });
await peer.write(new TextEncoder().encode(
  "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
    "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==\r\nSec-WebSocket-Version: 13\r\n\r\n",
));
const socket = await opened.promise;
const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
await pause(200);

const before = Deno.memoryUsage().rss;
const text = "x".repeat(size);
for (let i = 0; i < count; i++) socket.send(text);
await pause(500);
const after = Deno.memoryUsage().rss;
console.log(JSON.stringify({
  size,
  count,
  stillBuffered: socket.bufferedAmount,
  rssGrowthPerSend: Math.round((after - before) / count),
}));
// The socket's pending writes would hold a graceful shutdown open: just end the process.
Deno.exit(0);
