/**
 * Fixtures shared by the backends' conformance suites and tests: where their injected clocks
 * start, how long they wait for pub/sub deliveries, and removing a test's Redis keys.
 *
 * Only tests import it, so the server's module graph never contains it.
 */
import type { RedisClient } from "./redis.ts";

/** Start of every injected clock: 2025-01-01T00:00:00Z, in milliseconds. */
export const EPOCH_MS = Date.UTC(2025, 0, 1);
/** Longest wait for expected pub/sub deliveries before a case fails, in milliseconds. */
export const DELIVERY_TIMEOUT_MS = 5_000;

/** Deletes every key under `prefix`. */
export async function removeKeys(client: RedisClient, prefix: string): Promise<void> {
  await client.sendCommand([
    "EVAL",
    "for _, k in ipairs(redis.call('KEYS', ARGV[1])) do redis.call('UNLINK', k) end",
    "0",
    `${prefix}*`,
  ]);
}
