/**
 * Where a room's presence storm leaves memory, over time: starts a Parley server (`memory:` store,
 * the permissions of `deno task start`), opens `clients` WebSocket connections in bursts of
 * `burst` (each burst waits for the previous one to open), then reads the server's memory gauges
 * from `/metrics` every `every` seconds for `seconds` seconds. One JSON line per reading.
 *
 *     deno run -A bench/storm_memory.ts [--clients 3000] [--burst 200] [--v1] [--seconds 60]
 *       [--every 3] [-- extra server flags, e.g. --presence-events-max=0]
 *
 * Used for BENCHMARKS.md ("Idle memory"): the first 1,000 joins of a room make ~500,000
 * `user_joined` deliveries, and V8's heap grown by them comes back only when its memory reducer
 * runs, about half a minute later.
 */
import { parseArgs } from "node:util";
import { spawnServer } from "../tests/helpers/server.ts";

const { values, positionals } = parseArgs({
  args: Deno.args,
  allowPositionals: true,
  options: {
    clients: { type: "string", default: "3000" },
    burst: { type: "string", default: "200" },
    v1: { type: "boolean", default: false },
    seconds: { type: "string", default: "60" },
    every: { type: "string", default: "3" },
  },
});
const clients = Number(values.clients);
const burst = Number(values.burst);
const seconds = Number(values.seconds);
const every = Number(values.every);

await using server = await spawnServer([
  "--store=memory:",
  "--log-level=warning",
  `--max-connections-per-ip=${clients + 100}`,
  ...positionals,
]);
const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function gauges(): Promise<Record<string, number>> {
  const text = await (await fetch(new URL("/metrics", server.url))).text();
  const mib = (name: string) =>
    Math.round(Number(text.match(new RegExp(`^${name} (\\S+)`, "m"))?.[1] ?? NaN) / 2 ** 17) / 8;
  return {
    rssMiB: mib("parley_process_resident_memory_bytes"),
    heapUsedMiB: mib("parley_process_heap_used_bytes"),
    heapTotalMiB: mib("parley_process_heap_total_bytes"),
    externalMiB: mib("parley_process_external_memory_bytes"),
  };
}

const sockets: WebSocket[] = [];
try {
  const url = server.ws();
  let frames = 0;
  const started = performance.now();
  for (let i = 0; i < clients; i += burst) {
    const opening: Promise<unknown>[] = [];
    for (let j = i; j < Math.min(clients, i + burst); j++) {
      const socket = values.v1 ? new WebSocket(url, ["parley.v1"]) : new WebSocket(url);
      socket.onmessage = () => frames++;
      sockets.push(socket);
      opening.push(
        new Promise((resolve, reject) => {
          socket.onopen = resolve;
          socket.onerror = () => reject(new Error(`Connection ${j} failed`));
        }),
      );
    }
    await Promise.all(opening);
  }
  console.log(JSON.stringify({
    clients,
    burst,
    protocol: values.v1 ? "parley.v1" : "plain",
    connectedInMs: Math.round(performance.now() - started),
    serverFlags: positionals,
  }));
  for (let t = every; t <= seconds; t += every) {
    await pause(every * 1000);
    console.log(JSON.stringify({ afterS: t, framesReceived: frames, ...await gauges() }));
  }
} finally {
  // The server itself is stopped by `await using` when the module ends.
  for (const socket of sockets) socket.close();
}
