// @ts-check
/// <reference lib="dom" />
/// <reference lib="dom.iterable" />
/**
 * Parley browser client: one page, no framework, no build step. It speaks protocol v1
 * (docs/PROTOCOL.md) over one WebSocket and renders rooms, direct messages, presence and typing.
 *
 * Structure, top to bottom:
 * 1. Tunables.
 * 2. State: the single `state` object plus two ref indexes. Only the functions in sections 3–5
 *    mutate it, and each mutation ends with `invalidate()`, which schedules one `render()`.
 * 3. Connection: owns the WebSocket, its reconnect backoff and its keep-alive ping. `send()` is the
 *    only writer to the socket.
 * 4. Inbound frames: `handleFrame()` applies one server frame to the state.
 * 5. User actions: sign in, join, leave, open a conversation, send, retry, type.
 * 6. Rendering: functions from state to DOM. Lists are keyed (`KeyedList`) so unchanged rows keep
 *    their nodes, their focus and the reader's scroll position.
 *
 * Invariants:
 * - Data from the network is written with `textContent`/`setAttribute` only, never as HTML.
 * - A conversation holds confirmed messages keyed by id (ascending, each id once) and pending
 *   messages keyed by their client `ref`. An `ack` turns a pending message into the confirmed one
 *   with the ack's id, so the broadcast copy of one's own message lands on that id and shows once.
 * - A retry resends the same `ref`: the server stores a repeated ref once.
 */

/** @typedef {import("../message.ts").ServerFrame} ServerFrame */
/** @typedef {import("../message.ts").ChatMessage} ChatMessage */
/** @typedef {"latest" | "older" | "after"} HistoryMode */
/** @typedef {{ name: string } | { token: string }} Auth */
/** @typedef {{ type: string } & Record<string, unknown>} ClientFrame */

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

// ---------------------------------------------------------------------------------------------
// 1. Tunables

const SUBPROTOCOL = "parley.v1";
/** Messages per history page; the protocol's default. */
const HISTORY_PAGE = 50;
/** Messages per catch-up page after a reconnect; the protocol's maximum. */
const CATCH_UP_PAGE = 100;
/** A sent message with no `ack` after this long (ms) is shown as failed, with a retry button. */
const ACK_TIMEOUT_MS = 10_000;
/** At most one `typing` frame per this interval (ms) while the person types. */
const TYPING_SEND_MS = 2_000;
/** A received `typing` shows for this long (ms); longer than TYPING_SEND_MS so it stays steady. */
const TYPING_SHOW_MS = 3_000;
/** Reconnect backoff: first ceiling and cap (ms); each wait is uniform in [ceiling/2, ceiling]. */
const BACKOFF_START_MS = 500;
const BACKOFF_CAP_MS = 10_000;
/** Keep-alive `ping` interval (ms); no frame for DEAD_AFTER_MS (over two pings) means a dead link. */
const PING_MS = 25_000;
const DEAD_AFTER_MS = 60_000;
/** Consecutive messages of one sender within this gap (ms) are grouped under one header. */
const GROUP_GAP_MS = 5 * 60_000;
/** Scroll distances (px): load older history near the top, follow new messages near the bottom. */
const NEAR_TOP_PX = 80;
const NEAR_BOTTOM_PX = 64;
/** A notice disappears after this long (ms). */
const NOTICE_MS = 6_000;
const ROOM_NAME = /^[A-Za-z0-9._-]{1,64}$/;

// ---------------------------------------------------------------------------------------------
// 2. State

const state = {
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
};
/** @type {Map<string, string>} ref of a pending chat message → its conversation key */
const refIndex = new Map();
/** @type {Map<string, { kind: "join" | "history"; key: string; mode: HistoryMode }>} */
const requests = new Map();
/** @type {Map<string, string>} unsent composer text per conversation key */
const drafts = new Map();

/**
 * Returns the conversation of that kind and name, creating it when new.
 * @param {"room" | "dm"} kind
 * @param {string} name
 * @returns {Conversation}
 */
function conversation(kind, name) {
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
function current() {
  return state.convs.get(state.current);
}

/**
 * Adds messages to a conversation, skipping ids it already holds and keeping ascending order.
 * @param {Conversation} conv
 * @param {ChatMessage[]} messages
 */
function insert(conv, messages) {
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
function senderOf(m) {
  return m.type === "message" ? m.sender : m.from;
}

/** Returns a plain snapshot of the state, for debugging and tests (`window.parley.state`). */
function snapshot() {
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

// ---------------------------------------------------------------------------------------------
// 3. Connection

/** @type {WebSocket | null} */
let socket = null;
/** @type {ReturnType<typeof setTimeout> | undefined} */
let retryTimer;
/** @type {ReturnType<typeof setInterval> | undefined} */
let tickTimer;
/** @type {ReturnType<typeof setInterval> | undefined} */
let pingTimer;
let lastFrameAt = 0;

/** Opens a socket for the signed-in identity, replacing any scheduled reconnect. */
function connect() {
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
    receive(event.data);
  };
  ws.onclose = (event) => {
    if (socket !== ws) return; // a socket we dropped on purpose
    socket = null;
    onClose(event.code);
  };
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
function send(frame) {
  if (socket === null || socket.readyState !== WebSocket.OPEN) return false;
  socket.send(JSON.stringify(frame));
  return true;
}

/** Keeps idle connections alive and notices a dead link that never reported its close. */
function startPing() {
  clearInterval(pingTimer);
  pingTimer = setInterval(() => {
    if (Date.now() - lastFrameAt > DEAD_AFTER_MS) socket?.close(4000, "No reply");
    else send({ type: "ping" });
  }, PING_MS);
}

/** Returns a fresh client ref; `crypto.randomUUID` exists only in secure contexts. */
function newRef() {
  if (typeof crypto.randomUUID === "function") return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
}

// ---------------------------------------------------------------------------------------------
// 4. Inbound frames

/** Parses one text frame: a JSON object, or an array of them when the server batches. */
function receive(/** @type {unknown} */ data) {
  if (typeof data !== "string") return;
  let value;
  try {
    value = JSON.parse(data);
  } catch {
    return;
  }
  for (const frame of Array.isArray(value) ? value : [value]) {
    if (typeof frame === "object" && frame !== null && typeof frame.type === "string") {
      handleFrame(/** @type {ServerFrame} */ (frame));
    }
  }
  invalidate();
}

/** Applies one server frame to the state. @param {ServerFrame} frame */
function handleFrame(frame) {
  switch (frame.type) {
    case "welcome":
      return onWelcome(frame.user, frame.rooms);
    case "message":
      return onChat(conversation("room", frame.room), frame);
    case "direct":
      return onChat(conversation("dm", frame.from === state.me ? frame.to : frame.from), frame);
    case "ack":
      return onAck(frame.ref, frame.id, frame.ts);
    case "joined": {
      const conv = conversation("room", frame.room);
      for (const [ref, q] of requests) {
        if (q.kind === "join" && q.key === conv.key) requests.delete(ref);
      }
      const resumed = conv.joinSince !== null;
      conv.joinSince = null;
      conv.joined = true;
      conv.users = new Set(frame.users);
      if (resumed && frame.recovered === false) {
        // The gap was too long to replay: start over from the newest page.
        Object.assign(conv, { byId: new Map(), messages: [], lastId: 0, loaded: false });
      }
      if (!conv.loaded && !awaiting(conv, "latest")) requestHistory(conv, "latest");
      return;
    }
    case "left":
      return drop(`room:${frame.room}`);
    case "history":
      return onHistory(frame);
    case "presence":
      conversation("room", frame.room).users = new Set(frame.users);
      return;
    case "user_joined":
      state.convs.get(`room:${frame.room}`)?.users.add(frame.user);
      return;
    case "user_left": {
      const conv = state.convs.get(`room:${frame.room}`);
      conv?.users.delete(frame.user);
      conv?.typing.delete(frame.user);
      return;
    }
    case "typing": {
      const conv = state.convs.get(`room:${frame.room}`);
      if (conv === undefined || frame.user === state.me) return;
      conv.typing.set(frame.user, Date.now() + TYPING_SHOW_MS);
      setTimeout(invalidate, TYPING_SHOW_MS + 50);
      return;
    }
    case "error":
      return onError(frame.message, frame.ref);
    case "pong":
      return;
  }
}

/**
 * Starts a session: fresh rooms load their history; known rooms re-join with `since` so the
 * server replays exactly what was missed; DMs catch up with `after`; unacked sends go out again.
 * @param {string} user
 * @param {string[]} rooms the rooms the server already joined this connection to
 */
function onWelcome(user, rooms) {
  state.me = user;
  state.status = "online";
  state.attempt = 0;
  startPing();
  for (const name of rooms) {
    const conv = conversation("room", name);
    if (conv.loaded) continue; // resumed below like every other known room
    conv.joined = true;
    requestHistory(conv, "latest");
    send({ type: "presence", room: name });
  }
  for (const conv of state.convs.values()) {
    if (conv.kind === "room" && conv.loaded) {
      conv.joinSince = conv.lastId;
      send({ type: "join", room: conv.name, since: conv.lastId });
    } else if (conv.kind === "room" && !rooms.includes(conv.name)) {
      sendJoin(conv);
    } else if (conv.kind === "dm") {
      requestHistory(conv, conv.loaded ? "after" : "latest");
    }
    for (const p of conv.pending.values()) if (!p.failed) transmit(conv, p);
  }
  if (state.current === "" && rooms[0] !== undefined) open(`room:${rooms[0]}`);
}

/**
 * Adds a live message (or a replayed one) and updates unread counts and the live region.
 * @param {Conversation} conv
 * @param {ChatMessage} message
 */
function onChat(conv, message) {
  if (conv.byId.has(message.id)) return;
  insert(conv, [message]);
  const sender = senderOf(message);
  conv.typing.delete(sender);
  if (sender === state.me) {
    // The broadcast of my own message may overtake its ack: hide the pending copy meanwhile.
    for (const p of conv.pending.values()) {
      if (p.echoId === 0 && !p.failed && p.content === message.content) {
        p.echoId = message.id;
        break;
      }
    }
    return;
  }
  const visible = conv.key === state.current && document.visibilityState === "visible";
  if (!visible) conv.unread++;
  if (conv.key === state.current) announce(`${sender}: ${message.content}`);
  else if (conv.kind === "dm") announce(`Direct message from ${sender}: ${message.content}`);
}

/**
 * Confirms a pending message under the id the server gave it.
 * @param {string} ref
 * @param {number} id
 * @param {string} ts
 */
function onAck(ref, id, ts) {
  const conv = state.convs.get(refIndex.get(ref) ?? "");
  const p = conv?.pending.get(ref);
  if (conv === undefined || p === undefined) return;
  clearTimeout(p.timer);
  conv.pending.delete(ref);
  refIndex.delete(ref);
  /** @type {ChatMessage} */
  const message = conv.kind === "room"
    ? { type: "message", id, room: conv.name, sender: state.me, content: p.content, ts }
    : { type: "direct", id, from: state.me, to: conv.name, content: p.content, ts };
  insert(conv, [message]);
}

/** @param {Extract<ServerFrame, { type: "history" }>} frame */
function onHistory(frame) {
  const key = frame.with !== undefined ? `dm:${frame.with}` : `room:${frame.room ?? ""}`;
  const conv = state.convs.get(key);
  const request = takeRequest(key, Reflect.get(frame, "ref")); // `ref` if the server echoes it
  if (conv === undefined) return;
  const mode = request?.mode ?? "latest";
  insert(conv, frame.messages);
  if (mode === "after") {
    if (frame.hasMore) requestHistory(conv, "after");
    return;
  }
  if (mode === "older") conv.loadingOlder = false;
  // A later page says nothing about older history unless nothing older is loaded yet.
  if (mode === "older" || !conv.loaded) conv.hasMore = frame.hasMore;
  conv.loaded = true;
}

/**
 * Routes an error: to the pending message or request it answers, else to the notice bar.
 * @param {string} message
 * @param {string | undefined} ref
 */
function onError(message, ref) {
  const conv = state.convs.get(refIndex.get(ref ?? "") ?? "");
  const p = conv?.pending.get(ref ?? "");
  if (p !== undefined) {
    clearTimeout(p.timer);
    p.failed = true;
    p.error = message;
    return;
  }
  const request = requests.get(ref ?? "");
  if (request !== undefined) {
    requests.delete(ref ?? "");
    const target = state.convs.get(request.key);
    if (target !== undefined) target.loadingOlder = false;
    if (request.kind === "join" && target !== undefined && !target.joined) drop(target.key);
  }
  notify(message);
}

/**
 * Removes and returns the request a history page answers: by its echoed ref, else the oldest
 * one outstanding for that conversation (the server answers a connection's frames in order).
 * @param {string} key
 * @param {unknown} echoed
 */
function takeRequest(key, echoed) {
  let ref = typeof echoed === "string" && requests.has(echoed) ? echoed : undefined;
  if (ref === undefined) {
    for (const [r, q] of requests) {
      if (q.kind === "history" && q.key === key) {
        ref = r;
        break;
      }
    }
  }
  const request = ref === undefined ? undefined : requests.get(ref);
  if (ref !== undefined) requests.delete(ref);
  return request;
}

/** @param {Conversation} conv @param {HistoryMode} mode */
function awaiting(conv, mode) {
  for (const q of requests.values()) {
    if (q.kind === "history" && q.key === conv.key && q.mode === mode) return true;
  }
  return false;
}

/** Asks for a page of a conversation's history. @param {Conversation} conv @param {HistoryMode} mode */
function requestHistory(conv, mode) {
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

// ---------------------------------------------------------------------------------------------
// 5. User actions

/** Signs in and connects. @param {Auth} auth */
function start(auth) {
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
function signOut() {
  const ws = socket;
  socket = null; // its close event is then ignored: no reconnect
  ws?.close(1000);
  clearTimeout(retryTimer);
  clearInterval(tickTimer);
  clearInterval(pingTimer);
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
function join(name) {
  const conv = conversation("room", name);
  if (!conv.joined) sendJoin(conv);
  open(conv.key);
}

/** Asks to join a room afresh; `joined` then loads its history. @param {Conversation} conv */
function sendJoin(conv) {
  const ref = newRef();
  if (send({ type: "join", room: conv.name, ref })) {
    requests.set(ref, { kind: "join", key: conv.key, mode: "latest" });
  }
}

/** Leaves a room; offline, it is simply forgotten (it will not be re-joined). @param {string} name */
function leave(name) {
  if (!send({ type: "leave", room: name })) drop(`room:${name}`);
}

/** Removes a conversation and moves off it when it was on screen. @param {string} key */
function drop(key) {
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
function open(key) {
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
function sendComposer() {
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
  stickToBottom = true;
  invalidate();
}

/**
 * Sends (or resends, with the same ref) a pending message and arms its ack timeout. Offline it
 * stays pending: `onWelcome` sends it again.
 * @param {Conversation} conv
 * @param {Pending} p
 */
function transmit(conv, p) {
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

let typingSentAt = 0;
let typingRoom = "";

/** Tells the room the person is typing, at most once per TYPING_SEND_MS. */
function typed() {
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
function loadOlder() {
  const conv = current();
  if (conv === undefined || !conv.loaded || !conv.hasMore || conv.loadingOlder) return;
  if (socket?.readyState !== WebSocket.OPEN) return;
  conv.loadingOlder = true;
  requestHistory(conv, "older");
  invalidate();
}

/** Shows a short message in the notice bar. @param {string} text */
function notify(text) {
  state.notice = text;
  setTimeout(() => {
    if (state.notice === text) state.notice = "";
    invalidate();
  }, NOTICE_MS);
  invalidate();
}

/** Reads a message to screen readers through the polite live region. @param {string} text */
function announce(text) {
  dom.live.textContent = text.length > 200 ? `${text.slice(0, 200)}…` : text;
}

// ---------------------------------------------------------------------------------------------
// 6. Rendering

/**
 * Returns the element with that id, checked to be of that type.
 * @template {HTMLElement} T
 * @param {string} id
 * @param {new () => T} type
 * @returns {T}
 */
function byId(id, type) {
  const node = document.getElementById(id);
  if (!(node instanceof type)) throw new Error(`Cannot start client: element #${id} is missing`);
  return node;
}

const dom = {
  login: byId("login", HTMLElement),
  loginForm: byId("login-form", HTMLFormElement),
  loginNotice: byId("login-notice", HTMLElement),
  name: byId("name", HTMLInputElement),
  token: byId("token", HTMLTextAreaElement),
  chat: byId("chat", HTMLElement),
  menu: byId("menu", HTMLButtonElement),
  sidebar: byId("sidebar", HTMLElement),
  scrim: byId("scrim", HTMLElement),
  title: byId("title", HTMLElement),
  subtitle: byId("subtitle", HTMLElement),
  status: byId("status", HTMLElement),
  reconnect: byId("reconnect", HTMLButtonElement),
  me: byId("me", HTMLElement),
  signOut: byId("sign-out", HTMLButtonElement),
  joinForm: byId("join-form", HTMLFormElement),
  joinInput: byId("join-input", HTMLInputElement),
  rooms: byId("rooms", HTMLUListElement),
  dms: byId("dms", HTMLUListElement),
  usersHeading: byId("users-heading", HTMLElement),
  users: byId("users", HTMLUListElement),
  notice: byId("notice", HTMLElement),
  messages: byId("messages", HTMLOListElement),
  typing: byId("typing", HTMLElement),
  composerForm: byId("composer-form", HTMLFormElement),
  composer: byId("composer", HTMLTextAreaElement),
  send: byId("send", HTMLButtonElement),
  live: byId("live", HTMLElement),
};

/** Returns a copy of a `<template>`'s element from index.html. @param {string} id */
function clone(id) {
  const template = byId(id, HTMLTemplateElement);
  return /** @type {HTMLElement} */ (template.content.firstElementChild?.cloneNode(true));
}

/** Returns the descendant matching a selector; templates guarantee it exists. */
function part(/** @type {Element} */ node, /** @type {string} */ selector) {
  return /** @type {HTMLElement} */ (node.querySelector(selector));
}

/** Keeps a list's DOM nodes across renders by key, so unchanged rows keep focus and selection. */
class KeyedList {
  /** @type {Map<string, HTMLElement>} */
  #nodes = new Map();
  #parent;

  /** @param {HTMLElement} parent */
  constructor(parent) {
    this.#parent = parent;
  }

  /**
   * Makes the parent's children match the items, creating nodes only for new keys.
   * @template T
   * @param {T[]} items
   * @param {(item: T) => string} keyOf
   * @param {(item: T) => HTMLElement} create fills what never changes
   * @param {(node: HTMLElement, item: T) => void} patch updates what may change
   */
  update(items, keyOf, create, patch) {
    /** @type {Map<string, HTMLElement>} */
    const next = new Map();
    let cursor = this.#parent.firstChild;
    for (const item of items) {
      const key = keyOf(item);
      const node = this.#nodes.get(key) ?? create(item);
      patch(node, item);
      next.set(key, node);
      if (node === cursor) cursor = cursor.nextSibling;
      else this.#parent.insertBefore(node, cursor);
    }
    while (cursor !== null) {
      const after = cursor.nextSibling;
      cursor.remove();
      cursor = after;
    }
    this.#nodes = next;
  }
}

const roomList = new KeyedList(dom.rooms);
const dmList = new KeyedList(dom.dms);
const userList = new KeyedList(dom.users);
const messageList = new KeyedList(dom.messages);
let renderQueued = false;
let renderedKey = "";
let stickToBottom = false;

/** Schedules one render for all the state changes of the current task. */
function invalidate() {
  if (renderQueued) return;
  renderQueued = true;
  queueMicrotask(() => {
    renderQueued = false;
    render();
  });
}

function render() {
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
  roomList.update(convs.filter((c) => c.kind === "room"), (c) => c.key, createConv, patchConv);
  dmList.update(convs.filter((c) => c.kind === "dm"), (c) => c.key, createConv, patchConv);
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

/** @param {Conversation} conv */
function label(conv) {
  return conv.kind === "room" ? `#${conv.name}` : `@${conv.name}`;
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

/** @param {Conversation | undefined} conv */
function renderUsers(conv) {
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

/**
 * One row of the message list.
 * @typedef {{ key: string; kind: "day"; text: string }
 *   | { key: string; kind: "top"; conv: Conversation }
 *   | { key: string; kind: "message"; message: ChatMessage; grouped: boolean }
 *   | { key: string; kind: "pending"; pending: Pending }} Row
 */

/** @param {Conversation | undefined} conv */
function renderMessages(conv) {
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

  if (switched || stickToBottom || nearBottom) list.scrollTop = list.scrollHeight;
  else if (anchor instanceof HTMLElement && anchor.isConnected) {
    list.scrollTop += anchor.offsetTop - anchorTop; // older pages went in above: keep the view
  }
  renderedKey = state.current;
  stickToBottom = false;
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

/** @param {Conversation | undefined} conv */
function renderTyping(conv) {
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

function fitComposer() {
  dom.composer.style.height = "auto";
  dom.composer.style.height = `${Math.min(dom.composer.scrollHeight, 160)}px`;
}

// ---------------------------------------------------------------------------------------------
// Wiring: DOM events become the actions of section 5. Lists delegate clicks to their parent.

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
delegate(dom.messages, ".retry", (node) => {
  const ref = node.closest("li")?.dataset.ref ?? "";
  const conv = state.convs.get(refIndex.get(ref) ?? "");
  const p = conv?.pending.get(ref);
  if (conv !== undefined && p !== undefined) transmit(conv, p);
  invalidate();
});
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
  if (state.auth !== null && socket === null) connect();
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
