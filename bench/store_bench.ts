/**
 * Micro-benchmark of `MessageStore.append`: appends per second for the memory store and the SQLite
 * store (default FULL sync with `setTimeout(0)` group commit, plus the NORMAL-sync and
 * microtask-flush variants it was chosen against), at 1, 10 and 100 appends per turn.
 *
 * Two ways to issue a turn's appends:
 * - `turn`: all k appends in one synchronous run, then `await Promise.all` (a hub handling k
 *   messages of one socket read);
 * - `spread`: each of the k appends from its own macrotask (`setTimeout(0)` callbacks), like k
 *   socket events handled in one loop iteration. This is where the flush scheduling matters.
 *
 * Prints one table (medians of RUNS runs) and a retention timing; writes only to a temp
 * directory, which it removes.
 *
 *     deno run --allow-read --allow-write bench/store_bench.ts
 */
import { join } from "node:path";
import type { Draft } from "../message.ts";
import { roomKey } from "../message.ts";
import type { MessageStore, StoreOptions } from "../backends/store/mod.ts";
import { MemoryMessageStore } from "../backends/store/memory.ts";
import { SqliteMessageStore, type SqliteTuning } from "../backends/store/sqlite.ts";

/** Runs per cell; the median is printed. */
const RUNS = 3;
/** Minimum wall time of one run, in milliseconds. */
const RUN_MS = 300;
/** Appends per turn to measure. */
const PER_TURN = [1, 10, 100] as const;
/** Message body size, in characters: a typical chat line. */
const CONTENT_CHARS = 80;
/** Rows written before timing one background retention pass. */
const PRUNE_BACKLOG_ROWS = 100_000;

const OPTIONS: StoreOptions = { historyLimit: 10_000, historyDays: 0 };
const CONTENT = "x".repeat(CONTENT_CHARS);

interface Mode {
  name: string;
  open: (dir: string) => MessageStore;
}

const MODES: Mode[] = [
  { name: "memory", open: () => new MemoryMessageStore(OPTIONS) },
  { name: "sqlite FULL, immediate (default)", open: (dir) => sqlite(dir, {}) },
  { name: "sqlite NORMAL, immediate", open: (dir) => sqlite(dir, { synchronous: "NORMAL" }) },
  { name: "sqlite FULL, timeout", open: (dir) => sqlite(dir, { flush: "timeout" }) },
  { name: "sqlite FULL, microtask", open: (dir) => sqlite(dir, { flush: "microtask" }) },
];

let files = 0;
function sqlite(dir: string, tuning: SqliteTuning): MessageStore {
  return SqliteMessageStore.open(join(dir, `bench_${files++}.db`), OPTIONS, tuning);
}

let sequence = 0;
function append(store: MessageStore) {
  const n = sequence++;
  const draft: Draft = { type: "message", room: `room${n % 4}`, sender: "bench", content: CONTENT };
  return store.append({ draft, user: "bench", ref: `r${n}` });
}

function turn(store: MessageStore, k: number): Promise<unknown> {
  return Promise.all(Array.from({ length: k }, () => append(store)));
}

function spread(store: MessageStore, k: number): Promise<unknown> {
  return Promise.all(
    Array.from(
      { length: k },
      () => new Promise((resolve) => setTimeout(() => resolve(append(store)), 0)),
    ),
  );
}

/** Appends/s and mean batch size of one run. */
async function run(
  mode: Mode,
  dir: string,
  k: number,
  issue: typeof turn,
): Promise<{ rate: number; batch: number }> {
  const store = mode.open(dir);
  let count = 0;
  const started = performance.now();
  while (performance.now() - started < RUN_MS) {
    await issue(store, k);
    count += k;
  }
  const elapsed = performance.now() - started;
  const stats = store instanceof SqliteMessageStore ? store.stats() : undefined;
  await store.close();
  return { rate: count / (elapsed / 1000), batch: stats ? stats.appends / stats.batches : NaN };
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

function cell(rate: number, batch: number): string {
  const r = rate >= 10_000 ? `${Math.round(rate / 1000)}k` : `${Math.round(rate)}`;
  return (Number.isNaN(batch) ? r : `${r} (b=${batch.toFixed(1)})`).padStart(16);
}

/** Mean and max event-loop time of one commit for k appends per turn, FULL sync. */
async function batchCost(dir: string): Promise<string> {
  const lines = ["\nevent-loop time per commit (FULL sync, 4 rooms, 80-char messages)"];
  for (const k of [1, 10, 100, 1000]) {
    const store = SqliteMessageStore.open(join(dir, `cost_${k}.db`), OPTIONS);
    for (let i = 0; i < Math.max(20, 20_000 / k); i++) await turn(store, k);
    const { batches, totalBatchMs, maxBatchMs } = store.stats();
    await store.close();
    lines.push(
      `${String(k).padStart(5)} appends: mean ${(totalBatchMs / batches).toFixed(2)} ms, ` +
        `max ${maxBatchMs.toFixed(1)} ms`,
    );
  }
  return lines.join("\n");
}

/** How a retention backlog drains: rows written unpruned, then reopened with a small limit. */
async function pruneCost(dir: string): Promise<string> {
  const path = join(dir, "prune.db");
  const loose = SqliteMessageStore.open(path, { ...OPTIONS, historyLimit: PRUNE_BACKLOG_ROWS });
  for (let i = 0; i < PRUNE_BACKLOG_ROWS; i += 1000) await turn(loose, 1000);
  await loose.close();
  const strict = SqliteMessageStore.open(path, { ...OPTIONS, historyLimit: 10 });
  let passes = 0;
  let before = -1;
  const started = performance.now();
  while (strict.stats().prunedRows !== before) {
    before = strict.stats().prunedRows;
    strict.pruneNow();
    passes++;
  }
  const total = performance.now() - started;
  const { maxPruneMs, prunedRows } = strict.stats();
  // Steady state: appends to full conversations, each batch deleting what it pushes out.
  const steadyFrom = strict.stats();
  for (let i = 0; i < 200; i++) await turn(strict, 100);
  const steady = strict.stats();
  await strict.close();
  return [
    `\nretention backlog of ${prunedRows} rows: ${passes} passes of <= 500 rows, ` +
    `max ${maxPruneMs.toFixed(1)} ms, mean ${(total / passes).toFixed(2)} ms per pass`,
    `100-append commits that also prune 100 rows: mean ${
      ((steady.totalBatchMs - steadyFrom.totalBatchMs) / (steady.batches - steadyFrom.batches))
        .toFixed(2)
    } ms`,
  ].join("\n");
}

if (import.meta.main) {
  const dir = await Deno.makeTempDir({ prefix: "parley_bench_" });
  try {
    for (const [label, issue] of [["turn", turn], ["spread", spread]] as const) {
      console.log(`\nappends/s, ${label}: median of ${RUNS} runs (b = mean appends per commit)`);
      console.log("mode".padEnd(32) + PER_TURN.map((k) => `${k}/turn`.padStart(16)).join(""));
      // Runs interleave the modes, so disk write-back after one mode's runs (a closing store
      // checkpoints its WAL) does not bias the next mode's numbers.
      const runs = new Map<string, { rate: number; batch: number }[]>();
      for (const k of PER_TURN) {
        for (let i = 0; i < RUNS; i++) {
          for (const mode of MODES) {
            const key = `${mode.name}/${k}`;
            runs.set(key, [...(runs.get(key) ?? []), await run(mode, dir, k, issue)]);
          }
        }
      }
      for (const mode of MODES) {
        const cells = PER_TURN.map((k) => {
          const results = runs.get(`${mode.name}/${k}`)!;
          return cell(median(results.map((r) => r.rate)), median(results.map((r) => r.batch)));
        });
        console.log(mode.name.padEnd(32) + cells.join(""));
      }
    }
    console.log(await batchCost(dir));
    console.log(await pruneCost(dir));
    // Reads for scale: one history page of 50 from a 10,000-row conversation.
    const store = SqliteMessageStore.open(join(dir, "read.db"), OPTIONS);
    for (let i = 0; i < 10; i++) await turn(store, 1000);
    const started = performance.now();
    for (let i = 0; i < 1000; i++) {
      await store.history({ conversation: roomKey("room0"), before: 2000 + i, limit: 50 });
    }
    console.log(`history page of 50: ${((performance.now() - started) / 1000).toFixed(3)} ms each`);
    await store.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}
