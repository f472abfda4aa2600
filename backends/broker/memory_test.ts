/**
 * Runs the shared broker contract (`_contract.ts`) against {@link MemoryBroker}: a
 * one-node cluster, since the memory broker lives in one process.
 */
import { brokerContract } from "./_contract.ts";
import { MemoryBroker } from "./memory.ts";

brokerContract("memory", () =>
  Promise.resolve({
    nodes: [new MemoryBroker()],
    cleanup: () => Promise.resolve(),
  }));
