/**
 * What the benchmark's baseline servers (`baseline_bare.ts` under Deno, `baseline_bun.ts` under
 * Bun) make of an inbound frame: one `message` object shaped like Parley's, so a delivery carries
 * the same bytes as Parley's. Runtime-neutral: no Deno or Bun API here.
 */

/** The one room the baselines have. */
export const ROOM = "lobby";
/** Seconds a client may stay silent; the same as Parley's default idle timeout. */
export const IDLE_TIMEOUT_S = 60;

/**
 * Encodes a text frame `{"sender","content"}` as a Parley-shaped `message` with id `id`, or
 * returns undefined for anything else (binary, not JSON, not an object).
 */
export function messageFrame(data: unknown, id: number): string | undefined {
  if (typeof data !== "string") return undefined;
  let frame: { sender?: unknown; content?: unknown };
  try {
    frame = JSON.parse(data);
  } catch {
    return undefined;
  }
  if (frame === null || typeof frame !== "object") return undefined;
  return JSON.stringify({
    type: "message",
    room: ROOM,
    sender: String(frame.sender ?? "anonymous"),
    content: String(frame.content ?? ""),
    id,
    ts: new Date().toISOString(),
  });
}
