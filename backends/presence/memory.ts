/**
 * The in-process {@link Presence}: the presence view of a single node.
 *
 * With one process the node's own reports are the whole cluster, so `join` and `leave` are set
 * insertions and deletions. Nothing ever expires: a node cannot outlive itself, so the
 * {@link ExpiryListener} is kept but never called.
 *
 * Invariants: a room's entry exists only while it has at least one user; after `close` every
 * call rejects.
 */
import type { ExpiryListener, Presence } from "./mod.ts";

/** Online users per room for one process. */
export class MemoryPresence implements Presence {
  readonly #rooms = new Map<string, Set<string>>();
  #closed = false;

  join(room: string, user: string): Promise<boolean> {
    if (this.#closed) return closed();
    let users = this.#rooms.get(room);
    if (users === undefined) {
      users = new Set();
      this.#rooms.set(room, users);
    }
    const before = users.size;
    users.add(user);
    return Promise.resolve(users.size > before);
  }

  leave(room: string, user: string): Promise<boolean> {
    if (this.#closed) return closed();
    const users = this.#rooms.get(room);
    if (users === undefined || !users.delete(user)) return Promise.resolve(false);
    if (users.size === 0) this.#rooms.delete(room);
    return Promise.resolve(true);
  }

  users(room: string): Promise<string[]> {
    if (this.#closed) return closed();
    return Promise.resolve([...this.#rooms.get(room) ?? []].sort());
  }

  count(room: string): Promise<number> {
    if (this.#closed) return closed();
    return Promise.resolve(this.#rooms.get(room)?.size ?? 0);
  }

  onExpired(_listener: ExpiryListener): void {
    // One process: no other node's entries can expire.
  }

  ping(): Promise<void> {
    return this.#closed ? closed() : Promise.resolve();
  }

  close(): Promise<void> {
    this.#closed = true;
    this.#rooms.clear();
    return Promise.resolve();
  }
}

function closed(): Promise<never> {
  return Promise.reject(new Error("Cannot use presence: it is closed"));
}
