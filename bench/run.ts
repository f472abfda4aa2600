/**
 * `deno task bench`: Parley against a bare Deno broadcast server, in the same run, on the same
 * machine, with the same load generator.
 *
 *     deno task bench [--quick] [--only NAME[,NAME…]] [--runs N] [--loaders N] [--no-write]
 *                     [--parley-flag=--name=value …] [--loader-prof DIR] [--generator deno|go]
 *                     [--bun]
 *     deno task bench --render
 *
 * Scenarios (names for `--only`): `light` (1,000 clients, 20 messages/s in: latency), `100k`
 * (1,000 clients, 100 messages/s in: 100,000 deliveries/s must keep up), `saturation` (1,000
 * clients, 20 closed-loop senders: deliveries/s and server CPU per delivery), `bigroom` (5,000
 * clients, 10 messages/s in), `idle` (server RSS per open connection at 10,000 and 50,000), `sqlite`
 * (saturation with the SQLite store against `memory:`), `profile` (one saturation run of each
 * server under `--cpu-prof`, summarised by self time), `overload` (every client of a room sends
 * 3,000-character messages at the server's default rate limit: what it stores, how many senders it
 * answers `overloaded`, and that no reader is cut), `flood` (one sender as fast as it can, rate
 * limit lifted, 1,000 readers). Each load scenario but the last two measures the bare
 * baseline (`bench/baseline_bare.ts`) and Parley with `parley.v1` clients and with plain clients;
 * every measurement starts a fresh server (`sqlite`: two servers per client kind, for all its
 * interleaved windows).
 *
 * Method: each server is pinned to core 0 and the load generator (`bench/loader.ts`, raw sockets)
 * to core 1 with `taskset` when it exists. A measurement connects the clients, starts the
 * senders, waits out a warm-up, then opens a window: server and loader CPU (utime+stime from
 * /proc/<pid>/stat) and the loader's counters are taken at both ends. Results are medians over
 * `--runs` runs (the order of servers rotates between runs) and ratios to the baseline of the same
 * run. The `sqlite` scenario instead runs a SQLite and a `memory:` server side by side and loads
 * them in turn, in interleaved pairs of short windows (see `measureInterleaved`); its
 * verdict is the median of the per-pair ratios: a 5–10% effect is below the ±15% spread that
 * separate runs show here. Writes `bench/results/<date>[-quick][-<--only names>].json` unless
 * `--no-write`, then redraws the results section of docs/BENCHMARKS.md (between its markers) from
 * the newest run of each scenario in `bench/results/`, so a run of a few scenarios updates those
 * and keeps the rest. `--render` only redraws it.
 *
 * `--quick` is for development and CI smoke: one run, 1 s warm-up, 3 s window, 200 clients (1,000
 * in the big room), idle at 2,000 and 5,000 connections. Its numbers are indicative only.
 *
 * This file owns the command line and the run: it parses the flags, runs the selected scenarios
 * in order, logs each measurement, and writes the results. The scenarios are defined in
 * `scenarios.ts`, carried out by `measure.ts` (load), `idle.ts` (idle memory) and `profile.ts`,
 * on processes from `proc.ts`; `summary.ts` aggregates and `report.ts` renders.
 */
import { parseArgs } from "node:util";
import { join } from "node:path";
import { type IdleResult, measureIdle } from "./idle.ts";
import { type LoadResult, measureInterleaved, measureLoad } from "./measure.ts";
import { BENCH, FD_HARD_LIMIT, HAS_TASKSET, loadavg, machine, ROOT } from "./proc.ts";
import { fmt, fmtCount, markdown, type RunResults, verdicts } from "./report.ts";
import { type Options, runOrder, scenarios } from "./scenarios.ts";
import { pairRatios, type ScenarioReport, summarizeIdle, summarizeLoad } from "./summary.ts";

/** Reads the command line; `--help` prints the usage and exits. */
function parseOptions(args: string[]): Options {
  const { values } = parseArgs({
    args,
    options: {
      quick: { type: "boolean", default: false },
      only: { type: "string", multiple: true },
      runs: { type: "string" },
      loaders: { type: "string", default: "1" },
      "no-write": { type: "boolean", default: false },
      render: { type: "boolean", default: false },
      "parley-flag": { type: "string", multiple: true },
      "loader-prof": { type: "string" },
      generator: { type: "string", default: "deno" },
      bun: { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
    strict: true,
  });
  if (values.help) {
    console.log(
      "Usage: deno task bench [--quick] [--only NAME[,NAME…]] [--runs N] [--loaders N] " +
        "[--no-write] [--parley-flag=--name=value …] [--loader-prof DIR] [--generator deno|go] " +
        "[--bun]\n" +
        "       deno task bench --render   (redraw docs/BENCHMARKS.md from bench/results/)\n" +
        "Scenarios: " +
        scenarios(false).map((s) => s.name).join(", "),
    );
    Deno.exit(0);
  }
  const names = new Set(scenarios(false).map((s) => s.name));
  const only = new Set((values.only ?? []).flatMap((v) => v.split(",")).filter((v) => v !== ""));
  for (const name of only) {
    if (!names.has(name)) throw new Error(`Unknown scenario "${name}": one of ${[...names]}`);
  }
  const generator = values.generator;
  if (generator !== "deno" && generator !== "go") {
    throw new Error(`--generator must be deno or go, not "${generator}"`);
  }
  const runs = Number(values.runs ?? (values.quick ? 1 : 3));
  const loaders = Number(values.loaders);
  if (!Number.isInteger(runs) || runs < 1) throw new Error(`--runs must be a positive integer`);
  if (!Number.isInteger(loaders) || loaders < 1) throw new Error(`--loaders must be positive`);
  return {
    quick: values.quick,
    runs,
    only,
    loaders,
    write: !values["no-write"],
    render: values.render,
    parleyFlags: values["parley-flag"] ?? [],
    loaderProf: values["loader-prof"],
    generator,
    bun: values.bun,
    warmupMs: values.quick ? 1_000 : 2_000,
    windowMs: values.quick ? 3_000 : 8_000,
  };
}

const START_MARK = "<!-- bench:results:start -->";
const END_MARK = "<!-- bench:results:end -->";

const RESULTS = join(BENCH, "results");
const DOC = join(ROOT, "docs", "BENCHMARKS.md");

/** Reads every results file in `bench/results/`. */
async function readResults(): Promise<RunResults[]> {
  const runs: RunResults[] = [];
  for await (const entry of Deno.readDir(RESULTS)) {
    if (!entry.isFile || !entry.name.endsWith(".json")) continue;
    const json = JSON.parse(await Deno.readTextFile(join(RESULTS, entry.name)));
    runs.push({ file: entry.name, machine: json.machine, scenarios: json.scenarios });
  }
  return runs;
}

/** Writes `paths` in deno fmt's shape, so `deno task check` stays clean. */
async function format(...paths: string[]): Promise<void> {
  await new Deno.Command(Deno.execPath(), {
    args: ["fmt", "--quiet", ...paths],
    cwd: ROOT,
    stdout: "null",
  }).output();
}

/** Redraws the results section of docs/BENCHMARKS.md from `bench/results/`. */
async function render(): Promise<void> {
  await writeMarkdown(markdown(await readResults()));
  await format(DOC);
}

/** Replaces the section between the markers of docs/BENCHMARKS.md (appends one if missing). */
async function writeMarkdown(section: string): Promise<void> {
  const path = DOC;
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch {
    text = `# Benchmarks\n\n${START_MARK}\n${END_MARK}\n`;
  }
  const start = text.indexOf(START_MARK);
  const end = text.indexOf(END_MARK);
  const body = `${START_MARK}\n<!-- Written by bench/run.ts; edits here are overwritten. -->\n\n` +
    `${section}\n${END_MARK}`;
  text = start === -1 || end === -1
    ? `${text.trimEnd()}\n\n## Results\n\n${body}\n`
    : text.slice(0, start) + body + text.slice(end + END_MARK.length);
  await Deno.writeTextFile(path, text);
}

async function main(args: string[]): Promise<void> {
  const options = parseOptions(args);
  if (options.render) {
    await render();
    console.log(`Wrote the results section of docs/BENCHMARKS.md from ${RESULTS}`);
    return;
  }
  const m = await machine(options, args);
  const selected = scenarios(options.quick, options.bun).filter((s) =>
    options.only.size === 0 || options.only.has(s.name)
  );
  console.log(
    `Parley benchmark (${m.mode}): ${selected.map((s) => s.name).join(", ")}; ${options.runs} ` +
      `run(s); taskset ${HAS_TASKSET ? "on" : "missing"}; fd limit ${FD_HARD_LIMIT}`,
  );
  const reports: ScenarioReport[] = [];
  for (const scenario of selected) {
    console.log(`\n## ${scenario.title}`);
    // A run with the Go generator keeps its own scenario names, so the results section shows
    // both generators' newest runs side by side instead of one replacing the other.
    const go = options.generator === "go" && scenario.kind !== "idle";
    const report: ScenarioReport = {
      name: go ? `${scenario.name}-go` : scenario.name,
      title: go ? `${scenario.title} (Go load generator)` : scenario.title,
      kind: scenario.kind,
      ...(scenario.kind === "load" && scenario.serverDefaults !== undefined
        ? { serverDefaults: scenario.serverDefaults }
        : {}),
      ...(scenario.kind === "load" ? { mode: scenario.mode } : {}),
      ...(scenario.kind === "load" && scenario.note !== undefined ? { note: scenario.note } : {}),
      raw: [],
    };
    if (report.note !== undefined) console.log(`  Note: ${report.note}.`);
    if (scenario.kind === "profile") {
      report.profiles = [];
      for (const target of scenario.targets) {
        const dir = await Deno.makeTempDir({ prefix: "parley_prof_" });
        try {
          const result = await measureLoad(scenario, target, 1, options, dir);
          report.raw.push(result);
          report.profiles.push({ target: target.label, result });
          const top = result.profile!.functions.slice(0, 3)
            .map((f) => `${f.name} ${f.percent}%`).join(", ");
          console.log(`  ${target.label}: ${fmt(result.deliveredPerS)}/s; top: ${top}`);
        } finally {
          await Deno.remove(dir, { recursive: true }).catch(() => {});
        }
      }
    } else {
      const interleaved = scenario.kind === "load" && scenario.pairs !== undefined;
      if (interleaved) {
        for (let i = 0; i + 1 < scenario.targets.length; i += 2) {
          const [a, b] = [scenario.targets[i]!, scenario.targets[i + 1]!];
          report.raw.push(
            ...await measureInterleaved(
              scenario,
              a,
              b,
              scenario.pairs!,
              options,
              (r) =>
                console.log(
                  `  pair ${r.run} ${r.target}: ${fmt(r.serverDelivered / r.windowS)} written/s, ` +
                    `${fmt(r.cpuUsPerDelivery)} µs CPU/delivery, server ${
                      fmt(r.serverCores)
                    } cores, ` +
                    `p99 ${fmt(r.latencyMs.p99)} ms`,
                ),
            ),
          );
        }
      }
      for (
        let run = 1;
        run <= (interleaved ? 0 : options.runs);
        run++
      ) {
        for (const target of runOrder(scenario.targets, run, false)) {
          if (scenario.kind === "load") {
            const r = await measureLoad(scenario, target, run, options);
            report.raw.push(r);
            console.log(
              `  run ${run} ${target.label}: ${fmt(r.deliveredPerS)} delivered/s, keep-up ${
                fmt(r.keepUp)
              }, p50 ${fmt(r.latencyMs.p50)} ms, p99 ${fmt(r.latencyMs.p99)} ms, ${
                fmt(r.cpuUsPerDelivery)
              } µs CPU/delivery (${fmt(r.cpuUsPerClientDelivery)} by the clients' count), server ${
                fmt(r.serverCores)
              } cores${
                r.eventsPerFrame === undefined ? "" : `, ${fmt(r.eventsPerFrame)} events/frame`
              }${
                Math.abs(r.clientCountRatio - 1) > 0.02
                  ? `, clients counted ${fmt(r.clientCountRatio)}× the server's events`
                  : ""
              }${
                r.overloaded === undefined
                  ? ""
                  : `, ${fmt(r.sentPerS)} sent/s, ${fmt((r.stored ?? 0) / r.windowS)} stored/s, ${
                    fmt(r.overloaded / r.windowS)
                  } overloaded/s, ${fmtCount(r.rateLimited ?? 0)} rate-limited, ${
                    fmtCount(r.slowConsumerCloses ?? 0)
                  } cut (4008)`
              }, loader ${fmt(r.loaderCores)} cores (${fmt(r.loaderUsPerDelivery)} µs/delivery)${
                Object.keys(r.closes).length > 0 ? `, closes ${JSON.stringify(r.closes)}` : ""
              }`,
            );
          } else {
            const r = await measureIdle(scenario, target, run, options);
            report.raw.push(r);
            console.log(
              `  run ${run} ${target.label}: ` +
                r.points.map((p) =>
                  p.skipped !== undefined
                    ? `${p.connections}: skipped`
                    : `${p.held}/${p.connections} held${
                      p.nodes === undefined ? "" : ` by ${p.nodes} processes`
                    }, ${fmt((p.bytesPerConnection ?? 0) / 1024)} KiB each${
                      p.reached === undefined
                        ? ""
                        : `, one message reached ${p.reached} in ${p.reachedMs} ms`
                    }`
                ).join("; "),
            );
          }
        }
      }
      if (scenario.kind === "load") {
        report.load = summarizeLoad(report.raw as LoadResult[]);
        if (scenario.pairs !== undefined) {
          report.pairs = pairRatios(scenario.targets, report.raw as LoadResult[]);
        }
      } else report.idle = summarizeIdle(report.raw as IdleResult[]);
    }
    reports.push(report);
  }
  m.loadavgEnd = loadavg();
  const name = `${m.date.slice(0, 10)}${options.quick ? "-quick" : ""}${
    options.generator === "go" ? "-go" : ""
  }${options.only.size === 0 ? "" : `-${[...options.only].join("-")}`}.json`;
  console.log(`\n${markdown([{ file: name, machine: m, scenarios: reports }])}`);
  if (options.write) {
    await Deno.mkdir(RESULTS, { recursive: true });
    const file = join(RESULTS, name);
    const json = {
      machine: m,
      verdicts: verdicts(reports),
      scenarios: reports,
    };
    await Deno.writeTextFile(file, JSON.stringify(json, null, 2) + "\n");
    await format(file);
    await render();
    console.log(`Wrote ${file} and docs/BENCHMARKS.md`);
  }
}

if (import.meta.main) {
  try {
    await main(Deno.args);
  } catch (error) {
    console.error(`bench: ${error instanceof Error ? error.stack : String(error)}`);
    Deno.exit(1);
  }
}
