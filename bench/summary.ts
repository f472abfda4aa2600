/**
 * Aggregation of a scenario's raw results: medians (and ranges) over runs per target
 * ({@link summarizeLoad}, {@link summarizeIdle}), and for a paired scenario the ratio of each
 * pair's two servers window by window ({@link pairRatios}). {@link ScenarioReport} is what a
 * scenario leaves for the report and the results JSON.
 */
import type { IdleResult } from "./idle.ts";
import type { LoadResult } from "./measure.ts";
import type { Scenario, Target } from "./scenarios.ts";
import { median, round } from "./stats.ts";

/** One target's load results over a scenario's runs: medians unless named a range. */
export interface LoadSummary {
  target: string;
  runs: number;
  deliveredPerS: number;
  deliveredPerSRange: [number, number];
  /** Events the server wrote per second (its own count; see `LoadResult.serverDelivered`). */
  writtenPerS: number;
  sentPerS: number;
  keepUp: number;
  p50Ms: number;
  p99Ms: number;
  cpuUsPerDelivery: number;
  cpuUsRange: [number, number];
  /** See `LoadResult.cpuUsPerClientDelivery`; absent in results written before it existed. */
  cpuUsPerClientDelivery?: number;
  /** Lowest and highest {@link LoadResult.clientCountRatio} of the runs. */
  clientCountRange: [number, number];
  /** The longest {@link LoadResult.loaderWindowS} over the harness's window, of the runs. */
  loaderWindowRatioMax: number;
  serverCores: number;
  serverCoreBusy: number;
  eventsPerFrame?: number;
  storeShare?: number;
  storeBatchesPerS?: number;
  loaderCores: number;
  loaderCoresMax: number;
  loaderUsPerDelivery: number;
  serverRssMiB: number;
  closes: Record<string, number>;
  resends: number;
  /** Parley only (medians per second over the runs): chat messages stored, `overloaded` answers. */
  storedPerS?: number;
  overloadedPerS?: number;
  /** Parley only, summed over the runs: frames refused by the rate limiter, and 4008 closes. */
  rateLimited?: number;
  slowConsumerCloses?: number;
  /** The load generator's clock: most messages one sender had due at once, over the runs. */
  maxDuePerSender?: number;
}

/** Summarizes load results per target, in the order the targets first appear. */
export function summarizeLoad(results: LoadResult[]): LoadSummary[] {
  const byTarget = new Map<string, LoadResult[]>();
  for (const r of results) byTarget.set(r.target, [...(byTarget.get(r.target) ?? []), r]);
  return [...byTarget.entries()].map(([target, rs]) => {
    const closes: Record<string, number> = {};
    for (const r of rs) {
      for (const [code, n] of Object.entries(r.closes)) closes[code] = (closes[code] ?? 0) + n;
    }
    const delivered = rs.map((r) => r.deliveredPerS);
    const cpu = rs.map((r) => r.cpuUsPerDelivery);
    return {
      target,
      runs: rs.length,
      deliveredPerS: Math.round(median(delivered)),
      deliveredPerSRange: [Math.min(...delivered), Math.max(...delivered)],
      writtenPerS: Math.round(median(rs.map((r) => r.serverDelivered / r.windowS))),
      sentPerS: round(median(rs.map((r) => r.sentPerS)), 1),
      keepUp: round(median(rs.map((r) => r.keepUp)), 4),
      p50Ms: round(median(rs.map((r) => r.latencyMs.p50)), 3),
      p99Ms: round(median(rs.map((r) => r.latencyMs.p99)), 3),
      cpuUsPerDelivery: round(median(cpu), 3),
      cpuUsRange: [Math.min(...cpu), Math.max(...cpu)],
      ...(rs.every((r) => r.cpuUsPerClientDelivery !== undefined)
        ? { cpuUsPerClientDelivery: round(median(rs.map((r) => r.cpuUsPerClientDelivery)), 3) }
        : {}),
      clientCountRange: [
        Math.min(...rs.map((r) => r.clientCountRatio)),
        Math.max(...rs.map((r) => r.clientCountRatio)),
      ],
      // Results written before loaderWindowS existed lack it: their windows counted as equal.
      loaderWindowRatioMax: Math.max(...rs.map((r) => (r.loaderWindowS ?? r.windowS) / r.windowS)),
      serverCores: round(median(rs.map((r) => r.serverCores)), 3),
      serverCoreBusy: round(median(rs.map((r) => r.serverCoreBusy)), 3),
      loaderCores: round(median(rs.map((r) => r.loaderCores)), 3),
      ...(rs.every((r) => r.eventsPerFrame !== undefined)
        ? { eventsPerFrame: round(median(rs.map((r) => r.eventsPerFrame!)), 2) }
        : {}),
      ...(rs.every((r) => r.storeShare !== undefined)
        ? {
          storeShare: round(median(rs.map((r) => r.storeShare!)), 4),
          storeBatchesPerS: round(median(rs.map((r) => r.storeBatchesPerS ?? NaN)), 1),
        }
        : {}),
      loaderCoresMax: Math.max(...rs.map((r) => r.loaderCores)),
      loaderUsPerDelivery: round(median(rs.map((r) => r.loaderUsPerDelivery)), 3),
      serverRssMiB: round(median(rs.map((r) => r.serverRssMiB)), 1),
      closes,
      resends: rs.reduce((n, r) => n + r.resends, 0),
      ...(rs.every((r) => r.maxDuePerSender !== undefined)
        ? { maxDuePerSender: Math.max(...rs.map((r) => r.maxDuePerSender)) }
        : {}),
      ...(rs.every((r) => r.overloaded !== undefined)
        ? {
          storedPerS: Math.round(median(rs.map((r) => (r.stored ?? NaN) / r.windowS))),
          overloadedPerS: Math.round(median(rs.map((r) => r.overloaded! / r.windowS))),
          rateLimited: rs.reduce((n, r) => n + (r.rateLimited ?? 0), 0),
          slowConsumerCloses: rs.reduce((n, r) => n + (r.slowConsumerCloses ?? 0), 0),
        }
        : {}),
    };
  });
}

/** One target's idle points over a scenario's runs. */
export interface IdleSummary {
  target: string;
  runs: number;
  points: {
    connections: number;
    held?: number;
    bytesPerConnection?: number;
    skipped?: string;
    nodes?: number;
    reached?: number;
    reachedMs?: number;
  }[];
}

/**
 * Summarizes idle results per target: per point, the median bytes per connection and the fewest
 * connections held or clients reached over the runs (the slowest reach).
 */
export function summarizeIdle(results: IdleResult[]): IdleSummary[] {
  const byTarget = new Map<string, IdleResult[]>();
  for (const r of results) byTarget.set(r.target, [...(byTarget.get(r.target) ?? []), r]);
  return [...byTarget.entries()].map(([target, rs]) => ({
    target,
    runs: rs.length,
    points: rs[0]!.points.map((p, i) => {
      if (p.skipped !== undefined) return { connections: p.connections, skipped: p.skipped };
      const reached = rs.map((r) => r.points[i]?.reached).filter((n): n is number =>
        n !== undefined
      );
      return {
        connections: p.connections,
        ...(p.nodes === undefined ? {} : { nodes: p.nodes }),
        ...(reached.length === 0 ? {} : {
          reached: Math.min(...reached),
          reachedMs: Math.max(...rs.map((r) => r.points[i]?.reachedMs ?? 0)),
        }),
        held: Math.min(...rs.map((r) => r.points[i]?.held ?? 0)),
        bytesPerConnection: Math.round(
          median(rs.map((r) => r.points[i]?.bytesPerConnection ?? NaN)),
        ),
      };
    }),
  }));
}

/** One scenario's summaries and raw results, as the report and the results JSON hold them. */
export interface ScenarioReport {
  name: string;
  title: string;
  kind: Scenario["kind"];
  /** Harness flags this scenario left out, so the server ran with its defaults for them. */
  serverDefaults?: string[];
  /** How a load scenario's senders send (see `LoadScenario.mode`). */
  mode?: "rate" | "paced" | "flood" | "closed";
  /** The scenario's note, if any (see `LoadScenario.note`). */
  note?: string;
  load?: LoadSummary[];
  idle?: IdleSummary[];
  profiles?: { target: string; result: LoadResult }[];
  /** For a paired scenario: the second target of each pair against the first, pair by pair. */
  pairs?: PairRatios[];
  raw: (LoadResult | IdleResult)[];
}

/** One paired comparison of a load scenario with `pairs` set. */
export interface PairRatios {
  /** The target measured against `base`. */
  target: string;
  base: string;
  /** Per pair: the target's events written per second over the base's, both server-counted. */
  ratios: number[];
  median: number;
}

/** Each pair's second target over its first, per run, by the servers' own counts. */
export function pairRatios(targets: readonly Target[], raw: LoadResult[]): PairRatios[] {
  const out: PairRatios[] = [];
  for (let i = 0; i + 1 < targets.length; i += 2) {
    const base = targets[i]!.label;
    const target = targets[i + 1]!.label;
    const rate = (label: string, run: number) => {
      const r = raw.find((x) => x.target === label && x.run === run);
      return r === undefined ? undefined : r.serverDelivered / r.windowS;
    };
    const ratios: number[] = [];
    for (const run of new Set(raw.map((r) => r.run))) {
      const a = rate(base, run);
      const b = rate(target, run);
      if (a !== undefined && b !== undefined && a > 0) ratios.push(round(b / a, 4));
    }
    out.push({ target, base, ratios, median: round(median(ratios), 4) });
  }
  return out;
}
