/**
 * The in-process {@link Broker}: the delivery path of a single node.
 *
 * It is a real broker, not a shortcut around one: `publish` hands each event to every subscribed
 * listener in call order and waits until each accepted it, which is how a full hub queue pushes
 * back on senders instead of growing without bound.
 */
import type { Broker, BrokerEvent, BrokerListener } from "./broker.ts";

/** Delivers events to the listeners of this process. */
export class MemoryBroker implements Broker {
  #listeners: BrokerListener[] = [];
  #closed = false;

  async publish(event: BrokerEvent): Promise<void> {
    if (this.#closed) throw new Error("Cannot publish: broker is closed");
    for (const listener of this.#listeners) {
      const accepted = listener(event);
      if (accepted !== undefined) await accepted;
    }
  }

  subscribe(listener: BrokerListener): Promise<void> {
    if (this.#closed) return Promise.reject(new Error("Cannot subscribe: broker is closed"));
    this.#listeners.push(listener);
    return Promise.resolve();
  }

  ping(): Promise<void> {
    return this.#closed ? Promise.reject(new Error("Broker is closed")) : Promise.resolve();
  }

  close(): Promise<void> {
    this.#closed = true;
    this.#listeners = [];
    return Promise.resolve();
  }
}
