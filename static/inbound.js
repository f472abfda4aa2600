// @ts-check
/// <reference lib="dom" />
/**
 * Inbound frames: `receive()` parses what the server sends (protocol v1, docs/PROTOCOL.md) and
 * applies each frame to the state, then schedules one render for the lot.
 *
 * A known room that comes back after a reconnect re-joins with `since`, so the server replays
 * exactly what was missed; DMs catch up with `after`; unacked sends go out again with their ref.
 */
import { announce } from "./dom.js";
import { drop, open } from "./actions.js";
import { awaiting, requestHistory, send, sendJoin, startPing, transmit } from "./connection.js";
import {
  conversation,
  insert,
  invalidate,
  notify,
  refIndex,
  requests,
  senderOf,
  state,
} from "./state.js";

/** @typedef {import("../message.ts").ServerFrame} ServerFrame */
/** @typedef {import("./state.js").ChatMessage} ChatMessage */
/** @typedef {import("./state.js").Conversation} Conversation */

/** A received `typing` shows for this long (ms); longer than the sender's 2 s between frames. */
const TYPING_SHOW_MS = 3_000;

/** Parses one text frame: a JSON object, or an array of them when the server batches. */
export function receive(/** @type {unknown} */ data) {
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
