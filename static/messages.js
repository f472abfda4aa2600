// @ts-check
/// <reference lib="dom" />
/**
 * Renders the conversation on screen: its message list (days, grouped senders, pending and failed
 * sends, the "load older" row) and who is typing. Rows are keyed, so unchanged ones keep their
 * nodes; the list keeps the reader's view when older pages go in above, and follows new messages
 * when the reader is at the bottom.
 */
import { loadOlder } from "./actions.js";
import { clone, dom, part } from "./dom.js";
import { KeyedList } from "./keyed_list.js";
import { label, senderOf, state } from "./state.js";

/** @typedef {import("./state.js").ChatMessage} ChatMessage */
/** @typedef {import("./state.js").Conversation} Conversation */
/** @typedef {import("./state.js").Pending} Pending */

/** Consecutive messages of one sender within this gap (ms) are grouped under one header. */
const GROUP_GAP_MS = 5 * 60_000;
/** Scroll distances (px): load older history near the top, follow new messages near the bottom. */
export const NEAR_TOP_PX = 80;
const NEAR_BOTTOM_PX = 64;

const messageList = new KeyedList(dom.messages);
/** The conversation the list last showed: a switch scrolls to the bottom. */
let renderedKey = "";

/**
 * One row of the message list.
 * @typedef {{ key: string; kind: "day"; text: string }
 *   | { key: string; kind: "top"; conv: Conversation }
 *   | { key: string; kind: "message"; message: ChatMessage; grouped: boolean }
 *   | { key: string; kind: "pending"; pending: Pending }} Row
 */

/** Renders the message list of a conversation (empty for none). @param {Conversation | undefined} conv */
export function renderMessages(conv) {
  const list = dom.messages;
  const switched = renderedKey !== state.current;
  const nearBottom = list.scrollHeight - list.scrollTop - list.clientHeight < NEAR_BOTTOM_PX;
  const anchor = list.querySelector("[data-testid=message]");
  const anchorTop = anchor instanceof HTMLElement ? anchor.offsetTop : 0;

  /** @type {Row[]} */
  const rows = [];
  if (conv !== undefined) {
    const k = conv.key; // keys name the conversation: ids repeat across conversations
    rows.push({ key: `${k}|top`, kind: "top", conv });
    /** @type {ChatMessage | undefined} */
    let previous;
    for (const message of conv.messages) {
      const day = new Date(message.ts).toDateString();
      const newDay = previous === undefined || new Date(previous.ts).toDateString() !== day;
      if (newDay) rows.push({ key: `${k}|day:${day}`, kind: "day", text: dayLabel(message.ts) });
      const grouped = !newDay && previous !== undefined &&
        senderOf(previous) === senderOf(message) &&
        Date.parse(message.ts) - Date.parse(previous.ts) < GROUP_GAP_MS;
      rows.push({ key: `${k}|m:${message.id}`, kind: "message", message, grouped });
      previous = message;
    }
    for (const pending of conv.pending.values()) {
      if (pending.echoId === 0 || pending.failed) {
        rows.push({ key: `${k}|p:${pending.ref}`, kind: "pending", pending });
      }
    }
  }
  messageList.update(rows, (r) => r.key, createRow, patchRow);

  if (switched || state.stickToBottom || nearBottom) list.scrollTop = list.scrollHeight;
  else if (anchor instanceof HTMLElement && anchor.isConnected) {
    list.scrollTop += anchor.offsetTop - anchorTop; // older pages went in above: keep the view
  }
  renderedKey = state.current;
  state.stickToBottom = false;
  if (conv?.hasMore && list.scrollHeight <= list.clientHeight + NEAR_TOP_PX) loadOlder();
}

/** @param {Row} row */
function createRow(row) {
  if (row.kind === "day") {
    const node = clone("tpl-day");
    part(node, "span").textContent = row.text;
    return node;
  }
  if (row.kind === "top") return clone("tpl-top");
  const node = clone("tpl-message");
  const sender = row.kind === "message" ? senderOf(row.message) : state.me;
  const avatar = part(node, ".avatar");
  avatar.textContent = (sender.match(/\p{L}|\p{N}/u)?.[0] ?? "?").toUpperCase();
  avatar.style.setProperty("--hue", String(hue(sender))); // CSSOM, not an attribute: CSP-safe
  node.dataset.sender = part(node, ".sender").textContent = sender;
  if (row.kind === "message") {
    const { id, ts, content } = row.message;
    node.dataset.id = String(id);
    node.dataset.pending = "false";
    part(node, ".content").textContent = content;
    const time = part(node, "time");
    const date = new Date(ts);
    const valid = !Number.isNaN(date.getTime());
    time.setAttribute("datetime", ts);
    time.title = valid ? date.toLocaleString() : ts;
    time.textContent = valid
      ? date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })
      : ts;
  } else {
    node.dataset.pending = "true";
    node.dataset.ref = row.pending.ref;
    part(node, ".content").textContent = row.pending.content;
    part(node, "time").remove();
  }
  return node;
}

/** @param {HTMLElement} node @param {Row} row */
function patchRow(node, row) {
  if (row.kind === "top") {
    const button = /** @type {HTMLButtonElement} */ (part(node, "button"));
    const { conv } = row;
    button.hidden = !conv.loaded || !conv.hasMore;
    button.disabled = conv.loadingOlder;
    button.textContent = conv.loadingOlder ? "Loading older messages…" : "Load older messages";
    part(node, ".start").textContent = !conv.loaded
      ? "Loading…"
      : conv.hasMore
      ? ""
      : `This is the beginning of ${label(conv)}.`;
  } else if (row.kind === "message") {
    node.classList.toggle("grouped", row.grouped);
    node.classList.toggle("own", senderOf(row.message) === state.me);
  } else if (row.kind === "pending") {
    const { failed, error } = row.pending;
    node.classList.add("own");
    node.classList.toggle("pending", !failed);
    node.classList.toggle("failed", failed);
    node.dataset.failed = String(failed);
    part(node, ".state").textContent = failed ? "Not sent" : "Sending…";
    part(node, ".error").textContent = error;
    part(node, ".failure").hidden = !failed;
  }
}

/** Renders who is typing in a conversation. @param {Conversation | undefined} conv */
export function renderTyping(conv) {
  const now = Date.now();
  const names = [...conv?.typing ?? []].filter(([, until]) => until > now).map(([user]) => user);
  dom.typing.textContent = names.length === 0
    ? ""
    : names.length === 1
    ? `${names[0]} is typing…`
    : names.length === 2
    ? `${names[0]} and ${names[1]} are typing…`
    : `${names.length} people are typing…`;
}

/** @param {string} ts */
function dayLabel(ts) {
  const date = new Date(ts);
  const today = new Date();
  const yesterday = new Date(today.getFullYear(), today.getMonth(), today.getDate() - 1);
  if (date.toDateString() === today.toDateString()) return "Today";
  if (date.toDateString() === yesterday.toDateString()) return "Yesterday";
  /** @type {Intl.DateTimeFormatOptions} */
  const format = { weekday: "long", month: "long", day: "numeric" };
  if (date.getFullYear() !== today.getFullYear()) format.year = "numeric";
  return date.toLocaleDateString([], format);
}

/** Picks a stable avatar hue for a name. @param {string} name */
function hue(name) {
  let hash = 0;
  for (const ch of name) hash = (hash * 31 + (ch.codePointAt(0) ?? 0)) % 360;
  return hash;
}
