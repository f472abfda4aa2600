/**
 * Tests for `mod.ts`: every metric moves and shows in the exposition text under its name and
 * labels, instances are independent, and the text parses as the Prometheus text format.
 */
import assert from "node:assert/strict";
import { Metrics } from "./mod.ts";

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

interface Family {
  help: string;
  type: string;
  samples: Sample[];
}

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const SAMPLE_LINE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/;
const LABEL_PAIR = /^([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\["\\n])*)"(?:,|$)/;
const SUFFIXES: Record<string, readonly string[]> = {
  counter: [""],
  gauge: [""],
  histogram: ["_bucket", "_sum", "_count"],
};

/**
 * Parses Prometheus text format 0.0.4 strictly: each family has `# HELP` then `# TYPE` before
 * its samples, sample names belong to the family just declared, labels are well formed and
 * values are numbers. Throws on the first line that breaks a rule.
 */
function parseExposition(text: string): Map<string, Family> {
  assert.ok(text.endsWith("\n"), "exposition must end with a newline");
  const families = new Map<string, Family>();
  let current: { name: string; family: Family } | undefined;
  let pendingHelp: { name: string; help: string } | undefined;
  for (const line of text.split("\n")) {
    if (line === "") continue;
    const help = /^# HELP (\S+) (.*)$/.exec(line);
    if (help) {
      assert.match(help[1]!, METRIC_NAME);
      assert.ok(!families.has(help[1]!), `family ${help[1]} declared twice`);
      pendingHelp = { name: help[1]!, help: help[2]! };
      current = undefined;
      continue;
    }
    const type = /^# TYPE (\S+) (counter|gauge|histogram|summary|untyped)$/.exec(line);
    if (type) {
      assert.equal(type[1], pendingHelp?.name, `# TYPE ${type[1]} must follow its # HELP`);
      const family = { help: pendingHelp!.help, type: type[2]!, samples: [] };
      families.set(type[1]!, family);
      current = { name: type[1]!, family };
      pendingHelp = undefined;
      continue;
    }
    assert.ok(!line.startsWith("#"), `unexpected comment line: ${line}`);
    assert.ok(current, `sample before any # TYPE: ${line}`);
    const match = SAMPLE_LINE.exec(line);
    assert.ok(match, `malformed sample line: ${line}`);
    const [, name, labelText = "", valueText] = match;
    const suffix = name!.slice(current.name.length);
    assert.ok(
      name!.startsWith(current.name) && SUFFIXES[current.family.type]!.includes(suffix),
      `sample ${name} does not belong to family ${current.name}`,
    );
    const labels: Record<string, string> = {};
    let rest = labelText;
    while (rest !== "") {
      const pair = LABEL_PAIR.exec(rest);
      assert.ok(pair, `malformed labels in: ${line}`);
      labels[pair[1]!] = pair[2]!;
      rest = rest.slice(pair[0].length);
    }
    const value = valueText === "+Inf" ? Infinity : Number(valueText);
    assert.ok(!Number.isNaN(value), `value is not a number: ${line}`);
    current.family.samples.push({ name: name!, labels, value });
  }
  return families;
}

/** Returns the value of the one sample named `name` whose labels include `labels`. */
function valueOf(
  families: Map<string, Family>,
  name: string,
  labels: Record<string, string> = {},
): number {
  const found = [...families.values()].flatMap((f) => f.samples).filter((s) =>
    s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v)
  );
  assert.equal(found.length, 1, `expected one sample ${name}${JSON.stringify(labels)}`);
  return found[0]!.value;
}

Deno.test("parseExposition() rejects text that breaks the format", () => {
  const bad = [
    "parley_x 1\n", // sample before # TYPE
    "# TYPE parley_x counter\nparley_x 1\n", // # TYPE without # HELP
    "# HELP parley_x h\n# TYPE parley_x counter\nparley_y 1\n", // foreign sample
    "# HELP parley_x h\n# TYPE parley_x counter\nparley_x{a=b} 1\n", // unquoted label
    "# HELP parley_x h\n# TYPE parley_x counter\nparley_x one\n", // not a number
    "# HELP parley_x h\n# TYPE parley_x counter\nparley_x 1", // no final newline
  ];
  for (const text of bad) assert.throws(() => parseExposition(text), JSON.stringify(text));
  const good = '# HELP parley_x h\n# TYPE parley_x counter\nparley_x{a="b\\"c"} 1\n';
  assert.equal(parseExposition(good).get("parley_x")!.samples[0]!.labels.a, 'b\\"c');
});

async function scrape(metrics: Metrics): Promise<Map<string, Family>> {
  return parseExposition(await metrics.text());
}

const EXPECTED_FAMILIES: Record<string, string> = {
  parley_connections: "gauge",
  parley_connections_opened_total: "counter",
  parley_connections_closed_total: "counter",
  parley_frames_in_total: "counter",
  parley_messages_stored_total: "counter",
  parley_deliveries_total: "counter",
  parley_frames_out_total: "counter",
  parley_batched_frames_total: "counter",
  parley_batch_events: "histogram",
  parley_slow_consumer_disconnects_total: "counter",
  parley_errors_total: "counter",
  parley_rate_limited_total: "counter",
  parley_hub_queue_depth: "gauge",
  parley_outbox_bytes: "histogram",
  parley_store_append_seconds: "histogram",
  parley_store_write_batches_total: "counter",
  parley_store_write_seconds_total: "counter",
  parley_fanout_seconds: "histogram",
  parley_process_resident_memory_bytes: "gauge",
  parley_process_heap_used_bytes: "gauge",
  parley_process_heap_total_bytes: "gauge",
  parley_process_external_memory_bytes: "gauge",
  parley_build_info: "gauge",
};

Deno.test("Metrics.text() declares every parley_* family with # HELP and # TYPE", async () => {
  const families = await scrape(new Metrics({ version: "0.1.0" }));
  for (const [name, type] of Object.entries(EXPECTED_FAMILIES)) {
    const family = families.get(name);
    assert.ok(family, `missing family ${name}`);
    assert.equal(family.type, type, name);
    assert.ok(family.help.length > 0, `${name} has no help text`);
  }
  assert.deepEqual([...families.keys()].sort(), Object.keys(EXPECTED_FAMILIES).sort());
});

Deno.test("Metrics.text() exports every labelled series at 0 before any event", async () => {
  const families = await scrape(new Metrics({ version: "0.1.0" }));
  assert.equal(valueOf(families, "parley_connections", { protocol: "parley.v1" }), 0);
  assert.equal(valueOf(families, "parley_connections", { protocol: "plain" }), 0);
  assert.equal(valueOf(families, "parley_frames_in_total", { type: "legacy" }), 0);
  assert.equal(valueOf(families, "parley_frames_in_total", { type: "invalid" }), 0);
  assert.equal(valueOf(families, "parley_errors_total", { code: "internal" }), 0);
  assert.equal(valueOf(families, "parley_connections_closed_total", { code: "other" }), 0);
  assert.equal(valueOf(families, "parley_deliveries_total"), 0);
  assert.equal(valueOf(families, "parley_hub_queue_depth"), 0);
});

Deno.test("Metrics counts connections by protocol and closes by code", async () => {
  const metrics = new Metrics({ version: "0.1.0" });
  metrics.connectionOpened("parley.v1");
  metrics.connectionOpened("parley.v1");
  metrics.connectionOpened("plain");
  metrics.connectionClosed("parley.v1", 4008);
  metrics.connectionClosed("plain", 3999);
  const families = await scrape(metrics);
  assert.equal(valueOf(families, "parley_connections", { protocol: "parley.v1" }), 1);
  assert.equal(valueOf(families, "parley_connections", { protocol: "plain" }), 0);
  assert.equal(valueOf(families, "parley_connections_opened_total"), 3);
  assert.equal(valueOf(families, "parley_connections_closed_total", { code: "4008" }), 1);
  assert.equal(valueOf(families, "parley_connections_closed_total", { code: "other" }), 1);
  assert.equal(valueOf(families, "parley_connections_closed_total", { code: "1000" }), 0);
  const codes = families.get("parley_connections_closed_total")!.samples.map((s) => s.labels.code);
  assert.ok(!codes.includes("3999"), "an unlisted close code must not create a series");
});

Deno.test("Metrics counts inbound frames, stored messages, errors and rate limits", async () => {
  const metrics = new Metrics({ version: "0.1.0" });
  metrics.frameIn("message");
  metrics.frameIn("message");
  metrics.frameIn("invalid");
  metrics.messageStored("room");
  metrics.messageStored("direct");
  metrics.messageStored("direct");
  metrics.error("rate_limited");
  metrics.rateLimited();
  metrics.rateLimited();
  metrics.slowConsumerDisconnect();
  const families = await scrape(metrics);
  assert.equal(valueOf(families, "parley_frames_in_total", { type: "message" }), 2);
  assert.equal(valueOf(families, "parley_frames_in_total", { type: "invalid" }), 1);
  assert.equal(valueOf(families, "parley_frames_in_total", { type: "join" }), 0);
  assert.equal(valueOf(families, "parley_messages_stored_total", { kind: "room" }), 1);
  assert.equal(valueOf(families, "parley_messages_stored_total", { kind: "direct" }), 2);
  assert.equal(valueOf(families, "parley_errors_total", { code: "rate_limited" }), 1);
  assert.equal(valueOf(families, "parley_errors_total", { code: "invalid_json" }), 0);
  assert.equal(valueOf(families, "parley_rate_limited_total"), 2);
  assert.equal(valueOf(families, "parley_slow_consumer_disconnects_total"), 1);
});

Deno.test("Metrics counts deliveries in batches and ignores non-positive counts", async () => {
  const metrics = new Metrics({ version: "0.1.0" });
  metrics.addDeliveries(1);
  metrics.addDeliveries(1000);
  metrics.addDeliveries(0);
  metrics.addDeliveries(-5);
  metrics.addDeliveries(NaN);
  assert.equal(valueOf(await scrape(metrics), "parley_deliveries_total"), 1001);
  // Counters keep counting across scrapes: collect copies totals, it does not drain them.
  metrics.addDeliveries(9);
  assert.equal(valueOf(await scrape(metrics), "parley_deliveries_total"), 1010);
});

Deno.test("Metrics.frameOut() counts frames, batched frames and events per frame", async () => {
  const metrics = new Metrics({ version: "0.1.0" });
  metrics.frameOut();
  metrics.frameOut(1);
  metrics.frameOut(3);
  metrics.frameOut(100);
  const families = await scrape(metrics);
  assert.equal(valueOf(families, "parley_frames_out_total"), 4);
  assert.equal(valueOf(families, "parley_batched_frames_total"), 2);
  const bucket = (le: string) => valueOf(families, "parley_batch_events_bucket", { le });
  assert.equal(bucket("1"), 2);
  assert.equal(bucket("2"), 2);
  assert.equal(bucket("4"), 3);
  assert.equal(bucket("64"), 3);
  assert.equal(bucket("+Inf"), 4);
  assert.equal(valueOf(families, "parley_batch_events_sum"), 105);
  assert.equal(valueOf(families, "parley_batch_events_count"), 4);
});

Deno.test("Metrics histograms use the documented buckets and cumulative counts", async () => {
  const metrics = new Metrics({ version: "0.1.0" });
  metrics.observeOutboxBytes(256);
  metrics.observeOutboxBytes(257);
  metrics.observeOutboxBytes(5 * 1024 * 1024);
  metrics.observeStoreAppend(0.00004);
  metrics.observeFanout(0.002);
  metrics.observeFanout(NaN);
  const families = await scrape(metrics);

  const outbox = families.get("parley_outbox_bytes")!.samples.filter((s) =>
    s.name === "parley_outbox_bytes_bucket"
  );
  assert.deepEqual(
    outbox.map((s) => s.labels.le),
    ["256", "1024", "4096", "16384", "65536", "262144", "1048576", "4194304", "+Inf"],
  );
  assert.deepEqual(outbox.map((s) => s.value), [1, 2, 2, 2, 2, 2, 2, 2, 3]);
  assert.equal(valueOf(families, "parley_outbox_bytes_sum"), 256 + 257 + 5 * 1024 * 1024);

  assert.equal(valueOf(families, "parley_store_append_seconds_bucket", { le: "0.000025" }), 0);
  assert.equal(valueOf(families, "parley_store_append_seconds_bucket", { le: "0.00005" }), 1);
  assert.equal(valueOf(families, "parley_store_append_seconds_count"), 1);
  assert.equal(valueOf(families, "parley_fanout_seconds_bucket", { le: "0.001" }), 0);
  assert.equal(valueOf(families, "parley_fanout_seconds_bucket", { le: "0.0025" }), 1);
  assert.equal(valueOf(families, "parley_fanout_seconds_count"), 1, "NaN is not observed");
  for (const name of ["parley_store_append_seconds", "parley_fanout_seconds"]) {
    const bounds = families.get(name)!.samples
      .filter((s) => s.name === `${name}_bucket` && s.labels.le !== "+Inf")
      .map((s) => Number(s.labels.le));
    assert.ok(bounds[0]! < 0.001, `${name} needs sub-millisecond buckets`);
    assert.ok(bounds.every((b, i) => i === 0 || b > bounds[i - 1]!), `${name} bounds increase`);
  }
});

Deno.test("Metrics reads the hub queue depth at scrape time", async () => {
  let depth = 3;
  const metrics = new Metrics({ version: "0.1.0", queueDepth: () => depth });
  assert.equal(valueOf(await scrape(metrics), "parley_hub_queue_depth"), 3);
  depth = 42;
  assert.equal(valueOf(await scrape(metrics), "parley_hub_queue_depth"), 42);
});

Deno.test("Metrics reads the store's write batches at scrape time, 0 without a reader", async () => {
  const none = await scrape(new Metrics({ version: "0.1.0" }));
  assert.equal(valueOf(none, "parley_store_write_batches_total"), 0);
  assert.equal(valueOf(none, "parley_store_write_seconds_total"), 0);
  const stats = { batches: 7, seconds: 0.25 };
  const metrics = new Metrics({ version: "0.1.0", storeWrites: () => stats });
  let families = await scrape(metrics);
  assert.equal(valueOf(families, "parley_store_write_batches_total"), 7);
  assert.equal(valueOf(families, "parley_store_write_seconds_total"), 0.25);
  stats.batches = 9;
  stats.seconds = 0.5;
  families = await scrape(metrics);
  assert.equal(valueOf(families, "parley_store_write_batches_total"), 9);
  assert.equal(valueOf(families, "parley_store_write_seconds_total"), 0.5);
});

Deno.test("Metrics reports process memory from Deno.memoryUsage()", async () => {
  const families = await scrape(new Metrics({ version: "0.1.0" }));
  assert.ok(valueOf(families, "parley_process_resident_memory_bytes") > 0);
  assert.ok(valueOf(families, "parley_process_heap_used_bytes") > 0);
  // Committed heap holds the heap in use; RSS holds the committed heap.
  assert.ok(
    valueOf(families, "parley_process_heap_total_bytes") >=
      valueOf(families, "parley_process_heap_used_bytes"),
  );
  assert.ok(
    valueOf(families, "parley_process_resident_memory_bytes") >=
      valueOf(families, "parley_process_heap_total_bytes"),
  );
  assert.ok(valueOf(families, "parley_process_external_memory_bytes") > 0);
});

Deno.test("Metrics exports build_info with the version and runtime versions", async () => {
  const families = await scrape(new Metrics({ version: "1.2.3-test" }));
  const [info, ...others] = families.get("parley_build_info")!.samples;
  assert.equal(others.length, 0);
  assert.deepEqual(info, {
    name: "parley_build_info",
    labels: {
      version: "1.2.3-test",
      deno: Deno.version.deno,
      typescript: Deno.version.typescript,
      v8: Deno.version.v8,
    },
    value: 1,
  });
});

Deno.test("Two Metrics instances have separate registries and values", async () => {
  const a = new Metrics({ version: "a" });
  const b = new Metrics({ version: "b" });
  assert.notEqual(a.registry, b.registry);
  a.addDeliveries(5);
  a.connectionOpened("plain");
  a.observeFanout(0.001);
  const [fa, fb] = [await scrape(a), await scrape(b)];
  assert.equal(valueOf(fa, "parley_deliveries_total"), 5);
  assert.equal(valueOf(fb, "parley_deliveries_total"), 0);
  assert.equal(valueOf(fb, "parley_connections", { protocol: "plain" }), 0);
  assert.equal(valueOf(fb, "parley_fanout_seconds_count"), 0);
  assert.equal(fb.get("parley_build_info")!.samples[0]!.labels.version, "b");
});

Deno.test("Metrics leaves prom-client's global registry empty", async () => {
  const { register } = await import("prom-client");
  new Metrics({ version: "0.1.0" });
  const names = register.getMetricsAsArray().map((m) => m.name);
  assert.deepEqual(names.filter((n) => n.startsWith("parley_")), []);
});

Deno.test("Metrics.contentType is the Prometheus text format 0.0.4", () => {
  const metrics = new Metrics({ version: "0.1.0" });
  assert.equal(metrics.contentType, "text/plain; version=0.0.4; charset=utf-8");
});

Deno.test("Metrics.registry.getMetricsAsJSON() includes the histograms", async () => {
  const metrics = new Metrics({ version: "0.1.0" });
  metrics.frameOut(2);
  const json = await metrics.registry.getMetricsAsJSON();
  const batch = json.find((m) => m.name === "parley_batch_events");
  assert.ok(batch);
  const count = batch.values.find((v) =>
    "metricName" in v && v.metricName === "parley_batch_events_count"
  );
  assert.equal(count?.value, 1);
});
