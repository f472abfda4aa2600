/**
 * Runs the shared presence contract (`_contract.ts`) against {@link RedisPresence},
 * several nodes on one `redis-server`, then the Redis-only behaviour: a node swept while alive
 * restores its entries, the timers expire a crashed node on the real clock, and a restarted
 * Redis does not make a node report the others as expired.
 *
 * One `redis-server` serves the file (started in `beforeAll`); each case gets its own prefix.
 */
import assert from "node:assert/strict";
import { connectRedis, DEFAULT_REDIS_PREFIX, type RedisClient } from "../redis.ts";
import { RedisServer } from "../../tests/helpers/redis_server.ts";
import { removeKeys } from "../_testing.ts";
import { presenceContract } from "./_contract.ts";
import { openPresence } from "./mod.ts";
import { RedisPresence } from "./redis.ts";

/** Longest wait for a timer-driven expiry, in milliseconds. */
const EXPIRY_TIMEOUT_MS = 10_000;

let server: RedisServer | undefined;
let admin: RedisClient | undefined;
let cases = 0;

Deno.test.beforeAll(async () => {
  server = await RedisServer.start();
  admin = await connectRedis(server.url, "test-admin");
});

Deno.test.afterAll(async () => {
  await admin?.close();
  await server?.stop();
});

function url(): string {
  if (server === undefined) throw new Error("redis-server not started");
  return server.url;
}

/** Deletes every key under `prefix` through the file's admin connection. */
async function cleanUp(prefix: string): Promise<void> {
  if (admin === undefined) throw new Error("redis-server not started");
  await removeKeys(admin, prefix);
}

function redisNode(node: unknown): RedisPresence {
  assert.ok(node instanceof RedisPresence);
  return node;
}

presenceContract("redis", ({ ttlSeconds, now }) => {
  const prefix = `contract${++cases}:`;
  return Promise.resolve({
    open: (nodeId: string) =>
      RedisPresence.open({ url: url(), ttlSeconds, nodeId, prefix, now, timers: false }),
    crash: (node) => redisNode(node).abandon(),
    tick: async (node) => {
      await redisNode(node).heartbeat();
      await redisNode(node).sweep();
    },
    cleanup: () => cleanUp(prefix),
  });
}, { clustered: true });

Deno.test("RedisPresence restores a node's entries after others swept it alive", async () => {
  let t = Date.UTC(2025, 0, 1);
  const options = { url: url(), ttlSeconds: 30, prefix: "swept:", now: () => t, timers: false };
  const a = await RedisPresence.open({ ...options, nodeId: "a" });
  const b = await RedisPresence.open({ ...options, nodeId: "b" });
  try {
    const reports: string[] = [];
    b.onExpired((room, user) => reports.push(`${room}/${user}`));
    await a.join("lobby", "alice");
    t += 31_000; // a stalls past its ttl; b is alive
    await b.heartbeat();
    await b.sweep();
    assert.deepEqual(reports, ["lobby/alice"]);
    assert.deepEqual(await b.users("lobby"), []);
    // a wakes up: its next join finds it was swept and writes every local entry back.
    assert.equal(await a.join("games", "alice"), true);
    assert.deepEqual(await b.users("lobby"), ["alice"]);
    await a.join("lobby", "bob");
    t += 31_000;
    await a.heartbeat(); // a heartbeats again; b does not
    await a.sweep();
    assert.deepEqual(await a.users("lobby"), ["alice", "bob"]);
    assert.equal(await a.leave("lobby", "alice"), true);
  } finally {
    await a.close();
    await b.close();
    await cleanUp("swept:");
  }
});

Deno.test("RedisPresence timers expire a crashed node on the real clock", async () => {
  const options = { url: url(), ttlSeconds: 0.3, prefix: "timers:" };
  const a = await RedisPresence.open({ ...options, nodeId: "a" });
  const b = await RedisPresence.open({ ...options, nodeId: "b" });
  try {
    const expired = new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error("No expiry reported")), EXPIRY_TIMEOUT_MS);
      b.onExpired((room, user) => {
        clearTimeout(timer);
        resolve(`${room}/${user}`);
      });
    });
    await a.join("lobby", "alice");
    await b.join("lobby", "bob");
    await a.abandon();
    assert.equal(await expired, "lobby/alice");
    assert.deepEqual(await b.users("lobby"), ["bob"]);
  } finally {
    await a.close();
    await b.close();
    await cleanUp("timers:");
  }
});

Deno.test("RedisPresence does not expire live nodes after a Redis restart", async () => {
  let t = Date.UTC(2025, 0, 1);
  const flaky = await RedisServer.start({ appendonly: true });
  const options = { url: flaky.url, ttlSeconds: 30, now: () => t, timers: false };
  const a = await RedisPresence.open({ ...options, nodeId: "a" });
  const b = await RedisPresence.open({ ...options, nodeId: "b" });
  try {
    const reports: string[] = [];
    a.onExpired((room, user) => reports.push(`${room}/${user}`));
    await b.join("lobby", "bob");
    await flaky.kill();
    t += 60_000; // the outage outlasts the ttl: nobody heartbeats meanwhile
    await flaky.restart();
    let back = false;
    for (let i = 0; i < 400 && !back; i++) {
      back = await a.ping().then(() => true, () => false);
      if (!back) await new Promise((resolve) => setTimeout(resolve, 25));
    }
    assert.ok(back, "reconnected");
    await a.heartbeat();
    await a.sweep(); // within a's grace period: b is not declared dead yet
    assert.equal(reports.length, 0);
    for (let i = 0; i < 400; i++) {
      if (await b.ping().then(() => true, () => false)) break;
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
    await b.heartbeat();
    t += 31_000; // grace over; b heartbeated, so it is alive
    await a.heartbeat();
    await b.heartbeat();
    await a.sweep();
    assert.equal(reports.length, 0);
    assert.deepEqual(await a.users("lobby"), ["bob"]);
  } finally {
    await a.close();
    await b.close();
    await flaky.stop();
  }
});

Deno.test("RedisPresence takes back a leave that failed during a Redis outage", async () => {
  const flaky = await RedisServer.start({ appendonly: true });
  const options = { url: flaky.url, ttlSeconds: 30, timers: false };
  const a = await RedisPresence.open({ ...options, nodeId: "a" });
  const b = await RedisPresence.open({ ...options, nodeId: "b" });
  try {
    const reports: string[] = [];
    a.onExpired((room, user) => reports.push(`${room}/${user}`));
    await a.join("lobby", "gina");
    await a.join("lobby", "sam");
    await flaky.kill();
    await assert.rejects(a.leave("lobby", "gina"));
    await flaky.restart();
    // Both nodes must be back before either is asked anything.
    const up = (node: RedisPresence) => node.ping().then(() => true, () => false);
    for (let i = 0; i < 400; i++) {
      if (await up(a) && await up(b)) break;
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
    // The append-only file brought gina's entry back; a's next heartbeat takes it away.
    assert.deepEqual(await b.users("lobby"), ["gina", "sam"]);
    await a.heartbeat();
    assert.deepEqual(await b.users("lobby"), ["sam"]);
    assert.deepEqual(reports, ["lobby/gina"]);
    // In step again: the next heartbeat changes nothing.
    await a.heartbeat();
    assert.deepEqual(reports, ["lobby/gina"]);
    assert.deepEqual(await b.users("lobby"), ["sam"]);
  } finally {
    await a.close();
    await b.close();
    await flaky.stop();
  }
});

Deno.test("openPresence() opens a RedisPresence with the given ttl for a redis:// URL", async () => {
  const ttlSeconds = 45;
  const opened = Date.now();
  const presence = await openPresence(url(), { ttlSeconds });
  try {
    assert.ok(presence instanceof RedisPresence);
    const registered = Date.now();
    assert.equal(await presence.join("factory", "alice"), true);
    assert.deepEqual(await presence.users("factory"), ["alice"]);
    // The node's score is when its entries expire: its clock plus the ttl.
    const score = Number(
      await admin?.sendCommand([
        "ZSCORE",
        `${DEFAULT_REDIS_PREFIX}presence:nodes`,
        presence.nodeId,
      ]),
    );
    assert.ok(
      score >= opened + ttlSeconds * 1000 && score <= Date.now() + ttlSeconds * 1000,
      `expiry ${score - registered} ms after opening, expected about ${ttlSeconds * 1000}`,
    );
  } finally {
    await presence.close();
    await cleanUp(DEFAULT_REDIS_PREFIX);
  }
});
