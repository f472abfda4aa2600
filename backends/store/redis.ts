/**
 * The Redis {@link MessageStore} (`--store redis://…`, the default with `--redis`): history shared
 * by every node of a cluster, and the one place that orders a conversation's messages.
 *
 * Keys, under a prefix (default `parley:`):
 * - `{prefix}h:{conversation}`: a stream per conversation whose entry ids are `0-<message id>`,
 *   so stream ids are message ids. Each entry holds `t` (ts in ms) and `m` (the message JSON).
 * - `{prefix}id:{conversation}`: the conversation's last assigned id (`INCR`); it outlives
 *   pruning, so ids are never reused.
 * - `{prefix}ref:["user","ref"]`: `"<ms> <message JSON>"` for idempotent retries, expiring after
 *   {@link IDEMPOTENCY_WINDOW_MS}.
 *
 * Invariants:
 * - `append` is one Lua script: idempotency check, `INCR`, `XADD`, retention and, when a broker
 *   channel is configured, `PUBLISH` of the stored message. Redis runs scripts one at a time, so
 *   no interleaving of nodes can reuse, skip or reorder an id, and every subscriber receives a
 *   conversation's messages in id order (`publishesOnAppend`).
 * - Ids of a conversation are contiguous (1…lastId, each stored when assigned), so `historyLimit`
 *   is exact at read time: the visible window starts at `lastId - historyLimit + 1`. The stream
 *   itself is trimmed approximately (`MAXLEN ~`), which is cheaper.
 * - `historyDays` is enforced by every script that reads or appends: it trims the stream's head
 *   up to the first entry young enough (`XTRIM MINID`), with the node's clock (`now`).
 * - Reads are scripts too, so a page and its `hasMore` come from one consistent snapshot.
 */
import { connectRedis, DEFAULT_REDIS_PREFIX, type RedisClient, Script } from "../redis.ts";
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

export { eventsChannel } from "../redis.ts";

/** Stream entries inspected per step while trimming expired history. */
const PRUNE_BATCH = 128;

/** Options of {@link RedisMessageStore.open}. */
export interface RedisStoreOptions extends StoreOptions {
  /** Prefix of every key; lets one Redis host several deployments or test cases. */
  prefix?: string;
  /** Broker channel to publish each stored message on, inside the append script. Set it when
   * the broker runs on the same Redis (see `eventsChannel()`); leave it unset otherwise. */
  channel?: string;
}

// Helpers shared by the scripts. `floor` answers the first visible id of a conversation and
// trims what `historyDays` expired; ids travel as stream ids `0-<id>`.
const PRELUDE = `
local function sid(n) return '0-' .. string.format('%d', n) end
local function nid(s) return tonumber(string.sub(s, 3)) end
local function floor(stream, last, limit, cutoff)
  local first = last - limit + 1
  if first < 1 then first = 1 end
  if cutoff == '' then return first end
  cutoff = tonumber(cutoff)
  while true do
    local head = redis.call('XRANGE', stream, '-', '+', 'COUNT', ${PRUNE_BATCH})
    if #head == 0 then return last + 1 end
    for _, entry in ipairs(head) do
      if tonumber(entry[2][2]) >= cutoff then
        redis.call('XTRIM', stream, 'MINID', entry[1])
        local young = nid(entry[1])
        if young > first then first = young end
        return first
      end
    end
    redis.call('XTRIM', stream, 'MINID', sid(nid(head[#head][1]) + 1))
  end
end
local function last_id(counter) return tonumber(redis.call('GET', counter) or '0') end
local function messages(rows, from, to, step, out)
  for i = from, to, step do out[#out + 1] = rows[i][2][4] end
  return out
end
`;

// KEYS: stream, counter, [ref]. ARGV: body (message JSON without its opening brace and id),
// now ms, idempotency window ms, historyLimit, cutoff ms or '', channel or ''.
// Returns {duplicate 0|1, message JSON}.
const APPEND = new Script(
  PRELUDE + `
local stream, counter, ref = KEYS[1], KEYS[2], KEYS[3]
local now, window, limit = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
if ref then
  local seen = redis.call('GET', ref)
  if seen then
    local space = string.find(seen, ' ', 1, true)
    if now - tonumber(string.sub(seen, 1, space - 1)) < window then
      return {1, string.sub(seen, space + 1)}
    end
  end
end
local id = redis.call('INCR', counter)
local message = '{"id":' .. string.format('%d', id) .. ',' .. ARGV[1]
redis.call('XADD', stream, 'MAXLEN', '~', limit, sid(id), 't', ARGV[2], 'm', message)
floor(stream, id, limit, ARGV[5])
if ref then redis.call('SET', ref, ARGV[2] .. ' ' .. message, 'PX', window) end
if ARGV[6] ~= '' then redis.call('PUBLISH', ARGV[6], message) end
return {0, message}
`,
);

// KEYS: stream, counter. ARGV: historyLimit, cutoff, 'after'|'before'|'latest', bound, limit.
// Returns {hasMore 0|1, message JSON…} ascending.
const HISTORY = new Script(
  PRELUDE + `
local stream, counter = KEYS[1], KEYS[2]
local last = last_id(counter)
if last == 0 then return {0} end
local first = floor(stream, last, tonumber(ARGV[1]), ARGV[2])
local mode, bound, limit = ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
if mode == 'after' then
  local from = math.max(bound + 1, first)
  if from > last then return {0} end
  local rows = redis.call('XRANGE', stream, sid(from), sid(last), 'COUNT', limit + 1)
  local n = math.min(#rows, limit)
  return messages(rows, 1, n, 1, {#rows > limit and 1 or 0})
end
local to = last
if mode == 'before' then to = math.min(bound - 1, last) end
if to < first then return {0} end
local rows = redis.call('XREVRANGE', stream, sid(to), sid(first), 'COUNT', limit + 1)
local n = math.min(#rows, limit)
return messages(rows, n, 1, -1, {#rows > limit and 1 or 0})
`,
);

// KEYS: stream, counter. ARGV: historyLimit, cutoff, since, limit.
// Returns {lastId, complete 0|1, message JSON…} ascending.
const SINCE = new Script(
  PRELUDE + `
local stream, counter = KEYS[1], KEYS[2]
local last = last_id(counter)
local since, limit = tonumber(ARGV[3]), tonumber(ARGV[4])
local rows = {}
if last > 0 then
  local from = math.max(since + 1, floor(stream, last, tonumber(ARGV[1]), ARGV[2]))
  if from <= last then
    rows = redis.call('XRANGE', stream, sid(from), sid(last), 'COUNT', limit)
  end
end
local complete = (since <= last and #rows == last - since) and 1 or 0
return messages(rows, 1, #rows, 1, {last, complete})
`,
);

/** Keeps history in Redis streams; see the module doc for keys and guarantees. */
export class RedisMessageStore implements MessageStore {
  /** True when `append` publishes the stored message on the broker channel itself; the caller
   * must not publish it again. */
  readonly publishesOnAppend: boolean;
  readonly #client: RedisClient;
  readonly #options: StoreOptions;
  readonly #prefix: string;
  readonly #channel: string;
  readonly #now: () => number;
  readonly #pending = new Set<Promise<unknown>>();
  #closed = false;

  private constructor(client: RedisClient, options: RedisStoreOptions) {
    this.#client = client;
    this.#options = options;
    this.#prefix = options.prefix ?? DEFAULT_REDIS_PREFIX;
    this.#channel = options.channel ?? "";
    this.#now = options.now ?? Date.now;
    this.publishesOnAppend = options.channel !== undefined;
  }

  /** Connects to the Redis at `url`; rejects with "Cannot connect to Redis: …" when it cannot. */
  static async open(url: string, options: RedisStoreOptions): Promise<RedisMessageStore> {
    if (!(options.historyLimit >= 1)) {
      throw new RangeError("Cannot open store: historyLimit must be at least 1");
    }
    return new RedisMessageStore(await connectRedis(url, "store"), options);
  }

  append(input: AppendInput): Promise<AppendResult> {
    if (this.#closed) return Promise.reject(new Error("Cannot append: store is closed"));
    const now = this.#now();
    const conversation = conversationKey(input.draft);
    const keys = [this.#key("h", conversation), this.#key("id", conversation)];
    if (input.ref !== undefined) {
      keys.push(this.#key("ref", JSON.stringify([input.user, input.ref])));
    }
    // The script prepends `{"id":<id>,` to the rest of the object, so the JSON it stores and
    // publishes is complete without Lua ever encoding JSON.
    const body = JSON.stringify({ ...input.draft, ts: new Date(now).toISOString() }).slice(1);
    const reply = APPEND.run<[number, string]>(this.#client, keys, [
      body,
      String(now),
      String(IDEMPOTENCY_WINDOW_MS),
      String(this.#options.historyLimit),
      this.#cutoff(now),
      this.#channel,
    ]);
    return this.#track(
      reply.then(([duplicate, json]) => ({
        message: JSON.parse(json) as ChatMessage,
        duplicate: duplicate === 1,
      })),
      "append",
    );
  }

  history(query: HistoryQuery): Promise<HistoryPage> {
    if (this.#closed) return Promise.reject(new Error("Cannot read history: store is closed"));
    const [mode, bound] = query.after !== undefined
      ? ["after", query.after]
      : query.before !== undefined
      ? ["before", query.before]
      : ["latest", 0];
    const reply = HISTORY.run<[number, ...string[]]>(
      this.#client,
      this.#keys(query.conversation),
      [...this.#retention(), mode, String(bound), String(query.limit)],
    );
    return this.#track(
      reply.then(([hasMore, ...rows]) => ({
        messages: rows.map((row) => JSON.parse(row) as ChatMessage),
        hasMore: hasMore === 1,
      })),
      "read history",
    );
  }

  since(conversation: string, since: number, limit: number): Promise<Replay> {
    if (this.#closed) return Promise.reject(new Error("Cannot read history: store is closed"));
    const reply = SINCE.run<[number, number, ...string[]]>(
      this.#client,
      this.#keys(conversation),
      [...this.#retention(), String(since), String(limit)],
    );
    return this.#track(
      reply.then(([lastId, complete, ...rows]) => ({
        messages: rows.map((row) => JSON.parse(row) as ChatMessage),
        complete: complete === 1,
        lastId,
      })),
      "read history",
    );
  }

  lastId(conversation: string): Promise<number> {
    if (this.#closed) return Promise.reject(new Error("Cannot read history: store is closed"));
    const reply = this.#client.sendCommand(["GET", this.#key("id", conversation)]) as Promise<
      string | null
    >;
    return this.#track(reply.then((id) => id === null ? 0 : Number(id)), "read history");
  }

  ping(): Promise<void> {
    if (this.#closed) return Promise.reject(new Error("Store is closed"));
    return this.#track(this.#client.sendCommand(["PING"]).then(() => {}), "reach Redis");
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await Promise.allSettled(this.#pending);
    // Graceful: replies still in flight arrive before the socket closes.
    await this.#client.close().catch(() => this.#client.destroy());
  }

  #key(kind: "h" | "id" | "ref", name: string): string {
    return `${this.#prefix}${kind}:${name}`;
  }

  #keys(conversation: string): string[] {
    return [this.#key("h", conversation), this.#key("id", conversation)];
  }

  #retention(): [string, string] {
    return [String(this.#options.historyLimit), this.#cutoff(this.#now())];
  }

  /** The oldest `ts` (ms) still kept under `historyDays`, or `''` when age does not matter. */
  #cutoff(now: number): string {
    const days = this.#options.historyDays;
    return days > 0 ? String(now - days * DAY_MS) : "";
  }

  /** Remembers an operation until it settles, so `close` can wait for it, and words its error. */
  #track<T>(operation: Promise<T>, verb: string): Promise<T> {
    const tracked = operation.catch((error: unknown) => {
      const reason = error instanceof Error ? error.message : String(error);
      throw new Error(`Cannot ${verb}: Redis failed: ${reason}`, { cause: error });
    });
    this.#pending.add(tracked);
    const forget = () => this.#pending.delete(tracked);
    tracked.then(forget, forget);
    return tracked;
  }
}
