/**
 * Runs the shared store contract (`_contract.ts`) against {@link RedisMessageStore}, then
 * the Redis-only guarantees: two nodes appending to one room get disjoint ids published in id
 * order, acknowledged appends survive a crash with `appendfsync always`, and an outage fails
 * fast and heals.
 *
 * One `redis-server` serves the whole file (started in `beforeAll`); each contract case gets its
 * own key prefix. Cases that kill a server start their own.
 */
import assert from "node:assert/strict";
import { connectRedis, eventsChannel, type RedisClient } from "../redis.ts";
import { RedisServer } from "../../tests/helpers/redis_server.ts";
import { DELIVERY_TIMEOUT_MS, removeKeys } from "../_testing.ts";
import { storeContract } from "./_contract.ts";
import type { BrokerEvent } from "../broker/mod.ts";
import { RedisBroker } from "../broker/redis.ts";
import type { ChatMessage } from "../../message.ts";
import { roomKey } from "../../message.ts";
import { type AppendResult, openStore } from "./mod.ts";
import { RedisMessageStore } from "./redis.ts";

/** Appends each node issues in the two-node ordering case. */
const APPENDS_PER_NODE = 300;

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

function shared(): { server: RedisServer; admin: RedisClient } {
  if (server === undefined || admin === undefined) throw new Error("redis-server not started");
  return { server, admin };
}

storeContract("redis", async (options) => {
  const { server, admin } = shared();
  const prefix = `contract${++cases}:`;
  const open = () => RedisMessageStore.open(server.url, { ...options, prefix });
  return {
    store: await open(),
    reopen: open,
    cleanup: () => removeKeys(admin, prefix),
  };
}, { durable: true });

/** Resolves with the first `count` events the listener receives, or rejects after a timeout. */
function collect(broker: RedisBroker, count: number): Promise<BrokerEvent[]> {
  const events: BrokerEvent[] = [];
  return new Promise((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`Received ${events.length} of ${count} events`)),
      DELIVERY_TIMEOUT_MS,
    );
    broker.subscribe((event) => {
      events.push(event);
      if (events.length === count) {
        clearTimeout(timer);
        resolve(events);
      }
    }).catch(reject);
  });
}

function room(content: string) {
  return { type: "message" as const, room: "lobby", sender: "alice", content };
}

Deno.test("RedisMessageStore gives two nodes disjoint increasing ids, published in id order", async () => {
  const { server, admin } = shared();
  const prefix = "two-nodes:";
  const channel = eventsChannel(prefix);
  const options = { historyLimit: 10_000, historyDays: 0, prefix, channel };
  const broker = await RedisBroker.open(server.url, { prefix });
  const received = collect(broker, 2 * APPENDS_PER_NODE);
  const nodes = [
    await RedisMessageStore.open(server.url, options),
    await RedisMessageStore.open(server.url, options),
  ];
  try {
    assert.ok(nodes.every((store) => store.publishesOnAppend));
    // Both nodes issue all their appends in one turn, so their commands interleave in Redis.
    const perNode = nodes.map((store, n) =>
      Array.from(
        { length: APPENDS_PER_NODE },
        (_, i) => store.append({ draft: room(`${n}:${i}`), user: "alice" }),
      )
    );
    const results: AppendResult[][] = await Promise.all(perNode.map((p) => Promise.all(p)));
    for (const ids of results.map((r) => r.map((x) => x.message.id))) {
      assert.ok(ids.every((id, i) => i === 0 || id > ids[i - 1]!), "ids increase per node");
    }
    const all = results.flat().map((r) => r.message.id).sort((a, b) => a - b);
    assert.deepEqual(all, Array.from({ length: 2 * APPENDS_PER_NODE }, (_, i) => i + 1));

    const events = (await received) as ChatMessage[];
    assert.deepEqual(events.map((e) => e.id), all, "published in id order");
    const byId = new Map(results.flat().map((r) => [r.message.id, r.message]));
    for (const event of events) assert.deepEqual(event, byId.get(event.id));

    const page = await nodes[1]!.history({ conversation: roomKey("lobby"), limit: 100 });
    assert.deepEqual(page.messages, events.slice(-100));
  } finally {
    for (const store of nodes) await store.close();
    await broker.close();
    await removeKeys(admin, prefix);
  }
});

Deno.test("RedisMessageStore keeps every acknowledged append across a crash with AOF always", async () => {
  const aof = await RedisServer.start({ appendonly: true, appendfsync: "always" });
  const options = { historyLimit: 100_000, historyDays: 0 };
  const store = await RedisMessageStore.open(aof.url, options);
  try {
    const acked: ChatMessage[] = [];
    let failed = 0;
    let stop = false;
    // Keep ~50 appends in flight until the crash, so some are acked and some are cut off.
    const writers = Array.from({ length: 50 }, async (_, w) => {
      for (let i = 0; !stop; i++) {
        try {
          const { message } = await store.append({ draft: room(`w${w}-${i}`), user: "alice" });
          acked.push(message);
        } catch {
          failed++;
          return;
        }
      }
    });
    while (acked.length < 2_000) await new Promise((resolve) => setTimeout(resolve, 5));
    await aof.kill("SIGKILL");
    stop = true;
    await Promise.all(writers);
    assert.ok(failed > 0, "the crash cut off appends in flight");
    await aof.restart();

    const reopened = await RedisMessageStore.open(aof.url, options);
    try {
      const lastId = await reopened.lastId(roomKey("lobby"));
      const maxAcked = Math.max(...acked.map((m) => m.id));
      assert.ok(lastId >= maxAcked, `lastId ${lastId} covers every acked id (${maxAcked})`);
      const stored = new Map<number, ChatMessage>();
      for (let after = 0;;) {
        const page = await reopened.history({ conversation: roomKey("lobby"), after, limit: 100 });
        for (const m of page.messages) stored.set(m.id, m);
        if (!page.hasMore) break;
        after = page.messages.at(-1)!.id;
      }
      for (const message of acked) assert.deepEqual(stored.get(message.id), message);
      const next = await reopened.append({ draft: room("after"), user: "alice" });
      assert.equal(next.message.id, lastId + 1);
    } finally {
      await reopened.close();
    }
  } finally {
    await store.close();
    await aof.stop();
  }
});

Deno.test("RedisMessageStore fails fast while Redis is down and recovers after a restart", async () => {
  const flaky = await RedisServer.start();
  const store = await RedisMessageStore.open(flaky.url, { historyLimit: 100, historyDays: 0 });
  try {
    const first = await store.append({ draft: room("before"), user: "alice" });
    assert.equal(first.message.id, 1);
    await flaky.kill();
    // Without persistence the restarted server is empty, script cache included.
    await assert.rejects(store.ping());
    await assert.rejects(store.append({ draft: room("during"), user: "alice" }), /Cannot append/);
    await flaky.restart();
    let recovered = false;
    for (let i = 0; i < 200 && !recovered; i++) {
      recovered = await store.ping().then(() => true, () => false);
      if (!recovered) await new Promise((resolve) => setTimeout(resolve, 25));
    }
    assert.ok(recovered, "reconnected");
    const results = await Promise.all(
      Array.from({ length: 20 }, (_, i) => store.append({ draft: room(`a${i}`), user: "alice" })),
    );
    assert.deepEqual(results.map((r) => r.message.id), Array.from({ length: 20 }, (_, i) => i + 1));
  } finally {
    await store.close();
    await flaky.stop();
  }
});

Deno.test("openStore() opens Redis and publishes on append only beside a Redis broker", async () => {
  const { server } = shared();
  const options = { historyLimit: 10, historyDays: 0 };
  const alone = await openStore(server.url, options);
  const beside = await openStore(server.url, { ...options, broker: server.url });
  try {
    assert.ok(alone instanceof RedisMessageStore);
    assert.equal(alone.publishesOnAppend, false);
    assert.equal(beside.publishesOnAppend, true);
  } finally {
    await alone.close();
    await beside.close();
  }
});

Deno.test("RedisMessageStore.open() rejects when Redis cannot be reached", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr;
  listener.close();
  await assert.rejects(
    RedisMessageStore.open(`redis://127.0.0.1:${port}`, { historyLimit: 10, historyDays: 0 }),
    /^Error: Cannot connect to Redis: /,
  );
});
