// @ts-check
/// <reference lib="dom" />
/**
 * The page's fixed elements from index.html, looked up once and checked, and small helpers over
 * them. Data from the network is written with `textContent`/`setAttribute` only, never as HTML.
 */

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

/** The elements every module works with, by role. */
export const dom = {
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
export function clone(id) {
  const template = byId(id, HTMLTemplateElement);
  return /** @type {HTMLElement} */ (template.content.firstElementChild?.cloneNode(true));
}

/** Returns the descendant matching a selector; templates guarantee it exists. */
export function part(/** @type {Element} */ node, /** @type {string} */ selector) {
  return /** @type {HTMLElement} */ (node.querySelector(selector));
}

/** Reads a message to screen readers through the polite live region. @param {string} text */
export function announce(text) {
  dom.live.textContent = text.length > 200 ? `${text.slice(0, 200)}…` : text;
}

/** Grows the composer with its text, up to a cap. */
export function fitComposer() {
  dom.composer.style.height = "auto";
  dom.composer.style.height = `${Math.min(dom.composer.scrollHeight, 160)}px`;
}
