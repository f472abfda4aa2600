/**
 * The SQLite store's file: opening it, its schema and migrations, its prepared statements, and
 * the mapping between rows and {@link ChatMessage}s.
 *
 * Invariants:
 * - The schema is versioned by `PRAGMA user_version`; {@link MIGRATIONS} run in order at open,
 *   each in its own transaction. A file from a newer server is refused, never modified.
 * - The connection runs in WAL mode with the requested `synchronous` level; a file system that
 *   cannot do WAL is refused rather than silently given weaker durability.
 * - Every statement is prepared once, at open ({@link prepareStatements}).
 *
 * One process owns the file. `busy_timeout` only covers outside tools (a `sqlite3` shell, a
 * backup) briefly holding the lock, and it stalls the event loop while it waits, so it is short.
 */
import { DatabaseSync, type StatementSync } from "node:sqlite";
import { dirname } from "node:path";
import type { ChatMessage, Draft } from "../../message.ts";

/** How long a statement waits for a lock held by another process, in milliseconds. */
export const BUSY_TIMEOUT_MS = 1_000;
/** The WAL file is truncated back to this size after a checkpoint, in bytes. */
export const WAL_SIZE_LIMIT_BYTES = 64 * 1024 * 1024;

/** SQLite's durability level: `FULL` survives power loss, `NORMAL` a process crash only. */
export type Synchronous = "FULL" | "NORMAL";

/**
 * The schema migrations, in order: entry `i` moves `user_version` from `i` to `i + 1`.
 * Append new entries; never edit a released one.
 */
export const MIGRATIONS: readonly ((db: DatabaseSync) => void)[] = [
  (db) =>
    db.exec(`
      CREATE TABLE conversations (
        id      INTEGER PRIMARY KEY,
        key     TEXT    NOT NULL UNIQUE,
        last_id INTEGER NOT NULL
      );
      CREATE TABLE messages (
        conversation INTEGER NOT NULL,
        id           INTEGER NOT NULL,
        type         TEXT    NOT NULL CHECK (type IN ('message', 'direct')),
        sender       TEXT    NOT NULL,
        recipient    TEXT,
        room         TEXT,
        content      TEXT    NOT NULL,
        ts           INTEGER NOT NULL
      );
      CREATE UNIQUE INDEX messages_by_conversation ON messages (conversation, id);
      CREATE TABLE refs (
        user         TEXT    NOT NULL,
        ref          TEXT    NOT NULL,
        at           INTEGER NOT NULL,
        conversation INTEGER NOT NULL,
        id           INTEGER NOT NULL,
        PRIMARY KEY (user, ref)
      );
      CREATE INDEX refs_by_age ON refs (at);
    `),
];

/** The schema version this code writes: the number of {@link MIGRATIONS}. */
export const SCHEMA_VERSION = MIGRATIONS.length;

/** A row of `messages`, as the read statements select it. */
export interface MessageRow {
  id: number;
  type: string;
  sender: string;
  recipient: string | null;
  room: string | null;
  content: string;
  ts: number;
}

/** A row of `conversations`. */
export interface ConversationRow {
  id: number;
  last_id: number;
}

/** A remembered `(user, ref)` joined with the message it produced; the message columns are
 * null once retention deleted that message. */
export type RefRow = Partial<MessageRow> & { ref_id: number; at: number };

const COLUMNS = "id, type, sender, recipient, room, content, ts";

/**
 * Opens (creating if needed) the file at `path`, configures the connection and applies pending
 * migrations. Throws `Cannot open store: …` when the file cannot be used.
 */
export function openDatabase(path: string, synchronous: Synchronous): DatabaseSync {
  if (path !== ":memory:") {
    const dir = dirname(path);
    try {
      if (!Deno.statSync(dir).isDirectory) {
        throw new Error(`Cannot open store: ${JSON.stringify(dir)} is not a directory`);
      }
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) {
        throw new Error(
          `Cannot open store: directory ${JSON.stringify(dir)} of ${
            JSON.stringify(path)
          } does not exist`,
        );
      }
      throw error;
    }
  }
  let db: DatabaseSync;
  try {
    db = new DatabaseSync(path);
  } catch (error) {
    throw new Error(`Cannot open store: ${JSON.stringify(path)}: ${describe(error)}`, {
      cause: error,
    });
  }
  try {
    configure(db, synchronous);
    migrate(db);
    return db;
  } catch (error) {
    db.close();
    const reason = describe(error).replace(/^Cannot open store: /, "");
    throw new Error(`Cannot open store: ${JSON.stringify(path)}: ${reason}`, { cause: error });
  }
}

/** Sets the connection's journal, durability and locking behaviour. */
function configure(db: DatabaseSync, synchronous: Synchronous): void {
  db.exec(`PRAGMA busy_timeout = ${BUSY_TIMEOUT_MS}`);
  const { journal_mode } = db.prepare("PRAGMA journal_mode = WAL").get() as {
    journal_mode: string;
  };
  if (journal_mode !== "wal" && journal_mode !== "memory") {
    throw new Error(`WAL journal not supported here (got ${JSON.stringify(journal_mode)})`);
  }
  db.exec(`PRAGMA synchronous = ${synchronous}`);
  db.exec(`PRAGMA journal_size_limit = ${WAL_SIZE_LIMIT_BYTES}`);
}

/** Applies every migration above the file's `user_version`, each in its own transaction. */
function migrate(db: DatabaseSync): void {
  for (;;) {
    db.exec("BEGIN IMMEDIATE");
    try {
      // Read inside the write lock, so two processes starting at once migrate once.
      const { user_version: version } = db.prepare("PRAGMA user_version").get() as {
        user_version: number;
      };
      if (version > MIGRATIONS.length) {
        throw new Error(
          `schema version ${version} is newer than this server's (${MIGRATIONS.length})`,
        );
      }
      const migration = MIGRATIONS[version];
      if (migration === undefined) {
        db.exec("COMMIT");
        return;
      }
      migration(db);
      db.exec(`PRAGMA user_version = ${version + 1}`);
      db.exec("COMMIT");
    } catch (error) {
      if (db.isTransaction) db.exec("ROLLBACK");
      throw error;
    }
  }
}

/** Runs `body` in one `BEGIN IMMEDIATE … COMMIT`, rolling back when it throws. */
export function transaction<T>(db: DatabaseSync, body: () => T): T {
  db.exec("BEGIN IMMEDIATE");
  try {
    const result = body();
    db.exec("COMMIT");
    return result;
  } catch (error) {
    if (db.isTransaction) db.exec("ROLLBACK");
    throw error;
  }
}

/** The store's prepared statements. */
export type Statements = ReturnType<typeof prepareStatements>;

/** Prepares every statement the store runs, once. */
export function prepareStatements(db: DatabaseSync) {
  const statements = {
    ping: db.prepare("SELECT 1"),
    conversation: db.prepare("SELECT id, last_id FROM conversations WHERE key = ?"),
    conversationsAfter: db.prepare(
      "SELECT id, last_id FROM conversations WHERE id > ? ORDER BY id LIMIT ?",
    ),
    reserve: db.prepare(
      `INSERT INTO conversations (key, last_id) VALUES (?1, ?2)
       ON CONFLICT (key) DO UPDATE SET last_id = last_id + ?2
       RETURNING id, last_id`,
    ),
    insert: db.prepare(
      `INSERT INTO messages (conversation, id, type, sender, recipient, room, content, ts)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
    ),
    before: db.prepare(
      `SELECT ${COLUMNS} FROM messages
       WHERE conversation = ? AND id < ? AND id > ? AND ts >= ?
       ORDER BY id DESC LIMIT ?`,
    ),
    after: db.prepare(
      `SELECT ${COLUMNS} FROM messages
       WHERE conversation = ? AND id > ? AND ts >= ?
       ORDER BY id LIMIT ?`,
    ),
    findRef: db.prepare(
      `SELECT r.id AS ref_id, r.at, m.id, m.type, m.sender, m.recipient, m.room, m.content, m.ts
       FROM refs r LEFT JOIN messages m ON m.conversation = r.conversation AND m.id = r.id
       WHERE r.user = ? AND r.ref = ? AND r.at > ?`,
    ),
    putRef: db.prepare(
      `INSERT INTO refs (user, ref, at, conversation, id) VALUES (?, ?, ?, ?, ?)
       ON CONFLICT (user, ref) DO UPDATE
       SET at = excluded.at, conversation = excluded.conversation, id = excluded.id`,
    ),
    expireRefs: db.prepare(
      `DELETE FROM refs WHERE rowid IN
       (SELECT rowid FROM refs WHERE at <= ? ORDER BY at LIMIT ?)`,
    ),
    // Deletes over-limit rows from the oldest end, at most `budget` of them: ids are dense
    // above the oldest retained one, so the range (min, min + budget) bounds the work.
    pruneBelow: db.prepare(
      `DELETE FROM messages WHERE conversation = ?1 AND id <= min(?2,
       (SELECT min(id) FROM messages WHERE conversation = ?1) + ?3 - 1)`,
    ),
    oldest: db.prepare("SELECT id, ts FROM messages WHERE conversation = ? ORDER BY id LIMIT ?"),
    deleteUpTo: db.prepare("DELETE FROM messages WHERE conversation = ? AND id <= ?"),
  } satisfies Record<string, StatementSync>;
  return statements;
}

/** Builds the wire shape of a stored message from a draft. */
export function stamp(draft: Draft, id: number, ts: string): ChatMessage {
  return draft.type === "message"
    ? {
      type: "message",
      id,
      room: draft.room,
      sender: draft.sender,
      content: draft.content,
      ts,
    }
    : { type: "direct", id, from: draft.from, to: draft.to, content: draft.content, ts };
}

/** Builds the wire shape of a message from its row. */
export function toMessage(row: MessageRow): ChatMessage {
  const ts = new Date(row.ts).toISOString();
  return row.type === "message"
    ? {
      type: "message",
      id: row.id,
      room: row.room ?? "",
      sender: row.sender,
      content: row.content,
      ts,
    }
    : {
      type: "direct",
      id: row.id,
      from: row.sender,
      to: row.recipient ?? "",
      content: row.content,
      ts,
    };
}

/** The message a remembered ref produced; when retention already deleted it, the retry's own
 * draft stamped with the original id and time stands in (same content for a true retry). */
export function original(seen: RefRow, draft: Draft): ChatMessage {
  if (seen.id !== undefined && seen.id !== null) return toMessage(seen as MessageRow);
  return stamp(draft, seen.ref_id, new Date(seen.at).toISOString());
}

/** The message of a thrown value, for wrapping it in the store's own error. */
export function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
