/**
 * Runs the shared presence contract (`_contract.ts`) against {@link MemoryPresence}, then checks
 * that {@link openPresence} picks it for `memory:` and refuses URLs it does not know.
 * It is one process, one node: the cluster cases are reported as ignored.
 */
import assert from "node:assert/strict";
import { presenceContract } from "./_contract.ts";
import { MemoryPresence } from "./memory.ts";
import { openPresence } from "./mod.ts";

presenceContract("memory", () =>
  Promise.resolve({
    open: () => Promise.resolve(new MemoryPresence()),
    cleanup: () => Promise.resolve(),
  }));

Deno.test("openPresence() opens a MemoryPresence for memory:", async () => {
  for (const url of ["memory:", "memory"]) {
    const presence = await openPresence(url, { ttlSeconds: 30 });
    try {
      assert.ok(presence instanceof MemoryPresence, url);
      assert.equal(await presence.join("lobby", "alice"), true);
      assert.deepEqual(await presence.users("lobby"), ["alice"]);
    } finally {
      await presence.close();
    }
  }
});

Deno.test("openPresence() refuses a URL it has no backend for", async () => {
  for (const url of ["", "sqlite:./parley.db", "http://localhost:6379", "Redis://localhost"]) {
    await assert.rejects(
      openPresence(url, { ttlSeconds: 30 }),
      (error: Error) =>
        error.message === `Cannot open presence: unsupported URL ${JSON.stringify(url)}`,
      url,
    );
  }
});
