/**
 * The benchmark's reference point: the smallest broadcast server Deno can run, with no rooms,
 * history, batching, bounds or checks.
 *
 * Every text frame `{"sender","content"}` becomes one `message` object shaped like Parley's
 * (`type`, `room`, `sender`, `content`, `id`, `ts`), encoded once and sent to every open socket,
 * the sender included; so a delivery carries the same bytes as Parley's. Anything else is ignored.
 * SIGTERM and SIGINT exit with status 0 (so `--cpu-prof` writes its profile).
 *
 *     deno run --allow-net bench/baseline_bare.ts [PORT]
 *
 * PORT defaults to 0 (a free port); the bound one is printed as
 * `baseline_bare listening on http://127.0.0.1:PORT/`. `GET /count` answers the number of frames
 * sent so far (the harness's server-side delivery count; one increment per send).
 */

import { IDLE_TIMEOUT_S, messageFrame } from "./baseline_frame.ts";

const port = Number(Deno.args[0] ?? "0");
const hostname = Deno.args[1] ?? "127.0.0.1";
const sockets = new Set<WebSocket>();
let lastId = 0;
let sends = 0;

function broadcast(data: unknown): void {
  const text = messageFrame(data, lastId + 1);
  if (text === undefined) return;
  lastId++;
  for (const socket of sockets) {
    if (socket.readyState === WebSocket.OPEN) {
      socket.send(text);
      sends++;
    }
  }
}

Deno.serve({
  hostname,
  port,
  onListen: (addr) => console.log(`baseline_bare listening on http://${hostname}:${addr.port}/`),
}, (req) => {
  if (req.headers.get("upgrade")?.toLowerCase() !== "websocket") {
    return new Response(new URL(req.url).pathname === "/count" ? String(sends) : "baseline_bare\n");
  }
  const { socket, response } = Deno.upgradeWebSocket(req, { idleTimeout: IDLE_TIMEOUT_S });
  socket.onopen = () => sockets.add(socket);
  socket.onclose = () => sockets.delete(socket);
  socket.onerror = () => {};
  socket.onmessage = (event) => broadcast(event.data);
  return response;
});

for (const signal of ["SIGTERM", "SIGINT"] as const) {
  Deno.addSignalListener(signal, () => Deno.exit(0));
}
