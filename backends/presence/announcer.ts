/**
 * Announces presence changes to the whole cluster: the link between a node's Hub, the presence
 * backend and the broker.
 *
 * The Hub reports a user's first local connection entering a room and last one leaving it; the
 * announcer records it in the {@link Presence} backend and, when the backend says the change is
 * visible cluster-wide, publishes `user_joined` / `user_left` through the broker, so every node's
 * members hear it once. Entries of a node that died without a goodbye expire in the backend, and
 * one surviving node publishes `user_left` for each. At shutdown, {@link PresenceAnnouncer.goodbye}
 * announces this node's users as gone before the backends close.
 *
 * Failures are logged and swallowed: presence is advisory, and a chat message never waits for it.
 */
import { getLogger } from "@logtape/logtape";
import type { Broker } from "../broker/mod.ts";
import type { Presence } from "./mod.ts";

const log = getLogger(["parley", "presence"]);

/** Publishes the presence changes of one node. */
export class PresenceAnnouncer {
  readonly #presence: Presence;
  readonly #broker: Broker;

  /** Starts reporting expired entries of other nodes through `broker`. */
  constructor(presence: Presence, broker: Broker) {
    this.#presence = presence;
    this.#broker = broker;
    presence.onExpired((room, user) => {
      broker.publish({ type: "user_left", room, user }).catch(() => {});
    });
  }

  /** Records that this node's `user` came online (or went offline) in `room`, and publishes it
   * when the change is visible cluster-wide. Never rejects. */
  changed = (room: string, user: string, online: boolean): Promise<void> =>
    (online ? this.#presence.join(room, user) : this.#presence.leave(room, user))
      .then((visible) => {
        if (visible) {
          return this.#broker.publish({ type: online ? "user_joined" : "user_left", room, user });
        }
      })
      .catch((error) =>
        log.warning("Cannot update presence", { room, user, error: String(error) })
      );

  /** Announces every pair as gone (a node's clean shutdown); resolves when all are done. */
  async goodbye(pairs: readonly { room: string; user: string }[]): Promise<void> {
    await Promise.all(pairs.map(({ room, user }) => this.changed(room, user, false)));
  }
}
