/**
 * Tests of the Go load generator (`bench/go/main.go`) as the harness drives it: built by
 * {@link buildGoLoader}, started as a {@link LoaderProc}, against real servers over real sockets.
 * They check what it counts, never how fast anything is.
 */
import assert from "node:assert/strict";
import type { LoaderReport, LoaderSpec } from "./loader.ts";
import { buildGoLoader, LoaderProc, REPORT_MS, startServer, stopServer } from "./proc.ts";
import { BASELINE, BUN, PARLEY_PLAIN, PARLEY_V1, type Target } from "./scenarios.ts";

/** Messages the closed-loop senders must have had answered before the window closes. */
const WANTED = 30;

/** Runs a closed-loop window of `senders` senders among `clients` clients against `target`. */
async function closedLoopWindow(
  target: Target,
  clients: number,
  senders: number,
): Promise<{ report: LoaderReport; protocols: Record<string, number> }> {
  const binary = await buildGoLoader();
  const server = await startServer(target, { parleyFlags: [] });
  let loader: LoaderProc | undefined;
  try {
    const spec: LoaderSpec = {
      id: 0,
      hostname: "127.0.0.1",
      port: server.port,
      ...(target.protocol === undefined ? {} : { protocol: target.protocol }),
      clients,
      offset: 0,
      senders,
      mode: "closed",
      rate: 0,
      sampleEvery: 1,
      contentChars: 80,
      waitWelcome: target.server === "parley",
      concurrency: 4,
      bufferBytes: 4096,
      bulkIntervalMs: 20,
    };
    loader = new LoaderProc(spec, undefined, binary);
    const connected = await loader.event("connected", REPORT_MS);
    assert.equal(connected.clients, clients);
    assert.equal(connected.failed, 0);
    await loader.command("mark");
    await loader.command("start");
    // Until enough round trips were counted; each peek waits for its answer.
    while ((await loader.ask("peek", "peeked")).delivered < WANTED * clients) {
      // Nothing to do but ask again.
    }
    await loader.ask("pause", "paused");
    const { report } = await loader.ask("report", "report");
    return { report, protocols: connected.protocols };
  } finally {
    if (loader !== undefined) {
      await loader.command("stop");
      await loader.proc.stop();
    }
    await stopServer(server);
  }
}

/** Checks a window's counts: every message sent reached every client, but those in flight. */
function assertCounted(report: LoaderReport, clients: number, senders: number) {
  assert.ok(report.sent >= WANTED, `sent ${report.sent}`);
  assert.ok(report.delivered <= report.sent * clients, `${report.delivered} delivered`);
  assert.ok(
    report.delivered >= (report.sent - senders) * clients,
    `${report.delivered} delivered of ${report.sent} sent to ${clients}`,
  );
  // Every client samples here: one latency per delivery, none negative.
  assert.equal(report.latencies.length, report.delivered);
  assert.ok(report.latencies.every((ms) => Number.isFinite(ms) && ms >= 0));
  assert.equal(report.open, clients);
  assert.deepEqual(report.closes, {});
  assert.ok(report.windowMs > 0);
}

Deno.test("The Go loader counts every message the bare baseline broadcasts to every client", async () => {
  const { report } = await closedLoopWindow(BASELINE, 5, 1);
  assertCounted(report, 5, 1);
});

Deno.test("The Go loader counts Parley's plain frames and waits for each client's welcome", async () => {
  const { report, protocols } = await closedLoopWindow(PARLEY_PLAIN, 5, 2);
  assert.deepEqual(protocols, { none: 5 });
  assertCounted(report, 5, 2);
});

Deno.test("The Go loader counts each event of Parley's parley.v1 batch frames", async () => {
  const { report, protocols } = await closedLoopWindow(PARLEY_V1, 6, 6);
  assert.deepEqual(protocols, { "parley.v1": 6 });
  assertCounted(report, 6, 6);
});

Deno.test("Bun's pub/sub peer broadcasts every message to every client, the sender included", async () => {
  const { report } = await closedLoopWindow(BUN, 5, 2);
  assertCounted(report, 5, 2);
});
