// @ts-check
/// <reference lib="dom" />
/**
 * Renders the sidebar: the rooms and direct-message conversations with their unread badges, and
 * the people in the room on screen (oneself first). Rows are keyed, so they keep focus.
 */
import { clone, dom, part } from "./dom.js";
import { KeyedList } from "./keyed_list.js";
import { label, state } from "./state.js";

/** @typedef {import("./state.js").Conversation} Conversation */

const roomList = new KeyedList(dom.rooms);
const dmList = new KeyedList(dom.dms);
const userList = new KeyedList(dom.users);

/** Renders the room and direct-message lists. @param {Conversation[]} convs */
export function renderConversations(convs) {
  roomList.update(convs.filter((c) => c.kind === "room"), (c) => c.key, createConv, patchConv);
  dmList.update(convs.filter((c) => c.kind === "dm"), (c) => c.key, createConv, patchConv);
}

/** @param {Conversation} conv */
function createConv(conv) {
  const row = clone("tpl-conv");
  const button = part(row, ".conv");
  const room = conv.kind === "room";
  button.dataset.testid = room ? "room-item" : "dm-item";
  button.setAttribute(room ? "data-room" : "data-user", conv.name);
  button.dataset.key = conv.key;
  part(row, ".sigil").textContent = room ? "#" : "@";
  part(row, ".name").textContent = conv.name;
  const leaveButton = part(row, ".leave");
  if (room) {
    leaveButton.dataset.room = conv.name;
    leaveButton.setAttribute("aria-label", `Leave room ${conv.name}`);
  } else leaveButton.remove();
  return row;
}

/** @param {HTMLElement} row @param {Conversation} conv */
function patchConv(row, conv) {
  const button = part(row, ".conv");
  const badge = part(row, ".badge");
  badge.textContent = conv.unread > 99 ? "99+" : String(conv.unread);
  badge.hidden = conv.unread === 0;
  button.dataset.unread = String(conv.unread);
  const joining = conv.kind === "room" && !conv.joined ? " (joining)" : "";
  const unread = conv.unread > 0 ? `, ${conv.unread} unread` : "";
  button.setAttribute("aria-label", `${label(conv)}${joining}${unread}`);
  if (conv.key === state.current) button.setAttribute("aria-current", "true");
  else button.removeAttribute("aria-current");
}

/** Renders the people in the room on screen (none for a DM). @param {Conversation | undefined} conv */
export function renderUsers(conv) {
  const users = conv?.kind === "room" ? [...conv.users].sort(byMeThenName) : [];
  dom.usersHeading.textContent = conv?.kind === "room" ? `People in #${conv.name}` : "People";
  userList.update(users, (u) => u, (user) => {
    const row = clone("tpl-user");
    const button = /** @type {HTMLButtonElement} */ (part(row, ".user"));
    button.dataset.user = user;
    part(row, ".name").textContent = user === state.me ? `${user} (you)` : user;
    button.classList.toggle("self", user === state.me);
    if (user === state.me) button.disabled = true;
    else button.setAttribute("aria-label", `Send a direct message to ${user}`);
    return row;
  }, () => {});
}

/** @param {string} a @param {string} b */
function byMeThenName(a, b) {
  return Number(b === state.me) - Number(a === state.me) || a.localeCompare(b);
}
