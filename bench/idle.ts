/**
 * Idle-memory measurements: server RSS per open connection at each of a scenario's points, over
 * a warm reference point of {@link IDLE_WARM} connections. A point one process cannot hold (the
 * hard descriptor limit) is measured on the fewest processes that can: Parley nodes clustered on
 * a fresh Redis, which must deliver one published message to every client, or independent bare
 * baselines. The connections only open, wait for Parley's welcome and read what arrives.
 */
import { RedisServer } from "../tests/helpers/redis_server.ts";
import type { LoaderSpec } from "./loader.ts";
import {
  BULK_INTERVAL_MS,
  CONCURRENCY,
  CONNECT_MS,
  CONTENT_CHARS,
  FD_HARD_LIMIT,
  FD_MARGIN,
  IDLE_CLIENTS_PER_LOADER,
  loadavg,
  LoaderProc,
  rssBytes,
  type Server,
  shares,
  sleep,
  startServer,
  stopServer,
} from "./proc.ts";
import type { IdleScenario, Options, Target } from "./scenarios.ts";
import { round } from "./stats.ts";

/** Read buffer per idle client in bytes. */
const IDLE_BUFFER_BYTES = 1024;
/** Source addresses idle clients are spread over. */
const IDLE_SOURCES = ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"];
/** Connections opened before the idle-memory reference point, to warm the server's code paths. */
export const IDLE_WARM = 200;
/** API key of Parley nodes in a cluster idle point, for the one message published through them. */
const BENCH_API_KEY = "bench-api-key-for-the-cluster-point";
/** Parley's default `--presence-events-max`. */
const PRESENCE_EVENTS_MAX = 1_000;
/** How long clients have to receive that message, in milliseconds, and how often it is checked. */
const PUBLISH_WAIT_MS = 60_000;
const PUBLISH_POLL_MS = 100;

/** One idle-memory measurement of one target. */
export interface IdleResult {
  target: string;
  run: number;
  warm: { connections: number; rssMiB: number };
  points: {
    connections: number;
    held?: number;
    rssMiB?: number;
    bytesPerConnection?: number;
    skipped?: string;
    /** Server processes that held the point: set when one process could not. */
    nodes?: number;
    /** Clients that received the one message published on the first node (Parley nodes). */
    reached?: number;
    /** Milliseconds from publishing until the last of them had it (to within 100 ms). */
    reachedMs?: number;
  }[];
  loadavg: string;
}

/** A load generator that only opens connections: `clients` named from `offset` on. */
function idleLoaderSpec(
  id: number,
  target: Target,
  port: number,
  clients: number,
  offset: number,
): LoaderSpec {
  return {
    id,
    hostname: "127.0.0.1",
    port,
    ...(target.protocol === undefined ? {} : { protocol: target.protocol }),
    clients,
    offset,
    senders: 0,
    mode: "idle",
    rate: 0,
    sampleEvery: Number.MAX_SAFE_INTEGER,
    contentChars: CONTENT_CHARS,
    sources: IDLE_SOURCES,
    waitWelcome: target.server === "parley",
    concurrency: CONCURRENCY,
    bufferBytes: IDLE_BUFFER_BYTES,
    bulkIntervalMs: BULK_INTERVAL_MS,
  };
}

/** RSS after things settle: the median of a few samples taken after a pause. */
async function settledRss(pid: number): Promise<number> {
  await sleep(1_500);
  const samples: number[] = [];
  for (let i = 0; i < 5; i++) {
    samples.push(rssBytes(pid));
    await sleep(200);
  }
  return samples.sort((a, b) => a - b)[2]!;
}

/** Measures `target`'s RSS per connection at each of `scenario`'s points, on a fresh server. */
export async function measureIdle(
  scenario: IdleScenario,
  target: Target,
  run: number,
  options: Options,
): Promise<IdleResult> {
  const server = await startServer(target, { parleyFlags: options.parleyFlags });
  const loaders: LoaderProc[] = [];
  const maxHeld = FD_HARD_LIMIT - FD_MARGIN;
  const points = scenario.points.map((n) => ({ connections: n, feasible: n <= maxHeld }));
  // A point the descriptor limit rules out for one process is measured on several
  // (measureIdleOnNodes), and the most one process can hold is added as a point of its own.
  if (points.some((p) => !p.feasible)) {
    const most = Math.floor(maxHeld / 1000) * 1000;
    if (most > Math.max(0, ...points.filter((p) => p.feasible).map((p) => p.connections))) {
      points.push({ connections: most, feasible: true });
    }
  }
  const largest = Math.max(...points.filter((p) => p.feasible).map((p) => p.connections));
  let result: IdleResult;
  try {
    const count = Math.max(1, Math.ceil(largest / IDLE_CLIENTS_PER_LOADER));
    const warmShares = shares(IDLE_WARM, count);
    let offset = 0;
    for (let id = 0; id < count; id++) {
      loaders.push(
        // Names must not collide when a loader grows: give each its own range.
        new LoaderProc(
          idleLoaderSpec(id, target, server.port, warmShares[id]!, offset),
          options.loaderProf,
        ),
      );
      offset += IDLE_CLIENTS_PER_LOADER * 2;
    }
    await Promise.all(loaders.map((l) => l.event("connected", CONNECT_MS)));
    const warmRss = await settledRss(server.proc.pid);
    result = {
      target: target.label,
      run,
      warm: { connections: IDLE_WARM, rssMiB: round(warmRss / 2 ** 20, 1) },
      points: [],
      loadavg: "",
    };
    for (const point of points.sort((a, b) => a.connections - b.connections)) {
      if (!point.feasible) {
        result.points.push({ connections: point.connections }); // measured on nodes, below
        continue;
      }
      const targetShares = shares(point.connections, count);
      await Promise.all(loaders.map((l, i) => l.command("connect", { clients: targetShares[i] })));
      const events = await Promise.all(loaders.map((l) => l.event("connected", CONNECT_MS)));
      const held = events.reduce((n, e) => n + e.clients, 0);
      const rss = await settledRss(server.proc.pid);
      result.points.push({
        connections: point.connections,
        held,
        rssMiB: round(rss / 2 ** 20, 1),
        bytesPerConnection: Math.round((rss - warmRss) / Math.max(1, held - IDLE_WARM)),
      });
    }
    result.loadavg = loadavg();
  } finally {
    await Promise.all(loaders.map((l) => l.command("stop")));
    await Promise.all(loaders.map((l) => l.proc.stop()));
    await stopServer(server);
  }
  for (const [i, point] of result.points.entries()) {
    if (point.held === undefined) {
      // One load generator per node, so a node takes no more clients than one of them holds.
      result.points[i] = await measureIdleOnNodes(
        target,
        point.connections,
        Math.min(maxHeld, IDLE_CLIENTS_PER_LOADER),
        options,
      );
    }
  }
  return result;
}

/**
 * An idle point one process cannot hold (the descriptor limit): the fewest server processes that
 * can, each with its own load generator. Parley runs them as one cluster on a fresh Redis
 * (`--redis`), and one message published on the first node must reach every client; the bare
 * baseline runs independent processes. Per connection = the growth of all the nodes' RSS together,
 * divided by the connections added, as on one server.
 */
async function measureIdleOnNodes(
  target: Target,
  connections: number,
  perNode: number,
  options: Options,
): Promise<IdleResult["points"][number]> {
  const count = Math.ceil(connections / perNode);
  const redis = target.server === "parley" ? await RedisServer.start() : undefined;
  const servers: Server[] = [];
  const loaders: LoaderProc[] = [];
  try {
    for (let i = 0; i < count; i++) {
      servers.push(
        await startServer(target, {
          parleyFlags: options.parleyFlags,
          extraFlags: redis === undefined ? [] : [
            `--redis=${redis.url}`,
            `--api-key=${BENCH_API_KEY}`,
            // The presence cut-off counts a node's own members: split it, so the room goes
            // quiet at about the same total size as on one process (unless --parley-flag set it).
            ...(options.parleyFlags.some((f) => f.startsWith("--presence-events-max"))
              ? []
              : [`--presence-events-max=${Math.ceil(PRESENCE_EVENTS_MAX / count)}`]),
          ],
        }),
      );
    }
    const warmShares = shares(IDLE_WARM, count);
    const targetShares = shares(connections, count);
    for (const [id, server] of servers.entries()) {
      loaders.push(
        // Client names stay unique across the cluster.
        new LoaderProc(
          idleLoaderSpec(id, target, server.port, warmShares[id]!, id * connections),
          options.loaderProf,
        ),
      );
    }
    await Promise.all(loaders.map((l) => l.event("connected", CONNECT_MS)));
    const warmRss = await Promise.all(servers.map((s) => settledRss(s.proc.pid)));
    await Promise.all(loaders.map((l, i) => l.command("connect", { clients: targetShares[i] })));
    const events = await Promise.all(loaders.map((l) => l.event("connected", CONNECT_MS)));
    const held = events.reduce((n, e) => n + e.clients, 0);
    const rss = await Promise.all(servers.map((s) => settledRss(s.proc.pid)));
    const grown = rss.reduce((a, b) => a + b, 0) - warmRss.reduce((a, b) => a + b, 0);
    const point: IdleResult["points"][number] = {
      connections,
      held,
      rssMiB: round(rss.reduce((a, b) => a + b, 0) / 2 ** 20, 1),
      bytesPerConnection: Math.round(grown / Math.max(1, held - IDLE_WARM)),
      nodes: count,
    };
    if (redis !== undefined) {
      const { reached, reachedMs } = await publishAndCount(servers[0]!, loaders, held);
      point.reached = reached;
      point.reachedMs = reachedMs;
    }
    return point;
  } finally {
    await Promise.all(loaders.map((l) => l.command("stop")));
    await Promise.all(loaders.map((l) => l.proc.stop()));
    await Promise.all(servers.map(stopServer));
    await redis?.stop();
  }
}

/**
 * Publishes one message through `server`'s HTTP API and waits, up to {@link PUBLISH_WAIT_MS}, until
 * `expected` clients over all the loaders have received it; returns how many did and how long the
 * last one took.
 */
async function publishAndCount(
  server: Server,
  loaders: LoaderProc[],
  expected: number,
): Promise<{ reached: number; reachedMs: number }> {
  await Promise.all(loaders.map((l) => l.command("mark")));
  const started = performance.now();
  const response = await fetch(`http://127.0.0.1:${server.port}/api/rooms/lobby/messages`, {
    method: "POST",
    headers: { authorization: `Bearer ${BENCH_API_KEY}`, "content-type": "application/json" },
    body: JSON.stringify({ sender: "bench", content: "one message to every node" }),
  });
  await response.body?.cancel();
  if (!response.ok) throw new Error(`Publishing failed: HTTP ${response.status}`);
  let reached = 0;
  let reachedMs = 0;
  while (performance.now() - started < PUBLISH_WAIT_MS) {
    await sleep(PUBLISH_POLL_MS);
    const counts = await Promise.all(
      loaders.map(async (l) => (await l.ask("peek", "peeked")).delivered),
    );
    const now = counts.reduce((a, b) => a + b, 0);
    if (now > reached) {
      reached = now;
      reachedMs = performance.now() - started;
    }
    if (reached >= expected) break;
  }
  await Promise.all(loaders.map((l) => l.ask("report", "report")));
  return { reached, reachedMs: Math.round(reachedMs) };
}
