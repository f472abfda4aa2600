/**
 * What the store conformance cases share: their context, the clock they drive, and builders of
 * drafts and filled conversations. `_contract.ts` owns the harness; the cases live in
 * `_contract_history.ts` and `_contract_retention.ts`.
 */
import type { ChatMessage, Draft } from "../../message.ts";
import type { MessageStore, StoreOptions } from "./mod.ts";
import { EPOCH_MS } from "../_testing.ts";

/** What a case gets: its fresh store, a restart, and the store's clock. */
export interface CaseContext {
  store: MessageStore;
  /** Reopens the data after `store.close()`; the suite closes the new store too. */
  reopen: () => Promise<MessageStore>;
  clock: Clock;
}

/** How a case is registered: options it overrides, and what of the backend it needs. */
export interface CaseOptions {
  overrides?: Partial<StoreOptions>;
  needs?: "clock" | "durable";
}

/** Registers one case; the suite opens, closes and cleans up its store. */
export type RegisterCase = (
  behaviour: string,
  body: (t: CaseContext) => Promise<void>,
  options?: CaseOptions,
) => void;

/** A controllable clock for `StoreOptions.now`. */
export interface Clock {
  now: () => number;
  advance(ms: number): void;
}

/** A clock standing at {@link EPOCH_MS} until advanced. */
export function clock(): Clock {
  let t = EPOCH_MS;
  return {
    now: () => t,
    advance(ms) {
      t += ms;
    },
  };
}

/** A room message draft. */
export function room(name: string, content: string, sender = "alice"): Draft {
  return { type: "message", room: name, sender, content };
}

/** A direct message draft. */
export function direct(from: string, to: string, content: string): Draft {
  return { type: "direct", from, to, content };
}

/** The ids of `messages`, in order. */
export function ids(messages: ChatMessage[]): number[] {
  return messages.map((m) => m.id);
}

/** The integers from `from` to `to`, both included. */
export function range(from: number, to: number): number[] {
  return Array.from({ length: to - from + 1 }, (_, i) => from + i);
}

/** Appends `count` messages `m1`, `m2`… to room `name` in one turn. */
export async function fill(store: MessageStore, name: string, count: number): Promise<void> {
  await Promise.all(
    Array.from(
      { length: count },
      (_, i) => store.append({ draft: room(name, `m${i + 1}`), user: "alice" }),
    ),
  );
}
