/**
 * What a run says: the verdict on each standing target ({@link verdicts}), the conditions under
 * which a number does not mean what it claims ({@link warnings}), and the markdown section
 * written between the markers of docs/BENCHMARKS.md ({@link markdown}). Pure functions of the
 * run's {@link Machine} and its scenario reports: nothing here measures.
 */
import { SLICE } from "./measure.ts";
import { FD_HARD_LIMIT, FD_MARGIN, LOADER_CORE, type Machine, SERVER_CORE } from "./proc.ts";
import {
  BASELINE,
  PARLEY_PLAIN,
  PARLEY_V1,
  SQLITE_PAIRS,
  SQLITE_PAIRS_QUICK,
  type Target,
} from "./scenarios.ts";
import type { LoadSummary, ScenarioReport } from "./summary.ts";

/** Where one standing target stands after a run. */
export interface Verdict {
  target: string;
  measured: string;
  status:
    | "met"
    | "missed"
    | "not measured"
    | "met by a cluster, not by one process"
    | "inconclusive: other work shared the server's core";
}

/** Judges each standing target by the run's reports ("not measured": its scenario did not run). */
export function verdicts(reports: ScenarioReport[]): Verdict[] {
  const find = (name: string) => reports.find((r) => r.name === name);
  const row = (name: string, target: Target) =>
    find(name)?.load?.find((s) => s.target === target.label);
  const out: Verdict[] = [];
  const status = (ok: boolean | undefined): Verdict["status"] =>
    ok === undefined ? "not measured" : ok ? "met" : "missed";
  // Throughput and latency verdicts need the server to have had its core to itself.
  const starved = (...rows: (LoadSummary | undefined)[]) =>
    rows.some((r) => r !== undefined && r.serverCoreBusy - r.serverCores > 0.1);
  /** For a comparison that other work could skew either way. */
  const fair = (ok: boolean | undefined, ...rows: (LoadSummary | undefined)[]): Verdict["status"] =>
    ok !== undefined && starved(...rows)
      ? "inconclusive: other work shared the server's core"
      : status(ok);
  /** For a bound that other work can only make harder to meet (latency, keeping up). */
  const fairMiss = (
    ok: boolean | undefined,
    ...rows: (LoadSummary | undefined)[]
  ): Verdict["status"] => ok === false && starved(...rows) ? fair(ok, ...rows) : status(ok);

  const satV1 = row("saturation", PARLEY_V1);
  const satPlain = row("saturation", PARLEY_PLAIN);
  const satBase = row("saturation", BASELINE);
  const ratio = satV1 && satBase ? satBase.cpuUsPerDelivery / satV1.cpuUsPerDelivery : undefined;
  out.push({
    target: "Saturation, parley.v1: ≤ 1.0 µs server CPU per delivery",
    measured: satV1 ? `${fmt(satV1.cpuUsPerDelivery)} µs` : "—",
    status: status(satV1 && satV1.cpuUsPerDelivery <= 1.0),
  });
  out.push({
    target: "Saturation, parley.v1: ≥ 9× better than the bare baseline",
    measured: ratio === undefined
      ? "—"
      : `${fmt(ratio)}× (baseline ${fmt(satBase!.cpuUsPerDelivery)} µs)`,
    status: status(ratio === undefined ? undefined : ratio >= 9),
  });
  out.push({
    target: "Saturation, parley.v1: p99 latency ≤ 50 ms",
    measured: satV1 ? `${fmt(satV1.p99Ms)} ms` : "—",
    status: fairMiss(satV1 && satV1.p99Ms <= 50, satV1),
  });
  const plainRatio = satPlain && satBase
    ? satPlain.cpuUsPerDelivery / satBase.cpuUsPerDelivery
    : undefined;
  out.push({
    target: "Saturation, plain clients: ≤ 1.1× baseline CPU per delivery",
    measured: plainRatio === undefined
      ? "—"
      : `${fmt(plainRatio)}× (${fmt(satPlain!.cpuUsPerDelivery)} µs)`,
    status: status(plainRatio === undefined ? undefined : plainRatio <= 1.1),
  });
  for (const target of [PARLEY_V1, PARLEY_PLAIN]) {
    const r = row("100k", target);
    out.push({
      target: `100k deliveries/s keeps up (${target.label}): delivered ≥ 98% of sent × clients`,
      measured: r
        ? `${fmt(r.keepUp * 100)}% at ${fmt(r.deliveredPerS)}/s${
          r.deliveredPerS < 95_000 ? " (a smaller load than 100,000/s: quick run)" : ""
        }`
        : "—",
      status: fairMiss(r && r.keepUp >= 0.98, r),
    });
  }
  const idle = find("idle")?.idle;
  const idleBase = idle?.find((s) => s.target === BASELINE.label);
  for (const target of [PARLEY_V1, PARLEY_PLAIN]) {
    const mine = idle?.find((s) => s.target === target.label);
    // One process against one process: a cluster node also carries its Redis clients.
    const measured = mine?.points.filter((p) =>
      p.bytesPerConnection !== undefined && p.nodes === undefined
    ) ?? [];
    const largest = measured.at(-1);
    const base = idleBase?.points.find((p) => p.connections === largest?.connections);
    const r = largest && base?.bytesPerConnection
      ? largest.bytesPerConnection! / base.bytesPerConnection
      : undefined;
    out.push({
      target: `Idle memory per connection ≤ 1.1× baseline (${target.label})`,
      measured: r === undefined
        ? "—"
        : `${fmt(r)}× at ${fmt(largest!.connections)} (${fmt(largest!.bytesPerConnection!)} B vs ${
          fmt(base!.bytesPerConnection!)
        } B)`,
      status: status(r === undefined ? undefined : r <= 1.1),
    });
  }
  for (const target of [PARLEY_V1, PARLEY_PLAIN]) {
    const fifty = idle?.find((s) => s.target === target.label)?.points
      .find((p) => p.connections === 50_000);
    const held = fifty?.held ?? 0;
    const nodes = fifty?.nodes;
    out.push({
      target: `50,000 idle connections held (${target.label})`,
      measured: fifty === undefined
        ? "—"
        : fifty.skipped ?? (nodes === undefined
          ? `${fmt(held)} held by one process`
          : `${fmt(held)} held by ${nodes} processes on one Redis, and one message published on ` +
            `the first reached ${fmt(fifty.reached ?? 0)} (the slowest run: ` +
            `${fmt((fifty.reachedMs ?? 0) / 1000)} s); one process may hold ` +
            `${fmt(FD_HARD_LIMIT - FD_MARGIN)} here (hard RLIMIT_NOFILE ${fmt(FD_HARD_LIMIT)}, ` +
            `and raising it needs CAP_SYS_RESOURCE)`),
      status: fifty === undefined || fifty.skipped !== undefined
        ? "not measured"
        : nodes === undefined
        ? status(held >= 50_000)
        : held >= 50_000 && (fifty.reached ?? 0) >= 50_000
        ? "met by a cluster, not by one process"
        : "missed",
    });
  }
  const sqlite = find("sqlite");
  for (const target of [PARLEY_V1, PARLEY_PLAIN]) {
    const mem = sqlite?.load?.find((s) => s.target === target.label);
    const lite = sqlite?.load?.find((s) => s.target === `${target.label}, SQLite`);
    // Throughput by the servers' own count, like CPU per delivery (the clients' may lag), and
    // compared within each interleaved pair of windows: the median of those ratios.
    const pair = sqlite?.pairs?.find((p) => p.base === target.label);
    const r = pair === undefined || pair.ratios.length === 0 ? undefined : pair.median;
    out.push({
      target: `SQLite costs ≤ 10% throughput vs memory: (${target.label})`,
      measured: r === undefined
        ? "—"
        : `${fmt(r * 100)}% of memory's throughput (median of ${pair!.ratios.length} pairs, ${
          fmt(100 * Math.min(...pair!.ratios))
        }–${fmt(100 * Math.max(...pair!.ratios))}%)`,
      status: fair(r === undefined ? undefined : r >= 0.9, mem, lite),
    });
  }
  return out;
}

/** Conditions under which a number in the tables does not mean what it claims. */
export function warnings(m: Machine, reports: ScenarioReport[]): string[] {
  const out: string[] = [];
  const busiest = Math.max(...`${m.loadavgStart} ${m.loadavgEnd}`.split(" ").map(Number));
  if (busiest > m.nproc) {
    out.push(
      `Load average reached ${busiest} on ${m.nproc} cores: other work shared the cores, so ` +
        `throughput and latency are low and CPU per delivery somewhat high.`,
    );
  }
  for (const report of reports) {
    const closed = report.name === "saturation" || report.name === "sqlite";
    for (const s of report.load ?? []) {
      if (closed && s.serverCores < 0.9) {
        const shared = s.serverCoreBusy - s.serverCores;
        out.push(
          `${report.name}, ${s.target}: the server used only ${fmt(s.serverCores)} of its core ` +
            `(core ${SERVER_CORE} was ${fmt(100 * s.serverCoreBusy)}% busy in all), so ${
              shared > 0.1
                ? `other work took ${fmt(100 * shared)}% of it`
                : "the server idled: its round trips were too slow for 20 senders to keep it busy"
            }; its delivered/s is not its capacity. CPU per delivery still holds.`,
        );
      }
      if (s.loaderCoresMax > 0.85) {
        out.push(
          `${report.name}, ${s.target}: the load generator used up to ${
            fmt(s.loaderCoresMax)
          } of its core and may have limited the run.`,
        );
      }
      const [low, high] = s.clientCountRange;
      if (low < 0.95 || high > 1.05) {
        out.push(
          `${report.name}, ${s.target}: the clients counted ${fmt(low)}–${fmt(high)}× the ` +
            `events per second the server wrote: the load generator was behind, reading what the ` +
            `kernel held for it. CPU per delivery uses the server's count.`,
        );
      }
      if (s.loaderWindowRatioMax > 1.05) {
        out.push(
          `${report.name}, ${s.target}: a load generator's window was up to ${
            fmt(s.loaderWindowRatioMax)
          }× the harness's: it answered its commands late, so its counts cover a longer, later ` +
            `span. Its rates divide by its own window; the server's counts are unaffected.`,
        );
      }
      if (s.deliveredPerS > 50_000 && s.loaderUsPerDelivery > 0.8 * s.cpuUsPerDelivery) {
        out.push(
          `${report.name}, ${s.target}: the load generator spent ${
            fmt(s.loaderUsPerDelivery)
          } µs per delivery, close to the server's ${fmt(s.cpuUsPerDelivery)} µs.`,
        );
      }
    }
  }
  return out;
}

/** Formats a number for a table: grouped from 1,000, fewer decimals the larger, — if not finite. */
export function fmt(n: number): string {
  if (!Number.isFinite(n)) return "—";
  if (Math.abs(n) >= 1000) return Math.round(n).toLocaleString("en-US");
  if (Math.abs(n) >= 100) return n.toFixed(0);
  if (Math.abs(n) >= 10) return n.toFixed(1);
  return n.toFixed(2);
}

/** Renders the results section of docs/BENCHMARKS.md for the run. */
export function markdown(m: Machine, reports: ScenarioReport[]): string {
  const lines: string[] = [];
  const push = (...l: string[]) => lines.push(...l);
  push(
    `Run of ${m.date.slice(0, 10)} (${m.mode}${
      m.mode === "quick" ? ": indicative only, fewer clients, one short run" : ""
    }).`,
    "",
    `- Command: \`${m.command}\``,
    `- Machine: ${m.nproc} cores, ${m.cpu}, ${m.memoryGiB} GiB; Deno ${m.deno} (V8 ${m.v8}); ` +
      `commit ${m.commit}`,
    `- Method: ${m.runs} run(s) per server, medians shown; ${m.warmupS} s warm-up, ${m.windowS} s ` +
      `window; servers pinned to core ${SERVER_CORE}, load generator (${m.loaders} process(es)) ` +
      `to core ${LOADER_CORE}${m.taskset ? "" : " — taskset missing, nothing pinned"}.${
        reports.some((r) => r.pairs !== undefined)
          ? ` The SQLite comparison instead interleaves ${
            m.mode === "quick" ? SQLITE_PAIRS_QUICK : SQLITE_PAIRS
          } pairs of ${SLICE.windowMs / 1000} s windows of both servers, running side by side ` +
            `(one loaded at a time), and shows medians over windows.`
          : ""
      }`,
    `- Load average at start / end: ${m.loadavgStart} / ${m.loadavgEnd}. Other work on the ` +
      `machine shows up as spread between runs (ranges in the JSON) and in these numbers.`,
    "",
    ...warnings(m, reports).map((w) => `- ⚠ ${w}`),
    "",
    "### Targets",
    "",
    "| target | measured | status |",
    "|---|---|---|",
    ...verdicts(reports).map((v) => `| ${v.target} | ${v.measured} | ${v.status} |`),
    "",
  );
  for (const report of reports) {
    push(`### ${report.title}`, "");
    if (report.load !== undefined) {
      const base = report.load.find((s) => s.target === BASELINE.label) ?? report.load[0]!;
      push(
        "| server, clients | delivered/s | written/s (server) | sent/s | " +
          "delivered ÷ (sent × clients) | p50 ms | p99 ms " +
          "| server CPU µs/delivery | vs first row | server cores | events/frame | loader cores " +
          "| loader µs/delivery | closes |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
      );
      for (const s of report.load) {
        const closes = Object.entries(s.closes).map(([c, n]) => `${n}×${c}`).join(", ") || "0";
        push(
          `| ${s.target} | ${fmt(s.deliveredPerS)} | ${fmt(s.writtenPerS)} | ${
            fmt(s.sentPerS)
          } | ` +
            `${fmt(s.keepUp)} | ` +
            `${fmt(s.p50Ms)} | ${fmt(s.p99Ms)} | ${fmt(s.cpuUsPerDelivery)} | ` +
            `${fmt(s.cpuUsPerDelivery / base.cpuUsPerDelivery)}× | ${fmt(s.serverCores)} | ` +
            `${s.eventsPerFrame === undefined ? "1" : fmt(s.eventsPerFrame)} | ` +
            `${fmt(s.loaderCores)} | ${fmt(s.loaderUsPerDelivery)} | ${closes} |`,
        );
      }
      push("");
      for (const p of report.pairs ?? []) {
        const lite = report.load.find((s) => s.target === p.target);
        const share = lite?.storeShare;
        push(
          `${p.target} ÷ ${p.base}, events written per second (server-counted), window by window in ` +
            `interleaved pairs: ${p.ratios.map((r) => `${fmt(100 * r)}%`).join(", ")}; median ` +
            `**${fmt(100 * p.median)}%**.${
              share === undefined
                ? ""
                : ` SQLite's write batches (statements and \`COMMIT\` with its fsync) held the ` +
                  `event loop ${fmt(100 * share)}% of the time, in ${
                    fmt(lite!.storeBatchesPerS ?? NaN)
                  } commits/s (medians over windows, \`parley_store_write_*\`).`
            }`,
          "",
        );
      }
    }
    if (report.idle !== undefined) {
      const base = report.idle.find((s) => s.target === BASELINE.label);
      push(
        "| server, clients | connections | held | processes | server RSS per connection | " +
          "vs baseline | one published message reached |",
        "|---|---:|---:|---:|---:|---:|---:|",
      );
      for (const s of report.idle) {
        for (const p of s.points) {
          const b = base?.points.find((q) => q.connections === p.connections)?.bytesPerConnection;
          const processes = p.nodes === undefined
            ? "1"
            : `${p.nodes}${s.target === BASELINE.label ? "" : " (Redis cluster)"}`;
          push(
            p.skipped !== undefined
              ? `| ${s.target} | ${
                fmt(p.connections)
              } | — | — | not measured: ${p.skipped} | — | — |`
              : `| ${s.target} | ${fmt(p.connections)} | ${fmt(p.held ?? 0)} | ${processes} | ${
                fmt((p.bytesPerConnection ?? 0) / 1024)
              } KiB | ${b ? `${fmt(p.bytesPerConnection! / b)}×` : "—"} | ${
                p.reached === undefined
                  ? "—"
                  : `${fmt(p.reached)} within ${fmt((p.reachedMs ?? 0) / 1000)} s`
              } |`,
          );
        }
      }
      push("");
    }
    if (report.profiles !== undefined) {
      for (const { target, result } of report.profiles) {
        const p = result.profile!;
        const busy = p.windowMs - p.idleMs;
        const cpuMs = result.serverCores * result.windowS * 1000;
        push(
          `**${target}**: ${fmt(result.deliveredPerS)} deliveries/s under the profiler, ` +
            `${fmt(result.cpuUsPerDelivery)} µs CPU each. In the ${fmt(p.windowMs)} ms window ` +
            `the process used ${fmt(cpuMs)} ms of CPU (/proc); V8 sampled ${fmt(busy)} ms on the ` +
            `JS thread (JS, ops called from JS, GC ${fmt(p.gcMs)} ms). The other ${
              fmt(Math.max(0, cpuMs - busy))
            } ms (${
              fmt(100 * Math.max(0, cpuMs - busy) / Math.max(1, cpuMs))
            }%) ran outside JS: async op completions in the event loop (socket I/O, WebSocket ` +
            `framing), other threads and the kernel; V8 counts them as idle.${
              p.wholeProfile ? " (No samples fell in the window: whole profile shown.)" : ""
            } Self time as a share of the sampled JS time:`,
          "",
          "| self time | function | where |",
          "|---:|---|---|",
          ...p.functions.map((f) => `| ${fmt(f.percent)}% | \`${f.name}\` | ${f.where || "—"} |`),
          "",
          "By file: " + p.files.map((f) => `${f.file} ${fmt(f.percent)}%`).join(", ") + ".",
          "",
        );
      }
    }
  }
  return lines.join("\n");
}
