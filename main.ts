/**
 * Parley's composition root and command line.
 *
 * config → logging → store and broker → hub → chat → HTTP → `Deno.serve`. {@link startParley}
 * builds a running server from a {@link Config} (tests call it with port 0); the command line,
 * signals and logging set-up run only under `import.meta.main`.
 *
 * Shutdown order (SIGINT/SIGTERM, or {@link Parley.shutdown}): refuse new connections, let
 * in-flight appends settle, close the hub's queue and let it drain, close every client with 1001,
 * wait for the sockets (the close watchdog bounds it), then stop the HTTP server, the broker and
 * the store.
 */
import {
  ansiColorFormatter,
  configure,
  getConsoleSink,
  getLogger,
  jsonLinesFormatter,
} from "@logtape/logtape";
import denoJson from "./deno.json" with { type: "json" };
import { createVerifier, type Verifier } from "./auth/mod.ts";
import { type Broker, openBroker } from "./backends/broker/mod.ts";
import { Chat, type ChatObserver } from "./chat.ts";
import { type Client, CLOSE_LINGER_MS, CLOSE_WATCHDOG_MS } from "./client.ts";
import { Flusher } from "./delivery/flush.ts";
import { type Config, parseConfig, summarize } from "./config/mod.ts";
import { Hub } from "./hub.ts";
import { Close, FrameParser } from "./message.ts";
import { Metrics } from "./metrics/mod.ts";
import { openPresence, type Presence } from "./backends/presence/mod.ts";
import { PresenceAnnouncer } from "./backends/presence/announcer.ts";
import { RateLimiter } from "./auth/rate_limit.ts";
import { ParleyHttp } from "./server.ts";
import { type MessageStore, openStore } from "./backends/store/mod.ts";
import { tokenCommand } from "./auth/token.ts";

/** The server's version, from deno.json. */
export const VERSION: string = denoJson.version;
/** Longest wait for in-flight appends at shutdown, in milliseconds. */
export const DRAIN_APPENDS_MS = 1_000;
/** Longest wait for sockets to close at shutdown; a little over the close watchdog. */
export const DRAIN_SOCKETS_MS = CLOSE_LINGER_MS + CLOSE_WATCHDOG_MS + 500;

const log = getLogger(["parley", "server"]);

/** A running Parley server. */
export interface Parley {
  /** `http://host:port/`, with the port actually bound. */
  readonly url: URL;
  readonly hub: Hub;
  readonly http: ParleyHttp;
  readonly chat: Chat;
  readonly store: MessageStore;
  readonly broker: Broker;
  readonly presence: Presence;
  readonly metrics: Metrics;
  /** Resolves when the server has fully stopped. */
  readonly finished: Promise<void>;
  /** Stops gracefully (see the module doc); idempotent. */
  shutdown(): Promise<void>;
}

/** Knobs for tests that need to provoke overload; production code passes none. */
export interface StartOptions {
  /** Capacity of the hub's event queue (default `HUB_QUEUE_CAPACITY`). */
  hubQueueCapacity?: number;
  /** The hub starts applying events only once this resolves. */
  holdHub?: Promise<void>;
  /** Outbox bytes past which senders are told `overloaded` (default `EGRESS_PRESSURE_BYTES`). */
  egressPressureBytes?: number;
}

/** The pluggable backends, chosen by URL. */
interface Backends {
  store: MessageStore;
  broker: Broker;
  presence: Presence;
}

/**
 * Starts a server from a configuration, in named steps: open the backends, build the delivery
 * path (hub, chat, HTTP) with its observers, listen, and return the running server with its
 * shutdown sequence.
 */
export async function startParley(config: Config, options: StartOptions = {}): Promise<Parley> {
  const backends = await openBackends(config);
  const { store, broker, presence } = backends;
  let verifier: Verifier | undefined;
  try {
    verifier = await openVerifier(config);
  } catch (error) {
    await closeBackends(backends);
    throw error;
  }
  const metrics = new Metrics({
    version: VERSION,
    queueDepth: () => hub.queueDepth,
    ...(store.writeStats === undefined ? {} : { storeWrites: () => store.writeStats!() }),
  });
  const announcer = new PresenceAnnouncer(presence, broker);
  const hub = new Hub({
    defaultRoom: config.defaultRoom,
    presenceEventsMax: config.presenceEventsMax,
    ...(options.hubQueueCapacity === undefined ? {} : { queueCapacity: options.hubQueueCapacity }),
    onFanout: (recipients, started) => {
      metrics.addDeliveries(recipients);
      metrics.observeFanout((performance.now() - started) / 1000);
    },
    onPresence: announcer.changed,
  });
  await broker.subscribe(hub.deliver, () => {
    // Events published while this node's subscription was down never reached it: its clients
    // reconnect and resume from the store to close the gap.
    log.warning("Broker reconnected; closing clients so they resume", {});
    hub.closeAll(Close.resync);
  });
  const running = (options.holdHub ?? Promise.resolve()).then(() => hub.run());
  const scheduler = new Flusher(
    options.egressPressureBytes === undefined ? {} : { pressureBytes: options.egressPressureBytes },
  );
  const limiter = new RateLimiter({
    rate: config.rate,
    burst: config.burst,
    strikes: config.rateLimitStrikes,
  });
  const chat = new Chat({
    hub,
    store,
    broker,
    presence,
    parser: new FrameParser({ maxContentChars: config.maxContentChars }),
    defaultRoom: config.defaultRoom,
    openMode: verifier === undefined,
    ...(verifier === undefined ? {} : { verifier }),
    outboxMessages: config.outboxMessages,
    admit: (client) => limiter.admit(client, !scheduler.overloaded),
    overloaded: () => scheduler.overloaded,
    observer: chatObserver(metrics),
  });
  const http = new ParleyHttp({
    hub,
    chat,
    store,
    broker,
    presence,
    scheduler,
    metrics,
    flushObserver: metrics,
    ...(verifier === undefined ? {} : { verifier }),
    options: {
      maxFrameBytes: config.maxFrameBytes,
      outboxMessages: config.outboxMessages,
      outboxBytes: config.outboxBytes,
      idleTimeout: config.idleTimeout,
      allowedOrigins: config.allowedOrigin,
      maxConnections: config.maxConnections,
      maxConnectionsPerIp: config.maxConnectionsPerIp,
      maxContentChars: config.maxContentChars,
      ...(config.apiKey === undefined ? {} : { apiKey: config.apiKey }),
    },
  });
  const { server, url } = await listen(config, http.handle);

  let stopping: Promise<void> | undefined;
  const shutdown = (): Promise<void> => {
    stopping ??= (async () => {
      log.info("Shutting down", { connections: http.connections });
      http.drain();
      await waitFor(() => chat.pendingAppends === 0, DRAIN_APPENDS_MS);
      hub.close();
      await running;
      hub.closeAll(Close.goingAway);
      await waitFor(() => http.connections === 0, DRAIN_SOCKETS_MS);
      scheduler.close();
      await server.shutdown();
      // Say goodbye so other nodes announce this node's users as gone, then release backends.
      await announcer.goodbye(hub.localPresence());
      await closeBackends(backends);
      log.info("Stopped");
    })();
    return stopping;
  };
  const finished = server.finished.then(() => stopping).then(() => {});
  return { url, hub, http, chat, store, broker, presence, metrics, finished, shutdown };
}

/** Opens the store, the broker and presence by their URLs; on a failure closes what opened. */
async function openBackends(config: Config): Promise<Backends> {
  const store = await openStore(config.store, {
    historyLimit: config.historyLimit,
    historyDays: config.historyDays,
    broker: config.broker,
  });
  let broker: Broker | undefined;
  try {
    broker = await openBroker(config.broker);
    const presence = await openPresence(config.redis ?? "memory:", {
      ttlSeconds: config.presenceTtl,
    });
    return { store, broker, presence };
  } catch (error) {
    await broker?.close();
    await store.close();
    throw error;
  }
}

/** Releases the backends, presence first (its goodbye may still publish), the store last. */
async function closeBackends({ store, broker, presence }: Backends): Promise<void> {
  await presence.close();
  await broker.close();
  await store.close();
}

/** The token verifier in token mode; undefined in open mode (no secret, no key set). */
async function openVerifier(config: Config): Promise<Verifier | undefined> {
  if (config.jwtSecret === undefined && config.jwks === undefined) return undefined;
  return await createVerifier({
    ...(config.jwtSecret === undefined ? {} : { secret: config.jwtSecret }),
    ...(config.jwks === undefined ? {} : { jwksFile: config.jwks }),
    ...(config.jwtIssuer === undefined ? {} : { issuer: config.jwtIssuer }),
    ...(config.jwtAudience === undefined ? {} : { audience: config.jwtAudience }),
  });
}

/** What the chat layer reports, counted in the metrics. */
function chatObserver(metrics: Metrics): ChatObserver {
  const protocol = (client: Client) => client.batching ? "parley.v1" : "plain";
  return {
    opened: (client) => metrics.connectionOpened(protocol(client)),
    closed: (client, code) => metrics.connectionClosed(protocol(client), code),
    frameIn: (type) => metrics.frameIn(type as Parameters<Metrics["frameIn"]>[0]),
    error: (code) => metrics.error(code),
    stored: (message, seconds) => {
      metrics.messageStored(message.type === "message" ? "room" : "direct");
      metrics.observeStoreAppend(seconds);
    },
    rateLimited: () => metrics.rateLimited(),
  };
}

/** Serves `handler` where the configuration says (TLS when a certificate is set). */
async function listen(
  config: Config,
  handler: Deno.ServeHandler<Deno.NetAddr>,
): Promise<{ server: Deno.HttpServer<Deno.NetAddr>; url: URL }> {
  const tls = config.cert !== undefined && config.key !== undefined
    ? { cert: await Deno.readTextFile(config.cert), key: await Deno.readTextFile(config.key) }
    : {};
  const { promise: listening, resolve: onListen } = Promise.withResolvers<Deno.NetAddr>();
  const server = Deno.serve({
    hostname: config.host,
    port: config.port,
    ...tls,
    onListen,
    onError: (error) => {
      log.error("Request failed", { error: String(error) });
      return Response.json(
        { error: { code: "internal", message: "Cannot handle request: internal error" } },
        { status: 500 },
      );
    },
  }, handler);
  const addr = await listening;
  const scheme = config.cert === undefined ? "http" : "https";
  const host = addr.hostname.includes(":") ? `[${addr.hostname}]` : addr.hostname;
  return { server, url: new URL(`${scheme}://${host}:${addr.port}/`) };
}

/** Polls `done` every few milliseconds until it holds or `ms` pass. */
async function waitFor(done: () => boolean, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  while (!done() && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** Sets up LogTape for the process: JSON lines or pretty, at the configured level. */
export async function configureLogging(config: Pick<Config, "logLevel" | "logFormat">) {
  await configure({
    sinks: {
      console: getConsoleSink({
        formatter: config.logFormat === "json" ? jsonLinesFormatter : ansiColorFormatter,
      }),
    },
    loggers: [
      { category: ["parley"], lowestLevel: config.logLevel, sinks: ["console"] },
      { category: ["logtape", "meta"], lowestLevel: "warning", sinks: ["console"] },
    ],
  });
}

/** Runs the command line: `parley [options]`, `parley token …`, `--help`, `--version`. */
export async function main(args: string[]): Promise<number> {
  // `deno task start -- --port 9000` passes the `--` through.
  if (args[0] === "--") args = args.slice(1);
  if (args[0] === "token") {
    const { output, exitCode } = await tokenCommand(args.slice(1), (name) => Deno.env.get(name));
    (exitCode === 0 ? console.log : console.error)(output);
    return exitCode;
  }
  const result = parseConfig(args, (name) => Deno.env.get(name), {
    isTerminal: Deno.stdout.isTerminal(),
  });
  switch (result.kind) {
    case "help":
      console.log(result.text);
      return 0;
    case "version":
      // The runtime matters as much as our version: a compiled binary embeds its own.
      console.log(
        `${result.text} (deno ${Deno.version.deno}, v8 ${Deno.version.v8}, ` +
          `typescript ${Deno.version.typescript})`,
      );
      return 0;
    case "error":
      console.error(result.error);
      return result.exitCode;
    case "run":
      break;
  }
  const config = result.config;
  await configureLogging(config);
  let parley: Parley;
  try {
    parley = await startParley(config);
  } catch (error) {
    log.fatal("Cannot start", { error: String(error) });
    console.error(`parley: ${error instanceof Error ? error.message : String(error)}`);
    return 1;
  }
  log.info("Listening", { url: parley.url.href, config: summarize(config) });
  const ws = new URL("ws", parley.url);
  ws.protocol = parley.url.protocol === "https:" ? "wss:" : "ws:";
  console.log(`Parley ${VERSION} listening on ${parley.url.href} (WebSocket ${ws.href})`);
  const stop = () => {
    parley.shutdown().catch((error) => log.error("Shutdown failed", { error: String(error) }));
  };
  Deno.addSignalListener("SIGINT", stop);
  Deno.addSignalListener("SIGTERM", stop);
  await parley.finished;
  Deno.removeSignalListener("SIGINT", stop);
  Deno.removeSignalListener("SIGTERM", stop);
  return 0;
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
