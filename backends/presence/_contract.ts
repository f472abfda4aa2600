/**
 * The conformance suite of {@link Presence}: one list of `Deno.test` cases that every backend
 * (memory, Redis) runs unchanged, checking the contract written in `mod.ts`.
 *
 * A backend's test file calls {@link presenceContract} with a name and an `open` function that
 * returns a fresh, empty presence namespace from which the case opens nodes. Invariants:
 * - Each case opens its own namespace and calls `cleanup` at the end, after closing every node
 *   it opened, whatever happened.
 * - Time-dependent cases drive the injected clock and call the backend's `tick` (what its timers
 *   would do); none sleeps.
 * - A backend that cannot hold several nodes (memory: one process) reports the cluster cases as
 *   ignored through {@link PresenceFeatures}.
 */
import assert from "node:assert/strict";
import type { Presence } from "./mod.ts";
import { EPOCH_MS } from "../_testing.ts";

/** The ttl every case runs with, in seconds. */
const TTL_S = 30;

/** A fresh presence namespace, and what a clustered backend can do with its nodes. */
export interface PresenceHandle {
  /** Opens a node of this namespace; a clustered backend may open several sharing one view. */
  open(nodeId: string): Promise<Presence>;
  /** Clustered: stops a node as a crash would (no goodbye, no more heartbeats). */
  crash?(node: Presence): Promise<void>;
  /** Clustered: one round of the node's timers, heartbeat then sweep. */
  tick?(node: Presence): Promise<void>;
  /** Removes what the namespace holds; called after every node is closed. */
  cleanup(): Promise<void>;
}

/** Opens a fresh namespace whose nodes use the given ttl and clock. */
export type OpenPresence = (options: { ttlSeconds: number; now: () => number }) => Promise<
  PresenceHandle
>;

/** What a backend supports, and how its cases must be run. */
export interface PresenceFeatures {
  /** Several nodes share one view; `crash` and `tick` are given. Default false. */
  clustered?: boolean;
  /** Sanitizer settings for backends whose client keeps background resources. */
  sanitizeOps?: boolean;
  sanitizeResources?: boolean;
}

/** What a case gets: a way to open nodes, the namespace's extras, and the clock. */
interface CaseContext {
  node(nodeId?: string): Promise<Presence>;
  crash(node: Presence): Promise<void>;
  tick(node: Presence): Promise<void>;
  advance(ms: number): void;
}

/**
 * Registers the presence conformance cases for one backend. Test names read
 * `presence contract (<name>): <behaviour>`.
 */
export function presenceContract(
  name: string,
  open: OpenPresence,
  features: PresenceFeatures = {},
): void {
  const clustered = features.clustered ?? false;

  function contract(
    behaviour: string,
    body: (t: CaseContext) => Promise<void>,
    options: { cluster?: boolean } = {},
  ): void {
    const definition: Deno.TestDefinition = {
      name: `presence contract (${name}): ${behaviour}`,
      ignore: (options.cluster ?? false) && !clustered,
      async fn() {
        let t = EPOCH_MS;
        const handle = await open({ ttlSeconds: TTL_S, now: () => t });
        const nodes: Presence[] = [];
        const context: CaseContext = {
          async node(nodeId = `node${nodes.length + 1}`) {
            const node = await handle.open(nodeId);
            nodes.push(node);
            return node;
          },
          crash(node) {
            if (handle.crash === undefined) throw new Error("Cannot crash: backend has no crash");
            return handle.crash(node);
          },
          tick(node) {
            if (handle.tick === undefined) throw new Error("Cannot tick: backend has no tick");
            return handle.tick(node);
          },
          advance(ms) {
            t += ms;
          },
        };
        try {
          await body(context);
        } finally {
          try {
            for (const node of nodes) await node.close();
          } finally {
            await handle.cleanup();
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

  // --- one node -----------------------------------------------------------------------------

  contract("join is true only when the user was not yet online in the room", async ({ node }) => {
    const p = await node();
    assert.equal(await p.join("lobby", "alice"), true);
    assert.equal(await p.join("lobby", "alice"), false);
    assert.equal(await p.join("lobby", "bob"), true);
    assert.equal(await p.join("games", "alice"), true);
  });

  contract("leave is true only when the user was online and now is not", async ({ node }) => {
    const p = await node();
    assert.equal(await p.leave("lobby", "alice"), false, "never joined");
    await p.join("lobby", "alice");
    await p.join("games", "alice");
    assert.equal(await p.leave("lobby", "alice"), true);
    assert.equal(await p.leave("lobby", "alice"), false, "already left");
    assert.deepEqual(await p.users("games"), ["alice"]);
    assert.equal(await p.join("lobby", "alice"), true, "online again");
  });

  contract("users are sorted and each listed once; count matches", async ({ node }) => {
    const p = await node();
    const joins = [p.join("lobby", "carol"), p.join("lobby", "alice"), p.join("lobby", "bob")];
    assert.deepEqual(await Promise.all(joins), [true, true, true]);
    await p.join("lobby", "alice");
    assert.deepEqual(await p.users("lobby"), ["alice", "bob", "carol"]);
    assert.equal(await p.count("lobby"), 3);
    assert.deepEqual(await p.users("empty"), []);
    assert.equal(await p.count("empty"), 0);
  });

  contract("rooms and look-alike names never mix", async ({ node }) => {
    const p = await node();
    assert.equal(await p.join("a", 'b","c'), true);
    assert.equal(await p.join("a", "b"), true);
    assert.equal(await p.join("a", "b|c"), true);
    assert.equal(await p.join("a.b", "c"), true);
    assert.deepEqual(await p.users("a"), ['b","c', "b", "b|c"].sort());
    assert.deepEqual(await p.users("a.b"), ["c"]);
    assert.equal(await p.leave("a", "b"), true);
    assert.deepEqual(await p.users("a"), ['b","c', "b|c"].sort());
  });

  contract("ping resolves while open and rejects after close", async ({ node }) => {
    const p = await node();
    await p.ping();
    await p.close();
    await assert.rejects(p.ping());
    await p.close(); // idempotent
  });

  // --- several nodes ------------------------------------------------------------------------

  contract("a user on two nodes comes online once and goes offline once", async ({ node }) => {
    const [a, b] = [await node(), await node()];
    assert.equal(await a.join("lobby", "alice"), true);
    assert.equal(await b.join("lobby", "alice"), false);
    assert.deepEqual(await b.users("lobby"), ["alice"]);
    assert.equal(await a.count("lobby"), 1);
    assert.equal(await a.leave("lobby", "alice"), false, "still on node b");
    assert.deepEqual(await a.users("lobby"), ["alice"]);
    assert.equal(await b.leave("lobby", "alice"), true);
    assert.deepEqual(await a.users("lobby"), []);
  }, { cluster: true });

  contract("close says goodbye: the node's users go offline", async ({ node }) => {
    const [a, b] = [await node(), await node()];
    await a.join("lobby", "alice");
    await a.join("lobby", "bob");
    await b.join("lobby", "bob");
    await a.close();
    assert.deepEqual(await b.users("lobby"), ["bob"]);
    assert.equal(await b.join("lobby", "alice"), true);
  }, { cluster: true });

  contract(
    "a crashed node's users expire after the ttl, each reported by exactly one node",
    async ({ node, crash, tick, advance }) => {
      const [a, b, c] = [await node(), await node(), await node()];
      const reports: string[] = [];
      b.onExpired((room, user) => reports.push(`b:${room}/${user}`));
      c.onExpired((room, user) => reports.push(`c:${room}/${user}`));
      await a.join("lobby", "alice");
      await a.join("lobby", "bob");
      await a.join("games", "alice");
      await b.join("lobby", "bob");
      await crash(a);

      advance(TTL_S * 1000 / 2);
      await Promise.all([tick(b), tick(c)]);
      assert.equal(reports.length, 0, "not yet expired");
      assert.deepEqual(await b.users("lobby"), ["alice", "bob"]);

      advance(TTL_S * 1000 / 2 + 1);
      await Promise.all([tick(b), tick(c), tick(b), tick(c)]);
      const seen = reports.map((r) => r.slice(2)).sort();
      assert.deepEqual(seen, ["games/alice", "lobby/alice"], "once each, bob still online");
      assert.deepEqual(await c.users("lobby"), ["bob"]);
      assert.deepEqual(await c.users("games"), []);
      assert.equal(await b.leave("lobby", "bob"), true);
    },
    { cluster: true },
  );

  contract(
    "heartbeats keep a live node's users online",
    async ({ node, tick, advance }) => {
      const [a, b] = [await node(), await node()];
      const reports: string[] = [];
      b.onExpired((room, user) => reports.push(`${room}/${user}`));
      await a.join("lobby", "alice");
      for (let round = 0; round < 6; round++) {
        advance(TTL_S * 1000 / 2);
        await tick(a);
        await tick(b);
      }
      assert.equal(reports.length, 0);
      assert.deepEqual(await b.users("lobby"), ["alice"]);
    },
    { cluster: true },
  );
}
