/**
 * Tests of the results section: which run each scenario is shown from, and that the section drawn
 * from a real full run stays compact and points to its results file.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { BENCH, type Machine } from "./proc.ts";
import { latestScenarios, markdown, type RunResults, verdicts } from "./report.ts";
import type { ScenarioReport } from "./summary.ts";

const FULL_RUN = "2026-11-26.json";

function run(file: string, date: string, names: string[]): RunResults {
  return {
    file,
    machine: { date } as Machine,
    scenarios: names.map((name) =>
      ({ name, title: name, kind: "load", raw: [] }) as ScenarioReport
    ),
  };
}

Deno.test("latestScenarios shows each scenario from the newest run that measured it", () => {
  const full = run("full.json", "2026-11-26T18:00:00.000Z", ["light", "saturation", "idle"]);
  const partial = run("partial.json", "2026-12-04T17:00:00.000Z", ["saturation", "overload"]);
  const older = run("older.json", "2026-11-20T10:00:00.000Z", ["light", "flood"]);
  const shown = latestScenarios([partial, older, full]).map((s) =>
    `${s.report.name}@${s.run.file}`
  );
  assert.deepEqual(shown, [
    "flood@older.json",
    "light@full.json",
    "idle@full.json",
    "saturation@partial.json",
    "overload@partial.json",
  ]);
});

Deno.test("markdown draws a full run in under 80 lines and names its results file", async () => {
  const json = JSON.parse(await Deno.readTextFile(join(BENCH, "results", FULL_RUN)));
  const section = markdown([{ file: FULL_RUN, machine: json.machine, scenarios: json.scenarios }]);
  const lines = section.split("\n");
  assert.ok(lines.length < 80, `${lines.length} lines`);
  assert.ok(section.includes(`bench/results/${FULL_RUN}`));
  // Details stay in the JSON: no profile tables, no per-pair lists.
  assert.ok(!section.includes("op_ws_send_text"));
  assert.ok(!section.includes("window by window"));
  // Every load scenario's rows, and every target's verdict.
  for (const name of ["light", "100k", "saturation", "bigroom", "sqlite"]) {
    assert.ok(lines.some((l) => l.startsWith(`| ${name} |`)), name);
  }
  assert.ok(section.includes("| 0.86 µs | met |"));
  assert.ok(section.includes("| Overload: no reader cut with 4008"));
});

Deno.test("markdown shows overload answers, rate-limit refusals and 4008 cuts", () => {
  const report: ScenarioReport = {
    name: "overload",
    title: "Overload",
    kind: "load",
    mode: "paced",
    serverDefaults: ["rate", "burst"],
    load: [
      {
        target: "Parley, plain",
        deliveredPerS: 60_000,
        sentPerS: 10_000,
        p50Ms: 1_500,
        p99Ms: 2_900,
        storedPerS: 60,
        overloadedPerS: 9_900,
        rateLimited: 3,
        slowConsumerCloses: 0,
        closes: {},
        clientCountRange: [1, 1],
      } as unknown as NonNullable<ScenarioReport["load"]>[number],
    ],
    raw: [{ target: "Parley, plain", clients: 1_000 } as unknown as ScenarioReport["raw"][number]],
  };
  const machine = {
    date: "2026-12-04T17:00:00.000Z",
    command: "deno task bench --quick --only overload",
    commit: "abc1234",
    nproc: 2,
    loadavgStart: "1 1 1",
    loadavgEnd: "1 1 1",
  } as Machine;
  const section = markdown([{ file: "x.json", machine, scenarios: [report] }]);
  assert.match(
    section,
    /\| overload \| Parley, plain \| 1,000 \| 10,000 \| 60\.0 \| 9,900 \| 60,000 \| 1,500 \| 2,900 \| 3 \| 0 \| 0 \|/,
  );
  assert.match(
    section,
    /\| Overload: no reader cut with 4008.* \| 0 cut; 9,900 `overloaded`\/s \| met \|/,
  );
  assert.match(section, /`overload`: server defaults for `--rate`, `--burst`/);
});

Deno.test("verdicts judge 100k latency against the bare baseline's p99 of the same run", () => {
  const row = (target: string, p99Ms: number, keepUp = 1) =>
    ({
      target,
      p99Ms,
      keepUp,
      serverCores: 0.9,
      serverCoreBusy: 0.9,
      deliveredPerS: 100_000,
    }) as unknown as NonNullable<ScenarioReport["load"]>[number];
  const judge = (base: number, baseKeepUp: number, v1: number, plain: number) =>
    verdicts([{
      name: "100k",
      title: "100k",
      kind: "load",
      raw: [],
      load: [
        row("baseline (bare Deno)", base, baseKeepUp),
        row("Parley, parley.v1", v1),
        row("Parley, plain", plain),
      ],
    }]).filter((v) => v.target.includes("p99 ≤ 1.5× the bare baseline's"))
      .map((v) => `${v.measured}: ${v.status}`);
  // The run: plain clients waited 93× the bare loop's p99.
  assert.deepEqual(judge(57.9, 1, 29.2, 5_402), [
    "0.50× (29.2 ms vs 57.9 ms): met",
    "93.3× (5,402 ms vs 57.9 ms): missed",
  ]);
  assert.deepEqual(judge(57.9, 0.7, 29.2, 80), [
    "0.50× (29.2 ms vs 57.9 ms): inconclusive: the baseline fell behind",
    "1.38× (80.0 ms vs 57.9 ms): inconclusive: the baseline fell behind",
  ]);
});

Deno.test("verdicts compare parley.v1 with Bun's pub/sub only when the run measured Bun", () => {
  const row = (target: string, p99Ms: number, cpuUsPerDelivery: number) =>
    ({
      target,
      p99Ms,
      cpuUsPerDelivery,
      keepUp: 1,
      serverCores: 0.95,
      serverCoreBusy: 0.95,
      deliveredPerS: 100_000,
    }) as unknown as NonNullable<ScenarioReport["load"]>[number];
  const report = (name: string, rows: ReturnType<typeof row>[]): ScenarioReport => ({
    name,
    title: name,
    kind: "load",
    raw: [],
    load: rows,
  });
  const bunRows = (withBun: boolean) =>
    verdicts([
      report("saturation", [
        row("Parley, parley.v1", 30, 1.55),
        ...(withBun ? [row("Bun pub/sub", 16, 0.82)] : []),
      ]),
      report("100k", [
        row("Parley, parley.v1", 29.2, 8),
        ...(withBun ? [row("Bun pub/sub", 15.8, 5)] : []),
      ]),
    ]).filter((v) => v.target.includes("Bun")).map((v) => `${v.measured}: ${v.status}`);
  // The run: 1.9× Bun's CPU per delivery and 1.85× its p99.
  assert.deepEqual(bunRows(true), [
    "1.89× (1.55 µs vs 0.82 µs): missed",
    "1.85× (29.2 ms vs 15.8 ms): missed",
  ]);
  assert.deepEqual(bunRows(false), []);
});
