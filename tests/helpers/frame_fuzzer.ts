/**
 * {@link FrameFuzzer}: hostile inbound frames for `fuzz_test.ts`, built from one seeded
 * {@link Random} so a seed replays the same frames (see `fuzz.ts`).
 *
 * Frames are weighted kinds: valid frames, valid frames with one field wrong, missing or unknown,
 * prototype-polluting keys, Unicode edges, edge numbers, truncated and mutated text, random text
 * and bytes, non-objects, duplicate keys, long strings, deep nesting and oversize frames. Some
 * kinds know their verdict (a valid frame must parse, a wrong type in a field must not, a
 * truncated frame is not JSON); the others are only required not to break the server.
 */

import { CLIENT_FRAME_TYPES } from "../../message.ts";
import {
  EDGE_NUMBERS,
  type Json,
  JsonObject,
  nonCounts,
  nonStrings,
  POLLUTION_KEYS,
  type Random,
  RawJson,
  serialize,
  UNICODE_EDGES,
} from "./fuzz.ts";

/** Nesting depth of the deeply nested frames. */
export const DEEP_LEVELS = 10_000;

/** One generated frame: a text frame, or a binary one when `data` is bytes. */
export interface FuzzFrame {
  /** Which generator made it, for failure messages and statistics. */
  kind: string;
  data: string | Uint8Array;
  /**
   * The verdict when the generator knows it: `"ok"` must parse, `"error"` must be refused, a
   * code must be refused with that code.
   */
  expect?: "ok" | "error" | "invalid_json" | "invalid_message" | "unknown_type";
}

/** Limits the fuzzer aims at, from the server configuration under test. */
export interface FuzzLimits {
  maxContentChars: number;
  /** When set, some frames are made larger than this many UTF-8 bytes. */
  maxFrameBytes?: number;
}

type Field =
  | "room"
  | "content"
  | "sender"
  | "ref"
  | "to"
  | "since"
  | "with"
  | "before"
  | "after"
  | "limit"
  | "token"
  | "type";

/** The frame types a client may send; `legacy` is the old server's untyped frame. */
const TYPES = ["legacy", ...CLIENT_FRAME_TYPES] as const;
type FrameType = (typeof TYPES)[number];

/** Builds hostile frames from one {@link Random}; see the module doc. */
export class FrameFuzzer {
  readonly #random: Random;
  readonly #limits: FuzzLimits;
  readonly #kinds: [string, number, () => FuzzFrame][];
  readonly #total: number;

  /** Creates a generator; every frame it makes comes from `random`. */
  constructor(random: Random, limits: FuzzLimits) {
    this.#random = random;
    this.#limits = limits;
    this.#kinds = [
      ["valid", 12, () => this.#valid()],
      ["wrong_type", 20, () => this.#wrongType()],
      ["missing_field", 5, () => this.#missingField()],
      ["unknown_field", 5, () => this.#unknownField()],
      ["pollution", 8, () => this.#pollution()],
      ["unicode", 10, () => this.#unicode()],
      ["numbers", 8, () => this.#numbers()],
      ["truncated", 8, () => this.#truncated()],
      ["mutated", 12, () => this.#mutated()],
      ["random_text", 4, () => this.#randomText()],
      ["random_bytes", 4, () => this.#randomBytes()],
      ["not_an_object", 3, () => this.#notAnObject()],
      ["duplicate_keys", 2, () => this.#duplicateKeys()],
      ["long_string", 2, () => this.#longString()],
      ["deep", 0.3, () => this.#deep()],
      ...(limits.maxFrameBytes === undefined
        ? []
        : [["oversize", 0.7, () => this.#oversize()] as [string, number, () => FuzzFrame]]),
    ];
    this.#total = this.#kinds.reduce((sum, [, weight]) => sum + weight, 0);
  }

  /** The next frame. */
  next(): FuzzFrame {
    let roll = this.#random.next() * this.#total;
    for (const [, weight, make] of this.#kinds) {
      roll -= weight;
      if (roll < 0) return make();
    }
    return this.#kinds[0]![2]();
  }

  /** A valid frame of a random type, as JSON text. */
  validText(): string {
    return serialize(this.#validObject(this.#random.pick(TYPES)));
  }

  // ---------------------------------------------------------------------------------------------
  // Valid frames

  #room(): string {
    const r = this.#random;
    return r.chance(0.6)
      ? r.pick(["lobby", "dev", "ops", "a", "R".repeat(64)])
      : `room-${r.int(0, 20)}.${r.pick(["x", "y", "_", "-"])}`;
  }

  #user(): string {
    return this.#random.pick(["alice", "bob", "observer", "fuzz-0", "ü".repeat(64), "x"]);
  }

  #content(): string {
    const r = this.#random;
    const length = r.chance(0.9) ? r.int(1, 40) : r.int(1, this.#limits.maxContentChars);
    let text = "";
    while (text.length < length) {
      text += r.chance(0.8)
        ? String.fromCharCode(r.int(0x20, 0x7e))
        : r.pick(["é", "中", "\ud83d\ude00", "\u00a0", "\\", '"', "\t"]);
    }
    return text.slice(0, length) || "x";
  }

  #ref(): string {
    const r = this.#random;
    return r.chance(0.8) ? `r${r.int(0, 1_000_000)}` : "r".repeat(r.int(1, 64));
  }

  #id(): number {
    return this.#random.int(0, 1000);
  }

  /** The fields of a valid frame of `type`, in a plausible order. */
  #validEntries(type: FrameType): [Field, Json][] {
    const r = this.#random;
    const entries: [Field, Json][] = type === "legacy" ? [] : [["type", type]];
    const maybe = (field: Field, value: () => Json, p = 0.5) => {
      if (r.chance(p)) entries.push([field, value()]);
    };
    switch (type) {
      case "legacy":
        entries.push(["content", this.#content()]);
        maybe("sender", () => this.#user());
        break;
      case "message":
        maybe("room", () => r.pick(["lobby", this.#room()]));
        entries.push(["content", this.#content()]);
        maybe("sender", () => this.#user(), 0.2);
        break;
      case "direct":
        entries.push(["to", this.#user()], ["content", this.#content()]);
        break;
      case "join":
        entries.push(["room", this.#room()]);
        maybe("since", () => this.#id(), 0.3);
        break;
      case "leave":
      case "presence":
      case "typing":
        entries.push(["room", this.#room()]);
        break;
      case "history":
        entries.push(r.chance(0.7) ? ["room", this.#room()] : ["with", this.#user()]);
        if (r.chance(0.5)) entries.push([r.pick(["before", "after"] as const), this.#id()]);
        maybe("limit", () => r.int(1, 100), 0.4);
        break;
      case "refresh":
        entries.push(["token", r.pick(["a.b.c", "x", "eyJhbGciOiJub25lIn0.e30."])]);
        break;
      case "ping":
        break;
    }
    maybe("ref", () => this.#ref(), 0.6);
    return entries;
  }

  #validObject(type: FrameType): JsonObject {
    return new JsonObject(this.#validEntries(type));
  }

  #valid(): FuzzFrame {
    return { kind: "valid", data: this.validText(), expect: "ok" };
  }

  // ---------------------------------------------------------------------------------------------
  // Invalid on purpose

  /** Puts a value of the wrong type (or out of range) in one field of a valid frame. */
  #wrongType(): FuzzFrame {
    const r = this.#random;
    const type = r.pick(TYPES);
    const entries = this.#validEntries(type);
    const fields = entries.map(([field]) => field);
    // Optional fields count too: give them a wrong value even when the frame had none.
    const optional: Field[] = ["ref"];
    if (type === "message" || type === "legacy" || type === "direct") optional.push("sender");
    if (type === "join") optional.push("since");
    if (type === "history") optional.push("limit");
    if (type === "message") optional.push("room");
    const field = r.pick([...fields, ...optional]);
    const numeric = field === "since" || field === "before" || field === "after" ||
      field === "limit";
    let wrong: Json;
    if (field === "type") {
      wrong = r.pick([...nonStrings(r), "Message", "ping ", "", "__proto__", "constructor"]);
    } else if (numeric) {
      wrong = r.pick(field === "limit" ? [...nonCounts(r), 0, 101] : nonCounts(r));
    } else if (field === "sender" && (type === "message" || type === "direct")) {
      wrong = r.pick(nonStrings(r)); // accepted and ignored when a string
    } else {
      wrong = r.pick([...nonStrings(r), ...this.#badStrings(field)]);
    }
    const index = fields.indexOf(field);
    if (index >= 0) entries[index] = [field, wrong];
    else entries.push([field, wrong]);
    const expect = field === "type" && typeof wrong === "string" ? "unknown_type" : "error";
    return { kind: "wrong_type", data: serialize(new JsonObject(entries)), expect };
  }

  /** Strings a field refuses: empty, too long, or (rooms) outside the room alphabet. */
  #badStrings(field: Field): string[] {
    const tooLong = (n: number) => "z".repeat(n + 1 + this.#random.int(0, 3));
    switch (field) {
      case "room":
        return ["", tooLong(64), "bad room", "lobby/../x", "\u202elobby", "lobby\u0000"];
      case "content":
        return ["", tooLong(this.#limits.maxContentChars)];
      case "ref":
        return ["", tooLong(64)];
      case "to":
      case "with":
      case "sender":
        return ["", tooLong(64), "nul\u0000", "new\nline"];
      case "token":
        return ["", tooLong(8192)];
      default:
        return [""];
    }
  }

  #missingField(): FuzzFrame {
    const r = this.#random;
    const type = r.pick(["message", "direct", "join", "leave", "presence", "typing", "refresh"]);
    const entries = this.#validEntries(type as FrameType);
    const required = entries.filter(([f]) =>
      f !== "type" && f !== "ref" && f !== "sender" && f !== "since" && !(type === "message" &&
        f === "room")
    );
    const drop = r.pick(required);
    return {
      kind: "missing_field",
      data: serialize(new JsonObject(entries.filter((entry) => entry !== drop))),
      expect: "invalid_message",
    };
  }

  #unknownField(): FuzzFrame {
    const r = this.#random;
    const entries: [string, Json][] = this.#validEntries(r.pick(TYPES));
    const key = r.pick(["id", "ts", "user", "from", "isAdmin", "Type", "", "🙂", "__proto__x"]);
    entries.splice(r.int(0, entries.length), 0, [key, r.pick([true, 1, "x", null])]);
    return {
      kind: "unknown_field",
      data: serialize(new JsonObject(entries)),
      expect: "invalid_message",
    };
  }

  /** `__proto__`, `constructor` and `prototype` as keys, at the top or nested in a field. */
  #pollution(): FuzzFrame {
    const r = this.#random;
    const payload = new JsonObject([
      ["polluted", "yes"],
      ["isAdmin", true],
      ["toString", "boom"],
    ]);
    const nested = new JsonObject([[r.pick(POLLUTION_KEYS), payload]]);
    const entries: [string, Json][] = this.#validEntries(r.pick(TYPES));
    if (r.chance(0.6)) {
      entries.splice(r.int(0, entries.length), 0, [
        r.pick(POLLUTION_KEYS),
        r.pick([
          payload,
          new JsonObject([["prototype", payload]]),
          nested,
        ]),
      ]);
    } else {
      const index = r.int(0, entries.length - 1);
      if (entries.length === 0) entries.push(["content", nested]);
      else entries[index] = [entries[index]![0], nested];
    }
    return { kind: "pollution", data: serialize(new JsonObject(entries)), expect: "error" };
  }

  /** Unicode edge cases in every string field. */
  #unicode(): FuzzFrame {
    const r = this.#random;
    const type = r.pick(TYPES);
    const entries: [string, Json][] = this.#validEntries(type);
    for (const entry of entries) {
      if (entry[0] !== "type" && typeof entry[1] === "string" && r.chance(0.7)) {
        entry[1] = r.chance(0.5)
          ? r.pick(UNICODE_EDGES)
          : `${entry[1]}${r.pick(UNICODE_EDGES)}`.slice(0, 64);
      }
    }
    if (r.chance(0.1)) entries.push([r.pick(UNICODE_EDGES), "x"]);
    return { kind: "unicode", data: serialize(new JsonObject(entries)) };
  }

  /** Edge number literals in the numeric fields; the verdict follows the literal. */
  #numbers(): FuzzFrame {
    const r = this.#random;
    const [text, valid] = r.pick(EDGE_NUMBERS);
    const [type, field] = r.pick(
      [["join", "since"], ["history", "before"], ["history", "after"]] as const,
    );
    const entries: [string, Json][] = [["type", type], ["room", "lobby"], [
      field,
      new RawJson(text),
    ]];
    return {
      kind: "numbers",
      data: serialize(new JsonObject(entries)),
      expect: valid ? "ok" : "invalid_message",
    };
  }

  #truncated(): FuzzFrame {
    const text = this.validText();
    const cut = this.#random.int(0, text.length - 1);
    return { kind: "truncated", data: text.slice(0, cut), expect: "invalid_json" };
  }

  /** A valid frame with a few characters replaced, inserted, deleted or repeated. */
  #mutated(): FuzzFrame {
    const r = this.#random;
    let text = this.validText();
    const edits = r.int(1, 4);
    for (let i = 0; i < edits; i++) {
      const at = r.int(0, Math.max(0, text.length - 1));
      const char = r.chance(0.5)
        ? r.pick(['"', "{", "}", "[", "]", ",", ":", "\\", "0", "e", "-", " ", "\u0000"])
        : String.fromCharCode(r.int(0, 0xffff));
      switch (r.int(0, 3)) {
        case 0:
          text = text.slice(0, at) + char + text.slice(at + 1);
          break;
        case 1:
          text = text.slice(0, at) + char + text.slice(at);
          break;
        case 2:
          text = text.slice(0, at) + text.slice(at + 1);
          break;
        default:
          text = text.slice(0, at) + text.slice(at, at + r.int(1, 8)).repeat(2) +
            text.slice(at + 1);
      }
    }
    return { kind: "mutated", data: text };
  }

  #randomText(): FuzzFrame {
    const r = this.#random;
    const length = r.int(0, 200);
    const units = new Array<string>(length);
    for (let i = 0; i < length; i++) {
      units[i] = String.fromCharCode(r.chance(0.7) ? r.int(0x20, 0x7e) : r.int(0, 0xffff));
    }
    return { kind: "random_text", data: units.join("") };
  }

  #randomBytes(): FuzzFrame {
    const r = this.#random;
    const bytes = new Uint8Array(r.int(0, 300));
    for (let i = 0; i < bytes.length; i++) bytes[i] = r.int(0, 255);
    return { kind: "random_bytes", data: bytes };
  }

  /** Valid JSON that is not an object: primitives, arrays, a client-side "batch". */
  #notAnObject(): FuzzFrame {
    const r = this.#random;
    const choices: [string, FuzzFrame["expect"]][] = [
      ["null", "invalid_message"],
      ["0", "invalid_message"],
      ["-0", "invalid_message"],
      ["1e999", "invalid_message"],
      ['"ping"', "invalid_message"],
      ["true", "invalid_message"],
      ["[]", "invalid_message"],
      [`[${this.validText()},${this.validText()}]`, "invalid_message"],
      ["", "invalid_json"],
      [" \t\n", "invalid_json"],
      ["{}}", "invalid_json"],
      ["{'type':'ping'}", "invalid_json"],
      ["NaN", "invalid_json"],
      ["undefined", "invalid_json"],
    ];
    const [data, expect] = r.pick(choices);
    return { kind: "not_an_object", data, ...(expect === undefined ? {} : { expect }) };
  }

  /** The same key twice; JSON.parse keeps the last one. */
  #duplicateKeys(): FuzzFrame {
    const r = this.#random;
    const entries: [string, Json][] = this.#validEntries(r.pick(TYPES));
    const [key, value] = r.pick(entries);
    entries.unshift([key, r.pick([value, 5, "x", null, "message"])]);
    // JSON.parse keeps the last value of a key: the valid one.
    return { kind: "duplicate_keys", data: serialize(new JsonObject(entries)), expect: "ok" };
  }

  /** A field far longer than any limit on it, within the frame size. */
  #longString(): FuzzFrame {
    const r = this.#random;
    const type = r.pick(["message", "join", "direct", "refresh"] as const);
    const field = { message: "content", join: "room", direct: "to", refresh: "token" }[type];
    const entries: [string, Json][] = this.#validEntries(type).filter(([f]) => f !== field);
    const length = field === "token"
      ? 8193
      : field === "content"
      ? this.#limits.maxContentChars + 1
      : r.int(65, 500);
    entries.push([field, r.pick(["a", "é", "\ud83d\ude00"]).repeat(length)]);
    return { kind: "long_string", data: serialize(new JsonObject(entries)), expect: "error" };
  }

  /** {@link DEEP_LEVELS} levels of arrays or objects, bare or inside a field. */
  #deep(): FuzzFrame {
    const r = this.#random;
    const arrays = r.chance(0.5);
    const open = arrays ? "[" : '{"a":';
    const close = arrays ? "]" : "}";
    const deep = `${open.repeat(DEEP_LEVELS)}1${close.repeat(DEEP_LEVELS)}`;
    const data = r.chance(0.5) ? deep : `{"type":"message","content":${deep},"ref":"deep"}`;
    return { kind: "deep", data, expect: "error" };
  }

  /** A frame larger than the server's frame limit. */
  #oversize(): FuzzFrame {
    const r = this.#random;
    const max = this.#limits.maxFrameBytes ?? 0;
    if (r.chance(0.3)) {
      const bytes = new Uint8Array(max + r.int(1, 100));
      bytes.fill(r.int(0, 255));
      return { kind: "oversize", data: bytes };
    }
    // Multi-byte characters: the character count is under the limit, the byte count is over.
    const unit = r.pick(["x", "é", "中", "\ud83d\ude00"]);
    const units = Math.ceil((max + r.int(1, 100)) / new TextEncoder().encode(unit).length);
    return { kind: "oversize", data: `{"content":"${unit.repeat(units)}"}` };
  }
}
