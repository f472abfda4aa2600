// @ts-check
/// <reference lib="dom" />
/// <reference lib="dom.iterable" />
/**
 * Parley browser client: one page, no framework, no build step. It speaks protocol v1
 * (docs/PROTOCOL.md) over one WebSocket and renders rooms, direct messages, presence and typing.
 *
 * This is the entry module (index.html loads it with `<script type="module">`): it connects the
 * modules and turns DOM events into actions. The modules, each served from `static/`:
 * - `state.js`: the single `state` object and its indexes; `invalidate()` schedules one render.
 * - `connection.js`: owns the WebSocket, its reconnect backoff and keep-alive ping; `send()` is the
 *   only writer to the socket.
 * - `inbound.js`: applies each server frame to the state.
 * - `actions.js`: what a person does (sign in, join, leave, open, send, retry, type, scroll back).
 * - `render.js`, `sidebar.js`, `messages.js`: functions from state to DOM. Lists are keyed
 *   (`keyed_list.js`) so unchanged rows keep their nodes, their focus and the reader's scroll.
 * - `dom.js`: the page's fixed elements and templates.
 *
 * Data from the network is written with `textContent`/`setAttribute` only, never as HTML.
 */
import {
  join,
  leave,
  loadOlder,
  open,
  retry,
  sendComposer,
  signOut,
  start,
  typed,
} from "./actions.js";
import { connect, hasSocket, setReceiver } from "./connection.js";
import { dom, fitComposer } from "./dom.js";
import { receive } from "./inbound.js";
import { NEAR_TOP_PX } from "./messages.js";
import { render } from "./render.js";
import {
  conversation,
  current,
  invalidate,
  notify,
  setRenderer,
  snapshot,
  state,
} from "./state.js";

const ROOM_NAME = /^[A-Za-z0-9._-]{1,64}$/;

setRenderer(render);
setReceiver(receive);

/**
 * Calls `then` with the closest element matching a selector around a click target.
 * @param {HTMLElement} parent
 * @param {string} selector
 * @param {(node: HTMLElement) => void} then
 */
function delegate(parent, selector, then) {
  parent.addEventListener("click", (event) => {
    const node = event.target instanceof Element ? event.target.closest(selector) : null;
    if (node instanceof HTMLElement && parent.contains(node)) then(node);
  });
}

dom.loginForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const token = dom.token.value.trim();
  const name = dom.name.value.trim();
  if (token !== "") start({ token });
  else if (name !== "") start({ name });
  else {
    state.notice = "Enter a name, or paste a token.";
    invalidate();
    dom.name.focus();
  }
});
dom.joinForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const name = dom.joinInput.value.trim().replace(/^#/, "");
  if (!ROOM_NAME.test(name)) return notify("Room names are 1–64 letters, digits, -, _ or dots.");
  dom.joinInput.value = "";
  join(name);
  dom.composer.focus();
});
for (const list of [dom.rooms, dom.dms]) {
  delegate(list, ".conv", (node) => open(node.dataset.key ?? ""));
  delegate(list, ".leave", (node) => leave(node.dataset.room ?? ""));
}
delegate(dom.users, ".user", (node) => {
  open(conversation("dm", node.dataset.user ?? "").key);
  dom.composer.focus();
});
delegate(dom.messages, ".older", loadOlder);
delegate(dom.messages, ".retry", (node) => retry(node.closest("li")?.dataset.ref ?? ""));
dom.messages.addEventListener("scroll", () => {
  if (dom.messages.scrollTop < NEAR_TOP_PX) loadOlder();
}, { passive: true });
dom.composerForm.addEventListener("submit", (event) => {
  event.preventDefault();
  sendComposer();
});
dom.composer.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    sendComposer();
  }
});
dom.composer.addEventListener("input", () => {
  fitComposer();
  typed();
});
dom.menu.addEventListener("click", () => {
  state.sidebarOpen = !state.sidebarOpen;
  invalidate();
});
dom.scrim.addEventListener("click", () => {
  state.sidebarOpen = false;
  invalidate();
});
document.addEventListener("keydown", (event) => {
  if (event.key !== "Escape" || !state.sidebarOpen) return;
  state.sidebarOpen = false;
  invalidate();
  dom.menu.focus();
});
document.addEventListener("visibilitychange", () => {
  const conv = current();
  if (document.visibilityState !== "visible" || conv === undefined || conv.unread === 0) return;
  conv.unread = 0;
  invalidate();
});
dom.reconnect.addEventListener("click", () => {
  state.attempt = 0;
  connect();
});
dom.signOut.addEventListener("click", signOut);
globalThis.addEventListener("online", () => {
  if (state.auth !== null && !hasSocket()) connect();
});
Reflect.set(globalThis, "parley", {
  get state() {
    return snapshot();
  },
});

{
  const params = new URLSearchParams(location.search);
  const token = params.get("token");
  const name = params.get("name");
  if (token) {
    params.delete("token"); // keep the token out of the address bar and browser history
    history.replaceState(null, "", `${location.pathname}${params.size > 0 ? `?${params}` : ""}`);
    start({ token });
  } else if (name) {
    dom.name.value = name;
    start({ name });
  } else {
    try {
      dom.name.value = localStorage.getItem("parley.name") ?? "";
    } catch { /* storage disabled */ }
    render();
    dom.name.focus();
  }
}
