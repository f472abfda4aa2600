/**
 * The conformance suite of {@link Broker}: one list of `Deno.test` cases that every backend
 * (memory, Redis) runs unchanged, checking the contract written in `mod.ts`.
 *
 * A backend's test file calls {@link brokerContract} with a name and an `open` function that
 * returns the nodes of a fresh cluster: brokers sharing one transport. The memory broker is one
 * process, so its cluster has one node; Redis opens two brokers, two nodes. Invariants:
 * - Each case opens its own cluster (an empty namespace) and calls `cleanup` at the end, after
 *   closing every node, whatever happened.
 * - Cases wait for deliveries with a deadline ({@link DELIVERY_TIMEOUT_MS}), never with sleeps.
 */
import assert from "node:assert/strict";
import type { Broker, BrokerEvent } from "./mod.ts";
import type { ChatMessage } from "../../message.ts";
import { DELIVERY_TIMEOUT_MS } from "../_testing.ts";

/** Events published in one turn by the ordering case. */
const BURST = 500;

/** The nodes of a fresh cluster, and how to dispose of it. */
export interface BrokerCluster {
  /** One broker per node, all on the same transport, none subscribed yet. */
  nodes: Broker[];
  /** Removes what `open` created; called after every node is closed. */
  cleanup: () => Promise<void>;
}

/** Opens a fresh cluster. */
export type OpenBrokers = () => Promise<BrokerCluster>;

/** What a backend supports, and how its cases must be run. */
export interface BrokerFeatures {
  /** The listener is never re-entered: each call is awaited before the next, even when
   * publishes overlap. Default true; a backend that falls short has the case reported ignored. */
  awaitsListener?: boolean;
  /** Sanitizer settings for backends whose client keeps background resources. */
  sanitizeOps?: boolean;
  sanitizeResources?: boolean;
}

/** What one node's listener received, and a way to wait for more. */
interface Inbox {
  events: BrokerEvent[];
  /** Resolves once at least `count` events arrived; rejects after the deadline. */
  until(count: number): Promise<void>;
}

async function subscribe(broker: Broker, onEvent?: (event: BrokerEvent) => Promise<void>) {
  const events: BrokerEvent[] = [];
  const waiters: { count: number; resolve: () => void }[] = [];
  await broker.subscribe(async (event) => {
    events.push(event);
    for (const waiter of waiters.filter((w) => events.length >= w.count)) waiter.resolve();
    if (onEvent !== undefined) await onEvent(event);
  });
  const inbox: Inbox = {
    events,
    until(count) {
      if (events.length >= count) return Promise.resolve();
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          reject(new Error(`Received ${events.length} of ${count} events`));
        }, DELIVERY_TIMEOUT_MS);
        waiters.push({
          count,
          resolve: () => {
            clearTimeout(timer);
            resolve();
          },
        });
      });
    },
  };
  return inbox;
}

function message(id: number, content = `m${id}`): ChatMessage {
  return {
    type: "message",
    id,
    room: "lobby",
    sender: "alice",
    content,
    ts: new Date(Date.UTC(2025, 0, 1, 0, 0, id)).toISOString(),
  };
}

/**
 * Registers the broker conformance cases for one backend. Test names read
 * `broker contract (<name>): <behaviour>`.
 */
export function brokerContract(name: string, open: OpenBrokers, features: BrokerFeatures = {}) {
  function contract(
    behaviour: string,
    body: (nodes: Broker[]) => Promise<void>,
    ignore = false,
  ): void {
    const definition: Deno.TestDefinition = {
      name: `broker contract (${name}): ${behaviour}`,
      ignore,
      async fn() {
        const cluster = await open();
        try {
          await body(cluster.nodes);
        } finally {
          try {
            for (const node of cluster.nodes) await node.close();
          } finally {
            await cluster.cleanup();
          }
        }
      },
    };
    if (features.sanitizeOps !== undefined) definition.sanitizeOps = features.sanitizeOps;
    if (features.sanitizeResources !== undefined) {
      definition.sanitizeResources = features.sanitizeResources;
    }
    Deno.test(definition);
  }

  contract("every event reaches every node's listener once, the publisher's too", async (nodes) => {
    const inboxes = await Promise.all(nodes.map((node) => subscribe(node)));
    const sent: BrokerEvent[] = [];
    for (const [n, node] of nodes.entries()) {
      const events: BrokerEvent[] = [message(n * 10 + 1), {
        type: "typing",
        room: "lobby",
        user: `user${n}`,
      }, {
        type: "direct",
        id: n * 10 + 2,
        from: "alice",
        to: "bob",
        content: `dm from node ${n}`,
        ts: "2025-01-01T00:00:00.000Z",
      }];
      for (const event of events) await node.publish(event);
      sent.push(...events);
    }
    // A last marker from the first node: once it arrived, any duplicate would have too.
    const marker = message(999, "marker");
    await nodes[0]!.publish(marker);
    for (const inbox of inboxes) {
      await inbox.until(sent.length + 1);
      assert.equal(inbox.events.length, sent.length + 1, "no duplicates");
      assert.deepEqual(inbox.events.at(-1), marker);
      const key = (e: BrokerEvent) => JSON.stringify(e);
      assert.deepEqual(inbox.events.slice(0, -1).map(key).sort(), sent.map(key).sort());
    }
  });

  contract("events of one publisher arrive in publish order", async (nodes) => {
    const inboxes = await Promise.all(nodes.map((node) => subscribe(node)));
    const publisher = nodes.at(-1)!;
    // Issued in one turn without waiting: the order of the calls is what must survive.
    await Promise.all(Array.from({ length: BURST }, (_, i) => publisher.publish(message(i + 1))));
    for (const inbox of inboxes) {
      await inbox.until(BURST);
      assert.deepEqual(
        inbox.events.map((e) => (e as ChatMessage).id),
        Array.from({ length: BURST }, (_, i) => i + 1),
      );
    }
  });

  contract("the listener handles one event at a time, each call awaited", async (nodes) => {
    let active = 0;
    let most = 0;
    const inbox = await subscribe(nodes[0]!, async () => {
      most = Math.max(most, ++active);
      await new Promise<void>((resolve) => queueMicrotask(resolve));
      await Promise.resolve();
      active--;
    });
    for (const node of nodes.slice(1)) await subscribe(node);
    await Promise.all(Array.from({ length: 50 }, (_, i) => nodes.at(-1)!.publish(message(i + 1))));
    await inbox.until(50);
    assert.equal(most, 1);
    assert.deepEqual(
      inbox.events.map((e) => (e as ChatMessage).id),
      Array.from({ length: 50 }, (_, i) => i + 1),
    );
  }, features.awaitsListener === false);

  contract("close stops delivery to that node and later publishes reject", async (nodes) => {
    const inboxes = await Promise.all(nodes.map((node) => subscribe(node)));
    const closed = nodes.at(-1)!;
    await closed.publish(message(1));
    for (const inbox of inboxes) await inbox.until(1);
    await closed.close();
    await assert.rejects(closed.publish(message(2)));
    await assert.rejects(closed.ping());
    const open = nodes.slice(0, -1);
    for (const node of open) await node.publish(message(3));
    for (const inbox of inboxes.slice(0, -1)) await inbox.until(1 + open.length);
    // The surviving nodes saw the later events; the closed node's listener never ran again.
    assert.deepEqual(inboxes.at(-1)!.events.map((e) => (e as ChatMessage).id), [1]);
    await closed.close(); // idempotent
  });

  contract("ping resolves while the broker is open", async (nodes) => {
    for (const node of nodes) await node.ping();
    await Promise.all(nodes.map((node) => subscribe(node)));
    for (const node of nodes) await node.ping();
  });
}
