// @ts-check
/// <reference lib="dom" />
/**
 * Renders the whole page from the state: sign-in or chat, the top bar (title, connection status,
 * who one is), the notice bar, the composer's state, and, through the sidebar and message modules,
 * the lists. It only reads the state; `invalidate()` schedules it once per task.
 */
import { announce, dom } from "./dom.js";
import { renderMessages, renderTyping } from "./messages.js";
import { renderConversations, renderUsers } from "./sidebar.js";
import { current, label, state } from "./state.js";

/** Makes the page match the state. */
export function render() {
  const signedIn = state.auth !== null || state.me !== "";
  dom.login.hidden = signedIn;
  dom.chat.hidden = !signedIn;
  dom.loginNotice.textContent = signedIn ? "" : state.notice;
  if (!signedIn) return;
  renderStatus();
  dom.me.textContent = state.me || "…";
  dom.sidebar.classList.toggle("open", state.sidebarOpen);
  dom.scrim.hidden = !state.sidebarOpen;
  dom.menu.setAttribute("aria-expanded", String(state.sidebarOpen));
  dom.notice.textContent = state.notice;
  dom.notice.hidden = state.notice === "";
  const convs = [...state.convs.values()];
  renderConversations(convs);
  const conv = current();
  dom.title.textContent = conv === undefined ? "Parley" : label(conv);
  dom.subtitle.textContent = conv === undefined
    ? ""
    : conv.kind === "dm"
    ? "Direct message"
    : `${conv.users.size} online`;
  dom.messages.setAttribute("aria-label", conv ? `Messages in ${label(conv)}` : "Messages");
  renderUsers(conv);
  renderMessages(conv);
  renderTyping(conv);
  dom.composer.disabled = dom.send.disabled = conv === undefined;
  dom.composer.placeholder = conv === undefined ? "Join a room to chat" : `Message ${label(conv)}`;
  const unread = convs.reduce((n, c) => n + c.unread, 0);
  document.title = unread > 0 ? `(${unread}) Parley` : "Parley";
}

function renderStatus() {
  const seconds = Math.max(1, Math.ceil((state.retryAt - Date.now()) / 1000));
  const text = {
    idle: "Offline",
    connecting: "Connecting…",
    online: "Online",
    reconnecting: `Reconnecting in ${seconds}s`,
    offline: "Offline",
  }[state.status];
  if (dom.status.textContent !== text) dom.status.textContent = text;
  // Announce changes of state, not every tick of the countdown.
  if (dom.status.dataset.state !== state.status && state.status !== "idle") {
    announce(`Connection: ${text.replace(/ in \d+s$/, "")}`);
  }
  dom.status.dataset.state = state.status;
  dom.reconnect.hidden = state.auth === null ||
    (state.status !== "reconnecting" && state.status !== "offline");
}
