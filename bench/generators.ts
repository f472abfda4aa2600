/**
 * Compares the two load generators on the same server code: `bench/loader.ts` (Deno, raw sockets
 * on epoll) and `bench/go/main.go` (Go, gorilla/websocket), in alternating measurements of one
 * scenario on fresh servers, so a drift in the machine's load falls on both alike. Prints each
 * measurement and the median per-pair ratio of server CPU per delivery (Go over Deno).
 *
 *     deno run --allow-all bench/generators.ts [--scenario saturation] [--clients plain|parley.v1]
 *                                              [--pairs 4]
 *
 * Separate from `deno task bench` (like `cluster_bench.ts`): it answers one question, whether a
 * load generator changes what the server's CPU per delivery reads, and writes nothing.
 */
import { parseArgs } from "node:util";
import { measureLoad } from "./measure.ts";
import { fmt } from "./report.ts";
import { type Options, PARLEY_PLAIN, PARLEY_V1, scenarios } from "./scenarios.ts";
import { median } from "./stats.ts";

/** Warm-up and window of each measurement, in milliseconds: shorter than a full run's, as more
 * pairs narrow the median better than longer windows do here. */
const WARMUP_MS = 1_500;
const WINDOW_MS = 4_000;

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      scenario: { type: "string", default: "saturation" },
      clients: { type: "string", default: "parley.v1" },
      pairs: { type: "string", default: "4" },
    },
    strict: true,
  });
  const scenario = scenarios(false).find((s) => s.name === values.scenario);
  if (scenario === undefined || scenario.kind !== "load") {
    throw new Error(`Unknown load scenario "${values.scenario}"`);
  }
  const target = values.clients === "plain" ? PARLEY_PLAIN : PARLEY_V1;
  const pairs = Number(values.pairs);
  const ratios: number[] = [];
  for (let pair = 1; pair <= pairs; pair++) {
    const us: Record<string, number> = {};
    // Which goes first alternates, so a steady drift costs both the same over two pairs.
    for (const generator of pair % 2 === 1 ? ["deno", "go"] as const : ["go", "deno"] as const) {
      const options: Options = {
        quick: false,
        runs: 1,
        only: new Set(),
        loaders: 1,
        write: false,
        render: false,
        parleyFlags: [],
        loaderProf: undefined,
        generator,
        bun: false,
        warmupMs: WARMUP_MS,
        windowMs: WINDOW_MS,
      };
      const r = await measureLoad(scenario, target, pair, options);
      us[generator] = r.cpuUsPerClientDelivery;
      console.log(
        `pair ${pair} ${generator}: ${fmt(r.deliveredPerS)} delivered/s, ${
          fmt(r.cpuUsPerClientDelivery)
        } µs server CPU/delivery, server ${fmt(r.serverCores)} cores (core busy ${
          fmt(r.serverCoreBusy)
        }), ${fmt(r.eventsPerFrame ?? 1)} events/frame, p99 ${fmt(r.latencyMs.p99)} ms, loader ${
          fmt(r.loaderCores)
        } cores (${fmt(r.loaderUsPerDelivery)} µs/delivery), load ${r.loadavg}`,
      );
    }
    ratios.push(us.go! / us.deno!);
  }
  console.log(
    `${target.label}, ${scenario.name}: server CPU per delivery under the Go generator over the ` +
      `Deno one, median of ${pairs} pairs: ${fmt(median(ratios))}× (${ratios.map(fmt).join(", ")})`,
  );
}
