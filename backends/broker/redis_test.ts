/**
 * Runs the shared broker contract (`_contract.ts`) against {@link RedisBroker} with two
 * brokers on one `redis-server`: two nodes. Then the outage behaviour: while Redis is down,
 * `publish` and `ping` reject; after it returns, the subscriber is back, delivery resumes and
 * the node is told it missed events (`onGap`).
 *
 * One `redis-server` serves the contract cases (started in `beforeAll`); each case gets its own
 * channel prefix. The outage case starts its own server.
 */
import assert from "node:assert/strict";
import { RedisServer } from "../../tests/helpers/redis_server.ts";
import { brokerContract } from "./_contract.ts";
import { type BrokerEvent, openBroker } from "./mod.ts";
import { RedisBroker } from "./redis.ts";

/** Longest wait for a reconnect or a delivery, in milliseconds. */
const RECOVERY_TIMEOUT_MS = 10_000;

let server: RedisServer | undefined;
let cases = 0;

Deno.test.beforeAll(async () => {
  server = await RedisServer.start();
});

Deno.test.afterAll(async () => {
  await server?.stop();
});

brokerContract("redis", async () => {
  if (server === undefined) throw new Error("redis-server not started");
  const prefix = `contract${++cases}:`;
  return {
    nodes: [
      await RedisBroker.open(server.url, { prefix }),
      await RedisBroker.open(server.url, { prefix }),
    ],
    cleanup: () => Promise.resolve(), // pub/sub leaves no keys behind
  };
});

/** Polls `check` until it resolves true, or fails after {@link RECOVERY_TIMEOUT_MS}. */
async function eventually(what: string, check: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + RECOVERY_TIMEOUT_MS;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`Timed out waiting until ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

Deno.test("RedisBroker rejects while Redis is down, then resubscribes and reports the gap", async () => {
  const flaky = await RedisServer.start();
  let gaps = 0;
  const broker = await RedisBroker.open(flaky.url);
  const received: BrokerEvent[] = [];
  try {
    await broker.subscribe((event) => {
      received.push(event);
    }, () => gaps++);
    await broker.publish({ type: "typing", room: "lobby", user: "before" });
    await eventually("the first event arrives", () => Promise.resolve(received.length === 1));

    await flaky.kill();
    await eventually("ping rejects", () => broker.ping().then(() => false, () => true));
    await assert.rejects(broker.publish({ type: "typing", room: "lobby", user: "during" }));

    await flaky.restart();
    await eventually("ping resolves", () => broker.ping().then(() => true, () => false));
    assert.equal(gaps, 1);
    // Resubscribed: an event published now reaches the listener again.
    await eventually("delivery resumes", async () => {
      await broker.publish({ type: "typing", room: "lobby", user: "after" });
      await new Promise((resolve) => setTimeout(resolve, 20));
      return received.some((e) => e.type === "typing" && e.user === "after");
    });
    assert.ok(received.every((e) => e.type === "typing" && e.user !== "during"));
  } finally {
    await broker.close();
    await flaky.stop();
  }
});

Deno.test("openBroker() opens a RedisBroker for a redis:// URL", async () => {
  if (server === undefined) throw new Error("redis-server not started");
  const broker = await openBroker(server.url);
  try {
    assert.ok(broker instanceof RedisBroker);
    await broker.ping();
  } finally {
    await broker.close();
  }
});
