/**
 * The three sources of option values and the precedence between them: command-line arguments,
 * environment variables and the JSON config file. {@link Resolver} picks, per option, the raw value
 * of the highest source that sets it and parses only that one; {@link UsageError} carries the
 * finished one-line error. The precedence and error rules are the contract in `mod.ts`.
 */
import { parseArgs } from "node:util";
import { z } from "zod";
import { utf8Bytes } from "../message.ts";
import type { ConfigResult } from "./mod.ts";
import { helpText, USAGE_HINT, versionText } from "./help.ts";
import {
  type AnySpec,
  BY_FLAG,
  camelCase,
  CONFIG_FLAG,
  type OptionSpec,
  SPECS,
} from "./options.ts";

/** Longest value quoted back in an error line, in characters. */
const MAX_QUOTED_CHARS = 80;

/** A usage error carrying its finished line; thrown internally, returned as a result. */
export class UsageError extends Error {
  constructor(message: string) {
    super(`parley: ${message}`);
    this.name = "UsageError";
  }
}

/** A raw value and where it came from, for the error line. */
export interface Raw {
  /** The strings to parse: one, or several for a repeatable option. */
  texts: string[];
  /** How the source is named after the flag: "" for a flag, " (from PORT)" otherwise. */
  from: string;
}

function quote(text: string): string {
  return text.length > MAX_QUOTED_CHARS
    ? `${JSON.stringify(text.slice(0, MAX_QUOTED_CHARS))}…`
    : JSON.stringify(text);
}

function show(spec: AnySpec, text: string): string {
  return spec.secret ? `<hidden, ${utf8Bytes(text)} bytes>` : quote(text);
}

function invalid(spec: AnySpec, from: string, shown: string, expected = spec.expected): UsageError {
  return new UsageError(`invalid value for --${spec.flag}${from}: ${shown} (expected ${expected})`);
}

function splitList(text: string): string[] {
  return text.split(",").map((part) => part.trim()).filter((part) => part !== "");
}

/** Walks the argument tokens: help and version first, then the first error, then flag values. */
export function readArgs(args: string[]): ConfigResult | Map<string, string[]> {
  const options: Record<string, { type: "string" | "boolean"; short?: string }> = {
    help: { type: "boolean", short: "h" },
    version: { type: "boolean", short: "V" },
    [CONFIG_FLAG]: { type: "string" },
  };
  for (const spec of SPECS) options[spec.flag] = { type: "string" };
  const { tokens } = parseArgs({
    args,
    options,
    strict: false,
    allowPositionals: true,
    tokens: true,
  });
  if (tokens.some((t) => t.kind === "option" && t.name === "help")) {
    return { kind: "help", text: helpText() };
  }
  if (tokens.some((t) => t.kind === "option" && t.name === "version")) {
    return { kind: "version", text: versionText() };
  }
  const values = new Map<string, string[]>();
  for (const token of tokens) {
    if (token.kind === "positional") {
      throw new UsageError(`unexpected argument ${quote(token.value)} ${USAGE_HINT}`);
    }
    if (token.kind !== "option") continue;
    const spec = BY_FLAG.get(token.name);
    if (spec === undefined && token.name !== CONFIG_FLAG) {
      throw new UsageError(`unknown flag ${token.rawName} ${USAGE_HINT}`);
    }
    // parseArgs hands a string option the next argument even when it is another flag.
    if (token.value === undefined || (!token.inlineValue && token.value.startsWith("--"))) {
      const expected = spec?.expected ?? "a file path";
      throw new UsageError(
        `missing value for ${token.rawName} (expected ${expected}; ` +
          `write ${token.rawName}=VALUE for a value starting with --)`,
      );
    }
    const texts = spec?.multiple ? splitList(token.value) : [token.value];
    values.set(token.name, spec?.multiple ? [...(values.get(token.name) ?? []), ...texts] : texts);
  }
  return values;
}

function fileSchema() {
  const shape: Record<string, z.ZodType> = {};
  for (const spec of SPECS) {
    shape[camelCase(spec.flag)] = spec.json === "list"
      ? z.array(z.string()).optional()
      : spec.json === "number"
      ? z.union([z.number(), z.string()]).optional()
      : z.string().optional();
  }
  return z.strictObject(shape);
}

/** Reads and checks the config file; returns its raw values keyed by flag name. */
export function readConfigFile(
  path: string,
  readFile: (path: string) => string,
): Map<string, Raw> {
  const where = `config file ${quote(path)}`;
  let text: string;
  try {
    text = readFile(path);
  } catch (error) {
    throw new UsageError(`cannot read ${where}: ${error instanceof Error ? error.message : error}`);
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new UsageError(
      `cannot parse ${where}: ${error instanceof Error ? error.message : error}`,
    );
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new UsageError(`cannot parse ${where}: expected a JSON object`);
  }
  const result = fileSchema().safeParse(value);
  if (!result.success) {
    const issue = result.error.issues[0];
    if (issue?.code === "unrecognized_keys") {
      const key = issue.keys[0] ?? "";
      const camel = camelCase(key);
      const hint = camel !== key && BY_FLAG.has(key) ? ` (write ${quote(camel)})` : "";
      throw new UsageError(`unknown key ${quote(key)} in ${where}${hint}`);
    }
    const key = String(issue?.path[0] ?? "");
    const spec = SPECS.find((s) => camelCase(s.flag) === key);
    if (spec === undefined) throw new UsageError(`cannot parse ${where}: invalid`);
    const record = value as Record<string, unknown>;
    const bad = issue?.path.length === 2 && Array.isArray(record[key])
      ? (record[key] as unknown[])[Number(issue.path[1])]
      : record[key];
    const json = JSON.stringify(bad) ?? String(bad);
    const shown = spec.secret
      ? "<hidden>"
      : json.length > MAX_QUOTED_CHARS
      ? `${json.slice(0, MAX_QUOTED_CHARS)}…`
      : json;
    const expected = spec.json === "list"
      ? `an array of strings, each ${spec.expected}`
      : undefined;
    throw invalid(spec, ` (from ${quote(key)} in ${where})`, shown, expected);
  }
  const raws = new Map<string, Raw>();
  for (const spec of SPECS) {
    const entry: unknown = result.data[camelCase(spec.flag)];
    if (entry === undefined) continue;
    const texts = Array.isArray(entry) ? entry.map(String) : [String(entry)];
    raws.set(spec.flag, { texts, from: ` (from ${quote(camelCase(spec.flag))} in ${where})` });
  }
  return raws;
}

/** Picks each option's raw value by precedence and parses it. */
export class Resolver {
  readonly #flags: Map<string, string[]>;
  readonly #env: (name: string) => string | undefined;
  readonly #file: Map<string, Raw>;
  readonly #sources = new Map<string, Raw>();

  constructor(
    flags: Map<string, string[]>,
    env: (name: string) => string | undefined,
    file: Map<string, Raw>,
  ) {
    this.#flags = flags;
    this.#env = env;
    this.#file = file;
  }

  /** The raw value that wins for an option, or undefined when no source sets it. */
  raw(spec: AnySpec): Raw | undefined {
    const flag = this.#flags.get(spec.flag);
    if (flag !== undefined) return { texts: flag, from: "" };
    const env = this.#env(spec.env);
    if (env !== undefined && env !== "") {
      return { texts: spec.multiple ? splitList(env) : [env], from: ` (from ${spec.env})` };
    }
    return this.#file.get(spec.flag);
  }

  /** The option's parsed value, or undefined when no source sets it. */
  optional<T>(spec: OptionSpec<T>): T | undefined {
    const raw = this.raw(spec as AnySpec);
    if (raw === undefined) return undefined;
    this.#sources.set(spec.flag, raw);
    const text = raw.texts[0] ?? "";
    const value = spec.parse(text);
    if (value === undefined) throw invalid(spec as AnySpec, raw.from, show(spec as AnySpec, text));
    return value;
  }

  /** The option's parsed value, or its default. */
  get<T>(spec: OptionSpec<T>): T {
    const value = this.optional(spec) ?? spec.default;
    if (value === undefined) throw new TypeError(`Cannot resolve --${spec.flag}: no default`);
    return value;
  }

  /** Whether some source, not the default, set the option. */
  isSet(spec: AnySpec): boolean {
    return this.#sources.has(spec.flag);
  }

  /** The repeatable option's parsed values, or an empty list. */
  list(spec: OptionSpec<string>): string[] {
    const raw = this.raw(spec as AnySpec);
    if (raw === undefined) return [];
    this.#sources.set(spec.flag, raw);
    return raw.texts.map((text) => {
      const value = spec.parse(text);
      if (value === undefined) throw invalid(spec as AnySpec, raw.from, quote(text));
      return value;
    });
  }

  /** Fails on an option whose value breaks a rule that involves another option. */
  conflict(spec: AnySpec, expected: string): UsageError {
    const raw = this.#sources.get(spec.flag);
    const text = raw?.texts[0] ?? spec.defaultText;
    return invalid(spec, raw?.from ?? " (default)", show(spec, text), expected);
  }
}
