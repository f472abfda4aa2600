/**
 * Cluster benchmark: delivered messages per second and delivery latency for 1 node versus 2
 * nodes on one Redis, in a small bounded run.
 *
 * Each configuration starts its own `redis-server` (no persistence) and Parley nodes as
 * processes (`deno run main.ts --redis …`, as deployed), connects CLIENTS `parley.v1` WebSockets
 * spread round-robin over the nodes, and lets SENDERS of them (also spread over the nodes) send
 * SENDS room messages. Every client is in `lobby`, so each send is delivered CLIENTS times. Two
 * load shapes:
 * - `saturated`: each sender keeps WINDOW sends unacknowledged (closed loop): the most the cluster
 *   delivers, with the queueing delay that comes with it;
 * - `paced`: PACED_RATE sends per second in total whatever the answers (open loop), below
 *   saturation: the latency of a busy but not overloaded cluster.
 * Latency is from `send()` in this process to the arrival of each delivery in this process (same
 * clock), so it includes this process's own event-loop delay. Each cell is the median of RUNS.
 *
 * It prints one Markdown table and asserts nothing. Everything it starts is stopped at the end.
 *
 *     deno run --allow-all bench/cluster_bench.ts
 */
import { RedisServer } from "../tests/helpers/redis_server.ts";
import { type ServerProcess, spawnServer } from "../tests/helpers/server.ts";

/** Connected clients, all members of `lobby`. */
const CLIENTS = 200;
/** Measured sends; each is delivered to every client. */
const SENDS = 2_000;
/** Unmeasured sends first, so the nodes' JIT and Redis connections are warm. */
const WARMUP_SENDS = 200;
/** Clients that send, spread over the nodes. */
const SENDERS = 20;
/** Unacknowledged sends each sender keeps in flight in the saturated runs. */
const WINDOW = 5;
/** Total sends per second of the paced runs. */
const PACED_RATE = 250;
/** Runs per cell; the table shows medians. */
const RUNS = 3;
/** Longest time one run may take before it is abandoned, in milliseconds. */
const RUN_TIMEOUT_MS = 120_000;
/** Node counts to compare. */
const NODE_COUNTS = [1, 2] as const;

const NODE_FLAGS = [
  "--rate",
  "1000000",
  "--burst",
  "1000000",
  "--max-connections-per-ip",
  "100000",
  "--outbox-messages",
  "8192",
  "--outbox-bytes",
  "16MiB",
  "--log-level",
  "error",
];

/** One benchmark client: records when each delivery arrived. */
class BenchClient {
  readonly socket: WebSocket;
  readonly opened: Promise<void>;
  onMessage: (event: Record<string, unknown>, at: number) => void = () => {};

  constructor(url: string) {
    this.socket = new WebSocket(url, "parley.v1");
    this.opened = new Promise((resolve, reject) => {
      this.socket.addEventListener("open", () => resolve(), { once: true });
      this.socket.addEventListener("error", () => reject(new Error(`Cannot connect to ${url}`)), {
        once: true,
      });
    });
    this.socket.addEventListener("message", (message) => {
      const at = performance.now();
      const value = JSON.parse(String(message.data));
      for (const event of Array.isArray(value) ? value : [value]) this.onMessage(event, at);
    });
  }

  send(frame: unknown): void {
    this.socket.send(JSON.stringify(frame));
  }

  async close(): Promise<void> {
    if (this.socket.readyState === WebSocket.CLOSED) return;
    const closed = new Promise((resolve) => this.socket.addEventListener("close", resolve));
    this.socket.close();
    await closed;
  }
}

interface Result {
  nodes: number;
  mode: string;
  seconds: number;
  deliveries: number;
  sendsPerSecond: number;
  deliveredPerSecond: number;
  p50: number;
  p99: number;
  max: number;
}

/** Runs `count` sends through the senders and waits for every delivery; returns latencies. */
async function drive(
  clients: BenchClient[],
  senders: BenchClient[],
  count: number,
  tag: string,
  paced: boolean,
): Promise<{ started: number; acked: number; done: number; latencies: number[] }> {
  const sentAt = new Map<string, number>();
  const latencies: number[] = [];
  const expected = count * clients.length;
  const { promise: allDelivered, resolve: delivered } = Promise.withResolvers<number>();
  const { promise: allAcked, resolve: acked } = Promise.withResolvers<number>();
  let acks = 0;
  let next = 0;
  const sendNext = (sender: BenchClient) => {
    if (next >= count) return;
    const content = `${tag}-${next++}`;
    sentAt.set(content, performance.now());
    sender.send({ type: "message", content, ref: content });
  };
  for (const client of clients) {
    client.onMessage = (event, at) => {
      if (event.type === "message") {
        const sent = sentAt.get(String(event.content));
        if (sent === undefined) return;
        latencies.push(at - sent);
        if (latencies.length === expected) delivered(at);
      } else if (event.type === "ack" && String(event.ref).startsWith(`${tag}-`)) {
        if (++acks === count) acked(at);
        if (!paced) sendNext(client);
      } else if (event.type === "error") {
        throw new Error(`Send failed: ${JSON.stringify(event)}`);
      }
    };
  }
  const started = performance.now();
  if (paced) {
    // Catch up to the schedule on every timer tick; timers fire every millisecond or so.
    let turn = 0;
    const pace = setInterval(() => {
      const due = Math.min(count, Math.floor((performance.now() - started) * PACED_RATE / 1000));
      while (next < due) sendNext(senders[turn++ % senders.length]!);
      if (next >= count) clearInterval(pace);
    }, 1);
  } else {
    for (let w = 0; w < WINDOW; w++) for (const sender of senders) sendNext(sender);
  }
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`Run timed out: ${latencies.length}/${expected} delivered`)),
      RUN_TIMEOUT_MS,
    );
  });
  try {
    const [ackedAt, done] = await Promise.race([Promise.all([allAcked, allDelivered]), timeout]);
    return { started, acked: ackedAt, done, latencies };
  } finally {
    clearTimeout(timer);
  }
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.ceil(p * sorted.length) - 1)] ?? NaN;
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] ?? NaN;
}

/** Starts a cluster of `nodeCount` nodes and measures both load shapes on it. */
async function bench(nodeCount: number): Promise<Result[]> {
  const redis = await RedisServer.start();
  const nodes: ServerProcess[] = [];
  const clients: BenchClient[] = [];
  try {
    for (let n = 0; n < nodeCount; n++) {
      nodes.push(await spawnServer(["--redis", redis.url, ...NODE_FLAGS]));
    }
    for (let i = 0; i < CLIENTS; i++) {
      clients.push(new BenchClient(nodes[i % nodeCount]!.ws({ name: `user${i}` })));
    }
    await Promise.all(clients.map((client) => client.opened));
    // Client i is on node i % nodeCount, so the senders are spread over the nodes.
    const senders = clients.slice(0, SENDERS);
    await drive(clients, senders, WARMUP_SENDS, "warmup", false);
    const results: Result[] = [];
    for (const mode of ["saturated", "paced"] as const) {
      const runs: Result[] = [];
      for (let r = 0; r < RUNS; r++) {
        const tag = `${mode}${r}`;
        const { started, acked, done, latencies } = await drive(
          clients,
          senders,
          SENDS,
          tag,
          mode === "paced",
        );
        latencies.sort((a, b) => a - b);
        const seconds = (done - started) / 1000;
        runs.push({
          nodes: nodeCount,
          mode,
          seconds,
          deliveries: latencies.length,
          sendsPerSecond: SENDS / ((acked - started) / 1000),
          deliveredPerSecond: latencies.length / seconds,
          p50: percentile(latencies, 0.5),
          p99: percentile(latencies, 0.99),
          max: latencies.at(-1) ?? NaN,
        });
      }
      results.push({
        nodes: nodeCount,
        mode: mode === "paced" ? `paced ${PACED_RATE}/s` : `saturated (window ${WINDOW})`,
        seconds: median(runs.map((r) => r.seconds)),
        deliveries: median(runs.map((r) => r.deliveries)),
        sendsPerSecond: median(runs.map((r) => r.sendsPerSecond)),
        deliveredPerSecond: median(runs.map((r) => r.deliveredPerSecond)),
        p50: median(runs.map((r) => r.p50)),
        p99: median(runs.map((r) => r.p99)),
        max: median(runs.map((r) => r.max)),
      });
    }
    return results;
  } finally {
    await Promise.all(clients.map((client) => client.close()));
    await Promise.all(nodes.map((node) => node.stop("SIGTERM")));
    await redis.stop();
  }
}

const results: Result[] = [];
for (const count of NODE_COUNTS) results.push(...await bench(count));

const cpus = navigator.hardwareConcurrency;
console.log(
  `\nParley cluster on Redis: ${CLIENTS} parley.v1 clients in one room, ${SENDS} sends per run ` +
    `from ${SENDERS} senders, ${CLIENTS * SENDS} deliveries per run, median of ${RUNS} runs; ` +
    `nodes, redis-server (no persistence) and this client share ${cpus} CPUs.\n`,
);
console.log("| nodes | load | sends/s | delivered msg/s | p50 ms | p99 ms | max ms | wall s |");
console.log("|---:|---|---:|---:|---:|---:|---:|---:|");
for (const r of results) {
  console.log(
    `| ${r.nodes} | ${r.mode} | ${r.sendsPerSecond.toFixed(0)} | ` +
      `${r.deliveredPerSecond.toFixed(0)} | ${r.p50.toFixed(1)} | ${r.p99.toFixed(1)} | ` +
      `${r.max.toFixed(1)} | ${r.seconds.toFixed(2)} |`,
  );
}
