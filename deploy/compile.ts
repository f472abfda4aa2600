/**
 * Builds Parley's standalone binary: `deno task compile` writes `dist/parley`;
 * `deno task compile --output PATH` writes elsewhere.
 *
 * It runs `deno compile` on `main.ts` with the permissions of the set that `deno task start` loads
 * (`-P=server`, deno.json's `permissions.server`), written out as `--allow-*` flags by
 * {@link permissionFlags}, so the binary bakes in the permissions the server is tested with
 * (tests/permissions_test.ts) and the two cannot drift apart. The flags are written out rather
 * than passed as `-P` because `deno compile -P` resolves the set's relative paths against deno.json
 * at build time and bakes in the build machine's absolute project path; a baked `--allow-write=.`
 * stays relative and means the binary's own working directory. Besides those it passes:
 * - `--include static/`: the browser client. server.ts already imports it as text modules, so it is
 *   embedded either way; the flag keeps the directory in the binary's file system too.
 * - `--exclude-unused-npm`: embed only the npm packages `main.ts` reaches, not the test-only
 *   puppeteer-core tree from the lockfile (about 11 MB of npm files instead of 56 MB).
 * - `--exclude <DENO_DIR>/npm/registry.npmjs.org/bintrees/<version>/test` for each locked version
 *   of bintrees (prom-client → tdigest → bintrees): Deno 2.9 aborts with "has overflowed its
 *   stack" while embedding that directory's 2 MB extension-less list of numbers, even with
 *   `RUST_MIN_STACK` raised (the symptom of denoland/deno#36746). A dependency's tests are never
 *   needed at run time.
 *
 * `deno compile` needs `denort`, the runtime it embeds the program into: `DENORT_BIN`, or the
 * archive Deno downloads once into `$DENO_DIR/dl/`. The environment is passed through. When
 * `DENORT_BIN` names no file, or neither is there and the download fails (offline), the script
 * prints {@link denortMissing}'s one line instead of Deno's error chain and backtrace, and exits
 * with Deno's status.
 *
 * Invariant: {@link compileArgs}, {@link permissionFlags} and {@link startPermissions} are pure;
 * only the `import.meta.main` block reads files and runs processes.
 */

/** Terminal colour codes, which Deno writes when its stderr looks like a terminal. */
// deno-lint-ignore no-control-regex
const COLOUR = /\x1b\[[0-9;]*m/g;

/** Where the binary goes unless `--output` says otherwise, relative to the project root. */
export const DEFAULT_OUTPUT = "dist/parley";

/** The kinds of permission a set may grant, in the order their flags are written. */
const PERMISSION_KINDS = ["net", "read", "write", "env", "run", "sys", "ffi", "import"] as const;

/** The parts of deno.json that decide the binary's permissions. */
export interface DenoConfig {
  tasks?: Record<string, string>;
  permissions?: Record<string, unknown>;
}

/** What {@link compileArgs} needs to know about the project and the machine. */
export interface CompileInputs {
  /** deno.json, for the start task and the permission set it loads. */
  config: DenoConfig;
  /** The keys of deno.lock's `npm` section, such as `bintrees@1.0.2`. */
  lockedNpm: readonly string[];
  /** Deno's cache directory (`deno info --json` → `denoDir`). */
  denoDir: string;
  /** The binary to write. */
  output: string;
}

/**
 * Writes out one permission set of deno.json as `--allow-*` flags: `true` grants a kind fully, a
 * list grants it to those entries (paths stay as written, so relative ones mean the working
 * directory), `false` or an empty list grants nothing. Throws for anything a flag cannot say.
 */
export function permissionFlags(set: unknown, name: string): string[] {
  const fail = (why: string) => new Error(`permission set "${name}" ${why}`);
  if (typeof set !== "object" || set === null || Array.isArray(set)) {
    throw fail("is not an object");
  }
  const entries = set as Record<string, unknown>;
  const unknown = Object.keys(entries).filter((kind) =>
    !(PERMISSION_KINDS as readonly string[]).includes(kind)
  );
  if (unknown.length > 0) throw fail(`has an unsupported key "${unknown[0]}"`);
  const flags: string[] = [];
  for (const kind of PERMISSION_KINDS) {
    const value = entries[kind];
    if (value === undefined || value === false) continue;
    if (value === true) {
      flags.push(`--allow-${kind}`);
    } else if (Array.isArray(value) && value.every((item) => typeof item === "string")) {
      if (value.some((item) => item === "" || item.includes(","))) {
        throw fail(`has an empty entry or one with a comma in "${kind}"`);
      }
      if (value.length > 0) flags.push(`--allow-${kind}=${value.join(",")}`);
    } else {
      throw fail(`has "${kind}" neither true, false nor a list of strings`);
    }
  }
  return flags;
}

/**
 * Returns the `--allow-*` flags equivalent to the permission set that `deno task start` loads
 * (`-P=NAME`, or `-P` for the set named "default"). Throws when the task has no such option or
 * grants anything beside it.
 */
export function startPermissions(config: DenoConfig): string[] {
  const task = config.tasks?.start;
  if (task === undefined) throw new Error('deno.json has no "start" task');
  const words = task.split(/\s+/);
  const extra = words.find((word) => word.startsWith("--allow-") || word === "-A");
  if (extra !== undefined) {
    throw new Error(`the "start" task must take its permissions from a set only, not ${extra}`);
  }
  const option = words.map((word) => /^(?:-P|--permission-set)(?:=(.+))?$/.exec(word))
    .find((match) => match !== null);
  if (option === undefined) {
    throw new Error('the "start" task in deno.json loads no permission set (-P=NAME)');
  }
  const name = option[1] ?? "default";
  const set = config.permissions?.[name];
  if (set === undefined) throw new Error(`deno.json has no permission set "${name}"`);
  return permissionFlags(set, name);
}

/** Returns the arguments of `deno compile` (after `deno`) that build the binary. */
export function compileArgs(inputs: CompileInputs): string[] {
  const excludes = inputs.lockedNpm
    .filter((key) => key.startsWith("bintrees@"))
    .map((key) => {
      const version = key.slice("bintrees@".length).split("_")[0];
      return `--exclude=${inputs.denoDir}/npm/registry.npmjs.org/bintrees/${version}/test`;
    });
  return [
    "compile",
    ...startPermissions(inputs.config),
    "--include",
    "static/",
    "--exclude-unused-npm",
    ...excludes,
    "--output",
    inputs.output,
    "main.ts",
  ];
}

/** Parses `[--] [--output PATH | --output=PATH]`; returns the output path or an error. */
export function parseOutput(args: string[]): string | { error: string } {
  const rest = args[0] === "--" ? args.slice(1) : args;
  let output = DEFAULT_OUTPUT;
  for (let i = 0; i < rest.length; i++) {
    const arg = rest[i]!;
    if (arg.startsWith("--output=")) output = arg.slice("--output=".length);
    else if (arg === "--output" && rest[i + 1] !== undefined) output = rest[++i]!;
    else return { error: `unexpected argument ${JSON.stringify(arg)} (usage: --output PATH)` };
  }
  return output === "" ? { error: "--output needs a path" } : output;
}

/**
 * Reads the error `deno compile` printed; when it failed because it could not get `denort` (a
 * `DENORT_BIN` that names no file, or "Setting up base binary" in Deno's chain of causes when the
 * download fails), returns one line that says what is missing and how to provide it, else
 * undefined.
 */
export function denortMissing(
  error: string,
  machine: { version: string; target: string; denoDir: string },
): string | undefined {
  const plain = error.replace(COLOUR, "");
  const wanted = `a denort ${machine.version} executable for ${machine.target}`;
  const named = /Could not find denort at '([^']*)'/.exec(plain);
  if (named !== null) {
    return `Cannot compile: the denort runtime is missing: DENORT_BIN=${named[1]} is no file; ` +
      `set DENORT_BIN to ${wanted}`;
  }
  if (!plain.includes("Setting up base binary")) return undefined;
  // The innermost cause, such as "dns error" or "Connection refused".
  const chain = plain.split("Caused by:")[1]?.split(/\n\s*\n/)[0] ?? "";
  const causes = [...chain.matchAll(/^\s*\d+: (.+)$/gm)].map((match) => match[1]!.trim());
  const cause = causes.length > 1 ? `: ${causes[causes.length - 1]}` : "";
  const archive = `denort-${machine.target}.zip`;
  return `Cannot compile: the denort runtime is missing (Deno could not download ${archive}` +
    `${cause}); set DENORT_BIN to ${wanted}, or put ${archive} in ` +
    `${machine.denoDir}/dl/release/v${machine.version}/`;
}

/** Copies text to stderr line by line until one starts with "error"; returns it and the rest. */
async function passUntilError(stream: ReadableStream<Uint8Array>): Promise<string> {
  const encoder = new TextEncoder();
  let pending = "";
  let error: string | undefined;
  const decoder = new TextDecoder();
  for await (const chunk of stream) {
    const text = decoder.decode(chunk, { stream: true });
    if (error !== undefined) {
      error += text;
      continue;
    }
    pending += text;
    const lines = pending.split("\n");
    pending = lines.pop()!;
    for (const [i, line] of lines.entries()) {
      if (line.replace(COLOUR, "").startsWith("error")) {
        error = [...lines.slice(i), pending].join("\n");
        break;
      }
      await Deno.stderr.write(encoder.encode(line + "\n"));
    }
  }
  return error ?? pending;
}

if (import.meta.main) {
  const output = parseOutput(Deno.args);
  if (typeof output !== "string") {
    console.error(`compile: ${output.error}`);
    Deno.exit(2);
  }
  const root = new URL("../", import.meta.url);
  const config = JSON.parse(await Deno.readTextFile(new URL("deno.json", root)));
  const lock = JSON.parse(await Deno.readTextFile(new URL("deno.lock", root)));
  const info = await new Deno.Command("deno", {
    args: ["info", "--json"],
    stdout: "piped",
    stderr: "inherit",
  }).output();
  if (!info.success) Deno.exit(info.code || 1);
  const denoDir: string = JSON.parse(new TextDecoder().decode(info.stdout)).denoDir;
  let args: string[];
  try {
    args = compileArgs({ config, lockedNpm: Object.keys(lock.npm ?? {}), denoDir, output });
  } catch (error) {
    console.error(`Cannot compile: ${error instanceof Error ? error.message : error}`);
    Deno.exit(1);
  }
  console.error(`deno ${args.join(" ")}`);
  const child = new Deno.Command("deno", {
    args,
    cwd: root,
    stdin: "null",
    stdout: "inherit",
    stderr: "piped",
  }).spawn();
  const [rest, { code }] = await Promise.all([passUntilError(child.stderr), child.status]);
  if (code !== 0) {
    const machine = { version: Deno.version.deno, target: Deno.build.target, denoDir };
    const missing = denortMissing(rest, machine);
    console.error(missing ?? rest.trimEnd());
  } else if (rest !== "") {
    console.error(rest.trimEnd());
  }
  Deno.exit(code);
}
