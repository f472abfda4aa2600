// @ts-check
/// <reference lib="dom" />
/**
 * The connection: owns the WebSocket, its reconnect backoff and its keep-alive ping, and builds
 * the frames the page sends. `send()` is the only writer to the socket; frames it receives go to
 * the receiver app.js sets (the inbound-frame module), so this module never interprets them.
 *
 * A retry resends the same `ref`: the server stores a repeated ref once.
 */
import { invalidate, notify, requests, state } from "./state.js";

/** @typedef {import("./state.js").Conversation} Conversation */
/** @typedef {import("./state.js").HistoryMode} HistoryMode */
/** @typedef {import("./state.js").Pending} Pending */
/** @typedef {{ type: string } & Record<string, unknown>} ClientFrame */

const SUBPROTOCOL = "parley.v1";
/** Messages per history page; the protocol's default. */
const HISTORY_PAGE = 50;
/** Messages per catch-up page after a reconnect; the protocol's maximum. */
const CATCH_UP_PAGE = 100;
/** A sent message with no `ack` after this long (ms) is shown as failed, with a retry button. */
const ACK_TIMEOUT_MS = 10_000;
/** Reconnect backoff: first ceiling and cap (ms); each wait is uniform in [ceiling/2, ceiling]. */
const BACKOFF_START_MS = 500;
const BACKOFF_CAP_MS = 10_000;
/** Keep-alive `ping` interval (ms); no frame for DEAD_AFTER_MS (over two pings) means a dead link. */
const PING_MS = 25_000;
const DEAD_AFTER_MS = 60_000;

/** @type {WebSocket | null} */
let socket = null;
/** @type {ReturnType<typeof setTimeout> | undefined} */
let retryTimer;
/** @type {ReturnType<typeof setInterval> | undefined} */
let tickTimer;
/** @type {ReturnType<typeof setInterval> | undefined} */
let pingTimer;
let lastFrameAt = 0;
/** @type {(data: unknown) => void} */
let receiver = () => {};

/** Sets the function each received frame's data goes to. @param {(data: unknown) => void} fn */
export function setReceiver(fn) {
  receiver = fn;
}

/** Opens a socket for the signed-in identity, replacing any scheduled reconnect. */
export function connect() {
  clearTimeout(retryTimer);
  clearInterval(tickTimer);
  if (state.auth === null) return;
  const query = new URLSearchParams(state.auth);
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  state.status = "connecting";
  invalidate();
  let ws;
  try {
    ws = new WebSocket(`${scheme}//${location.host}/ws?${query}`, [SUBPROTOCOL]);
  } catch {
    scheduleReconnect();
    return;
  }
  socket = ws;
  ws.onmessage = (event) => {
    if (socket !== ws) return;
    lastFrameAt = Date.now();
    receiver(event.data);
  };
  ws.onclose = (event) => {
    if (socket !== ws) return; // a socket we dropped on purpose
    socket = null;
    onClose(event.code);
  };
}

/** Closes the socket on purpose (no reconnect) and stops every connection timer. */
export function disconnect() {
  const ws = socket;
  socket = null; // its close event is then ignored: no reconnect
  ws?.close(1000);
  clearTimeout(retryTimer);
  clearInterval(tickTimer);
  clearInterval(pingTimer);
}

/** Returns whether a socket exists, open or still connecting. */
export function hasSocket() {
  return socket !== null;
}

/** Returns whether the socket is open, so frames sent now go out. */
export function isOpen() {
  return socket?.readyState === WebSocket.OPEN;
}

/** Reacts to a lost connection according to the protocol's close codes. @param {number} code */
function onClose(code) {
  clearInterval(pingTimer);
  requests.clear();
  for (const conv of state.convs.values()) {
    conv.loadingOlder = false;
    conv.joinSince = null;
    conv.joined = false; // the server forgot this connection's rooms; onWelcome re-joins
  }
  if (code === 4001) {
    // Back to the sign-in form; the conversations stay, and resume once a new token connects.
    Object.assign(state, { status: "offline", auth: null, me: "" });
    return notify("Your session expired. Sign in with a new token.");
  }
  if (state.me === "") {
    notify("Cannot connect: the server is unreachable or refused the sign-in. Retrying.");
  } else if (code === 1008) {
    notify("Disconnected for sending too fast. Reconnecting shortly.");
    state.attempt = Math.max(state.attempt, 5); // do not retry at once
  } else if (code === 1009) {
    notify("The server refused a message that was too large.");
  }
  scheduleReconnect();
}

/** Waits with exponential backoff and jitter, then reconnects; waits for the network if offline. */
function scheduleReconnect() {
  if (state.auth === null) return;
  if (!navigator.onLine) {
    state.status = "offline"; // the `online` event reconnects
    invalidate();
    return;
  }
  const ceiling = Math.min(BACKOFF_CAP_MS, BACKOFF_START_MS * 2 ** state.attempt);
  const delay = ceiling / 2 + Math.random() * (ceiling / 2);
  state.attempt++;
  state.status = "reconnecting";
  state.retryAt = Date.now() + delay;
  retryTimer = setTimeout(connect, delay);
  clearInterval(tickTimer);
  tickTimer = setInterval(invalidate, 1000); // the countdown in the status
  invalidate();
}

/** Sends a frame when the socket is open; returns whether it went out. @param {ClientFrame} frame */
export function send(frame) {
  if (socket === null || socket.readyState !== WebSocket.OPEN) return false;
  socket.send(JSON.stringify(frame));
  return true;
}

/** Keeps idle connections alive and notices a dead link that never reported its close. */
export function startPing() {
  clearInterval(pingTimer);
  pingTimer = setInterval(() => {
    if (Date.now() - lastFrameAt > DEAD_AFTER_MS) socket?.close(4000, "No reply");
    else send({ type: "ping" });
  }, PING_MS);
}

/** Returns a fresh client ref; `crypto.randomUUID` exists only in secure contexts. */
export function newRef() {
  if (typeof crypto.randomUUID === "function") return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/** @param {Conversation} conv @param {HistoryMode} mode */
export function awaiting(conv, mode) {
  for (const q of requests.values()) {
    if (q.kind === "history" && q.key === conv.key && q.mode === mode) return true;
  }
  return false;
}

/** Asks for a page of a conversation's history. @param {Conversation} conv @param {HistoryMode} mode */
export function requestHistory(conv, mode) {
  const ref = newRef();
  /** @type {ClientFrame} */
  const frame = conv.kind === "room"
    ? { type: "history", room: conv.name }
    : { type: "history", with: conv.name };
  frame.limit = mode === "after" ? CATCH_UP_PAGE : HISTORY_PAGE;
  frame.ref = ref;
  if (mode === "older" && conv.messages[0] !== undefined) frame.before = conv.messages[0].id;
  if (mode === "after") frame.after = conv.lastId;
  if (send(frame)) requests.set(ref, { kind: "history", key: conv.key, mode });
}

/** Asks to join a room afresh; `joined` then loads its history. @param {Conversation} conv */
export function sendJoin(conv) {
  const ref = newRef();
  if (send({ type: "join", room: conv.name, ref })) {
    requests.set(ref, { kind: "join", key: conv.key, mode: "latest" });
  }
}

/**
 * Sends (or resends, with the same ref) a pending message and arms its ack timeout. Offline it
 * stays pending: `onWelcome` sends it again.
 * @param {Conversation} conv
 * @param {Pending} p
 */
export function transmit(conv, p) {
  clearTimeout(p.timer);
  p.failed = false;
  p.error = "";
  send(
    conv.kind === "room"
      ? { type: "message", room: conv.name, content: p.content, ref: p.ref }
      : { type: "direct", to: conv.name, content: p.content, ref: p.ref },
  );
  p.timer = setTimeout(() => {
    p.failed = true;
    p.error = "No reply from the server.";
    invalidate();
  }, ACK_TIMEOUT_MS);
}
