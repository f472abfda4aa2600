// @ts-check
/// <reference lib="dom" />
/**
 * The browser client's state: the single `state` object, the indexes beside it, and the
 * conversation helpers every other module reads it through.
 *
 * Invariants:
 * - Only the connection, inbound-frame and action modules mutate the state, and each mutation
 *   ends with `invalidate()`, which schedules one render.
 * - A conversation holds confirmed messages keyed by id (ascending, each id once) and pending
 *   messages keyed by their client `ref`. An `ack` turns a pending message into the confirmed one
 *   with the ack's id, so the broadcast copy of one's own message lands on that id and shows once.
 */

/** @typedef {import("../message.ts").ChatMessage} ChatMessage */
/** @typedef {"latest" | "older" | "after"} HistoryMode */
/** @typedef {{ name: string } | { token: string }} Auth */

/**
 * A message sent by this page that the server has not acknowledged yet.
 * @typedef {object} Pending
 * @property {string} ref
 * @property {string} content
 * @property {boolean} failed
 * @property {string} error why it failed, for people
 * @property {number} echoId id of a broadcast from me with this content that came before the ack
 * @property {ReturnType<typeof setTimeout> | undefined} timer the ack timeout
 */

/**
 * A room or a direct-message conversation.
 * @typedef {object} Conversation
 * @property {string} key `room:<name>` or `dm:<user>`
 * @property {"room" | "dm"} kind
 * @property {string} name the room's name, or the other user's
 * @property {Map<number, ChatMessage>} byId
 * @property {ChatMessage[]} messages confirmed messages, ascending id
 * @property {Map<string, Pending>} pending by ref, in send order
 * @property {number} lastId highest id seen, the `since` of a resuming join
 * @property {boolean} loaded the newest history page has arrived
 * @property {boolean} hasMore older history exists on the server
 * @property {boolean} loadingOlder
 * @property {number} unread
 * @property {Set<string>} users rooms only: who is online here
 * @property {Map<string, number>} typing user → time (ms) their indicator expires
 * @property {boolean} joined rooms only
 * @property {number | null} joinSince the `since` of an unanswered resuming join
 */

/** A notice disappears after this long (ms). */
const NOTICE_MS = 6_000;

/** Everything the page shows, in one object. */
export const state = {
  /** @type {Auth | null} */
  auth: null,
  me: "",
  /** @type {"idle" | "connecting" | "online" | "reconnecting" | "offline"} */
  status: "idle",
  /** Consecutive failed connection attempts, the backoff exponent. */
  attempt: 0,
  /** When (ms) the scheduled reconnect fires. */
  retryAt: 0,
  /** @type {Map<string, Conversation>} */
  convs: new Map(),
  current: "",
  notice: "",
  sidebarOpen: false,
  /** The next render scrolls the message list to the bottom (set when the person sends). */
  stickToBottom: false,
};
/** @type {Map<string, string>} ref of a pending chat message → its conversation key */
export const refIndex = new Map();
/** @type {Map<string, { kind: "join" | "history"; key: string; mode: HistoryMode }>} */
export const requests = new Map();
/** @type {Map<string, string>} unsent composer text per conversation key */
export const drafts = new Map();

/**
 * Returns the conversation of that kind and name, creating it when new.
 * @param {"room" | "dm"} kind
 * @param {string} name
 * @returns {Conversation}
 */
export function conversation(kind, name) {
  const key = `${kind}:${name}`;
  let conv = state.convs.get(key);
  if (conv === undefined) {
    conv = {
      key,
      kind,
      name,
      byId: new Map(),
      messages: [],
      pending: new Map(),
      lastId: 0,
      loaded: false,
      hasMore: false,
      loadingOlder: false,
      unread: 0,
      users: new Set(),
      typing: new Map(),
      joined: false,
      joinSince: null,
    };
    state.convs.set(key, conv);
  }
  return conv;
}

/** Returns the conversation on screen, if any. */
export function current() {
  return state.convs.get(state.current);
}

/**
 * Adds messages to a conversation, skipping ids it already holds and keeping ascending order.
 * @param {Conversation} conv
 * @param {ChatMessage[]} messages
 */
export function insert(conv, messages) {
  let sorted = true;
  for (const m of messages) {
    if (typeof m?.id !== "number" || conv.byId.has(m.id)) continue;
    const last = conv.messages.at(-1);
    if (last !== undefined && last.id > m.id) sorted = false;
    conv.byId.set(m.id, m);
    conv.messages.push(m);
    if (m.id > conv.lastId) conv.lastId = m.id;
  }
  if (!sorted) conv.messages.sort((a, b) => a.id - b.id);
}

/** Returns the sender of a chat message. @param {ChatMessage} m */
export function senderOf(m) {
  return m.type === "message" ? m.sender : m.from;
}

/** Returns a conversation's name as shown: `#room` or `@user`. @param {Conversation} conv */
export function label(conv) {
  return conv.kind === "room" ? `#${conv.name}` : `@${conv.name}`;
}

/** Returns a plain snapshot of the state, for debugging and tests (`window.parley.state`). */
export function snapshot() {
  return {
    me: state.me,
    status: state.status,
    current: state.current,
    conversations: [...state.convs.values()].map((c) => ({
      key: c.key,
      lastId: c.lastId,
      unread: c.unread,
      hasMore: c.hasMore,
      users: [...c.users],
      messages: c.messages.map((m) => ({ ...m })),
      pending: [...c.pending.values()].map((p) => ({ ...p, timer: undefined })),
    })),
  };
}

/** The page's render function; app.js supplies it, so this module needs no rendering code. */
let renderer = () => {};
let renderQueued = false;

/** Sets the function that `invalidate()` schedules. @param {() => void} render */
export function setRenderer(render) {
  renderer = render;
}

/** Schedules one render for all the state changes of the current task. */
export function invalidate() {
  if (renderQueued) return;
  renderQueued = true;
  queueMicrotask(() => {
    renderQueued = false;
    renderer();
  });
}

/** Shows a short message in the notice bar. @param {string} text */
export function notify(text) {
  state.notice = text;
  setTimeout(() => {
    if (state.notice === text) state.notice = "";
    invalidate();
  }, NOTICE_MS);
  invalidate();
}
