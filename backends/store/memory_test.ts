/**
 * Runs the shared store contract (`_contract.ts`) against {@link MemoryMessageStore}.
 *
 * The memory store keeps nothing across a restart, so the durability cases are reported as
 * ignored rather than silently skipped.
 */
import { storeContract } from "./_contract.ts";
import { MemoryMessageStore } from "./memory.ts";

storeContract("memory", (options) =>
  Promise.resolve({
    store: new MemoryMessageStore(options),
    cleanup: () => Promise.resolve(),
  }));
