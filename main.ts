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
import { createVerifier, type Verifier } from "./auth.ts";
import { type Broker, openBroker } from "./broker.ts";
import { Chat } from "./chat.ts";
import { CLOSE_WATCHDOG_MS, MacrotaskFlusher } from "./client.ts";
import { type Config, parseConfig, summarize } from "./config.ts";
import { Hub } from "./hub.ts";
import { Close, FrameParser } from "./message.ts";
import { Metrics } from "./metrics.ts";
import { RateLimiter } from "./rate_limit.ts";
import { ParleyHttp } from "./server.ts";
import { type MessageStore, openStore } from "./store.ts";
import { tokenCommand } from "./token.ts";

/** The server's version, from deno.json. */
export const VERSION: string = denoJson.version;
/** Longest wait for in-flight appends at shutdown, in milliseconds. */
export const DRAIN_APPENDS_MS = 1_000;
/** Longest wait for sockets to close at shutdown; a little over the close watchdog. */
export const DRAIN_SOCKETS_MS = CLOSE_WATCHDOG_MS + 500;

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
}

/** Starts a server from a configuration. */
export async function startParley(config: Config, options: StartOptions = {}): Promise<Parley> {
  const store = await openStore(config.store, {
    historyLimit: config.historyLimit,
    historyDays: config.historyDays,
  });
  let broker: Broker;
  try {
    broker = await openBroker(config.broker);
  } catch (error) {
    await store.close();
    throw error;
  }
  let verifier: Verifier | undefined;
  if (config.jwtSecret !== undefined || config.jwks !== undefined) {
    verifier = await createVerifier({
      ...(config.jwtSecret === undefined ? {} : { secret: config.jwtSecret }),
      ...(config.jwks === undefined ? {} : { jwksFile: config.jwks }),
      ...(config.jwtIssuer === undefined ? {} : { issuer: config.jwtIssuer }),
      ...(config.jwtAudience === undefined ? {} : { audience: config.jwtAudience }),
    });
  }
  const hubRef: { hub?: Hub } = {};
  const metrics = new Metrics({ version: VERSION, queueDepth: () => hubRef.hub?.queueDepth ?? 0 });
  const hub = hubRef.hub = new Hub({
    defaultRoom: config.defaultRoom,
    presenceEventsMax: config.presenceEventsMax,
    ...(options.hubQueueCapacity === undefined ? {} : { queueCapacity: options.hubQueueCapacity }),
    onFanout: (recipients, started) => {
      metrics.addDeliveries(recipients);
      metrics.observeFanout((performance.now() - started) / 1000);
    },
  });
  await broker.subscribe(hub.deliver);
  const running = (options.holdHub ?? Promise.resolve()).then(() => hub.run());
  const limiter = new RateLimiter({
    rate: config.rate,
    burst: config.burst,
    strikes: config.rateLimitStrikes,
  });
  const chat = new Chat({
    hub,
    store,
    broker,
    parser: new FrameParser({ maxContentChars: config.maxContentChars }),
    defaultRoom: config.defaultRoom,
    openMode: verifier === undefined,
    outboxMessages: config.outboxMessages,
    admit: (client) => limiter.admit(client),
    observer: {
      opened: (client) => metrics.connectionOpened(client.batching ? "parley.v1" : "plain"),
      closed: (client, code) =>
        metrics.connectionClosed(client.batching ? "parley.v1" : "plain", code),
      frameIn: (type) => metrics.frameIn(type as Parameters<Metrics["frameIn"]>[0]),
      error: (code) => metrics.error(code),
      stored: (message, seconds) => {
        metrics.messageStored(message.type === "message" ? "room" : "direct");
        metrics.observeStoreAppend(seconds);
      },
      rateLimited: () => metrics.rateLimited(),
    },
  });
  const scheduler = new MacrotaskFlusher();
  const http = new ParleyHttp({
    hub,
    chat,
    store,
    broker,
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
  const tls = config.cert !== undefined && config.key !== undefined
    ? { cert: await Deno.readTextFile(config.cert), key: await Deno.readTextFile(config.key) }
    : {};
  const { promise: listening, resolve: onListen } = Promise.withResolvers<Deno.NetAddr>();
  const server = Deno.serve({
    hostname: config.host,
    port: config.port,
    ...tls,
    onListen: (addr) => onListen(addr as Deno.NetAddr),
    onError: (error) => {
      log.error("Request failed", { error: String(error) });
      return new Response("Internal error", { status: 500 });
    },
  }, http.handle);
  const addr = await listening;
  const scheme = config.cert === undefined ? "http" : "https";
  const host = addr.hostname.includes(":") ? `[${addr.hostname}]` : addr.hostname;
  const url = new URL(`${scheme}://${host}:${addr.port}/`);

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
      await broker.close();
      await store.close();
      log.info("Stopped");
    })();
    return stopping;
  };
  const finished = server.finished.then(() => stopping).then(() => {});
  return { url, hub, http, chat, store, broker, metrics, finished, shutdown };
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
    case "version":
      console.log(result.text);
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
