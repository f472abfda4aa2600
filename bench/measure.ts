/**
 * Load measurements: a session (one server under test with its load generators connected) and
 * the windows measured on it. A window takes server and loader CPU from /proc, the server core's
 * busy time, the server's own outbound counters (Parley's `/metrics`, the baseline's `/count`)
 * and the loaders' counts and latency samples at both ends, and turns them into one
 * {@link LoadResult}. {@link measureLoad} is one fresh server per measurement;
 * {@link measureInterleaved} compares two servers running side by side, window by window.
 */
import type { LoaderReport, LoaderSpec } from "./loader.ts";
import { type ProfileSummary, summarizeProfile } from "./profile.ts";
import {
  buildGoLoader,
  BULK_INTERVAL_MS,
  CONCURRENCY,
  CONNECT_MS,
  CONTENT_CHARS,
  coreTimes,
  cpuSeconds,
  loadavg,
  LoaderProc,
  REPORT_MS,
  rssBytes,
  type Server,
  SERVER_CORE,
  shares,
  sleep,
  startServer,
  stopServer,
  uptime,
} from "./proc.ts";
import {
  type LoadScenario,
  type Options,
  type ProfileScenario,
  runOrder,
  type Target,
} from "./scenarios.ts";
import { percentile, round } from "./stats.ts";

/** Every this-many-th client decodes and times what it receives. */
const SAMPLE_EVERY = 20;
/** Read buffer per load client in bytes. */
const LOAD_BUFFER_BYTES = 32 * 1024;
/** Pause after connecting, before senders start, in milliseconds (presence events settle). */
const SETTLE_MS = 500;

/**
 * Warm-up and window of one interleaved slice (see {@link measureInterleaved}), in both modes.
 * Short and many: the spread between two adjacent 2 s windows of one server was as wide as
 * between separate runs (±20%), so the noise is faster than any window we can afford, and only
 * the number of pairs narrows the median.
 */
export const SLICE = { warmupMs: 300, windowMs: 1_000 };
/** Pause after a slice, for the closed loop's messages in flight to come back. */
const SLICE_DRAIN_MS = 200;

/** One load measurement of one target. */
export interface LoadResult {
  target: string;
  run: number;
  clients: number;
  windowS: number;
  sent: number;
  sentPerS: number;
  delivered: number;
  deliveredPerS: number;
  /** Delivered over sent × clients: 1 when every message reached every client in time. */
  keepUp: number;
  latencyMs: { p50: number; p99: number; max: number; samples: number };
  serverCores: number;
  /** Share of the server's core busy with anything (the server or other work) in the window. */
  serverCoreBusy: number;
  /**
   * Events the server wrote to its sockets in the window, by its own count (Parley's
   * `parley_batch_events_sum`, the baseline's `/count`). CPU per delivery divides by this, not by
   * what the clients counted: when the load generator falls behind, the kernel holds a backlog
   * for it, and whatever of that backlog it reads in the window (written before it) would count.
   */
  serverDelivered: number;
  /**
   * The load generator's own window, from its `mark` to its `report`, in seconds (the longest of
   * the loaders'). Client-side rates (sent/s, delivered/s) divide by it. It exceeds `windowS`
   * when the loader answered its commands late.
   */
  loaderWindowS: number;
  /** The clients' delivered/s over the server's events written/s: about 1 unless the loader
   * lagged. */
  clientCountRatio: number;
  cpuUsPerDelivery: number;
  /**
   * Server CPU in the window over the deliveries the clients counted in it (the loader's window):
   * the measure a load generator can take without the server's help, compared across generators.
   */
  cpuUsPerClientDelivery: number;
  /** Parley only, from /metrics over the window: frames written, and events per frame. */
  framesOutPerS?: number;
  eventsPerFrame?: number;
  /** SQLite only: the share of the window its write batches held the event loop. */
  storeShare?: number;
  /** SQLite only: write batches (transactions) committed per second. */
  storeBatchesPerS?: number;
  loaderCores: number;
  /** The load generator's CPU per delivery: it must stay well below the server's. */
  loaderUsPerDelivery: number;
  serverRssMiB: number;
  closes: Record<string, number>;
  resends: number;
  /** The load generator's clock: most messages one sender had due at once (see `LoaderReport`). */
  maxDuePerSender: number;
  /** Senders whose socket the server had stopped reading at the end of the window. */
  backloggedSenders: number;
  /**
   * Parley only, from /metrics over the window: chat messages stored, `overloaded` answers,
   * frames refused by the rate limiter, and connections the server closed with 4008.
   */
  stored?: number;
  overloaded?: number;
  rateLimited?: number;
  slowConsumerCloses?: number;
  loadavg: string;
  profile?: ProfileSummary;
}

/** Measures `target` once under `scenario` on a fresh server (profiled into `profileDir` if set). */
export async function measureLoad(
  scenario: LoadScenario | ProfileScenario,
  target: Target,
  run: number,
  options: Options,
  profileDir?: string,
): Promise<LoadResult> {
  const session = await openSession(scenario, target, options, profileDir);
  try {
    const { result, up0, up1 } = await measureWindow(
      session,
      run,
      options.warmupMs,
      options.windowMs,
    );
    // Closed before the profile is read: the server writes its profile as it exits.
    await closeSession(session);
    if (profileDir !== undefined) result.profile = await summarizeProfile(profileDir, up0, up1);
    return result;
  } finally {
    // After an error; a second call finds nothing left to stop.
    await closeSession(session);
  }
}

/** A server under test with its load generators connected, senders idle. */
interface Session {
  target: Target;
  server: Server;
  loaders: LoaderProc[];
  clients: number;
}

/** Starts a server for `target` and connects the scenario's clients to it; sends nothing yet. */
async function openSession(
  scenario: LoadScenario | ProfileScenario,
  target: Target,
  options: Options,
  profileDir?: string,
): Promise<Session> {
  const mode = scenario.kind === "load" ? scenario.mode : "closed";
  const senders = scenario.kind === "load" ? scenario.senders : 20;
  const rate = scenario.kind === "load" ? scenario.rate : 0;
  const server = await startServer(target, {
    parleyFlags: options.parleyFlags,
    profileDir,
    ...(scenario.kind === "load" && scenario.serverDefaults !== undefined
      ? { serverDefaults: scenario.serverDefaults }
      : {}),
  });
  const session: Session = { target, server, loaders: [], clients: 0 };
  try {
    const goBinary = options.generator === "go" ? await buildGoLoader() : undefined;
    const clientShares = shares(scenario.clients, options.loaders);
    const senderShares = shares(senders, options.loaders);
    let offset = 0;
    for (let id = 0; id < options.loaders; id++) {
      const spec: LoaderSpec = {
        id,
        hostname: "127.0.0.1",
        port: server.port,
        ...(target.protocol === undefined ? {} : { protocol: target.protocol }),
        clients: clientShares[id]!,
        offset,
        senders: senderShares[id]!,
        mode,
        rate: rate * senderShares[id]! / senders,
        sampleEvery: SAMPLE_EVERY,
        contentChars: (scenario.kind === "load" ? scenario.contentChars : undefined) ??
          CONTENT_CHARS,
        waitWelcome: target.server === "parley",
        concurrency: CONCURRENCY,
        bufferBytes: LOAD_BUFFER_BYTES,
        bulkIntervalMs: BULK_INTERVAL_MS,
      };
      offset += spec.clients;
      session.loaders.push(new LoaderProc(spec, options.loaderProf, goBinary));
    }
    const loaders = session.loaders;
    const connected = await Promise.all(loaders.map((l) => l.event("connected", CONNECT_MS)));
    session.clients = connected.reduce((n, e) => n + e.clients, 0);
    const failed = connected.reduce((n, e) => n + e.failed, 0);
    if (failed > 0) console.error(`  ${failed} clients failed to connect`);
    if (target.protocol !== undefined) {
      const echoed = connected.reduce((n, e) => n + (e.protocols[target.protocol!] ?? 0), 0);
      if (echoed !== session.clients) {
        throw new Error(`Server echoed ${target.protocol} to ${echoed}`);
      }
    }
    await sleep(SETTLE_MS);
    return session;
  } catch (error) {
    await closeSession(session);
    throw error;
  }
}

/** Stops the session's load generators and server; idempotent. */
async function closeSession(session: Session): Promise<void> {
  const loaders = session.loaders.splice(0);
  await Promise.all(loaders.map((l) => l.command("stop").catch(() => {})));
  await Promise.all(loaders.map((l) => l.proc.stop()));
  await stopServer(session.server);
}

/**
 * Starts (or resumes) the session's senders, waits `warmupMs`, measures a `windowMs` window, and
 * pauses the senders again, so the session can be measured again later. Returns the result and
 * the machine's uptime at both ends of the window (for a profile's time range).
 */
async function measureWindow(
  session: Session,
  run: number,
  warmupMs: number,
  windowMs: number,
): Promise<{ result: LoadResult; up0: number; up1: number }> {
  const { target, server, loaders, clients } = session;
  await Promise.all(loaders.map((l) => l.command("start")));
  await sleep(warmupMs);
  const metrics0 = await scrape(target, server.port);
  const core0 = coreTimes(SERVER_CORE);
  const cpu0 = cpuSeconds(server.proc.pid);
  const loaderCpu0 = loaders.reduce((s, l) => s + cpuSeconds(l.proc.pid), 0);
  const up0 = uptime();
  const t0 = performance.now();
  await Promise.all(loaders.map((l) => l.command("mark")));
  await sleep(windowMs);
  const reportsPending = loaders.map((l) => l.event("report", REPORT_MS));
  await Promise.all(loaders.map((l) => l.command("report")));
  const cpu1 = cpuSeconds(server.proc.pid);
  const core1 = coreTimes(SERVER_CORE);
  const loaderCpu1 = loaders.reduce((s, l) => s + cpuSeconds(l.proc.pid), 0);
  const up1 = uptime();
  const windowS = (performance.now() - t0) / 1000;
  const serverRssMiB = rssBytes(server.proc.pid) / 2 ** 20;
  const metrics1 = await scrape(target, server.port);
  const reports: LoaderReport[] = (await Promise.all(reportsPending)).map((e) => e.report);
  await Promise.all(loaders.map((l) => l.ask("pause", "paused")));

  const sent = reports.reduce((n, r) => n + r.sent, 0);
  const delivered = reports.reduce((n, r) => n + r.delivered, 0);
  const latencies = reports.flatMap((r) => r.latencies).sort((a, b) => a - b);
  const closes: Record<string, number> = {};
  for (const report of reports) {
    for (const [code, n] of Object.entries(report.closes)) closes[code] = (closes[code] ?? 0) + n;
  }
  const serverCpu = cpu1 - cpu0;
  const frames = metrics1.framesOut - metrics0.framesOut;
  const serverDelivered = metrics1.eventsOut - metrics0.eventsOut;
  const loaderWindowS = Math.max(...reports.map((r) => r.windowMs)) / 1000;
  const result: LoadResult = {
    target: target.label,
    run,
    clients,
    windowS: round(windowS, 3),
    sent,
    sentPerS: round(sent / loaderWindowS, 1),
    delivered,
    deliveredPerS: Math.round(delivered / loaderWindowS),
    keepUp: round(delivered / Math.max(1, sent * clients), 4),
    latencyMs: {
      p50: round(percentile(latencies, 0.5), 3),
      p99: round(percentile(latencies, 0.99), 3),
      max: round(latencies.at(-1) ?? NaN, 3),
      samples: latencies.length,
    },
    serverCores: round(serverCpu / windowS, 3),
    serverCoreBusy: round((core1.busy - core0.busy) / Math.max(1, core1.total - core0.total), 3),
    serverDelivered,
    loaderWindowS: round(loaderWindowS, 3),
    clientCountRatio: round(
      (delivered / loaderWindowS) / Math.max(1e-9, serverDelivered / windowS),
      3,
    ),
    cpuUsPerDelivery: round(serverCpu * 1e6 / Math.max(1, serverDelivered), 3),
    cpuUsPerClientDelivery: round(
      serverCpu * 1e6 / Math.max(1, delivered * windowS / loaderWindowS),
      3,
    ),
    ...(target.server !== "parley" ? {} : {
      framesOutPerS: Math.round(frames / windowS),
      eventsPerFrame: round(serverDelivered / Math.max(1, frames), 2),
    }),
    ...(target.store !== "sqlite" ? {} : {
      storeShare: round((metrics1.storeWriteS - metrics0.storeWriteS) / windowS, 4),
      storeBatchesPerS: round((metrics1.storeBatches - metrics0.storeBatches) / windowS, 1),
    }),
    loaderCores: round((loaderCpu1 - loaderCpu0) / windowS, 3),
    loaderUsPerDelivery: round((loaderCpu1 - loaderCpu0) * 1e6 / Math.max(1, delivered), 3),
    serverRssMiB: round(serverRssMiB, 1),
    closes,
    resends: reports.reduce((n, r) => n + r.resends, 0),
    maxDuePerSender: Math.max(...reports.map((r) => r.maxDuePerSender)),
    backloggedSenders: reports.reduce((n, r) => n + r.backloggedSenders, 0),
    ...(target.server !== "parley" ? {} : {
      stored: metrics1.stored - metrics0.stored,
      overloaded: metrics1.overloaded - metrics0.overloaded,
      rateLimited: metrics1.rateLimited - metrics0.rateLimited,
      slowConsumerCloses: metrics1.slowConsumerCloses - metrics0.slowConsumerCloses,
    }),
    loadavg: loadavg(),
  };
  return { result, up0, up1 };
}

/**
 * Measures two targets in interleaved slices: both servers run at once (both pinned to the
 * server core, with their clients connected), and only one has its senders running at a time.
 * After a warm-up slice each, `pairs` pairs of short windows follow, which of a pair goes first
 * alternating (A B, B A, A B, …), each window after a short warm-up and with a pause for the
 * messages in flight to drain between windows. A drift in the machine's speed, which moves single
 * runs here by ±15% over tens of seconds, then falls on both targets alike within each pair.
 * Each window is one {@link LoadResult}, its `run` the pair's number.
 */
export async function measureInterleaved(
  scenario: LoadScenario,
  a: Target,
  b: Target,
  pairs: number,
  options: Options,
  log: (result: LoadResult) => void,
): Promise<LoadResult[]> {
  const sessions: Session[] = [];
  try {
    // One at a time: two connection storms at once would only slow each other.
    for (const target of [a, b]) sessions.push(await openSession(scenario, target, options));
    const [first, second] = sessions as [Session, Session];
    const slice = SLICE;
    const drain = () => sleep(SLICE_DRAIN_MS);
    for (const session of sessions) {
      await measureWindow(session, 0, slice.warmupMs, slice.windowMs);
      await drain();
    }
    const results: LoadResult[] = [];
    for (let pair = 1; pair <= pairs; pair++) {
      for (const session of runOrder([first, second], pair, true)) {
        const { result } = await measureWindow(session, pair, slice.warmupMs, slice.windowMs);
        results.push(result);
        log(result);
        await drain();
      }
    }
    return results;
  } finally {
    for (const session of sessions) await closeSession(session);
  }
}

/** A server's counters that a window reads at both ends (see {@link scrape}). */
export interface ServerCounters {
  framesOut: number;
  eventsOut: number;
  storeWriteS: number;
  storeBatches: number;
  stored: number;
  overloaded: number;
  rateLimited: number;
  slowConsumerCloses: number;
}

/**
 * A server's counters: Parley's from `GET /metrics` (see {@link parseMetrics}), the baseline's
 * from `GET /count` (frames written; one event each, and nothing else counted).
 */
async function scrape(target: Target, port: number): Promise<ServerCounters> {
  if (target.server !== "parley") {
    const sends = Number(await fetch(`http://127.0.0.1:${port}/count`).then((r) => r.text()));
    return {
      framesOut: sends,
      eventsOut: sends,
      storeWriteS: 0,
      storeBatches: 0,
      stored: 0,
      overloaded: 0,
      rateLimited: 0,
      slowConsumerCloses: 0,
    };
  }
  return parseMetrics(await fetch(`http://127.0.0.1:${port}/metrics`).then((r) => r.text()));
}

/**
 * Reads the counters a window needs from Parley's Prometheus text: a family's samples summed, or
 * only the sample with one label (`code="overloaded"`); 0 for a family or sample not (yet) there.
 */
export function parseMetrics(text: string): ServerCounters {
  const lines = text.split("\n");
  const value = (name: string, label?: string) =>
    lines.filter((line) =>
      label === undefined
        ? line.startsWith(`${name} `) || line.startsWith(`${name}{`)
        : line.startsWith(`${name}{`) && line.slice(0, line.indexOf("}")).includes(label)
    ).reduce((sum, line) => sum + Number(line.slice(line.lastIndexOf(" ") + 1)), 0);
  return {
    framesOut: value("parley_frames_out_total"),
    eventsOut: value("parley_batch_events_sum"),
    storeWriteS: value("parley_store_write_seconds_total"),
    storeBatches: value("parley_store_write_batches_total"),
    stored: value("parley_messages_stored_total"),
    overloaded: value("parley_errors_total", 'code="overloaded"'),
    rateLimited: value("parley_rate_limited_total"),
    slowConsumerCloses: value("parley_connections_closed_total", 'code="4008"'),
  };
}
