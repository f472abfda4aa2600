// @ts-check
/// <reference lib="dom" />
/**
 * What a person does: sign in and out, join, leave and open conversations, send, type and scroll
 * back. Each action updates the state and ends with `invalidate()`; frames go out through the
 * connection module.
 */
import { dom, fitComposer } from "./dom.js";
import {
  awaiting,
  connect,
  disconnect,
  isOpen,
  newRef,
  requestHistory,
  send,
  sendJoin,
  transmit,
} from "./connection.js";
import { conversation, current, drafts, invalidate, refIndex, requests, state } from "./state.js";

/** @typedef {import("./state.js").Auth} Auth */
/** @typedef {import("./state.js").Pending} Pending */

/** At most one `typing` frame per this interval (ms) while the person types. */
const TYPING_SEND_MS = 2_000;

/** Signs in and connects. @param {Auth} auth */
export function start(auth) {
  state.auth = auth;
  state.attempt = 0;
  state.notice = "";
  if ("name" in auth) {
    try {
      localStorage.setItem("parley.name", auth.name);
    } catch { /* storage may be disabled; remembering the name is a nicety */ }
  }
  connect();
}

/** Disconnects and forgets everything about the session. */
export function signOut() {
  disconnect();
  for (const conv of state.convs.values()) {
    for (const p of conv.pending.values()) clearTimeout(p.timer);
  }
  Object.assign(state, { auth: null, me: "", status: "idle", current: "", attempt: 0 });
  state.convs.clear();
  refIndex.clear();
  requests.clear();
  drafts.clear();
  history.replaceState(null, "", location.pathname);
  invalidate();
}

/** Joins a room by name (or shows it when already joined). @param {string} name */
export function join(name) {
  const conv = conversation("room", name);
  if (!conv.joined) sendJoin(conv);
  open(conv.key);
}

/** Leaves a room; offline, it is simply forgotten (it will not be re-joined). @param {string} name */
export function leave(name) {
  if (!send({ type: "leave", room: name })) drop(`room:${name}`);
}

/** Removes a conversation and moves off it when it was on screen. @param {string} key */
export function drop(key) {
  const conv = state.convs.get(key);
  if (conv === undefined) return;
  for (const p of conv.pending.values()) clearTimeout(p.timer);
  state.convs.delete(key);
  if (state.current === key) {
    state.current = "";
    const next = [...state.convs.keys()][0];
    if (next !== undefined) open(next);
  }
}

/** Shows a conversation, loading its history the first time. @param {string} key */
export function open(key) {
  const conv = state.convs.get(key);
  if (conv === undefined) return;
  if (state.current !== key) {
    drafts.set(state.current, dom.composer.value);
    dom.composer.value = drafts.get(key) ?? "";
    fitComposer();
  }
  state.current = key;
  state.sidebarOpen = false;
  conv.unread = 0;
  const canLoad = conv.kind === "dm" || conv.joined;
  if (canLoad && !conv.loaded && !awaiting(conv, "latest")) requestHistory(conv, "latest");
  invalidate();
}

/** Sends the composer's text to the current conversation as a pending message. */
export function sendComposer() {
  const conv = current();
  const content = dom.composer.value;
  if (conv === undefined || content.trim() === "") return;
  /** @type {Pending} */
  const p = { ref: newRef(), content, failed: false, error: "", echoId: 0, timer: undefined };
  conv.pending.set(p.ref, p);
  refIndex.set(p.ref, conv.key);
  transmit(conv, p);
  dom.composer.value = "";
  drafts.delete(conv.key);
  fitComposer();
  state.stickToBottom = true;
  invalidate();
}

/** Resends a failed (or still pending) message by its ref. @param {string} ref */
export function retry(ref) {
  const conv = state.convs.get(refIndex.get(ref) ?? "");
  const p = conv?.pending.get(ref);
  if (conv !== undefined && p !== undefined) transmit(conv, p);
  invalidate();
}

let typingSentAt = 0;
let typingRoom = "";

/** Tells the room the person is typing, at most once per TYPING_SEND_MS. */
export function typed() {
  const conv = current();
  if (conv?.kind !== "room" || dom.composer.value.trim() === "") return;
  const now = Date.now();
  if (typingRoom === conv.name && now - typingSentAt < TYPING_SEND_MS) return;
  if (send({ type: "typing", room: conv.name })) {
    typingSentAt = now;
    typingRoom = conv.name;
  }
}

/** Asks for the page before the oldest loaded message of the current conversation. */
export function loadOlder() {
  const conv = current();
  if (conv === undefined || !conv.loaded || !conv.hasMore || conv.loadingOlder) return;
  if (!isOpen()) return;
  conv.loadingOlder = true;
  requestHistory(conv, "older");
  invalidate();
}
