/**
 * The in-process {@link Broker}: the delivery path of a single node.
 *
 * It is a real broker, not a shortcut around one: `publish` hands each event to every subscribed
 * listener in call order and waits until each accepted it, which is how a full hub queue pushes
 * back on senders instead of growing without bound. A listener handles one event at a time: while
 * one delivery waits, later publishes queue behind it on a promise chain; when nothing waits, the
 * listener is called synchronously inside `publish`.
 */
import type { Broker, BrokerEvent, BrokerListener } from "./mod.ts";

/** Delivers events to the listeners of this process. */
export class MemoryBroker implements Broker {
  #listeners: BrokerListener[] = [];
  #closed = false;
  /** Settles when every delivery started so far has been accepted. */
  #tail: Promise<void> = Promise.resolve();
  #waiting = 0;

  publish(event: BrokerEvent): Promise<void> {
    if (this.#closed) return Promise.reject(new Error("Cannot publish: broker is closed"));
    if (this.#waiting === 0) {
      const accepted = this.#deliver(event, 0);
      if (accepted === undefined) return Promise.resolve();
      return this.#track(accepted);
    }
    return this.#track(this.#tail.then(() => this.#deliver(event, 0)));
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

  /** Calls listeners from index `from` on; returns a promise only if one of them is pending. */
  #deliver(event: BrokerEvent, from: number): Promise<void> | undefined {
    const listeners = this.#listeners;
    for (let i = from; i < listeners.length; i++) {
      const accepted = listeners[i]!(event);
      if (accepted !== undefined) {
        return accepted.then(() => this.#deliver(event, i + 1));
      }
    }
    return undefined;
  }

  #track(delivery: Promise<void> | undefined): Promise<void> {
    this.#waiting++;
    const done = Promise.resolve(delivery).finally(() => this.#waiting--);
    this.#tail = done.catch(() => {});
    return done;
  }
}
