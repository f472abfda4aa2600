/**
 * Seeded, reproducible randomness and JSON for the fuzzer of inbound frames (`fuzz_test.ts`).
 *
 * Every run draws from one {@link Random} (mulberry32) seeded by `PARLEY_FUZZ_SEED` or, without
 * it, at random; tests print the seed in every failure message, so `PARLEY_FUZZ_SEED=<seed> deno
 * test -A tests/fuzz_test.ts` replays the very same frames.
 *
 * Values are JSON trees ({@link JsonObject}, {@link RawJson}) rather than JavaScript objects, so
 * {@link serialize} can write what `JSON.stringify` cannot: `__proto__` as an ordinary key,
 * duplicate keys, `-0`, `1e999`, numbers past 2^53. The edge values here (strings, keys, numbers,
 * values of the wrong type) are what `frame_fuzzer.ts` puts into frames.
 */

/** The environment variable that fixes the fuzz seed. */
export const FUZZ_SEED_ENV = "PARLEY_FUZZ_SEED";

/** The seed from `PARLEY_FUZZ_SEED`, else a random one; an integer from 0 to 2^32 − 1. */
export function fuzzSeed(): number {
  const text = Deno.env.get(FUZZ_SEED_ENV);
  if (text === undefined || text === "") {
    return crypto.getRandomValues(new Uint32Array(1))[0]!;
  }
  const seed = Number(text);
  if (!Number.isInteger(seed) || seed < 0 || seed > 0xffff_ffff) {
    throw new RangeError(
      `Cannot use ${FUZZ_SEED_ENV}=${
        JSON.stringify(text)
      }: expected an integer from 0 to 4294967295`,
    );
  }
  return seed;
}

/** A small deterministic PRNG (mulberry32): the same seed gives the same sequence. */
export class Random {
  #state: number;

  /** Starts the sequence of `seed` (taken modulo 2^32). */
  constructor(seed: number) {
    this.#state = seed >>> 0;
  }

  /** A number in [0, 1). */
  next(): number {
    this.#state = (this.#state + 0x6d2b79f5) >>> 0;
    let t = this.#state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  /** An integer from `min` to `max`, both included. */
  int(min: number, max: number): number {
    return min + Math.floor(this.next() * (max - min + 1));
  }

  /** True with probability `p`. */
  chance(p: number): boolean {
    return this.next() < p;
  }

  /** One of `items`. */
  pick<T>(items: readonly T[]): T {
    return items[Math.floor(this.next() * items.length)]!;
  }
}

/** JSON text written as is (numbers JSON.stringify cannot produce, deep nesting). */
export class RawJson {
  constructor(readonly text: string) {}
}

/** A JSON object as its entries, so `__proto__` and duplicate keys are ordinary keys. */
export class JsonObject {
  constructor(readonly entries: [string, Json][]) {}
}

/** A JSON value as the fuzzer builds it. */
export type Json = null | boolean | number | string | Json[] | JsonObject | RawJson;

/** Writes a {@link Json} tree as JSON text. */
export function serialize(value: Json): string {
  if (value instanceof RawJson) return value.text;
  if (value instanceof JsonObject) {
    return `{${value.entries.map(([k, v]) => `${JSON.stringify(k)}:${serialize(v)}`).join(",")}}`;
  }
  if (Array.isArray(value)) return `[${value.map(serialize).join(",")}]`;
  return JSON.stringify(value);
}

/** Strings that have broken text handling somewhere. */
export const UNICODE_EDGES: readonly string[] = [
  "\ud800", // lone high surrogate
  "\udfff", // lone low surrogate
  "a\ud83dz", // half an emoji
  "\u202eevil\u202c", // right-to-left override
  "\u200f\u05e9\u05dc\u05d5\u05dd", // RTL mark and Hebrew
  "\u200b\u200c\u200d\ufeff", // zero-width characters and BOM
  "\ud83d\udc69\u200d\ud83d\udc69\u200d\ud83d\udc67", // family emoji (ZWJ sequence)
  "\ud83c\udff3\ufe0f\u200d\ud83c\udf08", // flag sequence
  "\u0000", // NUL
  "nul\u0000inside",
  "\u0007\u001b[31mred\u001b[0m", // bell and ANSI escapes
  "line\nbreak\r\n",
  "e\u0301\u0301\u0301\u0301", // stacked combining marks
  "\uffff\ufffe\ufffd",
  "\u{10ffff}",
  "\\u0000 not an escape",
  '"quoted"',
  "</script><script>alert(1)</script>",
];

/** Keys that pollute prototypes when code copies objects carelessly. */
export const POLLUTION_KEYS: readonly string[] = ["__proto__", "constructor", "prototype"];

/** Number literals at the edges: [JSON text, whether it is a valid message id]. */
export const EDGE_NUMBERS: readonly [string, boolean][] = [
  ["1e308", false],
  ["-1e308", false],
  ["1e999", false], // Infinity
  ["-0", true],
  ["0", true],
  ["1e-400", true], // underflows to 0
  ["9007199254740991", true], // 2^53 − 1
  ["9007199254740993", false], // 2^53 + 1, read as 2^53
  ["18446744073709551616", false],
  ["-1", false],
  ["0.5", false],
  ["1.0", true],
  ["5e-324", false],
];

/** Values of every JSON type that are no string. */
export function nonStrings(random: Random): Json[] {
  return [
    null,
    true,
    false,
    0,
    random.int(-1000, 1000),
    new RawJson("1e999"),
    [],
    ["lobby"],
    new JsonObject([]),
    new JsonObject([["__proto__", new JsonObject([["polluted", "yes"]])]]),
  ];
}

/** Values that are not a valid message id, limit or other count. */
export function nonCounts(random: Random): Json[] {
  return [
    null,
    true,
    "1",
    "",
    [],
    [1],
    new JsonObject([]),
    -1,
    0.5,
    new RawJson("1e308"),
    new RawJson("1e999"),
    new RawJson("9007199254740993"),
    random.int(-1_000_000, -1),
  ];
}
