/**
 * A bounded, single-consumer async queue: the mailbox the Hub reads with `for await`.
 *
 * Producers that can wait call {@link Queue.send}; producers that cannot (socket handlers) call
 * {@link Queue.trySend}, which returns false when the queue is full, like a Go `select` with a
 * `default` branch. Invariants:
 * - Items come out in the order they were accepted. Senders wait only while the queue is full, and
 *   taking an item moves the oldest waiting sender's item in at once, so the queue stays full
 *   while anyone waits and a later `trySend` can never overtake a waiting `send`.
 * - At most `capacity` items are buffered; waiting senders hold their own item until space frees.
 * - {@link Queue.close} refuses new items, lets the consumer drain what is buffered and what
 *   waiting senders hold, then ends the iteration.
 */

/** Thrown by {@link Queue.send} when the queue is closed before the item was accepted. */
export class QueueClosedError extends Error {
  constructor() {
    super("Cannot send: queue is closed");
    this.name = "QueueClosedError";
  }
}

interface Waiter<T> {
  item: T;
  resolve: () => void;
}

/** A bounded FIFO that is consumed with `for await`. */
export class Queue<T> implements AsyncIterable<T> {
  readonly capacity: number;
  #items: T[] = [];
  #head = 0;
  #waiters: Waiter<T>[] = [];
  #consumer: ((result: IteratorResult<T>) => void) | undefined;
  #closed = false;

  /** Creates a queue that buffers at most `capacity` items (at least 1). */
  constructor(capacity: number) {
    if (!Number.isInteger(capacity) || capacity < 1) {
      throw new RangeError(`Cannot create queue: capacity must be a positive integer`);
    }
    this.capacity = capacity;
  }

  /** The number of buffered items, not counting waiting senders. */
  get size(): number {
    return this.#items.length - this.#head;
  }

  /** The number of senders waiting for space. */
  get waiting(): number {
    return this.#waiters.length;
  }

  /** Whether {@link Queue.close} was called. */
  get closed(): boolean {
    return this.#closed;
  }

  /** Adds an item without waiting; returns false when the queue is full or closed. */
  trySend(item: T): boolean {
    if (this.#closed) return false;
    if (this.#deliver(item)) return true;
    if (this.size >= this.capacity) return false;
    this.#items.push(item);
    return true;
  }

  /** Adds an item, waiting for space; rejects with {@link QueueClosedError} once closed. */
  send(item: T): Promise<void> {
    if (this.#closed) return Promise.reject(new QueueClosedError());
    if (this.#deliver(item)) return Promise.resolve();
    if (this.size < this.capacity) {
      this.#items.push(item);
      return Promise.resolve();
    }
    return new Promise((resolve) => this.#waiters.push({ item, resolve }));
  }

  /** Refuses new items; the consumer still receives everything already accepted or waiting. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    if (this.size === 0 && this.#waiters.length === 0) this.#finish();
  }

  /** Yields items in order until the queue is closed and drained. */
  async *[Symbol.asyncIterator](): AsyncIterator<T> {
    while (true) {
      const result = this.#take();
      if (result !== undefined) {
        yield result.value;
        continue;
      }
      if (this.#closed) return;
      const next = await new Promise<IteratorResult<T>>((resolve) => this.#consumer = resolve);
      if (next.done) return;
      yield next.value;
    }
  }

  /** Hands an item straight to a consumer that is parked on an empty queue. */
  #deliver(item: T): boolean {
    const consumer = this.#consumer;
    if (consumer === undefined || this.size > 0) return false;
    this.#consumer = undefined;
    consumer({ value: item, done: false });
    return true;
  }

  #take(): { value: T } | undefined {
    if (this.size === 0) return undefined;
    const value = this.#items[this.#head]!;
    this.#items[this.#head] = undefined as T; // let the item be collected
    this.#head++;
    if (this.#head > 1024 && this.#head * 2 > this.#items.length) {
      this.#items = this.#items.slice(this.#head);
      this.#head = 0;
    }
    const waiter = this.#waiters.shift();
    if (waiter !== undefined) {
      this.#items.push(waiter.item);
      waiter.resolve();
    }
    return { value };
  }

  #finish(): void {
    const consumer = this.#consumer;
    this.#consumer = undefined;
    consumer?.({ value: undefined, done: true });
  }
}
