/**
 * An in-process {@link MessageStore} for `--store memory:`: throwaway runs and tests.
 *
 * It keeps the full contract of `mod.ts` (ids, idempotency, retention) but nothing survives the
 * process. Each conversation is an array in ascending id order, so pages are binary searches.
 */
import type { ChatMessage } from "../../message.ts";
import { conversationKey } from "../../message.ts";
import {
  type AppendInput,
  type AppendResult,
  DAY_MS,
  type HistoryPage,
  type HistoryQuery,
  IDEMPOTENCY_WINDOW_MS,
  type MessageStore,
  type Replay,
  type StoreOptions,
} from "./mod.ts";

interface Conversation {
  messages: ChatMessage[];
  lastId: number;
}

/** Keeps history in memory with the same guarantees as the durable stores, minus durability. */
export class MemoryMessageStore implements MessageStore {
  readonly #conversations = new Map<string, Conversation>();
  /** `(user, ref)` → the stored message and when it was stored; insertion order is age order. */
  readonly #refs = new Map<string, { message: ChatMessage; at: number }>();
  readonly #options: StoreOptions;
  readonly #now: () => number;
  #closed = false;

  /** Creates an empty store. */
  constructor(options: StoreOptions) {
    this.#options = options;
    this.#now = options.now ?? Date.now;
  }

  append(input: AppendInput): Promise<AppendResult> {
    if (this.#closed) return Promise.reject(new Error("Cannot append: store is closed"));
    const now = this.#now();
    this.#expireRefs(now);
    const refKey = input.ref === undefined ? undefined : JSON.stringify([input.user, input.ref]);
    if (refKey !== undefined) {
      const seen = this.#refs.get(refKey);
      if (seen !== undefined) return Promise.resolve({ message: seen.message, duplicate: true });
    }
    const key = conversationKey(input.draft);
    let conversation = this.#conversations.get(key);
    if (conversation === undefined) {
      conversation = { messages: [], lastId: 0 };
      this.#conversations.set(key, conversation);
    }
    const message = {
      ...input.draft,
      id: ++conversation.lastId,
      ts: new Date(now).toISOString(),
    } as ChatMessage;
    conversation.messages.push(message);
    this.#prune(conversation, now);
    if (refKey !== undefined) this.#refs.set(refKey, { message, at: now });
    return Promise.resolve({ message, duplicate: false });
  }

  history(query: HistoryQuery): Promise<HistoryPage> {
    if (this.#closed) return Promise.reject(new Error("Cannot read history: store is closed"));
    const conversation = this.#conversations.get(query.conversation);
    if (conversation === undefined) return Promise.resolve({ messages: [], hasMore: false });
    this.#prune(conversation, this.#now());
    const all = conversation.messages;
    if (query.after !== undefined) {
      const start = firstAbove(all, query.after);
      const messages = all.slice(start, start + query.limit);
      return Promise.resolve({ messages, hasMore: start + query.limit < all.length });
    }
    const end = query.before === undefined ? all.length : firstAbove(all, query.before - 1);
    const start = Math.max(0, end - query.limit);
    return Promise.resolve({ messages: all.slice(start, end), hasMore: start > 0 });
  }

  since(key: string, since: number, limit: number): Promise<Replay> {
    if (this.#closed) return Promise.reject(new Error("Cannot read history: store is closed"));
    const conversation = this.#conversations.get(key);
    if (conversation === undefined) {
      return Promise.resolve({ messages: [], complete: since === 0, lastId: 0 });
    }
    this.#prune(conversation, this.#now());
    const all = conversation.messages;
    const start = firstAbove(all, since);
    const messages = all.slice(start, start + limit);
    const missed = conversation.lastId - since;
    const complete = since <= conversation.lastId && messages.length === missed;
    return Promise.resolve({ messages, complete, lastId: conversation.lastId });
  }

  lastId(key: string): Promise<number> {
    if (this.#closed) return Promise.reject(new Error("Cannot read history: store is closed"));
    return Promise.resolve(this.#conversations.get(key)?.lastId ?? 0);
  }

  ping(): Promise<void> {
    return this.#closed ? Promise.reject(new Error("Store is closed")) : Promise.resolve();
  }

  close(): Promise<void> {
    this.#closed = true;
    return Promise.resolve();
  }

  #prune(conversation: Conversation, now: number): void {
    const { historyLimit, historyDays } = this.#options;
    let drop = Math.max(0, conversation.messages.length - historyLimit);
    if (historyDays > 0) {
      const cutoff = new Date(now - historyDays * DAY_MS).toISOString();
      while (drop < conversation.messages.length && conversation.messages[drop]!.ts < cutoff) {
        drop++;
      }
    }
    if (drop > 0) conversation.messages.splice(0, drop);
  }

  #expireRefs(now: number): void {
    for (const [key, seen] of this.#refs) {
      if (now - seen.at < IDEMPOTENCY_WINDOW_MS) break;
      this.#refs.delete(key);
    }
  }
}

/** The index of the first message with id > `id` in an ascending array. */
function firstAbove(messages: ChatMessage[], id: number): number {
  let lo = 0;
  let hi = messages.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (messages[mid]!.id <= id) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
