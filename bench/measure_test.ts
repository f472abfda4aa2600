/**
 * Tests of what a window reads from Parley's `/metrics`: summed families and single labelled
 * samples.
 */
import assert from "node:assert/strict";
import { parseMetrics } from "./measure.ts";

Deno.test("parseMetrics reads overloaded answers and 4008 closes by their labels", () => {
  const text = [
    "# HELP parley_errors_total Error frames sent to clients, by protocol error code.",
    "# TYPE parley_errors_total counter",
    'parley_errors_total{code="rate_limited"} 7',
    'parley_errors_total{code="overloaded"} 1234',
    'parley_connections_closed_total{code="1000"} 5',
    'parley_connections_closed_total{code="4008"} 2',
    'parley_messages_stored_total{kind="room"} 40',
    'parley_messages_stored_total{kind="direct"} 2',
    "parley_rate_limited_total 7",
    "parley_batch_events_sum 900",
    "parley_frames_out_total 300",
    "",
  ].join("\n");
  assert.deepEqual(parseMetrics(text), {
    framesOut: 300,
    eventsOut: 900,
    storeWriteS: 0,
    storeBatches: 0,
    stored: 42,
    overloaded: 1234,
    rateLimited: 7,
    slowConsumerCloses: 2,
  });
});
