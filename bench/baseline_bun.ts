/**
 * A peer for the benchmark: Bun's built-in WebSocket pub/sub (uWebSockets), run by `bun`, not
 * Deno. It does what `baseline_bare.ts` does: every text frame `{"sender","content"}` becomes one
 * `message` object shaped like Parley's, encoded once and published to every socket of the one
 * room, the sender included; anything else is ignored.
 *
 *     bun run bench/baseline_bun.ts [PORT]
 *
 * PORT defaults to 0 (a free port); the bound one is printed as
 * `baseline_bun listening on http://127.0.0.1:PORT/`. `GET /count` answers the deliveries so far
 * (the room's subscribers at each publish, summed), as `baseline_bare.ts` counts its sends.
 */
import { IDLE_TIMEOUT_S, messageFrame, ROOM } from "./baseline_frame.ts";

/** The part of Bun's API this file uses (Deno type-checks it without Bun's types). */
interface BunSocket {
  subscribe(topic: string): void;
}
interface BunServer {
  readonly port: number;
  upgrade(request: Request): boolean;
  publish(topic: string, data: string): number;
  subscriberCount(topic: string): number;
}
declare const Bun: {
  serve(options: {
    hostname: string;
    port: number;
    fetch(request: Request, server: BunServer): Response | undefined;
    websocket: {
      idleTimeout: number;
      open(socket: BunSocket): void;
      message(socket: BunSocket, data: string | Uint8Array): void;
    };
  }): BunServer;
};
declare const process: { argv: string[] };

const port = Number(process.argv[2] ?? "0");
const hostname = process.argv[3] ?? "127.0.0.1";
let lastId = 0;
let sends = 0;

const server = Bun.serve({
  hostname,
  port,
  fetch(request, server) {
    if (request.headers.get("upgrade")?.toLowerCase() === "websocket") {
      return server.upgrade(request) ? undefined : new Response("Upgrade failed", { status: 400 });
    }
    return new Response(new URL(request.url).pathname === "/count" ? String(sends) : "bun\n");
  },
  websocket: {
    idleTimeout: IDLE_TIMEOUT_S,
    open(socket) {
      socket.subscribe(ROOM);
    },
    message(_socket, data) {
      const text = messageFrame(data, lastId + 1);
      if (text === undefined) return;
      lastId++;
      server.publish(ROOM, text);
      sends += server.subscriberCount(ROOM);
    },
  },
});
console.log(`baseline_bun listening on http://${hostname}:${server.port}/`);
