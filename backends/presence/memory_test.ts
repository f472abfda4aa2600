/**
 * Runs the shared presence contract (`_presence_contract.ts`) against {@link MemoryPresence}.
 * It is one process, one node: the cluster cases are reported as ignored.
 */
import { presenceContract } from "./_contract.ts";
import { MemoryPresence } from "./memory.ts";

presenceContract("memory", () =>
  Promise.resolve({
    open: () => Promise.resolve(new MemoryPresence()),
    cleanup: () => Promise.resolve(),
  }));
