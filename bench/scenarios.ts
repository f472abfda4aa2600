/**
 * What the benchmark measures: the servers and client kinds under test ({@link Target}), the
 * scenarios that load them ({@link scenarios}), the options of one run ({@link Options}), and the
 * order in which a run visits the targets ({@link runOrder}). Nothing here starts a process:
 * `measure.ts` and `idle.ts` carry the scenarios out.
 */

/** Interleaved pairs of SQLite and `memory:` windows per client kind: full run, `--quick`. */
export const SQLITE_PAIRS = 30;
export const SQLITE_PAIRS_QUICK = 2;

/** The options of one run, from the command line (see `parseOptions` in run.ts). */
export interface Options {
  quick: boolean;
  runs: number;
  only: Set<string>;
  loaders: number;
  write: boolean;
  /** Measure nothing: redraw the doc's results section from `bench/results/`. */
  render: boolean;
  /** Extra flags for Parley, for experiments; recorded with the results. */
  parleyFlags: string[];
  /** Where load generators write a `--cpu-prof` profile each, when set. */
  loaderProf: string | undefined;
  /** Which load generator drives the load scenarios (`--generator`); see `Generator` in proc.ts. */
  generator: "deno" | "go";
  /** Whether Bun's pub/sub ({@link BUN}) joins the load scenarios' targets (`--bun`). */
  bun: boolean;
  warmupMs: number;
  windowMs: number;
}

export type ServerKind = "baseline" | "bun" | "parley";

/** One server configuration and client kind under test. */
export interface Target {
  label: string;
  server: ServerKind;
  protocol?: string;
  store?: "memory" | "sqlite";
}

/** The bare Deno broadcast server (`bench/baseline_bare.ts`): the reference point. */
export const BASELINE: Target = { label: "baseline (bare Deno)", server: "baseline" };
/** Bun's built-in pub/sub (`bench/baseline_bun.ts`, uWebSockets): a peer from another runtime. */
export const BUN: Target = { label: "Bun pub/sub", server: "bun" };
/** Parley on `memory:`, with clients that ask for the `parley.v1` subprotocol. */
export const PARLEY_V1: Target = {
  label: "Parley, parley.v1",
  server: "parley",
  protocol: "parley.v1",
  store: "memory",
};
/** Parley on `memory:`, with clients that ask for no subprotocol. */
export const PARLEY_PLAIN: Target = { label: "Parley, plain", server: "parley", store: "memory" };

/** Clients in one room, some of them sending: throughput, latency and CPU per delivery. */
export interface LoadScenario {
  kind: "load";
  name: string;
  title: string;
  clients: number;
  senders: number;
  /** How senders send: see `bench/loader.ts`. */
  mode: "rate" | "paced" | "flood" | "closed";
  /** Messages per second in, for `rate` and `paced` mode. */
  rate: number;
  /** Characters of content per message; `CONTENT_CHARS` in proc.ts when absent. */
  contentChars?: number;
  /**
   * Harness flags (`PARLEY_FLAGS` in proc.ts, by name without `--`) left out for this scenario,
   * so the server runs with its own defaults for them.
   */
  serverDefaults?: string[];
  /** Said with the results: how this scenario departs from what it was meant to measure. */
  note?: string;
  targets: Target[];
  /**
   * When set, the targets are pairs to compare (`[A, B, C, D]` compares B with A and D with C),
   * each pair measured in this many interleaved pairs of short windows instead of `--runs`
   * separate runs; see `measureInterleaved` in measure.ts.
   */
  pairs?: number;
}

/** Connections that only stay open: server memory per connection at each point. */
export interface IdleScenario {
  kind: "idle";
  name: string;
  title: string;
  points: number[];
  targets: Target[];
}

/** One saturation run of each target under `--cpu-prof`. */
export interface ProfileScenario {
  kind: "profile";
  name: string;
  title: string;
  clients: number;
  targets: Target[];
}

/** One scenario of the benchmark, by `kind`. */
export type Scenario = LoadScenario | IdleScenario | ProfileScenario;

/**
 * The overload scenarios' load: every client of a room sends messages of this many characters at
 * the server's default rate limit (10 frames/s, `--rate`), so the offered fan-out is
 * clients² × 10 deliveries/s, far past what one core writes. The flood has one sender with the
 * rate limit lifted and this many readers. Descriptors would allow 19,500 clients here; the load
 * generator's one core is the limit (see {@link OVERLOAD_NOTE}).
 */
export const OVERLOAD_CLIENTS = 1_000;
/** Why the overload scenario has fewer clients than the 2,000 it was meant to have. */
export const OVERLOAD_NOTE = "1,000 clients, not 2,000: at 2,000 the load generator fell " +
  "behind its clock (9 messages due per sender at once)";
export const OVERLOAD_RATE_PER_CLIENT = 10;
export const OVERLOAD_CONTENT_CHARS = 3_000;
export const FLOOD_READERS = 1_000;
/** The server's own limits the overload scenario keeps: its rate limit and its outbox bounds. */
const SERVER_LIMITS = ["rate", "burst", "outbox-messages", "outbox-bytes"];

/**
 * Lists every scenario in the order a run measures them; `quick` shrinks them, and `bun` adds
 * {@link BUN} to the targets of the light, 100k, saturation and big-room scenarios.
 */
export function scenarios(quick: boolean, bun = false): Scenario[] {
  const clients = quick ? 200 : 1_000;
  const targets = bun
    ? [BASELINE, BUN, PARLEY_V1, PARLEY_PLAIN]
    : [BASELINE, PARLEY_V1, PARLEY_PLAIN];
  return [
    {
      kind: "load",
      name: "light",
      title: `Light fan-out: ${clients} clients, 20 messages/s in`,
      clients,
      senders: 10,
      mode: "rate",
      rate: 20,
      targets,
    },
    {
      kind: "load",
      name: "100k",
      title: `${clients * 100 / 1000}k deliveries/s: ${clients} clients, 100 messages/s in`,
      clients,
      senders: 20,
      mode: "rate",
      rate: 100,
      targets,
    },
    {
      kind: "load",
      name: "saturation",
      title: `Saturation: ${clients} clients, 20 closed-loop senders`,
      clients,
      senders: 20,
      mode: "closed",
      rate: 0,
      targets,
    },
    {
      kind: "load",
      name: "bigroom",
      title: `Big room: ${quick ? 1_000 : 5_000} clients, 10 messages/s in`,
      clients: quick ? 1_000 : 5_000,
      senders: 10,
      mode: "rate",
      rate: 10,
      targets,
    },
    {
      kind: "idle",
      name: "idle",
      title: "Idle memory: server RSS per open connection",
      points: quick ? [2_000, 5_000] : [10_000, 50_000],
      targets: [BASELINE, PARLEY_V1, PARLEY_PLAIN],
    },
    {
      kind: "load",
      name: "sqlite",
      title: `History on: SQLite vs memory: at saturation (${clients} clients, 20 senders)`,
      clients,
      senders: 20,
      mode: "closed",
      rate: 0,
      targets: [
        PARLEY_V1,
        { ...PARLEY_V1, label: "Parley, parley.v1, SQLite", store: "sqlite" },
        PARLEY_PLAIN,
        { ...PARLEY_PLAIN, label: "Parley, plain, SQLite", store: "sqlite" },
      ],
      // A 5–10% effect under a run-to-run spread of ±15% on this kind of machine: compared in
      // interleaved windows, over more of them than the other scenarios' three runs.
      pairs: quick ? SQLITE_PAIRS_QUICK : SQLITE_PAIRS,
    },
    {
      kind: "load",
      name: "overload",
      title: `Overload: ${fmtCount(OVERLOAD_CLIENTS)} clients each sending ${
        fmtCount(OVERLOAD_CONTENT_CHARS)
      }-character messages at ${OVERLOAD_RATE_PER_CLIENT}/s (default limits)`,
      clients: OVERLOAD_CLIENTS,
      senders: OVERLOAD_CLIENTS,
      mode: "paced",
      rate: OVERLOAD_CLIENTS * OVERLOAD_RATE_PER_CLIENT,
      contentChars: OVERLOAD_CONTENT_CHARS,
      serverDefaults: SERVER_LIMITS,
      note: OVERLOAD_NOTE,
      targets: [PARLEY_PLAIN],
    },
    {
      kind: "load",
      name: "flood",
      title: `Flood: one sender as fast as it can (rate limit lifted), ${
        fmtCount(FLOOD_READERS)
      } readers, ${fmtCount(OVERLOAD_CONTENT_CHARS)}-character messages`,
      clients: FLOOD_READERS + 1,
      senders: 1,
      mode: "flood",
      rate: 0,
      contentChars: OVERLOAD_CONTENT_CHARS,
      serverDefaults: ["outbox-messages", "outbox-bytes"],
      targets: [PARLEY_PLAIN],
    },
    {
      kind: "profile",
      name: "profile",
      title: `Where server time goes at saturation (--cpu-prof, ${clients} clients)`,
      clients,
      targets: [BASELINE, PARLEY_V1, PARLEY_PLAIN],
    },
  ];
}

/**
 * The order of a run's measurements. Unpaired, it rotates by one per run, so a drift in the
 * machine's load does not always favour one server. Paired, each pair stays adjacent: the pairs
 * rotate, and which of a pair goes first alternates (A B, then B A), so a steady drift costs
 * each side of a pair the same over two runs.
 */
export function runOrder<T>(targets: readonly T[], run: number, paired: boolean): T[] {
  const rotate = <U>(list: readonly U[]) => list.map((_, i) => list[(i + run - 1) % list.length]!);
  if (!paired) return rotate(targets);
  if (targets.length % 2 !== 0) throw new Error("A paired scenario needs an even target count");
  const pairs: T[][] = [];
  for (let i = 0; i < targets.length; i += 2) {
    pairs.push(run % 2 === 1 ? [targets[i]!, targets[i + 1]!] : [targets[i + 1]!, targets[i]!]);
  }
  return rotate(pairs).flat();
}

/** Groups thousands: 2,000. */
function fmtCount(n: number): string {
  return n.toLocaleString("en-US");
}
