// @ts-check
/// <reference lib="dom" />
/**
 * A list whose DOM nodes are kept across renders by key, so unchanged rows keep their nodes, their
 * focus and selection, and the reader's scroll position.
 */

/** Keeps a list's DOM nodes across renders by key, so unchanged rows keep focus and selection. */
export class KeyedList {
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
