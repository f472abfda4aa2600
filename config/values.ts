/**
 * Value parsers for configuration options: each pairs a parse function, which returns undefined
 * for text it does not allow, with the "expected …" phrase of the error line that names what it
 * does allow. Parsers are pure and never throw; the caller turns undefined into a usage error.
 */

/** Binary size units, in bytes. */
export const KIB = 1024;
export const MIB = 1024 * KIB;
export const GIB = 1024 * MIB;
/** Upper bound for counts that have no natural one; a range up to it reads "of at least N". */
export const MAX_COUNT = 1_000_000_000;

/** A parse function and the "expected …" text of its error line. */
export interface Parser<T> {
  /** The value, or undefined when the text is not allowed. */
  parse(text: string): T | undefined;
  /** What is allowed, completing "expected …". */
  expected: string;
}

const INTEGER = /^-?[0-9]+$/;

function range(min: number, max: number, unit = ""): string {
  return max >= MAX_COUNT ? `of at least ${min}${unit}` : `from ${min}${unit} to ${max}${unit}`;
}

/** Parses a decimal integer from `min` to `max`. */
export function integer(min: number, max: number): Parser<number> {
  return {
    parse(text) {
      if (!INTEGER.test(text)) return undefined;
      const n = Number(text);
      return n >= min && n <= max ? n : undefined;
    },
    expected: `an integer ${range(min, max)}`,
  };
}

/** Parses a decimal number greater than 0 and at most `max`. */
export function positiveNumber(max: number): Parser<number> {
  return {
    parse(text) {
      if (!/^[0-9]+(\.[0-9]+)?$|^\.[0-9]+$/.test(text)) return undefined;
      const n = Number(text);
      return n > 0 && n <= max ? n : undefined;
    },
    expected: `a number greater than 0 and at most ${max}`,
  };
}

const BYTE_UNITS: Readonly<Record<string, number>> = { "": 1, b: 1, kib: KIB, mib: MIB, gib: GIB };

/** Formats a byte count with the largest binary unit that divides it exactly. */
export function formatBytes(bytes: number): string {
  if (bytes >= GIB && bytes % GIB === 0) return `${bytes / GIB}GiB`;
  if (bytes >= MIB && bytes % MIB === 0) return `${bytes / MIB}MiB`;
  if (bytes >= KIB && bytes % KIB === 0) return `${bytes / KIB}KiB`;
  return String(bytes);
}

/** Parses a byte count with an optional binary unit (`1MiB`), from `min` to `max` bytes. */
export function byteSize(min: number, max: number): Parser<number> {
  return {
    parse(text) {
      const match = /^([0-9]+)\s*([A-Za-z]*)$/.exec(text);
      const unit = BYTE_UNITS[(match?.[2] ?? "").toLowerCase()];
      if (match === null || unit === undefined) return undefined;
      const n = Number(match[1]) * unit;
      return n >= min && n <= max ? n : undefined;
    },
    expected: `a size in bytes, optionally with B, KiB, MiB or GiB, from ${formatBytes(min)} to ${
      formatBytes(max)
    }`,
  };
}

const DURATION_UNITS: Readonly<Record<string, number>> = { "": 1, s: 1, m: 60, h: 3600 };

/** Parses seconds with an optional unit (`90`, `90s`, `2m`, `1h`), from `min` to `max` seconds. */
export function duration(min: number, max: number): Parser<number> {
  return {
    parse(text) {
      const match = /^([0-9]+)([a-z]?)$/.exec(text);
      const unit = DURATION_UNITS[match?.[2] ?? ""];
      if (match === null || unit === undefined) return undefined;
      const n = Number(match[1]) * unit;
      return n >= min && n <= max ? n : undefined;
    },
    expected: `a duration in seconds, optionally with s, m or h, from ${min} to ${max} seconds`,
  };
}

/** Accepts exactly one of `values`. */
export function oneOf<const T extends string>(values: readonly T[]): Parser<T> {
  return {
    parse: (text) => values.find((value) => value === text),
    expected: `one of ${values.join(", ")}`,
  };
}

/** Accepts any text that `pattern` matches, as is. */
export function matching(pattern: RegExp, expected: string): Parser<string> {
  return { parse: (text) => pattern.test(text) ? text : undefined, expected };
}

/** Accepts a `redis://` or `rediss://` URL that names a host. */
export function redisUrl(text: string): string | undefined {
  if (!/^rediss?:\/\//.test(text)) return undefined;
  try {
    return new URL(text).hostname === "" ? undefined : text;
  } catch {
    return undefined;
  }
}

/** Accepts a message store URL: `memory:`, `sqlite:<path>` or a Redis URL. */
export function storeUrl(text: string): string | undefined {
  if (text === "memory:") return text;
  if (text.startsWith("sqlite:")) return text.length > "sqlite:".length ? text : undefined;
  return redisUrl(text);
}

// Scheme, host name or bracketed IPv6 address, optional port; no path, not even "/".
const ORIGIN = /^[a-z][a-z0-9+.-]*:\/\/([a-z0-9-]+(\.[a-z0-9-]+)*|\[[0-9a-f:.]+\])(:[0-9]{1,5})?$/i;

/** Accepts `*` or a browser origin `scheme://host[:port]`, returned in lower case. */
export function origin(text: string): string | undefined {
  if (text === "*") return text;
  const match = ORIGIN.exec(text);
  if (match === null) return undefined;
  const port = match[3] === undefined ? 0 : Number(match[3].slice(1));
  // Browsers send the scheme and host in lower case, so store them that way.
  return port <= 65535 ? text.toLowerCase() : undefined;
}
