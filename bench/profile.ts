/**
 * Summaries of V8 CPU profiles (`--cpu-prof`): a server's self time by function and by file over
 * one measurement window, with idle, GC and `(program)` time apart. Only samples inside the
 * window count: on Linux V8 stamps them in microseconds since boot, the clock of /proc/uptime.
 */
import { basename, join } from "node:path";
import { round } from "./stats.ts";

/** Functions listed in a profile summary. */
const PROFILE_TOP = 15;

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
}

/** Where a server's sampled time went in one window. */
export interface ProfileSummary {
  /** Sampled milliseconds in the measurement window, by category. */
  windowMs: number;
  idleMs: number;
  gcMs: number;
  programMs: number;
  /** Self time by function (non-idle share in percent). */
  functions: { name: string; where: string; ms: number; percent: number }[];
  /** Self time by source file. */
  files: { file: string; ms: number; percent: number }[];
  /** True when no sample fell in the window and the whole profile was used. */
  wholeProfile: boolean;
}

/**
 * Summarizes the largest `.cpuprofile` in `dir` over the window from `from` to `to`, in seconds
 * since boot; the whole profile when no sample falls in it.
 */
export async function summarizeProfile(
  dir: string,
  from: number,
  to: number,
): Promise<ProfileSummary> {
  let file: string | undefined;
  let size = -1;
  for await (const entry of Deno.readDir(dir)) {
    if (!entry.name.endsWith(".cpuprofile")) continue;
    const { size: s } = await Deno.stat(join(dir, entry.name));
    if (s > size) [file, size] = [entry.name, s];
  }
  if (file === undefined) throw new Error(`No .cpuprofile written in ${dir}`);
  const profile = JSON.parse(await Deno.readTextFile(join(dir, file))) as {
    nodes: ProfileNode[];
    startTime: number;
    samples: number[];
    timeDeltas: number[];
  };
  const nodes = new Map(profile.nodes.map((n) => [n.id, n]));
  const self = new Map<number, number>();
  let inWindow = 0;
  const accumulate = (all: boolean) => {
    self.clear();
    inWindow = 0;
    let t = profile.startTime;
    for (let i = 0; i < profile.samples.length; i++) {
      t += profile.timeDeltas[i] ?? 0;
      // A sample stands for the time until the next one.
      const span = profile.timeDeltas[i + 1] ?? 0;
      if (!all && (t < from * 1e6 || t > to * 1e6)) continue;
      inWindow++;
      const id = profile.samples[i]!;
      self.set(id, (self.get(id) ?? 0) + span);
    }
  };
  accumulate(false);
  const wholeProfile = inWindow === 0;
  if (wholeProfile) accumulate(true);
  const byFunction = new Map<string, { name: string; where: string; us: number }>();
  const byFile = new Map<string, number>();
  let idle = 0, gc = 0, program = 0, busy = 0;
  for (const [id, us] of self) {
    const frame = nodes.get(id)?.callFrame;
    const name = frame?.functionName || "(anonymous)";
    if (name === "(idle)") {
      idle += us;
      continue;
    }
    busy += us;
    if (name === "(garbage collector)") gc += us;
    if (name === "(program)") program += us;
    const url = frame?.url ?? "";
    const fileName = url === "" ? name : url.startsWith("file:") ? basename(url) : url;
    const where = url === "" ? "" : `${fileName}:${(frame?.lineNumber ?? 0) + 1}`;
    const key = `${name}@${where}`;
    const entry = byFunction.get(key) ?? { name, where, us: 0 };
    entry.us += us;
    byFunction.set(key, entry);
    byFile.set(fileName, (byFile.get(fileName) ?? 0) + us);
  }
  const pct = (us: number) => round(100 * us / Math.max(1, busy), 1);
  return {
    windowMs: round((busy + idle) / 1000, 1),
    idleMs: round(idle / 1000, 1),
    gcMs: round(gc / 1000, 1),
    programMs: round(program / 1000, 1),
    functions: [...byFunction.values()].sort((a, b) => b.us - a.us).slice(0, PROFILE_TOP)
      .map((f) => ({
        name: f.name,
        where: f.where,
        ms: round(f.us / 1000, 1),
        percent: pct(f.us),
      })),
    files: [...byFile.entries()].sort((a, b) => b[1] - a[1]).slice(0, 10)
      .map(([file, us]) => ({ file, ms: round(us / 1000, 1), percent: pct(us) })),
    wholeProfile,
  };
}
