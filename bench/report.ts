/**
 * What a run says: the verdict on each standing target ({@link verdicts}), the conditions under
 * which a number does not mean what it claims ({@link warnings}), and the markdown section
 * written between the markers of docs/BENCHMARKS.md ({@link markdown}). Pure functions of the
 * run's {@link Machine} and its scenario reports: nothing here measures.
 */
import { FD_HARD_LIMIT, FD_MARGIN, type Machine } from "./proc.ts";
import { BASELINE, BUN, PARLEY_PLAIN, PARLEY_V1, type Target } from "./scenarios.ts";
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
    | "inconclusive: other work shared the server's core"
    | "inconclusive: the baseline fell behind";
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
  // Keeping up is not enough: a client that waits seconds for what it is sent has not been
  // served. The bare loop of the same run is the bound; once it falls behind (it has no bounds,
  // so its queue and latency grow for the whole window) there is nothing to compare with.
  const base100k = row("100k", BASELINE);
  for (const target of [PARLEY_V1, PARLEY_PLAIN]) {
    const r = row("100k", target);
    const ratio = r && base100k ? r.p99Ms / base100k.p99Ms : undefined;
    out.push({
      target: `100k deliveries/s, ${target.label}: p99 ≤ 1.5× the bare baseline's`,
      measured: ratio === undefined
        ? "—"
        : `${fmt(ratio)}× (${fmt(r!.p99Ms)} ms vs ${fmt(base100k!.p99Ms)} ms)`,
      status: ratio !== undefined && base100k!.keepUp < 0.98
        ? "inconclusive: the baseline fell behind"
        : fairMiss(ratio === undefined ? undefined : ratio <= 1.5, r, base100k),
    });
  }
  // Against Bun's pub/sub, when the run had it as a peer (`--bun`): within 1.25× on both.
  const satBun = row("saturation", BUN);
  if (satBun !== undefined && satV1 !== undefined) {
    const r = satV1.cpuUsPerDelivery / satBun.cpuUsPerDelivery;
    out.push({
      target: "Saturation, parley.v1: CPU per delivery ≤ 1.25× Bun pub/sub's",
      measured: `${fmt(r)}× (${fmt(satV1.cpuUsPerDelivery)} µs vs ${
        fmt(satBun.cpuUsPerDelivery)
      } µs)`,
      status: fair(r <= 1.25, satV1, satBun),
    });
  }
  const bun100k = row("100k", BUN);
  const v1100k = row("100k", PARLEY_V1);
  if (bun100k !== undefined && v1100k !== undefined) {
    const r = v1100k.p99Ms / bun100k.p99Ms;
    out.push({
      target: "100k deliveries/s, parley.v1: p99 ≤ 1.25× Bun pub/sub's",
      measured: `${fmt(r)}× (${fmt(v1100k.p99Ms)} ms vs ${fmt(bun100k.p99Ms)} ms)`,
      status: fairMiss(r <= 1.25, v1100k, bun100k),
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
          : `${fmt(held)} held by ${nodes} processes on one Redis; one message reached ` +
            `${fmt(fifty.reached ?? 0)} within ${fmt((fifty.reachedMs ?? 0) / 1000)} s (one ` +
            `process may hold ${fmt(FD_HARD_LIMIT - FD_MARGIN)} here)`),
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
        : `${fmt(r * 100)}% (median of ${pair!.ratios.length} pairs, ${
          fmt(100 * Math.min(...pair!.ratios))
        }–${fmt(100 * Math.max(...pair!.ratios))}%)${
          lite?.storeShare === undefined
            ? ""
            : `; SQLite held the loop ${fmt(100 * lite.storeShare)}% of the time`
        }`,
      status: fair(r === undefined ? undefined : r >= 0.9, mem, lite),
    });
  }
  for (const name of ["overload", "flood"]) {
    const r = find(name)?.load?.[0];
    out.push({
      target: `${name[0]!.toUpperCase()}${name.slice(1)}: no reader cut with 4008, senders told ` +
        "`overloaded`",
      measured: r?.slowConsumerCloses === undefined
        ? "—"
        : `${fmtCount(r.slowConsumerCloses)} cut; ${fmt(r.overloadedPerS ?? 0)} \`overloaded\`/s`,
      status: status(
        r?.slowConsumerCloses === undefined
          ? undefined
          : r.slowConsumerCloses === 0 && (r.overloadedPerS ?? 0) > 0,
      ),
    });
  }
  return out;
}

/**
 * Conditions under which a number in the tables does not mean what it claims, one line per
 * machine condition or per scenario and server (its conditions joined), short enough for the doc.
 */
export function warnings(m: Machine, reports: ScenarioReport[]): string[] {
  const out: string[] = [];
  const busiest = Math.max(...`${m.loadavgStart} ${m.loadavgEnd}`.split(" ").map(Number));
  if (busiest > m.nproc) {
    out.push(
      `load average up to ${busiest} on ${m.nproc} cores: other work shared them`,
    );
  }
  // The Go generator costs about what the server does per delivery by design (a wake-up per
  // socket per frame): said once, not on every row.
  const go = m.generator === "go";
  if (go) {
    out.push("the Go load generator's own CPU per delivery is near the server's (JSON: loader*)");
  }
  for (const report of reports) {
    const closed = report.name === "saturation" || report.name === "sqlite";
    for (const s of report.load ?? []) {
      const notes: string[] = [];
      if (closed && s.serverCores < 0.9) {
        const shared = s.serverCoreBusy - s.serverCores;
        notes.push(
          `the server used only ${fmt(s.serverCores)} of its core (${
            shared > 0.1 ? `other work took ${fmt(100 * shared)}%` : "its round trips were too slow"
          }), so delivered/s is not its capacity`,
        );
      }
      if (s.loaderCoresMax > 0.85 && !go) {
        notes.push(`loader used up to ${fmt(s.loaderCoresMax)} of its core`);
      }
      const [low, high] = s.clientCountRange;
      if (low < 0.95 || high > 1.05) {
        notes.push(
          `clients counted ${low === high ? fmt(low) : `${fmt(low)}–${fmt(high)}`}× the ` +
            `server's events (loader lagging)`,
        );
      }
      if (s.loaderWindowRatioMax > 1.05) {
        notes.push(`loader window up to ${fmt(s.loaderWindowRatioMax)}× long`);
      }
      if (
        !go && s.deliveredPerS > 50_000 && s.loaderUsPerDelivery > 0.8 * s.cpuUsPerDelivery
      ) {
        notes.push(
          `loader ${fmt(s.loaderUsPerDelivery)} µs/delivery, near the server's ` +
            `${fmt(s.cpuUsPerDelivery)}`,
        );
      }
      if ((s.maxDuePerSender ?? 0) > 2) {
        notes.push(`loader clock behind (${s.maxDuePerSender} messages due per sender at once)`);
      }
      if (notes.length > 0) out.push(`${report.name}, ${s.target}: ${notes.join("; ")}`);
    }
  }
  return out;
}

/** Formats a count: a whole number grouped from 1,000, — if not finite. */
export function fmtCount(n: number): string {
  return Number.isFinite(n) ? Math.round(n).toLocaleString("en-US") : "—";
}

/** Formats a number for a table: grouped from 1,000, fewer decimals the larger, — if not finite. */
export function fmt(n: number): string {
  if (!Number.isFinite(n)) return "—";
  if (Math.abs(n) >= 1000) return Math.round(n).toLocaleString("en-US");
  if (Math.abs(n) >= 100) return n.toFixed(0);
  if (Math.abs(n) >= 10) return n.toFixed(1);
  return n.toFixed(2);
}

/** One results file of `bench/results/`: a run's machine and its scenario reports. */
export interface RunResults {
  /** The file's name, such as `2026-11-26.json`. */
  file: string;
  machine: Machine;
  scenarios: ScenarioReport[];
}

/**
 * The newest report of each scenario over `runs` (by the run's start), each with its run, in the
 * order the newest run that has it lists it: a run of a few scenarios (`--only`) replaces those
 * and leaves the rest as the last run that measured them.
 */
export function latestScenarios(
  runs: RunResults[],
): { run: RunResults; report: ScenarioReport }[] {
  const newestFirst = [...runs].sort((a, b) => b.machine.date.localeCompare(a.machine.date));
  const chosen = new Map<string, { run: RunResults; report: ScenarioReport }>();
  for (const run of newestFirst) {
    for (const report of run.scenarios) {
      if (!chosen.has(report.name)) chosen.set(report.name, { run, report });
    }
  }
  // Oldest run first, each run's scenarios in its own order.
  return [...chosen.values()].sort((a, b) =>
    a.run.machine.date.localeCompare(b.run.machine.date) ||
    a.run.scenarios.indexOf(a.report) - b.run.scenarios.indexOf(b.report)
  );
}

/**
 * Renders the results section of docs/BENCHMARKS.md: the newest measurement of each scenario
 * over `runs` ({@link latestScenarios}), as a few compact tables: the runs they come from, the
 * load scenarios' key numbers with each row's CPU per delivery against its scenario's first row
 * (measured in the same run), the overload answers, idle memory, and the targets. Profiles,
 * ranges, per-pair ratios and every single measurement stay in the results files.
 */
export function markdown(runs: RunResults[]): string {
  const shown = latestScenarios(runs);
  const reports = shown.map((s) => s.report);
  const usedRuns = [...new Set(shown.map((s) => s.run))];
  const lines: string[] = [];
  const push = (...l: string[]) => lines.push(...l);
  const pct = (n: number) => `${fmt(100 * n)}%`;
  push(
    "Newest run of each scenario; its JSON has every measurement, range, pair and profile.",
    "",
  );
  for (const run of usedRuns) {
    const m = run.machine;
    const names = shown.filter((s) => s.run === run).map((s) => `\`${s.report.name}\``);
    push(
      `- \`bench/results/${run.file}\` (${names.join(", ")}): \`${m.command}\` at ${m.commit}; ` +
        `${m.runs} run(s), medians; ${m.warmupS} s warm-up, ${m.windowS} s window; load ` +
        `${m.loadavgStart.split(" ")[0]} → ${m.loadavgEnd.split(" ")[0]}.`,
    );
    const mine = shown.filter((s) => s.run === run).map((s) => s.report);
    for (const w of warnings(m, mine)) push(`  - ⚠ ${w}.`);
  }
  for (const { report } of shown) {
    const said = [
      ...(report.note === undefined ? [] : [report.note]),
      ...(report.serverDefaults === undefined ? [] : [
        `server defaults for ${report.serverDefaults.map((f) => `\`--${f}\``).join(", ")}`,
      ]),
    ];
    if (said.length > 0) push(`- \`${report.name}\`: ${said.join("; ")}.`);
  }
  push("");

  const load = shown.filter((s) => s.report.load !== undefined);
  const isOverload = (r: ScenarioReport) => r.mode === "paced" || r.mode === "flood";
  const plain = load.filter((s) => !isOverload(s.report));
  const overload = load.filter((s) => isOverload(s.report));
  if (plain.length > 0) {
    push(
      "| scenario | server, clients | delivered/s | keep-up | p50 ms | p99 ms | µs CPU/delivery " +
        "| vs first row | µs by clients' count | events/frame |",
      "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    );
    for (const { report } of plain) {
      const first = report.load![0]!;
      for (const s of report.load!) {
        push(
          `| ${report.name} | ${s.target} | ${fmt(s.deliveredPerS)} | ${pct(s.keepUp)} | ` +
            `${fmt(s.p50Ms)} | ${fmt(s.p99Ms)} | ${fmt(s.cpuUsPerDelivery)} | ` +
            `${fmt(s.cpuUsPerDelivery / first.cpuUsPerDelivery)}× | ${
              s.cpuUsPerClientDelivery === undefined ? "—" : fmt(s.cpuUsPerClientDelivery)
            } | ${s.eventsPerFrame === undefined ? "1" : fmt(s.eventsPerFrame)} |`,
        );
      }
    }
    push("");
  }
  if (overload.length > 0) {
    push(
      "| scenario | server, clients | clients | sent/s | stored/s | `overloaded`/s | delivered/s " +
        "| p50 ms | p99 ms | rate-limited | cut (4008) | closes seen |",
      "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    );
    for (const { report } of overload) {
      for (const s of report.load!) {
        const raw = report.raw.find((r) => r.target === s.target) as { clients?: number };
        const closes = Object.entries(s.closes).map(([c, n]) => `${n}×${c}`).join(", ") || "0";
        push(
          `| ${report.name} | ${s.target} | ${fmtCount(raw?.clients ?? NaN)} | ${
            fmt(s.sentPerS)
          } | ` +
            `${fmt(s.storedPerS ?? NaN)} | ${fmt(s.overloadedPerS ?? NaN)} | ` +
            `${fmt(s.deliveredPerS)} | ${fmt(s.p50Ms)} | ${fmt(s.p99Ms)} | ` +
            `${fmtCount(s.rateLimited ?? NaN)} | ${
              fmtCount(s.slowConsumerCloses ?? NaN)
            } | ${closes} |`,
        );
      }
    }
    push("");
  }
  const idle = reports.find((r) => r.idle !== undefined)?.idle;
  if (idle !== undefined) {
    const points = idle[0]?.points.map((p) => p.connections) ?? [];
    const base = idle.find((s) => s.target === BASELINE.label);
    push(
      `| idle: server RSS per connection | ${
        points.map((n) => `${fmt(n)} connections`).join(" | ")
      } |`,
      `|---|${points.map(() => "---:").join("|")}|`,
    );
    for (const s of idle) {
      const cells = s.points.map((p) => {
        if (p.skipped !== undefined) return "not measured";
        const b = base?.points.find((q) => q.connections === p.connections)?.bytesPerConnection;
        const ratio = b && s.target !== BASELINE.label
          ? ` (${fmt(p.bytesPerConnection! / b)}×)`
          : "";
        const nodes = p.nodes === undefined ? "" : `, ${p.nodes} processes`;
        return `${fmt((p.bytesPerConnection ?? 0) / 1024)} KiB${ratio}${nodes}`;
      });
      push(`| ${s.target} | ${cells.join(" | ")} |`);
    }
    push("");
  }
  push(
    "| target | measured | status |",
    "|---|---|---|",
    ...verdicts(reports).map((v) => `| ${v.target} | ${v.measured} | ${v.status} |`),
  );
  return lines.join("\n");
}
